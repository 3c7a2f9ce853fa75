"""Train from a recipe and export the result as safetensors with its model card.

Python::

    from medsr.training import train, export
    result = train("configs/edsr-x2.yaml", max_time="02:00:00")
    export(result.best_checkpoint, "edsr-x2.safetensors")

Command line (``medsr train CONFIG [--max-time HH:MM:SS] [--resume CKPT] [--devices N]`` and
``medsr export CKPT OUT``) calls these two functions.

Outputs in ``out_dir`` (default ``trainer.out_dir`` or ``runs/<config name>``):
``checkpoints/last.ckpt`` and ``checkpoints/best-*.ckpt`` (highest ``val/psnr``),
``tb/version_N/`` (TensorBoard: ``tensorboard --logdir runs/``), ``config.yaml`` (the resolved
recipe) and, for distillation, ``distill_report.json``. A resume continues in the run folder
that holds its checkpoint (``--out-dir`` chooses another), so a copied run folder continues in
itself and its best-checkpoint record follows it.

Multi-GPU and multi-node (Lightning DDP; each process draws its own patches, see
:mod:`medsr.training.data`; validation runs on the whole validation set in every process)::

    # one machine, 4 GPUs: Lightning starts the 4 processes itself
    medsr train configs/edsr-x2.yaml --devices 4

    # the same under torchrun (one process per GPU; --devices must equal --nproc_per_node)
    torchrun --nproc_per_node=4 "$(command -v medsr)" train configs/edsr-x2.yaml --devices 4

    # two nodes x 4 GPUs: set `trainer.num_nodes: 2` in the recipe, then run on every node
    torchrun --nnodes=2 --nproc_per_node=4 --node_rank=$NODE_RANK \\
        --master_addr=$MASTER_ADDR --master_port=29500 \\
        "$(command -v medsr)" train configs/edsr-x2.yaml --devices 4

    # from Python, inside a torchrun-launched script: train("configs/edsr-x2.yaml", devices=4)

Lightning reads the torchrun environment (``MASTER_ADDR``, ``WORLD_SIZE``, ``LOCAL_RANK``...).
``data.batch_size`` is per process and ``data.patches_per_epoch`` is split across processes, so
an epoch covers the same number of patches whatever the number of GPUs. Checkpoints and
TensorBoard logs are written by rank 0 only; ``out_dir`` must be on a shared file system for
multi-node resume.

Safety: Lightning checkpoints are pickles. ``resume`` and :func:`export` only accept
checkpoints written by this code (they carry a ``"medsr"`` entry) and load them with
``torch.load(weights_only=True)``, which refuses arbitrary objects. Inference never loads a
checkpoint: export to safetensors first.
"""

from __future__ import annotations

import datetime
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsr.errors import InvalidParameterError
from medsr.training.config import (
    Config,
    load_config,
    parse_devices,
    parse_max_time,
    recipe_changes,
)

