"""Evaluation figures: LR | bicubic | models | HR with a zoomed region, |error| maps and the
fidelity maps (consistency error, TTA uncertainty)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsr.image import MedImage
from medsr.reports.render import default_window


def _roi(reference: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size``² window with the most detail (gradient energy)."""
    gy, gx = np.gradient(reference.astype(np.float64))
    energy = np.hypot(gy, gx)
    h, w = energy.shape
    if h <= size or w <= size:
        return 0, 0
    # integral image → window sums
    ii = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = ii[size:, size:] - ii[:-size, size:] - ii[size:, :-size] + ii[:-size, :-size]
    margin = max(1, size // 4)
    sums[:margin] = sums[-margin:] = -1
    sums[:, :margin] = sums[:, -margin:] = -1
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x)


_ROW_LABELS = (
    "|SR − HR|\nerror against\nthe truth",
    "consistency error\n|degrade(SR) − LR|\non the input grid",
    "uncertainty:\nstd of the output\nover 8 flips and\n90° rotations (TTA)",
)


def _map_limit(planes: list[np.ndarray], floor: float) -> float:
    """Shared upper colour limit of one row of maps: the 99.5th percentile over the row, but at
    least ``floor`` (so a near-zero map, e.g. an interpolator's uncertainty, stays dark instead of
    magnifying rounding noise)."""
    values = [float(np.percentile(p, 99.5)) for p in planes if p is not None and p.size]
    return max([floor, *values]) or 1.0


