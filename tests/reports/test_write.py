"""The report files: report.md renders (every table row has as many cells as its header, pipes
in cells escaped); the report states what reproduces its numbers and how each image was scored."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

import medsr
from medsr.reports.evaluate import evaluate


def _cells(line: str) -> int:
    """Cells of a Markdown table row, an escaped pipe (``\\|``) staying inside its cell."""
    return len(re.split(r"(?<!\\)\|", line.strip().strip("|")))


def test_report_md_tables_render(tmp_path, corpus):
    evaluate([corpus("CT_small.dcm")], models=["lanczos"], out_dir=tmp_path, progress=False,
             figures=False)  # fmt: skip
    text = (tmp_path / "report.md").read_text()
    assert "## Fidelity to the input" in text
    table: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            assert {_cells(row) for row in table} == {_cells(table[0])}, table
            table = []
    markdown = __import__("pytest").importorskip("markdown")
    html = markdown.markdown(text, extensions=["tables"])
    fidelity = html.split("Fidelity to the input")[1].split("</table>")[0]
    head = re.findall(r"<th[^>]*>(.*?)</th>", fidelity)
    assert head[:3] == ["model", "mean |D(SR) − LR|", "max |D(SR) − LR|"], head
    first_row = fidelity.split("<tbody>")[1].split("</tr>")[0]
    assert len(re.findall(r"<td", first_row)) == len(head)


def test_report_states_what_reproduces_it(tmp_path, corpus):
    """summary.json, report.md and report.html state the software, device, noise seed, each
    model's identity and precision, how PSNR/SSIM were defined and each image's data range
    (before: none of it; a paper could not say which R its PSNR used)."""
    from skimage.metrics import peak_signal_noise_ratio

    from medsr.degradations import degrade_image
    from medsr.inference.predictor import upscale
    from medsr.io import load_image
    from medsr.models.resolver import resolve_model

    evaluate([corpus("CT_small.dcm")], models=["fast-x2"], degradation="bicubic",
             out_dir=tmp_path, progress=False, figures=False, maps=False)  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    rep = summary["reproduce"]
    assert rep["medsr_version"] == medsr.__version__ and rep["seed"] == 0
    assert rep["device"].startswith("cpu (") and rep["max_slices"] == 16
    checksum = resolve_model("fast-x2", scale=2).checksum
    assert rep["models"]["fast-x2"]["model_checksum"] == checksum
    assert rep["models"]["fast-x2"]["precision"] == "fp32"
    assert rep["models"]["bicubic"]["model_checksum"] == "classical:bicubic"
    assert "max − min" in rep["metrics"]["data_range"] and "σ = 1.5" in rep["metrics"]["ssim"]
    # the stated R is the one that gives the reported PSNR (scikit-image as the oracle)
    (image,) = summary["images"]
    ref = load_image(corpus("CT_small.dcm"))
    lr = degrade_image(ref, "bicubic", 2, generator=rep["seed"])
    sr = upscale(lr, scale=2, model="bicubic", device="cpu", clip=False)
    c = 2
    oracle = peak_signal_noise_ratio(
        ref.array[0, c:-c, c:-c].astype(np.float64),
        sr.array[0, c:-c, c:-c].astype(np.float64),
        data_range=image["data_range"],
    )
    assert image["shape"] == [1, 128, 128] and image["notes"] == []
    assert summary["models"]["bicubic"]["psnr"]["mean"] == pytest.approx(oracle, abs=1e-9)
    for report in ("report.md", "report.html"):
        text = (tmp_path / report).read_text()
        assert "Reproducibility" in text and checksum in text and "noise seed 0" in text
        assert f"{image['data_range']:.6g}" in text and "precision fp32" in text


def test_report_says_how_each_image_was_scored(tmp_path):
    """An RGB image with sizes not divisible by the scale is scored as the luminance of a crop:
    the per-image table says so (before: silently)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    path = tmp_path / "odd.png"
    Image.fromarray((rng.random((37, 51, 3)) * 255).astype(np.uint8)).save(path)
    evaluate([path], models=["lanczos"], scale=2, out_dir=tmp_path / "ev", progress=False,
             figures=False, maps=False)  # fmt: skip
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["images"][0]["shape"] == [1, 36, 50]
    assert summary["images"][0]["notes"] == [
        "luminance of the colour image",
        "36×50 of 37×51 pixels (a multiple of the scale)",
    ]
    text = (tmp_path / "ev" / "report.md").read_text()
    assert "luminance of the colour image; 36×50 of 37×51 pixels" in text


def test_mean_over_fewer_images_says_n(tmp_path, corpus):
    """MS-SSIM needs 176 px and `_3d` metrics a volume: a column averaged over fewer images
    than the run's says n (before: '0.9878 ± n/a' read as a mean over every image)."""
    evaluate([corpus("camera.png"), corpus("CT_small.dcm")], models=["lanczos"], out_dir=tmp_path,
             progress=False, figures=False, maps=False)  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["models"]["lanczos"]["ms_ssim"]["n"] == 1
    lines = [
        line for line in (tmp_path / "report.md").read_text().splitlines()
        if line.startswith("| lanczos |")
    ]  # fmt: skip
    cells = lines[0].split("|")
    ms = summary["models"]["lanczos"]["ms_ssim"]["mean"]
    assert f" {ms:.4f} ± n/a (n=1) " in cells
    assert all("(n=" not in c for c in cells[2:3])  # psnr: over both images, no n


def test_no_mean_across_images_in_different_units(tmp_path, corpus):
    """MSE, MAE and the band errors are in each image's units: a CT's HU and an MR's a.u. have no
    common mean (the table showed 'mse 2143.90 ± 2323.40' over CT_small and MR_small); PSNR,
    SSIM and NRMSE, unitless, still do."""
    evaluate([corpus("CT_small.dcm"), corpus("MR_small.dcm")], models=["lanczos"],
             out_dir=tmp_path, progress=False, figures=False, maps=False)  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    entry = summary["models"]["lanczos"]
    for metric in ("mse", "mae", "low_band_rms", "high_band_rms"):
        assert entry[metric]["n"] == 0 and entry[metric]["mixed_units"] == ["HU", "a.u."], metric
    for metric in ("psnr", "ssim", "nrmse"):
        assert entry[metric]["n"] == 2 and math.isfinite(entry[metric]["mean"]), metric
    row = next(
        line for line in (tmp_path / "report.md").read_text().splitlines()
        if line.startswith("| lanczos |")
    )  # fmt: skip
    assert row.count("mixed units (HU, a.u.)") == 4
    assert "mixed units (HU, a.u.)" in (tmp_path / "report.html").read_text()
    # one unit: a mean as before
    evaluate([corpus("CT_small.dcm")], models=["lanczos"], out_dir=tmp_path / "one",
             progress=False, figures=False, maps=False)  # fmt: skip
    one = json.loads((tmp_path / "one" / "summary.json").read_text())["models"]["lanczos"]
    assert one["mse"]["n"] == 1 and "mixed_units" not in one["mse"]
