"""LightningModules: supervised SR, adversarial (SRGAN-style) fine-tuning, slice interpolation.

(:class:`SliceInterpolationTask`, ``task: slice-interpolation``, is described in its own
docstring; it shares the network/EMA/checkpoint machinery below and trains on triplets from
:class:`~medsr.training.slices.SliceDataModule`.)

Both take a validated :class:`~medsr.training.config.Config` (or its ``to_dict()``) and keep
the network that is exported in ``self.model`` (the generator). Batches come from
:class:`~medsr.training.data.SRDataModule`: ``{"lr", "hr", "group"}`` for training (LR made on
the device) and whole validation slices with their bicubic baseline scores.

Logged: ``train/loss`` (+ each active term), ``val/psnr``, ``val/ssim``, ``val/psnr_bicubic``,
``val/ssim_bicubic``, ``val/psnr_gain`` (SR − bicubic, dB, per slice then averaged) — all in
normalised units with ``data_range = 1`` and a border crop of ``scale`` px; the learning rate
(``LearningRateMonitor``) and, every ``trainer.image_log_every_n_epochs`` epochs, a TensorBoard
image ``val/lr_sr_hr`` (LR nearest-upsampled | SR | HR of the first validation slice).

Low-band guard (``model.low_band: {base, cutoff}``): every forward pass that the loss and the
validation see is :class:`medsr.models.lowband.LowBandGuard` ``(net, base, scale, cutoff)`` —
the network's output with its low band replaced by the base interpolator's — while
``self.model`` (and its EMA copy) stay the bare network: checkpoints and exported safetensors
hold the bare weights, and the card records ``low_band`` so inference applies the same guard.

EMA (``trainer.ema_decay``): an exponential moving average of the weights
(``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``, buffers included) is
updated after every optimiser step; validation and export use it.

Checkpoints carry, besides Lightning's state, a ``"medsr"`` entry (plain JSON types: the model
card draft — architecture, kwargs, scale, normalization, degradation, data file names, the
latest validation metrics, the config) so :func:`medsr.training.run.export` needs nothing else.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from medsr.errors import InvalidParameterError
from medsr.training.card import hardware_text, software_versions
from medsr.training.config import Config, OptimConfig, config_from_dict
from medsr.training.data import sr_metrics
from medsr.training.losses import (
    PixelCriterion,
    discriminator_loss,
    feature_loss,
    generator_adversarial_loss,
    tv_loss,
)

__all__ = [
    "SRGANTask",
    "SRTask",
    "SliceInterpolationTask",
    "SupervisedSR",
    "ThroughPlaneSR",
    "WarmupSchedule",
    "build_network",
    "constructor_params",
    "load_generator_state",
    "network_kwargs",
]


# --------------------------------------------------------------------------- networks
def constructor_params(cls: Any) -> Mapping[str, inspect.Parameter]:
    """The parameters of ``cls``'s constructor (empty when its signature cannot be read)."""
    try:
        return inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return {}


def _accepts(cls: Any, name: str) -> bool:
    params = constructor_params(cls)
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def network_kwargs(name: str, kwargs: dict[str, Any], scale: int | None) -> dict[str, Any]:
    """Full constructor kwargs: the config's plus ``scale`` and ``in_channels=1`` when accepted."""
    from medsr.models.registry import get_model_class

    cls = get_model_class(name)
    out = dict(kwargs)
    if scale is not None:
        out["scale"] = int(scale)
    if "in_channels" not in out and _accepts(cls, "in_channels"):
        out["in_channels"] = 1
    return out


def build_network(
    name: str, kwargs: dict[str, Any], scale: int | None
) -> tuple[nn.Module, dict[str, Any]]:
    """``create_model(name, **full_kwargs)`` and the kwargs used (recorded in the card)."""
    from medsr.models.registry import create_model

    full = network_kwargs(name, kwargs, scale)
    try:
        net = create_model(name, **full)
    except TypeError as exc:
        raise InvalidParameterError(f"bad kwargs for model {name!r}: {exc}") from None
    if not isinstance(net, nn.Module) or not any(True for _ in net.parameters()):
        raise InvalidParameterError(
            f"model {name!r} has no trainable parameters (a classical interpolator?)"
        )
    return net, full


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def checkpoint_network_state(
    ckpt: dict[str, Any], *, use_ema: bool = True
) -> tuple[dict[str, torch.Tensor], str]:
    """The exported network's weights in a medsr Lightning checkpoint (EMA when present)."""
    state = ckpt.get("state_dict") or {}
    if use_ema:
        ema = _strip_prefix(state, "ema.module.")
        if ema:
            return ema, "ema"
    net = _strip_prefix(state, "model.")
    if not net:
        raise InvalidParameterError("the checkpoint holds no network weights under 'model.'")
    return net, "raw"


