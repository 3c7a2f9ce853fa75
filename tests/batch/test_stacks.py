"""Series that hold several stacks (echoes, a drifting cine, time points, a localizer) in a batch.

A batch user cannot pass ``--series KEY:N`` per item: every such series failed with the reader's
"holds N stacks … choose one with --series KEY:N". Discovery now cuts them as the reader does
(:func:`medsr.io.dicom.stacks.series_volumes`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from medsr.batch import BatchItem, plan_batch, read_report, run_batch
from medsr.io import load_image
from medsr.io.dicom import series_key
from tests.io.conftest import dicom_corpus_path, write_series
from tests.io.test_dicom_stacks import CORONAL, _cine, _cine_beside_localizer, _stack


def _archive(root: Path) -> dict[str, str]:
    """echoes/ (2 echoes × 2 slices), cine/ (3 phases × 2 positions, trigger times drifting),
    dyn/ (2 time points × 2 slices), scout/ (2 echoes beside a coronal localizer) and plain/
    (one volume), all 8×8; → series keys by folder."""
    ct = pydicom.dcmread(dicom_corpus_path("CT_small.dcm"))
    mr = pydicom.dcmread(dicom_corpus_path("MR_small.dcm"))
    keys = {}
    small = {"shape": (8, 8)}
    uid = generate_uid()
    write_series(
        root / "echoes",
        _stack(ct, uid, 2, EchoNumbers=1, **small)
        + _stack(ct, uid, 2, level=1000, EchoNumbers=2, first=10, **small),
    )
    keys["echoes"] = series_key(uid)
    times = [[40 * k + 7 * p for k in range(3)] for p in range(2)]
    keys["cine"] = _cine(mr, root / "cine", times, size=8)[1]
    uid = generate_uid()
    write_series(
        root / "dyn",
        _stack(ct, uid, 2, TemporalPositionIdentifier=1, **small)
        + _stack(ct, uid, 2, level=500, TemporalPositionIdentifier=2, first=10, **small),
    )
    keys["dyn"] = series_key(uid)
    uid = generate_uid()
    write_series(
        root / "scout",
        _stack(ct, uid, 2, EchoNumbers=1, **small)
        + _stack(ct, uid, 2, level=1000, EchoNumbers=2, first=10, **small)
        + _stack(ct, uid, 1, level=3000, iop=CORONAL, shape=(10, 8), first=90),
    )
    keys["scout"] = series_key(uid)
    uid = generate_uid()
    write_series(root / "plain", _stack(ct, uid, 2, **small))
    keys["plain"] = series_key(uid)
    return keys


def test_a_series_of_stacks_becomes_the_items_the_reader_reads(tmp_path: Path):
    """Echoes: one item each (``UID:N``, output ``<folder>_echoN``); a cine or dynamic series:
    one item over time (``UID:all``); a localizer beside echoes: skipped, saying how to read it;
    a series of one volume: one item as before. Items keep their choice through the Ray
    engine's transport (``to_dict``/``from_dict``)."""
    keys = _archive(tmp_path / "in")
    items = {it.key: it for it in plan_batch(tmp_path / "in", tmp_path / "out")}
    out = (tmp_path / "out").resolve()
    e, c, d, s = keys["echoes"], keys["cine"], keys["dyn"], keys["scout"]
    assert sorted(items) == sorted(
        [
            f"series:{e}:1:echoes", f"series:{e}:2:echoes", f"series:{c}:all:cine",
            f"series:{d}:all:dyn", f"series:{s}:1:scout", f"series:{s}:2:scout",
            f"series:{s}:3:scout", f"series:{keys['plain']}:plain",
        ]
    )  # fmt: skip
    echo2 = items[f"series:{e}:2:echoes"]
    assert echo2.kind == "dicom-series" and echo2.series_uid.endswith(":2")
    assert echo2.label == f"echoes/ [series {e}:2 (2 images, axial 8×8, echo 2)]"
    assert echo2.output == str(out / "echoes_echo2")
    assert items[f"series:{e}:1:echoes"].output == str(out / "echoes_echo1")
    cine = items[f"series:{c}:all:cine"]
    assert cine.series_uid.endswith(":all") and cine.output == str(out / "cine")
    assert cine.label == f"cine/ [series {c}:all (3 cardiac phases × 2 images, axial 8×8)]"
    assert items[f"series:{d}:all:dyn"].label.endswith("(2 time points × 2 images, axial 8×8)]")
    scout = items[f"series:{s}:3:scout"]
    assert scout.kind == "skip" and f"Read it with --series {s}:3" in scout.note
    assert "is a localizer beside the 2 stacks" in scout.note
    assert items[f"series:{s}:2:scout"].output == str(out / "scout_echo2")
    assert BatchItem.from_dict(cine.to_dict()) == cine


