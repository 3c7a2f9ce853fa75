"""Tiled inference in bounded memory (MONAI sliding-window) that matches whole-image inference.

A network's output near a tile's edge differs from whole-image inference because it sees a
border there instead of the neighbouring pixels. Gaussian blending only down-weights the error.
Here each tile gets a *separable core weight*: 1 inside, ``eps`` in a ``halo``-pixel band along
each side that is *inside* the image (``eps²`` in such corners); a band lying on the image's own
border keeps weight 1, because there the tile sees exactly what whole-image inference sees.
With a tile stride of at most ``tile − 2·halo`` every pixel has a tile of full weight, so the
blended result equals whole-image inference up to ``eps`` times the edge error. ``halo`` must
cover the network's receptive-field radius (16 LR pixels covers the purely convolutional models;
the test suite measures the difference).

RLFN is not purely convolutional: its attention (:class:`medsr.models.blocks.ESA`) pools to a
coarse map. Stretched back to the size of what it is given (the paper's form; ``default-x2/x4``),
the output depends slightly on the tile's size wherever the tiles are cut (measured
with the stretched ``fast-x2``: RMS 0.16 of 1023 on a 1760² radiograph, 0.50 of 251 on a 480×640
ultrasound; PSNR against the truth ±0.06 dB). Spread by the fixed factor 6 (``esa_spread="fixed"``,
``fast-x2``, ``fast-x4``), the network declares ``reach`` and ``tile_align``; tiles then start on its grid
with the reach as halo and reproduce a whole-image pass (``align`` here, ``halo`` = reach).

MONAI blends with one weight map for every tile, so the position-dependent weight travels as an
extra output channel (``[w·y, w]``; the blended ratio is the weighted mean).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

EPS = 1e-4


def core_weight_map(
    roi: tuple[int, int],
    halo: int,
    eps: float = EPS,
    open_sides: tuple[bool, bool, bool, bool] = (True, True, True, True),
) -> torch.Tensor:
    """Separable weight map: 1 in the core, ``eps`` per axis in the ``halo`` band of each open
    side (``top, bottom, left, right``); sides on the image border stay 1."""
    vecs = []
    for axis, n in enumerate(roi):
        v = torch.ones(n)
        h = min(halo, (n - 1) // 2)
        lo_open, hi_open = open_sides[2 * axis], open_sides[2 * axis + 1]
        if lo_open:
            v[:h] = eps
        if hi_open and h:
            v[n - h :] = eps
        vecs.append(v)
    return torch.outer(vecs[0], vecs[1])


def tile_plan(n: int, tile: int, overlap: int, align: int = 1) -> tuple[int, int, int]:
    """``(size, stride, count)``: the fewest tiles of at most ``tile`` pixels, all of one size,
    that cover ``n`` pixels with at least ``overlap`` pixels between neighbours, starting at
    multiples of ``align`` (the last one ends on the image's edge), and the smallest such size.

    The image is split evenly: tiles of ``tile`` with the last one pushed back would overlap far
    more (640 px in two 512-px tiles computes 1.6× the pixels; two of 340 compute 1.06×).
    """
    if n <= tile:
        return n, n, 1
    best: tuple[int, int, int] | None = None
    for size in range(overlap + align, tile + 1):
        if (n - size) % align:  # the last tile starts at n − size: it must be on the grid too
            continue
        stride = (size - overlap) // align * align
        count = math.ceil((n - size) / stride) + 1
        if best is None or count < best[2]:
            best = (size, stride, count)
    if best is None:
        raise ValueError(f"no tile of at most {tile} px covers {n} px with overlap {overlap}")
    return best


#: overlap kept on each side of a tile's cut edge when the network declares no reach (LR px)
DEFAULT_HALO = 16
#: a tile is at least this many times its overlap wide (:func:`tile_size_for`)
MIN_TILE_PER_OVERLAP = 4


def tile_overlap(halo: int) -> int:
    """Pixels neighbouring tiles share for ``halo`` px of context on each cut edge (8 more: the
    blending ramp's margin)."""
    return 2 * halo + 8


def tile_size_for(tile: int, halo: int) -> int:
    """The tile to use for a network that needs ``halo`` px of context on each cut edge: ``tile``,
    or more where the overlap (``2·halo + 8``) would otherwise take over a quarter of each tile.

    Exact tiling of a network that looks far (``default-x2``: 111 LR px) with 512-px tiles
    computes 3× the pixels of a 1760² radiograph; with tiles at least 4× the overlap (920 px
    there) at most about 1.6×, for a few hundred MB more memory per tile. Networks that look
    less far (``fast-x2``: 57 px, 488) keep ``tile``.
    """
    return max(tile, MIN_TILE_PER_OVERLAP * tile_overlap(halo))


def tiled_forward(
    net: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    tile: int = 512,
    halo: int = DEFAULT_HALO,
    align: int = 1,
    batch_size: int = 4,
) -> torch.Tensor:
    """``net(x)`` for ``(N, C, H, W)`` computed tile by tile when ``H`` or ``W`` exceeds ``tile``.

    Tiles are at most ``tile``² LR pixels, the image split evenly (:func:`tile_plan`; no
    padding: a tile never exceeds the image), neighbours overlapping by at least ``2·halo + 8``
    pixels, every tile starting at a multiple of ``align`` (a network with a coarse internal grid,
    e.g. RLFN's fixed-spread attention, sees the whole image's grid), stitched by
    :func:`monai.inferers.sliding_window_inference` with :func:`core_weight_map` weights.
    """
    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return net(x)
    ov = tile_overlap(halo)
    if tile <= ov:
        raise ValueError(f"tile ({tile}) must exceed 2·halo + 8 ({ov})")
    from monai.inferers import sliding_window_inference

    plans = [tile_plan(n, tile, ov, align) for n in (h, w)]
    roi = (plans[0][0], plans[1][0])
    # MONAI's stride is int(roi·(1 − overlap)) and its last window ends on the edge: this overlap
    # makes the stride exactly the plan's (half a pixel of margin against rounding)
    overlap = tuple(0.0 if c == 1 else 1 - (st + 0.5) / r for r, st, c in plans)

    def weighted(window: torch.Tensor, slices: list[tuple[slice, ...]]) -> torch.Tensor:
        y = net(window)
        ws = []
        for sl in slices:
            ys, xs = sl[-2], sl[-1]
            sides = (ys.start > 0, ys.stop < h, xs.start > 0, xs.stop < w)
            ws.append(core_weight_map(roi, halo, open_sides=sides))
        wmap = torch.stack(ws)[:, None].to(y)
        wmap = torch.nn.functional.interpolate(wmap, size=y.shape[-2:], mode="nearest")
        return torch.cat([y * wmap, wmap], dim=1)

    blended = sliding_window_inference(
        x,
        roi_size=roi,
        sw_batch_size=batch_size,
        predictor=weighted,
        overlap=overlap,
        mode="constant",
        with_coord=True,
    )
    return blended[:, :-1] / blended[:, -1:]
