"""File-level operations for the Python API: :func:`upscale_file` (the one pipeline,
:mod:`medsr.pipeline`) and :func:`degrade_file`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medsr.io import format_for_output, load_image, save_image

# the file-level upscale is the pipeline's (one door for every front end)
from medsr.pipeline import check_paths, output_path_for, upscale_file

__all__ = ["degrade_file", "output_path_for", "upscale_file"]


def degrade_file(
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    kind: str = "auto",
    scale: int = 2,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    series_uid: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Read ``input_path``, simulate a lower-resolution acquisition, write ``output``.

    ``series_uid`` picks what to read of a DICOM folder as :func:`upscale_file`'s does
    (``medsr degrade --series``: a series' key or UID, ``KEY:N`` one of its stacks, ``KEY:all``
    its time points as one image over time)."""
    # the paths first (they fail at once, before torch is imported), as upscale_file checks them
    target = check_paths(input_path, output, overwrite)
    from medsr.degradations import check_seed, default_kind, degrade_image

    check_seed(seed)  # before the input is read
    image = load_image(input_path, **({"series_uid": series_uid} if series_uid else {}))
    name = default_kind(image.modality) if kind == "auto" else kind
    low = degrade_image(image, name, scale, generator=seed, **(params or {}))
    # a simulation, not an acquisition: said in its derivation and, for a DICOM series in the
    # patient's study, in its description (an upscaled series of the same source reads [medsr])
    # what, at which scale: 1 where the grid is kept (noise alone takes no scale)
    made = scale if low.spatial_shape != image.spatial_shape else 1
    derivation = {"method": SIMULATED, "kind": name, "scale": made}
    low = low.replace(meta={**low.meta, "derivation": derivation})
    options = (
        {"series_description_suffix": " [medsr simulated]"}
        if format_for_output(target) == "dicom"
        else {}
    )
    return save_image(low, target, overwrite=overwrite, **options)


#: how a degraded image's derivation describes it
SIMULATED = "simulated lower-resolution acquisition, not measured"