def load_medsr_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint written by medsr training, with ``weights_only=True``.

    Lightning checkpoints are pickles: only checkpoints this code wrote are accepted (they must
    carry the ``"medsr"`` entry), and nothing but tensors and plain containers is unpickled.
    Inference never takes checkpoints — export them to safetensors first.
    """
    from medsr.training.checkpoint import check_checkpoint_file

    p = check_checkpoint_file(path)  # a folder, a missing file, not a torch archive
    try:
        ckpt = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InvalidParameterError(
            f"'{p.name}' is not a medsr training checkpoint (or it holds objects other than "
            f"tensors and plain values): {str(exc)[:200]}"
        ) from None
    if not isinstance(ckpt, dict) or "medsr" not in ckpt or "state_dict" not in ckpt:
        raise InvalidParameterError(
            f"'{p.name}' was not written by medsr training (no 'medsr' entry)"
        )
    return ckpt


def load_generator_state(
    path: str | Path, name: str, kwargs: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """Weights for a warm start / teacher: a ``.safetensors`` (card checked) or a medsr ``.ckpt``."""
    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        from medsr.models.weights import read_card

        card = read_card(p)
        if card.get("architecture") != name:
            raise InvalidParameterError(
                f"'{p.name}' holds a {card.get('architecture')!r} network, not {name!r}"
            )
        if any(card.get("kwargs", {}).get(k) != v for k, v in kwargs.items()):
            raise InvalidParameterError(
                f"'{p.name}' was built with {card.get('kwargs')}, which differs from {kwargs}"
            )
        return load_file(str(p))
    ckpt = load_medsr_checkpoint(p)
    info = ckpt["medsr"]
    if info.get("architecture") != name:
        raise InvalidParameterError(
            f"'{p.name}' holds a {info.get('architecture')!r} network, not {name!r}"
        )
    state, _ = checkpoint_network_state(ckpt)
    return state


def _kwargs_mismatch(name: str, card: dict[str, Any], kwargs: dict[str, Any]) -> list[str]:
    """``"key: <here> here, <card's> in the init"`` for each constructor argument (``scale``
    aside) that the init file's card sets to another value than ``kwargs`` (or, where ``kwargs``
    leaves it out, the constructor's default)."""
    from medsr.models.registry import get_model_class

    params = constructor_params(get_model_class(name))
    out = []
    for key, theirs in sorted(card.items()):
        if key == "scale":
            continue
        if key in kwargs:
            ours = kwargs[key]
        elif key in params and params[key].default is not inspect.Parameter.empty:
            ours = params[key].default
        else:
            continue
        if ours != theirs:
            out.append(f"{key}: {ours!r} here, {theirs!r} in the init")
    return out


