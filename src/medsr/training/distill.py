"""Knowledge distillation: a frozen teacher trains a smaller student.

The **teacher** (``distill.teacher``) is a ``.safetensors`` exported by
:func:`medsr.training.run.export` (its card gives architecture and kwargs) or a ``.ckpt``
written by medsr training; it is frozen and kept in eval mode. The **student** is the config's
``model`` (or the teacher's architecture and kwargs when ``model`` is omitted) compressed by
:func:`compress_kwargs`: ``num_features × width_factor`` and ``num_blocks × depth_factor``,
rounded, at least 1 (features to a multiple of ``feature_multiple``).

Loss per batch::

    output_weight · L1(student(lr), teacher(lr))          # output distillation (teacher_ensemble)
  + gt_weight     · pixel(student(lr), hr)                # ground truth (the ``loss`` section)
  + feature_weight· mean_k L1(adapter_k(s_k), t_{m(k)})   # feature distillation

Feature distillation — the ``feature_layers()`` protocol: a model may define
``feature_layers() -> list[nn.Module]`` (shallow to deep) whose outputs are its intermediate
features. Without it, the children of ``model.blocks`` or ``model.body`` (an ``nn.ModuleList`` /
``nn.Sequential``) are used. Student layer ``k`` (of ``K``) is matched to teacher layer
``m(k) = round((k + 1)·T/K) − 1`` (of ``T``), i.e. at the same relative depth, through a 1×1
convolution adapter (student channels → teacher channels; trained with the student, not
exported); a feature map of a different size is resized bilinearly. If either network exposes
no layers, only output + ground-truth distillation is used (a warning says so).

At the end of ``fit`` a JSON report ``distill_report.json`` is written to the run folder:
parameters, CPU milliseconds per slice (``report_slice_size``² HR output, batch 1, median of 5
after a warm-up, on this machine's CPU threads), validation PSNR/SSIM of teacher, student and
bicubic (normalised units, data_range 1, crop = scale).
"""

from __future__ import annotations

import copy
import json
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medsr.errors import InvalidParameterError
from medsr.training.config import Config
from medsr.training.data import sr_metrics
from medsr.training.tasks import (
    SupervisedSR,
    build_network,
    constructor_params,
    init_from,
    load_generator_state,
    load_medsr_checkpoint,
)

