"""Through-plane evaluation (``degradation="thick-slice"``): thick-slice degradation along z,
reconstruction by every through-plane method, 3-D metrics and reformat figures."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsr.errors import EmptyInputError, InvalidParameterError, MedSRError
from medsr.image import MedImage
from medsr.modality import check_modality, set_modality
from medsr.reports.inputs import (
    check_options,
    discover_inputs,
    measured_pixels,
    reference_image,
    reference_notes,
    safe_name,
)
from medsr.reports.reproduce import model_record, run_record
from medsr.reports.results import SEED, EvaluationResult, ImageResult
from medsr.reports.stats import slice_and_volume_metrics
from medsr.reports.write import write_report
from medsr.slice_grid import slice_spacing

#: through-plane methods of ``evaluate_through_plane`` and the in-plane names that map onto them:
#: ``prior`` = the shipped through-plane prior (``tp-x2``/``tp-x4``), ``prior+adapt`` = the prior
#: adapted to each volume (``adapt_steps`` of the options), ``zero-shot`` = the same adaptation
#: from cubic interpolation (no prior, SMORE-like). A shipped slice interpolator (``interp-cnn``,
#: kind ``slice-interpolator``) is a method too: it reconstructs the same thick input on the same
#: grid (:func:`medsr.interpolation.interpolate_slices`; its own drop-slice evaluation is
#: ``medsr evaluate --interpolation``).
THROUGH_PLANE_METHODS = ("linear-z", "cubic-z", "prior", "prior+adapt", "zero-shot")
_THROUGH_PLANE_ALIASES = {"linear": "linear-z", "bicubic": "cubic-z", "cubic": "cubic-z"}
ZERO_SHOT_DEFAULTS: dict[str, Any] = {"budget_s": 30.0, "progress": False}
#: options of the learned through-plane methods: a step budget (reproducible), not a time budget
THROUGH_PLANE_DEFAULTS: dict[str, Any] = {"adapt_steps": 200, "progress": False}


def _require_prior(lr: MedImage, target: float) -> None:
    """A clear skip reason when no shipped prior covers this volume's factor."""
    from medsr.models.resolver import shipped_weights
    from medsr.selfsup.through_plane import network_factor, prior_name

    name = prior_name(network_factor(slice_spacing(lr) / target))
    if name not in shipped_weights():
        raise InvalidParameterError(f"no shipped through-plane prior {name} in this installation")


