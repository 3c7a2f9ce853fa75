"""Shared fixtures: corpus files (CORPUS.md only) and tiny synthetic images."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import typer
from hypothesis import settings

os.environ.setdefault("MPLBACKEND", "Agg")

# CI runs every property test on the same examples (a clean clone keeps no example database,
# so a rare counterexample would fail one run in many and pass the rerun); run locally, the
# tests draw new examples each time and keep the ones that failed
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

_NIBABEL_FILES = {"anatomical.nii", "example4d.nii.gz", "standard.nii.gz"}
_DIPY_FILES = {"S0_10slices.nii.gz", "aniso_vox.nii.gz", "t1_coronal_slice.npy"}


@pytest.fixture(autouse=True)
def _seeded_random_state():
    """Every test starts from the same global random state (Python's, and torch's when a
    test module imported it), whatever ran before it: a test that draws unseeded numbers
    draws the same ones in every run and in any order. (numpy's legacy global generator is
    not used: ruff's NPY002 refuses it.)"""
    import random
    import sys

    random.seed(0)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(0)


def corpus_path(name: str) -> Path:
    """Locate a development-corpus file by name (see shared/data/CORPUS.md)."""
    if name in _NIBABEL_FILES:
        import nibabel

        return Path(nibabel.__file__).parent / "tests" / "data" / name
    if name in _DIPY_FILES:
        import dipy

        return Path(dipy.__file__).parent / "data" / "files" / name
    if name in ("camera.png", "phantom.png"):
        import skimage

        return Path(skimage.__file__).parent / "data" / name
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name)
    if found is None:
        pytest.skip(f"corpus file {name} is not installed")
    return Path(found)


@pytest.fixture
def corpus():
    return corpus_path


def short_cine(folder: Path, frames: int = 4) -> Path:
    """The corpus cine ``color3d_jpeg_baseline.dcm`` (US, JPEG baseline, Frame Increment Pointer
    → FrameTime) cut to its first ``frames`` frames: the same header, so read the same way, but
    not 120 frames of 480×640 to decode (~5 s) where the number of frames is not the point."""
    import pydicom
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(corpus_path("color3d_jpeg_baseline.dcm"))
    kept = [
        f
        for _, f in zip(
            range(frames),
            generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)),
            strict=False,
        )
    ]
    ds.PixelData = encapsulate(kept)
    ds.NumberOfFrames = frames
    out = folder / f"cine_{frames}frames.dcm"
    ds.save_as(out)
    return out


