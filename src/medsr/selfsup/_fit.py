"""Shared machinery of the zero-shot methods: argument checks, the per-image training loop,
initial weights, and tiled inference."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsr.errors import InvalidParameterError, positive_number
from medsr.selfsup.pyramid import PatchSampler


@dataclass
class FitReport:
    """What the per-image training did (stored in ``meta["derivation"]["training"]``)."""

    steps: int
    patches: int
    epochs: float
    seconds: float
    final_loss: float
    init: str | None
    device: str
    patch_size: int
    #: the time limit it ran under (None: only steps/epochs limited it)
    budget_s: float | None = None

    @property
    def reproducible(self) -> bool:
        """Whether the same seed gives the same result (on the same machine and thread count):
        not under a time budget, where the number of steps *and* the learning-rate schedule
        (which follows the elapsed time) depend on the machine's speed and load."""
        return self.budget_s is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "budget_s": self.budget_s,
            "reproducible": self.reproducible,
            "steps": self.steps,
            "patches": self.patches,
            "epochs": round(self.epochs, 4),
            "seconds": round(self.seconds, 2),
            "final_l1": None if not math.isfinite(self.final_loss) else round(self.final_loss, 6),
            "init": self.init,
            "device": self.device,
            "patch_size": self.patch_size,
        }


#: per-image networks are trained for seconds to minutes: a narrower residual5 than the zoo's
#: default (64) takes about twice as many optimiser steps in the same budget on a CPU, which
#: matters more than width at this training length (benchmarks/selfsup.py).
DEFAULT_MODEL_KWARGS: dict[str, dict[str, Any]] = {"residual5": {"num_features": 32}}


def _whole(value: Any) -> bool:
    """A whole number (an int, or a finite float without a fraction; not a bool)."""
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and int(value) == value
    )


def check_steps(steps: Any, name: str = "adapt steps") -> int:
    """A step budget: a whole number ≥ 0 (0 = no training)."""
    if not _whole(steps) or steps < 0:
        raise InvalidParameterError(f"{name} must be a whole number of steps ≥ 0, got {steps!r}")
    return int(steps)


def check_budget(budget_s: Any, epochs: Any) -> tuple[float | None, int | None]:
    """Validate the stopping rule: a time budget (s) and/or a number of epochs."""
    b: float | None = None
    if budget_s is not None:
        b = positive_number(budget_s, "the time budget", "seconds")
    e = check_positive_int(epochs, "epochs") if epochs is not None else None
    if b is None and e is None:
        raise InvalidParameterError("give a time budget or a number of epochs (both are unset)")
    return b, e


def check_positive_int(value: Any, name: str) -> int:
    if not _whole(value) or value < 1:
        raise InvalidParameterError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def default_weights_path(model: str, scale: int) -> Path:
    """The shipped ``{model}-x{scale}`` weights (``medsr/weights/``), or a clear error."""
    from medsr.models.pretrained import bundled_weights, pretrained_path

    name = f"{model}-x{scale}"
    path = pretrained_path(name)
    if path is None:
        shipped = ", ".join(bundled_weights()) or "none"
        raise InvalidParameterError(
            f"no default {name} weights are shipped with this medsr to fine-tune from (shipped: "
            f"{shipped}); pass init=<file>.safetensors (e.g. a {model} model trained with medsr "
            "train) or init=None to learn from scratch"
        )
    return path


def resolve_init(init: str | os.PathLike[str], model: str, scale: int) -> Path:
    """``"default"`` → the shipped ``{model}-x{scale}``; a shipped name; or a ``.safetensors`` file."""
    from medsr.models.pretrained import pretrained_path

    text = str(init)
    if text == "default":
        return default_weights_path(model, scale)
    shipped = pretrained_path(text)
    if shipped is not None:
        return shipped
    if not text.endswith(".safetensors"):
        raise InvalidParameterError(
            f"init must be 'default', a shipped model name or a .safetensors file, got {text!r}"
        )
    return Path(text)


