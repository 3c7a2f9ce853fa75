"""The state behind the endpoints: storage, job queue, model catalog, decoder, clean-up thread;
and the intake of one upload (:meth:`Service.create_job`).

An upload takes its place in the bounded queue *before* it is decoded, is saved into its job
folder (size-limited), sniffed from its bytes (415), decoded in a child process under a time
limit (:mod:`medsr.service.decode`; 422 when corrupt or too slow), checked, and queued. Every
option is validated by :func:`medsr.pipeline.check_options`, the one validation all front ends
share; the model name is looked up in the server's catalog (:mod:`medsr.service.catalog`).

Shutdown (:meth:`Service.stop`) is bounded: no new jobs, decoders killed, queued jobs cancelled,
running jobs given ``shutdown_grace_s``, then every job folder is deleted.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from medsr.errors import InvalidParameterError, MedSRError, UnsupportedFormatError
from medsr.service import catalog as catalog_module
from medsr.service import jobs as jobs_module
from medsr.service.catalog import ModelCatalog
from medsr.service.decode import UploadDecoder
from medsr.service.jobs import MODES, SUFFIXES, Job, JobNotReadyError, JobQueue, new_job_id
from medsr.service.security import UploadTooLargeError, too_large_message
from medsr.service.settings import Settings
from medsr.service.storage import Storage, is_zip, safe_extract_zip, safe_filename, safe_stem

log = logging.getLogger("medsr.service")

ACCEPTED_FORMATS = {"dicom", "nifti", "png", "tiff"}
#: the most reader notes a job's input lists (``input.warnings``)
MAX_WARNINGS = 20
#: names the service gives files in a job folder (replaced by the upload's name in messages)
_INTERNAL_NAMES = ("upload", "input", *(f"input{s}" for s in SUFFIXES.values()))


@dataclass
class JobRequest:
    """The form of ``POST /api/v1/jobs``, as sent."""

    model: str = "default"
    scale: int = 2
    mode: str = "in-plane"
    consistency: str = "auto"
    degradation: str | None = None
    modality: str | None = None
    adapt_steps: int = 0  # through-plane: per-volume adaptation steps of the prior
    ensemble: bool = False  # in-plane: the mean over the 8 flips/rotations
    budget: str | None = None  # zero-shot: training time ("60s", "2m", seconds), as --budget
    precision: str = "fp32"  # in-plane: the network's arithmetic, as --precision
    series: str | None = None  # DICOM: the series or stack to read, as --series (KEY:N, KEY:all)


class Service:
    """State shared by the endpoints (one per app)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.catalog = ModelCatalog(
            pretrained=settings.pretrained, weights_dirs=settings.weights_dirs
        )
        self._stop = threading.Event()
        self._cleaner: threading.Thread | None = None
        self._open()

    def _open(self) -> None:
        self.storage = Storage(self.settings.work_dir)
        self.queue = JobQueue(workers=self.settings.workers, max_pending=self.settings.max_pending)
        self.decoder = UploadDecoder(self.settings.decode_timeout_s)
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the clean-up thread (again, after :meth:`stop`, with a fresh queue and folder)."""
        if self._closed:
            self._open()
        if self._cleaner is None or not self._cleaner.is_alive():
            self._stop.clear()
            self._cleaner = threading.Thread(
                target=self._clean_loop, name="medsr-cleanup", daemon=True
            )
            self._cleaner.start()

    def stop(self, grace_s: float | None = None) -> None:
        """Stop taking jobs, kill decoders, cancel queued jobs, give running ones ``grace_s``
        (default ``shutdown_grace_s``), then delete every job's files."""
        if self._closed:
            return
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        self._stop.set()
        self.decoder.close()
        unfinished = self.queue.shutdown(grace)
        if self._cleaner is not None:
            self._cleaner.join(timeout=5)
        for job in unfinished:  # a job stopping late must not write into a fresh folder
            job.cancelled.set()
        self.storage.close()
        self._closed = True
        log.info("medsr service stopped; job files deleted")

    def _clean_loop(self) -> None:
        period = min(60.0, max(0.5, self.settings.retention_s / 4))
        while not self._stop.wait(period):
            try:
                self.cleanup_expired()
            except Exception as exc:  # never let clean-up kill the thread
                log.error("clean-up failed: %s", type(exc).__name__)

    def cleanup_expired(self, now: float | None = None) -> int:
        """Delete finished jobs older than the retention period; return how many."""
        now = time.time() if now is None else now
        removed = 0
        for job in self.queue.jobs():
            if (
                job.finished
                and job.finished_at is not None
                and job.finished_at + self.settings.retention_s <= now
            ):
                self.delete(job.id)
                removed += 1
        if removed:
            log.info("retention: deleted %d expired job(s)", removed)
        return removed

    def delete(self, job_id: str) -> None:
        self.queue.pop(job_id)
        self.storage.remove(job_id)

    def delete_finished(self, job_id: str) -> None:
        """``DELETE /jobs/{id}``: refused (409) while the job runs."""
        job = self.queue.get(job_id)
        if job.state == "running":
            raise JobNotReadyError("the job is running; delete it once it has finished")
        self.delete(job.id)
        log.info("job %s deleted on request", job.id)

    # ------------------------------------------------------------------ models
    def model_cards(self) -> list[dict[str, Any]]:
        return self.catalog.cards()

    def modes(self) -> dict[str, bool]:
        return {m: m == "in-plane" or catalog_module.selfsup_function(m) is not None for m in MODES}

    # ------------------------------------------------------------------ intake
    def create_job(self, stream: BinaryIO, filename: str | None, request: JobRequest) -> Job:
        """Validate ``request``, save and decode the upload ``stream``, queue the job."""
        self.queue.reserve()  # 503 now rather than after decoding
        try:
            return self._create_job(stream, filename, request)
        except BaseException:
            self.queue.release()
            raise

    def _create_job(self, stream: BinaryIO, filename: str | None, req: JobRequest) -> Job:
        from medsr.inference.precision import check_precision
        from medsr.io.dicom.stacks import check_series_choice
        from medsr.pipeline import check_options, check_physics_unused, set_modality

        mode = req.mode.strip().lower()
        if mode not in MODES:
            raise InvalidParameterError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        degradation = (req.degradation or "").strip() or None
        series = check_series_choice(req.series)  # the reader's grammar, before any upload
        modality = (req.modality or "").strip() or None
        selfsup = None
        if mode == "in-plane":
            card, entry = self.catalog.lookup(req.model, req.scale)
        else:
            selfsup = catalog_module.selfsup_function(mode)
            if selfsup is None:
                raise InvalidParameterError(
                    f"mode {mode!r} is not available in this version of medsr"
                )
            card, entry = catalog_module.selfsup_card(mode), "bicubic"
        # the pipeline's one validation (scale, model, consistency, physics, modality)
        if req.adapt_steps and mode != "through-plane":
            raise InvalidParameterError("adapt_steps applies to mode through-plane only")
        if req.adapt_steps > self.settings.max_adapt_steps:
            raise InvalidParameterError(
                f"adapt_steps must be at most {self.settings.max_adapt_steps} on this server"
            )
        budget = self._zero_shot_budget(req.budget, mode)
        if mode != "in-plane":  # the self-supervised modes use no stated in-plane physics
            check_physics_unused(degradation, through_plane=mode == "through-plane")
            if req.ensemble:
                raise InvalidParameterError("ensemble applies to mode in-plane only")
        precision = check_precision((req.precision or "").strip() or "fp32")
        if mode != "in-plane" and precision not in ("fp32", "auto"):  # auto: fp32 there
            raise InvalidParameterError("precision applies to mode in-plane only")
        # fp16 is refused here on a server without CUDA (the model runs on device auto)
        model = check_options(
            scale=req.scale, model=entry, consistency=req.consistency, degradation=degradation,
            modality=modality, adapt_steps=req.adapt_steps, precision=precision,
            device="auto" if mode == "in-plane" else None,
        )  # fmt: skip
        name = card["name"]

        job_id = new_job_id()
        job_dir = self.storage.create(job_id)
        shown = safe_filename(filename)
        try:
            fmt, source, size = self._save(stream, job_dir, shown)
            if series and fmt not in ("series", "dicom"):
                raise InvalidParameterError(
                    "series chooses a series or stack of a DICOM upload; this file is not DICOM"
                )
            decoded = self.decoder.decode(source, job_dir / "input.npy", shown, series)
            image = set_modality(decoded.image, modality)
            if mode == "through-plane" and not image.is_volume:
                raise InvalidParameterError(
                    "through-plane super-resolution needs a volume (more than one slice)"
                )
            z, y, x = image.spatial_shape
            out_vox = image.num_channels * z * y * x * req.scale**2
            limit = self.settings.max_output_megavoxels
            if out_vox > limit * 1e6:
                raise InvalidParameterError(
                    f"the result would have {out_vox / 1e6:.0f} million voxels, more than this "
                    f"server allows ({limit:.0f} million); use a smaller scale or the command line"
                )
            info = dict(decoded.info, modality=image.modality)
            info.update(format=fmt, filename=shown, size_bytes=size)
            if series:
                info["series"] = series
            notes = image.meta.get("header_warnings") or []  # e.g. a localizer left out
            if notes:  # as the errors: no job folder, the upload's name, the series option
                notes = [_public_message(str(n), job_dir, shown) for n in notes]
                info["warnings"] = list(dict.fromkeys(notes))[:MAX_WARNINGS]
            job = Job(
                id=job_id,
                dir=job_dir,
                mode=mode,
                model=name if mode == "in-plane" else mode,
                scale=req.scale,
                filename=safe_stem(filename),
                input_format=fmt,
                input_info=info,
                window=decoded.window,
                model_card=card,
                options={
                    "consistency": req.consistency.strip().lower(),
                    "degradation": degradation,
                    "modality": modality,
                    "adapt_steps": int(req.adapt_steps),
                    "ensemble": bool(req.ensemble),
                    "precision": precision,
                    "series": series,
                },
            )
            log.info(
                "job %s queued: format=%s modality=%s shape=%s series=%s mode=%s model=%s scale=%d",
                job_id, fmt, image.modality, "x".join(map(str, image.spatial_shape)),
                decoded.series, mode, job.model, req.scale,
            )  # fmt: skip
            if mode == "zero-shot":
                job.options["budget_s"] = budget
            self.queue.submit(
                job,
                lambda j: jobs_module.process(
                    j, image, selfsup=selfsup, zero_shot_budget_s=budget, model=model
                ),
                reserved=True,
            )
            return job
        except MedSRError as exc:
            shutil.rmtree(job_dir, ignore_errors=True)
            log.info("upload rejected: %s", type(exc).__name__)
            raise _with_message(exc, _public_message(str(exc), job_dir, shown)) from None
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise

    def _zero_shot_budget(self, text: str | None, mode: str) -> float:
        """A job's zero-shot training time in seconds: its ``budget`` (the duration grammar of
        ``medsr upscale --budget``), at most ``max_zero_shot_budget_s``; the server's default
        (the command line's) when it states none."""
        from medsr.durations import parse_duration

        text = (text or "").strip() or None
        if text is None:
            return float(self.settings.zero_shot_budget_s)
        if mode != "zero-shot":
            raise InvalidParameterError(
                "budget (training time) applies to mode zero-shot only; through-plane adaptation "
                "takes adapt_steps"
            )
        seconds = parse_duration(text, "budget", allow_days=False)
        limit = self.settings.max_zero_shot_budget_s
        if seconds > limit:
            raise InvalidParameterError(f"budget must be at most {limit:g} seconds on this server")
        return seconds

    def _save(self, stream: BinaryIO, job_dir: Path, shown: str) -> tuple[str, Path, int]:
        """Copy the upload into ``job_dir``; unpack a zip; return (format, source, bytes)."""
        from medsr.io import sniff_format

        upload = job_dir / "upload"
        size = _copy_limited(stream, upload, self.settings)
        if size and is_zip(upload):
            safe_extract_zip(upload, job_dir / "input", self.settings.zip_limits)
            upload.unlink()
            return "series", job_dir / "input", size
        fmt = sniff_format(upload)  # 415 for anything else, 422 when empty
        if fmt not in ACCEPTED_FORMATS:
            raise UnsupportedFormatError(
                f"'{shown}' is not a format the web service accepts "
                "(DICOM, zip of a DICOM series, NIfTI, PNG, TIFF)"
            )
        if fmt == "nifti":
            with open(upload, "rb") as fh:
                fmt = "nifti-gz" if fh.read(2) == b"\x1f\x8b" else "nifti"
        source = job_dir / f"input{SUFFIXES[fmt]}"
        upload.rename(source)
        return fmt, source, size


