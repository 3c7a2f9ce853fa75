"""Provenance in every output: DICOM, NIfTI/PNG sidecars and the web service's job JSON."""

from __future__ import annotations

import hashlib
import json

import pydicom
import pytest

import medsr
from medsr.io.sidecar import sidecar_path
from medsr.pipeline import upscale_with_safeguards
from medsr.safeguards import model_checksum
from tests.safeguards.conftest import make_weights


def test_checksums(mr_weights):
    assert model_checksum("bicubic") == "classical:bicubic"
    assert model_checksum(None, 2) in ("classical:bicubic", model_checksum("default-x2"))
    digest = hashlib.sha256(mr_weights.read_bytes()).hexdigest()
    assert model_checksum(str(mr_weights)) == f"sha256:{digest}"


def test_dicom_records_everything(tmp_path, ct_small, mr_weights):
    from tests.io.conftest import dciodvfy_errors

    with pytest.warns(UserWarning):  # CT into an MR-only model: out of distribution
        sr, _ = upscale_with_safeguards(ct_small, 2, str(mr_weights), consistency="on")
    out = medsr.save_image(sr, tmp_path / "sr.dcm")
    ds = pydicom.dcmread(out)
    text = ds.DerivationDescription
    assert len(text) <= 1024
    digest = hashlib.sha256(mr_weights.read_bytes()).hexdigest()
    for needle in (
        f"medsr {medsr.__version__}",
        "model tiny-mr",
        digest,
        "scale x2",
        "assumed degradation ct-detector",
        "consistency on",
        "OUT-OF-DISTRIBUTION",
    ):
        assert needle in text, needle
    equipment = ds.ContributingEquipmentSequence[-1]
    assert equipment.Manufacturer == "medsr" and equipment.SoftwareVersions == medsr.__version__
    assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109103"
    assert dciodvfy_errors(out) <= dciodvfy_errors(ct_small.meta["source_paths"][0])


@pytest.mark.parametrize("suffix", [".nii.gz", ".png"])
def test_sidecars_record_provenance(tmp_path, mr_small, suffix):
    sr, summary = upscale_with_safeguards(mr_small, 2, "lanczos", consistency="off", tta=False)
    out = medsr.save_image(sr, tmp_path / f"sr{suffix}")
    side = json.loads(sidecar_path(out).read_text())
    prov = side["provenance"]
    assert prov["medsr_version"] == medsr.__version__ and prov["model"] == "lanczos"
    assert prov["model_checksum"] == "classical:lanczos" and prov["scale"] == 2
    assert prov["degradation"] == "kspace" and prov["consistency"] == "off"
    assert (
        prov["safeguards"]["consistency"]["error"]["p99"] == summary["consistency"]["error"]["p99"]
    )
    assert side["derivation"]["model_checksum"] == "classical:lanczos"


