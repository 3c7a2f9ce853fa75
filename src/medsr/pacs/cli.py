"""``medsr pacs list|upscale|watch``: the DICOMweb bridge on the command line.

Registered on the main app by :func:`register`. Heavy imports (requests, dicomweb-client,
pydicom, torch) happen inside the commands. Errors are :class:`~medsr.errors.MedSRError`
subclasses, which ``medsr``'s entry point prints as ``error: …`` with exit status 2.
Credentials can come from the environment (``MEDSR_PACS_USER``, ``MEDSR_PACS_PASSWORD``,
``MEDSR_PACS_TOKEN``) so that they do not show in the process list or shell history.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from medsr.errors import InvalidParameterError, MedSRError
from medsr.inference.precision import PRECISION_HELP
from medsr.modality import degradation_help

UrlOpt = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="MEDSR_PACS_URL",
        help="DICOMweb root, e.g. http://localhost:8042/dicom-web (env MEDSR_PACS_URL).",
    ),
]
UserOpt = Annotated[
    str | None,
    typer.Option("--user", envvar="MEDSR_PACS_USER", help="HTTP basic user (env MEDSR_PACS_USER)."),
]
PasswordOpt = Annotated[
    str | None,
    typer.Option(
        "--password",
        envvar="MEDSR_PACS_PASSWORD",
        help="HTTP basic password (env MEDSR_PACS_PASSWORD).",
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="MEDSR_PACS_TOKEN",
        help="Bearer token, e.g. an OAuth2 access token (env MEDSR_PACS_TOKEN).",
    ),
]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait for each connection and read.")
]
RetriesOpt = Annotated[
    int,
    typer.Option(
        "--retries", help="Retries (exponential backoff) after connection errors and HTTP 429/5xx."
    ),
]
InsecureOpt = Annotated[
    bool, typer.Option("--insecure", help="Do not verify TLS certificates (test servers only).")
]
CaBundleOpt = Annotated[
    Path | None,
    typer.Option(
        "--ca-bundle",
        help="PEM file of the CA certificates to trust (a hospital's private CA); default: the "
        "system's, or REQUESTS_CA_BUNDLE when set.",
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Shipped model (default-x2...), registered name or a .safetensors file; "
        "default: default-xN when shipped, else bicubic.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
ConsistencyOpt = Annotated[
    str,
    typer.Option(
        "--consistency",
        help="auto (default): enforce data consistency when the physics is known; on; off.",
    ),
]
DegradationOpt = Annotated[
    str | None,
    typer.Option(
        "--degradation",
        help=degradation_help("each series", "the series'"),
    ),
]
PrecisionOpt = Annotated[str, typer.Option("--precision", help=PRECISION_HELP)]
MapsOpt = Annotated[
    bool,
    typer.Option(
        "--maps",
        help="Also store the trust maps of medsr upscale --maps in the same study, each a derived "
        "series (SeriesNumber source + 1001 consistency error, + 1002 uncertainty: 8x the network "
        "time, + 1003 error bound: about 90% of pixels' error below it); a rerun stores only "
        "missing ones.",
    ),
]
EnsembleOpt = Annotated[
    bool,
    typer.Option(
        "--ensemble",
        help="Trained models: the mean of the model's outputs for the 8 flips/90-degree rotations (8x the network time; tagged MODEL+ in the series description).",
    ),
]


def _connect(
    url: str,
    user: str | None,
    password: str | None,
    token: str | None,
    timeout: float,
    retries: int,
    insecure: bool,
    ca_bundle: Path | None = None,
) -> Any:
    try:
        from medsr.pacs.client import PacsClient
    except ImportError as exc:  # the optional extra is missing
        raise MedSRError(
            f"the PACS bridge needs the 'pacs' extra ({exc.name} is not installed): "
            "pip install 'medsr[pacs]'"
        ) from None
    if insecure and ca_bundle is not None:
        raise InvalidParameterError("give either --insecure or --ca-bundle, not both")
    return PacsClient(
        url,
        user=user,
        password=password,
        token=token,
        timeout=timeout,
        retries=retries,
        verify=str(ca_bundle) if ca_bundle is not None else not insecure,
    )


def _err(message: str) -> None:
    typer.echo(message, err=True)


@contextmanager
def _interruption() -> Iterator[None]:
    """Ctrl-C while a derived series was being stored: ``interrupted while storing …`` (what
    was left in the PACS) and the exit status of SIGINT, instead of a bare "interrupted"."""
    from medsr.pacs.errors import PacsInterrupted

    try:
        yield
    except PacsInterrupted as exc:
        _err(str(exc))
        raise typer.Exit(130) from None


pacs_app = typer.Typer(
    name="pacs",
    help=(
        "Pull series from a PACS over DICOMweb, upscale them, push derived series back.\n\n"
        "Examples:\n\n"
        "  medsr pacs list --url http://localhost:8042/dicom-web --modality CT\n\n"
        "  medsr pacs upscale --url http://localhost:8042/dicom-web --study 1.2.3 --model bicubic --scale 2\n\n"
        "  medsr pacs watch --url http://localhost:8042/dicom-web --filter modality=CT --interval 30s --max-series 10"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@pacs_app.command(
    "list", epilog="Example: medsr pacs list --url http://localhost:8042/dicom-web --modality CT"
)
def list_command(
    url: UrlOpt,
    study: Annotated[
        str | None, typer.Option("--study", help="Only this StudyInstanceUID.")
    ] = None,
    modality: Annotated[
        str | None, typer.Option("--modality", help="Only this modality (CT, MR... or CT,MR).")
    ] = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
    token: TokenOpt = None,
    timeout: TimeoutOpt = 30.0,
    retries: RetriesOpt = 3,
    insecure: InsecureOpt = False,
    ca_bundle: CaBundleOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List series (QIDO-RS): study and series UIDs, modality, instances, description. No patient data."""
    client = _connect(url, user, password, token, timeout, retries, insecure, ca_bundle)
    from medsr.pacs.bridge import list_series

    rows = list_series(client, study, modality)
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    if not rows:
        typer.echo("no series found")
        return
    typer.echo(
        f"{'STUDY INSTANCE UID':<64}  {'SERIES INSTANCE UID':<64}  MODALITY  INSTANCES  DESCRIPTION"
    )
    for r in rows:
        n = "?" if r.instances is None else str(r.instances)
        typer.echo(
            f"{r.study_uid:<64}  {r.series_uid:<64}  {r.modality:<8}  {n:>9}  {r.description}"
        )
    typer.echo(f"{len(rows)} series")