def evaluate_through_plane(
    data: Sequence[str | os.PathLike[str]],
    *,
    models: Sequence[str] = THROUGH_PLANE_METHODS,
    scale: int = 4,
    params: dict[str, Any] | None = None,
    out_dir: str | os.PathLike[str] = "evaluation",
    max_slices: int = 16,
    device: str = "auto",
    progress: bool = True,
    figures: bool = True,
    zero_shot: dict[str, Any] | None = None,
    modality: str | None = None,
) -> EvaluationResult:
    """Through-plane evaluation: thick-slice degradation along z, reconstruction, 3-D metrics.

    Each reference volume is cropped to a multiple of ``scale`` slices (a centred slab of at most
    ``max_slices × scale`` slices, so the thick volume has at most ``max_slices``), degraded with
    :func:`medsr.degradations.thick_slice` (``params``: ``profile``, ``thickness`` in thin slices)
    and reconstructed on the reference grid by every method: ``linear-z`` (the baseline gains are
    measured against), ``cubic-z`` and ``zero-shot`` (:func:`medsr.selfsup.through_plane_upscale`,
    told the slice profile and thickness; options from ``zero_shot``, default a 30 s budget), and
    any shipped slice interpolator named in ``models`` (``interp-cnn``). Pixels that hold no data
    in the reference or the thick input (a CT's fill, padding, NaN:
    :func:`medsr.reports.inputs.measured_pixels`) are not scored, as in-plane.
    In-plane names map onto them (``linear`` → ``linear-z``, ``bicubic`` → ``cubic-z``); other
    in-plane models do not apply and are listed as skipped. Metrics exclude ``scale`` slices at
    each end and a ``scale``-pixel in-plane border; figures show sagittal/coronal reformats.
    ``modality``: of references whose format carries none, as :func:`medsr.reports.evaluate.evaluate`
    takes it (:func:`medsr.modality.set_modality`).
    """
    from medsr.degradations import degrade_image
    from medsr.degradations._common import check_scale
    from medsr.metrics import data_range_for
    from medsr.selfsup import interpolate_z, through_plane_upscale

    modality = check_modality(modality) if modality is not None else None
    models = check_options(models, max_slices, device)
    f = check_scale(scale)
    if f < 2:
        raise InvalidParameterError("through-plane evaluation needs a scale of at least 2")
    from medsr.interpolation.core import interpolate_slices
    from medsr.models.resolver import list_pretrained, resolve_model

    params = dict(params or {})
    skipped: list[tuple[str, str]] = []
    methods = ["linear-z"]
    interpolators = {m.name for m in list_pretrained("slice-interpolator")}
    for name in models:
        key = _THROUGH_PLANE_ALIASES.get(str(name).lower(), str(name).lower())
        if key in THROUGH_PLANE_METHODS or key in interpolators:
            methods.append(key)
        else:
            resolve_model(name)  # an unknown name is an error (the one resolver's message)
            skipped.append(
                (
                    f"model {name}",
                    "in-plane model: not applicable to through-plane (thick-slice) evaluation; "
                    "through-plane methods are "
                    f"{', '.join([*THROUGH_PLANE_METHODS, *sorted(interpolators)])}",
                )
            )
    methods = list(dict.fromkeys(methods))
    inputs = discover_inputs(data, out_dir=out_dir)
    out = Path(out_dir)  # created when the first figure or the report is written
    results: list[ImageResult] = []
    records: dict[str, dict[str, Any]] = {}  # method → its identity (reproduce.model_record)
    zs = {**THROUGH_PLANE_DEFAULTS, **(zero_shot or {})}
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]evaluate (through-plane)"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        disable=not progress,
        transient=True,
    ) as bar:
        task = bar.add_task("", total=len(inputs))
        for item in inputs:
            name = item.name
            bar.update(task, description=name)
            try:
                image = set_modality(item.load(), modality)
                ref = reference_image(image, 1)
                z = ref.spatial_shape[0] // f * f
                if z < 2 * f:
                    raise InvalidParameterError(
                        f"a volume of {ref.spatial_shape[0]} slice(s) is too short for ×{f} through-plane evaluation"
                    )
                z0 = (ref.spatial_shape[0] - min(z, max_slices * f)) // 2
                z = min(z, max_slices * f)
                ref = ref.replace(array=np.ascontiguousarray(ref.array[z0 : z0 + z]))
                lr = degrade_image(ref, "thick-slice", f, generator=SEED, **params)
            except MedSRError as exc:
                skipped.append((name, str(exc)))
                bar.advance(task)
                continue
            data_range = data_range_for(ref)
            scored = measured_pixels(ref, lr, f, through_plane=True)
            keep = slice(f, z - f) if z - 2 * f >= 3 else slice(0, z)
            mask = None if scored is None else scored[keep]
            res = ImageResult(
                name=name, modality=ref.modality, shape=ref.spatial_shape, degradation="thick-slice",
                data_range=data_range, notes=reference_notes(image, ref, z0), units=ref.units,
                scored=1.0 if mask is None else round(float(mask.mean()), 4),
            )  # fmt: skip
            # in the distance between the slices' planes (a tilted stack steps further along its
            # line: medsr.slice_grid.slice_spacing), as the thick-slice simulation counts it
            ref_spacing = slice_spacing(ref)
            thickness_mm = float(params.get("thickness") or f) * ref_spacing
            outputs: dict[str, MedImage] = {}
            for method in methods:
                t0 = time.perf_counter()
                try:
                    if method in ("prior", "prior+adapt", "zero-shot"):
                        opts = dict(zs)
                        if method == "prior":
                            opts["adapt_steps"] = 0
                        if method == "zero-shot":
                            opts["prior"] = None
                        elif "prior" not in opts:
                            opts["prior"] = "auto"
                        if opts["prior"] == "auto":
                            _require_prior(lr, ref_spacing)
                        sr = through_plane_upscale(
                            lr,
                            target_spacing=ref_spacing,
                            slice_thickness=thickness_mm,
                            profile=params.get("profile", "gaussian"),
                            device=device,
                            clip=False,
                            **opts,
                        )
                    elif method in interpolators:
                        sr = interpolate_slices(lr, method, f, device=device)
                    else:
                        sr = interpolate_z(lr, n_slices=z, mode=method.removesuffix("-z"))
                except MedSRError as exc:
                    skipped.append((f"{name} / {method}", str(exc)))
                    continue
                res.seconds[method] = time.perf_counter() - t0
                if sr.spatial_shape != ref.spatial_shape:
                    raise InvalidParameterError(
                        f"{method} returned {sr.spatial_shape}, expected {ref.spatial_shape}"
                    )
                outputs[method] = sr
                records.setdefault(method, model_record(sr))
                pred, truth = sr.array[keep], ref.array[keep]
                m = slice_and_volume_metrics(pred, truth, data_range, f, volume=True, mask=mask)
                res.metrics[method] = {k: float(v) for k, v in m.items()}
            if "linear-z" not in res.metrics:
                skipped.append((name, "the linear-z baseline could not be computed"))
                bar.advance(task)
                continue
            if figures:
                from medsr.reports.figures import reformat_figure

                panels = {f"thick ×{f} (input)": lr, **outputs}
                res.figures.append(
                    reformat_figure(
                        out / "figures" / f"{safe_name(name)}_reformats.png", ref, panels
                    )
                )
            results.append(res)
            bar.advance(task)
    if not results:
        reasons = "; ".join(f"{n}: {r}" for n, r in skipped[:5])
        raise EmptyInputError(f"no volume could be evaluated through-plane ({reasons})")
    present = [m for m in methods if all(m in r.metrics for r in results)]
    for r in results:  # a method that failed on one volume is reported for none (paired tables)
        r.metrics = {m: v for m, v in r.metrics.items() if m in present}
        r.seconds = {m: v for m, v in r.seconds.items() if m in present}
    result = EvaluationResult(
        f, present, results, skipped, out, "thick-slice", params, baseline="linear-z",
        run=run_record(device=device, seed=SEED, max_slices=max_slices,
                       models={m: records.get(m, {}) for m in present}, modality=modality),
    )  # fmt: skip
    write_report(result)
    return result