def test_a_batch_writes_each_echo_and_one_series_over_time_and_resumes(tmp_path: Path):
    """`medsr batch` over echoes, a drifting cine and a localizer beside its main stack failed
    the first two ("holds 3 stacks of images, not one volume ... choose one with --series
    KEY:N"). Now: two echo series, the cine as ONE derived series of phases × positions
    instances, the main stack with the reader's localizer note in the report; a second run
    finds every item up to date."""
    ct = pydicom.dcmread(dicom_corpus_path("CT_small.dcm"))
    mr = pydicom.dcmread(dicom_corpus_path("MR_small.dcm"))
    src = tmp_path / "in"
    uid = generate_uid()
    small = {"shape": (8, 8)}
    write_series(
        src / "echoes",
        _stack(ct, uid, 2, EchoNumbers=1, **small)
        + _stack(ct, uid, 2, level=1000, EchoNumbers=2, first=10, **small),
    )
    times = [[40 * k + 7 * p for k in range(3)] for p in range(2)]
    _cine(mr, src / "cine", times, size=8)
    uid = generate_uid()
    scout = _stack(ct, uid, 1, level=3000, first=90, **small)
    scout[0].ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    write_series(src / "withscout", scout + _stack(ct, uid, 2, **small))
    out = tmp_path / "out"

    summary = run_batch(src, out, model="bicubic", scale=2, workers=1)
    rows = {r["output"]: r for r in read_report(summary.report)}
    assert {k: r["status"] for k, r in rows.items()} == {
        "echoes_echo1": "ok", "echoes_echo2": "ok", "cine": "ok", "withscout": "ok",
    }, rows  # fmt: skip
    assert rows["echoes_echo2"]["input"].endswith(":2 (2 images, axial 8×8, echo 2)]")
    assert "localizer (ImageType)" in rows["withscout"]["warnings"]
    assert "Read them with --series" in rows["withscout"]["warnings"]

    for n in (1, 2):
        echo = load_image(out / f"echoes_echo{n}")
        assert echo.spatial_shape == (2, 16, 16)
        assert {int(ds.EchoNumbers) for ds in echo.meta["datasets"]} == {n}
    assert (
        load_image(out / "echoes_echo2").array.mean()
        > load_image(out / "echoes_echo1").array.mean() + 500
    )
    files = sorted((out / "cine").glob("*.dcm"))
    assert len(files) == 6  # 3 phases × 2 positions, one series
    written = [pydicom.dcmread(f) for f in files]
    assert len({ds.SeriesInstanceUID for ds in written}) == 1
    cine = load_image(out / "cine", series_uid=":all")
    assert cine.channels == "time" and cine.array.shape == (3, 2, 16, 16)
    means = cine.array.mean(axis=(1, 2, 3))
    assert np.all(np.diff(means) > 500)  # phase k holds 1000·k more
    assert load_image(out / "withscout").spatial_shape == (2, 16, 16)

    again = run_batch(src, out, model="bicubic", scale=2, workers=1)
    assert again.counts == {"ok": 0, "failed": 0, "skipped": 4}
    assert {r.error for r in again.results} == {
        "up to date (output as written; input and model unchanged)"
    }


def test_a_cine_beside_a_localizer_is_one_series_over_time(tmp_path: Path):
    """A cine with a localizer under its Series Instance UID became one item per cardiac phase
    (and a skipped localizer), not the one ``UID:all`` item of the same cine without it. Now: that one item, reading the cine's files
    only, the localizer left out with a note for the report that says how to read it;
    whether the localizer is another orientation and size or marked in its Image Type."""
    mr = pydicom.dcmread(dicom_corpus_path("MR_small.dcm"))
    for marked in (False, True):
        src = tmp_path / f"marked{marked}"
        key, scout = _cine_beside_localizer(src / "cine", mr, marked=marked)
        [item] = plan_batch(src, tmp_path / f"out{marked}")
        assert item.key == f"series:{key}:all:cine" and item.kind == "dicom-series"
        assert item.label == f"cine/ [series {key}:all (3 cardiac phases × 2 images, axial 8×8)]"
        assert len(item.paths) == 6 and str(scout) not in item.paths
        assert item.output == str((tmp_path / f"out{marked}" / "cine").resolve())
        note = item.extra["left_out"]
        assert note.startswith(f"'cine/': series {key} holds 1 image(s) ")
        assert f"left out of {key}:all" in note and f"Read them with --series {key}:4" in note
        assert ("marked as localizer (ImageType)" in note) == marked
        assert ("coronal 10×8" in note) == (not marked)


