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

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsr.errors import InvalidParameterError, whole_number
from medsr.image import MedImage
from medsr.inference.precision import (
    PRECISIONS,
    check_precision,
    check_precision_on,
    resolve_precision,
)
from medsr.io.padding import block_mask, carry_nonfinite, fill_blocks, fill_no_data
from medsr.models.resolver import LoadedModel

__all__ = ["BASES", "PRECISIONS", "PlaneJob", "PlaneUpscaler", "check_precision"]

log = logging.getLogger(__name__)

#: base interpolators (the classical peer of a physics; the low band learned models keep)
BASES = ("bicubic", "kspace")
#: on a CUDA GPU, networks that can (``RLFN.widened``) run with their channel counts rounded up to
#: this multiple — the same function (zero channels), widths the tensor cores take. On an H200
#: (benchmarks/results/device_h200/speed_cuda.md, default-x2's 46 → 48 channels, bf16, batch 64)
#: 1,098 → 1,157 slices/s at 256² and 283 → 299 at 512², channels-last on top 1,442 and 370;
#: None: as trained.
CUDA_CHANNEL_MULTIPLE: int | None = 8


@dataclass(eq=False)
class PlaneJob:
    """The planes of one image on their way through the model.

    ``out`` fills chunk by chunk with finished planes (image units, clipped, padding kept, the
    detail scaled by ``detail_gain`` when set, over the ``detail_over`` interpolation when set);
    with ``keep_base`` the base interpolation the network's output was built on fills ``base``
    the same way (padding kept, not clipped).
    """

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
    # clip range: the input's values outside padding; an image over time: each time point's,
    # one per plane ((P, 1, 1, 1) arrays, :func:`_plane_bounds`)
    bounds: tuple[Any, Any] | None = None
    # base + gain·(output − base), the self-check's scaling; an image over time whose time
    # points' differ: one per plane ((P, 1, 1, 1)), only on the planes ``detail_planes`` marks
    # (the time points whose detail the self-check scaled), ``detail_time`` one per time point
    detail_gain: Any = None
    detail_over: str | None = None  # ... added to this interpolator instead of the base
    detail_planes: np.ndarray | None = None
    detail_time: list[float | None] | None = None
    base: np.ndarray | None = None  # (P, C, H·s, W·s) base interpolation, when kept

    @property
    def total(self) -> int:
        return int(self.planes.shape[0])

    @property
    def shape_key(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.planes.shape[1:])

    @property
    def needs_base(self) -> bool:
        return self.base is not None or self.detail_gain is not None


#: weights files whose networks stay built for inference in this process, most recent last
NETWORK_CACHE_SIZE = 4
_NETWORKS: OrderedDict[tuple[str, str, str], tuple[Any, tuple[tuple[int, int], ...]]] = (
    OrderedDict()
)
_NETWORKS_LOCK = threading.Lock()


def _network_state(net: Any) -> tuple[tuple[int, int], ...]:
    """What identifies the values of ``net``'s parameters and buffers (:func:`medsr.models.fused._state`)."""
    from medsr.models.fused import _state

    return _state(*net.parameters(), *net.buffers())


def _reuse_network(loaded: LoadedModel, device: Any) -> tuple[str, str, str] | None:
    """Give ``loaded`` (resolved for inference alone: :attr:`LoadedModel.inference_only`, its
    network not loaded yet) the network an earlier upscaler of the same weights file built on
    ``device``, when its parameters have not changed since; returns the key to keep the network
    under (:func:`_keep_network`) once the upscaler has put it on its device and layout, or None
    for a model that is not a learned weights file or whose network is loaded already.

    A process that upscales file after file (``medsr.upscale_file`` in a loop, a notebook) then
    loads each network once, and reuses what its first passes prepared (oneDNN-packed bf16
    weights, folded convolutions: :mod:`medsr.models.fused`): ~7 ms of a 512² DICOM slice with
    ``fast-x2`` on 2 Xeon cores. Upscalers share it as those built from another
    :class:`PlaneUpscaler` do (inference only: nothing in medsr changes its weights); one whose
    weights were changed in place since (someone trained it) is loaded afresh. A caller's own
    ``LoadedModel`` (``resolve_model`` without ``inference_only``), :func:`medsr.load_pretrained`
    and adaptation (through-plane, zero-shot) load their own networks as before."""
    if not loaded.learned or loaded.path is None or loaded._net is not None:
        return None
    key = (loaded.checksum, str(loaded.path), str(device))
    with _NETWORKS_LOCK:
        hit = _NETWORKS.get(key)
        if hit is not None and _network_state(hit[0]) == hit[1]:
            _NETWORKS.move_to_end(key)
            loaded._net = hit[0]
        else:
            _NETWORKS.pop(key, None)
    return key


