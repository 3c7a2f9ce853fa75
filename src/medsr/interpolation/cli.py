"""``medsr interpolate``: super-resolve a volume along its slice axis (wired by ``register(app)``).

The output grid is medsr's one through-plane grid (:mod:`medsr.slice_grid`), the same as
``medsr upscale --through-plane``: ``f·N`` slices of spacing ``s/f``, same field of view.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medsr.io import SERIES_HELP


def register(app: typer.Typer) -> None:
    """Add the ``interpolate`` command to the medsr Typer ``app`` (heavy imports stay lazy)."""

    @app.command(
        "interpolate",
        epilog="Example: medsr interpolate thick.nii.gz thin.nii.gz --factor 2 --model interp-cnn --maps thin_maps/",
    )
    def interpolate(
        input: Annotated[
            Path,
            typer.Argument(
                help="Volume: NIfTI, DICOM series folder or multi-frame DICOM; an image over time (a 4-D NIfTI, --series KEY:all) is interpolated time point by time point."
            ),
        ],
        output: Annotated[
            Path,
            typer.Argument(
                help="Output path; format from its suffix, a folder for a DICOM series."
            ),
        ],
        factor: Annotated[
            int,
            typer.Option(
                "--factor",
                "-f",
                help="2 or 4: N slices become factor x N, spacing / factor, same field of view (cell-centred, as upscale --through-plane).",
            ),
        ] = 2,
        model: Annotated[
            str,
            typer.Option(
                "--model",
                "-m",
                help="interp-cnn (shipped), linear, cubic, or a .safetensors file (interp-gan and fast-ddpm ship no weights: train one with configs/interp-*.yaml, then medsr export).",
            ),
        ] = "interp-cnn",
        series: Annotated[str | None, typer.Option("--series", help=SERIES_HELP)] = None,
        axis: Annotated[
            str, typer.Option("--axis", help="Slice axis of the array: z, y or x.")
        ] = "z",
        samples: Annotated[
            int, typer.Option("--samples", help="fast-ddpm: average this many samples.")
        ] = 1,
        seed: Annotated[
            int, typer.Option("--seed", help="fast-ddpm: sampling seed, 0 to 2**64 - 1.")
        ] = 0,
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="Replace an existing output.")
        ] = False,
        maps: Annotated[
            Path | None,
            typer.Option(
                "--maps",
                help="Folder for the uncertainty map of the output (test-time augmentation; fast-ddpm adds the spread of 4 seeded samples), its error bound (about 90% of voxels' errors below it, calibrated on the volume made thick once more and interpolated back) + summary.json.",
            ),
        ] = None,
    ) -> None:
        """Super-resolve a volume along its slice axis with a slice interpolator (N -> factor x N slices; each time point of an image over time)."""
        from medsr.errors import MedSRError

        try:
            if factor not in (2, 4):
                raise typer.BadParameter("must be 2 or 4", param_hint="--factor")
            if samples < 1:
                raise typer.BadParameter("must be at least 1", param_hint="--samples")
            from medsr.degradations import check_seed
            from medsr.interpolation.core import (
                SEED_NAME,
                interpolate_slices,
                interpolation_uncertainty,
            )
            from medsr.io import check_holds, load_image, save_image
            from medsr.io._atomic import check_not_input, check_output
            from medsr.io.sidecar import check_sidecar

            check_seed(seed, SEED_NAME)  # before the input is read, as medsr degrade
            check_output(output, overwrite)
            check_not_input(input, output)
            check_sidecar(output, overwrite)
            if maps is not None:
                check_not_input(input, maps)
                check_output(maps, overwrite, "folder")
            # --series as medsr upscale passes it: the reader's one grammar (KEY, KEY:N, KEY:all)
            image = load_image(input, **({"series_uid": series} if series else {}))
            check_holds(image, output)  # a format that cannot hold it: refused before the work
            # the output's size (the pixel ceiling, the format's axis limit) refused now, not
            # after the interpolation, as medsr upscale does
            from medsr.interpolation.core import axis_index
            from medsr.io.limits import check_output_size
            from medsr.slice_grid import factor_slices

            shape = list(image.spatial_shape)
            a = axis_index(axis)
            shape[a] = factor_slices(shape[a], factor)
            check_output_size(image, (shape[0], shape[1], shape[2]), output)
            if maps is None:
                result = interpolate_slices(
                    image, model, factor, axis=axis, samples=samples, seed=seed
                )
            else:
                result, std, summary = interpolation_uncertainty(
                    image, model, factor, axis=axis, seed=seed, output_samples=samples
                )
            written = save_image(result, output, overwrite=overwrite)
            if maps is not None:
                from medsr.safeguards.maps import write_maps

                write_maps(
                    {"uncertainty": std, **(result.meta.get("maps") or {})},
                    maps,
                    like=result,
                    summary=summary,
                    overwrite=overwrite,
                )
        except MedSRError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        z, y, x = result.spatial_shape
        # an image over time (--series KEY:all, a 4-D NIfTI), as medsr upscale says it
        each = f"{result.array.shape[0]} time points of " if result.channels == "time" else ""
        typer.echo(
            f"wrote {written} ({each}{z}x{y}x{x}, spacing {_spacing_text(result, axis)} mm)"
            + (f"; maps in {maps}" if maps is not None else "")
        )


def _spacing_text(result: Any, axis: str) -> str:
    """The output's spacing as ``(z, y, x)`` in mm, the slice axis's the distance between the
    new slices' planes (:func:`medsr.slice_grid.slice_spacing`, what SpacingBetweenSlices
    states): on a tilted stack the step from slice to slice is longer (2.66 mm for slices 2.5 mm
    apart at a 20° tilt)."""
    from medsr.interpolation.core import axis_index
    from medsr.slice_grid import slice_spacing

    a = axis_index(axis)
    spacing = [float(s) for s in result.spacing]
    spacing[a] = slice_spacing(result, a)
    return str(tuple(round(s, 4) for s in spacing))
