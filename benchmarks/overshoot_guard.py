"""Figure of the overshoot guard (medsr.models.range_guard): where it changes ``default-x2`` most.

On the head CT and the ultrasound of the leave-one-source-out validation (×2 bicubic, physics
unknown, the pipeline as ``medsr upscale`` runs it), the 64² output crop where the outputs with
and without the guard differ most (32-px box mean of the absolute difference): input (nearest),
bicubic, ``default-x2`` without the guard, with it (shipped), the truth, and each crop's RMS error
against the truth in the image's units. Writes ``docs/overshoot-guard.png``.

    .venv/bin/python benchmarks/overshoot_guard.py
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import matplotlib
import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
import faithful as F

from medsr.inference.planes import PlaneUpscaler
from medsr.io import load_image

OUT = Path(__file__).parent.parent / "docs" / "overshoot-guard.png"
IMAGES = (("J2K_pixelrep_mismatch.dcm", "head CT"), ("gdcm-US-ALOKA-16.dcm", "ultrasound"))
HALF = 32  # half the crop (output px)


def panels(name: str) -> tuple[list[tuple[str, str, np.ndarray]], np.ndarray]:
    """``[(title, RMS-error label, crop)]`` and the truth's crop for one validation image."""
    hr = F._slice(load_image(F.resolve_corpus(name)), 2)
    lr = F.degrade(hr, "bicubic", 2)
    outs = {
        "bicubic": F._run(PlaneUpscaler("bicubic", 2, device="cpu"), lr),
        "default-x2, no overshoot guard": F.with_physics(
            PlaneUpscaler("default-x2", 2, device="cpu", range_guard=False), None
        )(lr).array[0],
        "default-x2 (shipped: guard on)": F.with_physics(
            PlaneUpscaler("default-x2", 2, device="cpu"), None
        )(lr).array[0],
    }
    diff = ndimage.uniform_filter(
        np.abs(outs["default-x2, no overshoot guard"] - outs["default-x2 (shipped: guard on)"]), 32
    )
    inner = diff[HALF:-HALF, HALF:-HALF]
    y, x = (int(v) + HALF for v in np.unravel_index(np.argmax(inner), inner.shape))
    sl = (slice(y - HALF, y + HALF), slice(x - HALF, x + HALF))
    truth = hr.array[0][sl]
    nearest = np.repeat(np.repeat(lr.array[0], 2, 0), 2, 1)[sl]
    out = [("input (nearest)", "", nearest)]
    for title, arr in outs.items():
        rms = float(np.sqrt(np.mean((arr[sl] - truth) ** 2)))
        out.append((title, f"RMS error {rms:.1f}", arr[sl]))
    out.append(("truth", "", truth))
    return out, truth


def main() -> None:
    warnings.simplefilter("ignore")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(len(IMAGES), 5, figsize=(15, 3.5 * len(IMAGES)))
    for i, (name, label) in enumerate(IMAGES):
        row, truth = panels(name)
        lo, hi = np.percentile(truth, [1, 99])
        for j, (title, rms, arr) in enumerate(row):
            a = ax[i, j]
            a.imshow(arr, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            a.set_xticks([])
            a.set_yticks([])
            if i == 0:
                a.set_title(title, fontsize=9)
            if rms:
                a.set_xlabel(rms, fontsize=9)
        ax[i, 0].set_ylabel(label)
    fig.suptitle(
        "Overshoot guard: the 64² crop (×2 output px) where it changes default-x2 most "
        "(×2 bicubic validation; RMS error vs truth in the crop, image units)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(OUT, dpi=90)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
