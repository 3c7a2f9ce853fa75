"""Run a batch: discover → plan → (skip up-to-date) → read ‖ model ‖ write → report.

The local engine is a three-stage pipeline with bounded queues between the stages::

    items ─▶ reader pool (K threads) ─▶ [queue] ─▶ model (1, this thread) ─▶ [queue] ─▶ writer pool (K threads)

Readers checksum and decode the next inputs and writers encode and rename the previous outputs
while the model works, so the model does not wait on I/O (the queues hold at most ``K`` images
each, which bounds memory). On CPU the model takes one item at a time; on CUDA it stacks planes
from several queued items of the same plane size into one forward pass
(:meth:`medsr.inference.planes.PlaneUpscaler.run_many`).

Every item is upscaled with the fidelity safeguards of ``medsr upscale``
(:mod:`medsr.batch.stages`): provenance in every output, ``consistency="on"`` projects outputs
onto their inputs, ``maps_dir`` receives consistency and test-time-augmentation uncertainty
maps (TTA runs the model 8× per item, one item at a time).

Readers decode each input in a child process under a time limit (``decode_timeout_s``, see
:mod:`medsr.batch.stages`), so no input can hold a reader thread forever.

The Ray engine (:mod:`medsr.batch.ray_engine`) runs the same per-item function on a Ray cluster.
Both write the same report and resume state (:mod:`medsr.batch.state`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsr.batch.discover import BatchItem, discover, read_manifest
from medsr.batch.plan import plan_outputs
from medsr.batch.stages import (
    DECODE_TIMEOUT_S,
    Loaded,
    read_item,
    safeguard,
    skipped_result,
    upscale_loaded,
    write_item,
)
from medsr.batch.state import ItemResult, Recorder, StateJournal, run_fingerprint
from medsr.errors import (
    InputNotFoundError,
    InvalidParameterError,
    MedSRWarning,
    positive_number,
    whole_number,
)
from medsr.io.isolated import IsolatedReader

__all__ = ["BatchSummary", "plan_batch", "run_batch"]

ENGINES = ("local", "ray")
_SENTINEL = object()


@dataclass
class BatchSummary:
    """Outcome of :func:`run_batch`."""

    out_dir: Path
    report: Path
    engine: str
    model: str
    counts: dict[str, int]
    seconds: float
    results: list[ItemResult] = field(default_factory=list)
    consistency: str = "auto"
    maps_dir: Path | None = None
    precision: str = "fp32"

    @property
    def processed(self) -> int:
        """Items that went through the model this run (ok or failed after reading)."""
        return sum(1 for r in self.results if r.status == "ok")

    @property
    def items_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "report": str(self.report),
            "engine": self.engine,
            "model": self.model,
            "counts": dict(self.counts),
            "seconds": round(self.seconds, 3),
            "items_per_s": round(self.items_per_s, 3),
            "consistency": self.consistency,
            "maps_dir": str(self.maps_dir) if self.maps_dir is not None else None,
            "precision": self.precision,
            "warnings": sum(1 for r in self.results if r.warnings),
        }


def _under(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def plan_batch(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    maps_dir: str | os.PathLike[str] | None = None,
) -> list[BatchItem]:
    """Every item of a batch with its output path (and maps folder, with ``maps_dir``): a folder
    is discovered, a ``.csv`` is a manifest. The output and maps folders are excluded from
    discovery when they lie inside the input."""
    src = Path(input)
    out = Path(output).resolve()
    maps = Path(maps_dir).resolve() if maps_dir is not None else None
    if not src.exists():
        raise InputNotFoundError(f"input '{src}' does not exist")
    if maps is not None and (maps == out or _under(out, maps)):
        raise InvalidParameterError(
            "the maps folder must not be the output folder or contain it; "
            "give a folder of its own (e.g. OUT_maps)"
        )
    if src.is_file():
        if src.suffix.lower() != ".csv":
            raise InvalidParameterError(
                f"'{src.name}' is a file: give a folder to search or a manifest CSV with an 'input' column "
                "(use medsr upscale for one image)"
            )
        items, requested = read_manifest(src)
        return plan_outputs(items, src.resolve().parent, out, requested, maps_root=maps)
    root = src.resolve()
    if out == root or _under(root, out):
        raise InvalidParameterError(
            "the output folder must not be the input folder or contain it (inputs are never modified)"
        )
    if maps is not None and (maps == root or _under(root, maps)):
        raise InvalidParameterError(
            "the maps folder must not be the input folder or contain it (inputs are never modified)"
        )
    items = discover(root, exclude=[out] + ([maps] if maps is not None else []))
    return plan_outputs(items, root, out, maps_root=maps)


def run_batch(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | None = None,
    scale: int = 2,
    workers: int | None = 2,
    engine: str = "local",
    address: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    batch_across_items: bool | None = None,
    progress: bool = False,
    on_result: Callable[[ItemResult], None] | None = None,
    threads: int | None = None,
    ray_num_cpus: float | None = None,
    consistency: str = "auto",
    degradation: str | None = None,
    modality: str | None = None,
    maps_dir: str | os.PathLike[str] | None = None,
    decode_timeout_s: float = DECODE_TIMEOUT_S,
    ensemble: bool = False,
    output_dtype: str | None = None,
    precision: str = "fp32",
) -> BatchSummary:
    """Upscale every image under ``input`` (a folder, or a manifest CSV) into ``output``.

    Args:
        input: folder searched recursively (DICOM series grouped by Series Instance UID, NIfTI,
            PNG/TIFF, ``.npy``), or a manifest CSV (column ``input``, optional ``output``).
        output: output folder; mirrors the input's structure and holds ``batch_report.csv`` and
            the resume journal ``batch_state.jsonl``. Outputs of an earlier run are replaced
            when stale, kept when up to date.
        model: as for :func:`medsr.upscale` (``None`` → ``default-x{scale}`` or bicubic).
        scale: 2, 3 or 4.
        workers: local engine: size of the reader pool and of the writer pool; Ray engine:
            number of model actors (``None``/0 there: one per GPU, or per ``ray_num_cpus`` CPUs).
        engine: ``local`` or ``ray``.
        address: Ray engine: ``auto`` or ``HOST:PORT`` of a running cluster; ``None`` starts a
            private local Ray on 127.0.0.1 for this run.
        device: ``auto``, ``cpu`` or ``cuda`` (model stage / actors).
        batch_size: planes per forward pass, at least 1 (default 1 on CPU: fastest there; 32 on CUDA).
        batch_across_items: stack planes of several items in one forward pass; default: on
            CUDA only.
        progress: show a Rich progress bar (items, items/s, ETA) on stderr.
        on_result: called with each :class:`~medsr.batch.state.ItemResult` as it is recorded.
        threads: local engine: intra-op threads of the model stage for this run (default:
            torch's, one per core). On a shared or loaded machine 1 can be much faster.
        ray_num_cpus: CPUs reserved per Ray actor, and its intra-op threads (default 1).
        consistency: ``"on"`` projects every output onto its input for the assumed degradation
            (data consistency, as ``medsr upscale --consistency on``); ``"off"`` only
            measures the consistency error; ``"auto"`` (default) projects when the physics is
            known (``degradation``), as ``medsr upscale``. Recorded in every output's provenance.
        degradation: the physics that made the inputs (as ``medsr upscale --degradation``:
            a kind, ``auto`` from each DICOM header, ``default`` each input's modality's usual
            physics, or ``None`` unknown).
        modality: modality of inputs that carry none (NIfTI, PNG, TIFF, .npy).
        maps_dir: folder for each item's consistency-error and uncertainty maps (+
            ``summary.json``; see :mod:`medsr.batch.plan` for the layout). The uncertainty map
            runs the model under 8 test-time augmentations, so the batch is ~8× slower.
        ensemble: trained models: each output is the mean of the model's outputs for the 8
            flips/rotations of its input (as ``medsr upscale --ensemble``; 8× the model's time;
            inputs then run item by item).
        output_dtype: how NIfTI outputs store their values (as ``medsr upscale
            --output-dtype``): ``input`` (default: an integer source's type and scaling) or
            ``float32``; other formats are unaffected.
        precision: the network's arithmetic, as ``medsr upscale --precision``: ``fp32``
            (default), ``auto``, ``bf16`` or ``fp16`` (CUDA). Every model actor (Ray) and the
            local model stage run it; each output's derivation records the precision that ran
            (DICOM DerivationDescription, the JSON sidecar).
        decode_timeout_s: longest time one input may take to read. Every input is decoded in
            a child process (:class:`medsr.io.isolated.IsolatedReader`), killed beyond this:
            the item fails ("could not be read within N s") and the batch goes on.

    Returns a :class:`BatchSummary`; individual failures are in the report, never raised.
    """
    if not Path(input).exists():  # at once, before the options' check loads torch and the model
        raise InputNotFoundError(f"input '{Path(input)}' does not exist")
    from medsr.pipeline import check_options
    from medsr.safeguards.consistency import consistency_setting

    if engine not in ENGINES:
        raise InvalidParameterError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    # the pipeline's one validation of scale, model, consistency, physics, modality and
    # precision (fp16 against the local device; Ray's actors find theirs in run_ray)
    check_options(
        scale=scale, model=model, consistency=consistency, degradation=degradation, modality=modality,
        ensemble=ensemble, precision=precision, device=device if engine == "local" else None,
    )  # fmt: skip
    from medsr.inference.precision import check_precision

    precision = check_precision(precision)
    consistency = consistency_setting(consistency)
    if engine == "local" and (workers is None or int(workers) < 1):
        raise InvalidParameterError(f"workers must be at least 1, got {workers}")
    if engine == "local" and address:
        raise InvalidParameterError("--address applies to --engine ray only")
    if threads is not None and int(threads) < 1:
        raise InvalidParameterError(f"threads must be at least 1, got {threads}")
    from medsr.inference.planes import BATCH_SIZE

    batch_size = whole_number(batch_size, BATCH_SIZE, least=1)  # the upscaler's own rule, early
    decode_timeout_s = positive_number(decode_timeout_s, "the decoding time limit", "seconds")
    if output_dtype is not None:
        from medsr.io.nifti import check_output_dtype

        output_dtype = check_output_dtype(output_dtype, "--output-dtype")
    t_start = time.perf_counter()
    base = "kspace" if str(degradation).strip().lower() == "kspace" else None
    # Ray: the driver's copy only checks that the model loads; the actors run the precision
    upscaler = _make_upscaler(
        model, int(scale), device if engine == "local" else "cpu", batch_size, base,
        precision if engine == "local" else "fp32",
    )  # fmt: skip
    model_key = run_fingerprint(
        model, int(scale), consistency, maps_dir is not None, degradation=degradation, modality=modality,
        ensemble=ensemble, output_dtype=output_dtype, precision=precision,
    )  # fmt: skip
    items = plan_batch(input, output, maps_dir)
    if not items:  # an empty watch folder is no error, but say so: a wrong path looks the same
        where = Path(input)
        warnings.warn(
            f"the manifest '{where}' lists no inputs: nothing to do"
            if where.is_file()
            else f"no images or DICOM series found in '{where}' (searched recursively): "
            "nothing to do",
            MedSRWarning,
            stacklevel=2,
        )
    from medsr.io._atomic import remove_stale_temporaries

    for it in items:  # a resumed run: temporaries of writes a SIGKILL interrupted
        if it.output:
            remove_stale_temporaries(it.output, older_than=time.time() - 1.0)
    if degradation is not None or modality is not None or ensemble or output_dtype is not None:
        # travels with each item (also to Ray)
        extra = {
            "degradation": degradation, "modality": modality, "ensemble": ensemble,
            "output_dtype": output_dtype,
        }  # fmt: skip
        items = [dataclasses.replace(it, extra={**it.extra, **extra}) for it in items]
    out_dir = Path(output).resolve()
    journal = StateJournal(out_dir)
    bar = _Progress(len(items), enabled=progress)

    def hook(result: ItemResult) -> None:
        bar.update(result)
        if on_result is not None:
            on_result(result)

    recorder = Recorder(out_dir, journal, model_key, on_result=hook)
    runnable = [it for it in items if it.runnable]
    expects = {it.key: journal.expectation(it.key, model_key, it.output) for it in runnable}
    reader = IsolatedReader(decode_timeout_s) if engine == "local" else None
    try:
        with bar:
            for it in items:
                if not it.runnable:
                    recorder.record(skipped_result(it))
            if engine == "local":
                cross = batch_across_items
                if cross is None:
                    cross = upscaler.device.type == "cuda"
                if (
                    maps_dir is not None
                    or str(degradation).strip().lower() in ("auto", "default")
                    or ensemble
                ):
                    # TTA (the ensemble's too), a physics from each header or modality: item by item
                    cross = False
                with _torch_threads(threads):
                    _run_local(
                        runnable, expects, upscaler, recorder, int(workers), bool(cross),
                        consistency, reader,
                    )  # fmt: skip
            else:
                from medsr.batch.ray_engine import run_ray

                run_ray(
                    runnable, expects, recorder, model=model, scale=int(scale), device=device,
                    actors=workers, address=address, batch_size=batch_size,
                    num_cpus=ray_num_cpus, consistency=consistency, base=base,
                    decode_timeout_s=decode_timeout_s, precision=precision,
                )  # fmt: skip
    finally:
        if reader is not None:
            reader.close()  # an interrupted run: no child keeps decoding
        recorder.close([it.key for it in items])
    results = [recorder.results[it.key] for it in items if it.key in recorder.results]
    return BatchSummary(
        out_dir, recorder.report_path, engine, model_key, dict(recorder.counts),
        time.perf_counter() - t_start, results, consistency,
        Path(maps_dir).resolve() if maps_dir is not None else None, precision,
    )  # fmt: skip


def _make_upscaler(
    model: Any,
    scale: int,
    device: str,
    batch_size: int | None,
    base: str | None = None,
    precision: str = "fp32",
) -> Any:
    from medsr.inference.planes import PlaneUpscaler
    from medsr.inference.predictor import resolve_device

    dev = resolve_device(device)
    # planes per forward pass: PlaneUpscaler's own default on CPU (1: fastest there,
    # benchmarks/results/speed_pipeline.md); more on a GPU, where batches mix inputs
    bs = batch_size or (32 if dev.type == "cuda" else None)
    return PlaneUpscaler(
        model, scale, device=str(dev), batch_size=bs, base=base, precision=precision
    )


# ============================================================================ local engine
@contextlib.contextmanager
def _torch_threads(n: int | None):
    """torch's intra-op thread count set to ``n`` for the duration (process-wide)."""
    if not n:
        yield
        return
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _put(q: queue.Queue, obj: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(obj, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _run_local(
    items: list[BatchItem],
    expects: dict[str, dict[str, Any] | None],
    upscaler: Any,
    recorder: Recorder,
    workers: int,
    cross_item: bool,
    consistency: str = "auto",
    decoder: IsolatedReader | None = None,
) -> None:
    todo: queue.Queue = queue.Queue()
    for it in items:
        todo.put(it)
    loaded_q: queue.Queue = queue.Queue(maxsize=max(2, workers))
    write_q: queue.Queue = queue.Queue(maxsize=max(2, workers))
    stop = threading.Event()
    left = [workers]
    lock = threading.Lock()

    def reader() -> None:
        try:
            while not stop.is_set():
                try:
                    it = todo.get_nowait()
                except queue.Empty:
                    break
                res = read_item(it, expects.get(it.key), decoder, upscaler.scale)
                if isinstance(res, ItemResult):
                    recorder.record(res)
                elif not _put(loaded_q, res, stop):
                    break
        finally:
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                _put(loaded_q, _SENTINEL, stop)

    def writer() -> None:
        while True:
            try:
                msg = write_q.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            if msg is _SENTINEL:
                return
            recorder.record(write_item(msg))

    readers = [
        threading.Thread(target=reader, name=f"medsr-read-{i}", daemon=True) for i in range(workers)
    ]
    writers = [
        threading.Thread(target=writer, name=f"medsr-write-{i}", daemon=True)
        for i in range(workers)
    ]
    for t in (*readers, *writers):
        t.start()
    try:
        if cross_item:
            _model_stage_batched(loaded_q, write_q, upscaler, recorder, stop, consistency)
        else:
            _model_stage(loaded_q, write_q, upscaler, recorder, stop, consistency)
        for _ in writers:
            _put(write_q, _SENTINEL, stop)
        for t in (*readers, *writers):
            t.join()
    except BaseException:
        stop.set()
        for t in (*readers, *writers):
            t.join(timeout=5)
        raise


def _model_stage(loaded_q, write_q, upscaler, recorder, stop, consistency="off") -> None:
    while not stop.is_set():
        try:
            msg = loaded_q.get(timeout=0.1)
        except queue.Empty:
            continue
        if msg is _SENTINEL:
            return
        res = upscale_loaded(msg, upscaler, consistency)
        if isinstance(res, ItemResult):
            recorder.record(res)
        else:
            _put(write_q, res, stop)


def _model_stage_batched(loaded_q, write_q, upscaler, recorder, stop, consistency="off") -> None:
    """Planes of every queued item go through the model together, up to ``batch_size`` per pass;
    each finished output then gets the safeguards (consistency, provenance) of its own input."""
    pending: list[Any] = []
    eof = False
    limit = upscaler.batch_size

    def add(msg: Loaded) -> None:
        try:
            job = upscaler.prepare(msg.image, tag=(msg, time.perf_counter()))
        except Exception as exc:
            recorder.record(msg.failure(exc))
            return
        pending.append(job)

    while not stop.is_set():
        if not pending:
            if eof:
                return
            try:
                msg = loaded_q.get(timeout=0.1)
            except queue.Empty:
                continue
            if msg is _SENTINEL:
                eof = True
                continue
            add(msg)
        while not eof and sum(j.total - j.next for j in pending) < limit:
            try:
                msg = loaded_q.get_nowait()
            except queue.Empty:
                break
            if msg is _SENTINEL:
                eof = True
                break
            add(msg)
        if not pending:
            continue
        for job in upscaler.run_many(pending, limit):
            pending.remove(job)
            loaded, t_added = job.tag
            dt = time.perf_counter() - t_added
            if job.error is not None:
                recorder.record(loaded.failure(job.error, dt))
                continue
            try:
                safeguard(loaded, upscaler, consistency, output=upscaler.finish(job))
                dt = time.perf_counter() - t_added
            except Exception as exc:
                recorder.record(loaded.failure(exc, dt))
                continue
            loaded.seconds += dt
            loaded.timings["model"] = dt
            _put(write_q, loaded, stop)


# ================================================================================ progress
class _Progress:
    """Rich progress bar: items done, items/s, elapsed, ETA and the ok/failed/skipped counts."""

    def __init__(self, total: int, enabled: bool):
        self.total = total
        self.enabled = enabled
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}
        self._progress = None
        self._task = None
        self._lock = threading.Lock()

    def __enter__(self) -> _Progress:
        if not self.enabled:
            return self
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class Throughput(ProgressColumn):
            def render(self, task: Any) -> Text:
                speed = task.finished_speed or task.speed
                return Text("–– items/s" if speed is None else f"{speed:.2f} items/s", style="cyan")

        self._progress = Progress(
            TextColumn("[bold]batch"),
            BarColumn(),
            MofNCompleteColumn(),
            Throughput(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[counts]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self._progress.__enter__()
        self._task = self._progress.add_task("batch", total=self.total, counts=self._counts_text())
        return self

    def _counts_text(self) -> str:
        c = self.counts
        return f"ok {c['ok']} · failed {c['failed']} · skipped {c['skipped']}"

    def update(self, result: ItemResult) -> None:
        with self._lock:
            self.counts[result.status] = self.counts.get(result.status, 0) + 1
            if self._progress is not None:
                self._progress.update(self._task, advance=1, counts=self._counts_text())

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            with contextlib.suppress(Exception):
                self._progress.__exit__(*exc)