def build_network(
    model: str,
    scale: int,
    model_kwargs: dict[str, Any] | None,
    init: str | os.PathLike[str] | None,
    *,
    kind: str,
    seed: int,
) -> tuple[torch.nn.Module, dict[str, Any] | None, str | None]:
    """A fresh network (seeded) or one loaded from ``init`` (``"default"`` or a file).

    Returns ``(net, card_or_None, init_name)``. ``kind`` is the registry kind the method needs
    (``"upscaler"`` in-plane, ``"interpolator-1d"`` through-plane).
    """
    from medsr.models.registry import create_model, get_model_class

    if init is not None:
        from medsr.models.weights import load_model

        path = resolve_init(init, model, scale)
        net, card = load_model(path)
        arch = str(card.get("architecture"))
        got_kind = getattr(get_model_class(arch), "kind", "upscaler")
        if got_kind != kind:
            raise InvalidParameterError(
                f"weights '{path.name}' hold a {arch!r} model ({got_kind}); this method needs a {kind}"
            )
        card_scale = int(card.get("scale", card.get("kwargs", {}).get("scale", scale)))
        if card_scale != scale or int(getattr(net, "scale", scale)) != scale:
            raise InvalidParameterError(
                f"weights '{path.name}' are for ×{card_scale}, not ×{scale}"
            )
        if int(getattr(net, "in_channels", 1)) != 1:
            raise InvalidParameterError(
                f"weights '{path.name}' are for {net.in_channels}-channel input; need 1"
            )
        return net, card, path.name
    cls = get_model_class(model)
    if not getattr(cls, "learned", True):
        raise InvalidParameterError(
            f"model {model!r} has no weights to learn; pick a network such as residual5"
        )
    got_kind = getattr(cls, "kind", "upscaler")
    if got_kind != kind:
        raise InvalidParameterError(f"model {model!r} is a {got_kind}; this method needs a {kind}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        try:
            kwargs = {
                **DEFAULT_MODEL_KWARGS.get(str(model).lower(), {}),
                **dict(model_kwargs or {}),
            }
            net = create_model(model, scale=scale, in_channels=1, **kwargs)
        except (TypeError, ValueError) as exc:
            raise InvalidParameterError(f"cannot build {model!r} for ×{scale}: {exc}") from None
    _zero_last_conv(net)
    return net, None, None


def _zero_last_conv(net: torch.nn.Module) -> None:
    """Start a global-residual network at its interpolation baseline.

    The residual architectures used here (``residual5``, ``vdsr``, ``residual5-1d``) add
    ``body(up)`` to the interpolated input; zeroing the body's last convolution makes the
    untrained network *exactly* the interpolation, so a short budget can only move it away from
    that baseline by learning (the "zero-init residual" trick of Goyal et al., 2017).
    """
    body = getattr(net, "body", None)
    if isinstance(body, torch.nn.Sequential) and isinstance(body[-1], torch.nn.Conv2d):
        torch.nn.init.zeros_(body[-1].weight)
        if body[-1].bias is not None:
            torch.nn.init.zeros_(body[-1].bias)


def fit(
    net: torch.nn.Module,
    sampler: PatchSampler,
    *,
    budget_s: float | None,
    epochs: int | None,
    batch_size: int,
    lr: float,
    device: torch.device,
    seed: int,
    progress: bool,
    description: str,
    init: str | None = None,
    max_steps: int | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> FitReport:
    """Adam + L1 + cosine learning rate on ``sampler``'s pairs until the budget, the epochs or
    ``max_steps`` end. The L1 is over the target pixels that hold data (:func:`_held_l1`).

    The cosine schedule follows the larger of the step fraction (when ``epochs`` or
    ``max_steps`` is set) and the elapsed-time fraction (when ``budget_s`` is set), so it decays
    to 1 % of ``lr`` at whichever limit comes first. Without a time budget the run is
    deterministic for a seed (same machine and thread count).

    ``on_progress(frac)`` is called before every optimiser step with that fraction (0 to 1) —
    how a front end without a terminal (the web service's job) shows the training move; an
    exception it raises stops the training (a cancelled job).
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    steps_per_epoch = math.ceil(len(sampler) / batch_size)
    total_steps = None if epochs is None else epochs * steps_per_epoch
    if max_steps is not None:
        total_steps = max_steps if total_steps is None else min(total_steps, max_steps)
    fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    net = net.to(device=device, memory_format=fmt).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    step = patches = 0
    loss_value = math.nan
    t0 = time.perf_counter()
    columns = (
        TextColumn(f"[bold]{description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with (
        torch.random.fork_rng(devices=[]),
        Progress(
            *columns, console=Console(stderr=True), disable=not progress, transient=True
        ) as bar,
    ):
        torch.manual_seed(int(seed))
        task = bar.add_task("", total=100.0, info="")
        epoch = 0
        done = False
        while not done:
            for low, high in sampler.batches(epoch, batch_size):
                frac = 0.0
                if total_steps:
                    frac = step / total_steps
                if budget_s:
                    frac = max(frac, (time.perf_counter() - t0) / budget_s)
                if frac >= 1.0:
                    done = True
                    break
                if on_progress is not None:
                    on_progress(min(frac, 1.0))
                for group in opt.param_groups:
                    group["lr"] = lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * frac)))
                low = low.to(device=device, memory_format=fmt)
                high = high.to(device=device, memory_format=fmt)
                opt.zero_grad(set_to_none=True)
                loss = _held_l1(net(low), high)
                loss.backward()
                opt.step()
                step += 1
                patches += low.shape[0]
                if step % 10 == 0 or step == 1:
                    loss_value = float(loss.detach())
                    bar.update(
                        task, completed=100.0 * frac, info=f"step {step} · L1 {loss_value:.4f}"
                    )
            else:
                epoch += 1
                if epochs is not None and epoch >= epochs:
                    done = True
    loss_value = float(loss.detach()) if step else math.nan
    seconds = time.perf_counter() - t0
    return FitReport(
        steps=step,
        patches=patches,
        epochs=patches / len(sampler),
        seconds=seconds,
        final_loss=loss_value,
        init=init,
        device=str(device),
        patch_size=sampler.patch_size,
        budget_s=budget_s,
    )


def _held_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the target pixels that hold data: a NaN target (no data,
    :func:`medsr.selfsup.pyramid.no_data_target`) is no target, so the fill a network reads
    there is never what it learns to output. The plain L1 without NaN."""
    held = ~torch.isnan(target)
    if bool(held.all()):
        return torch.nn.functional.l1_loss(pred, target)
    # the prediction itself where nothing is held: a zero error with a zero gradient (never a
    # NaN, which indexing after the subtraction would still carry into the gradient)
    diff = pred - torch.where(held, target, pred.detach())
    return diff.abs().sum() / held.sum().clamp(min=1)


def model_normalizer(
    card: dict[str, Any] | None, image: Any, cf: np.ndarray, *, each_time_point: bool = False
) -> Any:
    """The card's normalisation when fine-tuning weights that have one, else per-image min-max.
    ``each_time_point``: an image over time is normalised one time point at a time
    (:meth:`medsr.intensity.Normalizer.per_time_point`: ``(T, 1, 1, 1)`` values that broadcast
    over ``cf``), each as it is on its own."""
    from medsr.intensity import Normalizer

    spec = card.get("normalization") if card is not None else None
    if each_time_point and getattr(image, "channels", None) == "time":
        return Normalizer.per_time_point({"normalization": spec or {"kind": "minmax"}}, image)
    if spec:
        return Normalizer.from_card(card, image)  # type: ignore[arg-type]
    return Normalizer.from_spec({"kind": "minmax"}, cf)


def train_on_pairs(
    net: torch.nn.Module,
    pairs: list[tuple[torch.Tensor, torch.Tensor]],
    factor: Any,
    *,
    patch_size: int,
    patches_per_epoch: int,
    augment: bool,
    seed: int,
    budget_s: float | None,
    epochs: int | None,
    batch_size: int,
    lr: float | None,
    device: torch.device,
    progress: bool,
    description: str,
    init: str | None,
    max_steps: int | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> FitReport:
    """Sample random patch pairs from ``pairs`` (low, high) and :func:`fit` ``net`` on them
    (``on_progress``: as for :func:`fit`).

    ``lr=None`` picks 1e-3 from scratch and 2e-4 when fine-tuning (``init`` given).
    """
    sampler = PatchSampler(
        pairs,
        factor,
        patch_size=patch_size,
        patches_per_epoch=patches_per_epoch,
        augment=augment,
        seed=seed,
    )
    return fit(
        net,
        sampler,
        budget_s=budget_s,
        epochs=epochs,
        batch_size=batch_size,
        lr=(2e-4 if init is not None else 1e-3) if lr is None else float(lr),
        device=device,
        seed=seed,
        progress=progress,
        description=description,
        init=init,
        max_steps=max_steps,
        on_progress=on_progress,
    )


def run_tiled(
    net: torch.nn.Module,
    planes: np.ndarray,
    scale: tuple[int, int],
    device: torch.device,
    *,
    tile: int = 192,
    halo: int = 8,
    max_pixels: int = 1 << 18,
) -> np.ndarray:
    """Apply ``net`` to ``(P, 1, H, W)`` planes in overlapping tiles (bounded memory).

    Each tile carries ``halo`` extra input pixels on every side that are cut off the output, more
    than the receptive field of the small networks used here (5 layers of 3×3 after a 4-tap
    cubic), so the result equals whole-plane inference. Small planes are batched together (at
    most ``max_pixels`` input pixels per forward pass).
    """
    sy, sx = scale
    p, c, h, w = planes.shape
    out = np.empty((p, c, h * sy, w * sx), dtype=np.float32)
    fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    net = net.to(device=device, memory_format=fmt).eval()
    with torch.inference_mode():
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
                ya, xa = max(0, y0 - halo), max(0, x0 - halo)
                yb, xb = min(h, y1 + halo), min(w, x1 + halo)
                oy, ox = (y0 - ya) * sy, (x0 - xa) * sx
                chunk = max(1, max_pixels // ((yb - ya) * (xb - xa)))
                for i in range(0, p, chunk):
                    x = torch.from_numpy(
                        np.ascontiguousarray(planes[i : i + chunk, :, ya:yb, xa:xb])
                    )
                    pred = net(x.to(device).contiguous(memory_format=fmt))
                    out[i : i + chunk, :, y0 * sy : y1 * sy, x0 * sx : x1 * sx] = (
                        pred[:, :, oy : oy + (y1 - y0) * sy, ox : ox + (x1 - x0) * sx]
                        .float()
                        .cpu()
                        .numpy()
                    )
    return out
