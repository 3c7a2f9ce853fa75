"""Background jobs: a bounded queue served by worker threads, and the work one job does.

:class:`JobQueue` wraps a :class:`~concurrent.futures.ThreadPoolExecutor` (one worker by
default, so one model runs at a time and CPU/GPU memory stays bounded) behind a counter that
refuses new jobs with :class:`QueueFullError` (HTTP 503) once ``max_pending`` jobs are queued or
running. Uploads are validated in the request thread; only the upscaling runs on the queue.

:func:`process` is what a job does: upscale (in-plane with a registered model, or the
self-supervised through-plane / zero-shot methods of :mod:`medsr.selfsup` when installed), check
data consistency (the output, degraded back to the input grid, must agree with the input), write
the result in the input's format, and keep float32 copies of input, output and maps for previews.

Logs carry job ids, formats, shapes and model names only: never file names, paths given by the
user or header values.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsr.errors import MedSRError
from medsr.image import MedImage

log = logging.getLogger("medsr.service")

MODES = ("in-plane", "through-plane", "zero-shot")
MEDIA_TYPES = {
    "dicom": "application/dicom",
    "series": "application/zip",
    "nifti": "application/octet-stream",
    "nifti-gz": "application/gzip",
    "png": "image/png",
    "tiff": "image/tiff",
}


class QueueFullError(MedSRError):
    """Too many jobs are waiting; try again later."""

    http_status = 503


class JobNotFoundError(MedSRError):
    """No job with that id (never existed, deleted, or expired)."""

    http_status = 404


class JobNotReadyError(MedSRError):
    """The job has not finished (or failed), so it has no result yet."""

    http_status = 409


@dataclass
class Job:
    """One upload and its processing. Mutated only by the worker running it (and deletion)."""

    id: str
    dir: Path
    mode: str
    model: str
    scale: int
    filename: str  # sanitised stem of the uploaded name (shown to the uploader, never logged)
    input_format: str  # dicom | series | nifti | nifti-gz | png | tiff
    input_info: dict[str, Any]
    window: tuple[float, float]
    model_card: dict[str, Any]
    state: str = "queued"  # queued | running | done | failed
    stage: str = "queued"
    progress: float = 0.0
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    error: dict[str, Any] | None = None
    output_info: dict[str, Any] | None = None
    result_path: Path | None = None
    result_name: str | None = None
    sidecar_path: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    maps: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    safeguards: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def set_stage(self, stage: str, progress: float) -> None:
        self.stage = stage
        self.progress = round(float(progress), 3)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobQueue:
    """Jobs by id, and a bounded executor that runs them in the background."""

    def __init__(self, workers: int = 1, max_pending: int = 8):
        if workers < 1 or max_pending < 1:
            raise ValueError("workers and max_pending must be at least 1")
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="medsr-job")
        self._jobs: dict[str, Job] = {}
        self._pending = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ registry
    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFoundError(
                "no such job (unknown id, deleted, or expired after the retention period)"
            )
        return job

    def ids(self) -> set[str]:
        with self._lock:
            return set(self._jobs)

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def pop(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.pop(job_id, None)

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    # ------------------------------------------------------------------ running
    def submit(self, job: Job, work: Callable[[Job], None]) -> None:
        """Queue ``work(job)``; raise :class:`QueueFullError` when the queue is full."""
        with self._lock:
            if self._pending >= self.max_pending:
                raise QueueFullError(
                    f"the server is busy ({self._pending} jobs queued or running); try again in a minute"
                )
            self._pending += 1
            self._jobs[job.id] = job
        try:
            self._executor.submit(self._run, job, work)
        except RuntimeError:  # executor shut down
            with self._lock:
                self._pending -= 1
                self._jobs.pop(job.id, None)
            raise QueueFullError("the server is shutting down") from None

    def _run(self, job: Job, work: Callable[[Job], None]) -> None:
        try:
            if job.id not in self.ids():  # deleted while queued
                return
            job.state, job.started_at = "running", time.time()
            job.set_stage("starting", 0.02)
            log.info(
                "job %s running (mode=%s, model=%s, scale=%d)",
                job.id,
                job.mode,
                job.model,
                job.scale,
            )
            work(job)
            job.set_stage("done", 1.0)
            job.state = "done"
            log.info("job %s done in %.2f s", job.id, time.time() - job.started_at)
        except MedSRError as exc:
            job.state = "failed"
            job.error = {"status": exc.http_status, "type": type(exc).__name__, "message": str(exc)}
            log.warning("job %s failed: %s", job.id, type(exc).__name__)
        except MemoryError:
            job.state = "failed"
            job.error = {
                "status": 507,
                "type": "MemoryError",
                "message": "the image is too large for this server's memory",
            }
            log.error("job %s failed: out of memory", job.id)
        except Exception as exc:  # a bug: keep serving, report a generic error
            job.state = "failed"
            job.error = {
                "status": 500,
                "type": "InternalError",
                "message": "internal error while processing the image",
            }
            log.error("job %s failed with an internal error: %s", job.id, type(exc).__name__)
        finally:
            job.finished_at = time.time()
            with self._lock:
                self._pending -= 1

    def shutdown(self, wait: bool = False) -> None:
        self._executor.shutdown(wait=wait, cancel_futures=True)


# ====================================================================== the work of one job
def process(
    job: Job,
    image: MedImage,
    *,
    selfsup: Callable[..., MedImage] | None,
    zero_shot_budget_s: float,
    model_path: str | None,
) -> None:
    """Upscale ``image`` as ``job`` asks, write the result and the preview arrays into ``job.dir``."""
    from medsr.io import save_image

    t0 = time.perf_counter()
    job.set_stage("upscaling", 0.1)
    result = _upscale(job, image, selfsup, zero_shot_budget_s, model_path)
    job.metrics["runtime_s"] = round(time.perf_counter() - t0, 3)

    maps = _extract_maps(result)
    result = result.replace(meta={k: v for k, v in result.meta.items() if k != "maps"})
    if job.safeguards:  # in-plane: medsr.inference.safeguards measured it with the modality's physics
        job.metrics.update(_safeguard_metrics(job.safeguards))
    elif job.mode in ("in-plane", "zero-shot"):
        job.set_stage("checking consistency", 0.7)
        consistency, stats = consistency_check(image, result, job.scale)
        maps.setdefault("consistency", consistency)
        job.metrics.update(stats)

    job.set_stage("writing", 0.8)
    out_dir = job.dir / "out"
    out_dir.mkdir(exist_ok=True)
    tag = f"z{job.scale}" if job.mode == "through-plane" else f"x{job.scale}"
    stem = f"{job.filename}_{tag}"
    if job.input_format == "series":
        from medsr.service.storage import zip_folder

        series = save_image(result, out_dir / stem)
        job.result_path = zip_folder(series, job.dir / f"{stem}.zip", stem)
    else:
        suffix = {
            "dicom": ".dcm",
            "nifti": ".nii",
            "nifti-gz": ".nii.gz",
            "png": ".png",
            "tiff": ".tif",
        }[job.input_format]
        job.result_path = save_image(result, out_dir / f"{stem}{suffix}")
        from medsr.io.sidecar import sidecar_path

        side = sidecar_path(job.result_path)
        job.sidecar_path = side if side.is_file() else None
    job.result_name = job.result_path.name
    job.output_info = describe(result)
    job.output_info["size_bytes"] = job.result_path.stat().st_size

    job.set_stage("preparing previews", 0.9)
    np.save(job.dir / "output.npy", result.array)
    for name, arr in maps.items():
        np.save(job.dir / f"map_{name}.npy", arr)
        job.maps.append(name)


def _upscale(
    job: Job,
    image: MedImage,
    selfsup: Callable[..., MedImage] | None,
    budget_s: float,
    model_path: str | None,
) -> MedImage:
    if job.mode == "in-plane":
        from medsr.inference.safeguards import upscale_with_safeguards

        z, y, x = image.spatial_shape
        # TTA costs 8 model runs; interpolators are flip/rotation-equivariant (their map is ~0)
        small = image.num_channels * z * y * x <= TTA_MAX_VOXELS
        learned = bool(job.model_card.get("learned", job.model_card.get("kind") != "interpolator"))
        result, summary = upscale_with_safeguards(
            image,
            job.scale,
            model_path or job.model,
            consistency=job.options.get("consistency", "off"),
            maps=True,
            tta=small and learned,
            warn=False,
        )
        job.safeguards = summary
        job.provenance = {k: v for k, v in result.meta.get("provenance", {}).items() if k != "safeguards"}
        return result
    if selfsup is None:  # checked at submission; kept for safety
        raise MedSRError(f"mode {job.mode!r} is not available in this version")
    if job.mode == "through-plane":
        target = float(image.spacing[0]) / job.scale
        return _call(selfsup, image, target_spacing=target, budget_s=budget_s, progress=False)
    return _call(selfsup, image, job.scale, budget_s=budget_s, progress=False)


#: inputs up to this many voxels get the test-time-augmentation uncertainty map on the web
TTA_MAX_VOXELS = 1 << 20


def _safeguard_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """Flat numbers/strings of a safeguards summary for the job's ``metrics`` (shown as is)."""
    cons = summary.get("consistency") or {}
    err = cons.get("error") or {}
    out: dict[str, Any] = {
        "consistency_psnr_db": err.get("psnr_db"),
        "consistency_mae": err.get("mean"),
        "consistency_p99": err.get("p99"),
        "data_consistency": cons.get("setting", "off"),
        "assumed_degradation": (summary.get("degradation") or {}).get("describe"),
    }
    unc = (summary.get("uncertainty") or {}).get("map")
    if unc:
        out["uncertainty_p99"] = unc.get("p99")
    out["fidelity_warnings"] = len(summary.get("warnings") or [])
    return out


