"""Evaluation figures: LR | bicubic | models | HR with a zoomed region and |error| maps."""

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


def comparison_figure(path: Path, ref: MedImage, lr: MedImage, outputs: dict[str, MedImage], scale: int) -> str:
    """Three rows: full images, zoomed region of interest, |error| against HR. Returns the path
    relative to the report folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    k = ref.spatial_shape[0] // 2
    hr = ref.array[k]
    lr_plane = np.kron(lr.array[k], np.ones((scale, scale), dtype=np.float32))  # nearest, for display
    panels = [("LR (input)", lr_plane), *[(name, img.array[k]) for name, img in outputs.items()], ("HR (truth)", hr)]
    centre, width = default_window(ref)
    vmin, vmax = centre - width / 2, centre + width / 2
    size = max(16, min(hr.shape) // 4)
    y0, x0 = _roi(hr, size)
    err_max = max(float(np.percentile(np.abs(img.array[k] - hr), 99.5)) for img in outputs.values()) or 1.0

    n = len(panels)
    fig, axes = plt.subplots(3, n, figsize=(2.4 * n, 7.4), squeeze=False)
    for j, (title, arr) in enumerate(panels):
        ax = axes[0, j]
        ax.imshow(arr, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), size, size, fill=False, edgecolor="#ffb000", linewidth=1))
        ax.set_title(title, fontsize=9)
        axes[1, j].imshow(arr[y0 : y0 + size, x0 : x0 + size], cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        if title in outputs:
            err = np.abs(arr - hr)
            im = axes[2, j].imshow(err, cmap="magma", vmin=0, vmax=err_max, interpolation="nearest")
            rmse = float(np.sqrt(np.mean(err[scale:-scale, scale:-scale] ** 2)))
            axes[2, j].set_title(f"|error| RMSE {rmse:.3g}", fontsize=8)
        else:
            axes[2, j].set_visible(False)
        for row in range(3):
            axes[row, j].set_xticks([])
            axes[row, j].set_yticks([])
    axes[1, 0].set_ylabel("zoom", fontsize=9)
    fig.colorbar(im, ax=axes[2, :].tolist(), shrink=0.8, label=f"|error| ({ref.units})")
    fig.suptitle(f"×{scale} · {ref.modality} · slice {k} · window C{centre:.0f}/W{width:.0f}", fontsize=10)
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
        axes[0, j].imshow(img.array[:, :, w // 2], cmap="gray", vmin=vmin, vmax=vmax, aspect=sz / sy, interpolation="nearest")
        axes[1, j].imshow(img.array[:, h // 2, :], cmap="gray", vmin=vmin, vmax=vmax, aspect=sz / sx, interpolation="nearest")
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
