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
        assert set(job["maps"]) == {"consistency", "uncertainty"}
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
