"""Training of the slice interpolators: a compact plain-PyTorch loop (CPU-friendly).

Lightning is not used here: the three recipes (L1; L1 + adversarial; diffusion ε-loss) are a
few lines each and a plain loop keeps tiny test runs fast. Data are triplets of consecutive
slices ``(i−1, i, i+1)`` along every axis (``axes``) of each training volume, each volume
normalised on its own (percentile 0.5–99.5, recorded in the card). Splits are volume-wise:
callers pass training and held-out volumes separately (see :func:`split_volumes`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsr.errors import InvalidParameterError
from medsr.image import MedImage
from medsr.interpolation.core import DEFAULT_NORMALIZATION, axis_index, volume_range

DEFAULTS: dict[str, dict[str, Any]] = {
    "interp-cnn": {"lr": 2e-4},
    "interp-gan": {"lr": 2e-4, "adv_weight": 1e-3, "disc_features": 32},
    "fast-ddpm": {"lr": 2e-4},
}


def load_volumes(items: Sequence[Any]) -> list[tuple[str, MedImage]]:
    """``(name, volume)`` for MedImages, paths or ``corpus:NAME`` entries; 4-D series are split
    into their 3-D frames (named ``name[t]``, kept together by :func:`split_volumes`)."""
    from medsr.io import load_image
    from medsr.training.data import resolve_corpus

    out: list[tuple[str, MedImage]] = []
    for i, item in enumerate(items):
        if isinstance(item, MedImage):
            name, img = f"volume{i}", item
        else:
            raw = str(item)
            path = resolve_corpus(raw[len("corpus:"):]) if raw.startswith("corpus:") else Path(raw)
            name, img = path.name, load_image(path)
        if img.channels == "time":
            out += [(f"{name}[{t}]", img.replace(array=img.array[t], channels=None)) for t in range(img.array.shape[0])]
        elif img.channels:
            raise InvalidParameterError(f"{name}: slice interpolation needs grayscale volumes")
        else:
            out.append((name, img))
    return out


def split_volumes(names: Sequence[str], held_out: float = 0.25, seed: int = 0) -> tuple[list[str], list[str]]:
    """Volume-wise (patient-wise) split: frames ``x[t]`` of one file always land together."""
    groups = sorted({n.split("[")[0] for n in names})
    rng = np.random.default_rng(seed)
    rng.shuffle(groups)
    k = max(1, round(len(groups) * held_out)) if len(groups) > 1 else 0
    test = set(groups[:k])
    return [n for n in names if n.split("[")[0] not in test], [n for n in names if n.split("[")[0] in test]


class TripletSampler:
    """Random ``(neighbours (2, p, p), target (1, p, p))`` patches from normalised volumes."""

    def __init__(self, volumes: Sequence[MedImage], patch: int, axes: Sequence[str | int] = ("z", "y", "x"), seed: int = 0,
                 normalization: dict[str, Any] | None = None):
        self.patch = int(patch)
        self.rng = np.random.default_rng(seed)
        self.stacks: list[np.ndarray] = []
        for img in volumes:
            lo, hi = volume_range(img.array, normalization or DEFAULT_NORMALIZATION)
            norm = ((img.array - lo) / (hi - lo)).astype(np.float32)
            for ax in axes:
                a = axis_index(ax)
                if norm.shape[a] >= 3:
                    st = np.moveaxis(norm, a, 0)
                    ph, pw = max(0, self.patch - st.shape[1]), max(0, self.patch - st.shape[2])
                    if ph or pw:
                        st = np.pad(st, ((0, 0), (0, ph), (0, pw)), mode="reflect" if min(st.shape[1:]) > max(ph, pw) else "edge")
                    self.stacks.append(np.ascontiguousarray(st))
        if not self.stacks:
            raise InvalidParameterError("no training volume has 3 or more slices along the requested axes")
        self.weights = np.array([s.shape[0] - 2 for s in self.stacks], dtype=float)
        self.weights /= self.weights.sum()

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        p = self.patch
        cond = np.empty((n, 2, p, p), np.float32)
        tgt = np.empty((n, 1, p, p), np.float32)
        for b in range(n):
            st = self.stacks[self.rng.choice(len(self.stacks), p=self.weights)]
            i = self.rng.integers(1, st.shape[0] - 1)
            y = self.rng.integers(0, st.shape[1] - p + 1)
            x = self.rng.integers(0, st.shape[2] - p + 1)
            trip = st[i - 1 : i + 2, y : y + p, x : x + p]
            if self.rng.random() < 0.5:
                trip = trip[::-1]  # reverse slice order: the task is symmetric
            if self.rng.random() < 0.5:
                trip = trip[:, :, ::-1]
            if self.rng.random() < 0.5:
                trip = trip[:, ::-1, :]
            cond[b, 0], tgt[b, 0], cond[b, 1] = trip[0], trip[1], trip[2]
        return cond, tgt


def train_interpolator(
    model_name: str,
    volumes: Sequence[Any],
    steps: int,
    *,
    patch: int = 128,
    seed: int = 0,
    out: str | os.PathLike[str] = "interp.safetensors",
    batch_size: int = 4,
    lr: float | None = None,
    model_kwargs: dict[str, Any] | None = None,
    axes: Sequence[str | int] = ("z", "y", "x"),
    adv_weight: float | None = None,
    device: str = "cpu",
    log_every: int = 0,
) -> Path:
    """Train ``interp-cnn``, ``interp-gan`` or ``fast-ddpm`` for ``steps`` steps; return the weights.

    ``volumes``: MedImages, paths or ``corpus:NAME`` (training volumes only — hold test volumes
    out yourself, e.g. with :func:`split_volumes`). The ``.safetensors`` file carries the model
    card: architecture + kwargs, normalisation, training volumes/axes/steps, final loss.
    """
    import torch

    from medsr.interpolation import models as _models  # noqa: F401
    from medsr.models.registry import create_model
    from medsr.models.weights import save_model
    from medsr.training.losses import discriminator_loss, generator_adversarial_loss

    if model_name not in DEFAULTS:
        raise InvalidParameterError(f"model must be one of {', '.join(DEFAULTS)}, got {model_name!r}")
    cfg = dict(DEFAULTS[model_name])
    if lr is not None:
        cfg["lr"] = lr
    if adv_weight is not None:
        cfg["adv_weight"] = adv_weight
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    named = load_volumes(volumes)
    sampler = TripletSampler([v for _, v in named], patch, axes, seed)
    kwargs = dict(model_kwargs or {})
    net = create_model(model_name, **kwargs).to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"], betas=(0.9, 0.99))
    disc = d_opt = None
    if model_name == "interp-gan":
        disc = create_model("patchgan", in_channels=3, num_features=cfg["disc_features"], num_blocks=2).to(device).train()
        d_opt = torch.optim.Adam(disc.parameters(), lr=cfg["lr"], betas=(0.5, 0.999))
    t0 = time.perf_counter()
    losses: list[float] = []
    for step in range(int(steps)):
        c_np, t_np = sampler.batch(batch_size)
        cond = torch.from_numpy(c_np).to(device)
        tgt = torch.from_numpy(t_np).to(device)
        if model_name == "fast-ddpm":
            loss = net.training_loss(cond, tgt, generator=gen)
        else:
            pred = net(cond)
            loss = torch.nn.functional.l1_loss(pred, tgt)
            if disc is not None:
                real = torch.cat([cond[:, :1], tgt, cond[:, 1:]], 1)
                fake = torch.cat([cond[:, :1], pred, cond[:, 1:]], 1)
                d_opt.zero_grad(set_to_none=True)
                d_loss = discriminator_loss(disc(real), disc(fake.detach()))
                d_loss.backward()
                d_opt.step()
                loss = loss + cfg["adv_weight"] * generator_adversarial_loss(None, disc(fake))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            print(f"[{model_name}] step {step + 1}/{steps} loss {np.mean(losses[-log_every:]):.4f}", flush=True)
    net.eval()
    from medsr import __version__ as version  # type: ignore[attr-defined]

    card = {
        "architecture": model_name,
        "kwargs": kwargs,
        "task": "slice-interpolation",
        "scale": 2,
        "normalization": DEFAULT_NORMALIZATION,
        "training": {
            "volumes": [n for n, _ in named],
            "axes": [str(a) for a in axes],
            "steps": int(steps),
            "patch": int(patch),
            "batch_size": int(batch_size),
            "seed": int(seed),
            "lr": cfg["lr"],
            **({"adv_weight": cfg["adv_weight"], "discriminator": "patchgan (conditional, 3 channels)"} if disc is not None else {}),
            "final_loss": float(np.mean(losses[-max(1, min(20, len(losses))):])) if losses else None,
            "seconds": round(time.perf_counter() - t0, 2),
        },
        "version": version,
    }
    return save_model(net, out, card)