def make_ct_series(
    folder: Path,
    n: int = 2,
    names: list[str] | None = None,
    *,
    tag: str | None = None,
    vary: bool = False,
) -> list[Path]:
    """``n`` copies of CT_small.dcm forming one series: a new Series UID, distinct SOP UIDs,
    positions (and SliceLocation) ``SliceThickness`` apart; files ``names`` (else ``IM{k}.dcm``,
    ``{tag}_{k:03d}.dcm`` with a ``tag``, which also keeps several series of one folder apart).
    ``vary``: each slice's pixels shifted a little, so that they differ as neighbouring slices do."""
    import copy

    import pydicom
    from pydicom.uid import generate_uid

    src = pydicom.dcmread(corpus_path("CT_small.dcm"))
    pixels = src.pixel_array
    key = [str(folder)] if tag is None else [str(folder), tag]
    series_uid = generate_uid(entropy_srcs=[*key, "series"])
    gap = float(src.get("SliceThickness", 5.0) or 5.0)
    out = []
    for i in range(n):
        ds = copy.deepcopy(src)  # Dataset.copy() shares data elements: IPPs would add up
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[*key, str(i)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ipp = [float(v) for v in src.ImagePositionPatient]
        ipp[2] += i * gap
        ds.ImagePositionPatient = ipp
        ds.InstanceNumber = i + 1
        if "SliceLocation" in ds:
            ds.SliceLocation = float(ds.SliceLocation) + i * gap
        if vary:
            ds.PixelData = (
                np.ascontiguousarray(np.roll(pixels, i, axis=1)).astype(pixels.dtype).tobytes()
            )
        default = f"IM{i + 1}.dcm" if tag is None else f"{tag}_{i + 1:03d}.dcm"
        path = folder / (names[i] if names else default)
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


def make_tilted_ct_series(
    folder: Path, n: int = 6, *, gap: float = 2.5, tilt_deg: float = 20.0, size: int = 24
) -> Path:
    """A CT series acquired with a tilted gantry, from CT_small.dcm: ``n`` slices ``gap`` mm
    apart along their normal (SliceThickness and SpacingBetweenSlices ``gap``), Image
    Orientation tilted by ``tilt_deg`` about x, positions stepping along the table (z) by
    ``gap / cos(tilt)``, so medsr reads one sheared grid whose step is longer than ``gap``
    (2.66 mm for 2.5 mm at 20°). ``size`` × ``size`` pixels, each slice shifted a little."""
    import copy

    import pydicom
    from pydicom.uid import generate_uid

    src = pydicom.dcmread(corpus_path("CT_small.dcm"))
    tilt = np.deg2rad(tilt_deg)
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, np.cos(tilt), -np.sin(tilt)])
    normal = np.cross(row, col)
    pixels = src.pixel_array[:size, :size]
    series_uid = generate_uid(entropy_srcs=[str(folder), "tilted"])
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        ds = copy.deepcopy(src)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(folder), "tilted", str(k)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImageOrientationPatient = [*row, *col]
        position = np.array([-50.0, -60.0, 10.0 + k * gap / np.cos(tilt)])
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.SliceThickness = gap
        ds.SpacingBetweenSlices = gap
        ds.SliceLocation = float(normal @ position)
        ds.InstanceNumber = k + 1
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = np.ascontiguousarray(np.roll(pixels, 2 * k, axis=1)).tobytes()
        ds.save_as(folder / f"IM{k + 1}.dcm", enforce_file_format=True)
    return folder


def make_nan_nifti(path: Path, shape: tuple[int, int, int] = (6, 20, 18)) -> np.ndarray:
    """A float NIfTI whose no-data region is NaN (a masked statistical map, a volume NaN outside
    the brain): the first 5 columns, the whole first slice and one +inf voxel; smooth values
    80…120 elsewhere, spacing 1 × 1 × 4 mm. Returns the non-finite mask in (Z, Y, X) order."""
    import nibabel as nib

    z, h, w = shape
    zz, yy, xx = np.mgrid[:z, :h, :w]
    arr = (100 + 20 * np.sin(yy / 3.0 + zz / 2.0) * np.cos(xx / 4.0)).astype(np.float32)
    arr[:, :, :5] = np.nan
    arr[0] = np.nan
    arr[z // 2, h // 2, w // 2] = np.inf
    nib.save(nib.Nifti1Image(arr.transpose(2, 1, 0), np.diag([1.0, 1.0, 4.0, 1.0])), path)
    return ~np.isfinite(arr)


def padded_ct(h: int, w: int, z: int = 8):
    """A CT whose outside of the scan circle is filled with −3024 HU (a no-data fill): smooth
    ±300 HU with 5 HU noise inside, 2 mm slices of 1 mm pixels. Returns ``(image, circle)``,
    ``circle`` the (Y, X) mask of the measured pixels (the interpolate and through-plane error
    bound tests' padded volume)."""
    from medsr.image import MedImage

    rng = np.random.default_rng(3)
    zz, yy, xx = np.mgrid[:z, :h, :w]
    arr = 300 * np.sin(yy / 3.0 + zz / 2.0) * np.cos(xx / 4.0) + rng.normal(0, 5, (z, h, w))
    arr = arr.astype(np.float32)
    circle = (yy[0] - h / 2 + 0.5) ** 2 + (xx[0] - w / 2 + 0.5) ** 2 < (0.45 * h) ** 2
    arr[:, ~circle] = -3024.0
    return MedImage(arr, spacing=(2.0, 1.0, 1.0), modality="CT", units="HU"), circle


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures(...)``): two
    OpenMP threads on a busy 2-core machine spin on each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cli_app(register) -> typer.Typer:
    """A Typer app with only the commands ``register(app)`` adds (a front end's CLI module:
    batch, PACS, serve), as the ``medsr`` app registers them, for ``CliRunner().invoke``."""
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    return app