__all__ = [
    "DistillTask",
    "compress_kwargs",
    "count_parameters",
    "feature_layers",
    "load_teacher",
    "ms_per_slice",
]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def feature_layers(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are ``model``'s intermediate features (see module docstring)."""
    fn = getattr(model, "feature_layers", None)
    if callable(fn):
        return list(fn())
    for name in ("blocks", "body"):
        m = getattr(model, name, None)
        if isinstance(m, (nn.ModuleList, nn.Sequential)) and len(m) > 0:
            return list(m)
    return []


def compress_kwargs(
    name: str,
    kwargs: dict[str, Any],
    width_factor: float,
    depth_factor: float,
    feature_multiple: int = 1,
) -> dict[str, Any]:
    """``kwargs`` with ``num_features`` / ``num_blocks`` scaled (constructor defaults if absent)."""
    from medsr.models.registry import get_model_class

    params = constructor_params(get_model_class(name))
    out = dict(kwargs)

    def current(key: str) -> int | None:
        if key in out:
            return int(out[key])
        p = params.get(key)
        if p is not None and isinstance(p.default, int) and not isinstance(p.default, bool):
            return int(p.default)
        return None

    nf = current("num_features")
    if nf is not None:
        m = max(1, int(feature_multiple))
        out["num_features"] = max(m, round(nf * width_factor / m) * m)
    elif width_factor != 1:
        raise InvalidParameterError(
            f"model {name!r} has no num_features argument to compress by width"
        )
    nb = current("num_blocks")
    if nb is not None:
        out["num_blocks"] = max(1, round(nb * depth_factor))
    elif depth_factor != 1:
        raise InvalidParameterError(
            f"model {name!r} has no num_blocks argument to compress by depth"
        )
    return out


def load_teacher(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Teacher network and its card (``architecture``, ``kwargs``, ``scale``, ``normalization``)."""
    p = Path(path)
    if not p.is_file():
        raise InvalidParameterError(f"teacher '{p}' does not exist")
    if p.suffix == ".safetensors":
        from medsr.models.weights import load_model

        net, card = load_model(p)
        return net, card
    ckpt = load_medsr_checkpoint(p)
    info = ckpt["medsr"]
    net, _ = build_network(
        info["architecture"],
        {k: v for k, v in info["kwargs"].items() if k != "scale"},
        info["scale"],
    )
    net.load_state_dict(load_generator_state(p, info["architecture"], info["kwargs"]), strict=True)
    return net, {
        k: info.get(k) for k in ("architecture", "kwargs", "scale", "normalization", "metrics")
    }


@torch.inference_mode()
def ms_per_slice(model: nn.Module, lr_size: int, repeats: int = 5) -> float:
    """Median CPU milliseconds for one ``(1, C, lr_size, lr_size)`` slice (batch 1)."""
    net = copy.deepcopy(model).cpu().eval().float()
    c = int(getattr(net, "in_channels", 1))
    x = torch.rand(1, c, lr_size, lr_size)
    net(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        net(x)
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(statistics.median(times))


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)):
        for o in out:
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


class _Recorder:
    """Forward hooks that keep the latest output of each layer."""

    def __init__(self, layers: list[nn.Module]) -> None:
        self.outputs: list[torch.Tensor | None] = [None] * len(layers)
        self.handles = [
            layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(layers)
        ]

    def _hook(self, i: int) -> Any:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            self.outputs[i] = _first_tensor(out)

        return hook

    def clear(self) -> None:
        self.outputs = [None] * len(self.outputs)


class DistillTask(SupervisedSR):
    """Teacher → student distillation (output, ground truth and feature terms)."""

    def __init__(self, config: Config | dict[str, Any]) -> None:
        super().__init__(config)
        d = self.cfg.distill
        assert d is not None
        self.distill_cfg = d
        self.report_path: Path | None = None
        self.report: dict[str, Any] | None = None
        s_layers = feature_layers(self.model)
        t_layers = feature_layers(self.teacher)
        self.pairs: list[tuple[int, int]] = []
        self.adapters = nn.ModuleList()
        if d.feature_weight > 0 and s_layers and t_layers:
            k, t = len(s_layers), len(t_layers)
            self.pairs = [(i, max(0, round((i + 1) * t / k) - 1)) for i in range(k)]
            self._s_rec = _Recorder(s_layers)
            self._t_rec = _Recorder(t_layers)
            lr_size = max(8, self.cfg.data.patch_size // self.scale)
            c = int(getattr(self.model, "in_channels", 1))
            with torch.no_grad():
                x = torch.zeros(1, c, lr_size, lr_size)
                self.model(x)
                self.teacher(x)
            for si, ti in self.pairs:
                so, to = self._s_rec.outputs[si], self._t_rec.outputs[ti]
                if so is None or to is None or so.ndim != 4 or to.ndim != 4:
                    raise InvalidParameterError(
                        "feature layers must return (N, C, H, W) feature maps"
                    )
                self.adapters.append(nn.Conv2d(so.shape[1], to.shape[1], 1))
            self._s_rec.clear()
            self._t_rec.clear()
        elif d.feature_weight > 0:
            warnings.warn(
                "teacher or student exposes no feature layers (feature_layers(), .blocks or .body): "
                "distilling outputs only",
                stacklevel=2,
            )

    # ---------------------------------------------------------------- networks
    def _build_model(self) -> tuple[str, nn.Module, dict[str, Any]]:
        d = self.cfg.distill
        assert d is not None
        teacher, card = load_teacher(d.teacher)
        if int(card.get("scale") or 0) != self.scale:
            raise InvalidParameterError(
                f"the teacher was trained for ×{card.get('scale')}, the config asks for ×{self.scale}"
            )
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher = teacher.eval()
        self.teacher_card = card
        t_arch = card["architecture"]
        t_kwargs = {k: v for k, v in card["kwargs"].items() if k not in ("scale", "in_channels")}
        m = self.cfg.model
        name = m.name or t_arch
        base = m.kwargs if (m.kwargs or name != t_arch) else t_kwargs
        kwargs = compress_kwargs(name, base, d.width_factor, d.depth_factor, d.feature_multiple)
        net, full = build_network(name, kwargs, self.scale)
        if m.init:  # e.g. continue a student, or start fast-x4 from fast-x2
            self.init_report = init_from(net, m.init, name, full)
        return name, net, full

    @torch.no_grad()
    def teacher_output(self, lr: torch.Tensor) -> torch.Tensor:
        """The guarded teacher's output for ``lr``: with ``teacher_ensemble`` > 1, the mean over
        that many dihedral transforms of ``lr``, each output turned back."""
        from medsr.training.config.task_sections import TEACHER_ENSEMBLES

        teacher = self.guarded(self.teacher)
        total: torch.Tensor | None = None
        transforms = TEACHER_ENSEMBLES[self.distill_cfg.teacher_ensemble]
        for k, flip in transforms:
            x = torch.rot90(lr, k, dims=(-2, -1))
            x = x.flip(-1) if flip else x
            y = teacher(x).float()
            y = y.flip(-1) if flip else y
            y = torch.rot90(y, -k, dims=(-2, -1))
            total = y if total is None else total + y
        assert total is not None
        return total / len(transforms)

    def train(self, mode: bool = True) -> DistillTask:
        super().train(mode)
        self.teacher.eval()  # frozen: BatchNorm/dropout stay in inference mode
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [*super().trainable_parameters(), *self.adapters.parameters()]

    # ---------------------------------------------------------------- training
    def on_fit_start(self) -> None:
        super().on_fit_start()
        t_norm = self.teacher_card.get("normalization")
        d_norm = self.data_info.get("normalization")
        if t_norm and d_norm and t_norm != d_norm:
            raise InvalidParameterError(
                f"the teacher was trained with normalization {t_norm} but this data uses {d_norm}; "
                "set the config's normalization to the teacher's"
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        d = self.distill_cfg
        lr, hr = batch["lr"], batch["hr"]
        n = lr.shape[0]
        if self.pairs:
            self._t_rec.clear()
            self._s_rec.clear()
        # with ``model.low_band`` both pass through the guard: the student learns the teacher's
        # detail over the base, never a low band it would not be allowed to change
        t_out = self.teacher_output(lr)  # no gradient: the teacher is frozen
        sr = self.guarded(self.model)(lr)
        self._check_shape(sr, hr, lr)
        total = sr.new_zeros((), dtype=torch.float32)
        parts: dict[str, torch.Tensor] = {}
        if d.output_weight:
            parts["distill_output"] = F.l1_loss(sr.float(), t_out.float())
            total = total + d.output_weight * parts["distill_output"]
        if d.gt_weight:
            gt, gt_parts = self.criterion(sr, hr)
            parts.update({f"gt_{k}": v for k, v in gt_parts.items()})
            total = total + d.gt_weight * gt
        if self.pairs and d.feature_weight:
            feat = sr.new_zeros((), dtype=torch.float32)
            for adapter, (si, ti) in zip(self.adapters, self.pairs, strict=True):
                s_f, t_f = self._s_rec.outputs[si], self._t_rec.outputs[ti]
                assert s_f is not None and t_f is not None
                a = adapter(s_f)
                if a.shape[-2:] != t_f.shape[-2:]:
                    a = F.interpolate(a, size=t_f.shape[-2:], mode="bilinear", align_corners=False)
                feat = feat + F.l1_loss(a.float(), t_f.detach().float())
            parts["distill_features"] = feat / len(self.pairs)
            total = total + d.feature_weight * parts["distill_features"]
        self.log("train/loss", total, prog_bar=True, batch_size=n)
        for k, v in parts.items():
            self.log(f"train/{k}", v, batch_size=n)
        return total

    # ---------------------------------------------------------------- report
    def _val_scores(self, net: nn.Module) -> dict[str, float]:
        dm = getattr(self.trainer, "datamodule", None)
        items = getattr(dm, "val_items", None) or []
        if not items:
            return {}
        ps, ss, bps, bss = [], [], [], []
        was_training = net.training
        net.eval()
        with torch.inference_mode():
            guarded = self.guarded(net)
            for it in items:
                sr = guarded(it.lr[None].to(self.device))[0, 0].float().cpu().numpy()
                p, s = sr_metrics(sr, it.hr[0].numpy(), self.scale)
                ps.append(p)
                ss.append(s)
                bps.append(it.bicubic_psnr)
                bss.append(it.bicubic_ssim)
        net.train(was_training)
        n = len(ps)
        return {
            "val_psnr": sum(ps) / n,
            "val_ssim": sum(ss) / n,
            "val_psnr_bicubic": sum(bps) / n,
            "val_ssim_bicubic": sum(bss) / n,
            "val_slices": n,
        }

    def build_report(self) -> dict[str, Any]:
        """Teacher vs student: parameters, CPU ms per slice, validation PSNR/SSIM."""
        d = self.distill_cfg
        lr_size = max(4, d.report_slice_size // self.scale)
        student = self.eval_model()
        t_scores = self._val_scores(self.teacher)
        s_scores = self._val_scores(student)
        t_params, s_params = count_parameters(self.teacher), count_parameters(student)
        t_ms, s_ms = ms_per_slice(self.teacher, lr_size), ms_per_slice(student, lr_size)
        units = "normalised intensities, data_range=1, border crop=scale"
        return {
            "teacher": {
                "architecture": self.teacher_card["architecture"],
                "kwargs": self.teacher_card["kwargs"],
                "source": Path(d.teacher).name,
                "params": t_params,
                "ms_per_slice_cpu": t_ms,
                **{k: v for k, v in t_scores.items() if "bicubic" not in k},
            },
            "student": {
                "architecture": self.model_name,
                "kwargs": self.model_kwargs,
                "params": s_params,
                "ms_per_slice_cpu": s_ms,
                **{k: v for k, v in s_scores.items() if "bicubic" not in k},
            },
            "bicubic": {k: v for k, v in s_scores.items() if "bicubic" in k},
            "compression": {
                "width_factor": d.width_factor,
                "depth_factor": d.depth_factor,
                "param_ratio": s_params / max(1, t_params),
                "speedup_cpu": t_ms / s_ms if s_ms > 0 else None,
            },
            "timing": {
                "output_size": [lr_size * self.scale, lr_size * self.scale],
                "batch": 1,
                "threads": torch.get_num_threads(),
            },
            "metric_units": units,
            "global_step": int(self.global_step),
        }

    def on_fit_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        self.report = self.build_report()
        out = Path(self.trainer.default_root_dir) / "distill_report.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.report, indent=2, sort_keys=True), encoding="utf-8")
        self.report_path = out

    def card_info(self) -> dict[str, Any]:
        info = super().card_info()
        d = self.distill_cfg
        info["distill"] = {
            "teacher": Path(d.teacher).name,
            "teacher_architecture": self.teacher_card["architecture"],
            "teacher_kwargs": self.teacher_card["kwargs"],
            "width_factor": d.width_factor,
            "depth_factor": d.depth_factor,
            "teacher_ensemble": d.teacher_ensemble,
        }
        return info
