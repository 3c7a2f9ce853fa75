"""``medsr`` command line: a thin Typer layer over the Python API.

Heavy libraries (torch, nibabel, pydicom) are imported inside the commands, so ``medsr --help``
answers at once. Bad input prints ``error: <message>`` and exits with status 2 (``--debug``
shows the traceback instead).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from medsr.durations import ZERO_SHOT_BUDGET_S
from medsr.inference.precision import PRECISION_HELP
from medsr.io import SERIES_HELP
from medsr.modality import IN_PLANE_PHYSICS, degradation_help

app = typer.Typer(
    name="medsr",
    help=(
        "Faithful super-resolution for medical images (DICOM, NIfTI, PNG/TIFF).\n\n"
        "Examples:\n\n"
        "  medsr info scan.dcm\n\n"
        "  medsr upscale ct_series/ ct_series_x2/ --scale 2 --model bicubic\n\n"
        "  medsr degrade MR_small.dcm mr_lr.nii.gz --kind kspace --scale 2\n\n"
        "  medsr evaluate --data CT_small.dcm --scale 2 --models bicubic,lanczos --out eval\n\n"
        "  medsr train configs/tiny.yaml --max-time 00:05:00\n\n"
        "  medsr pacs list --url http://127.0.0.1:8042/dicom-web --modality CT\n\n"
        "  medsr batch archive/ archive_x2/ --scale 2 --workers 2\n\n"
        "  medsr serve --port 8000\n\n"
        "  medsr models\n\n"
        "  medsr demo --out demo_out"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

_STATE = {"debug": False}


def _print_version(value: bool) -> None:
    if value:
        import platform

        import torch

        from medsr._version import __version__

        typer.echo(
            f"medsr {__version__} (torch {torch.__version__}, Python {platform.python_version()})"
        )
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print medsr's version (and torch's, Python's) and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    _STATE["debug"] = debug


@app.command(
    epilog="Examples: medsr info CT_small.dcm --json ;  medsr info my-model.safetensors --json"
)
def info(
    path: Annotated[
        Path,
        typer.Argument(
            help="DICOM file or series folder, NIfTI, PNG/TIFF or .npy; or a .safetensors weights file (its model card)."
        ),
    ],
    series: Annotated[
        str | None,
        typer.Option("--series", help=SERIES_HELP),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print JSON instead of a table (weights: the whole model card)."
        ),
    ] = False,
) -> None:
    """Describe an image: modality, shape, spacing, dtype, intensity range (never patient identifiers); or a weights file: its model card (what it is, trained on and for, limitations)."""
    if path.name.lower().endswith(".safetensors"):
        _weights_info(path, series, as_json)
        return
    from medsr.io import load_image

    image = load_image(path, **({"series_uid": series} if series else {}))
    summary = image.summary()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    _print_rows(path.name, [(str(k), str(v)) for k, v in summary.items()])


def _print_rows(title: str, rows: list[tuple[str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False)
    for key, value in rows:
        table.add_row(key, value)
    Console().print(table)


def _weights_info(path: Path, series: str | None, as_json: bool) -> None:
    """``medsr info FILE.safetensors``: the model card read from the file's header (no tensors
    loaded, never a pickle)."""
    from medsr.errors import InvalidParameterError
    from medsr.models.cards import card_essentials
    from medsr.models.weights import read_card

    if series:
        raise InvalidParameterError("--series picks a DICOM series; a weights file has none")
    card = read_card(path)
    if as_json:
        typer.echo(json.dumps(card, indent=2, sort_keys=True))
        return
    _print_rows(path.name, card_essentials(card))


@app.command(
    epilog=(
        "Examples: medsr upscale CT_small.dcm ct_x2/ --scale 2 --model bicubic ;  "
        "medsr upscale brain.nii.gz brain_x2.nii.gz --model kspace ;  "
        "medsr upscale MR_small.dcm mr_x2.nii.gz --method zero-shot --budget 60s ;  "
        "medsr upscale vol.nii.gz vol_iso.nii.gz --through-plane --target-spacing 1.0 ;  "
        "medsr upscale thick.nii.gz iso.nii.gz --through-plane --adapt 300 --maps maps/"
    )
)
def upscale(
    input: Annotated[
        Path, typer.Argument(help="Input image (any supported format or a DICOM series folder).")
    ],
    output: Annotated[
        Path,
        typer.Argument(help="Output path; format from its suffix, a folder for a DICOM series."),
    ],
    scale: Annotated[
        int | None,
        typer.Option(
            "--scale",
            "-s",
            help="Factor: 2, 3 or 4, in-plane (default 2); with --through-plane the factor along z (more slices), instead of --target-spacing.",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Shipped model (default-x2...), registered name or a .safetensors file; default: default-xN when shipped, else bicubic.",
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    series: Annotated[
        str | None,
        typer.Option("--series", help=SERIES_HELP),
    ] = None,
    luminance: Annotated[
        bool, typer.Option("--luminance", help="Convert colour to grayscale (BT.601) first.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output.")
    ] = False,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="model (a trained/classical upscaler) or zero-shot (learn from this image itself).",
        ),
    ] = "model",
    budget: Annotated[
        str | None,
        typer.Option(
            "--budget",
            help=f"--method zero-shot: training time, {ZERO_SHOT_BUDGET_S:g}s (default), 2m, 1h or plain seconds. The steps it allows depend on the machine's speed and load, so reruns differ slightly (the provenance records the steps done and reproducible: false).",
        ),
    ] = None,
    through_plane: Annotated[
        bool,
        typer.Option(
            "--through-plane",
            help="Thick-slice volume: super-resolve along z to isotropic voxels (or --target-spacing) with the shipped through-plane prior (tp-x2/tp-x4); --adapt STEPS adapts it to this volume first.",
        ),
    ] = False,
    adapt: Annotated[
        int,
        typer.Option(
            "--adapt",
            help="Through-plane: optimiser steps of per-volume adaptation of the prior (0 = the prior alone; seeded, so reruns are identical).",
        ),
    ] = 0,
    slice_thickness: Annotated[
        float | None,
        typer.Option(
            "--slice-thickness",
            help="Through-plane: slice-profile width in mm (default: the header's SliceThickness, else estimated from the volume).",
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            help="Through-plane: slice profile, gaussian (MR) or box (CT); default by modality.",
        ),
    ] = None,
    target_spacing: Annotated[
        float | None,
        typer.Option(
            "--target-spacing",
            help="Through-plane output slice spacing in mm (default: the in-plane spacing).",
        ),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            "--init",
            help="Zero-shot: fine-tune from 'default' (shipped) or a .safetensors file instead of learning from scratch.",
        ),
    ] = None,
    consistency: Annotated[
        str,
        typer.Option(
            "--consistency",
            help="auto (default): project the result onto the measured input when the physics is known (--degradation KIND, or --degradation auto with an MR header); on: always (for the assumed degradation); off: only measure.",
        ),
    ] = "auto",
    degradation: Annotated[
        str | None,
        typer.Option(
            "--degradation",
            help=degradation_help("the input", "the"),
        ),
    ] = None,
    modality: Annotated[
        str | None,
        typer.Option(
            "--modality",
            help="Modality of inputs that carry none (NIfTI, PNG, TIFF, .npy): CT, MR, CR, DX, US, NM...",
        ),
    ] = None,
    maps: Annotated[
        Path | None,
        typer.Option(
            "--maps",
            help="Folder for the maps (+ JSON summary; DICOM series for DICOM input): consistency error |degrade(SR) - input| (through-plane: with the slice profile) uncertainty (in-plane: test-time augmentation, 8x the network time; through-plane: the sagittal-coronal disagreement) and an error bound (about 90% of pixels' error below it, calibrated on the input one scale down; through-plane: along z).",
        ),
    ] = None,
    ensemble: Annotated[
        bool,
        typer.Option(
            "--ensemble",
            help="Learned models: output the mean of the model's outputs for the 8 flips and 90-degree rotations of the input (self-ensemble): 8x the network time, about +0.1 dB (see the README); orientation-dependent detail averages out. Classical interpolators: no effect (said so).",
        ),
    ] = False,
    output_dtype: Annotated[
        str | None,
        typer.Option(
            "--output-dtype",
            help="NIfTI outputs: input (default: an input stored as integers - NIfTI, DICOM, PNG/TIFF - keeps its type and scaling, values rounded onto its grid) or float32.",
        ),
    ] = None,
    precision: Annotated[
        str,
        typer.Option(
            "--precision",
            help=PRECISION_HELP,
        ),
    ] = "fp32",
) -> None:
    """Super-resolve an image in-plane (or a volume through-plane) and write it in the same format (a derived series for DICOM)."""
    from medsr.api import upscale_file

    zero_shot: dict[str, Any] = {}
    if budget is not None and (through_plane or method != "zero-shot"):
        from medsr.errors import InvalidParameterError

        raise InvalidParameterError(
            "--budget applies to --method zero-shot (in-plane); through-plane adaptation takes "
            "a step count (--adapt STEPS), so that reruns give the same output"
        )
    if through_plane:
        zero_shot = {"adapt_steps": _check_adapt(adapt), "progress": sys.stderr.isatty()}
        if slice_thickness is not None:
            zero_shot["slice_thickness"] = slice_thickness
        if profile is not None:
            zero_shot["profile"] = profile
    elif method == "zero-shot":
        budget_s = ZERO_SHOT_BUDGET_S if budget is None else _parse_duration(budget)
        zero_shot = {"budget_s": budget_s, "progress": sys.stderr.isatty()}
    elif adapt or slice_thickness is not None or profile is not None:
        from medsr.errors import InvalidParameterError

        raise InvalidParameterError(
            "--adapt, --slice-thickness and --profile apply to --through-plane only"
        )
    written = upscale_file(
        input,
        output,
        scale=scale,
        model=model,
        device=device,
        series_uid=series,
        luminance=luminance,
        overwrite=overwrite,
        method=method,
        through_plane=through_plane,
        target_spacing=target_spacing,
        init=init,
        consistency=consistency,
        degradation=degradation,
        modality=modality,
        maps_dir=maps,
        warnings_out=(warned := list[str]()),
        precision=precision,
        ensemble=ensemble,
        output_dtype=output_dtype,
        grid_out=(grid := dict[str, Any]()),
        **zero_shot,
    )
    for message in warned:
        typer.echo(f"warning: {message}", err=True)
    grid_text = _through_plane_grid_text(grid, target_spacing) if through_plane else ""
    typer.echo(f"wrote {written}{grid_text}" + (f"; maps in {maps}" if maps else ""))


def _through_plane_grid_text(grid: dict[str, Any], target_spacing: float | None) -> str:
    """What ``medsr upscale --through-plane`` wrote, as ``medsr interpolate`` says it: the
    shape and spacing (the slice spacing measured between the slices' planes), and, where a
    ``--target-spacing`` could not be met exactly, the spacing achieved and why (a whole number
    of slices fills the same field of view: 1.3 mm asked of 14 mm gives 11 slices 1.2727 mm
    apart)."""
    if not grid:
        return ""
    z, y, x = grid["shape_zyx"]
    spacing = tuple(round(float(v), 4) for v in grid["spacing_mm_zyx"])
    points = grid.get("time_points")
    each = f"{points} time points of " if points else ""  # a series over time (--series KEY:all)
    text = f" ({each}{z}x{y}x{x}, spacing {spacing} mm"
    s = float(grid["slice_spacing_mm"])
    if target_spacing is not None and abs(s - target_spacing) > 1e-4 * target_spacing:
        text += (
            f"; slice spacing {round(s, 4):g} mm, not the {target_spacing:g} mm asked: "
            f"{z} slices fill the same {round(z * s, 4):g} mm"
        )
    return text + ")"


def _check_adapt(steps: int) -> int:
    """``--adapt``: a whole number of steps ≥ 0."""
    from medsr.selfsup._fit import check_steps

    return check_steps(steps, "--adapt")


def _parse_duration(text: str) -> float:
    """``--budget``: the one duration grammar (:func:`medsr.durations.parse_duration`)."""
    from medsr.durations import parse_duration

    return parse_duration(text, "--budget")


def _parse_params(items: list[str] | None) -> dict[str, object]:
    """``["sigma=1.2", "window=tukey"]`` → ``{"sigma": 1.2, "window": "tukey"}`` (YAML scalars)."""
    import yaml

    from medsr.errors import InvalidParameterError

    params: dict[str, object] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidParameterError(f"--param expects key=value, got {item!r}")
        params[key.strip().replace("-", "_")] = yaml.safe_load(value) if value.strip() else None
    return params


@app.command(
    epilog="Example: medsr degrade MR_small.dcm mr_lr.nii.gz --kind kspace --scale 2 --param window=tukey"
)
def degrade(
    input: Annotated[Path, typer.Argument(help="High-resolution input image.")],
    output: Annotated[Path, typer.Argument(help="Output path (format from its suffix).")],
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            "-k",
            help=f"{', '.join(IN_PLANE_PHYSICS)}, thick-slice (through-plane), noise alone (gaussian-noise, rician-noise, ct-noise with --param sigma=...; poisson-noise with --param counts_per_unit=...) or auto (per modality).",
        ),
    ] = "auto",
    scale: Annotated[int, typer.Option("--scale", "-s", help="Factor.")] = 2,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Physics parameter key=value (repeatable)."),
    ] = None,
    seed: Annotated[
        int,
        typer.Option(
            "--seed",
            help="Seed for noise: a whole number from 0 to 2**64 - 1 (recorded with the image).",
        ),
    ] = 0,
    series: Annotated[str | None, typer.Option("--series", help=SERIES_HELP)] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output.")
    ] = False,
) -> None:
    """Simulate a lower-resolution acquisition (k-space truncation, sparse-view CT, thick slices...)."""
    from medsr.api import degrade_file

    written = degrade_file(
        input,
        output,
        kind=kind,
        scale=scale,
        params=_parse_params(param),
        seed=seed,
        series_uid=series,
        overwrite=overwrite,
    )
    typer.echo(f"wrote {written}")


@app.command(
    epilog=(
        "Example: medsr evaluate --data CT_small.dcm --data mr_folder/ --scale 2 "
        "--models bicubic,lanczos,kspace --out eval_x2"
    )
)
def evaluate(
    data: Annotated[
        list[Path],
        typer.Option(
            "--data", "-d", help="High-resolution reference files or folders (repeatable)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder.")] = Path("evaluation"),
    scale: Annotated[int, typer.Option("--scale", "-s", help="Factor.")] = 2,
    models: Annotated[
        str,
        typer.Option(
            "--models",
            "-m",
            help="Comma-separated model names or .safetensors files; zero-shot for self-supervised SR. --degradation thick-slice: linear-z or linear (the baseline, always run), cubic-z, cubic or bicubic, prior, prior+adapt, zero-shot, interp-cnn; other models are skipped. --interpolation: linear, cubic, interp-cnn or a .safetensors file.",
        ),
    ] = "bicubic,lanczos",
    degradation: Annotated[
        str,
        typer.Option(
            "--degradation",
            help="bicubic (default, as in published benchmarks), kspace, ct-detector, ct-sparse-view, radiograph, auto (per modality), or thick-slice (through-plane reconstruction of volumes).",
        ),
    ] = "bicubic",
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Degradation parameter key=value.")
    ] = None,
    max_slices: Annotated[
        int,
        typer.Option("--max-slices", help="Centred slab of at most this many slices per volume."),
    ] = 16,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    budget: Annotated[
        str,
        typer.Option("--budget", help="Training time per image of the zero-shot model: 30s, 2m..."),
    ] = "30s",
    adapt: Annotated[
        int,
        typer.Option(
            "--adapt",
            help="thick-slice: optimiser steps of per-volume adaptation for prior+adapt and zero-shot (seeded, reproducible).",
        ),
    ] = 200,
    interpolation: Annotated[
        bool,
        typer.Option(
            "--interpolation",
            help="Evaluate slice interpolators (drop every other slice, reconstruct; --scale is the factor; models e.g. interp-cnn,linear,cubic).",
        ),
    ] = False,
    maps: Annotated[
        bool,
        typer.Option(
            "--maps/--no-maps",
            help="Measure each output's consistency error |degrade(SR) - input| and test-time-augmentation uncertainty (metrics + figure rows).",
        ),
    ] = True,
    consistency: Annotated[
        str,
        typer.Option(
            "--consistency",
            help="on: project every output onto its input (data consistency) before measuring; off (default): the model's output as is.",
        ),
    ] = "off",
    modality: Annotated[
        str | None,
        typer.Option(
            "--modality",
            help="Modality of references that carry none (NIfTI, PNG, TIFF, .npy): CT, MR, CR, DX, US, NM...; it picks --degradation auto's physics and the no-data rules (a CT's fill outside the scan circle is not scored). A DICOM keeps its header's.",
        ),
    ] = None,
) -> None:
    """Degrade references, upscale back with each model, write metrics.csv, summary.json, report.md/html and figures."""
    from medsr.errors import InvalidParameterError
    from medsr.modality import check_modality

    if modality is not None:  # before anything is read
        modality = check_modality(modality)

    names = [m.strip() for m in models.split(",")]
    if not all(names):
        raise InvalidParameterError(
            f"--models {models!r} names an empty model; separate model names by single commas, e.g. bicubic,lanczos"
        )
    if interpolation:
        from medsr.reports.evaluate import discover_inputs
        from medsr.reports.interpolation import evaluate_interpolation

        if scale not in (2, 4):
            raise InvalidParameterError("slice interpolation factor (--scale) must be 2 or 4")
        evaluate_interpolation(
            discover_inputs(data, out_dir=out),
            names,
            factor=scale,
            out_dir=out,
            device="cpu" if device.strip().lower() == "auto" else device,
            modality=modality,
        )
        typer.echo((out / "report.md").read_text().rstrip())
        typer.echo(f"\nreport: {out / 'report.html'}")
        return
    from medsr.reports.evaluate import evaluate as run

    result = run(
        data,
        models=names,
        scale=scale,
        degradation=degradation,
        params=_parse_params(param),
        out_dir=out,
        max_slices=max_slices,
        device=device,
        progress=sys.stderr.isatty(),
        zero_shot=(
            {"adapt_steps": _check_adapt(adapt), "progress": False}
            if degradation.strip().lower() == "thick-slice"
            else {"budget_s": _parse_duration(budget), "progress": False}
        ),
        maps=maps,
        consistency=consistency,
        modality=modality,
    )
    typer.echo((out / "report.md").read_text().split("## Per modality")[0].rstrip())
    n = len(result.images)
    typer.echo(
        f"\nreport: {out / 'report.html'} ({n} image{'s' if n != 1 else ''}, {len(result.skipped)} skipped)"
    )


@app.command(
    epilog=(
        "Examples: medsr train configs/tiny.yaml --max-time 00:05:00 ;  "
        "medsr train configs/rdn-x2.yaml --resume runs/rdn-x2/checkpoints/last.ckpt --devices 2"
    )
)
def train(
    config: Annotated[Path, typer.Argument(help="YAML training recipe (see configs/).")],
    max_time: Annotated[
        str | None, typer.Option("--max-time", help="Wall-clock limit HH:MM:SS.")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Checkpoint written by medsr train to continue from."),
    ] = None,
    devices: Annotated[
        str | None, typer.Option("--devices", help="auto, a count, or ids like 0,1.")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", help="Run folder (default runs/<name>).")
    ] = None,
) -> None:
    """Train a model with PyTorch Lightning from a YAML recipe (checkpoints, TensorBoard, resume)."""
    from medsr.training.run import TrainingInterrupted
    from medsr.training.run import train as run

    try:
        result = run(config, max_time=max_time, resume=resume, devices=devices, out_dir=out_dir)
    except TrainingInterrupted as exc:  # Ctrl-C: where the state is, and the exit status of SIGINT
        typer.echo(f"interrupted: {exc}", err=True)
        raise typer.Exit(130) from None
    typer.echo(
        f"trained {result.global_step} steps in {result.seconds:.0f} s; last checkpoint: {result.last_checkpoint}"
    )
    if result.best_checkpoint:
        typer.echo(f"best checkpoint: {result.best_checkpoint}")
    typer.echo(
        f"export with: medsr export {result.best_checkpoint or result.last_checkpoint} model.safetensors"
    )


@app.command(epilog="Example: medsr export runs/rdn-x2/checkpoints/last.ckpt rdn-x2.safetensors")
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint written by medsr train.")],
    output: Annotated[Path, typer.Argument(help="Output .safetensors (weights + model card).")],
    raw: Annotated[
        bool, typer.Option("--raw", help="Export the raw weights instead of the EMA average.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output.")
    ] = False,
) -> None:
    """Export a training checkpoint to safetensors with its model card (for --model FILE)."""
    from medsr.training.run import export as run

    typer.echo(f"wrote {run(checkpoint, output, use_ema=not raw, overwrite=overwrite)}")


@app.command(
    epilog="Examples: medsr models --json ;  medsr models default-x2 (its whole model card) ;  "
    "medsr models my-model.safetensors --json"
)
def models(
    name: Annotated[
        str | None,
        typer.Argument(
            help="A shipped model or a .safetensors file: print its whole model card (intended "
            "use, out-of-scope uses, training data and licences, per-image validation, caveats, "
            "software, weights sha256)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List every model: classical interpolators, architectures and every shipped weights file
    (in-plane upscalers and slice interpolators), each with its kind. A name listed twice is an
    architecture (a recipe's model.name) and shipped weights of it (what --model NAME runs).
    medsr models NAME prints one model's whole card (Markdown; --json: the card as JSON)."""
    if name is not None:
        _model_card(name, as_json)
        return
    from medsr.models.registry import get_model_class, list_models
    from medsr.models.resolver import list_pretrained, shipped_weights

    shipped = shipped_weights()
    rows: list[dict[str, object]] = []
    for name in list_models(kind=None):
        cls = get_model_class(name)
        if getattr(cls, "kind", "upscaler") == "discriminator":
            continue
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        learned = bool(getattr(cls, "learned", True))
        if learned and name in shipped:  # the same name for the network and its trained weights
            doc += f" (the architecture, for recipes; --model {name} runs the shipped weights listed below)"
        rows.append({"name": name, "kind": "classical" if not learned else "architecture", "learned": learned,
                     "description": doc})  # fmt: skip
    for m in list_pretrained():
        gain = (m.card.get("metrics") or {}).get("val_psnr_gain")
        scale = f" ×{m.scale}" if m.scale else ""
        base = (
            "cubic along z"
            if m.kind == "through-plane"
            else ("zero-filled k-space" if m.low_band_base == "kspace" else "bicubic")
        )  # validation gains are over the base the model keeps the low band of
        desc = f"trained {m.card.get('architecture')}{scale}" + (
            f", val ΔPSNR {gain:+.2f} dB vs {base}" if gain is not None else ""
        )
        rows.append({**m.describe(), "kind": m.kind, "description": desc, "card": m.card})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    wide = max((len(str(r["name"])) for r in rows), default=0)  # the longest name sets the column
    kinds = max((len(str(r["kind"])) for r in rows), default=0)
    for row in rows:
        typer.echo(f"{row['name']:<{wide}}  {row['kind']:<{kinds}}  {row['description']}")


def _model_card(name: str, as_json: bool) -> None:
    """``medsr models NAME``: the whole card of a shipped model or a weights file."""
    import difflib

    from medsr.errors import UnknownModelError
    from medsr.models.cards import card_markdown, full_card
    from medsr.models.resolver import shipped_weights

    shipped = shipped_weights()
    path = shipped.get(name.lower())
    if path is None:
        if not name.lower().endswith(".safetensors"):
            close = difflib.get_close_matches(name.lower(), list(shipped), n=2, cutoff=0.6)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise UnknownModelError(
                f"no model card for {name!r}{hint}: name a shipped model ({', '.join(shipped)}) "
                "or a .safetensors weights file; classical interpolators have none"
            )
        path = Path(name)
    card = full_card(path)
    if as_json:
        typer.echo(json.dumps(card, indent=2, sort_keys=True))
        return
    typer.echo(card_markdown(card), nl=False)


@app.command(epilog="Example: medsr demo --out demo_out")
def demo(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for results and index.html.")
    ] = Path("demo_out"),
    scale: Annotated[int, typer.Option("--scale", "-s", help="Factor.")] = 2,
) -> None:
    """Upscale bundled corpus CT, MR, radiograph and ultrasound images and write a before/after HTML page."""
    from medsr.demo import run_demo

    page = run_demo(out, scale=scale)
    typer.echo(f"demo page: {page}")


