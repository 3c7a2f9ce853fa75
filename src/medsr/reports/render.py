"""Turn MedImage planes into display images (window/level) for figures, pages and previews."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from medsr.image import MedImage

#: CT window presets (centre, width) in HU.
CT_WINDOWS = {
    "soft-tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}


def default_window(image: MedImage) -> tuple[float, float]:
    """Window (centre, width) for display: the source's own window if it has one, else a preset
    (CT soft tissue) or the 0.5–99.5 percentile range."""
    window = image.meta.get("window")
    if window and window[1] and float(window[1]) > 0:
        return float(window[0]), float(window[1])
    if image.modality == "CT" and image.units == "HU":
        return CT_WINDOWS["soft-tissue"]
    lo, hi = np.percentile(image.array, [0.5, 99.5])
    hi = hi if hi > lo else lo + 1.0
    return float((lo + hi) / 2), float(hi - lo)


def window_to_uint8(plane: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Linear window/level of a 2-D (or ``(3, Y, X)`` colour) plane to 8 bits."""
    centre, width = window
    lo = centre - width / 2
    out = np.clip((np.asarray(plane, dtype=np.float64) - lo) / max(width, 1e-6), 0, 1)
    out = np.rint(out * 255).astype(np.uint8)
    return out.transpose(1, 2, 0) if out.ndim == 3 else out


def plane(image: MedImage, index: int | None = None) -> np.ndarray:
    """The axial plane ``index`` (middle by default): ``(Y, X)`` or ``(3, Y, X)`` for colour."""
    z = image.spatial_shape[0]
    k = z // 2 if index is None else int(np.clip(index, 0, z - 1))
    if image.is_color:
        return image.array[:, k]
    return image.array[0, k] if image.channels else image.array[k]


def to_png_bytes(rgb_or_gray: np.ndarray, size: tuple[int, int] | None = None) -> bytes:
    """Encode a uint8 array as PNG, optionally resized (nearest, so pixels stay visible)."""
    from PIL import Image

    im = Image.fromarray(rgb_or_gray)
    if size is not None and im.size != size:
        im = im.resize(size, Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: Path, rgb_or_gray: np.ndarray, size: tuple[int, int] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_png_bytes(rgb_or_gray, size))
    return path
