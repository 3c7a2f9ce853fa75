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

from medsr._version import __version__
from medsr.errors import MedSRError
from medsr.image import MedImage
from medsr.io import load_image, save_image


def upscale(image: MedImage, scale: int = 2, model: str | None = None, **kwargs: Any) -> MedImage:
    """Super-resolve ``image`` in-plane by ``scale``: ``model`` is a shipped model (``default-x2``),
    a registered name or a weights file; ``None`` uses ``default-x{scale}`` (bicubic if not shipped)."""
    from medsr.inference.predictor import upscale as _upscale

    return _upscale(image, scale=scale, model=model, **kwargs)


def create_model(name: str, **kwargs: Any) -> Any:
    """Instantiate a registered model (``torch.nn.Module``)."""
    from medsr.models.registry import create_model as _create

    return _create(name, **kwargs)


def load_pretrained(name: str, device: str = "cpu") -> Any:
    """A shipped trained network and its model card, e.g. ``load_pretrained("default-x2")``."""
    from medsr.models.pretrained import load_pretrained as _load

    return _load(name, device=device)


def list_models() -> list[str]:
    """Names of every registered model, classical and learned architectures (the trained
    weights medsr ships, e.g. ``default-x2``, are :func:`list_pretrained`)."""
    from medsr.models.registry import list_models as _list

    return _list()


def list_pretrained() -> list[str]:
    """Names of the trained weights medsr ships (``default-x2``, ``fast-x2``...), what ``model=``
    and ``medsr models`` accept besides :func:`list_models`."""
    from medsr.models.resolver import shipped_weights

    return sorted(shipped_weights())


def upscale_file(input_path: Any, output: Any, **kwargs: Any) -> Any:
    """``medsr upscale`` in Python: read ``input_path``, upscale it with every safeguard, write
    ``output`` (a file, or a folder for a DICOM series) and return the path written
    (:func:`medsr.pipeline.upscale_file`, whose keywords it takes)."""
    from medsr.pipeline import upscale_file as _upscale_file

    return _upscale_file(input_path, output, **kwargs)


__all__ = [
    "MedImage",
    "MedSRError",
    "__version__",
    "create_model",
    "list_models",
    "list_pretrained",
    "load_image",
    "load_pretrained",
    "save_image",
    "upscale",
    "upscale_file",
]