@pacs_app.command(
    "upscale",
    epilog=(
        "Example: medsr pacs upscale --url http://localhost:8042/dicom-web --study 1.2.3 "
        "--series 1.2.3.4 --model bicubic --scale 2"
    ),
)
def upscale_command(
    url: UrlOpt,
    study: Annotated[str, typer.Option("--study", help="StudyInstanceUID.")],
    series: Annotated[
        str | None,
        typer.Option(
            "--series",
            help="SeriesInstanceUID, or the 8-character key messages name it by "
            "(default: every image series of the study); UID:N or KEY:N reads the N-th stack "
            "of a series that holds several (a localizer, echoes, time points); UID:all or "
            "KEY:all its time points or cardiac phases together, stored as one derived series.",
        ),
    ] = None,
    model: ModelOpt = None,
    scale: Annotated[int, typer.Option("--scale", "-s", help="In-plane factor: 2, 3 or 4.")] = 2,
    device: DeviceOpt = "auto",
    consistency: ConsistencyOpt = "auto",
    degradation: DegradationOpt = None,
    ensemble: EnsembleOpt = False,
    precision: PrecisionOpt = "fp32",
    maps: MapsOpt = False,
    attempts: Annotated[
        int, typer.Option("--attempts", help="STOW-RS rounds for instances the server refused.")
    ] = 3,
    user: UserOpt = None,
    password: PasswordOpt = None,
    token: TokenOpt = None,
    timeout: TimeoutOpt = 60.0,
    retries: RetriesOpt = 3,
    insecure: InsecureOpt = False,
    ca_bundle: CaBundleOpt = None,
    as_json: JsonOpt = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress lines on stderr.")
    ] = False,
) -> None:
    """Retrieve a series (WADO-RS), upscale it, store the derived series in the same study (STOW-RS).

    Prints the new SeriesInstanceUID on stdout (the source series and --maps' map series by
    their keys; --json: full UIDs); progress lines on stderr name series by key only. Running it
    again stores nothing: the existing derived (and map) series are found and reported.
    """
    client = _connect(url, user, password, token, timeout, retries, insecure, ca_bundle)
    from medsr.pacs.bridge import upscale_series

    with _interruption():
        results = upscale_series(
            client,
            study,
            series,
            model=model,
            scale=scale,
            device=device,
            consistency=consistency,
            degradation=degradation,
            ensemble=ensemble,
            precision=precision,
            maps=maps,
            attempts=attempts,
            log=None if quiet or as_json else _err,
        )
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in results], indent=2))
        return
    for r in results:
        typer.echo(r.describe())


