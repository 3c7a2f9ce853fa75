"""Discovery (series grouped across folders, non-images, sidecars) and output planning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medsr.batch import discover, plan_batch, read_manifest
from medsr.errors import InvalidParameterError
from tests.batch.conftest import make_ct_series
from tests.conftest import corpus_path


def _by_label(items):
    return {it.label.split(" [")[0]: it for it in items}


def test_discover_kinds_and_notes(archive: Path):
    items = _by_label(discover(archive))
    assert items["study1/ct/"].kind == "dicom-series"
    assert len(items["study1/ct/"].paths) == 2
    assert items["study1/mr/MR_small.dcm"].kind == "dicom-file"
    assert items["volumes/brain.nii.gz"].kind == "nifti"
    assert items["photos/slice.png"].kind == "png"
    # the truncated file's header still reads: it is attempted (and fails when decoded)
    assert items["broken/truncated.dcm"].kind == "dicom-file"
    assert items["notes.txt"].kind == "skip"
    if "seg/liver.dcm" in items:
        assert items["seg/liver.dcm"].kind == "skip"
        assert "segmentation" in items["seg/liver.dcm"].note


def test_series_grouped_across_folders_and_duplicates(tmp_path: Path):
    paths = make_ct_series(tmp_path / "split", n=3, names=["x/a.dcm", "y/b.dcm", "y/z/c.dcm"])
    shutil.copy(paths[0], tmp_path / "split" / "y" / "copy_of_a.dcm")  # same SOP Instance UID
    (tmp_path / "split" / "empty.dcm").write_bytes(b"")
    (tmp_path / "split" / "header_only.dcm").write_bytes(paths[0].read_bytes()[:200])
    items = discover(tmp_path / "split")
    series = [it for it in items if it.kind == "dicom-series"]
    assert len(series) == 1 and len(series[0].paths) == 3
    assert series[0].extra["folder"] == str((tmp_path / "split").resolve())
    by = _by_label(items)
    assert by["empty.dcm"].kind == "error" and "empty" in by["empty.dcm"].note
    assert by["header_only.dcm"].kind == "error"
    # the series' folder is the input root: its output is named after the input folder
    planned = {it.key: it for it in plan_batch(tmp_path / "split", tmp_path / "out")}
    assert planned[series[0].key].output == str((tmp_path / "out" / "split").resolve())


def test_plan_mirrors_structure_and_names_shared_series_folders(tmp_path: Path):
    root = tmp_path / "in"
    make_ct_series(root / "p1" / "ct")  # a folder holding only its series → mirrored
    make_ct_series(root / "p1" / "mixed")  # shares its folder with another image → series-KEY
    shutil.copy(corpus_path("MR_small.dcm"), root / "p1" / "mixed" / "MR_small.dcm")
    shutil.copy(corpus_path("CT_small.dcm"), root / "p1" / "noext")  # DICOM without a suffix
    np.save(root / "p1" / "arr.npy", np.ones((1, 8, 8), np.float32))
    (root / "p1" / "arr.json").write_text(json.dumps({"spacing_mm_zyx": [1, 1, 1]}))  # its sidecar
    out = tmp_path / "out"
    items = {it.label.split(" [")[0]: it for it in plan_batch(root, out)}
    rel = {
        k: Path(v.output).relative_to(out.resolve()).as_posix()
        for k, v in items.items()
        if v.output
    }
    assert rel["p1/ct/"] == "p1/ct"
    assert (
        rel["p1/mixed/"].startswith("p1/mixed/series-")
        and len(rel["p1/mixed/"]) == len("p1/mixed/series-") + 8
    )
    assert rel["p1/mixed/MR_small.dcm"] == "p1/mixed/MR_small.dcm"
    assert rel["p1/noext"] == "p1/noext.dcm"
    assert rel["p1/arr.npy"] == "p1/arr.npy"
    assert "p1/arr.json" not in items  # a sidecar belongs to its image


def test_plan_refuses_clashing_outputs(tmp_path: Path):
    from PIL import Image

    root = tmp_path / "in"
    root.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "a.png")
    np.save(root / "a.npy", np.zeros((1, 8, 8), np.float32))  # same sidecar a.json
    items = plan_batch(root, tmp_path / "out")
    kinds = sorted(it.kind for it in items)
    assert kinds == ["error", "npy"] or kinds == ["error", "png"]
    err = next(it for it in items if it.kind == "error")
    assert "clashes" in err.note


def test_output_folder_rules(tmp_path: Path, archive: Path):
    with pytest.raises(InvalidParameterError):
        plan_batch(archive, archive)
    with pytest.raises(InvalidParameterError):
        plan_batch(archive, archive.parent)
    inside = plan_batch(archive, archive / "out")  # excluded from discovery
    assert not any("out/" in it.label for it in inside)


def test_manifest(tmp_path: Path, archive: Path):
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "input,output\n"
        f"{archive}/study1/mr/MR_small.dcm,mr/x2.dcm\n"
        "archive/volumes/brain.nii.gz,\n"
        "archive/study1/ct,ct_series\n"
        "archive/missing.png,\n"
        "archive/notes.txt,\n"
    )
    items, requested = read_manifest(manifest)
    kinds = [it.kind for it in items]
    assert kinds == ["dicom-file", "nifti", "dicom-folder", "error", "skip"]
    assert requested == {items[0].key: "mr/x2.dcm", items[2].key: "ct_series"}
    planned = plan_batch(manifest, tmp_path / "out")
    outs = [
        Path(it.output).relative_to((tmp_path / "out").resolve()).as_posix() if it.output else None
        for it in planned
    ]
    assert outs[:3] == ["mr/x2.dcm", "archive/volumes/brain.nii.gz", "ct_series"]
    bad = tmp_path / "bad.csv"
    bad.write_text("path\nx.png\n")
    with pytest.raises(InvalidParameterError, match="input"):
        read_manifest(bad)


def test_damaged_files_named_as_images_fail_with_the_reason(tmp_path: Path):
    """Random bytes named ``.nii.gz``/``.png``/``.dcm`` and a ``.dcm`` shorter than the DICOM
    preamble are damaged inputs: failed items with the reason (they were skipped as "not an image
    format medsr reads", so a batch of only such files exited 0); a readme stays skipped."""
    root = tmp_path / "in"
    root.mkdir()
    noise = np.random.default_rng(3).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    for name in ("junk.nii.gz", "junk.png", "junk.dcm", "junk.dic"):
        (root / name).write_bytes(noise)
    (root / "short.dcm").write_bytes(noise[:100])
    (root / "notes.txt").write_bytes(noise)
    by = _by_label(discover(root))
    for name in ("junk.nii.gz", "junk.png", "junk.dcm", "junk.dic"):  # .dic: the one list
        assert by[name].kind == "error", name
        assert by[name].note == (
            f"'{name}' is not a format medsr reads (DICOM, NIfTI, PNG, TIFF, NumPy .npy): "
            "corrupt or mislabelled"
        )
    assert by["short.dcm"].kind == "error"
    assert by["short.dcm"].note.startswith("truncated DICOM: 'short.dcm' is only 100 bytes")
    assert by["notes.txt"].kind == "skip"
    assert by["notes.txt"].note == "not an image format medsr reads"
    # a manifest naming them says the same
    manifest = tmp_path / "list.csv"
    manifest.write_text("input\nin/junk.nii.gz\nin/short.dcm\nin/notes.txt\n")
    items, _ = read_manifest(manifest)
    assert [it.kind for it in items] == ["error", "error", "skip"]
    assert items[0].note == by["junk.nii.gz"].note and items[1].note == by["short.dcm"].note


def test_discovery_holds_less_than_a_header_per_file(tmp_path: Path):
    """Discovery kept every DICOM file's header object as read (file meta, preamble, every
    element read, those its checks decoded: ~9 KB for a CT_small copy) until grouping ended:
    its peak was ~15 KB per file in an archive of small series (~1.5 GB per 100 000 files),
    more than the headers themselves. It now keeps only the elements grouping reads, not yet
    decoded, and lets a series' headers go once it is grouped: ~5 KB per file in a large
    archive, under one header as read per file here (the fixed costs spread over 20 files)."""
    import gc
    import tracemalloc

    import pydicom
    from pydicom.uid import generate_uid

    from medsr.batch.discover import _dicom_header, _non_image_reason

    ds = pydicom.dcmread(corpus_path("CT_small.dcm"))
    ds.PixelData, ds.Rows, ds.Columns = bytes(8 * 8 * 2), 8, 8
    for s in range(10):
        ds.SeriesInstanceUID = generate_uid()
        (tmp_path / f"s{s}").mkdir()
        for k in range(2):
            ds.SOPInstanceUID, ds.ImagePositionPatient = generate_uid(), [0, 0, 2.5 * k]
            ds.save_as(tmp_path / f"s{s}" / f"IM{k}.dcm")
    files = sorted(tmp_path.rglob("*.dcm"))
    assert len(discover(tmp_path / "s0")) == 1  # imports done, caches filled

    gc.collect()
    tracemalloc.start()
    try:
        headers = []
        for f in files:  # what the old discovery kept of each file
            header = _dicom_header(f)
            assert _non_image_reason(header) is None
            header.get("SeriesInstanceUID"), header.get("SOPInstanceUID")
            headers.append(header)
        as_read = tracemalloc.get_traced_memory()[0] / len(files)
        del headers
        gc.collect()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        items = discover(tmp_path)
        peak = (tracemalloc.get_traced_memory()[1] - base) / len(files)
    finally:
        tracemalloc.stop()
    assert len(items) == 10 and all(len(it.paths) == 2 for it in items)
    assert as_read > 4000 and peak < as_read, (peak, as_read)  # old code: ~1.7 × as_read
