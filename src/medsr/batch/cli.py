"""``medsr batch``: upscale a whole folder (or a manifest) resumably, locally or on Ray.

Registered on the main app by :func:`register`; everything heavy is imported inside the command.
Errors about the command itself (bad scale, unknown model, missing input) are
:class:`~medsr.errors.MedSRError`s, which ``medsr`` prints as ``error: …`` with exit status 2;
errors of single items go to ``batch_report.csv`` and never stop the batch. The exit status is
1 when some item failed, 0 otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from medsr.inference.precision import PRECISION_HELP
from medsr.modality import degradation_help


def register(app: typer.Typer) -> None:
    """Add the ``batch`` command to ``app``."""

    @app.command(
        epilog=(
            "Examples: medsr batch archive/ archive_x2/ --scale 2 --workers 2 ;  "
            "medsr batch list.csv out/ --model default-x2 ;  "
            "medsr batch mr/ mr_x2/ --model kspace --consistency on --maps mr_x2_maps/ ;  "
            "medsr batch ct/ ct_x2/ --model fast-x2 --precision auto ;  "
            "medsr batch /shared/in /shared/out --engine ray --address auto"
        )
    )
    def batch(
        input: Annotated[
            Path,
            typer.Argument(
                help="Folder to search recursively (DICOM series, NIfTI, PNG/TIFF, .npy) or a "
                "manifest CSV with an 'input' column (and optionally 'output')."
            ),
        ],
        output: Annotated[
            Path,
            typer.Argument(
                help="Output folder: mirrors the input's structure; holds batch_report.csv and "
                "the resume journal batch_state.jsonl."
            ),
        ],
        model: Annotated[
            str | None,
            typer.Option(
                "--model",
                "-m",
                help="Shipped model (default-x2...), registered name or a .safetensors file; "
                "default: default-xN when shipped, else bicubic.",
            ),
        ] = None,
        scale: Annotated[
            int, typer.Option("--scale", "-s", help="In-plane factor: 2, 3 or 4.")
        ] = 2,
        workers: Annotated[
            int | None,
            typer.Option(
                "--workers",
                "-w",
                help="Local engine: reader and writer threads each (default 2). "
                "Ray engine: model actors (default: one per GPU, else one per CPU).",
            ),
        ] = None,
        engine: Annotated[
            str, typer.Option("--engine", help="local (threads on this machine) or ray (Ray Data).")
        ] = "local",
        address: Annotated[
            str | None,
            typer.Option(
                "--address",
                help="Ray engine: 'auto' or HOST:6379 of a running cluster; omitted: start a "
                "private local Ray for this run.",
            ),
        ] = None,
        device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
        batch_size: Annotated[
            int | None,
            typer.Option(
                "--batch-size", help="Planes per forward pass (default 1 on CPU, 32 on CUDA)."
            ),
        ] = None,
        threads: Annotated[
            int | None,
            typer.Option(
                "--threads",
                help="Local engine: intra-op threads of the model (default: one per core; "
                "1 is often faster on a shared machine).",
            ),
        ] = None,
        progress: Annotated[
            bool | None,
            typer.Option(
                "--progress/--no-progress",
                help="Progress bar (default: when stderr is a terminal).",
            ),
        ] = None,
        consistency: Annotated[
            str,
            typer.Option(
                "--consistency",
                help="auto (default): project each output onto its input when the physics is "
                "known (--degradation KIND, or --degradation auto with an MR header); on: always, "
                "for the assumed degradation; off: only measure. Recorded in every output's "
                "provenance.",
            ),
        ] = "auto",
        maps: Annotated[
            Path | None,
            typer.Option(
                "--maps",
                help="Folder for each item's consistency-error, uncertainty and error-bound maps "
                "(+ summary.json; mirrors the outputs). Uncertainty runs the model 8× per item "
                "(and 8× on a quarter of the pixels to calibrate the error bound).",
            ),
        ] = None,
        degradation: Annotated[
            str | None,
            typer.Option(
                "--degradation",
                help=degradation_help("the inputs", "each input's"),
            ),
        ] = None,
        modality: Annotated[
            str | None,
            typer.Option(
                "--modality", help="Modality of inputs that carry none (NIfTI, PNG, TIFF, .npy)."
            ),
        ] = None,
        decode_timeout: Annotated[
            str,
            typer.Option(
                "--decode-timeout",
                help="Longest time one input may take to read (it is decoded in a separate "
                "process, killed beyond; the item fails and the batch goes on): 30s, 5m.",
            ),
        ] = "5m",
        ensemble: Annotated[
            bool,
            typer.Option(
                "--ensemble",
                help="Trained models: each output is the mean of the model's outputs for the 8 "
                "flips/90-degree rotations of its input (8x the network time).",
            ),
        ] = False,
        output_dtype: Annotated[
            str | None,
            typer.Option(
                "--output-dtype",
                help="NIfTI outputs: input (default: an input stored as integers keeps its type and "
                "scaling, values rounded onto its grid) or float32. Other formats are unaffected.",
            ),
        ] = None,
        precision: Annotated[str, typer.Option("--precision", help=PRECISION_HELP)] = "fp32",
        as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    ) -> None:
        """Upscale every image and DICOM series under a folder (or in a manifest); resumable."""
        from medsr.batch.runner import run_batch
        from medsr.durations import parse_duration

        summary = run_batch(
            input,
            output,
            model=model,
            scale=scale,
            workers=workers if workers is not None else (2 if engine == "local" else None),
            engine=engine,
            address=address,
            device=device,
            batch_size=batch_size,
            threads=threads,
            progress=sys.stderr.isatty() if progress is None else progress,
            consistency=consistency,
            degradation=degradation,
            modality=modality,
            maps_dir=maps,
            decode_timeout_s=parse_duration(decode_timeout, "--decode-timeout"),
            ensemble=ensemble,
            output_dtype=output_dtype,
            precision=precision,
        )
        c = summary.counts
        if as_json:
            typer.echo(json.dumps(summary.to_dict(), indent=2))
        else:
            typer.echo(
                f"{c.get('ok', 0)} ok, {c.get('failed', 0)} failed, {c.get('skipped', 0)} skipped "
                f"in {summary.seconds:.1f} s ({summary.items_per_s:.2f} items/s); report: {summary.report}"
            )
            warned = sum(1 for r in summary.results if r.warnings)
            if warned:
                typer.echo(
                    f"warning: {warned} item(s) have warnings (column 'warnings' of the report)",
                    err=True,
                )
        if c.get("failed", 0):
            raise typer.Exit(1)
