"""``/api/v1/jobs``: upload and start a job, follow it, download its result, preview it, delete it."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response

from medsr.durations import ZERO_SHOT_BUDGET_S
from medsr.inference.precision import PRECISION_CHOICES
from medsr.service.jobs import MEDIA_TYPES, JobNotFoundError, JobNotReadyError
from medsr.service.previews import render_preview
from medsr.service.routes import ServiceDep
from medsr.service.schemas import JobOut, error_responses, job_out
from medsr.service.security import auth
from medsr.service.service import JobRequest

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], dependencies=[Depends(auth)])


def check_id(job_id: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{32}", job_id):
        raise JobNotFoundError("no such job (job ids are 32 hexadecimal characters)")
    return job_id


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    responses=error_responses(400, 401, 413, 415, 422, 503),
    summary="Upload an image and start a job",
)
def create_job(
    service: ServiceDep,
    file: Annotated[
        UploadFile,
        File(description="DICOM file, zip of a DICOM series, NIfTI (.nii/.nii.gz), PNG or TIFF."),
    ],
    model: Annotated[
        str,
        Form(
            description="Model name (see /api/v1/models); 'default' is the shipped default-x{scale} "
            "(as on the command line); ignored for self-supervised modes.",
            max_length=200,
        ),
    ] = "default",
    scale: Annotated[int, Form(description="Factor: 2, 3 or 4 (through-plane: along z).")] = 2,
    mode: Annotated[
        str, Form(description="in-plane, through-plane or zero-shot.", max_length=40)
    ] = "in-plane",
    consistency: Annotated[
        str,
        Form(
            description="in-plane: 'auto' (default) projects the result onto agreement with the "
            "input when the physics is known (degradation, or an MR header), 'on' always, "
            "'off' only measures it.",
            max_length=8,
        ),
    ] = "auto",
    degradation: Annotated[
        str | None,
        Form(
            description="The physics that made the input: a kind of `medsr degrade --kind` "
            "(bicubic, kspace, ct-detector, ...), 'auto' (from the DICOM header) or 'none'.",
            max_length=40,
        ),
    ] = None,
    modality: Annotated[
        str | None,
        Form(
            description="Modality for inputs that carry none (NIfTI, PNG, TIFF): CT, MR, CR...",
            max_length=8,
        ),
    ] = None,
    adapt_steps: Annotated[
        int,
        Form(
            description="through-plane: optimiser steps adapting the shipped prior to this volume "
            "(0 = the prior alone; seeded, so the same request gives the same result).",
            ge=0,
        ),
    ] = 0,
    ensemble: Annotated[
        bool,
        Form(
            description="in-plane, trained models: the result is the mean of the model's outputs "
            "for the 8 flips/90-degree rotations of the input (as `medsr upscale --ensemble`).",
        ),
    ] = False,
    budget: Annotated[
        str | None,
        Form(
            description="zero-shot: training time on this image, as `medsr upscale --budget` "
            f"(90, 60s, 2m; default {ZERO_SHOT_BUDGET_S:g}s, the command line's; the server "
            "sets the most it allows).",
            max_length=20,
        ),
    ] = None,
    precision: Annotated[
        str,
        Form(
            description="in-plane, trained models: the network's arithmetic, as `medsr upscale "
            f"--precision` ({', '.join(PRECISION_CHOICES)}): fp32 (default); auto (fp16 on a "
            "CUDA GPU, else bf16 where the server's CPU has AVX-512 BF16/AMX, for models whose "
            "measured change on CT is within tolerance; fp32 otherwise); bf16 (about 1.4-2x "
            "faster where native, emulated and very slow elsewhere); fp16 (CUDA servers). The "
            "precision that ran is in the job's provenance and the result's derivation.",
            max_length=8,
        ),
    ] = "fp32",
    series: Annotated[
        str | None,
        Form(
            description="DICOM: which series or stack to read, as `medsr upscale --series`: "
            "KEY:N (the N-th stack of a series that holds several: echoes, cardiac phases, "
            "time points, a localizer), KEY:all (its time points or cardiac phases as one image "
            "over time, written back as one derived series), :N or :all (of the only series "
            "in the upload), KEY (a series of several). An upload of several stacks without "
            "it is refused (422) with the list of them (`stacks`) to choose from.",
            max_length=200,
        ),
    ] = None,
) -> JSONResponse:
    request = JobRequest(
        model=model, scale=scale, mode=mode, consistency=consistency, degradation=degradation,
        modality=modality, adapt_steps=adapt_steps, ensemble=ensemble, budget=budget,
        precision=precision, series=series,
    )  # fmt: skip
    job = service.create_job(file.file, file.filename, request)
    body = job_out(job, service.settings.retention_s).model_dump(mode="json")
    return JSONResponse(body, status_code=202, headers={"Location": f"/api/v1/jobs/{job.id}"})


@router.get(
    "/{job_id}",
    response_model=JobOut,
    responses=error_responses(401, 404, 422),
    summary="Job state, progress and results",
)
def get_job(service: ServiceDep, job_id: str) -> JobOut:
    return job_out(service.queue.get(check_id(job_id)), service.settings.retention_s)


@router.delete(
    "/{job_id}",
    status_code=204,
    responses=error_responses(401, 404, 409, 422),
    summary="Delete a job and its files now",
)
def delete_job(service: ServiceDep, job_id: str) -> Response:
    service.delete_finished(check_id(job_id))
    return Response(status_code=204)


@router.get(
    "/{job_id}/result",
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The result file."},
        **error_responses(401, 404, 409, 422),
    },
    response_class=Response,
    summary="Download the result (same format as the upload; a zip for a series)",
)
def get_result(
    service: ServiceDep,
    job_id: str,
    part: Annotated[
        Literal["image", "sidecar"],
        Query(
            description="image, or the JSON sidecar (spacing, units) written beside PNG/TIFF/NIfTI results."
        ),
    ] = "image",
) -> Response:
    job = service.queue.get(check_id(job_id))
    if job.state != "done" or job.result_path is None:
        raise JobNotReadyError(
            f"the job is {job.state}; there is no result yet"
            if job.state != "failed"
            else "the job failed; there is no result"
        )
    headers = {"Cache-Control": "no-store"}
    if part == "sidecar":
        if job.sidecar_path is None:
            raise JobNotReadyError("this result has no sidecar")
        return FileResponse(
            job.sidecar_path,
            media_type="application/json",
            filename=job.sidecar_path.name,
            headers=headers,
        )
    return FileResponse(
        job.result_path,
        media_type=MEDIA_TYPES[job.input_format],
        filename=job.result_name,
        headers=headers,
    )


@router.get(
    "/{job_id}/preview",
    responses={
        200: {
            "content": {"image/png": {}},
            "description": "A windowed PNG of one slice (of one time point: `time`); X-Slices: "
            "the image's slice count; a "
            "map's X-Map-Max: the value (its units) of its brightest colour; X-Map-Uniform: "
            "the one value the map's slice holds where the image holds data (a classical "
            "interpolator's error bound), absent when it holds several.",
        },
        **error_responses(401, 404, 409, 422),
    },
    response_class=Response,
    summary="PNG of one slice for the viewer",
)
def get_preview(
    service: ServiceDep,
    job_id: str,
    which: Annotated[
        str,
        Query(description="input, output, or a map name listed in the job's maps.", max_length=40),
    ] = "output",
    slice_index: Annotated[
        int | None,
        Query(alias="slice", description="Slice index in that image (default: middle)."),
    ] = None,
    window: Annotated[
        str,
        Query(
            description="auto, soft-tissue, lung, bone, brain, or 'centre,width'.", max_length=60
        ),
    ] = "auto",
    max_size: Annotated[
        int, Query(ge=64, le=8192, description="Longest side of the PNG (downsampled beyond).")
    ] = 2048,
    time_index: Annotated[
        int,
        Query(
            alias="time",
            description="An image over time (the job's `time_points`): the time point or "
            "cardiac phase, from 0 (default: the first).",
        ),
    ] = 0,
) -> Response:
    job = service.queue.get(check_id(job_id))
    png, n, top, one = render_preview(job, which, slice_index, window, max_size, time_index)
    headers = {"Cache-Control": "no-store", "X-Slices": str(n)}
    if top is not None:  # a map: the value of its brightest colour (the viewer's colour bar)
        headers["X-Map-Max"] = f"{top:.6g}"
    if one is not None:  # a map of one value: the viewer says it instead of a flat colour
        headers["X-Map-Uniform"] = f"{one:.6g}"
    return Response(png, media_type="image/png", headers=headers)