__all__ = ["TrainResult", "TrainingInterrupted", "build_card", "export", "train"]


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    out_dir: Path
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    global_step: int
    epochs: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    report: Path | None = None
    task: Any = None  # the LightningModule (for programmatic use and tests)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`train`: ``checkpoint`` holds the state to continue from (``train(...,
    resume=checkpoint)``), or is ``None`` when nothing was saved yet."""

    def __init__(self, global_step: int, checkpoint: Path | None) -> None:
        self.global_step = int(global_step)
        self.checkpoint = checkpoint
        where = (
            f"the state is in {checkpoint}: continue with --resume {checkpoint}"
            if checkpoint is not None
            else "no checkpoint was written yet"
        )
        super().__init__(f"training interrupted at step {self.global_step}; {where}")


def _checkpoint_on_interrupt(path: Path) -> Any:
    """A callback that writes the state at Ctrl-C to ``path`` (``last.ckpt``), so ``--resume``
    continues from that step rather than from the last epoch's end. One process only: in a
    multi-process run the other ranks may not have stopped, and saving waits for them all."""
    from lightning.pytorch.callbacks import Callback

    class CheckpointOnInterrupt(Callback):
        saved: Path | None = None

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            if isinstance(exception, KeyboardInterrupt) and trainer.world_size == 1:
                trainer.save_checkpoint(path, weights_only=False)
                self.saved = path

    return CheckpointOnInterrupt()


def _same_folder(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _run_folder(out_dir: str | os.PathLike[str] | None, resume: Path | None, cfg: Config) -> Path:
    """Where a run writes: ``out_dir`` when given; for a resume, the run folder that holds the
    checkpoint (``<run>/checkpoints/x.ckpt``), so a copied or moved run folder continues in
    itself (its config.yaml, which names the folder it was copied from, wrote into that one);
    else ``trainer.out_dir`` or ``runs/<name>``."""
    from medsr.errors import MedSRWarning

    named = Path(cfg.trainer.out_dir or Path("runs") / cfg.name)
    if out_dir is not None:
        return Path(out_dir)
    if resume is None or resume.parent.name != "checkpoints":
        return named
    own = resume.parent.parent
    if cfg.trainer.out_dir and not _same_folder(named, own):
        warnings.warn(
            f"'{resume.name}' resumes in its own run folder {own}, not in trainer.out_dir "
            f"{named} (--out-dir chooses another folder)",
            MedSRWarning,
            stacklevel=3,
        )
    return own


def _run_checkpoint(**kwargs: Any) -> Any:
    """Lightning's ``ModelCheckpoint`` (best by ``val/psnr`` + ``last.ckpt``) that keeps a resumed
    run's best-checkpoint record in this run's folder. Lightning's own, given a checkpoint
    written in another folder (a copied run folder, or ``--out-dir`` elsewhere), kept the old
    folder's ``best_model_path`` (the resumed run named the other folder's best checkpoint) and
    forgot its score (the first validation after the resume became the best whatever it was).
    Here the record follows the file names into this folder when the files are there (a
    copy), and is dropped, with a warning, when they are not."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from medsr.errors import MedSRWarning

    class RunCheckpoint(ModelCheckpoint):
        def _generate_state_key(self, **kw: Any) -> str:
            # the key Lightning's own ModelCheckpoint stores its state under, so checkpoints
            # written before and after this class resume alike
            return f"ModelCheckpoint{kw!r}"

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            saved = state_dict.get("dirpath")
            if saved is None or self.dirpath is None or _same_folder(saved, self.dirpath):
                super().load_state_dict(state_dict)
                return
            here = Path(self.dirpath)

            def moved(path: Any) -> str | None:
                name = Path(str(path)).name if path else ""
                return str(here / name) if name and (here / name).is_file() else None

            best = moved(state_dict.get("best_model_path"))
            kept = {
                m: v for k, v in (state_dict.get("best_k_models") or {}).items() if (m := moved(k))
            }
            state: dict[str, Any] = {
                "dirpath": self.dirpath,
                "best_model_path": best or "",
                "best_model_score": state_dict.get("best_model_score") if best else None,
                "best_k_models": kept,
                "last_model_path": moved(state_dict.get("last_model_path")) or "",
            }
            kth = moved(state_dict.get("kth_best_model_path"))
            if kth is not None:
                state["kth_best_model_path"] = kth
                state["kth_value"] = state_dict.get("kth_value", self.kth_value)
            super().load_state_dict(state)
            old = state_dict.get("best_model_path")
            if old and best is None:
                score = state_dict.get("best_model_score")
                at = f" ({self.monitor} {float(score):.3f})" if score is not None else ""
                warnings.warn(
                    f"the best checkpoint of the run this one continues, {old}{at}, is not in "
                    f"{here}: best-*.ckpt here is the best validation since this resume",
                    MedSRWarning,
                    stacklevel=1,  # Lightning's call site would format it as its own
                )

    return RunCheckpoint(**kwargs)


def _warn_schedule_kept(saved: dict[str, Any], cfg: Config, name: str) -> None:
    """A resumed run keeps its learning-rate curve (:class:`medsr.training.tasks.WarmupSchedule`
    is restored from the checkpoint): a cosine schedule whose length came from the run's
    ``max_epochs``/``max_steps`` keeps that length when they change, so the steps past it run at
    the final rate — said, since "train 40 epochs more" reads as more learning."""
    from medsr.errors import MedSRWarning

    if cfg.optim.schedule != "cosine" or cfg.optim.total_steps is not None:
        return
    changed = recipe_changes(saved, cfg, keys=("trainer.max_epochs", "trainer.max_steps"))
    if changed:
        warnings.warn(
            f"'{name}' resumes its cosine learning-rate schedule as it was ({'; '.join(changed)}): "
            "the schedule keeps the length the run started with, so the steps past it run at "
            f"its final rate ({cfg.optim.min_lr_ratio:g} × optim.lr); for a schedule over the new "
            "length start a new run from its weights with model.init",
            MedSRWarning,
            stacklevel=3,
        )


