"""The Ray Data engine (a private local Ray, 2 CPUs) writes the same files as the local engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsr.batch import read_report, run_batch
from medsr.batch.ray_engine import ray_available

pytestmark = [
    pytest.mark.slow,  # starting Ray and its actors takes ~15 s on 2 cores
    pytest.mark.skipif(
        not ray_available(), reason="Ray Data is not installed (pip install 'medsr[batch]')"
    ),
]

# everything that places and scales the pixels; UIDs, dates and times differ by design
GEOMETRY_TAGS = (
    "Rows", "Columns", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient",
    "SliceThickness", "SliceLocation", "BitsAllocated", "BitsStored", "PixelRepresentation",
    "RescaleSlope", "RescaleIntercept", "PhotometricInterpretation", "Modality",
    "SOPClassUID", "StudyInstanceUID", "FrameOfReferenceUID", "DerivationDescription", "ImageType",
)  # fmt: skip


def _stable(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "finished_at")} for r in rows]


def _dicom_files(path: Path) -> list[Path]:
    return sorted(path.rglob("*.dcm")) if path.is_dir() else [path]


class _SharedRay:
    """One private local Ray kept up between runs of this module: starting one takes 5-10 s on
    2 cores (and stopping it 1-2 s), and a run joins a Ray that is already up instead of starting
    its own (``run_ray`` stops only what it started). It is started by the engine's own
    ``_init_ray`` with the arguments a ``workers=2`` run gives it, so the actors see the same
    cluster. The first Ray run of :func:`test_ray_engine_matches_local_engine` still starts and
    stops its own, as every CLI run does."""

    def up(self) -> None:
        import ray

        from medsr.batch.ray_engine import _init_ray

        if not ray.is_initialized():
            _init_ray(None, 2)

    def down(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()


@pytest.fixture(scope="module")
def shared_ray():
    ray = _SharedRay()
    yield ray
    ray.down()


def test_ray_engine_matches_local_engine(
    archive: Path, tmp_path: Path, shared_ray: _SharedRay, capfd
):
    import pydicom
    import ray

    local = run_batch(archive, tmp_path / "local", model="bicubic", workers=2)
    shared_ray.down()  # this run starts a private Ray of its own, as the CLI's runs do...
    ray_run = run_batch(archive, tmp_path / "ray", model="bicubic", engine="ray", workers=2)
    assert not ray.is_initialized()  # ... and stops it when it is done
    err = capfd.readouterr().err  # its start printed no core_worker error (see the test below)
    assert "core_worker" not in err and "max_restarts" not in err, err
    shared_ray.up()  # the runs below join the module's Ray (run_ray's code is the same after)
    assert ray_run.counts == local.counts
    assert _stable(read_report(ray_run.report)) == _stable(read_report(local.report))

    for name in (
        "volumes/brain.nii.gz",
        "volumes/brain.json",
        "photos/slice.png",
        "photos/slice.json",
    ):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), (
            name
        )
    for name in ("study1/ct", "study1/mr/MR_small.dcm"):
        a_files, b_files = (
            _dicom_files(tmp_path / "local" / name),
            _dicom_files(tmp_path / "ray" / name),
        )
        assert [f.name for f in a_files] == [f.name for f in b_files]
        for fa, fb in zip(a_files, b_files, strict=True):
            a, b = pydicom.dcmread(fa), pydicom.dcmread(fb)
            assert a.PixelData == b.PixelData
            for tag in GEOMETRY_TAGS:
                assert a.get(tag) == b.get(tag), (name, tag)
            assert a.SeriesInstanceUID != b.SeriesInstanceUID  # a new derived series each run

    # resuming works the same on Ray: nothing left to do
    again = run_batch(archive, tmp_path / "ray", model="bicubic", engine="ray", workers=2)
    assert again.counts["ok"] == 0 and again.counts["failed"] == local.counts["failed"]
    assert np.all([r.status != "ok" for r in again.results])


def test_ray_actors_run_the_precision_asked_for(tmp_path: Path, capfd, shared_ray: _SharedRay):
    """--precision reaches every model actor: the output's derivation records bf16 (one 32×32
    image: bf16 is emulated, slowly, on some CPUs); fp16 on CPU-only actors is refused. A run
    that succeeds prints no error: each actor's start printed Ray's core_worker.cc "E" line about
    restarting actors (ray-project/ray#57733); the actors are not restarted now (an actor that
    dies stops the run with the resume advice)."""
    import torch
    from PIL import Image

    from medsr.errors import InvalidParameterError
    from medsr.io.sidecar import read_sidecar

    shared_ray.up()  # Ray's own start is checked for that error in the test above
    (tmp_path / "in").mkdir()
    pixels = (np.random.default_rng(5).random((32, 32)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in" / "a.png")
    run = run_batch(
        tmp_path / "in", tmp_path / "out", model="fast-x2", engine="ray", workers=1,
        precision="bf16",
    )  # fmt: skip
    assert run.counts["ok"] == 1 and run.precision == "bf16"
    assert read_sidecar(tmp_path / "out" / "a.png")["derivation"]["precision"] == "bf16"
    err = capfd.readouterr().err
    assert "core_worker" not in err and "max_restarts" not in err, err
    if not torch.cuda.is_available():
        with pytest.raises(InvalidParameterError, match="fp16 runs on a CUDA GPU only"):
            run_batch(
                tmp_path / "in", tmp_path / "out16", model="fast-x2", engine="ray", workers=1,
                precision="fp16",
            )  # fmt: skip
