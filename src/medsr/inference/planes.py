"""One loaded upscaler, fed planes from one or several images.

:class:`PlaneUpscaler` is how :func:`medsr.inference.predictor.upscale` runs, split into its
three steps so that a batch (:mod:`medsr.batch`) can load the model once and mix inputs:

``prepare(image)``
    planes of the image in model space (``(P, C, H, W)`` float32) and how to put them back;
``forward(x)``
    the network on a stack of planes (from one image, or on GPU from several: see
    :meth:`PlaneUpscaler.run_many`);
``finish(job)``
    back to image units, clipped to the input's range, a MedImage on the finer grid with the
    same ``meta["derivation"]`` as ``medsr upscale``.

``upscale(image)`` chains them: it is what :func:`medsr.inference.predictor.upscale` calls.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsr.errors import InvalidParameterError
from medsr.image import MedImage
from medsr.models.resolver import LoadedModel

__all__ = ["BASES", "PRECISIONS", "PlaneJob", "PlaneUpscaler", "check_precision"]

#: network arithmetic: ``fp32`` (the default: what the model cards' numbers were measured with),
#: ``bf16`` autocast (about 2× faster on CPUs with AVX-512 BF16/AMX and on recent GPUs; on the
#: corpus CT it changes outputs by 1-2 HU RMS, up to 25 HU: ``benchmarks/results/speed.md``),
#: ``fp16`` (CUDA)
PRECISIONS = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}  # → torch autocast dtype
#: base interpolators (the classical peer of a physics; the low band learned models keep)
BASES = ("bicubic", "kspace")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a clear error."""
    if precision not in PRECISIONS:
        raise InvalidParameterError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision


@dataclass(eq=False)
class PlaneJob:
    """The planes of one image on their way through the model."""

    image: MedImage
    planes: np.ndarray  # (P, C, H, W) normalised
    norm: Any
    per_plane_channels: int
    out: np.ndarray  # (P, C, H·s, W·s) in image units
    tag: Any = None
    next: int = 0  # planes sent to the model so far
    done: int = 0  # planes back from the model
    error: BaseException | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return int(self.planes.shape[0])

    @property
    def shape_key(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.planes.shape[1:])


#: CT: no tissue is below air (−1000 HU); a constant value below this, covering at least
#: :data:`CT_PADDING_MIN_FRACTION` of a slice, is the scanner's fill outside the reconstruction
#: circle even when the header has no PixelPaddingValue
CT_PADDING_BELOW_HU = -1024.0
CT_PADDING_MIN_FRACTION = 0.01


def _padding_of(image: MedImage) -> np.ndarray | None:
    """Boolean ``(C, Z, Y, X)`` mask of pixels that hold no data, or None: DICOM
    PixelPaddingValue/range and non-finite voxels (:func:`medsr.io.padding.padding_mask`), and
    for CT a constant fill below −1024 HU (see :data:`CT_PADDING_BELOW_HU`)."""
    from medsr.io.padding import padding_mask
    from medsr.modality import modality_group

    mask = padding_mask(image)
    if not image.channels and modality_group(image.modality) == "CT" and image.units == "HU":
        arr = image.array
        for k in range(arr.shape[0]):
            low = float(arr[k].min())
            if low < CT_PADDING_BELOW_HU:
                fill = arr[k] == np.float32(low)
                if fill.mean() >= CT_PADDING_MIN_FRACTION:
                    if mask is None:
                        mask = np.zeros(arr.shape, dtype=bool)
                    mask[k] |= fill
    if mask is None or not mask.any():
        return None
    return mask if image.channels else mask[None]