def _call(fn: Callable[..., MedImage], *args: Any, **kwargs: Any) -> MedImage:
    """Call ``fn`` with the keyword arguments its signature accepts."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(*args, **kwargs)
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return fn(*args, **kwargs)


def _extract_maps(result: MedImage) -> dict[str, np.ndarray]:
    """Optional per-voxel maps a method attached as ``meta["maps"]`` (name → array)."""
    raw = result.meta.get("maps")
    out: dict[str, np.ndarray] = {}
    if isinstance(raw, dict):
        for name, arr in raw.items():
            a = np.asarray(arr, dtype=np.float32)
            if a.ndim == 2:
                a = a[None]
            if a.ndim == 3 and str(name).replace("-", "").replace("_", "").isalnum():
                out[str(name)] = a
    return out


def consistency_check(
    image: MedImage, result: MedImage, scale: int, batch: int = 16
) -> tuple[np.ndarray, dict[str, float]]:
    """Degrade ``result`` back to the input grid (antialiased bicubic) and compare with ``image``.

    Returns the absolute difference map ``(Z, y, x)`` in the input's units (mean over colour
    channels) and summary statistics: PSNR (dB, data range = the input's range), mean and 99th
    percentile absolute difference. A faithful upscale, downsampled again, reproduces its input.
    """
    import torch

    from medsr.degradations.bicubic import bicubic_downscale

    src = image.channel_first()
    out = result.channel_first()
    c, z, h, w = src.shape
    hh, ww = out.shape[-2] // scale, out.shape[-1] // scale
    hh, ww = min(hh, h), min(ww, w)
    diff_map = np.zeros((z, hh, ww), dtype=np.float32)
    sq_sum = 0.0
    count = 0
    for k0 in range(0, z, batch):
        k1 = min(z, k0 + batch)
        hr = torch.from_numpy(np.ascontiguousarray(out[:, k0:k1]).reshape(-1, 1, *out.shape[-2:]))
        with torch.inference_mode():
            lr = bicubic_downscale(hr, scale).numpy()[:, 0, :hh, :ww]
        ref = src[:, k0:k1, :hh, :ww].reshape(-1, hh, ww)
        d = lr - ref
        sq_sum += float(np.square(d, dtype=np.float64).sum())
        count += d.size
        diff_map[k0:k1] = np.abs(d).reshape(c, k1 - k0, hh, ww).mean(axis=0)
    lo, hi = float(np.nanmin(src)), float(np.nanmax(src))
    data_range = max(hi - lo, 1e-6)
    mse = sq_sum / max(count, 1)
    psnr = float("inf") if mse == 0 else 10 * np.log10(data_range**2 / mse)
    stats = {
        "consistency_psnr_db": round(psnr, 2) if np.isfinite(psnr) else 99.0,
        "consistency_mae": round(float(diff_map.mean()), 4),
        "consistency_p99": round(float(np.percentile(diff_map, 99)), 4),
    }
    return diff_map, stats


def describe(image: MedImage) -> dict[str, Any]:
    """Non-identifying geometry and intensity summary for the job's JSON."""
    arr = image.array
    finite = arr[np.isfinite(arr)]
    return {
        "modality": image.modality,
        "shape_zyx": [int(s) for s in image.spatial_shape],
        "spacing_mm_zyx": [round(float(s), 6) for s in image.spacing],
        "channels": image.channels or "gray",
        "units": image.units,
        "min": float(finite.min()) if finite.size else 0.0,
        "max": float(finite.max()) if finite.size else 0.0,
    }
