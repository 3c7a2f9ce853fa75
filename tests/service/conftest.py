"""Fixtures for the web service: an app factory, a job waiter and tiny uploads of every format."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")

from fastapi.testclient import TestClient

from medsr.service.app import Settings, create_app


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """``make_client(**settings)`` → a started TestClient (stopped at teardown)."""
    clients: list[TestClient] = []

    def make(**kwargs: Any) -> TestClient:
        kwargs.setdefault("work_dir", tmp_path / f"work{len(clients)}")
        kwargs.setdefault("weights_dirs", ())
        kwargs.setdefault("pretrained", False)  # classical models only: fast; see test_pretrained_*
        client = TestClient(create_app(Settings(**kwargs)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def wait_job(
    client: TestClient, job_id: str, timeout: float = 60.0, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Poll the job until it is done or failed; return its JSON."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/api/v1/jobs/{job_id}", headers=headers or {})
        assert r.status_code == 200, r.text
        body = r.json()
        if body["state"] in ("done", "failed"):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"job did not finish in {timeout} s: {body}")
        time.sleep(0.05)


def submit(
    client: TestClient, name: str, data: bytes, headers: dict[str, str] | None = None, **fields: Any
):
    form = {k: str(v) for k, v in fields.items()}
    return client.post(
        "/api/v1/jobs", files={"file": (name, data)}, data=form, headers=headers or {}
    )


# ---------------------------------------------------------------------- tiny uploads
@pytest.fixture(scope="session")
def ct_small_bytes() -> bytes:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("CT_small.dcm")).read_bytes()


@pytest.fixture(scope="session")
def png_bytes() -> bytes:
    from PIL import Image

    y, x = np.mgrid[0:24, 0:32]
    arr = ((np.sin(x / 3.0) + np.cos(y / 4.0)) * 60 + 128).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def nifti_gz_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    import nibabel as nib

    rng = np.random.default_rng(0)
    vol = rng.normal(100, 20, (16, 16, 4)).astype(np.float32)  # (x, y, z)
    path = tmp_path_factory.mktemp("nii") / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([0.9, 0.9, 3.0, 1.0])), path)
    return path.read_bytes()


@pytest.fixture(scope="session")
def series_zip_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A 3-slice synthetic CT series, written by medsr's DICOM writer, zipped in a folder."""
    import medsr
    from medsr.image import MedImage

    rng = np.random.default_rng(1)
    arr = rng.normal(0, 100, (3, 20, 20)).astype(np.float32)
    img = MedImage(arr, spacing=(3.0, 0.8, 0.8), modality="CT", units="HU")
    folder = medsr.save_image(img, tmp_path_factory.mktemp("series") / "series")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, f"study/series/{p.name}")
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


# ---------------------------------------------------------------------- series of several stacks
def _zip_folder(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, f"export/{p.name}")
    return buf.getvalue()


@pytest.fixture(scope="session")
def echo_zip_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A zipped two-echo MR series (MR_small's header): 3 positions 5 mm apart, echo e at each
    (EchoNumbers e, EchoTime 10·e ms), pixels MR_small's 16×16 crop + 1000·(e − 1) + 100·p."""
    import copy

    import pydicom
    from pydicom.uid import generate_uid

    from tests.io.conftest import dicom_corpus_path, write_series

    template = pydicom.dcmread(dicom_corpus_path("MR_small.dcm"))
    base = template.pixel_array[20:36, 20:36].astype(np.int16)
    uid, slices = generate_uid(), []
    for echo in (1, 2):
        for p in range(3):
            ds = copy.deepcopy(template)
            ds.Rows = ds.Columns = 16
            ds.PixelData = (base + 1000 * (echo - 1) + 100 * p).astype("<i2").tobytes()
            ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, generate_uid()
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [-80, -90, 5.0 * p]
            ds.EchoNumbers, ds.EchoTime = echo, 10 * echo
            ds.InstanceNumber = len(slices) + 1
            slices.append(ds)
    return _zip_folder(write_series(tmp_path_factory.mktemp("echoes") / "echoes", slices))


@pytest.fixture(scope="session")
def cine_zip_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A zipped cardiac cine (tests/io/test_dicom_stacks.py's builder): 4 positions × 3 phases
    in one series, phase k's TriggerTime 40·k + 7·position ms (drifting per position)."""
    import pydicom

    from tests.io.conftest import dicom_corpus_path
    from tests.io.test_dicom_stacks import _cine

    template = pydicom.dcmread(dicom_corpus_path("MR_small.dcm"))
    times = [[40 * k + 7 * p for k in range(3)] for p in range(4)]
    folder, _, _ = _cine(template, tmp_path_factory.mktemp("cine") / "cine", times)
    return _zip_folder(folder)


@pytest.fixture(scope="session")
def localizer_zip_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A zipped CT series of 4 axial 16×16 slices plus a 2-image coronal 24×20 localizer under
    the same Series Instance UID (tests/io/test_dicom_stacks.py's builder)."""
    import pydicom
    from pydicom.uid import generate_uid

    from tests.io.conftest import dicom_corpus_path, write_series
    from tests.io.test_dicom_stacks import CORONAL, _stack

    template = pydicom.dcmread(dicom_corpus_path("CT_small.dcm"))
    uid = generate_uid()
    main = _stack(template, uid, 4)
    scout = _stack(template, uid, 2, level=3000, iop=CORONAL, shape=(24, 20), first=90)
    folder = tmp_path_factory.mktemp("localizer") / "export"
    return _zip_folder(write_series(folder, scout + main))


@pytest.fixture(scope="session")
def two_series_zip_bytes(echo_zip_bytes: bytes, series_zip_bytes: bytes) -> bytes:
    """A zip of two series: the two-echo MR (``echo_zip_bytes``) and the 3-slice CT
    (``series_zip_bytes``), each in its own folder."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as out:
        for folder, data in (("mr", echo_zip_bytes), ("ct", series_zip_bytes)):
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for name in zf.namelist():
                    out.writestr(f"{folder}/{name}", zf.read(name))
    return buf.getvalue()