class PlaneUpscaler:
    """A model loaded once (``model`` as for :func:`medsr.upscale`) and applied plane by plane.

    ``model`` may also be another :class:`PlaneUpscaler`: its loaded network is shared (not
    reloaded, not moved), so ``medsr.upscale(image, scale, loaded)`` — and everything built on it,
    e.g. the test-time augmentation of :mod:`medsr.safeguards.maps` — reuses a batch's model.
    ``device="auto"`` then means the shared network's device, and ``precision=None`` its
    precision (otherwise ``fp32``; see :data:`PRECISIONS`).
    """

    loaded: LoadedModel
    device: Any  # torch.device
    net: Any  # torch.nn.Module
    net_channels: int
    channels_last: bool
    precision: str
    base_name: str
    low_band_cutoff: float
    base_net: Any
    batch_size: int
    autocast_dtype: Any

    def __init__(
        self,
        model: str | os.PathLike[str] | LoadedModel | PlaneUpscaler | None = None,
        scale: int = 2,
        *,
        device: str = "auto",
        batch_size: int | None = None,
        clip: bool = True,
        tile: int | None = 512,
        precision: str | None = None,
        base: str | None = None,
        low_band: bool | float | None = None,
    ):
        from medsr.inference.device import resolve_device
        from medsr.models.resolver import check_scale, resolve_model

        self.scale = check_scale(scale)
        self.clip = clip
        self.tile = tile
        if isinstance(model, PlaneUpscaler):
            if precision is None:
                precision = model.precision  # a shared network keeps its arithmetic
            if base is None:
                base = model.base_name
            if low_band is None:  # a shared network keeps its guard (or its absence)
                low_band = model.low_band_cutoff or False
            if model.scale != self.scale:
                raise InvalidParameterError(
                    f"the loaded model {model.name!r} upscales ×{model.scale}, not ×{self.scale}"
                )
            if device != "auto" and resolve_device(device).type != model.device.type:
                raise InvalidParameterError(
                    f"the loaded model {model.name!r} runs on {model.device.type}, not {device}"
                )
            self.precision = check_precision(precision or "fp32")
            self.loaded, self.device, self.net = model.loaded, model.device, model.net
            self.net_channels = model.net_channels
            self.channels_last = model.channels_last
            self._set_low_band(base, low_band)
            self._settle(batch_size)
            return
        self.precision = check_precision(precision or "fp32")
        self.device = resolve_device(device)
        self.loaded = resolve_model(model, scale=self.scale, kinds=("in-plane", "classical"))
        net = self.loaded.net
        self.net = net.to(self.device).eval()
        self.net_channels = int(getattr(net, "in_channels", 1))
        import torch

        # channels_last halves a network's time on CPU (benchmarks/results/speed.md: fast-x2 at
        # 512², 600 → 281 ms); classical interpolators have no weights and gain nothing
        self.channels_last = self.device.type == "cpu" and any(True for _ in self.net.parameters())
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self._set_low_band(base, low_band)
        self._settle(batch_size)

    def _set_low_band(self, base: str | None, low_band: bool | float | None) -> None:
        """The base interpolator (the physics' peer) and the low-band projection of learned models."""
        from medsr.models.lowband import DEFAULT_CUTOFF
        from medsr.models.registry import create_model

        self.base_name = str(base or "bicubic")
        if self.base_name not in BASES:
            raise InvalidParameterError(f"base interpolator must be one of {', '.join(BASES)}; got {base!r}")
        cutoff = DEFAULT_CUTOFF if low_band is None or low_band is True else float(low_band or 0.0)
        self.low_band_cutoff = cutoff if self.loaded.learned and cutoff > 0 else 0.0
        self.base_net = create_model(self.base_name, scale=self.scale) if self.low_band_cutoff else None

    @property
    def model(self) -> str:
        """What the model was resolved from (a shipped name, a path, a registry name)."""
        return self.loaded.source or self.loaded.name

    @property
    def card(self) -> dict[str, Any]:
        return self.loaded.card

    def _settle(self, batch_size: int | None) -> None:
        """What depends on the device, once it is known: plane batch and autocast dtype."""
        import torch

        if self.precision == "fp16" and self.device.type != "cuda":
            raise InvalidParameterError("precision fp16 runs on a CUDA GPU only; use bf16 or fp32 on the CPU")
        dtype_name = PRECISIONS[self.precision]
        self.autocast_dtype = getattr(torch, dtype_name) if dtype_name else None
        # one plane at a time is fastest on CPU (fast-x2 at 512², end to end: 256 ms per slice at
        # batch 1 vs 397 ms at batch 8, benchmarks/results/speed_pipeline.md: the activations of 8
        # planes fall out of the caches)
        default = 1 if self.device.type == "cpu" else 8
        self.batch_size = default if batch_size is None else max(1, int(batch_size))

    @property
    def name(self) -> str:
        return self.loaded.name

    # ------------------------------------------------------------------------ steps
    def prepare(self, image: MedImage, tag: Any = None) -> PlaneJob:
        from medsr.intensity import Normalizer

        source = image
        pad = _padding_of(image)
        if pad is not None:  # padding is never fed as signal: the network sees the darkest tissue
            filled = image.channel_first().copy()
            valid = filled[~pad]
            filled[pad] = float(valid.min()) if valid.size else 0.0
            image = image.replace(array=filled if image.channels else filled[0])
        cf = image.channel_first()  # (C, Z, Y, X)
        c, z, h, w = cf.shape
        if self.net_channels == c and c > 1:
            planes = cf.transpose(1, 0, 2, 3)  # (Z, C, Y, X): colour seen together
            per = c
        else:
            planes = cf.reshape(c * z, 1, h, w)
            per = 1
        norm = Normalizer.from_card(self.card, image)
        s = self.scale
        out = np.empty((planes.shape[0], per, h * s, w * s), dtype=np.float32)
        job = PlaneJob(source, norm.forward(planes), norm, per, out, tag=tag)
        if pad is not None:
            job.meta["padding"] = pad
        return job

    def needs_tiling(self, job: PlaneJob) -> bool:
        h, w = job.planes.shape[-2:]
        return bool(self.tile) and (h > self.tile or w > self.tile)

    def forward(self, x: np.ndarray, tiled: bool = False) -> np.ndarray:
        """The network on normalised planes ``(N, C, H, W)`` → ``(N, C, H·s, W·s)`` (model space)."""
        import torch

        from medsr.inference.tiling import tiled_forward

        dtype = self.autocast_dtype
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
            if self.channels_last:
                t = t.contiguous(memory_format=torch.channels_last)
            if tiled and self.tile:
                pred = tiled_forward(self.net, t, tile=self.tile, batch_size=self.batch_size)
            else:
                pred = self.net(t)
            if self.base_net is not None:  # on the whole plane, after tiling (models.lowband)
                from medsr.models.lowband import keep_low_band

                pred = keep_low_band(pred, t, self.base_net, self.scale, self.low_band_cutoff)
            return pred.float().contiguous().cpu().numpy()

    def run_job(self, job: PlaneJob) -> PlaneJob:
        """All planes of one job, ``batch_size`` at a time (the predictor's chunking)."""
        tiled = self.needs_tiling(job)
        for start in range(0, job.total, self.batch_size):
            stop = min(start + self.batch_size, job.total)
            job.out[start:stop] = job.norm.inverse(self.forward(job.planes[start:stop], tiled))
        job.next = job.done = job.total
        return job

    def finish(self, job: PlaneJob) -> MedImage:
        image = job.image
        c, z, h, w = image.channel_first().shape
        s = self.scale
        out = job.out
        result = (
            out.transpose(1, 0, 2, 3)
            if job.per_plane_channels > 1
            else out.reshape(c, z, h * s, w * s)
        )
        pad = job.meta.get("padding")
        if self.clip:
            cf = image.channel_first()
            inside = cf[~pad] if pad is not None else cf
            inside = inside[np.isfinite(inside)]
            if inside.size:
                np.clip(result, float(inside.min()), float(inside.max()), out=result)
        if pad is not None:  # padding kept exact: every output pixel of a padding pixel is it
            up = np.repeat(np.repeat(pad, s, axis=-2), s, axis=-1)
            orig = np.repeat(np.repeat(image.channel_first(), s, axis=-2), s, axis=-1)
            result[up] = orig[up]
        arr = result if image.channels else result[0]
        name = self.name
        sr = image.resampled(arr, step=f"in-plane upscale x{s} ({name})")
        meta = dict(sr.meta)
        meta["derivation"] = {
            "method": "super-resolution" if self.loaded.learned else "interpolation",
            "model": name,
            "scale": s,
            "axes": "in-plane",
            "model_version": self.card.get("version"),
            "model_checksum": self.loaded.checksum,
            "precision": self.precision,
        }
        if self.low_band_cutoff:
            meta["derivation"]["low_band"] = {"base": self.base_name, "cutoff": self.low_band_cutoff}
        if pad is not None:
            meta["derivation"]["padding_pixels_kept"] = int(pad.sum())
        return sr.replace(meta=meta)

    def upscale(self, image: MedImage) -> MedImage:
        """One image, as :func:`medsr.inference.predictor.upscale` does it."""
        return self.finish(self.run_job(self.prepare(image)))

    # ------------------------------------------------------------- several images at once
    def run_many(self, jobs: list[PlaneJob], max_planes: int | None = None) -> list[PlaneJob]:
        """One forward pass over planes taken from several jobs of the same plane shape.

        Takes planes from ``jobs`` in order (those with the first job's shape, skipping jobs
        that need tiling) up to ``max_planes`` (default ``batch_size``), runs the network once,
        scatters the results back; returns the jobs that are now complete. A failing forward
        pass marks every job that contributed planes as failed (``job.error``) and returns it.
        """
        limit = max_planes or self.batch_size
        head = next((j for j in jobs if j.next < j.total), None)
        if head is None:
            return [j for j in jobs if j.done >= j.total]
        if self.needs_tiling(head):
            try:
                self.run_job(head)
            except Exception as exc:
                head.error = exc
            return [head]
        key = head.shape_key
        parts: list[tuple[PlaneJob, int, int]] = []
        taken = 0
        for job in jobs:
            if taken >= limit:
                break
            if job.next >= job.total or job.shape_key != key or self.needs_tiling(job):
                continue
            n = min(limit - taken, job.total - job.next)
            parts.append((job, job.next, job.next + n))
            job.next += n
            taken += n
        x = (
            np.concatenate([j.planes[a:b] for j, a, b in parts])
            if len(parts) > 1
            else parts[0][0].planes[parts[0][1] : parts[0][2]]
        )
        try:
            pred = self.forward(x)
        except Exception as exc:
            for job, _, _ in parts:
                job.error = exc
            return list(dict.fromkeys(j for j, _, _ in parts))
        pos = 0
        for job, a, b in parts:
            job.out[a:b] = job.norm.inverse(pred[pos : pos + (b - a)])
            job.done += b - a
            pos += b - a
        return [j for j in dict.fromkeys(j for j, _, _ in parts) if j.done >= j.total]