def _register_subcommands() -> None:
    """Command groups living beside their packages (each module imports only typer)."""
    from medsr.batch.cli import register as register_batch
    from medsr.interpolation.cli import register as register_interpolate
    from medsr.pacs.cli import register as register_pacs
    from medsr.service.cli import register as register_serve

    register_batch(app)
    register_interpolate(app)
    register_serve(app)
    register_pacs(app)


_register_subcommands()


def main() -> None:
    """Entry point: run the app, turning medsr errors into ``error: …`` and exit status 2."""
    import warnings

    from medsr.errors import MedSRError

    def one_line(message, category, filename, lineno, file=None, line=None):
        # medsr's own warnings (questionable header values, fidelity checks) as one plain line
        if issubclass(category, UserWarning) and not _STATE["debug"]:
            typer.echo(f"warning: {message}", err=True)
        else:
            _show(message, category, filename, lineno, file, line)

    _show = warnings.showwarning
    warnings.showwarning = one_line
    # a process of medsr's own: freed tensors' memory serves the next plane instead of going
    # back to the system (20-27 % of the network's time on CPU: medsr.inference.memory)
    from medsr.inference.memory import retain_freed_memory

    retain_freed_memory()
    try:
        # not click's standalone mode: a usage error (an unknown option, a value of the wrong
        # type, a missing argument) is one ``error:`` line too, not a boxed panel
        code = app(standalone_mode=False)
    except MedSRError as exc:
        if _STATE["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except MemoryError:
        # an input within the pixel ceiling can still need more memory than is free (a small
        # .nii.gz declaring a large volume); outputs are written atomically, so nothing is
        # left half-written
        if _STATE["debug"]:
            raise
        typer.echo(
            "error: out of memory: this input (or its output) needs more memory than is free "
            "here; lower MEDSR_MAX_PIXELS to refuse such inputs before reading them, or use a "
            "machine with more memory",
            err=True,
        )
        sys.exit(2)
    except typer.TyperException as exc:  # typer's own click: a usage error
        _usage_error(exc)
    # typer.Exit(n) raised by a command: click returns its code outside standalone mode
    sys.exit(code if isinstance(code, int) else 0)


def _usage_error(exc: Exception) -> NoReturn:
    """A command-line usage error as one ``error:`` line and exit status 2 (``medsr`` alone
    prints its help, as click does)."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        exc.show()  # type: ignore[attr-defined]
        sys.exit(2)
    fmt = getattr(exc, "format_message", None)
    message = fmt() if callable(fmt) else str(exc)
    ctx = getattr(exc, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    typer.echo(f"error: {message}{where}", err=True)
    sys.exit(int(getattr(exc, "exit_code", 2)) or 2)


if __name__ == "__main__":  # pragma: no cover
    main()