def _progress_bar(kind: str) -> list[Any]:
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

    if kind == "rich":
        try:
            import rich  # noqa: F401

            return [RichProgressBar()]
        except ImportError:
            return [TQDMProgressBar()]
    if kind == "tqdm":
        return [TQDMProgressBar()]
    return []


def train(
    config: str | os.PathLike[str] | Config,
    *,
    max_time: str | None = None,
    resume: str | os.PathLike[str] | None = None,
    devices: int | str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
) -> TrainResult:
    """Train the recipe ``config`` (a YAML path or :class:`Config`) and return where things are.

    Args:
        config: recipe (see :mod:`medsr.training.config`).
        max_time: wall-clock limit ``"HH:MM:SS"`` (or ``"DD:HH:MM:SS"``); overrides the recipe.
            Training stops cleanly and ``last.ckpt`` is written.
        resume: a ``last.ckpt``/``best-*.ckpt`` written by medsr training: continues from its
            global step, optimiser, scheduler, EMA and loop state. ``max_steps``/``max_epochs``
            are totals, so resuming a finished run needs a larger limit.
        devices: overrides ``trainer.devices`` (``"auto"``, a count, or ``"0,1"``).
        out_dir: run folder; overrides ``trainer.out_dir`` (default ``runs/<name>``). A resume
            without it continues in the run folder that holds ``resume``
            (``<run>/checkpoints/last.ckpt``), so a copied run folder continues in itself.
    """
    # the recipe and options are checked before Lightning and torch are imported (seconds)
    cfg = load_config(config)
    tcfg = cfg.trainer
    limit_time = parse_max_time(max_time if max_time is not None else tcfg.max_time, "max_time")
    n_devices = parse_devices(devices if devices is not None else tcfg.devices, "devices")

    import lightning as L
    import torch
    import yaml
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.utilities import rank_zero_only

    from medsr.training.factory import build_datamodule, build_task
    from medsr.training.tasks import load_medsr_checkpoint

    resume_path = None
    if resume is not None:
        resume_path = Path(resume)
        info = load_medsr_checkpoint(resume_path)["medsr"]
        if info.get("architecture") != (cfg.model.name or info.get("architecture")):
            raise InvalidParameterError(
                f"'{resume_path.name}' holds a {info.get('architecture')!r} network, the config asks "
                f"for {cfg.model.name!r}"
            )
        # another recipe would silently keep the checkpoint's optimiser (a new optim.lr is never
        # used), train a ×2 network as ×4, or fail on tensors of other shapes
        saved = info.get("config")
        changes = recipe_changes(saved, cfg) if isinstance(saved, dict) else []
        if changes:
            more = f"; and {len(changes) - 4} more" if len(changes) > 4 else ""
            raise InvalidParameterError(
                f"'{resume_path.name}' was trained with another recipe ({'; '.join(changes[:4])}"
                f"{more}): resume with the recipe it was trained with (its run folder's "
                "config.yaml), changing only how long and where it runs (trainer.max_epochs, "
                "max_steps, max_time, devices...), or start a new run from its weights with "
                "model.init"
            )
        if isinstance(saved, dict):
            _warn_schedule_kept(saved, cfg, resume_path.name)
    out = _run_folder(out_dir, resume_path, cfg)
    if rank_zero_only.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        recipe = cfg.to_dict()
        if recipe["trainer"].get("out_dir") is not None:  # the folder it is in, not a copy's
            recipe["trainer"]["out_dir"] = str(out)
        (out / "config.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")

    L.seed_everything(tcfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)  # SRDataModule; SliceDataModule for task slice-interpolation
    dm.setup("fit")
    task = build_task(cfg)

    ckpt_dir = out / "checkpoints"
    has_val = dm.has_validation
    checkpoint = _run_checkpoint(
        dirpath=ckpt_dir,
        filename="best-{epoch:03d}-{step:07d}",
        monitor="val/psnr" if has_val else None,
        mode="max",
        save_top_k=1,
        save_last=True,
        auto_insert_metric_name=False,
    )
    last = ckpt_dir / "last.ckpt"
    on_interrupt = _checkpoint_on_interrupt(last)
    callbacks: list[Any] = [
        checkpoint,
        LearningRateMonitor(logging_interval="step"),
        on_interrupt,
    ]
    callbacks += _progress_bar(tcfg.progress_bar)
    logger = TensorBoardLogger(save_dir=str(out), name="tb", default_hp_metric=False)
    manual = not task.automatic_optimization
    trainer = L.Trainer(
        default_root_dir=str(out),
        max_epochs=tcfg.max_epochs,
        max_steps=tcfg.max_steps,
        max_time=limit_time,
        precision=tcfg.precision,
        gradient_clip_val=None if manual else tcfg.gradient_clip_val,
        accelerator=tcfg.accelerator,
        devices=n_devices,
        num_nodes=tcfg.num_nodes,
        strategy=tcfg.strategy,
        log_every_n_steps=tcfg.log_every_n_steps,
        check_val_every_n_epoch=tcfg.check_val_every_n_epoch,
        limit_val_batches=None if has_val else 0,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        logger=logger,
        enable_progress_bar=tcfg.progress_bar != "none",
        enable_model_summary=tcfg.progress_bar != "none",
        use_distributed_sampler=False,  # the patch sampler is rank-aware (data.py)
    )
    t0 = time.perf_counter()
    main_thread = threading.current_thread() is threading.main_thread()
    sigint = signal.getsignal(signal.SIGINT) if main_thread else None
    try:
        with warnings.catch_warnings():
            # a distillation teacher is frozen in eval mode on purpose
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
            trainer.fit(
                task,
                datamodule=dm,
                ckpt_path=str(resume_path) if resume_path else None,
                weights_only=True,
            )
    except SystemExit:
        # Lightning answers Ctrl-C with sys.exit(1): a caller (the CLI, a notebook) gets a
        # KeyboardInterrupt that says where the state is instead
        if not trainer.interrupted:
            raise
        saved = on_interrupt.saved or (last if last.is_file() else None)
        raise TrainingInterrupted(trainer.global_step, saved) from None
    finally:
        if main_thread and sigint is not None:  # Lightning leaves Ctrl-C ignored after one
            signal.signal(signal.SIGINT, sigint)
    seconds = time.perf_counter() - t0
    # the final state, whatever stopped training (max_steps mid-epoch, max_time...)
    trainer.save_checkpoint(last, weights_only=False)
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    metrics = {
        k: float(v)
        for k, v in trainer.callback_metrics.items()
        if torch.is_tensor(v) and v.numel() == 1
    }
    return TrainResult(
        out_dir=out,
        last_checkpoint=last if last.is_file() else None,
        best_checkpoint=best
        if best is not None and best.is_file()
        else (last if last.is_file() else None),
        global_step=int(trainer.global_step),
        epochs=int(trainer.current_epoch),
        seconds=seconds,
        metrics=metrics,
        report=getattr(task, "report_path", None),
        task=task,
    )


