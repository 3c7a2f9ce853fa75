"""REST API: every endpoint, every documented error, through FastAPI's TestClient."""

from __future__ import annotations

import io
import json
import logging
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import medsr
from medsr.errors import InvalidParameterError
from tests.service.conftest import submit, wait_job, zip_bytes

JOB = "/api/v1/jobs"


def _png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


# ====================================================================== happy paths
def test_dicom_file_round_trip(client, ct_small_bytes, tmp_path):
    r = submit(client, "CT_small.dcm", ct_small_bytes, model="bicubic", scale=2)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"{JOB}/{r.json()['id']}"
    job = wait_job(client, r.json()["id"])
    assert job["state"] == "done", job
    assert job["progress"] == 1.0
    assert job["input"]["shape_zyx"] == [1, 128, 128]
    assert job["output"]["shape_zyx"] == [1, 256, 256]
    assert job["output"]["spacing_mm_zyx"][1] == pytest.approx(
        job["input"]["spacing_mm_zyx"][1] / 2, rel=1e-4
    )
    assert job["output"]["filename"] == "CT_small_x2.dcm"
    assert job["model_card"]["name"] == "bicubic" and job["model_card"]["learned"] is False
    assert job["metrics"]["consistency_psnr_db"] > 30
    assert "consistency" in job["maps"]
    assert job["expires_at"] is not None

    res = client.get(f"{JOB}/{job['id']}/result")
    assert res.status_code == 200
    assert res.headers["content-type"] == "application/dicom"
    assert "CT_small_x2.dcm" in res.headers["content-disposition"]
    assert res.headers["cache-control"] == "no-store"
    out = tmp_path / "out.dcm"
    out.write_bytes(res.content)
    img = medsr.load_image(out)
    assert img.spatial_shape == (1, 256, 256)
    assert img.modality == "CT" and img.units == "HU"


def test_series_zip_round_trip(client, series_zip_bytes, tmp_path):
    job = wait_job(client, submit(client, "my series.zip", series_zip_bytes, scale=2).json()["id"])
    assert job["state"] == "done", job
    assert job["input"]["format"] == "series"
    assert job["input"]["shape_zyx"] == [3, 20, 20]
    res = client.get(f"{JOB}/{job['id']}/result")
    assert res.headers["content-type"] == "application/zip"
    assert job["output"]["filename"] == "my_series_x2.zip"
    with zipfile.ZipFile(io.BytesIO(res.content)) as zf:
        names = zf.namelist()
        assert len(names) == 3 and all(
            n.startswith("my_series_x2/") and n.endswith(".dcm") for n in names
        )
        zf.extractall(tmp_path)
    img = medsr.load_image(tmp_path / "my_series_x2")
    assert img.spatial_shape == (3, 40, 40)
    # previews of a volume: every slice, both images
    for k in range(3):
        assert (
            client.get(
                f"{JOB}/{job['id']}/preview", params={"which": "output", "slice": k}
            ).status_code
            == 200
        )
    assert (
        client.get(f"{JOB}/{job['id']}/preview", params={"which": "input", "slice": 3}).status_code
        == 422
    )


def test_png_round_trip_and_sidecar(client, png_bytes):
    job = wait_job(
        client, submit(client, "slice.png", png_bytes, model="lanczos", scale=3).json()["id"]
    )
    assert job["state"] == "done", job
    res = client.get(f"{JOB}/{job['id']}/result")
    assert res.headers["content-type"] == "image/png"
    assert _png_size(res.content) == (96, 72)
    side = client.get(f"{JOB}/{job['id']}/result", params={"part": "sidecar"})
    assert side.status_code == 200
    assert json.loads(side.content)["spacing_mm_zyx"][1] == pytest.approx(1 / 3)


def test_nifti_round_trip(client, nifti_gz_bytes, tmp_path):
    job = wait_job(client, submit(client, "vol.nii.gz", nifti_gz_bytes, scale=2).json()["id"])
    assert job["state"] == "done", job
    assert job["input"]["format"] == "nifti-gz"
    res = client.get(f"{JOB}/{job['id']}/result")
    assert job["output"]["filename"] == "vol_x2.nii.gz"
    out = tmp_path / "vol_x2.nii.gz"
    out.write_bytes(res.content)
    img = medsr.load_image(out)
    assert img.spatial_shape == (4, 32, 32)
    assert img.spacing[1] == pytest.approx(0.45)