def test_web_job_reports_safeguards_and_provenance(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("python_multipart")
    from fastapi.testclient import TestClient
    from pydicom.data import get_testdata_file

    from medsr.service.app import Settings, create_app
    from tests.service.conftest import submit, wait_job

    weights = tmp_path / "weights"
    weights.mkdir()
    make_weights(weights / "tiny-mr.safetensors")
    data = open(get_testdata_file("MR_small.dcm"), "rb").read()
    with TestClient(
        create_app(Settings(work_dir=tmp_path / "work", weights_dirs=(weights,)))
    ) as client:
        job = wait_job(
            client, submit(client, "mr.dcm", data, model="tiny-mr", consistency="on").json()["id"]
        )
        assert job["state"] == "done", job
        assert set(job["maps"]) == {"consistency", "uncertainty", "error_bound"}
        assert job["safeguards"]["consistency"]["setting"] == "on"
        # an untrained network: the self-check scales its detail by α ≤ 1, and its spread with it
        gain = job["safeguards"]["self_check"]["gain"]
        assert job["safeguards"]["self_check"]["applied"] and 0 <= gain < 0.5
        assert (job["safeguards"]["uncertainty"]["map"]["p99"] > 0) == (gain > 0)
        assert job["metrics"]["data_consistency"] == "on"
        assert job["metrics"]["assumed_degradation"] == "kspace"
        assert job["metrics"]["detail_check"].endswith("over lanczos (one scale down)")
        prov = job["provenance"]
        assert prov["model"] == "tiny-mr" and prov["model_checksum"].startswith("sha256:")
        assert prov["consistency"] == "on" and prov["medsr_version"] == medsr.__version__
        r = client.get(f"/api/v1/jobs/{job['id']}/preview", params={"which": "uncertainty"})
        assert r.status_code == 200
        bad = submit(client, "mr.dcm", data, model="tiny-mr", consistency="maybe")
        assert bad.status_code == 422


def _derivation_texts(out):
    ds = pydicom.dcmread(out)
    text = ds.DerivationDescription
    assert len(text) <= 1024
    assert ds.ContributingEquipmentSequence[-1].ContributionDescription == text
    return text


def test_dicom_records_the_precision(tmp_path, ct_small, monkeypatch):
    """The network's arithmetic is in the DICOM derivation record as in the sidecar: fp32 named
    too (a reader tells it from bf16 without knowing the default), and for ``auto`` why it was
    chosen. bf16 runs under CPU autocast on any CPU (emulated where not native), as in
    tests/inference/test_predictor.py; ``auto`` is given a CPU with AMX so that it picks bf16
    everywhere (fast-x2 is in the measured table)."""
    from medsr.inference import precision as prec

    texts = {}
    quick = {"maps": False, "tta": False, "warn": False}  # maps (8 TTA runs) are not the point here
    for precision in ("fp32", "bf16"):
        sr, _ = upscale_with_safeguards(ct_small, 2, "fast-x2", precision=precision, **quick)
        texts[precision] = _derivation_texts(medsr.save_image(sr, tmp_path / f"{precision}.dcm"))
        assert f"precision {precision})" in texts[precision], texts[precision]
        assert "auto" not in texts[precision].split("precision", 1)[1].split(";")[0]
    monkeypatch.setattr(prec, "_cpu_flags", lambda: {"amx_bf16"})
    sr, _ = upscale_with_safeguards(ct_small, 2, "fast-x2", precision="auto", **quick)
    assert sr.meta["derivation"]["precision"] == "bf16"
    text = _derivation_texts(medsr.save_image(sr, tmp_path / "auto.dcm"))
    assert "precision bf16 [auto: CPU has amx_bf16; bf16 changes this model's CT output" in text, (
        text
    )


def test_dicom_precision_record_stays_within_1024(tmp_path, ct_small):
    """A long reason for ``auto`` and a long safeguards summary: the precision comes before the
    summary and both are cut so that DerivationDescription (VR ST) holds at most 1024."""
    derivation = {
        "method": "super-resolution", "model": "m", "scale": 2, "precision": "bf16",
        "precision_auto": "auto: " + "why " * 400, "summary": "s" * 700,
    }  # fmt: skip
    img = ct_small.replace(meta={**ct_small.meta, "derivation": derivation})
    text = _derivation_texts(medsr.save_image(img, tmp_path / "long.dcm"))
    assert "precision bf16 [auto: why why" in text and "ssss" in text


@pytest.mark.parametrize(
    ("name", "degradation", "label", "why"),
    [
        # no physics known: --consistency auto (the default) measures, does not project
        ("CT_small.dcm", None, "auto (measured only)", "auto (measured only: physics not stated)"),
        ("MR_small.dcm", "kspace", "auto (projected)", "auto (projected)"),
    ],
)
def test_default_consistency_is_recorded_as_what_happened(tmp_path, name, degradation, label, why):
    """The provenance record, the derivation keys and the summary line agree on what
    ``--consistency auto`` did (a run that did not project is not recorded as ``off``)."""
    from medsr.pipeline import upscale_file
    from tests.conftest import corpus_path

    out = upscale_file(
        corpus_path(name), tmp_path / "sr.nii.gz", scale=2, model="bicubic", degradation=degradation
    )
    side = json.loads(sidecar_path(out).read_text())
    assert side["provenance"]["consistency"] == label
    assert side["derivation"]["consistency"] == label
    assert f"consistency {why}" in side["derivation"]["summary"]
    assert side["provenance"]["safeguards"]["consistency"]["setting"] == "auto"


def test_consistency_label():
    from medsr.safeguards.provenance import consistency_label

    assert consistency_label({"setting": "on", "applied": True}) == "on"
    assert consistency_label({"setting": "off", "applied": False, "error": {"p99": 1}}) == "off"
    assert consistency_label({"setting": "auto", "applied": False}) == "auto (not applied)"
    skipped = {"setting": "auto", "applied": False, "error": {"p99": 1}, "skipped": "too slow"}
    assert consistency_label(skipped) == "auto (measured only)"
    assert "--consistency on applies it" in consistency_label(skipped, why=True)
