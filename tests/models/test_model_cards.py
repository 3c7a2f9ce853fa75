"""Model cards a researcher or a regulator can read (Mitchell et al., FAT* 2019): every shipped
card's report sections are what ``scripts/card_sections.py`` writes from the benchmark results,
their types are checked, ``medsr models NAME`` prints the whole card."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsr.cli import app
from medsr.errors import CorruptInputError, MedSRError
from medsr.models.cards import REPORT_SECTIONS, full_card, weights_sha256
from medsr.models.pretrained import WEIGHTS_DIR, bundled_weights
from medsr.models.resolver import file_checksum, list_pretrained
from medsr.models.weights import check_card, read_card

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = bundled_weights()
pytestmark = pytest.mark.skipif(not SHIPPED, reason="no weights shipped")
runner = CliRunner()


def _script():
    spec = importlib.util.spec_from_file_location(
        "card_sections", ROOT / "scripts" / "card_sections.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_shipped_twin_is_what_the_script_writes_from_the_benchmarks():
    script = _script()
    kinds = {m.name: m.kind for m in list_pretrained()}
    stale = [
        name
        for name, path in SHIPPED.items()
        if (WEIGHTS_DIR / f"{name}.json").read_text() != script.twin(name, path)
    ]
    assert all(script.kind_of(read_card(p)) == kinds[n] for n, p in SHIPPED.items())
    assert stale == [], f"run scripts/card_sections.py: {stale}"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_card_has_every_section(name):
    card = full_card(SHIPPED[name])
    assert set(REPORT_SECTIONS) <= set(card), set(REPORT_SECTIONS) - set(card)
    assert "sha256:" + card["weights_sha256"] == file_checksum(SHIPPED[name])
    assert "not validated for clinical use" in card["intended_use"]
    assert any("Diagnosis" in t for t in card["out_of_scope"])
    sets = card["validation_results"]["sets"]
    assert sets and all(s["images"] and s["per_modality"] for s in sets)
    # images never trained on: the validation rows are not training files
    trained = set(card["training_data"]["train_files"])
    assert not {r.get("file") for s in sets for r in s["images"]} & trained
    licensed = {f for lic in card["training_data_licences"] for f in lic["files"]}
    assert set(card["training_data"]["train_files"]) <= licensed
    assert all(lic["licence"] != "unknown" for lic in card["training_data_licences"])


def test_numbers_are_the_benchmarks_own():
    """default-x2 on the ultrasound of benchmarks/results/faithful.md: 31.35 dB, bicubic 26.57."""
    card = full_card(SHIPPED["default-x2"])
    first = card["validation_results"]["sets"][0]
    assert first["run_as"] == "medsr upscale --scale 2" and first["baseline"] == "bicubic"
    us = next(r for r in first["images"] if r["modality"] == "US")
    assert (round(us["psnr_db"], 2), round(us["baseline_psnr_db"], 2)) == (31.35, 26.57)
    kspace = full_card(SHIPPED["default-x2-kspace"])["validation_results"]["sets"]
    assert [s["set"] for s in kspace] == ["validation-mr-kspace"]
    assert kspace[0]["baseline"] == "kspace"
    assert kspace[0]["per_modality"]["MR"]["images"] == 6


#: a set whose PSNR is text
BAD_SET = {"set": "v", "images": [{"image": "a", "modality": "CT", "psnr_db": "31 dB"}]}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("intended_use", ["research"], "intended_use is not non-empty text"),
        ("out_of_scope", "diagnosis", "out_of_scope is not a list"),
        ("caveats", ["", "x"], "caveats is not a list"),
        ("software", {"torch": 2.1}, "software is not an object"),
        ("training_data_licences", [{"package": "p", "licence": "MIT"}], "licences is not"),
        ("weights_sha256", "sha256:abc", "weights_sha256 is not 64"),
        ("validation_results", {"source": "b.py", "sets": [{"set": "v", "images": []}]}, "images"),
        ("validation_results", {"source": "b.py", "sets": [BAD_SET]}, "'psnr_db' is not"),
    ],
)
def test_a_section_of_the_wrong_type_is_one_clear_error(key, value, message):
    card = read_card(SHIPPED["srcnn-x2"])
    check_card({**card, key: full_card(SHIPPED["srcnn-x2"])[key]}, "x")  # the real one passes
    with pytest.raises(CorruptInputError, match=message):
        check_card({**card, key: value}, "x.safetensors")


def test_a_twin_of_other_weights_is_not_joined(tmp_path):
    path = tmp_path / "srcnn-x2.safetensors"
    shutil.copyfile(SHIPPED["srcnn-x2"], path)
    twin = json.loads((WEIGHTS_DIR / "srcnn-x2.json").read_text())
    (tmp_path / "srcnn-x2.json").write_text(json.dumps(twin))
    assert full_card(path)["caveats"] == twin["caveats"]  # the very weights: joined
    twin["weights_sha256"] = "0" * 64
    (tmp_path / "srcnn-x2.json").write_text(json.dumps(twin))
    card = full_card(path)
    assert "caveats" not in card and "validation_results" not in card
    assert card["weights_sha256"] == weights_sha256(path)


def test_models_name_prints_the_card_and_json():
    res = runner.invoke(app, ["models", "default-x2"])
    assert res.exit_code == 0, res.output
    text = res.output
    headings = [line for line in text.splitlines() if line.startswith(("# ", "## "))]
    assert [h.split(" (")[0] for h in headings] == [
        "# Model card: default-x2", "## Model details", "## Intended use", "## Out of scope",
        "## Training data", "## Evaluation", "## Caveats and limitations", "## Software",
    ]  # fmt: skip
    assert "| MR | 6 |" in text and "| ultrasound | US | 31.35 |" in text
    assert "licence GPL-2 (invesalius-examples" in text
    assert file_checksum(SHIPPED["default-x2"]).removeprefix("sha256:") in text
    res = runner.invoke(app, ["models", str(SHIPPED["tp-x2"]), "--json"])
    assert res.exit_code == 0, res.output
    card = json.loads(res.output)
    assert (
        card["name"] == "tp-x2" and card["validation_results"]["sets"][0]["baseline"] == "cubic-z"
    )
    res = runner.invoke(app, ["models", "defualt-x2"])
    assert isinstance(res.exception, MedSRError)  # medsr's main: one error line, exit 2
    assert "did you mean default-x2" in str(res.exception)