def _copy_limited(src: BinaryIO, target: Path, settings: Settings) -> int:
    limit = settings.max_upload_bytes
    size = 0
    src.seek(0)
    with open(target, "wb") as out:
        while chunk := src.read(1024 * 1024):
            size += len(chunk)
            if size > limit:
                raise UploadTooLargeError(too_large_message(settings.max_upload_mb))
            out.write(chunk)
    return size


#: the reader's way to choose a series or stack on the command line (and in Python), which the
#: web service takes as its ``series`` field: "--series KEY:N (Python: series_uid='KEY:N')"
_CLI_CHOICE = re.compile(r"--series (\S+?)(?: \(Python: series_uid=[^)]*\))?(?=[\s.,;)]|$)")


def _public_message(message: str, job_dir: Path, shown: str) -> str:
    """``message`` without the job folder, calling the file by the name it was uploaded as, and
    naming the ``series`` field where the reader names the command line's ``--series``."""
    message = message.replace(str(job_dir) + "/", "").replace(str(job_dir), "")
    for internal in _INTERNAL_NAMES:
        message = message.replace(f"'{internal}'", f"'{shown}'")
    return _CLI_CHOICE.sub(r"the series option (\1)", message)


def _with_message(exc: MedSRError, message: str) -> MedSRError:
    """A copy of ``exc`` (same class, same HTTP status, same list of stacks) with ``message``."""
    try:
        new = type(exc)(message)
    except TypeError:
        new = MedSRError(message)
    new.http_status = exc.http_status
    stacks = getattr(exc, "stacks", None)
    if stacks:
        new.stacks = stacks  # type: ignore[attr-defined]
    return new


__all__ = ["ACCEPTED_FORMATS", "JobRequest", "Service"]