def note_baseline(metrics: dict[str, Any], base: str) -> dict[str, Any]:
    """A card's ``metrics`` saying which baseline validation measured the gain over: a model
    behind a low-band guard on another base than bicubic (zero-filled k-space) is validated over
    that base, and its ``*_bicubic`` entries hold that baseline's scores. Idempotent."""
    if base == "bicubic" or metrics.get("baseline") == base:
        return metrics
    note = f"; *_bicubic hold the {base} baseline's scores"
    return {**metrics, "baseline": base, "units": str(metrics.get("units", "")) + note}


def build_card(
    info: dict[str, Any],
    *,
    global_step: int,
    epoch: int,
    weights: str,
    files: list[dict[str, Any]] | None = None,
    files_note: str | None = None,
) -> dict[str, Any]:
    """The safetensors model card from a checkpoint's ``"medsr"`` entry, completed by
    :func:`medsr.training.card.complete_card` (recipe with paths reduced to names, data files
    with sha256, software, summary, intended use, limitations). ``files``: the
    ``training_data.files`` to record when the checkpoint has none (hashed at export)."""
    from medsr._version import __version__
    from medsr.training.card import complete_card

    m = info.get("metrics") or {}
    data = info.get("data") or {}
    card: dict[str, Any] = {
        "name": info.get("name"),
        "kind": "super-resolution",
        "task": info.get("task"),
        "architecture": info["architecture"],
        "kwargs": info["kwargs"],
        "scale": int(info["scale"]),
        "in_channels": int(info["kwargs"].get("in_channels", 1)),
        "normalization": info.get("normalization") or {"kind": "minmax"},
        "degradation": info.get("degradation"),
        "training_data": {
            "train_files": list(data.get("train_files", [])),
            "val_files": list(data.get("val_files", [])),
            "files": list(data.get("files") or files or []),
            "modalities": list(data.get("modalities", [])),
            "patch_size": data.get("patch_size"),
            "training_stats": data.get("training_stats") or {},
        },
        "metrics": {
            "val_psnr": m.get("psnr"),
            "val_ssim": m.get("ssim"),
            "val_psnr_bicubic": m.get("psnr_bicubic"),
            "val_ssim_bicubic": m.get("ssim_bicubic"),
            "val_psnr_gain": m.get("psnr_gain"),
            "units": "normalised intensities, data_range=1, border crop=scale, per-slice mean",
        },
        "weights": weights,
        "version": __version__,
        "date": datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat(),
        "steps": int(global_step),
        "epochs": int(epoch),
    }
    for extra in ("gan", "distill", "init", "low_band", "data_consistency"):
        if info.get(extra):
            card[extra] = info[extra]
    card["metrics"] = note_baseline(
        card["metrics"], (info.get("low_band") or {}).get("base", "bicubic")
    )
    # task-specific card entries (slice interpolation: kind, in_channels, metrics, slices)
    card.update(info.get("card") or {})
    return complete_card(card, info, files_note=None if data.get("files") else files_note)


