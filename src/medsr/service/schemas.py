"""Response models of the REST API (pydantic: they make the OpenAPI schema) and job → JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from medsr.service.jobs import Job


class StackChoice(BaseModel):
    key: str = Field(description="The series' key (8 characters of a hash of its UID).")
    number: int | None = Field(
        description="The stack's number in the series (from 1); null for a whole series (an "
        "upload of several series)."
    )
    series: str = Field(
        description="What reads this stack: send it as `series` (KEY:N; KEY for a whole series)."
    )
    label: str = Field(description="What tells it apart: e.g. 'echo 2', 'cardiac phase 3 "
        "(trigger time ~80 ms)'.")  # fmt: skip
    images: int = Field(description="Its number of images (slices).")
    description: str = Field(description="Images, plane, size and labels, as the message lists it.")
    over_time: str | None = Field(
        None,
        description="KEY:all where the stacks are time points or cardiac phases of one volume "
        "(read together as one image over time, one derived series; a localizer beside them "
        "left out); null otherwise.",
    )
    over_time_points: int | None = Field(
        None, description="How many time points or cardiac phases `over_time` reads."
    )


class ErrorBody(BaseModel):
    detail: str = Field(description="What went wrong, in words a user can act on.")
    type: str | None = Field(None, description="Error class (e.g. UnsupportedFormatError).")
    stacks: list[StackChoice] | None = Field(
        None,
        description="A DICOM upload whose series holds several stacks (echoes, cardiac "
        "phases, time points, a localizer), or that holds several series, and none chosen: the "
        "stacks (or the series, `number` null), to send one as `series`.",
    )


class ImageInfo(BaseModel):
    modality: str
    shape_zyx: list[int]
    spacing_mm_zyx: list[float]
    channels: str
    units: str
    min: float
    max: float
    format: str | None = None
    filename: str | None = None
    size_bytes: int | None = None
    series: str | None = Field(None, description="The series or stack read (`series`), if chosen.")
    time_points: int | None = Field(
        None,
        description="An image over time (channels 'time': a cine or dynamic series read with "
        "`series` KEY:all): its number of time points or cardiac phases, each of `shape_zyx`; "
        "null otherwise.",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="What the reader noted about the input (e.g. images of the series it left "
        "out, such as a localizer, and the `series` value that reads them).",
    )


class JobError(BaseModel):
    status: int
    type: str
    message: str


class JobOut(BaseModel):
    id: str
    state: Literal["queued", "running", "done", "failed"]
    stage: str
    progress: float = Field(ge=0, le=1)
    mode: str
    model: str
    scale: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = None
    input: ImageInfo
    output: ImageInfo | None = None
    window: list[float] = Field(
        description="Default display window (centre, width) in the image's units."
    )
    model_card: dict[str, Any]
    metrics: dict[str, Any]
    maps: list[str] = Field(description="Extra preview layers (e.g. consistency, uncertainty).")
    safeguards: dict[str, Any] = Field(
        default_factory=dict,
        description="Fidelity summary: consistency error, uncertainty, out-of-distribution check, warnings.",
    )
    provenance: dict[str, Any] = Field(
        default_factory=dict,
        description="medsr version, model name and checksum, scale, degradation assumed, consistency setting; in-plane: the network's arithmetic that ran (precision, and why auto chose it: precision_auto).",
    )
    error: JobError | None = None
    links: dict[str, str]


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    kind: str
    learned: bool
    description: str = ""
    scales: list[int]


class ServiceInfo(BaseModel):
    version: str
    max_upload_mb: float
    retention_s: float
    scales: list[int]
    modes: dict[str, bool]
    window_presets: dict[str, list[float]]
    auth_required: bool


class Health(BaseModel):
    status: str
    version: str
    jobs_pending: int
    max_pending: int


_ERROR_TEXT = {
    400: "Malformed request (e.g. a broken multipart body).",
    401: "Missing or wrong bearer token.",
    404: "Unknown job (or expired).",
    409: "The job has not finished.",
    413: "Upload or archive too large.",
    415: "Unsupported file format.",
    422: "Invalid parameter or corrupt data.",
    503: "Queue full or shutting down; try again later.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error codes an endpoint can answer."""
    return {c: {"model": ErrorBody, "description": _ERROR_TEXT[c]} for c in codes}


def _ts(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


def job_out(job: Job, retention_s: float) -> JobOut:
    """The public JSON of ``job`` (links to its result and previews)."""
    base = f"/api/v1/jobs/{job.id}"
    links = {"self": base, "preview": f"{base}/preview"}
    if job.state == "done":
        links["result"] = f"{base}/result"
        if job.sidecar_path is not None:
            links["sidecar"] = f"{base}/result?part=sidecar"
    output = None
    if job.output_info is not None:
        output = ImageInfo(**job.output_info, format=job.input_format, filename=job.result_name)
    return JobOut(
        id=job.id,
        state=job.state,  # type: ignore[arg-type]
        stage=job.stage,
        progress=job.progress,
        mode=job.mode,
        model=job.model,
        scale=job.scale,
        created_at=_ts(job.created_at),  # type: ignore[arg-type]
        started_at=_ts(job.started_at),
        finished_at=_ts(job.finished_at),
        expires_at=_ts(job.finished_at + retention_s) if job.finished_at else None,
        input=ImageInfo(**job.input_info),
        output=output,
        window=[float(job.window[0]), float(job.window[1])],
        model_card=job.model_card,
        metrics=job.metrics,
        maps=list(job.maps),
        safeguards=job.safeguards,
        provenance=job.provenance,
        error=JobError(**job.error) if job.error else None,
        links=links,
    )