@pacs_app.command(
    "watch",
    epilog=(
        "Example: medsr pacs watch --url http://localhost:8042/dicom-web --filter modality=CT "
        "--interval 30s --max-series 10"
    ),
)
def watch_command(
    url: UrlOpt,
    filter: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            "-f",
            help="QIDO-RS filter KEY=VALUE, repeatable (modality=CT, StudyDate=20240101-).",
        ),
    ] = None,
    model: ModelOpt = None,
    scale: Annotated[int, typer.Option("--scale", "-s", help="In-plane factor: 2, 3 or 4.")] = 2,
    interval: Annotated[
        str, typer.Option("--interval", help="Time between polls: 30s, 5m, 1h.")
    ] = "30s",
    max_series: Annotated[
        int | None, typer.Option("--max-series", help="Stop after handling this many series.")
    ] = None,
    max_polls: Annotated[
        int | None, typer.Option("--max-polls", help="Stop after this many polls.")
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="JSON file of series already handled (default under ~/.local/state/medsr).",
        ),
    ] = None,
    settle: Annotated[
        int,
        typer.Option(
            "--settle",
            help="Polls a series' instance count must stay unchanged before it is processed.",
        ),
    ] = 1,
    skip_existing: Annotated[
        bool,
        typer.Option(
            "--skip-existing", help="On a first run, ignore series already on the server."
        ),
    ] = False,
    device: DeviceOpt = "auto",
    consistency: ConsistencyOpt = "auto",
    degradation: DegradationOpt = None,
    ensemble: EnsembleOpt = False,
    precision: PrecisionOpt = "fp32",
    maps: MapsOpt = False,
    user: UserOpt = None,
    password: PasswordOpt = None,
    token: TokenOpt = None,
    timeout: TimeoutOpt = 60.0,
    retries: RetriesOpt = 3,
    insecure: InsecureOpt = False,
    ca_bundle: CaBundleOpt = None,
) -> None:
    """Poll for new series and upscale each once; stops at --max-series/--max-polls or Ctrl-C."""
    import signal
    import threading

    client = _connect(url, user, password, token, timeout, retries, insecure, ca_bundle)
    from medsr.pacs.bridge import describe_filters, parse_filters, parse_interval, watch

    filters = parse_filters(filter)
    seconds = parse_interval(interval)
    from medsr.pipeline import check_options

    # every option checked before "watching …" is said (watch checks them again, cheaply)
    check_options(
        scale=scale, model=model, consistency=consistency, degradation=degradation,
        ensemble=ensemble, precision=precision, device=device,
    )  # fmt: skip
    stop = threading.Event()
    previous = None

    def on_sigint(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        _err("stopping after the current series (Ctrl-C again to abort)")
        stop.set()

    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with _interruption():
            shown = describe_filters(filters)  # no UID, no patient attribute in a log
            _err(f"watching {client.display_url} ({shown}) every {seconds:g} s")
            summary = watch(
                client,
                filters=filters,
                model=model,
                scale=scale,
                interval=seconds,
                max_series=max_series,
                max_polls=max_polls,
                state_path=state,
                stop_event=stop,
                settle_polls=settle,
                skip_existing=skip_existing,
                device=device,
                consistency=consistency,
                degradation=degradation,
                ensemble=ensemble,
                precision=precision,
                maps=maps,
                log=typer.echo,
            )
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    typer.echo(
        f"handled {summary.handled} series ({len(summary.failed)} failed) in {summary.polls} "
        f"poll{'s' if summary.polls != 1 else ''}; stopped by {summary.stopped_by}; "
        f"state: {summary.state_path}"
    )


def register(app: typer.Typer) -> None:
    """Add the ``pacs`` command group to the ``medsr`` app."""
    app.add_typer(pacs_app, name="pacs")


__all__ = ["pacs_app", "register"]