def _keep_network(key: tuple[str, str, str], net: Any) -> None:
    """Keep ``net`` (its current values) for :func:`_reuse_network`; the least recently used
    beyond :data:`NETWORK_CACHE_SIZE` are let go."""
    with _NETWORKS_LOCK:
        _NETWORKS[key] = (net, _network_state(net))
        _NETWORKS.move_to_end(key)
        while len(_NETWORKS) > NETWORK_CACHE_SIZE:
            _NETWORKS.popitem(last=False)


def _as_planes(cf: np.ndarray, per: int) -> np.ndarray:
    """``(C, Z, Y, X)`` → ``(P, per, Y, X)``, the layout of :attr:`PlaneJob.planes` (a view)."""
    c, z, h, w = cf.shape
    return cf.transpose(1, 0, 2, 3) if per > 1 else cf.reshape(c * z, 1, h, w)


class PlaneUpscaler:
    """A model loaded once (``model`` as for :func:`medsr.upscale`) and applied plane by plane.

    ``model`` may also be another :class:`PlaneUpscaler`: its loaded network is shared (not
    reloaded, not moved), so ``medsr.upscale(image, scale, loaded)`` — and everything built on it,
    e.g. the test-time augmentation of :mod:`medsr.safeguards.maps` — reuses a batch's model.
    ``device="auto"`` then means the shared network's device, and ``precision=None`` its
    precision (otherwise ``fp32``; ``auto`` picks per device and model:
    :mod:`medsr.inference.precision`).

    One pass per plane batch: the base interpolation (bicubic, or zero-filled k-space for k-space
    physics) is computed once, in fp32, and serves as the network's residual base (networks
    with ``residual_base = "bicubic"``), as the low band the output keeps
    (:mod:`medsr.models.lowband`), and — kept on request — for the pipeline's detail scaling and
    consistency reference. Only the learned residual runs in bf16/fp16.
    """

    loaded: LoadedModel
    device: Any  # torch.device
    net: Any  # torch.nn.Module
    net_channels: int
    channels_last: bool
    precision: str
    precision_requested: str
    precision_note: str
    base_name: str
    low_band_cutoff: float
    range_margin: float | None
    base_net: Any
    batch_size: int
    autocast_dtype: Any
    fp16_fallbacks: int
    residual_split: bool
    #: what runs under autocast (``net.detail`` or ``net``, with the bf16 recipe) and how many of
    #: the network's leading blocks that recipe keeps in fp32
    _net_call: Any
    fp32_blocks: int
    #: the defaults of other physics that users of this upscaler switched to (loaded once)
    _alternates: dict[str | None, PlaneUpscaler]

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
        range_guard: bool | float | None = None,
    ):
        from medsr.inference.device import resolve_device
        from medsr.models.resolver import check_scale, physics_default, resolve_model

        self.scale = check_scale(scale)
        self.clip = clip
        # counts: batch_size=0 was taken as 1 and a negative tile as the smallest one, silently
        self.tile = whole_number(tile, "tile (LR px per tile edge; 0 or None: no tiling)", least=0)
        batch_size = whole_number(batch_size, BATCH_SIZE, least=1)
        # the default model follows the stated physics: with no model named, a base of its own
        # (zero-filled k-space for k-space data) runs the default trained for it when shipped
        shared = model if isinstance(model, PlaneUpscaler) else None
        if base is None and shared is not None:
            base = shared.base_name
        physics = base if base not in (None, "bicubic") else None
        given = shared.loaded if shared is not None else model
        if isinstance(given, LoadedModel) and physics_default(given, self.scale, physics):
            switched_from = shared
            if shared is not None:  # another network with the shared one's settings
                device = shared.device.type if device == "auto" else device
                precision = shared.precision_requested if precision is None else precision
                if low_band is None:
                    low_band = shared.low_band_cutoff or False
                if range_guard is None:
                    range_guard = False if shared.range_margin is None else shared.range_margin
                # a batch asks for it once per input: load it once
                model = shared._alternates.get(physics)
            else:
                model = None
        else:
            switched_from = None
        if isinstance(model, PlaneUpscaler):
            if precision is None:
                precision = model.precision  # a shared network keeps its arithmetic
            if base is None:
                base = model.base_name
            if low_band is None:  # a shared network keeps its guards (or their absence)
                low_band = model.low_band_cutoff or False
            if range_guard is None:
                range_guard = False if model.range_margin is None else model.range_margin
            if model.scale != self.scale:
                raise InvalidParameterError(
                    f"the loaded model {model.name!r} upscales ×{model.scale}, not ×{self.scale}"
                )
            if device != "auto" and resolve_device(device).type != model.device.type:
                raise InvalidParameterError(
                    f"the loaded model {model.name!r} runs on {model.device.type}, not {device}"
                )
            self.loaded, self.device, self.net = model.loaded, model.device, model.net
            self.net_channels = model.net_channels
            self.channels_last = model.channels_last
            if precision == model.precision:  # shared arithmetic, and why it was chosen
                self.precision_requested, self.precision = (
                    model.precision_requested,
                    model.precision,
                )
                self.precision_note = model.precision_note
            else:
                self._set_precision(precision)
            same = self.precision == model.precision
            self._set_network(model._net_call if same else None)
            if same:  # its call (perhaps compiled) carries its recipe
                self.fp32_blocks = model.fp32_blocks
            self._set_low_band(base, low_band)
            self._set_range_guard(range_guard)
            self._settle(batch_size)
            self._alternates = model._alternates
            return
        self.device = resolve_device(device)
        self.loaded = resolve_model(
            model, scale=self.scale, kinds=("in-plane", "classical"), physics=physics,
            inference_only=True,
        )  # fmt: skip
        # resolved for inference alone: an earlier upscaler's network, when unchanged since
        kept = _reuse_network(self.loaded, self.device) if self.loaded.inference_only else None
        net = self.loaded.net
        self.net = net.to(self.device).eval()
        self.net_channels = int(getattr(net, "in_channels", 1))
        import torch

        # channels_last halves a network's time on CPU (benchmarks/results/speed.md: fast-x2 at
        # 512², 600 → 281 ms) and gains 10-25 % on a GPU (device_h200/speed_cuda.md: default-x2
        # bf16 at 256², 1,157 → 1,442 slices/s, widened); classical interpolators gain nothing
        self.channels_last = self.device.type in ("cpu", "cuda") and any(
            True for _ in self.net.parameters()
        )
        if (
            self.device.type == "cuda"
            and CUDA_CHANNEL_MULTIPLE
            and callable(getattr(self.net, "widened", None))
        ):
            self.net = self.net.widened(
                CUDA_CHANNEL_MULTIPLE
            )  # the same function, tensor-core widths
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        if kept is not None:  # as it is now (on its device, in its layout): reused while unchanged
            _keep_network(kept, self.loaded.net)
        self._set_precision(precision)
        self._set_network(None)
        self._set_low_band(base, low_band)
        self._set_range_guard(range_guard)
        self._settle(batch_size)
        self._alternates = {}
        if switched_from is not None:
            switched_from._alternates[physics] = self

    def _set_precision(self, precision: str | None) -> None:
        """The arithmetic asked for (``auto`` resolved for this device and model)."""
        self.precision_requested = check_precision(precision or "fp32")
        self.precision, self.precision_note = resolve_precision(
            self.precision_requested, self.device, self.loaded.checksum, self.loaded.learned
        )

    def _set_network(self, call: Any, *, fp32_blocks: int | None = None) -> None:
        """What runs under autocast: ``net.detail`` for a residual over bicubic, else ``net``
        (``call``: a shared upscaler's, same precision). In bf16, the leading blocks the model's
        measured recipe keeps in fp32 (:func:`medsr.inference.precision.bf16_fp32_blocks`);
        ``fp32_blocks`` sets that number instead (``benchmarks/precision.py`` measures each)."""
        import functools
        import inspect

        from medsr.inference.precision import bf16_fp32_blocks

        self.residual_split = getattr(self.net, "residual_base", None) == "bicubic" and callable(
            getattr(self.net, "detail", None)
        )
        self.fp32_blocks = 0
        if call is None:
            call = self.net.detail if self.residual_split else self.net
            if fp32_blocks is not None:
                blocks = fp32_blocks
            else:
                blocks = bf16_fp32_blocks(self.loaded.checksum) if self.precision == "bf16" else 0
            if (
                blocks
                and self.residual_split
                and "fp32_blocks" in inspect.signature(self.net.detail).parameters
            ):
                call = functools.partial(self.net.detail, fp32_blocks=blocks)
                self.fp32_blocks = blocks
        self._net_call = call

    def _set_low_band(self, base: str | None, low_band: bool | float | None) -> None:
        """The base interpolator (the physics' peer) and the low-band projection of learned models."""
        from medsr.models.lowband import DEFAULT_CUTOFF
        from medsr.models.registry import create_model

        self.base_name = str(base or "bicubic")
        if self.base_name not in BASES:
            raise InvalidParameterError(
                f"base interpolator must be one of {', '.join(BASES)}; got {base!r}"
            )
        cutoff = DEFAULT_CUTOFF if low_band is None or low_band is True else float(low_band or 0.0)
        self.low_band_cutoff = cutoff if self.loaded.learned and cutoff > 0 else 0.0
        self.base_net = (
            create_model(self.base_name, scale=self.scale) if self.loaded.learned else None
        )
        self._classical_nets: dict[str, Any] = {}  # detail_over interpolators, built on first use
        self._bicubic = create_model("bicubic", scale=self.scale) if self.residual_split else None

    def _set_range_guard(self, range_guard: bool | float | None) -> None:
        """The overshoot guard of learned models (:mod:`medsr.models.range_guard`): ``None``/``True``
        its default margin, a number that margin, ``False`` off."""
        from medsr.models.range_guard import DEFAULT_MARGIN

        if range_guard is None or range_guard is True:
            margin: float | None = DEFAULT_MARGIN
        elif range_guard is False:
            margin = None
        else:
            margin = float(range_guard)
            if not 0.0 <= margin < float("inf"):
                raise InvalidParameterError(
                    f"the overshoot guard's margin must be a finite number ≥ 0, got {range_guard!r}"
                )
        self.range_margin = margin if self.loaded.learned else None

    def compile(self, **options: Any) -> None:
        """Run the learned part through ``torch.compile`` (GPU throughput; the first passes
        compile, and every new plane shape compiles again)."""
        import torch

        self._net_call = torch.compile(self._net_call, **options)

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

        check_precision_on(self.precision, self.device.type)
        dtype_name = PRECISIONS[self.precision]
        self.autocast_dtype = getattr(torch, dtype_name) if dtype_name else None
        self.fp16_fallbacks = 0  # batches of planes whose fp16 network overflowed: run in fp32
        # one plane at a time is fastest on CPU (fast-x2 at 512², end to end: 256 ms per slice at
        # batch 1 vs 397 ms at batch 8, benchmarks/results/speed_pipeline.md: the activations of 8
        # planes fall out of the caches)
        default = 1 if self.device.type == "cpu" else 8
        self.batch_size = default if batch_size is None else int(batch_size)

    @property
    def name(self) -> str:
        return self.loaded.name

    # ------------------------------------------------------------------------ steps
    def prepare(
        self,
        image: MedImage,
        tag: Any = None,
        *,
        keep_base: bool = False,
        detail_gain: float | Sequence[float | None] | None = None,
        detail_over: str | None = None,
    ) -> PlaneJob:
        """Planes of ``image`` in model space and how to put them back.

        ``keep_base``: keep the base interpolation (``job.base``; learned models);
        ``detail_gain``: scale the network's detail (its output − its base) by this factor (the
        pipeline's self-check) as each plane comes back, and add it to the base, or to the
        classical interpolator ``detail_over`` (e.g. ``"lanczos"``) when given. An image over
        time: one factor per time point, ``None`` where that time point's output is kept as
        the network made it (each time point as the self-check of it alone decides).
        """
        from medsr.intensity import Normalizer

        source = image
        image, mask, _ = fill_no_data(image)  # padding is never fed as signal: the darkest tissue
        pad = None if mask is None else (mask if image.channels else mask[None])  # (C, Z, Y, X)
        cf = image.channel_first()  # (C, Z, Y, X)
        c, z, h, w = cf.shape
        # colour seen together; time points never (a 3-channel network takes no 3 phases as RGB)
        per = c if self.net_channels == c and c > 1 and image.channels != "time" else 1
        planes = _as_planes(cf, per)
        # an image over time: each time point normalised and clipped as it is on its own
        norm = Normalizer.per_time_point(self.card, image).per_plane(z)
        s = self.scale
        out = np.empty((planes.shape[0], per, h * s, w * s), dtype=np.float32)
        job = PlaneJob(source, norm.forward(planes), norm, per, out, tag=tag)
        if pad is not None:
            job.meta["padding"] = pad
        if self.clip:
            job.bounds = _plane_bounds(source, pad)
        if self.loaded.learned:
            if isinstance(detail_gain, (list, tuple)):
                if image.channels != "time" or len(detail_gain) != c:
                    raise ValueError("one detail gain per time point is for an image over time")
                job.detail_time = list(detail_gain)
                each = [1.0 if g is None else float(g) for g in detail_gain]
                job.detail_gain = np.repeat(np.asarray(each, np.float32), z).reshape(-1, 1, 1, 1)
                job.detail_planes = np.repeat([g is not None for g in detail_gain], z)
            else:
                job.detail_gain = detail_gain
            job.detail_over = (
                detail_over if detail_gain is not None and detail_over != self.base_name else None
            )
            if keep_base:
                job.base = np.empty_like(out)
        return job

    @property
    def halo(self) -> int:
        """Context (LR px) a tile keeps on each cut edge: the network's declared reach (RLFN with
        its fixed-spread attention: tiles then reproduce a whole-image pass), else the tiler's
        default."""
        from medsr.inference.tiling import DEFAULT_HALO

        return max(DEFAULT_HALO, getattr(self.net, "reach", None) or 0)

    @property
    def tile_size(self) -> int | None:
        """The tile edge planes are cut to (``None``: never tiled): ``tile``, widened for a network
        that looks far so that the overlap stays a small part of each tile
        (:func:`medsr.inference.tiling.tile_size_for`)."""
        from medsr.inference.tiling import tile_size_for

        return tile_size_for(self.tile, self.halo) if self.tile else None

    def needs_tiling(self, job: PlaneJob) -> bool:
        h, w = job.planes.shape[-2:]
        size = self.tile_size
        return bool(size) and (h > size or w > size)

    def forward_tensor(
        self, t: Any, tiled: bool = False, *, need_base: bool = False
    ) -> tuple[Any, Any]:
        """``(prediction, base)`` for normalised planes ``t`` ``(N, C, H, W)`` on the device.

        Both fp32, in model space, ``(N, C, H·s, W·s)``. ``base`` is the base interpolation of
        ``t`` (:attr:`base_name`) when a learned model computed it (the low band is taken from
        it; ``need_base`` asks for it without the low-band projection), else ``None``.

        A learned model's prediction is the network's output clamped to each LR
        neighbourhood's range plus its margin, judged with the network's low-band drift taken
        out (:mod:`medsr.models.range_guard`, :attr:`range_margin`), with its low band then
        replaced by the base's (:mod:`medsr.models.lowband`): exactly the base's whatever the
        clamp removed.
        """
        from medsr.models.lowband import project_low_band
        from medsr.models.range_guard import clamp_to_local_range, low_band_drift

        pred, detail, up = self._network(t, tiled)
        base: Any = None
        if self.base_net is not None and (self.low_band_cutoff or need_base):
            base = (
                up
                if up is not None and self.base_name == "bicubic"
                else self._base(t, self.base_name)
            )
        if (
            self.range_margin is not None
            and self.low_band_cutoff
            and self.loaded.data_consistency is None
        ):
            # the clamp judged with the network's low-band drift (estimated) taken out, then one
            # exact projection on the whole plane, after tiling (models.range_guard); both in
            # place (pred is this call's own tensor). A detail over the base is pred − base
            # already: its drift is one block mean, not two
            drift = (
                low_band_drift(detail, None, self.scale)
                if detail is not None and base is up
                else low_band_drift(pred, base, self.scale)
            )
            clamp_to_local_range(pred, t, self.scale, self.range_margin, shift=drift, out=pred)
            return project_low_band(pred, base, self.scale, self.low_band_cutoff, out=pred), base
        if self.low_band_cutoff:  # on the whole plane, after tiling (models.lowband)
            pred = project_low_band(pred, base, self.scale, self.low_band_cutoff)
        pred = self._measured_band(pred, t)
        if self.range_margin is not None:  # no overshoot beyond what the input measured nearby
            pred = clamp_to_local_range(pred, t, self.scale, self.range_margin)
            if self.low_band_cutoff:  # what the clamp removed leaves the low band the base's
                pred = project_low_band(pred, base, self.scale, self.low_band_cutoff)
            pred = self._measured_band(pred, t)
        return pred, base

    def _measured_band(self, pred: Any, t: Any) -> Any:
        """A network trained through the k-space data-consistency step (its card's
        ``data_consistency``) runs through it here too, on the whole plane: its training never
        asked it for the band the input measured, so that band is always the input's."""
        if self.loaded.data_consistency != "kspace":
            return pred
        from medsr.models.lowband import keep_measured_kspace

        return keep_measured_kspace(pred, t.float().contiguous(), self.scale)

    def _base(self, t: Any, name: str) -> Any:
        """The ``name`` interpolation of ``t`` in fp32 (outside any autocast)."""
        net = self._bicubic if name == "bicubic" and self._bicubic is not None else self.base_net
        return net(t.float())

    def _network(self, t: Any, tiled: bool) -> tuple[Any, Any, Any]:
        """The learned part under autocast: ``(prediction, detail, up)``, the prediction fp32
        and contiguous. A network that is a residual over bicubic gives ``up + net.detail(t)``
        (``up`` = bicubic(t), fp32), added in fp32 in one pass (a bf16 detail converted exactly
        as it is read), its detail in the network's dtype, and ``up``; any other
        ``(net(t), None, None)``."""
        import torch

        from medsr.inference.tiling import tiled_forward

        up = self._base(t, "bicubic") if self.residual_split else None

        # a plane smaller than the network's training patches (either side) runs reflected out
        # to that size and is cropped back (LoadedModel.min_plane); the base stays the plane's own
        pads = _pads_to(t, self.loaded.min_plane)
        x = t if pads is None else _reflect_pad(t, pads, self.channels_last)

        def run(dtype: Any) -> Any:
            call = self._net_call
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                if tiled and self.tile_size:
                    # a network that declares how far it looks and on which grid (RLFN with its
                    # fixed-spread attention) gets tiles that reproduce a whole-image pass
                    out = tiled_forward(
                        call, x, tile=self.tile_size, halo=self.halo,
                        align=getattr(self.net, "tile_align", 1), batch_size=self.batch_size,
                    )  # fmt: skip
                else:
                    out = call(x, up) if up is not None and pads is None else call(x)
            if pads is None:
                return out
            (top, _), (left, _) = pads
            h, w, s = t.shape[-2], t.shape[-1], self.scale
            return out[..., top * s : (top + h) * s, left * s : (left + w) * s]

        out = run(self.autocast_dtype)
        if self.autocast_dtype is torch.float16 and not bool(torch.isfinite(out).all()):
            # fp16 tops out at 65,504: planes whose activations overflow it run again in fp32
            log.warning("fp16 overflowed in the network on this batch of planes: ran it in fp32")
            self.fp16_fallbacks += 1
            out = run(None)
        if up is None:
            return out.float().contiguous(), None, None
        # the detail is a new tensor, unless fp32 (then the sum takes its place: it is not kept)
        pred = out.add_(up) if out.dtype == up.dtype else torch.add(up, out)
        # a padded plane's crop, a channels-last RGB plane
        return pred.contiguous(), (out if pred is not out else None), up

    def forward(self, x: np.ndarray, tiled: bool = False) -> np.ndarray:
        """The network on normalised planes ``(N, C, H, W)`` → ``(N, C, H·s, W·s)`` (model space)."""
        import torch

        with torch.inference_mode():
            pred, _ = self.forward_tensor(self._to_device(x), tiled)
            return pred.contiguous().cpu().numpy()

    def _to_device(self, x: np.ndarray) -> Any:
        import torch

        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        return t.contiguous(memory_format=torch.channels_last) if self.channels_last else t

    def _classical(self, t: Any, name: str) -> Any:
        """The classical interpolator ``name`` (e.g. lanczos) of ``t`` in fp32, for the detail's
        ``detail_over``; built once per upscaler."""
        from medsr.models.registry import create_model

        nets = self._classical_nets
        if name not in nets:
            nets[name] = create_model(name, scale=self.scale).to(self.device).eval()
        return nets[name](t.float())

    def _finish_planes(
        self, job: PlaneJob, start: int, stop: int, pred: Any, base: Any, over: Any = None
    ) -> None:
        """Planes ``start:stop`` of ``job`` back from the model (``pred``, ``base``, ``over``:
        model space, on the device) → image units, clipped to the input's range, padding kept,
        the detail scaled by ``job.detail_gain`` (and added to ``over`` when given) →
        ``job.out`` (and ``job.base``). In torch: both cores."""
        import torch

        s = self.scale
        scale, offset = (
            _rows(v, start, stop, pred.device) for v in (job.norm.scale, job.norm.offset)
        )
        bounds = (
            None
            if job.bounds is None
            else tuple(_rows(v, start, stop, pred.device) for v in job.bounds)
        )
        pad = job.meta.get("padding")
        # on the CPU the result is written into job.out where it lies, not copied there at the end
        dest = torch.from_numpy(job.out[start:stop]) if pred.device.type == "cpu" else None
        if dest is not None and job.detail_gain is None and pad is None:
            out = torch.mul(pred, scale, out=dest).add_(offset)
        else:
            out = pred.mul_(scale).add_(offset)
        b: Any = base.mul(scale).add_(offset) if base is not None and job.needs_base else None
        low: Any = None  # the base the detail is scaled over: finished like the output
        if job.detail_gain is not None and b is not None:
            low = b.clamp(*bounds) if bounds is not None else b
        if over is not None:
            over = over.mul_(scale).add_(offset)
            if bounds is not None:
                over.clamp_(*bounds)
        if bounds is not None:
            out.clamp_(*bounds)
        if pad is not None:  # padding kept exact: every output pixel of a padding pixel is it
            per = job.per_plane_channels
            mask = torch.from_numpy(np.ascontiguousarray(_as_planes(pad, per)[start:stop])).to(
                out.device
            )
            orig = torch.from_numpy(
                np.ascontiguousarray(_as_planes(job.image.channel_first(), per)[start:stop])
            )
            orig = orig.to(out.device)
            if b is not None:
                b = fill_blocks(b, mask, orig, s)
        if low is not None:
            gain = _rows(job.detail_gain, start, stop, out.device)
            scaled = (low if over is None else over) + (out - low) * gain
            if job.detail_planes is not None:  # the other time points: as the network made them
                keep = _rows(job.detail_planes.reshape(-1, 1, 1, 1), start, stop, out.device)
                scaled = torch.where(keep, scaled, out)
            out = scaled
        if pad is not None:  # after the detail scaling: at a padding pixel every term is its value
            out = fill_blocks(out, mask, orig, s, out=dest)
        if out is not dest:
            job.out[start:stop] = out.cpu().numpy()
        if job.base is not None and b is not None:
            job.base[start:stop] = b.cpu().numpy()

    def run_job(self, job: PlaneJob) -> PlaneJob:
        """All planes of one job, ``batch_size`` at a time (the predictor's chunking)."""
        import torch

        tiled = self.needs_tiling(job)
        with torch.inference_mode():
            for start in range(0, job.total, self.batch_size):
                stop = min(start + self.batch_size, job.total)
                t = self._to_device(job.planes[start:stop])
                pred, base = self.forward_tensor(t, tiled, need_base=job.needs_base)
                over = self._classical(t, job.detail_over) if job.detail_over else None
                self._finish_planes(job, start, stop, pred, base, over)
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
        if self.precision_requested == "auto" or self.precision_requested != self.precision:
            meta["derivation"]["precision_auto"] = self.precision_note  # why, when not as asked
        if self.fp16_fallbacks:
            meta["derivation"]["precision_fallback"] = (
                f"fp16 overflowed on {self.fp16_fallbacks} batch(es) of planes of this run: "
                "those ran in fp32"
            )
        if self.loaded.data_consistency:
            meta["derivation"]["data_consistency"] = (
                f"{self.loaded.data_consistency}: the model's own step, the whole block the input "
                "measured kept"
            )
        if self.low_band_cutoff:
            meta["derivation"]["low_band"] = {
                "base": self.base_name,
                "cutoff": self.low_band_cutoff,
            }
        if self.range_margin is not None:
            from medsr.models.range_guard import NEIGHBOURHOOD

            meta["derivation"]["overshoot_guard"] = {
                "neighbourhood": NEIGHBOURHOOD,
                "margin": self.range_margin,
            }
        if pad is not None:
            meta["derivation"]["padding_pixels_kept"] = int(pad.sum())
        # the input's NaN: every pixel of its block (kept exact above), NaN again when written
        sr = carry_nonfinite(image, sr.replace(meta=meta), scale=s)
        if job.detail_gain is not None:
            over = job.detail_over or self.base_name
            if job.detail_time is not None:  # one per time point (None: kept)
                each = job.detail_time
                meta["derivation"]["detail_gain"] = [
                    None if g is None else round(g, 4) for g in each
                ]
                words = "/".join("-" if g is None else f"{g:.3f}" for g in each)
                words += " (per time point)"
            else:
                meta["derivation"]["detail_gain"] = round(job.detail_gain, 4)
                words = f"{job.detail_gain:.3f}"
            meta["derivation"]["detail_over"] = over
            sr = sr.with_step(f"detail scaled x{words} over {over} (self-check one scale down)")
        return sr

    def base_array(self, job: PlaneJob, *, clip: bool) -> np.ndarray:
        """The base interpolation a finished job kept (``prepare(..., keep_base=True)``), shaped
        like the output's array, padding kept; with ``clip`` clipped to the input's range outside
        the padding, as a ``clip=True`` upscaler of the base interpolator gives it."""
        if job.base is None:
            raise ValueError("this job kept no base (prepare(..., keep_base=True), learned models)")
        image, s = job.image, self.scale
        base = job.base
        bounds = (
            job.bounds if job.bounds is not None else _plane_bounds(image, job.meta.get("padding"))
        )
        if clip and bounds is not None:
            base = np.clip(job.base, *bounds)
            pad = job.meta.get("padding")
            if pad is not None:
                planes = _as_planes(pad, job.per_plane_channels)
                for k in range(base.shape[0]):  # plane by plane: no full-size mask
                    up = block_mask(planes[k], s)
                    base[k][up] = job.base[k][up]
        c, z, h, w = image.channel_first().shape
        result = (
            base.transpose(1, 0, 2, 3)
            if job.per_plane_channels > 1
            else base.reshape(c, z, h * s, w * s)
        )
        return result if image.channels else result[0]

    def upscale(
        self,
        image: MedImage,
        *,
        detail_gain: float | Sequence[float | None] | None = None,
        detail_over: str | None = None,
    ) -> MedImage:
        """One image, as :func:`medsr.inference.predictor.upscale` does it (``detail_gain``,
        ``detail_over``: see :meth:`prepare`)."""
        job = self.prepare(image, detail_gain=detail_gain, detail_over=detail_over)
        return self.finish(self.run_job(job))

    # ------------------------------------------------------------- several images at once
    def run_many(self, jobs: list[PlaneJob], max_planes: int | None = None) -> list[PlaneJob]:
        """One forward pass over planes taken from several jobs of the same plane shape.

        Takes planes from ``jobs`` in order (those with the first job's shape, skipping jobs
        that need tiling) up to ``max_planes`` (default ``batch_size``), runs the network once,
        scatters the results back; returns the jobs that are now complete. A failing forward
        pass marks every job that contributed planes as failed (``job.error``) and returns it.
        """
        import torch

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
            with torch.inference_mode():
                need = any(job.needs_base for job, _, _ in parts)
                t = self._to_device(x)
                pred, base = self.forward_tensor(t, need_base=need)
                pos = 0
                for job, a, b in parts:
                    n = b - a
                    over = (
                        self._classical(t[pos : pos + n], job.detail_over)
                        if job.detail_over
                        else None
                    )
                    self._finish_planes(
                        job,
                        a,
                        b,
                        pred[pos : pos + n],
                        base[pos : pos + n] if base is not None else None,
                        over,
                    )
                    job.done += n
                    pos += n
        except Exception as exc:
            for job, _, _ in parts:
                job.error = exc
            return list(dict.fromkeys(j for j, _, _ in parts))
        return [j for j in dict.fromkeys(j for j, _, _ in parts) if j.done >= j.total]