def test_the_reader_warnings_of_an_item_are_in_its_report_naming_its_folder(tmp_path: Path):
    """`medsr batch` reads each series from a private folder of links in a child process: the
    reader's warnings came on stderr in Python's raw warning format, naming that folder
    ("...read.py:371: MedSRWarning: 'medsr-series-_c3z1pi_': series ... holds 1 image(s)
    marked as localizer"), a path the user never gave, and were missing from the report
    where the reader alone said them (slices without positions). Now they are in the
    report's warnings column, naming the user's folder, each once (the localizer's note,
    which discovery said already, too); nothing is printed. A cine beside a localizer is
    written as one series of 3 phases × 2 positions, the localizer's note in its row."""
    ct = pydicom.dcmread(dicom_corpus_path("CT_small.dcm"))
    mr = pydicom.dcmread(dicom_corpus_path("MR_small.dcm"))
    src, out = tmp_path / "in", tmp_path / "out"
    uid = generate_uid()
    scout = _stack(ct, uid, 1, level=3000, first=90, shape=(8, 8))
    scout[0].ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    write_series(src / "withscout", scout + _stack(ct, uid, 2, shape=(8, 8)))
    nowhere = _stack(ct, generate_uid(), 2, shape=(8, 8))
    for ds in nowhere:
        del ds.ImagePositionPatient
    write_series(src / "nowhere", nowhere)
    cine_key, _ = _cine_beside_localizer(src / "cine", mr, marked=False)

    summary = run_batch(src, out, model="bicubic", scale=2, workers=1)
    rows = {r["output"]: r for r in read_report(summary.report)}
    assert {k: r["status"] for k, r in rows.items()} == {
        "withscout": "ok", "nowhere": "ok", "cine": "ok",
    }, rows  # fmt: skip
    said = rows["withscout"]["warnings"]
    assert said.startswith(f"'withscout/': series {series_key(uid)} holds 1 image(s) marked")
    assert said.count("Read them with --series") == 1
    assert rows["nowhere"]["warnings"].startswith(
        "'nowhere/': the slices have no position (ImagePositionPatient): stacked by"
    )
    assert rows["cine"]["warnings"].startswith(f"'cine/': series {cine_key} holds 1 image(s)")
    assert not any("medsr-series" in r["warnings"] for r in rows.values())
    cine = load_image(out / "cine", series_uid=":all")
    assert cine.array.shape == (3, 2, 16, 16)


def test_a_failed_item_keeps_what_the_reader_said_before_it_failed(tmp_path: Path, monkeypatch):
    """The report's warnings column of an item that failed was empty, also where the reader had
    said something before the failure: a series whose localizer was left out, then whose
    output was past the pixel ceiling, showed only the error ("failed | the output would hold
    512 values ... | "). Now its warnings keep the reader's note, naming the user's folder (not
    the private folder of links it was read from), and the CLI's count of items with warnings
    counts it."""
    ct = pydicom.dcmread(dicom_corpus_path("CT_small.dcm"))
    src, out = tmp_path / "in", tmp_path / "out"
    uid = generate_uid()
    scout = _stack(ct, uid, 1, level=3000, first=90, shape=(8, 8))
    scout[0].ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    write_series(src / "withscout", scout + _stack(ct, uid, 2, shape=(8, 8)))
    # the ceiling of this process only (the decoding children outlive the test)
    monkeypatch.setattr("medsr.io.limits.max_pixels", lambda: 100)

    summary = run_batch(src, out, model="bicubic", scale=2, workers=1)
    (row,) = read_report(summary.report)
    assert row["status"] == "failed"
    assert "the output would hold 512 values" in row["error"]
    said = row["warnings"]
    assert said.startswith(f"'withscout/': series {series_key(uid)} holds 1 image(s) marked")
    assert said.count("Read them with --series") == 1
    assert "medsr-series" not in said
    assert summary.to_dict()["warnings"] == 1


def test_a_manifest_folder_of_echoes_is_one_item_per_echo(tmp_path: Path):
    """A manifest row naming a folder of a two-echo series failed ("holds 2 stacks of images,
    not one volume ... Choose one with --series KEY:N"), which a batch cannot give. Now the
    folder is cut as discovery cuts it: one item per echo (its output the row's with the
    echo's words: ``mine_echo2``), a cine's folder one item over time; a folder of one volume
    stays one item read by the reader as before."""
    keys = _archive(tmp_path / "in")
    manifest = tmp_path / "in" / "list.csv"
    manifest.write_text("input,output\nechoes,mine\ncine,\nplain,flat\n")
    items = plan_batch(manifest, tmp_path / "out")
    out = (tmp_path / "out").resolve()
    e = keys["echoes"]
    assert [(it.key, it.kind, it.output) for it in items] == [
        ("echoes:1", "dicom-series", str(out / "mine_echo1")),
        ("echoes:2", "dicom-series", str(out / "mine_echo2")),
        ("cine:all", "dicom-series", str(out / "cine")),
        ("plain", "dicom-folder", str(out / "flat")),
    ]
    assert items[1].label == f"echoes [series {e}:2 (2 images, axial 8×8, echo 2)]"
    assert items[2].series_uid.endswith(":all")

    manifest.write_text("input,output\nechoes,mine\n")
    summary = run_batch(manifest, tmp_path / "out", model="bicubic", scale=2, workers=1)
    assert summary.counts == {"ok": 2, "failed": 0, "skipped": 0}
    for n in (1, 2):
        echo = load_image(out / f"mine_echo{n}")
        assert {int(ds.EchoNumbers) for ds in echo.meta["datasets"]} == {n}
