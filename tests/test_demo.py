"""`medsr demo` (what `make demo` runs): page, derived series, honest metrics."""

from __future__ import annotations

import json

import pytest

import medsr
import medsr.demo
from medsr.demo import CHECK_MAX_SIDE, run_demo
from medsr.models.pretrained import default_model_name


def _radiograph_as_its_checked_centre(folder, scale):
    """The corpus radiograph (RG3_UNCR.dcm, 1760² pixels) cut to the centre that the demo's
    honest check takes from it (``CHECK_MAX_SIDE``² pixels, ``medsr.demo._check_region``), the
    same header and file name otherwise. Its honest check (every number the test asserts)
    runs on the same pixels; only the real-use row upscales 512² pixels instead of 1760²
    (~60 s of the test on 2 cores, with nothing asserted on that row's size)."""
    import pydicom

    source = medsr.demo.corpus_file("RG3_UNCR.dcm")
    ds = pydicom.dcmread(source)
    h, w = int(ds.Rows), int(ds.Columns)
    ch, cw = (min(n, CHECK_MAX_SIDE) // scale * scale for n in (h, w))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    ds.PixelData = ds.pixel_array[y0 : y0 + ch, x0 : x0 + cw].copy().tobytes()
    ds.Rows, ds.Columns = ch, cw
    folder.mkdir()
    ds.save_as(folder / source.name, enforce_file_format=True)
    return folder / source.name


def test_demo_writes_page_series_and_metrics(tmp_path, monkeypatch):
    cut = _radiograph_as_its_checked_centre(tmp_path / "corpus", scale=2)
    corpus_file = medsr.demo.corpus_file
    monkeypatch.setattr(
        medsr.demo,
        "corpus_file",
        lambda *names: cut if cut.name in names else corpus_file(*names),
    )
    page = run_demo(tmp_path / "demo", scale=2)
    html = page.read_text()
    assert "Honest check" in html and "PSNR" in html
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert {c["case"] for c in summary} == {"CT", "MR", "CR", "US"}
    default = default_model_name(2)
    for case in summary:
        psnr = {m["model"]: m["psnr"] for m in case["metrics"]}
        assert psnr["bicubic"] > psnr["nearest"]  # sanity: the baseline ordering holds on real data
        if default != "bicubic":  # the shipped default beats bicubic on every demo image
            assert psnr[default] > psnr["bicubic"], case["case"]
    # each trained model's row says what the detail self-checks did (a model whose detail did
    # not hold up, one scale down or at full scale, returns its peer's numbers: the row says so)
    classical = {"nearest", "bicubic", "lanczos", "kspace"}
    for case in summary:
        for m in case["metrics"]:
            words = m["self_check"]
            if m["model"] in classical:
                assert words == "—", (case["case"], m)
                continue
            last = words.split("; ")[-1]
            assert words == "detail kept" or last.startswith(("one scale down: ", "full scale: "))
            if "dropped" in last:  # the output is the peer's image: the peer's numbers
                peer = next(p for p in case["metrics"] if f" {p['model']}'s image" in last)
                assert m["psnr"] == pytest.approx(peer["psnr"], abs=0.01), (case["case"], m)
    assert ">self-check</th>" in html
    if default != "bicubic":
        assert html.count("never seen in training") == 3 and "seen in training (the corpus" in html
    series = medsr.load_image(tmp_path / "demo" / "ct_bicubic_x2")
    assert series.modality == "CT" and series.units == "HU"
    assert series.meta["datasets"][0].ImageType[:2] == ["DERIVED", "SECONDARY"]
    for img in (tmp_path / "demo" / "figures").glob("*.png"):
        assert img.stat().st_size > 1000