def init_from(
    net: nn.Module, path: str | Path, name: str, kwargs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Load every tensor of ``path`` whose name and shape match ``net`` (``model.init``).

    Returns ``{"from", "loaded", "skipped"}``; refuses a different architecture, a file that
    fits less than half of the network's tensors (then it is not a warm start of this network)
    and, given the network's ``kwargs``, an init whose card built the network with other
    arguments (``scale`` aside): a shape-free argument such as RLFN's ``esa_spread`` would
    otherwise load every tensor into a network that computes something else.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidParameterError(f"model.init '{p}' does not exist")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        from medsr.models.weights import read_card

        card = read_card(p)
        state = load_file(str(p))
    else:
        ckpt = load_medsr_checkpoint(p)
        card = ckpt["medsr"]
        state, _ = checkpoint_network_state(ckpt)
    arch = card.get("architecture")
    if arch != name:
        raise InvalidParameterError(f"model.init '{p.name}' holds a {arch!r} network, not {name!r}")
    differ = _kwargs_mismatch(name, card.get("kwargs") or {}, kwargs) if kwargs is not None else []
    if differ:
        raise InvalidParameterError(
            f"model.init '{p.name}' was built with other model.kwargs ({'; '.join(differ)}): "
            "set them in model.kwargs as the init has them"
        )
    own = net.state_dict()
    fits = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if len(fits) * 2 < len(own):
        raise InvalidParameterError(
            f"model.init '{p.name}' fits only {len(fits)} of the network's {len(own)} tensors: "
            "check model.kwargs"
        )
    net.load_state_dict(fits, strict=False)
    skipped = sorted(set(own) - set(fits))
    return {"from": p.name, "loaded": len(fits), "skipped": skipped}


# --------------------------------------------------------------------------- optimisation
class WarmupSchedule:
    """LR multiplier per optimiser step: linear warm-up, then cosine / step / constant.

    A plain callable object (not a lambda), so ``LambdaLR.state_dict`` stores its numbers and
    resumed runs continue the same curve.
    """

    def __init__(self, cfg: OptimConfig, total_steps: float) -> None:
        self.kind = cfg.schedule
        self.warmup = int(cfg.warmup_steps)
        self.min_ratio = float(cfg.min_lr_ratio)
        self.step_size = int(cfg.step_size)
        self.gamma = float(cfg.gamma)
        total = cfg.total_steps if cfg.total_steps is not None else total_steps
        self.total = int(total) if total is not None and math.isfinite(total) else -1

    def __call__(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        s = step - self.warmup
        if self.kind == "cosine" and self.total > 0:
            t = min(1.0, s / max(1, self.total - self.warmup))
            return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
        if self.kind == "step":
            return self.gamma ** (s // self.step_size)
        return 1.0


def make_optimizer(params: Any, cfg: OptimConfig, lr: float | None = None) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return cls(params, lr=lr or cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


# --------------------------------------------------------------------------- base task
class SRTask(L.LightningModule):
    """Shared machinery: network, EMA, validation with metrics and images, checkpoint card."""

    def __init__(self, config: Config | dict[str, Any]) -> None:
        super().__init__()
        cfg = config if isinstance(config, Config) else config_from_dict(config)
        self.cfg = cfg
        self.save_hyperparameters({"config": cfg.to_dict()})
        self.scale = int(cfg.scale)
        self.criterion = PixelCriterion.from_config(cfg.loss)
        self.data_info: dict[str, Any] = {}
        self.model_name, self.model, self.model_kwargs = self._build_model()
        self.low_band = cfg.model.low_band
        if self.low_band is not None:
            from medsr.models.registry import create_model

            try:
                base = create_model(self.low_band.base, scale=self.scale)
            except Exception as exc:
                raise InvalidParameterError(
                    f"model.low_band.base {self.low_band.base!r} is not an interpolator: {exc}"
                ) from None
            if any(True for _ in base.parameters()) or getattr(base, "learned", False):
                raise InvalidParameterError(
                    f"model.low_band.base must be a classical interpolator (bicubic, kspace...), "
                    f"got {self.low_band.base!r}"
                )
            # a submodule (it follows the device) without parameters: the state_dict is unchanged
            self.low_band_base = base
        self.ema: AveragedModel | None = None
        if cfg.trainer.ema_decay is not None:
            self.ema = AveragedModel(
                self.model,
                multi_avg_fn=get_ema_multi_avg_fn(cfg.trainer.ema_decay),
                use_buffers=True,
            )
            for p in self.ema.parameters():
                p.requires_grad_(False)
        self._shape_checked = False

    # ---------------------------------------------------------------- networks
    def _build_model(self) -> tuple[str, nn.Module, dict[str, Any]]:
        m = self.cfg.model
        net, full = build_network(m.name, m.kwargs, self.scale)
        if m.init:
            self.init_report = init_from(net, m.init, m.name, full)
        return m.name, net, full

    def eval_model(self) -> nn.Module:
        """The network validation and export use (the EMA copy when enabled)."""
        return self.ema.module if self.ema is not None else self.model

    def guarded(self, net: nn.Module) -> nn.Module:
        """``net`` behind the low-band guard (``model.low_band``) and the data-consistency step
        (``model.data_consistency``), or ``net`` itself when both are off.

        The guard is built per call and not registered, so the network's weights are never
        duplicated in the state_dict.
        """
        from medsr.models.lowband import KSpaceConsistencyGuard, LowBandGuard

        if self.low_band is not None:
            net = LowBandGuard(net, self.low_band_base, self.scale, self.low_band.cutoff)
        if self.cfg.model.data_consistency == "kspace":
            net = KSpaceConsistencyGuard(net, self.scale)
        return net

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.guarded(self.eval_model())(lr)

    def _check_shape(self, sr: torch.Tensor, hr: torch.Tensor, lr: torch.Tensor) -> None:
        if not self._shape_checked:
            if sr.shape != hr.shape:
                raise InvalidParameterError(
                    f"model {self.model_name!r} turned an LR batch of shape {tuple(lr.shape)} into "
                    f"{tuple(sr.shape)}; ×{self.scale} needs {tuple(hr.shape)}"
                )
            self._shape_checked = True

    # ---------------------------------------------------------------- hooks
    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "describe"):
            self.data_info = dm.describe()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def total_steps(self) -> float | None:
        """Optimiser steps the run will take (``inf`` if unbounded, ``None`` without a Trainer)."""
        if self._trainer is None:
            return None
        return float(self.trainer.estimated_stepping_batches)

    def _scheduler(self, opt: torch.optim.Optimizer) -> dict[str, Any]:
        total = self.total_steps()
        cfg = self.cfg.optim
        if (
            cfg.schedule == "cosine"
            and cfg.total_steps is None
            and total is not None
            and not math.isfinite(total)
        ):
            warnings.warn(
                "optim.schedule is cosine but the run length is unknown (max_time only): set "
                "optim.total_steps; using a constant learning rate after warm-up",
                stacklevel=2,
            )
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, WarmupSchedule(cfg, math.inf if total is None else total)
        )
        return {"scheduler": sched, "interval": "step", "frequency": 1}

    # ---------------------------------------------------------------- validation
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        lr, hr = batch["lr"], batch["hr"]
        net = self.guarded(self.eval_model())
        sr = net(lr)
        sr_np = sr[0, 0].detach().float().cpu().numpy()
        hr_np = hr[0, 0].detach().float().cpu().numpy()
        psnr, ssim = sr_metrics(sr_np, hr_np, self.scale)
        bp = float(batch["bicubic_psnr"][0])
        bs = float(batch["bicubic_ssim"][0])
        kw = {"on_epoch": True, "on_step": False, "batch_size": 1, "sync_dist": True}
        self.log("val/psnr", psnr, prog_bar=True, **kw)
        self.log("val/ssim", ssim, **kw)
        self.log("val/psnr_bicubic", bp, **kw)
        self.log("val/ssim_bicubic", bs, **kw)
        self.log("val/psnr_gain", psnr - bp, prog_bar=True, **kw)
        if batch_idx == 0:
            self._log_images(lr, sr, hr)

    def _log_images(self, lr: torch.Tensor, sr: torch.Tensor, hr: torch.Tensor) -> None:
        every = self.cfg.trainer.image_log_every_n_epochs
        if not every or self.current_epoch % every or self.trainer.sanity_checking:
            return
        logger = self.logger
        exp = getattr(logger, "experiment", None) if logger is not None else None
        if exp is None or not hasattr(exp, "add_image"):
            return
        up = torch.nn.functional.interpolate(lr.float(), size=hr.shape[-2:], mode="nearest")
        grid = torch.cat([up, sr.float(), hr.float()], dim=-1)[0].clamp(0, 1).detach().cpu()
        exp.add_image("val/lr_sr_hr", grid, self.global_step)

    # ---------------------------------------------------------------- checkpoint card
    def card_info(self) -> dict[str, Any]:
        """The model-card draft stored in every checkpoint (plain JSON types)."""
        metrics = {}
        trainer = self._trainer
        if trainer is not None:
            for k, v in trainer.callback_metrics.items():
                if k.startswith("val/"):
                    metrics[k.removeprefix("val/")] = float(v)
        data = dict(self.data_info)
        return {
            "name": self.cfg.name,
            "task": self.cfg.task,
            "architecture": self.model_name,
            "kwargs": self.model_kwargs,
            "scale": self.scale,
            "normalization": data.pop("normalization", None),
            "degradation": self.cfg.degradation.as_dict(),
            "data": data,
            "metrics": metrics,
            "weights": "ema" if self.ema is not None else "raw",
            "init": getattr(self, "init_report", None),
            "low_band": self.low_band.card() if self.low_band is not None else None,
            "data_consistency": self.cfg.model.data_consistency,
            "config": self.cfg.to_dict(),
            "recipe_file": Path(self.cfg.source).name if self.cfg.source else None,
            "software": software_versions(),
            "hardware": hardware_text(self.device, trainer.world_size if trainer else 1),
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["medsr"] = self.card_info()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        info = checkpoint.get("medsr") or {}
        if info.get("architecture") not in (None, self.model_name):
            raise InvalidParameterError(
                f"the checkpoint holds a {info.get('architecture')!r} network but the config asks "
                f"for {self.model_name!r}; resume with the config it was trained with"
            )
        if not self.data_info and info.get("data") is not None:
            self.data_info = {**info["data"], "normalization": info.get("normalization")}


class SupervisedSR(SRTask):
    """Supervised SR: ``loss`` section (pixel + SSIM + TV), Adam/AdamW, warm-up + schedule."""

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        lr, hr = batch["lr"], batch["hr"]
        sr = self.guarded(self.model)(lr)
        self._check_shape(sr, hr, lr)
        loss, parts = self.criterion(sr, hr)
        n = lr.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        for k, v in parts.items():
            self.log(f"train/{k}", v, batch_size=n)
        return loss

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def configure_optimizers(self) -> dict[str, Any]:
        opt = make_optimizer(self.trainable_parameters(), self.cfg.optim)
        return {"optimizer": opt, "lr_scheduler": self._scheduler(opt)}


class ThroughPlaneSR(SupervisedSR):
    """Through-plane prior (``task: through-plane``): a one-axis network (``kind:
    interpolator-1d``, e.g. ``edsr-1d``) learns to undo a thick-slice degradation of one axis.

    Patches come from :class:`~medsr.training.data.SRDataModule` with the factor applied to
    rows only (``degradation: {kind: thick-slice, params: {axis: -2, ...}}``): random Gaussian
    or box slice profiles and widths, so the prior covers the profiles of real thick-slice CT
    and 2-D multi-slice MR. Validation compares with cubic interpolation along the rows
    (``val/psnr_bicubic`` is that baseline here). The exported card says ``kind:
    through-plane`` through the architecture, so :func:`medsr.models.resolve_model` and
    ``medsr upscale --through-plane`` find it.
    """

    def _build_model(self) -> tuple[str, nn.Module, dict[str, Any]]:
        from medsr.models.registry import get_model_class

        m = self.cfg.model
        if getattr(get_model_class(m.name), "kind", None) != "interpolator-1d":
            raise InvalidParameterError(
                f"model {m.name!r} is not a one-axis (through-plane) network; use edsr-1d or "
                "residual5-1d"
            )
        return super()._build_model()


def adversarial_update(
    task: Any,
    g: Any,
    *,
    real: torch.Tensor,
    fake: torch.Tensor,
    pred: torch.Tensor,
    target: torch.Tensor,
    n: int,
) -> dict[str, torch.Tensor]:
    """One adversarial step of ``task`` (manual optimisation, optimizers ``[generator,
    discriminator]``, ``task.discriminator``): ``g.d_updates`` discriminator updates on
    ``real`` vs ``fake``, then the generator on pixel (``pred`` vs ``target``) + adversarial
    (+ content, TV) losses; logs and returns both losses. Shared by SRGAN and the slice GAN."""
    opt_g, opt_d = task.optimizers()
    disc = task.discriminator
    clip = task.cfg.trainer.gradient_clip_val

    task.toggle_optimizer(opt_d)
    for _ in range(g.d_updates):
        d_loss = discriminator_loss(disc(real), disc(fake.detach()), g.adversarial)
        opt_d.zero_grad()
        task.manual_backward(d_loss)
        if clip:
            task.clip_gradients(opt_d, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        opt_d.step()
    task.untoggle_optimizer(opt_d)

    task.toggle_optimizer(opt_g)
    d_fake = disc(fake)
    with torch.no_grad():
        d_real = disc(real) if g.adversarial == "relativistic" else d_fake.detach()
    adv = generator_adversarial_loss(d_real, d_fake, g.adversarial)
    pix = task.criterion.pixel_loss(pred, target)
    g_loss = g.pixel_weight * pix + g.adv_weight * adv
    parts = {"pixel": pix, "adv": adv}
    if g.content_weight > 0:
        with torch.no_grad():
            real_feats = disc.features(real)
        content = feature_loss(disc.features(fake), real_feats)
        g_loss = g_loss + g.content_weight * content
        parts["content"] = content
    if g.tv_weight > 0:
        tv = tv_loss(pred.float())
        g_loss = g_loss + g.tv_weight * tv
        parts["tv"] = tv
    opt_g.zero_grad()
    task.manual_backward(g_loss)
    if clip:
        task.clip_gradients(opt_g, gradient_clip_val=clip, gradient_clip_algorithm="norm")
    opt_g.step()
    task.untoggle_optimizer(opt_g)

    for sched in task.lr_schedulers() or []:
        sched.step()
    task.log("train/loss", g_loss, prog_bar=True, batch_size=n)
    task.log("train/d_loss", d_loss, prog_bar=True, batch_size=n)
    for k, v in parts.items():
        task.log(f"train/{k}", v, batch_size=n)
    return {"g_loss": g_loss.detach(), "d_loss": d_loss.detach()}


class SRGANTask(SRTask):
    """Adversarial fine-tuning with manual optimisation (two optimisers per batch).

    Discriminator step: BCE-with-logits on HR (real) vs SR (fake, detached), ``gan.d_updates``
    times. Generator step: ``gan.pixel_weight``·pixel (``loss`` section) +
    ``gan.adv_weight``·adversarial + ``gan.content_weight``·L1 between ``D.features`` of SR and
    HR + ``gan.tv_weight``·TV. ``gan.adversarial: relativistic`` uses the relativistic-average
    losses (ESRGAN). Gradient clipping (``trainer.gradient_clip_val``) is applied here, by norm,
    to each optimiser. Warm start from ``gan.generator_init`` (an exported ``.safetensors`` or a
    medsr ``.ckpt``) — train a supervised model first.

    Note: with manual optimisation Lightning counts *every* optimiser step in ``global_step``:
    one batch advances it by ``d_updates + 1``, so ``trainer.max_steps`` counts those.
    """

    def __init__(self, config: Config | dict[str, Any]) -> None:
        super().__init__(config)
        self.automatic_optimization = False
        g = self.cfg.gan
        assert g is not None
        self.gan_cfg = g
        self.discriminator, self.discriminator_kwargs = build_network(
            g.discriminator.name, g.discriminator.kwargs, None
        )
        if g.content_weight > 0 and not hasattr(self.discriminator, "features"):
            raise InvalidParameterError(
                f"discriminator {g.discriminator.name!r} has no features(x) method, needed for the "
                "content loss; set gan.content_weight: 0"
            )
        if g.generator_init:
            state = load_generator_state(g.generator_init, self.model_name, self.model_kwargs)
            self.model.load_state_dict(state, strict=True)
            # the EMA copy (if any) takes these weights at its first update (n_averaged == 0)

    def configure_optimizers(self) -> Any:
        g_opt = make_optimizer(
            [p for p in self.model.parameters() if p.requires_grad], self.cfg.optim
        )
        d_opt = make_optimizer(
            self.discriminator.parameters(), self.cfg.optim, lr=self.gan_cfg.d_lr
        )
        return [g_opt, d_opt], [self._scheduler(g_opt), self._scheduler(d_opt)]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        g = self.gan_cfg
        lr, hr = batch["lr"], batch["hr"]
        n = lr.shape[0]
        sr = self.guarded(self.model)(lr)
        self._check_shape(sr, hr, lr)
        return adversarial_update(self, g, real=hr, fake=sr, pred=sr, target=hr, n=n)

    def card_info(self) -> dict[str, Any]:
        info = super().card_info()
        info["gan"] = {
            "discriminator": self.gan_cfg.discriminator.name,
            "discriminator_kwargs": self.discriminator_kwargs,
            "adversarial": self.gan_cfg.adversarial,
            "generator_init": Path(self.gan_cfg.generator_init).name
            if self.gan_cfg.generator_init
            else None,
        }
        return info


class SliceInterpolationTask(SRTask):
    """Slice interpolation (``task: slice-interpolation``): predict slice ``i`` from ``i±1``.

    The network is a registered ``slice-interpolator`` (:mod:`medsr.models.slice`:
    ``interp-cnn``, ``interp-gan``, ``fast-ddpm``) built from ``model.name`` and
    ``model.kwargs`` as given (two neighbours in, one slice out). Batches
    ``{"cond": (N, 2, p, p), "target": (N, 1, p, p)}`` come from
    :class:`~medsr.training.slices.SliceDataModule`. The loss is chosen by the recipe:

    * a network with a ``training_loss(cond, target)`` method (the diffusion model, Fast-DDPM:
      ε-prediction MSE on its 10 timesteps) is trained with that;
    * otherwise the ``loss`` section's pixel loss (``l1`` for the interpolators, plus SSIM/TV
      when set) between the prediction and the middle slice;
    * with a ``gan`` section, additionally an adversarial term: a conditional discriminator
      (``gan.discriminator``, e.g. ``patchgan``, built with ``in_channels = 3``) sees
      ``[prev, slice, next]``; generator loss ``gan.pixel_weight``·pixel +
      ``gan.adv_weight``·adversarial (+ ``gan.content_weight``·feature L1, ``gan.tv_weight``·TV),
      two optimisers with manual optimisation as in :class:`SRGANTask`.

    Validation (``val/psnr``, ``val/ssim``, ``val/psnr_linear``, ``val/ssim_linear``,
    ``val/psnr_gain`` over the linear mean of the neighbours; normalised units, data range 1,
    2 px border) runs the EMA network when ``trainer.ema_decay`` is set. The checkpoint's card
    draft says ``kind: slice-interpolator``, the percentile normalisation and the slice axes,
    so ``medsr export`` writes a card :func:`medsr.interpolation.interpolate_slices` reads.
    """

    def __init__(self, config: Config | dict[str, Any]) -> None:
        super().__init__(config)
        self.slices = self.cfg.slices
        self.gan_cfg = self.cfg.gan
        self.diffusion = callable(getattr(self.model, "training_loss", None))
        if self.gan_cfg is not None:
            if self.diffusion:
                raise InvalidParameterError(
                    f"model {self.model_name!r} is trained with its own diffusion loss; remove the "
                    "'gan' section"
                )
            self.automatic_optimization = False
            g = self.gan_cfg
            kwargs = dict(g.discriminator.kwargs)
            kwargs["in_channels"] = 3  # conditional: [prev, slice, next]
            from medsr.models.registry import create_model

            try:
                self.discriminator = create_model(g.discriminator.name, **kwargs)
            except TypeError as exc:
                raise InvalidParameterError(
                    f"bad kwargs for discriminator {g.discriminator.name!r}: {exc}"
                ) from None
            self.discriminator_kwargs = kwargs
            if g.content_weight > 0 and not hasattr(self.discriminator, "features"):
                raise InvalidParameterError(
                    f"discriminator {g.discriminator.name!r} has no features(x) method, needed "
                    "for the content loss; set gan.content_weight: 0"
                )
            if g.generator_init:
                state = load_generator_state(g.generator_init, self.model_name, self.model_kwargs)
                self.model.load_state_dict(state, strict=True)

    # ---------------------------------------------------------------- networks
    def _build_model(self) -> tuple[str, nn.Module, dict[str, Any]]:
        from medsr.models.registry import create_model, get_model_class

        m = self.cfg.model
        if getattr(get_model_class(m.name), "kind", None) != "slice-interpolator":
            raise InvalidParameterError(
                f"model {m.name!r} is not a slice interpolator (interp-cnn, interp-gan, fast-ddpm)"
            )
        kwargs = dict(m.kwargs)
        try:
            net = create_model(m.name, **kwargs)
        except (TypeError, ValueError) as exc:
            raise InvalidParameterError(f"bad kwargs for model {m.name!r}: {exc}") from None
        if m.init:
            self.init_report = init_from(net, m.init, m.name, kwargs)
        return m.name, net, kwargs

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self.eval_model()(cond)

    # ---------------------------------------------------------------- training
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        g_opt = make_optimizer(self.trainable_parameters(), self.cfg.optim)
        if self.gan_cfg is None:
            return {"optimizer": g_opt, "lr_scheduler": self._scheduler(g_opt)}
        d_opt = make_optimizer(
            self.discriminator.parameters(), self.cfg.optim, lr=self.gan_cfg.d_lr
        )
        return [g_opt, d_opt], [self._scheduler(g_opt), self._scheduler(d_opt)]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Any:
        cond, target = batch["cond"], batch["target"]
        n = cond.shape[0]
        if self.diffusion:
            loss = self.model.training_loss(cond, target)
            self.log("train/loss", loss, prog_bar=True, batch_size=n)
            return loss
        if self.gan_cfg is not None:
            return self._adversarial_step(cond, target)
        pred = self.model(cond)
        if pred.shape != target.shape:
            raise InvalidParameterError(
                f"model {self.model_name!r} returned {tuple(pred.shape)} for neighbours "
                f"{tuple(cond.shape)}; a slice interpolator returns {tuple(target.shape)}"
            )
        loss, parts = self.criterion(pred, target)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        for k, v in parts.items():
            self.log(f"train/{k}", v, batch_size=n)
        return loss

    def _adversarial_step(self, cond: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
        g = self.gan_cfg
        assert g is not None
        n = cond.shape[0]
        pred = self.model(cond)
        real = torch.cat([cond[:, :1], target, cond[:, 1:]], 1)
        fake = torch.cat([cond[:, :1], pred, cond[:, 1:]], 1)
        return adversarial_update(self, g, real=real, fake=fake, pred=pred, target=target, n=n)

    # ---------------------------------------------------------------- validation
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        from medsr.training.slices import VAL_CROP

        cond, target = batch["cond"], batch["target"]
        pred = self.eval_model()(cond)
        p = pred[0, 0].detach().float().cpu().numpy()
        t = target[0, 0].detach().float().cpu().numpy()
        psnr, ssim = sr_metrics(p, t, VAL_CROP)
        lp = float(batch["linear_psnr"][0])
        ls = float(batch["linear_ssim"][0])
        kw = {"on_epoch": True, "on_step": False, "batch_size": 1, "sync_dist": True}
        self.log("val/psnr", psnr, prog_bar=True, **kw)
        self.log("val/ssim", ssim, **kw)
        self.log("val/psnr_linear", lp, **kw)
        self.log("val/ssim_linear", ls, **kw)
        self.log("val/psnr_gain", psnr - lp, prog_bar=True, **kw)
        if batch_idx == 0:
            self._log_triplet(cond, pred, target)

    def _log_triplet(self, cond: torch.Tensor, pred: torch.Tensor, target: torch.Tensor) -> None:
        every = self.cfg.trainer.image_log_every_n_epochs
        if not every or self.current_epoch % every or self.trainer.sanity_checking:
            return
        exp = getattr(self.logger, "experiment", None) if self.logger is not None else None
        if exp is None or not hasattr(exp, "add_image"):
            return
        linear = cond.mean(dim=1, keepdim=True)
        grid = torch.cat([linear.float(), pred.float(), target.float()], dim=-1)[0]
        exp.add_image("val/linear_pred_truth", grid.clamp(0, 1).detach().cpu(), self.global_step)

    # ---------------------------------------------------------------- checkpoint card
    def card_info(self) -> dict[str, Any]:
        info = super().card_info()
        assert self.slices is not None
        m = info.get("metrics") or {}
        info["normalization"] = self.slices.normalization()
        info["degradation"] = {
            "kind": "slice-removal",
            "description": "the middle slice of three consecutive slices is removed; the network "
            "predicts it from its two neighbours (point sampling along the slice axis)",
            "axes": list(self.slices.axes),
        }
        info["card"] = {
            "kind": "slice-interpolator",
            "in_channels": 2,
            "metrics": {
                "val_psnr": m.get("psnr"),
                "val_ssim": m.get("ssim"),
                "val_psnr_linear": m.get("psnr_linear"),
                "val_ssim_linear": m.get("ssim_linear"),
                "val_psnr_gain": m.get("psnr_gain"),
                "units": "normalised intensities (volume percentiles), data_range=1, border crop=2, "
                "mean over validation triplets; gain over the neighbours' mean (linear)",
            },
            "slices": {
                "axes": list(self.slices.axes),
                "train_volumes": list(self.data_info.get("train_volumes", [])),
                "triplets": self.data_info.get("triplets"),
            },
        }
        if self.gan_cfg is not None:
            info["gan"] = {
                "discriminator": self.gan_cfg.discriminator.name,
                "discriminator_kwargs": self.discriminator_kwargs,
                "adversarial": self.gan_cfg.adversarial,
                "adv_weight": self.gan_cfg.adv_weight,
                "pixel_weight": self.gan_cfg.pixel_weight,
            }
        return info