def comparison_figure(
    path: Path,
    ref: MedImage,
    lr: MedImage,
    outputs: dict[str, MedImage],
    scale: int,
    maps: dict[str, dict[str, np.ndarray | None]] | None = None,
) -> str:
    """Rows: full images, zoomed region of interest, |error| against HR, and with ``maps`` the
    consistency error |D(SR) − LR| and the TTA uncertainty of each output. Returns the path
    relative to the report folder.

    ``maps``: model → ``{"consistency": (h, w) on the LR grid, "uncertainty": (H, W) or None}``
    for the figure slice (the middle one), in the image's units. Each row has its own colour bar.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    k = ref.spatial_shape[0] // 2
    hr = ref.array[k]
    lr_plane = np.kron(
        lr.array[k], np.ones((scale, scale), dtype=np.float32)
    )  # nearest, for display
    panels = [
        ("LR (input)", lr_plane),
        *[(name, img.array[k]) for name, img in outputs.items()],
        ("HR (truth)", hr),
    ]
    centre, width = default_window(ref)
    vmin, vmax = centre - width / 2, centre + width / 2
    size = max(16, min(hr.shape) // 4)
    y0, x0 = _roi(hr, size)
    err_max = (
        max(float(np.percentile(np.abs(img.array[k] - hr), 99.5)) for img in outputs.values())
        or 1.0
    )
    rows = 3
    cons_max = unc_max = 1.0
    if maps:
        rows = 5
        floor = 0.01 * width  # 1 % of the display window
        cons_max = _map_limit([m.get("consistency") for m in maps.values()], floor)
        unc_max = _map_limit([m.get("uncertainty") for m in maps.values()], floor)

    n = len(panels)
    fig, axes = plt.subplots(
        rows, n, figsize=(2.4 * n + 1.0, 2.45 * rows + 0.05), squeeze=False, layout="constrained"
    )
    images: dict[int, object] = {}
    for j, (title, arr) in enumerate(panels):
        ax = axes[0, j]
        ax.imshow(arr, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.add_patch(
            Rectangle(
                (x0 - 0.5, y0 - 0.5), size, size, fill=False, edgecolor="#ffb000", linewidth=1
            )
        )
        ax.set_title(title, fontsize=9)
        axes[1, j].imshow(
            arr[y0 : y0 + size, x0 : x0 + size],
            cmap="gray",
            vmin=vmin,
            vmax=vmax,
            interpolation="nearest",
        )
        if title in outputs:
            err = np.abs(arr - hr)
            images[2] = axes[2, j].imshow(
                err, cmap="magma", vmin=0, vmax=err_max, interpolation="nearest"
            )
            rmse = float(np.sqrt(np.mean(err[scale:-scale, scale:-scale] ** 2)))
            axes[2, j].set_title(f"|error| RMSE {rmse:.3g}", fontsize=8)
            if maps:
                entry = maps.get(title) or {}
                cons = entry.get("consistency")
                if cons is not None:
                    shown = np.kron(cons, np.ones((scale, scale), dtype=np.float32))
                    images[3] = axes[3, j].imshow(
                        shown, cmap="viridis", vmin=0, vmax=cons_max, interpolation="nearest"
                    )
                    axes[3, j].set_title(f"|D(SR)−LR| mean {float(cons.mean()):.3g}", fontsize=8)
                else:
                    axes[3, j].set_title("consistency n/a", fontsize=8)
                unc = entry.get("uncertainty")
                if unc is not None:
                    images[4] = axes[4, j].imshow(
                        unc, cmap="cividis", vmin=0, vmax=unc_max, interpolation="nearest"
                    )
                    axes[4, j].set_title(f"TTA std mean {float(unc.mean()):.3g}", fontsize=8)
                else:
                    axes[4, j].set_title("uncertainty n/a (no TTA)", fontsize=8)
        else:
            for row in range(2, rows):
                axes[row, j].set_visible(False)
        for row in range(rows):
            axes[row, j].set_xticks([])
            axes[row, j].set_yticks([])
    axes[1, 0].set_ylabel("zoom", fontsize=9)
    for row, label in zip(range(2, rows), _ROW_LABELS, strict=False):  # explained in the LR column
        ax = axes[row, 0]
        ax.set_visible(True)
        ax.axis("off")
        ax.text(
            0.95,
            0.5,
            label,
            ha="right",
            va="center",
            fontsize=8,
            transform=ax.transAxes,
            linespacing=1.4,
        )
    units = ref.units
    bars = {2: f"|error| ({units})", 3: f"|D(SR) − LR| ({units})", 4: f"TTA std ({units})"}
    for row, label in bars.items():
        if row in images:
            fig.colorbar(images[row], ax=axes[row, :].tolist(), shrink=0.9, label=label)
    fig.suptitle(
        f"×{scale} · {ref.modality} · slice {k} · window C{centre:.0f}/W{width:.0f}", fontsize=10
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"{path.parent.name}/{path.name}"


def reformat_figure(path: Path, ref: MedImage, outputs: dict[str, MedImage]) -> str:
    """Sagittal and coronal reformats (centre planes) of HR and each output, aspect from spacing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("HR (truth)", ref), *outputs.items()]
    centre, width = default_window(ref)
    vmin, vmax = centre - width / 2, centre + width / 2
    fig, axes = plt.subplots(2, len(panels), figsize=(2.6 * len(panels), 5.2), squeeze=False)
    for j, (title, img) in enumerate(panels):
        _, h, w = img.spatial_shape
        sz, sy, sx = img.spacing
        axes[0, j].imshow(
            img.array[:, :, w // 2],
            cmap="gray",
            vmin=vmin,
            vmax=vmax,
            aspect=sz / sy,
            interpolation="nearest",
        )
        axes[1, j].imshow(
            img.array[:, h // 2, :],
            cmap="gray",
            vmin=vmin,
            vmax=vmax,
            aspect=sz / sx,
            interpolation="nearest",
        )
        axes[0, j].set_title(title, fontsize=9)
        for row in range(2):
            axes[row, j].set_xticks([])
            axes[row, j].set_yticks([])
    axes[0, 0].set_ylabel("sagittal", fontsize=9)
    axes[1, 0].set_ylabel("coronal", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"{path.parent.name}/{path.name}"
