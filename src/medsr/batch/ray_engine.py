"""Ray Data engine: the batch's per-item function on a Ray cluster (optional extra ``medsr[batch]``).

The items become a dataset (``ray.data.from_items``) and :func:`medsr.batch.stages.process_item`
runs in :class:`UpscaleActor` through ``Dataset.map_batches`` with an actor pool: **one model
actor per slot** (a GPU, or ``num_cpus`` CPUs), each loading the model once. Ray schedules,
retries and streams; medsr adds no scheduler, queue or RPC of its own. The driver only records
results (report and resume journal), so the state stays in one place.

Every node must see the input and output folders at the same paths (a shared file system) and
have medsr installed. ``address=None`` starts a private local Ray for the run
(``ray.init(num_cpus=..., include_dashboard=False)`` on 127.0.0.1) and stops it afterwards;
``address="auto"`` joins the cluster started with ``ray start``.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

from medsr.batch.discover import BatchItem
from medsr.batch.stages import DECODE_TIMEOUT_S
from medsr.batch.state import ItemResult, Recorder
from medsr.errors import InvalidParameterError, MedSRError

__all__ = ["UpscaleActor", "ray_available", "run_ray"]


def ray_available() -> bool:
    """Whether Ray Data can be imported (``pip install 'medsr[batch]'``)."""
    try:
        import ray
        import ray.data  # noqa: F401
    except Exception:
        return False
    return True


class UpscaleActor:
    """One model per actor; ``__call__`` processes a batch of items (``batch_size=1`` rows)."""

    def __init__(
        self,
        model: Any,
        scale: int,
        device: str,
        batch_size: int | None,
        threads: int | None,
        consistency: str = "auto",
        base: str | None = None,
        decode_timeout_s: float = DECODE_TIMEOUT_S,
        precision: str = "fp32",
    ):
        import torch

        from medsr.inference.memory import retain_freed_memory
        from medsr.inference.planes import PlaneUpscaler
        from medsr.inference.predictor import resolve_device
        from medsr.io.isolated import IsolatedReader

        retain_freed_memory()  # the actor's process is medsr's own, as the CLI's
        if threads:
            torch.set_num_threads(int(threads))
        dev = resolve_device(device)
        bs = batch_size or (32 if dev.type == "cuda" else None)  # None: PlaneUpscaler's CPU default
        self.upscaler = PlaneUpscaler(
            model, scale, device=str(dev), batch_size=bs, base=base, precision=precision
        )
        self.consistency = consistency
        self.reader = IsolatedReader(decode_timeout_s)  # inputs decoded under a time limit

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        from medsr.batch.stages import process_item

        out = []
        for payload in batch["payload"]:
            data = json.loads(str(payload))
            item = BatchItem.from_dict(data["item"])
            result = process_item(
                item, self.upscaler, data.get("expect"), self.consistency, self.reader
            )
            out.append(json.dumps(result.to_dict()))
        return {"result": np.array(out, dtype=object)}


def _init_ray(address: str | None, num_cpus: int) -> bool:
    """Connect to (or start) Ray; return True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    common = {
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": True,
        "logging_level": "ERROR",
    }
    if address:
        ray.init(address=address, **common)
    else:
        ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", **common)
    return True


def run_ray(
    items: list[BatchItem],
    expects: dict[str, dict[str, Any] | None],
    recorder: Recorder,
    *,
    model: Any,
    scale: int,
    device: str = "auto",
    actors: int | None = None,
    address: str | None = None,
    batch_size: int | None = None,
    num_cpus: float | None = None,
    consistency: str = "auto",
    base: str | None = None,
    decode_timeout_s: float = DECODE_TIMEOUT_S,
    precision: str = "fp32",
) -> None:
    """Process ``items`` on Ray, recording each result on the driver as it streams back.

    Every actor builds its upscaler with ``precision`` (``fp16``: only on GPU actors)."""
    if not ray_available():
        raise MedSRError(
            "the Ray engine needs Ray Data: pip install 'medsr[batch]' (or 'ray[data]'), "
            "or use --engine local"
        )
    import ray
    import ray.data

    if not items:
        return
    if model is not None and os.path.isfile(str(model)):
        model = os.path.abspath(str(model))  # actors may run in another working directory
    cpus_per_actor = float(num_cpus or 1)
    local_cpus = os.cpu_count() or 1
    started = _init_ray(address, local_cpus if not actors else max(int(actors * cpus_per_actor), 1))
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        device = device.strip().lower()
        use_gpu = device.startswith("cuda") or (device == "auto" and gpus > 0)
        if device.startswith("cuda") and gpus == 0:
            raise InvalidParameterError(
                "--device cuda was requested but the Ray cluster has no GPU"
            )
        if precision == "fp16" and not use_gpu:
            raise InvalidParameterError(
                "precision fp16 runs on a CUDA GPU only and the Ray actors run on CPUs; "
                "use bf16 or fp32"
            )
        if actors:
            n = int(actors)
        elif use_gpu:
            n = gpus
        else:
            n = max(1, int(resources.get("CPU", 1) // cpus_per_actor))
        n = max(1, min(n, len(items)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # raised inside Ray Data itself
            ctx = ray.data.DataContext.get_current()
        with _quiet_ray_data(ctx), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            rows = [
                {"payload": json.dumps({"item": it.to_dict(), "expect": expects.get(it.key)})}
                for it in items
            ]
            ds = ray.data.from_items(rows, override_num_blocks=len(rows))
            ds = ds.map_batches(
                UpscaleActor,
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=n),
                fn_constructor_kwargs={
                    "model": str(model) if model is not None else None,
                    "scale": scale,
                    "device": "cuda" if use_gpu else "cpu",
                    "batch_size": batch_size,
                    "threads": max(1, int(cpus_per_actor)),
                    "consistency": consistency,
                    "base": base,
                    "decode_timeout_s": decode_timeout_s,
                    "precision": precision,
                },
                num_cpus=cpus_per_actor,
                num_gpus=1 if use_gpu else 0,
                # an actor that dies (the machine's memory, a killed process) stops the run with
                # the resume advice below, instead of being restarted with its task retried for
                # ever (Ray Data's default, -1: a hang on an item that kills its actor each time;
                # and each actor's start printed Ray's core_worker.cc error about restarts with
                # arguments in the object store, ray-project/ray#57733, on every successful run)
                max_restarts=0,
            )
            by_key = {it.key: it for it in items}
            try:
                for row in ds.iter_rows():
                    result = ItemResult.from_dict(json.loads(row["result"]))
                    if result.key in by_key:
                        recorder.record(result)
            except MedSRError:
                raise
            except Exception as exc:  # an actor could not start, the cluster went away...
                from medsr.batch.stages import error_text

                raise MedSRError(
                    f"the Ray engine stopped ({error_text(exc)}); finished items are kept: "
                    "rerun the same command to resume"
                ) from exc
    finally:
        if started:
            ray.shutdown()


class _quiet_ray_data:
    """Silence Ray Data's own progress output during a run (the batch has its own bar)."""

    def __init__(self, ctx: Any):
        self.ctx = ctx
        self.saved: dict[str, Any] = {}

    def __enter__(self) -> None:
        import logging

        self._level = logging.getLogger("ray.data").level
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        for name, value in (("enable_progress_bars", False), ("print_on_execution_start", False)):
            if hasattr(self.ctx, name):
                self.saved[name] = getattr(self.ctx, name)
                setattr(self.ctx, name, value)

    def __exit__(self, *exc: Any) -> None:
        import logging

        for name, value in self.saved.items():
            setattr(self.ctx, name, value)
        logging.getLogger("ray.data").setLevel(self._level)