#: what a plane batch's size is called in errors (the upscaler's and the batch command's)
BATCH_SIZE = "batch size (planes per forward pass)"


def _pads_to(t: Any, size: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """``((top, bottom), (left, right))`` that centre planes ``t`` in ``size``² when either
    side is smaller (:attr:`medsr.models.resolver.LoadedModel.min_plane`), else ``None``."""
    h, w = t.shape[-2:]
    if h >= size and w >= size:
        return None
    ph, pw = max(0, size - h), max(0, size - w)
    return (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)


def _reflect_pad(t: Any, pads: tuple[tuple[int, int], tuple[int, int]], channels_last: bool) -> Any:
    """``t`` padded by reflection about its edge pixels (numpy's ``reflect``), any pad length:
    a plane narrower than the pad is reflected again and again (one pixel: repeated)."""
    import torch

    from medsr.degradations._common import _reflect_index

    for dim, (before, after) in zip((-2, -1), pads, strict=True):
        n = t.shape[dim]
        if before == after == 0:
            continue
        idx = _reflect_index(np.arange(-before, n + after), n, edge=False)
        t = t.index_select(dim % t.dim(), torch.as_tensor(idx, device=t.device))
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t.contiguous()


def _rows(value: Any, start: int, stop: int, device: Any) -> Any:
    """A normaliser's or clip range's value for planes ``start:stop``: a number as it is, one per
    plane (a ``(P, 1, 1, 1)`` array) as a tensor of those planes' rows on ``device``."""
    import torch

    if np.ndim(value) == 0:
        return value
    return torch.from_numpy(np.ascontiguousarray(value[start:stop])).to(device)


def _plane_bounds(image: MedImage, pad: np.ndarray | None) -> tuple[Any, Any] | None:
    """The clip range of ``image``'s planes (``pad``: its channel-first no-data mask): the
    input's ``(min, max)`` outside the padding (:func:`_inside_range`), the colour channels'
    together; an image over time (``channels="time"``) each time point's own, as float32
    ``(P, 1, 1, 1)`` arrays, one per plane (time-major): a pre-contrast phase's overshoot was
    clipped to the series' range, so to the post-contrast phases' maximum, not its own. A time
    point holding no data at all is left unclipped (``±inf``), as such a volume is."""
    cf = image.channel_first()
    if image.channels != "time":
        return _inside_range(cf, pad)
    ranges = [_inside_range(cf[t], None if pad is None else pad[t]) for t in range(cf.shape[0])]
    lo = [-np.inf if r is None else r[0] for r in ranges]
    hi = [np.inf if r is None else r[1] for r in ranges]
    z = cf.shape[1]
    return tuple(np.repeat(np.asarray(v, np.float32), z).reshape(-1, 1, 1, 1) for v in (lo, hi))  # type: ignore[return-value]


def _inside_range(cf: np.ndarray, pad: np.ndarray | None) -> tuple[float, float] | None:
    """``(min, max)`` of ``cf`` outside the padding ``pad`` (None when nothing is left)."""
    if pad is None:
        return (float(cf.min()), float(cf.max())) if cf.size else None
    valid = ~pad
    if not valid.any():
        return None
    return float(np.min(cf, where=valid, initial=np.inf)), float(
        np.max(cf, where=valid, initial=-np.inf)
    )
