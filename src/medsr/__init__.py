"""medsr: faithful deep-learning super-resolution for medical images.

Public API::

    import medsr
    img = medsr.load_image("ct_series/")            # DICOM file/folder, NIfTI, PNG/TIFF, .npy
    sr = medsr.upscale(img, scale=2, model="bicubic")
    medsr.save_image(sr, "ct_series_x2/")            # a derived DICOM series
    medsr.list_models()

Heavy modules (torch) are imported on first use, so ``import medsr`` stays cheap.
"""

from __future__ import annotations

from typing import Any

from medsr.errors import MedSRError
from medsr.image import MedImage
from medsr.io import load_image, save_image

__version__ = "0.1.0"


def upscale(image: MedImage, scale: int = 2, model: str = "bicubic", **kwargs: Any) -> MedImage:
    """Super-resolve ``image`` in-plane by ``scale`` with a registered model name or weights file."""
    from medsr.inference.predictor import upscale as _upscale

    return _upscale(image, scale=scale, model=model, **kwargs)


def create_model(name: str, **kwargs: Any) -> Any:
    """Instantiate a registered model (``torch.nn.Module``)."""
    from medsr.models.registry import create_model as _create

    return _create(name, **kwargs)


def list_models() -> list[str]:
    """Names of every registered model, classical and learned."""
    from medsr.models.registry import list_models as _list

    return _list()


__all__ = [
    "MedImage",
    "MedSRError",
    "__version__",
    "create_model",
    "list_models",
    "load_image",
    "save_image",
    "upscale",
]