def export(
    ckpt_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    use_ema: bool = True,
    overwrite: bool = True,
) -> Path:
    """Write the network of a medsr training checkpoint to ``out_path`` (``.safetensors``).

    The EMA weights are exported when the run kept them (``use_ema=False`` takes the raw
    weights). The model card (safetensors metadata) holds architecture, kwargs, scale,
    normalization, degradation, training file names, validation metrics (with the bicubic
    baseline), medsr version, date and step count, and ``low_band: {base, cutoff}`` when the
    network was trained through the low-band guard (``model.low_band``; the weights are the bare
    network's, inference applies the guard); ``medsr.models.weights.load_model`` and
    ``medsr.upscale(image, model=out_path)`` use it.
    """
    from medsr.io._atomic import check_output
    from medsr.training.checkpoint import check_checkpoint_file

    out = Path(out_path)
    if out.suffix != ".safetensors":
        raise InvalidParameterError(f"export writes a .safetensors file, got '{out.name}'")
    check_output(out, overwrite, "file")  # before any work, as every command's output
    # a folder, a missing file, a file that is no checkpoint: refused at once, before the
    # imports of torch and Lightning (seconds) that reading a checkpoint needs
    check_checkpoint_file(ckpt_path)
    from medsr.models.registry import create_model
    from medsr.models.weights import save_model
    from medsr.training.tasks import checkpoint_network_state, load_medsr_checkpoint

    ckpt = load_medsr_checkpoint(ckpt_path)
    info = ckpt["medsr"]
    files, files_note = _files_hashed_at_export(info)
    state, weights = checkpoint_network_state(ckpt, use_ema=use_ema)
    model = create_model(info["architecture"], **info["kwargs"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InvalidParameterError(
            f"the checkpoint's weights do not fit {info['architecture']!r} "
            f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)"
        )
    card = build_card(
        info,
        global_step=int(ckpt.get("global_step", 0)),
        epoch=int(ckpt.get("epoch", 0)),
        weights=weights,
        files=files,
        files_note=files_note,
    )
    if "software" not in card and ckpt.get("pytorch-lightning_version"):
        card["software"] = {"lightning": str(ckpt["pytorch-lightning_version"])}
    return save_model(model, out, card, overwrite=overwrite)


def _files_hashed_at_export(info: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, str | None]:
    """``training_data.files`` for a checkpoint written before training recorded them: the
    sha256 of each of its recipe's files found now (corpus names and absolute paths only: a
    relative path may name another file from here), ``None`` for the others."""
    from medsr.errors import MedSRError
    from medsr.training.config import FileEntry
    from medsr.training.data import resolve_entries, source_sha256

    data = info.get("data") or {}
    names = {"train": list(data.get("train_files") or []), "val": list(data.get("val_files") or [])}
    if data.get("files") or not (names["train"] or names["val"]):
        return None, None
    recipe = (info.get("config") or {}).get("data") or {}
    found: dict[str, str] = {}
    for entry in [*(recipe.get("files") or []), *(recipe.get("val_files") or [])]:
        path = str(entry.get("path", "")) if isinstance(entry, dict) else str(entry)
        if not (path.startswith("corpus:") or Path(path).expanduser().is_absolute()):
            continue
        try:
            for src in resolve_entries([FileEntry(path=path)]):
                found.setdefault(src.name, source_sha256(src.path))
        except (MedSRError, OSError):
            continue
    files = [
        {"name": name, "split": split, "sha256": found.get(name)}
        for split, listed in names.items()
        for name in dict.fromkeys(listed)
    ]
    note = (
        "sha256 computed at export from the files found then (this checkpoint predates medsr "
        "recording them at training; a file changed since training hashes differently); "
        "null: not found"
    )
    return files, note
