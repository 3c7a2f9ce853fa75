"""File-level operations shared by the CLI, the web service and batch jobs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medsr.errors import InvalidParameterError, UnsupportedFormatError
from medsr.io import format_for_output, load_image, save_image, sniff_format
from medsr.io._atomic import check_output

_SUFFIX = {"nifti": ".nii.gz", "png": ".png", "tiff": ".tif", "npy": ".npy"}


def output_path_for(input_path: str | os.PathLike[str], output: str | os.PathLike[str]) -> Path:
    """Where to write: ``output`` itself when its suffix names a format; otherwise a folder.

    For a DICOM input the folder *is* the derived series; for other inputs the result is written
    inside the folder under the input's name, in the input's format.
    """
    out = Path(output)
    try:
        fmt = format_for_output(out)
    except UnsupportedFormatError:
        fmt = None
    if fmt is not None and fmt != "dicom":
        return out
    if out.suffix.lower() in (".dcm", ".dicom"):
        return out
    in_fmt = sniff_format(input_path)
    if in_fmt == "dicom":
        return out
    name = Path(input_path).name
    return out / name if format_for_output(name) == in_fmt else out / (Path(name).stem + _SUFFIX[in_fmt])


def upscale_file(
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    scale: int = 2,
    model: str | None = None,
    device: str = "auto",
    series_uid: str | None = None,
    luminance: bool = False,
    overwrite: bool = False,
    method: str = "model",
    through_plane: bool = False,
    target_spacing: float | None = None,
    budget_s: float | None = 60.0,
    init: str | None = None,
    consistency: str = "off",
    maps_dir: str | os.PathLike[str] | None = None,
    warnings_out: list[str] | None = None,
    precision: str = "fp32",
    **upscale_options: Any,
) -> Path:
    """Read ``input_path``, upscale, write ``output``; return the path written.

    ``method="model"`` upscales in-plane with ``model``; ``method="zero-shot"`` trains a small
    network on the image itself for ``budget_s`` seconds (optionally fine-tuning ``init``) and
    applies it (:func:`medsr.selfsup.zero_shot_upscale`). ``through_plane=True`` super-resolves a
    thick-slice volume along z instead, to isotropic voxels or ``target_spacing`` mm
    (:func:`medsr.selfsup.through_plane_upscale`, always zero-shot; ``scale`` does not apply).

    In-plane upscaling goes through :func:`medsr.inference.safeguards.upscale_with_safeguards`:
    ``consistency="on"`` projects the result onto the measured input (data consistency for the
    assumed degradation), ``maps_dir`` receives the consistency-error and uncertainty maps (+ a
    DICOM secondary series for DICOM inputs), and provenance (medsr version, model checksum, scale,
    degradation, consistency setting, map summary) is recorded in every output. Warnings
    (consistency, out-of-distribution) are appended to ``warnings_out``.

    ``precision`` (``fp32``, ``bf16``, ``fp16``) is the network's arithmetic for ``method="model"``
    (:data:`medsr.inference.planes.PRECISIONS`).

    Everything is checked before any work: the scale, the model name, that ``output`` does not
    exist (unless ``overwrite``). Nothing is written unless the whole result is valid.
    """
    from medsr.inference.predictor import SCALES

    if consistency not in ("on", "off"):
        raise InvalidParameterError(f"consistency must be 'on' or 'off', got {consistency!r}")
    if method not in ("model", "zero-shot"):
        raise InvalidParameterError(f"method must be 'model' or 'zero-shot', got {method!r}")
    if scale not in SCALES:
        raise InvalidParameterError(f"scale must be one of {', '.join(map(str, SCALES))}; got {scale}")
    if target_spacing is not None and not through_plane:
        raise InvalidParameterError("a target spacing applies to through-plane upscaling only (--through-plane)")
    zero_shot = method == "zero-shot" or through_plane
    from medsr.inference.planes import check_precision

    if check_precision(precision) != "fp32" and zero_shot:
        raise InvalidParameterError("precision applies to trained models (--method model) only")
    if init is not None and not zero_shot:
        raise InvalidParameterError("init (weights to fine-tune) applies to --method zero-shot or --through-plane only")
    if zero_shot:
        from medsr.selfsup._fit import check_budget

        check_budget(budget_s, upscale_options.get("epochs"))
    target = output_path_for(input_path, output)
    check_output(target, overwrite)
    if Path(input_path).resolve() == target.resolve():
        raise InvalidParameterError("the output must not be the input (inputs are never modified)")
    options: dict[str, Any] = {"luminance": luminance}
    if series_uid:
        options["series_uid"] = series_uid
    image = load_image(input_path, **options)
    if zero_shot:
        from medsr.selfsup import through_plane_upscale, zero_shot_upscale

        # a learned architecture named with --model is trained; the default model name is not one
        if str(model).endswith(".safetensors"):
            raise InvalidParameterError(
                "zero-shot methods learn their own weights; pass weights to fine-tune with init (--init)"
            )
        if model not in (None, "bicubic", "default"):
            upscale_options.setdefault("model", model)
        if through_plane:
            result = through_plane_upscale(
                image, target_spacing=target_spacing, budget_s=budget_s, init=init, device=device,
                consistency=consistency == "on", **upscale_options,
            )
        else:
            result = zero_shot_upscale(
                image, scale, budget_s=budget_s, init=init, device=device, **upscale_options
            )
        from medsr.safeguards import attach_provenance, provenance

        result = attach_provenance(
            result, provenance(model=result.meta.get("derivation", {}).get("model", method), card=None,
                               scale=scale, degradation="thick-slice" if through_plane else None,
                               consistency=consistency if through_plane else "off")
        )
        return save_image(result, target, overwrite=overwrite)
    from medsr.inference.safeguards import save_safeguarded, upscale_with_safeguards

    if maps_dir is not None:
        check_output(maps_dir, overwrite)
    result, summary = upscale_with_safeguards(
        image, scale, model, consistency=consistency, maps=maps_dir is not None, tta=maps_dir is not None,
        warn=False, device=device, precision=precision, **upscale_options,
    )
    written = save_safeguarded(result, target, summary=summary, maps_dir=maps_dir, overwrite=overwrite)
    if warnings_out is not None:
        warnings_out.extend(str(w) for w in summary.get("warnings", []))
    return written


def degrade_file(
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    kind: str = "auto",
    scale: int = 2,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Read ``input_path``, simulate a lower-resolution acquisition, write ``output``."""
    from medsr.degradations import default_kind, degrade_image

    target = output_path_for(input_path, output)
    check_output(target, overwrite)
    image = load_image(input_path)
    name = default_kind(image.modality) if kind == "auto" else kind
    low = degrade_image(image, name, scale, generator=seed, **(params or {}))
    return save_image(low, target, overwrite=overwrite)
