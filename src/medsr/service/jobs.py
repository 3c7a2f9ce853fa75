"""Background jobs: a bounded queue served by worker threads, and the work one job does.

:class:`JobQueue` runs jobs on ``workers`` daemon threads (one by default, so one model runs at
a time and CPU/GPU memory stays bounded). Its counter of jobs queued or running — reserved
*before* an upload is decoded — refuses new work with :class:`QueueFullError` (HTTP 503) once
``max_pending`` is reached. :meth:`JobQueue.shutdown` is bounded: queued jobs are cancelled,
running ones get a grace period, and the threads (daemons) never hold the process open.

:func:`process` is what a job does, as a thin client of :mod:`medsr.pipeline`: in-plane jobs go
through :func:`~medsr.pipeline.upscale_with_safeguards` (consistency, uncertainty, OOD,
provenance); the self-supervised through-plane / zero-shot methods of :mod:`medsr.selfsup` get
the same provenance and (zero-shot) the same consistency measurement. The result is written in
the input's format; float32 copies of input, output and maps are kept for previews.

Logs carry job ids, formats, shapes and model names only: never file names, paths given by the
user or header values.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
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
SUFFIXES = {
    "dicom": ".dcm",
    "nifti": ".nii",
    "nifti-gz": ".nii.gz",
    "png": ".png",
    "tiff": ".tif",
}
#: inputs up to this many voxels get the test-time-augmentation uncertainty map on the web
TTA_MAX_VOXELS = 1 << 20


class QueueFullError(MedSRError):
    """Too many jobs are waiting (or the server is shutting down); try again later."""

    http_status = 503


class JobNotFoundError(MedSRError):
    """No job with that id (never existed, deleted, or expired)."""

    http_status = 404


class JobNotReadyError(MedSRError):
    """The job has not finished (or failed), so it has no result yet."""

    http_status = 409


class JobCancelledError(MedSRError):
    """The server is shutting down; the job was stopped."""

    http_status = 503


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
    cancelled: threading.Event = field(default_factory=threading.Event, repr=False)

    def set_stage(self, stage: str, progress: float) -> None:
        """Record progress; raise :class:`JobCancelledError` when the job was cancelled (the
        stages are where a job stops on shutdown)."""
        if self.cancelled.is_set():
            raise JobCancelledError("the server is shutting down; the job was stopped")
        self.stage = stage
        self.progress = round(float(progress), 3)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobQueue:
    """Jobs by id, and a bounded set of daemon worker threads that run them in the background."""

    def __init__(self, workers: int = 1, max_pending: int = 8):
        if workers < 1 or max_pending < 1:
            raise ValueError("workers and max_pending must be at least 1")
        self.max_pending = max_pending
        self._jobs: dict[str, Job] = {}
        self._pending = 0
        self._closed = False
        self._lock = threading.Lock()
        self._tasks: queue.SimpleQueue[tuple[Job, Callable[[Job], None]] | None] = (
            queue.SimpleQueue()
        )
        self._threads = [
            threading.Thread(target=self._worker, name=f"medsr-job-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

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
    def reserve(self) -> None:
        """Take a place in the queue (before an upload is decoded); :meth:`release` it or hand
        it to :meth:`submit`. Raises :class:`QueueFullError` when the queue is full or closed."""
        with self._lock:
            if self._closed:
                raise QueueFullError("the server is shutting down; try again in a minute")
            if self._pending >= self.max_pending:
                raise QueueFullError(
                    f"the server is busy ({self._pending} jobs queued or running); try again in a minute"
                )
            self._pending += 1

    def release(self) -> None:
        """Give back a place taken by :meth:`reserve` that no job used."""
        with self._lock:
            self._pending -= 1

    def submit(self, job: Job, work: Callable[[Job], None], *, reserved: bool = False) -> None:
        """Queue ``work(job)`` (in the place :meth:`reserve` took when ``reserved``)."""
        if not reserved:
            self.reserve()
        with self._lock:
            closed = self._closed
            if not closed:
                self._jobs[job.id] = job
        if closed:
            if not reserved:
                self.release()
            raise QueueFullError("the server is shutting down; try again in a minute")
        self._tasks.put((job, work))

    def _worker(self) -> None:
        while (item := self._tasks.get()) is not None:
            self._run(*item)

    def _run(self, job: Job, work: Callable[[Job], None]) -> None:
        try:
            if job.id not in self.ids():  # deleted while queued
                return
            job.set_stage("starting", 0.02)
            job.state, job.started_at = "running", time.time()
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
        except (
            BaseException
        ) as exc:  # a bug (even a Rust panic): keep serving, report it generically
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
            # what the job freed goes back to the system (the server keeps freed memory for
            # reuse while a job runs: medsr.inference.memory)
            from medsr.inference.memory import release_freed_memory

            release_freed_memory()

    def shutdown(self, grace_s: float = 10.0) -> list[Job]:
        """Refuse new jobs, cancel queued ones, give running ones ``grace_s`` seconds; return
        the jobs that had not finished (cancelled: they stop at their next stage)."""
        with self._lock:
            self._closed = True
            jobs = list(self._jobs.values())
        for job in jobs:
            if not job.finished and job.state == "queued":
                job.cancelled.set()
        for _ in self._threads:
            self._tasks.put(None)
        deadline = time.monotonic() + max(0.0, grace_s)
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        unfinished = [j for j in jobs if not j.finished]
        for job in unfinished:
            job.cancelled.set()
        if unfinished:
            log.warning("shutdown: %d unfinished job(s) stopped", len(unfinished))
        return unfinished


# ====================================================================== the work of one job
def image_info(image: MedImage) -> dict[str, Any]:
    """The non-identifying geometry and intensity summary of the job's JSON
    (:meth:`MedImage.summary`, reduced to what the API documents; ``time_points`` for an image
    over time, whose ``shape_zyx`` is that of each time point)."""
    s = image.summary()
    info = {
        k: s[k]
        for k in ("modality", "shape_zyx", "spacing_mm_zyx", "channels", "units", "min", "max")
    }
    for k in ("min", "max"):
        info[k] = float(info[k]) if np.isfinite(info[k]) else 0.0
    if image.channels == "time":  # a series over time (``series`` KEY:all): (T, Z, Y, X)
        info["time_points"] = int(image.array.shape[0])
    return info


def process(
    job: Job,
    image: MedImage,
    *,
    selfsup: Callable[..., MedImage] | None,
    zero_shot_budget_s: float,
    model: Any = None,
) -> None:
    """Upscale ``image`` as ``job`` asks, write the result and the preview arrays into ``job.dir``.

    ``model`` is what the pipeline gets for an in-plane job: a classical name or a
    :class:`~medsr.models.resolver.LoadedModel` of the server's catalog.
    """
    from medsr.io import save_image

    t0 = time.perf_counter()
    job.set_stage("upscaling", 0.1)
    budget = float(job.options.get("budget_s", zero_shot_budget_s))
    result = _upscale(job, image, selfsup, budget, model)
    job.metrics["runtime_s"] = round(time.perf_counter() - t0, 3)

    maps = _extract_maps(result)
    if job.safeguards:
        job.metrics.update(_safeguard_metrics(job.safeguards))
    result = result.replace(meta={k: v for k, v in result.meta.items() if k != "maps"})
    job.provenance = {
        k: v for k, v in result.meta.get("provenance", {}).items() if k != "safeguards"
    }
    derivation = result.meta.get("derivation") or {}
    if derivation.get("precision"):  # the network's arithmetic that ran (in-plane models)
        job.provenance["precision"] = derivation["precision"]
        for key in ("precision_auto", "precision_fallback"):
            if derivation.get(key):
                job.provenance[key] = derivation[key]

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
        job.result_path = save_image(result, out_dir / f"{stem}{SUFFIXES[job.input_format]}")
        from medsr.io.sidecar import sidecar_path

        side = sidecar_path(job.result_path)
        job.sidecar_path = side if side.is_file() else None
    job.result_name = job.result_path.name
    job.output_info = image_info(result)
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
    model: Any,
) -> MedImage:
    if job.mode == "in-plane":
        from medsr.pipeline import upscale_with_safeguards

        z, y, x = image.spatial_shape
        # TTA costs 8 model runs; interpolators are flip/rotation-equivariant (their map is ~0)
        small = image.num_channels * z * y * x <= TTA_MAX_VOXELS
        learned = bool(job.model_card.get("learned"))
        result, summary = upscale_with_safeguards(
            image,
            job.scale,
            model if model is not None else job.model,
            consistency=job.options.get("consistency", "auto"),
            degradation=job.options.get("degradation"),
            maps=True,
            tta=small and learned,
            warn=False,
            ensemble=bool(job.options.get("ensemble")),  # with tta: its 8 passes, no more
            precision=job.options.get("precision", "fp32"),
        )
        job.safeguards = summary
        return result
    if selfsup is None:  # checked at submission; kept for safety
        raise MedSRError(f"mode {job.mode!r} is not available in this version")
    if job.mode == "through-plane":  # the pipeline's step: prior (+ adaptation), provenance
        from medsr.pipeline import upscale_through_plane
        from medsr.slice_grid import slice_spacing

        result, summary = upscale_through_plane(
            image,
            target_spacing=slice_spacing(image) / job.scale,
            consistency=job.options.get("consistency", "auto"),
            adapt_steps=int(job.options.get("adapt_steps", 0)),
            maps=True,
            progress=False,
            on_progress=_training_progress(job, "adapting the prior to this volume"),
        )
        job.safeguards = summary
        return result
    from medsr.pipeline import zero_shot_checked

    result = _call(
        selfsup,
        image,
        job.scale,
        budget_s=budget_s,
        progress=False,
        on_progress=_training_progress(job, "training on this image"),
    )
    # the pipeline's safeguards of a zero-shot result, as medsr.pipeline.upscale_file: the
    # consistency measured (projected with consistency "on"), its map, provenance
    job.set_stage("checking consistency", TRAINING_PROGRESS_END)
    result, summary = zero_shot_checked(
        image, result, job.scale, consistency=job.options.get("consistency", "auto"), maps=True
    )
    job.safeguards = summary
    return result


#: a job's progress while a network trains on its image (``on_progress`` of medsr.selfsup):
#: from the "upscaling" stage's 0.1 to this, the rest (application, checks, writing) after it
TRAINING_PROGRESS_END = 0.65


def _training_progress(job: Job, stage: str) -> Callable[[float], None]:
    """``on_progress`` for a network trained on the job's own image: the job's stage and
    progress follow the training (and a cancelled job stops it, :meth:`Job.set_stage`)."""

    def report(frac: float) -> None:
        job.set_stage(stage, 0.1 + (TRAINING_PROGRESS_END - 0.1) * min(max(frac, 0.0), 1.0))

    return report


def _safeguard_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """Flat numbers/strings of a safeguards summary for the job's ``metrics`` (shown as is)."""
    from medsr.safeguards.provenance import consistency_label

    cons = summary.get("consistency") or {}
    err = cons.get("error") or {}
    out: dict[str, Any] = {
        "consistency_psnr_db": err.get("psnr_db"),
        "consistency_mae": err.get("mean"),
        "consistency_p99": err.get("p99"),
        # with the reason an auto setting did not project, as the DICOM derivation text says
        # it ("auto (measured only: physics not stated)")
        "data_consistency": consistency_label(cons, why=True),
        "physics": summary.get("physics", "unknown"),
        "assumed_degradation": (summary.get("degradation") or {}).get("describe"),
    }
    unc = (summary.get("uncertainty") or {}).get("map")
    if unc:
        out["uncertainty_p99"] = unc.get("p99")
    bound = (summary.get("error_bound") or {}).get("map")
    if bound:
        out["error_bound_p99"] = bound.get("p99")
    detail = _detail_check_text(summary.get("self_check") or {})
    if detail:
        out["detail_check"] = detail
    if summary.get("ensemble"):
        out["ensemble"] = summary["ensemble"]
    out["fidelity_warnings"] = len(summary.get("warnings") or [])
    return out


def _detail_check_text(check: dict[str, Any]) -> str | None:
    """What the pipeline's two detail checks did to a learned model's output, in a few words
    (the summary has the numbers: ``safeguards.self_check``)."""
    full = check.get("full_scale") or {}
    if check.get("applied"):
        return f"{check['gain']:.2f} x detail over {check['over']} (one scale down)"
    if full.get("applied"):
        return f"{full['gain']:.2f} x model over {full['over']} (full scale)"
    if check.get("checked") or full.get("checked"):
        return "kept"
    return None


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
    """Optional per-voxel maps a method attached as ``meta["maps"]`` (name → array):
    ``(Z, Y, X)``, or ``(T, Z, Y, X)`` for an image over time (each time point's own map; the
    preview's ``time`` picks one)."""
    raw = result.meta.get("maps")
    out: dict[str, np.ndarray] = {}
    if isinstance(raw, dict):
        for name, arr in raw.items():
            a = np.asarray(arr, dtype=np.float32)
            if a.ndim == 2:
                a = a[None]
            if a.ndim in (3, 4) and str(name).replace("-", "").replace("_", "").isalnum():
                out[str(name)] = a
    return out