def test_previews(client, ct_small_bytes):
    job = wait_job(client, submit(client, "ct.dcm", ct_small_bytes).json()["id"])
    url = f"{JOB}/{job['id']}/preview"
    r = client.get(url, params={"which": "input"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["cache-control"] == "no-store"
    assert _png_size(r.content) == (128, 128)
    auto = client.get(url, params={"which": "output"}).content
    assert _png_size(auto) == (256, 256)
    lung = client.get(url, params={"which": "output", "window": "lung"}).content
    bone = client.get(url, params={"which": "output", "window": "bone"}).content
    custom = client.get(url, params={"which": "output", "window": "-600,1500"}).content
    assert lung == custom and lung != bone and lung != auto
    cmap = client.get(url, params={"which": "consistency"})
    assert cmap.status_code == 200
    assert Image.open(io.BytesIO(cmap.content)).mode == "RGB"
    assert "x-map-max" in cmap.headers and "x-map-uniform" not in cmap.headers
    # a classical interpolator's error bound is one value (k × the slice's noise): the header
    # says it, and the page shows it as text, not as one flat colour at the top of the scale
    bound = client.get(url, params={"which": "error_bound"})
    assert float(bound.headers["x-map-uniform"]) == pytest.approx(
        job["metrics"]["error_bound_p99"], rel=1e-4
    )
    small = client.get(url, params={"which": "output", "max_size": 64})
    assert _png_size(small.content) == (64, 64)
    for bad in (
        {"window": "wide"},
        {"window": "40,-3"},
        {"which": "uncertainty"},
        {"slice": 1},
        {"slice": -1},
    ):
        assert client.get(url, params={"which": "output", **bad}).status_code == 422, bad
    assert client.get(url, params={"max_size": 10}).status_code == 422


def test_uniform_value_of_a_map_slice():
    """One value where there is data (0: none measured, NaN: none read), else ``None``."""
    from medsr.service.previews import uniform_value

    flat = np.full((4, 5), 14.93, np.float32)
    assert uniform_value(flat) == pytest.approx(14.93)
    flat[0] = 0.0
    flat[1, 2] = np.nan
    assert uniform_value(flat) == pytest.approx(14.93)
    flat[2, 2] = 15.0
    assert uniform_value(flat) is None
    assert uniform_value(np.zeros((3, 3), np.float32)) is None


def test_models_info_health_docs_page(client):
    models = client.get("/api/v1/models").json()
    names = {m["name"] for m in models}
    assert {"bicubic", "lanczos", "nearest"} <= names
    assert all(m["scales"] and "description" in m for m in models)
    info = client.get("/api/v1/info").json()
    assert info["auth_required"] is False and info["scales"] == [2, 3, 4]
    assert info["window_presets"]["lung"] == [-600.0, 1500.0]
    assert info["modes"]["in-plane"] is True
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["version"] == medsr.__version__
    schema = client.get("/openapi.json").json()
    assert {
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/result",
        "/api/v1/jobs/{job_id}/preview",
        "/api/v1/models",
        "/healthz",
    } <= set(schema["paths"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    if "/docs-static/" in docs.text:  # offline Swagger UI (swagger-ui-py installed)
        assert client.get("/docs-static/swagger-ui-bundle.js").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "medsr" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    for asset in ("app.js", "app.css"):
        r = client.get(f"/static/{asset}")
        assert r.status_code == 200 and "https://" not in r.text
        assert r.headers["x-content-type-options"] == "nosniff"


def test_learned_model_card_and_metrics(make_client, tmp_path, png_bytes):
    from medsr.models.registry import create_model
    from medsr.models.weights import save_model

    net = create_model("srcnn", scale=2, num_features=4, kernel_sizes=(3, 1, 3))
    card = {
        "name": "tiny-srcnn",
        "architecture": "srcnn",
        "kwargs": {"scale": 2, "num_features": 4, "kernel_sizes": [3, 1, 3]},
        "scale": 2,
        "normalization": {"kind": "minmax"},
        "kind": "super-resolution",
        "metrics": {"val_psnr": 31.5, "val_ssim": 0.91},
        "training_data": {"modalities": ["CT"]},
        "version": "0.1.0",
    }
    weights = tmp_path / "weights"
    weights.mkdir()
    save_model(net, weights / "tiny-srcnn.safetensors", card)
    (weights / "broken.safetensors").write_bytes(b"not a safetensors file")
    client = make_client(weights_dirs=(weights,))
    listed = {m["name"]: m for m in client.get("/api/v1/models").json()}
    assert listed["tiny-srcnn"]["learned"] is True
    assert listed["tiny-srcnn"]["metrics"]["val_psnr"] == 31.5
    assert listed["tiny-srcnn"]["scales"] == [2]
    assert "_path" not in listed["tiny-srcnn"] and "weights" not in listed["tiny-srcnn"]
    r = submit(client, "a.png", png_bytes, model="tiny-srcnn", scale=3)
    assert r.status_code == 422 and "×2" in r.json()["detail"]
    job = wait_job(
        client, submit(client, "a.png", png_bytes, model="tiny-srcnn", scale=2).json()["id"]
    )
    assert job["state"] == "done", job
    assert job["model_card"]["metrics"]["val_ssim"] == 0.91


def test_ensemble_job_and_where_it_is_refused(make_client, png_bytes):
    """``ensemble=true`` (the web page's "Mean of 8 flips/rotations"): the job's metrics say
    so; a self-supervised mode refuses it with 422, as the command line does."""
    client = make_client(pretrained=True)
    r = submit(client, "a.png", png_bytes, model="fast-x2", ensemble="true")
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"])
    assert job["state"] == "done", job
    assert job["metrics"]["ensemble"] == "mean of 8 flips/90-degree rotations", job["metrics"]
    plain = wait_job(client, submit(client, "a.png", png_bytes, model="fast-x2").json()["id"])
    assert "ensemble" not in plain["metrics"]
    r = submit(client, "a.png", png_bytes, mode="zero-shot", ensemble="true")
    assert r.status_code == 422 and "ensemble" in r.json()["detail"], r.text


def test_precision_job_is_run_and_recorded_and_bad_values_are_422(make_client, png_bytes):
    """``precision`` (the page's "Arithmetic" choice, `medsr upscale --precision`): the job's
    network runs it, its provenance and the result's sidecar say which ran; a bad value, a
    self-supervised mode and (on a CPU server) fp16 are refused with 422 before any work."""
    client = make_client(pretrained=True)
    r = submit(client, "a.png", png_bytes, model="fast-x2", precision="bf16")
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"])
    assert job["state"] == "done", job
    assert job["provenance"]["precision"] == "bf16", job["provenance"]
    side = client.get(job["links"]["sidecar"])
    assert side.status_code == 200 and side.json()["derivation"]["precision"] == "bf16"
    plain = wait_job(client, submit(client, "a.png", png_bytes, model="fast-x2").json()["id"])
    assert plain["provenance"]["precision"] == "fp32"
    r = submit(client, "a.png", png_bytes, model="fast-x2", precision="fp64")
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == "precision must be one of fp32, bf16, fp16, auto; got 'fp64'"
    r = submit(client, "a.png", png_bytes, mode="zero-shot", precision="bf16")
    assert r.status_code == 422 and "precision applies to mode in-plane" in r.json()["detail"]
    import torch

    if not torch.cuda.is_available():
        r = submit(client, "a.png", png_bytes, model="fast-x2", precision="fp16")
        assert r.status_code == 422 and "CUDA" in r.json()["detail"], r.text
    assert len(client.app.state.service.queue.jobs()) == 2  # the refused ones left no job


def test_delete_job(client, png_bytes, make_client):
    job = wait_job(client, submit(client, "a.png", png_bytes).json()["id"])
    service = client.app.state.service
    assert service.storage.job_dir(job["id"]).is_dir()
    assert client.delete(f"{JOB}/{job['id']}").status_code == 204
    assert not service.storage.job_dir(job["id"]).exists()
    assert client.get(f"{JOB}/{job['id']}").status_code == 404
    assert client.delete(f"{JOB}/{job['id']}").status_code == 404


# ====================================================================== safety and errors
def test_upload_too_large_413(make_client, ct_small_bytes):
    client = make_client(max_upload_mb=0.02)  # 20 KB; CT_small is 39 KB
    r = submit(client, "CT_small.dcm", ct_small_bytes)
    assert r.status_code == 413
    assert "limit" in r.json()["detail"]
    big = submit(
        client, "big.dcm", b"\0" * 200_000
    )  # beyond the body limit: refused before parsing
    assert big.status_code == 413
    assert client.app.state.service.queue.jobs() == []
    assert list(client.app.state.service.storage.root.iterdir()) == []


def test_unsupported_format_415(client):
    r = submit(client, "notes.txt", b"Patient notes, not an image\n" * 20)
    assert r.status_code == 415
    assert "notes.txt" in r.json()["detail"]
    buf = io.BytesIO()
    np.save(buf, np.zeros((4, 4)))
    assert (
        submit(client, "a.npy", buf.getvalue()).status_code == 415
    )  # readable, but not accepted here


def test_corrupt_dicom_422(client, ct_small_bytes):
    r = submit(client, "CT_trunc.dcm", ct_small_bytes[:3000])
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "CT_trunc.dcm" in detail and "input.dcm" not in detail
    assert str(client.app.state.service.storage.root) not in detail
    assert submit(client, "empty.dcm", b"").status_code == 422
    assert list(client.app.state.service.storage.root.iterdir()) == []


def test_zip_traversal_rejected_422(client, ct_small_bytes):
    for name in ("../evil.dcm", "/abs/evil.dcm", "a/../../evil.dcm", "C:/evil.dcm"):
        r = submit(client, "study.zip", zip_bytes({name: ct_small_bytes}))
        assert r.status_code == 422, (name, r.text)
        assert "outside" in r.json()["detail"] or "absolute" in r.json()["detail"]
    root = client.app.state.service.storage.root
    assert not (root.parent / "evil.dcm").exists()
    assert list(root.iterdir()) == []


def test_zip_bomb_rejected_413(make_client):
    client = make_client(zip_max_total_mb=100)
    bomb = zip_bytes({"bomb.dcm": b"\0" * (30 * 1024**2)})  # ~30 KB compressed, 30 MB expanded
    assert len(bomb) < 100_000
    r = submit(client, "bomb.zip", bomb)
    assert r.status_code == 413 and "zip bomb" in r.json()["detail"]
    small_limit = make_client(zip_max_total_mb=1)
    r = submit(
        small_limit,
        "big.zip",
        zip_bytes({"a.dcm": np.random.default_rng(0).bytes(1_200_000)}, zipfile.ZIP_STORED),
    )
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    few = make_client(zip_max_files=3)
    r = submit(few, "many.zip", zip_bytes({f"f{i}.dcm": b"x" for i in range(5)}))
    assert r.status_code == 413 and "5 files" in r.json()["detail"]


def test_zip_without_dicom_422(client):
    r = submit(client, "junk.zip", zip_bytes({"readme.txt": b"hello"}))
    assert r.status_code == 422


def test_bearer_token_401(make_client, png_bytes):
    client = make_client(token="s3cret")
    ok = {"Authorization": "Bearer s3cret"}
    for path in ("/api/v1/models", "/api/v1/info", f"{JOB}/{'0' * 32}"):
        r = client.get(path)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert submit(client, "a.png", png_bytes).status_code == 401
    assert client.get("/api/v1/models", headers=ok).status_code == 200
    assert client.get("/api/v1/info", headers=ok).json()["auth_required"] is True
    assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200
    job = wait_job(client, submit(client, "a.png", png_bytes, headers=ok).json()["id"], headers=ok)
    assert job["state"] == "done"
    assert client.get(f"{JOB}/{job['id']}/result").status_code == 401
    assert client.get(f"{JOB}/{job['id']}/result", headers=ok).status_code == 200


def test_unknown_job_404(client):
    for jid in ("0" * 32, "not-a-job-id", "../../etc"):
        assert client.get(f"{JOB}/{jid}").status_code == 404
        assert client.get(f"{JOB}/{jid}/result").status_code == 404
        assert client.get(f"{JOB}/{jid}/preview").status_code == 404


def test_bad_parameters_422(client, png_bytes):
    cases = [
        ({"model": "no-such-model"}, "unknown model"),
        ({"model": "srcnn"}, "unknown model"),  # a network without bundled weights is not offered
        ({"scale": 5}, "scale"),
        ({"scale": 1}, "scale"),
        ({"scale": "two"}, "scale"),
        ({"mode": "sideways"}, "mode"),
    ]
    for fields, words in cases:
        r = submit(client, "a.png", png_bytes, **fields)
        assert r.status_code == 422, (fields, r.text)
        assert words in r.json()["detail"], (fields, r.json())
    r = client.post(JOB, data={"model": "bicubic"})  # no file
    assert r.status_code == 422 and "file" in r.json()["detail"]


def test_selfsup_modes(client, monkeypatch, png_bytes, nifti_gz_bytes):
    import medsr.service.catalog as catalog

    monkeypatch.setattr(catalog, "selfsup_function", lambda mode: None)
    r = submit(client, "a.png", png_bytes, mode="zero-shot")
    assert r.status_code == 422 and "not available" in r.json()["detail"]
    assert client.get("/api/v1/info").json()["modes"] == {
        "in-plane": True,
        "through-plane": False,
        "zero-shot": False,
    }

    calls = {}

    def fake_through_plane(image, *, target_spacing, budget_s=None):  # availability only:
        raise AssertionError("through-plane jobs run the pipeline's step, not this function")

    def fake_zero_shot(image, scale, *, budget_s=None):
        calls["zero-shot"] = (scale, budget_s)
        up = np.repeat(np.repeat(image.array, scale, axis=1), scale, axis=2)
        out = image.resampled(up, step="fake zero-shot")
        return out.replace(meta={**out.meta, "maps": {"uncertainty": np.ones_like(up)}})

    fakes = {"through-plane": fake_through_plane, "zero-shot": fake_zero_shot}
    monkeypatch.setattr(catalog, "selfsup_function", lambda mode: fakes.get(mode))
    job = wait_job(
        client,
        submit(client, "vol.nii.gz", nifti_gz_bytes, mode="through-plane", scale=2).json()["id"],
    )
    assert job["state"] == "done", job
    assert (
        job["output"]["shape_zyx"] == [8, 16, 16] and job["output"]["filename"] == "vol_z2.nii.gz"
    )
    assert job["model_card"]["kind"] == "self-supervised"
    # the pipeline's through-plane step: the shipped prior, its checksum, the slice profile
    assert job["provenance"]["model"].startswith("tp-x2")
    assert job["provenance"]["model_checksum"].startswith("sha256:")
    assert "thick-slice" in job["provenance"]["degradation"]
    assert "uncertainty" in job["maps"]
    adapted = wait_job(
        client,
        submit(
            client, "vol.nii.gz", nifti_gz_bytes, mode="through-plane", scale=2, adapt_steps=2
        ).json()["id"],
    )
    assert adapted["state"] == "done", adapted
    assert "2 steps" in adapted["provenance"]["model"]
    for bad in (
        {"mode": "in-plane", "adapt_steps": 2},
        {"mode": "through-plane", "adapt_steps": -1},
        {"mode": "through-plane", "degradation": "kspace"},  # stated physics nothing would use
        {"mode": "zero-shot", "degradation": "bicubic"},
    ):
        assert submit(client, "vol.nii.gz", nifti_gz_bytes, **bad).status_code == 422
    assert (
        submit(client, "a.png", png_bytes, mode="through-plane").status_code == 422
    )  # 2-D: no z to upscale
    job = wait_job(
        client, submit(client, "a.png", png_bytes, mode="zero-shot", scale=2).json()["id"]
    )
    assert job["state"] == "done", job
    assert set(job["maps"]) == {"uncertainty", "consistency"}
    assert (
        client.get(f"{JOB}/{job['id']}/preview", params={"which": "uncertainty"}).status_code == 200
    )
    assert {m["name"] for m in client.get("/api/v1/models").json()} >= {
        "through-plane",
        "zero-shot",
    }


def test_failed_jobs_report_errors(client, monkeypatch, png_bytes):
    import medsr.service.jobs as service_jobs

    def clinician_error(job, image, **_):
        raise InvalidParameterError("this image is too small for the model")

    monkeypatch.setattr(service_jobs, "process", clinician_error)
    job = wait_job(client, submit(client, "a.png", png_bytes).json()["id"])
    assert job["state"] == "failed"
    assert job["error"] == {
        "status": 422,
        "type": "InvalidParameterError",
        "message": "this image is too small for the model",
    }
    assert client.get(f"{JOB}/{job['id']}/result").status_code == 409
    assert client.get(f"{JOB}/{job['id']}/preview", params={"which": "output"}).status_code == 409

    def bug(job, image, **_):
        raise RuntimeError("/secret/path/DOE^JOHN")

    monkeypatch.setattr(service_jobs, "process", bug)
    job = wait_job(client, submit(client, "a.png", png_bytes).json()["id"])
    assert job["error"]["status"] == 500 and "DOE" not in json.dumps(job)


def test_queue_bounded_503_and_not_ready_409(make_client, monkeypatch, png_bytes):
    import medsr.service.jobs as service_jobs
    from medsr.service.jobs import process as real_process

    release = threading.Event()

    def slow(job, image, **kwargs):
        release.wait(20)
        real_process(job, image, **kwargs)

    monkeypatch.setattr(service_jobs, "process", slow)
    client = make_client(max_pending=1)
    first = submit(client, "a.png", png_bytes)
    assert first.status_code == 202
    jid = first.json()["id"]
    busy = submit(client, "b.png", png_bytes)
    assert busy.status_code == 503 and "busy" in busy.json()["detail"]
    assert busy.headers["retry-after"] == "30"
    assert client.get(f"{JOB}/{jid}/result").status_code == 409
    assert client.get(f"{JOB}/{jid}/preview", params={"which": "output"}).status_code == 409
    assert (
        client.get(f"{JOB}/{jid}/preview", params={"which": "input"}).status_code == 200
    )  # available at once
    assert client.get("/healthz").json()["jobs_pending"] == 1
    assert client.delete(f"{JOB}/{jid}").status_code == 409  # running
    release.set()
    assert wait_job(client, jid)["state"] == "done"
    assert submit(client, "c.png", png_bytes).status_code == 202


def test_retention_cleanup(make_client, png_bytes):
    client = make_client(retention_s=60)
    service = client.app.state.service
    job = wait_job(client, submit(client, "a.png", png_bytes).json()["id"])
    assert service.cleanup_expired() == 0  # not yet
    folder = service.storage.job_dir(job["id"])
    assert folder.is_dir()
    assert service.cleanup_expired(now=__import__("time").time() + 61) == 1
    assert not folder.exists()
    assert client.get(f"{JOB}/{job['id']}").status_code == 404


def test_work_dir_emptied_on_shutdown(make_client, tmp_path, png_bytes):
    work = tmp_path / "w"
    client = make_client(work_dir=work)
    wait_job(client, submit(client, "a.png", png_bytes).json()["id"])
    assert any(work.iterdir())
    client.__exit__(None, None, None)
    assert list(work.iterdir()) == []


def test_no_patient_data_in_logs(client, caplog, ct_small_bytes):
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(ct_small_bytes))
    secrets = [str(ds.PatientName), str(ds.PatientID), "Doe_Jane"]
    with caplog.at_level(logging.DEBUG, logger="medsr"):
        r = submit(client, "Doe_Jane_1970-01-01.dcm", ct_small_bytes)
        job = wait_job(client, r.json()["id"])
        submit(client, "Doe_Jane_broken.dcm", ct_small_bytes[:3000])
    text = caplog.text
    assert job["id"] in text
    for secret in secrets:
        assert secret and secret not in text, secret


def test_storage_never_leaves_root(tmp_path):
    from medsr.service.storage import Storage, safe_filename, safe_stem

    store = Storage(tmp_path / "root")
    with pytest.raises(ValueError):
        store.job_dir("../x")
    assert safe_stem("../../Doe, Jane.nii.gz") == "Doe_Jane"
    assert safe_stem(None) == "image"
    assert safe_filename("C:\\x\\scan 1.dcm") == "scan_1.dcm"
    assert Path(store.root).stat().st_mode & 0o077 == 0


def test_selfsup_modes_for_real(make_client, png_bytes, series_zip_bytes):
    """The real medsr.selfsup methods, with a tiny training budget."""
    pytest.importorskip("medsr.selfsup")
    client = make_client(zero_shot_budget_s=0.3)
    job = wait_job(
        client, submit(client, "a.png", png_bytes, mode="zero-shot", scale=2).json()["id"]
    )
    assert job["state"] == "done", job
    assert job["output"]["shape_zyx"] == [1, 48, 64]
    assert job["metrics"]["consistency_psnr_db"] > 20
    job = wait_job(
        client,
        submit(client, "s.zip", series_zip_bytes, mode="through-plane", scale=3).json()["id"],
    )
    assert job["state"] == "done", job
    assert job["output"]["shape_zyx"] == [9, 20, 20]
    assert job["output"]["spacing_mm_zyx"][0] == pytest.approx(1.0)


def test_zero_shot_job_honours_consistency_on(make_client, png_bytes):
    """A zero-shot job's ``consistency=on`` was dropped (metrics and provenance said "off"
    whatever was asked); it now projects the result onto the input, as an in-plane job and
    ``medsr upscale --method zero-shot --consistency on`` do."""
    client = make_client(zero_shot_budget_s=0.05)
    jobs = {
        setting: wait_job(
            client,
            submit(
                client, "a.png", png_bytes, mode="zero-shot", scale=2, consistency=setting
            ).json()["id"],
        )
        for setting in ("on", "auto")
    }
    on, auto = jobs["on"], jobs["auto"]
    assert on["state"] == "done" and auto["state"] == "done", jobs
    assert on["metrics"]["data_consistency"] == "on" and on["provenance"]["consistency"] == "on"
    # with the reason auto did not project, as the DICOM derivation text (it read only
    # "auto (measured only)")
    assert auto["metrics"]["data_consistency"] == "auto (measured only: physics not stated)"
    assert on["metrics"]["consistency_psnr_db"] > auto["metrics"]["consistency_psnr_db"]
    assert "consistency" in on["maps"]


def test_colour_png(client):
    rgb = np.zeros((12, 16, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[4:8, :, 2] = 255
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    job = wait_job(client, submit(client, "colour.png", buf.getvalue()).json()["id"])
    assert job["state"] == "done", job
    assert job["input"]["channels"] == "RGB"
    for which in ("input", "output"):
        png = Image.open(
            io.BytesIO(client.get(f"{JOB}/{job['id']}/preview", params={"which": which}).content)
        )
        assert png.mode == "RGB"
    out = Image.open(io.BytesIO(client.get(f"{JOB}/{job['id']}/result").content))
    assert out.size == (32, 24) and out.mode == "RGB"


def test_zero_shot_budget_is_the_command_lines_and_settable_per_job(client, monkeypatch, png_bytes):
    """One default training time for the CLI, the API and the web service; a job's ``budget``
    (the --budget grammar) reaches the training, within the server's limit."""
    import inspect

    import medsr.service.catalog as catalog
    from medsr.durations import ZERO_SHOT_BUDGET_S
    from medsr.pipeline import upscale_file
    from medsr.selfsup import zero_shot_upscale
    from medsr.service.settings import Settings

    assert Settings().zero_shot_budget_s == ZERO_SHOT_BUDGET_S
    for fn in (upscale_file, zero_shot_upscale):
        assert inspect.signature(fn).parameters["budget_s"].default == ZERO_SHOT_BUDGET_S
    budgets: list[float] = []

    def fake_zero_shot(image, scale, *, budget_s=None):
        budgets.append(budget_s)
        return image.resampled(np.repeat(np.repeat(image.array, scale, 1), scale, 2), step="fake")

    monkeypatch.setattr(catalog, "selfsup_function", lambda mode: fake_zero_shot)
    for fields in ({}, {"budget": "90s"}, {"budget": "2m"}, {"budget": "45"}):
        r = submit(client, "a.png", png_bytes, mode="zero-shot", **fields)
        assert wait_job(client, r.json()["id"])["state"] == "done"
    assert budgets == [ZERO_SHOT_BUDGET_S, 90.0, 120.0, 45.0]
    for fields, words in (
        ({"mode": "zero-shot", "budget": "1h"}, "at most 600 seconds"),
        ({"mode": "zero-shot", "budget": "soon"}, "not a duration"),
        ({"mode": "zero-shot", "budget": "0s"}, "more than 0"),
        ({"mode": "in-plane", "budget": "60s"}, "zero-shot only"),
    ):
        r = submit(client, "a.png", png_bytes, **fields)
        assert r.status_code == 422 and words in r.json()["detail"], (fields, r.text)
    with pytest.raises(InvalidParameterError, match="exceeds"):
        Settings(zero_shot_budget_s=700).check()


def test_zero_shot_job_progress_follows_the_training(make_client, png_bytes):
    """A zero-shot job's progress moves while its network trains (it stayed at 0.1 for the
    whole run), then goes on to the checks and the writing."""
    pytest.importorskip("medsr.selfsup")
    client = make_client()
    job_id = submit(client, "a.png", png_bytes, mode="zero-shot", budget="3s").json()["id"]
    seen: list[tuple[str, float]] = []
    while True:
        body = client.get(f"{JOB}/{job_id}").json()
        seen.append((body["stage"], body["progress"]))
        if body["state"] in ("done", "failed"):
            break
        threading.Event().wait(0.05)
    assert body["state"] == "done", body
    training = [p for stage, p in seen if stage == "training on this image"]
    assert len(set(training)) >= 3, seen  # it moves
    assert training == sorted(training) and 0.1 <= training[0] and training[-1] <= 0.65
    assert max(training) > 0.4, seen  # most of the way through its 3 s
    assert body["progress"] == 1.0


# ====================================================================== series of several stacks
def test_a_series_of_several_stacks_is_refused_with_its_stacks_and_read_by_choice(
    client, echo_zip_bytes
):
    """A zipped two-echo series was refused (422) with the reader's "Choose one with --series
    KEY:N (Python: series_uid=...)": a command-line flag the web user cannot use, and no way to
    choose in the API. The refusal lists the stacks (key, number, the ``series`` value that
    reads each, what tells it apart), names no command-line flag, and ``series`` reads one."""
    r = submit(client, "echoes.zip", echo_zip_bytes, model="bicubic")
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["type"] == "SeriesMismatchError"
    assert "--series" not in body["detail"] and "Python" not in body["detail"]
    assert "the series option" in body["detail"]
    stacks = body["stacks"]
    key = stacks[0]["key"]
    assert [(s["number"], s["series"], s["label"], s["images"]) for s in stacks] == [
        (1, f"{key}:1", "echo 1", 3),
        (2, f"{key}:2", "echo 2", 3),
    ]
    assert {s["over_time"] for s in stacks} == {None}  # echoes are no series over time
    assert list(client.app.state.service.storage.root.iterdir()) == []

    for choice in (stacks[1]["series"], ":2"):
        r = submit(client, "echoes.zip", echo_zip_bytes, model="bicubic", series=choice)
        assert r.status_code == 202, r.text
        job = wait_job(client, r.json()["id"])
        assert job["state"] == "done", job
        assert job["input"]["series"] == choice and job["input"]["shape_zyx"] == [3, 16, 16]
        assert job["input"]["time_points"] is None  # one echo: no image over time
        assert job["input"]["min"] >= 1000  # echo 2 (echo 1 lies below 1000)
    r = submit(client, "echoes.zip", echo_zip_bytes, series=":all")
    assert r.status_code == 422 and "differ by echo" in r.json()["detail"]
    assert "--series" not in r.json()["detail"] and len(r.json()["stacks"]) == 2


def test_a_cine_is_read_whole_and_returned_as_one_series(client, cine_zip_bytes, tmp_path):
    """``series=":all"`` reads the 3 cardiac phases of a cine together (the listing offers it:
    ``over_time``), and the result is a zip of ONE derived series of 3 × 4 instances."""
    import pydicom

    r = submit(client, "cine.zip", cine_zip_bytes, model="bicubic")
    assert r.status_code == 422
    stacks = r.json()["stacks"]
    key = stacks[0]["key"]
    assert [s["label"] for s in stacks] == [
        f"cardiac phase {k} (trigger time ~{t} ms)" for k, t in ((1, 10), (2, 50), (3, 90))
    ]
    assert {s["over_time"] for s in stacks} == {f"{key}:all"}
    assert {s["over_time_points"] for s in stacks} == {3}
    job = wait_job(client, submit(client, "cine.zip", cine_zip_bytes, series=":all").json()["id"])
    assert job["state"] == "done", job
    assert job["input"]["channels"] == "time" and job["output"]["shape_zyx"] == [4, 32, 32]
    # the number of phases was nowhere in the job (its shape read as one 4-slice volume), and
    # the preview showed the first phase only: now the job says 3, the preview shows each
    assert job["input"]["time_points"] == job["output"]["time_points"] == 3
    for which in ("input", "output"):
        url = f"{JOB}/{job['id']}/preview?which={which}&slice=1"
        pngs = [client.get(f"{url}&time={t}") for t in range(3)]
        assert [r.status_code for r in pngs] == [200] * 3
        assert len({r.content for r in pngs}) == 3  # three phases, three pictures
        assert client.get(url).content == pngs[0].content  # the first by default
        r = client.get(f"{url}&time=3")
        assert r.status_code == 422 and "time must be between 0 and 2" in r.json()["detail"]
    # each phase's trust maps (4-D), previewed phase by phase as the image: they were one map
    # over all phases, the same picture for every time
    assert "consistency" in job["maps"], job["maps"]
    for name in job["maps"]:
        url = f"{JOB}/{job['id']}/preview?which={name}&slice=1"
        pngs = [client.get(f"{url}&time={t}") for t in range(3)]
        assert [r.status_code for r in pngs] == [200] * 3, name
        assert client.get(url).content == pngs[0].content
        assert client.get(f"{url}&time=3").status_code == 422
    res = client.get(f"{JOB}/{job['id']}/result")
    with zipfile.ZipFile(io.BytesIO(res.content)) as zf:
        names = zf.namelist()
        assert len(names) == 12 and all(n.startswith("cine_x2/") for n in names)
        written = [pydicom.dcmread(io.BytesIO(zf.read(n))) for n in names]
    assert len({ds.SeriesInstanceUID for ds in written}) == 1
    assert {(int(ds.Rows), int(ds.Columns)) for ds in written} == {(32, 32)}


def test_a_zip_of_several_series_is_refused_with_its_series_and_read_by_choice(
    client, two_series_zip_bytes
):
    """A zip of two series was refused with text only ("holds 2 series: ... Choose one with the
    series option (KEY)"): the page had nothing to offer. The refusal lists the series as the
    multi-stack refusal lists stacks (``stacks``: key, ``series`` = KEY, description, images;
    ``number`` null), and the ``series`` value of each reads it."""
    r = submit(client, "two.zip", two_series_zip_bytes, model="bicubic")
    assert r.status_code == 422, r.text
    body = r.json()
    assert "holds 2 series" in body["detail"] and "--series" not in body["detail"]
    series = sorted(body["stacks"], key=lambda s: s["label"])
    assert [(s["label"].split()[0], s["number"], s["images"], s["over_time"]) for s in series] == [
        ("CT", None, 3, None),
        ("MR", None, 6, None),  # two echoes of 3 slices
    ]
    for s in series:
        assert s["series"] == s["key"] and len(s["key"]) == 8 and s["key"] in s["description"]
    ct, mr = series
    job = wait_job(client, submit(client, "two.zip", two_series_zip_bytes, series=ct["series"])
                   .json()["id"])  # fmt: skip
    assert job["state"] == "done" and job["input"]["modality"] == "CT", job
    r = submit(client, "two.zip", two_series_zip_bytes, series=mr["series"])
    assert r.status_code == 422  # the MR series holds two echoes: its stacks are listed
    assert [s["series"] for s in r.json()["stacks"]] == [f"{mr['key']}:1", f"{mr['key']}:2"]


def test_a_localizer_left_out_is_said_in_the_job_with_the_series_option(
    client, localizer_zip_bytes
):
    """The reader's note of a localizer it left out named a command-line flag ("Read them with
    --series KEY:2") and the service showed it nowhere. The job's input lists it
    (``input.warnings``), naming the series option, the upload and no job folder."""
    job = wait_job(client, submit(client, "scan.zip", localizer_zip_bytes, model="bicubic")
                   .json()["id"])  # fmt: skip
    assert job["state"] == "done" and job["input"]["shape_zyx"] == [4, 16, 16], job
    [note] = job["input"]["warnings"]
    assert "left out" in note and "coronal 24×20" in note, note
    assert note.startswith("'scan.zip': series ") and note.endswith(":2)"), note
    assert "the series option (" in note and "--series" not in note, note
    assert str(client.app.state.service.storage.root) not in note
    assert job["output"]["warnings"] == []


def test_a_bad_series_value_is_refused(client, echo_zip_bytes, png_bytes):
    for value in ("abc:0", "abc:x", "key 2", ":", "abc:all:2"):
        r = submit(client, "echoes.zip", echo_zip_bytes, series=value)
        assert r.status_code == 422, (value, r.text)
        assert r.json()["detail"].startswith("series must be KEY:N"), r.json()
    r = submit(client, "a.png", png_bytes, series=":2")
    assert r.status_code == 422 and "not DICOM" in r.json()["detail"]
    assert list(client.app.state.service.storage.root.iterdir()) == []
