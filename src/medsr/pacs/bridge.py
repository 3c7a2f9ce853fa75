"""DICOMweb bridge: find series (QIDO-RS), pull them (WADO-RS), upscale, push back (STOW-RS).

Three entry points, each taking a DICOMweb root URL (or a ready
:class:`~medsr.pacs.client.PacsClient`) plus connection options (``user``/``password`` or
``token``, ``timeout``, ``retries``, ``backoff``, ``verify``):

* :func:`list_series` — series of the server or of one study: UIDs, modality, description,
  number of instances. Never patient names, IDs or birth dates.
* :func:`upscale_series` — retrieve a series (or every image series of a study), super-resolve
  it with any medsr model, write a *derived* series (:func:`medsr.io.dicom.write_dicom`: new
  Series/SOP Instance UIDs, same Study and Frame of Reference, DerivationDescription,
  SourceImageSequence) and store it in the same study.
* :func:`watch` — poll for new series matching filters and upscale each once, with its state in
  a small JSON file; bounded (``max_series``, ``max_polls``) and stoppable (``stop_event``).

**Idempotence.** The derived series' SeriesDescription ends with a token
``[medsr MODEL xSCALE KEY]`` where ``KEY`` is 8 hex digits of a hash of the source
SeriesInstanceUID, the model identity (its name, or the SHA-256 of a weights file) and the scale.
SeriesDescription is a series-level attribute every PACS indexes and returns from QIDO-RS, so
before retrieving and again before storing, the study is searched for a series carrying the same
key; if it exists with all its instances it is reused and nothing is stored.

**Trust maps** (``maps=True``, ``--maps``: what ``medsr upscale --maps`` writes for a DICOM
input): the consistency, uncertainty and error-bound maps are stored in the same study as derived
series of their own (SeriesNumber source + 1001, 1002, 1003), *before* the derived series, whose
SeriesDescription token each one's extends: ``[medsr error bound map xSCALE MAPKEY]``, ``MAPKEY``
a hash of the derivation key and the map's name (:func:`map_token`). A map series found complete
is not stored again; a rerun stores only the map series that are missing.

**No half series.** Instances are stored in bounded STOW-RS batches; the ones a server refuses
(or that a transport error loses) are sent again (``attempts`` rounds with backoff). If some still
fail, the partial series is deleted again (DICOMweb DELETE, or Orthanc's REST API) and
:class:`~medsr.pacs.errors.PacsStoreError` lists the failed SOP Instance UIDs; if the server
allows no deletion, or stopped answering before the partial series could be deleted, the error
says which and names the partial series.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medsr.errors import (
    InvalidParameterError,
    MedSRError,
    NotAnImageError,
    SeriesMismatchError,
    is_fatal,
)
from medsr.models.resolver import LoadedModel
from medsr.pacs.client import PacsClient, check_uid, connect, uid_key
from medsr.pacs.errors import (
    PacsAuthError,
    PacsError,
    PacsInterrupted,
    PacsNotAnImageError,
    PacsNotFoundError,
    PacsStoreError,
    PacsUnreachableError,
)

__all__ = [
    "NON_IMAGE_MODALITIES",
    "SeriesInfo",
    "UpscaleResult",
    "WatchSummary",
    "derivation_token",
    "describe_filters",
    "list_series",
    "map_token",
    "parse_filters",
    "parse_interval",
    "upscale_series",
    "watch",
]

#: Modalities whose series carry no image to super-resolve.
NON_IMAGE_MODALITIES = frozenset(
    {
        "SR",
        "SEG",
        "PR",
        "KO",
        "DOC",
        "REG",
        "FID",
        "RTSTRUCT",
        "RTPLAN",
        "RTRECORD",
        "ECG",
        "HD",
        "EPS",
        "AU",
        "RESP",
        "BI",
        "PLAN",
        "RWV",
        "M3D",
        "HC",
        "SMR",
        "ASMT",
    }
)

_TOKEN_RE = re.compile(r"\[medsr [^\[\]]* x(\d+) ([0-9a-f]{8})\]")
LogFn = Callable[[str], None]


# =============================================================================== records
@dataclass(frozen=True)
class SeriesInfo:
    """One series as QIDO-RS lists it (no patient attributes)."""

    study_uid: str
    series_uid: str
    modality: str
    description: str
    number: int | None
    instances: int | None

    @property
    def derived_key(self) -> str | None:
        """The medsr derivation key if this series was written by medsr, else None: the last
        token (a series medsr derived from a derived series carries its source's token first,
        and was taken for the source's derivation: ``upscale`` reported it as ``exists``)."""
        keys = _TOKEN_RE.findall(self.description)
        return keys[-1][1] if keys else None

    @property
    def is_image(self) -> bool:
        return self.modality.upper() not in NON_IMAGE_MODALITIES

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class UpscaleResult:
    """What :func:`upscale_series` did with one source series.

    ``status``: ``"stored"`` (a new derived series), ``"exists"`` (the same derivation was
    already in the PACS: nothing stored) or ``"skipped"`` (not an image series; ``reason``).
    ``stack``: the stack of the source series that was read (``--series KEY:N``), if chosen;
    ``"all"`` for every stack read as one series over time (``--series KEY:all``).
    """

    study_uid: str
    source_series_uid: str
    status: str
    derived_series_uid: str | None = None
    instances: int = 0
    modality: str = ""
    model: str = ""
    scale: int = 0
    reason: str = ""
    seconds: float = 0.0
    stack: int | str | None = None
    #: with ``maps``: one entry per trust-map series, ``{"map", "series_uid", "status"
    #: ("stored" or "exists"), "instances"}``
    maps: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for people and logs: the derived series by its UID (medsr made it; the
        user needs it to find the series), the source series by its key (:func:`uid_key`)."""
        source = f"series {uid_key(self.source_series_uid)}"
        if self.stack == "all":  # medsr.io.dicom.stacks.ALL_STACKS (not imported: pydicom)
            source += " (every stack, over time)"
        elif self.stack is not None:
            source += f" (stack {self.stack})"
        if self.status == "skipped":
            return f"skipped {source} ({self.modality}): {self.reason}"
        verb = "stored" if self.status == "stored" else "exists"
        line = (
            f"{verb} {self.derived_series_uid} ({self.instances} instance"
            f"{'s' if self.instances != 1 else ''}, {self.modality}, {self.model} x{self.scale}) "
            f"derived from {source}"
        )
        if self.maps:  # map series by their keys (logs: hashed UIDs only)
            line += "; trust maps: " + ", ".join(
                f"{m['map'].replace('_', ' ')} {m['status']} (series {uid_key(m['series_uid'])})"
                for m in self.maps
            )
        return line


@dataclass
class WatchSummary:
    """What one :func:`watch` run did."""

    polls: int = 0
    results: list[UpscaleResult] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    stopped_by: str = ""
    state_path: str = ""

    @property
    def handled(self) -> int:
        return len(self.results) + len(self.failed)


# =============================================================================== list
def _series_info(row: dict[str, Any], study: str | None = None) -> SeriesInfo:
    """``row`` of a QIDO-RS series search; ``study``: the study the search was made in (or
    filtered on), for servers that leave StudyInstanceUID out of their answers (it was read as
    ``''``, and upscaling failed with "StudyInstanceUID '' is not a DICOM UID")."""

    def as_int(v: Any) -> int | None:
        try:
            return int(v)
        except (TypeError, ValueError):
            return None

    return SeriesInfo(
        study_uid=str(row.get("StudyInstanceUID") or study or ""),
        series_uid=str(row.get("SeriesInstanceUID") or ""),
        modality=str(row.get("Modality") or ""),
        description=str(row.get("SeriesDescription") or ""),
        number=as_int(row.get("SeriesNumber")),
        instances=as_int(row.get("NumberOfSeriesRelatedInstances")),
    )


def _search(
    client: PacsClient, study: str | None, filters: dict[str, str] | None
) -> list[SeriesInfo]:
    """QIDO-RS with comma-separated filter values expanded into one query per combination."""
    filters = dict(filters or {})
    keys = list(filters)
    choices = [[v.strip() for v in str(filters[k]).split(",") if v.strip()] or [""] for k in keys]
    out: dict[str, SeriesInfo] = {}
    for combo in itertools.product(*choices) if keys else [()]:
        query = {k: v for k, v in zip(keys, combo, strict=True) if v}
        searched = study or _single_uid(query.get("StudyInstanceUID"))
        for row in client.search_series(study, query):
            info = _series_info(row, searched)
            if study and info.study_uid and info.study_uid != study:
                continue
            out.setdefault(info.series_uid, info)
    return list(out.values())


def _single_uid(value: str | None) -> str | None:
    """A filter value naming exactly one UID (no wildcard, no list), else None."""
    text = str(value or "").strip()
    return text if re.fullmatch(r"[0-9A-Za-z._-]{1,64}", text) else None


def list_series(
    url: str | PacsClient,
    study: str | None = None,
    modality: str | None = None,
    *,
    filters: dict[str, str] | None = None,
    **connect_options: Any,
) -> list[SeriesInfo]:
    """Series on the server (or in ``study``), optionally of one ``modality`` (``CT`` or ``CT,MR``).

    Raises :class:`PacsNotFoundError` when ``study`` is given and holds no series.
    """
    client = connect(url, **connect_options)
    if study is not None:
        study = check_uid(study, "StudyInstanceUID")
    query = dict(filters or {})
    if modality:
        query["Modality"] = modality.upper()
    rows = _search(client, study, query)
    if study is not None and not rows:
        if query and _search(client, study, None):
            return []
        client.check_root()  # "not found" at a URL that is no DICOMweb root says so
        raise PacsNotFoundError(f"study {uid_key(study)} was not found on {client.display_url}")
    rows.sort(
        key=lambda r: (r.study_uid, r.number if r.number is not None else 1 << 30, r.series_uid)
    )
    return rows


# =============================================================================== upscale
def _resolve_model(model: str | os.PathLike[str] | LoadedModel | None, scale: int) -> LoadedModel:
    """The one resolver (:func:`medsr.models.resolver.resolve_model`): ``None`` → ``default-x{scale}``
    when shipped, else bicubic (as ``medsr upscale`` does)."""
    from medsr.models.resolver import resolve_model

    return resolve_model(model, scale=scale, kinds=("in-plane", "classical"))


def _model_for_series(
    model: LoadedModel, scale: int, degradation: str | None, modality: str | None
) -> LoadedModel:
    """The model a series runs: the one named, or — with none named — the default for the
    physics stated for it (``auto``: MR → k-space; :func:`medsr.models.resolver.default_model_name`),
    chosen before the derivation key is computed so that the key names the model that runs."""
    from medsr.models.resolver import physics_default, resolve_model
    from medsr.pipeline import physics_kind

    kind = physics_kind(degradation, modality)
    if physics_default(model, scale, kind) is None:
        return model
    return resolve_model(None, scale=scale, kinds=("in-plane", "classical"), physics=kind)


def _model_identity(model: str | os.PathLike[str] | LoadedModel) -> tuple[str, str]:
    """(short tag for the description, stable identity for the key) of a model: the identity is
    the model's one checksum (``sha256:`` of the weights, ``classical:<name>``), so new weights
    under the same name are a new derivation."""
    from medsr.models.resolver import resolve_model

    loaded = model if isinstance(model, LoadedModel) else resolve_model(model)
    tag = re.sub(r"[^A-Za-z0-9_.+-]", "-", loaded.name.lower())[:16] or "model"
    return tag, loaded.checksum


def derivation_token(
    source_series_uid: str,
    model: str | os.PathLike[str] | LoadedModel,
    scale: int,
    ensemble: bool = False,
    precision: str = "fp32",
) -> tuple[str, str]:
    """``(token, key)``: the SeriesDescription suffix ``" [medsr MODEL xS KEY]"`` and its key.

    ``KEY`` hashes the source series, the model identity and the scale (and ``ensemble``: the
    mean over 8 flips/rotations is another output, tagged ``MODEL+`` as EDSR+ is; and
    ``precision``, the network arithmetic that *ran* when it is not fp32: another output,
    tagged ``MODEL bf16``), so the same derivation is recognised on the server whatever the
    description says otherwise. An fp32 derivation's key is the one of a medsr without
    precisions, so series derived before are still found.
    """
    tag, identity = _model_identity(model)
    if ensemble:
        tag, identity = f"{tag}+", f"{identity}|ensemble"
    if precision != "fp32":
        tag, identity = f"{tag} {precision}", f"{identity}|{precision}"
    key = hashlib.sha256(f"{source_series_uid}|{identity}|x{int(scale)}".encode()).hexdigest()[:8]
    return f" [medsr {tag} x{int(scale)} {key}]", key


def map_token(key: str, name: str, scale: int) -> tuple[str, str]:
    """``(token, map key)`` of the trust map ``name`` of the derivation ``key``
    (:func:`derivation_token`): the SeriesDescription suffix ``" [medsr error bound map xS MAPKEY]"``.

    Its own key, so that a map series is never taken for the derived series (nor for another
    map), while a study's search still sees it as made by medsr (never upscaled again)."""
    mkey = hashlib.sha256(f"{key}|map:{name}".encode()).hexdigest()[:8]
    label = name.replace("_", " ")
    return f" [medsr {label} map x{int(scale)} {mkey}]", mkey


def _find_derived(client: PacsClient, study: str, key: str) -> SeriesInfo | None:
    """The series of ``study`` carrying derivation ``key`` (the fullest one if several).

    Its instance count comes from NumberOfSeriesRelatedInstances or, for servers that do not
    report it, from an instance-level QIDO-RS query.
    """
    return _find_keyed(client, study, {key}).get(key)


def _find_keyed(client: PacsClient, study: str, keys: Iterable[str]) -> dict[str, SeriesInfo]:
    """:func:`_find_derived` for several keys at once (one series search): key → series."""
    wanted = set(keys)
    hits: dict[str, SeriesInfo] = {}
    for s in _search(client, study, None):
        k = s.derived_key
        if k in wanted:
            s = _with_count(client, s)
            if k not in hits or (s.instances or 0) > (hits[k].instances or 0):
                hits[k] = s
    return hits


def _with_count(client: PacsClient, info: SeriesInfo) -> SeriesInfo:
    if info.instances is not None:
        return info
    n = client.count_instances(info.study_uid, info.series_uid)
    return SeriesInfo(
        info.study_uid, info.series_uid, info.modality, info.description, info.number, n
    )


def _check_model(model: str | os.PathLike[str] | LoadedModel | None, scale: int) -> LoadedModel:
    """Fail before any download when the model or scale is wrong."""
    from medsr.models.resolver import check_scale

    return _resolve_model(model, check_scale(scale))


def upscale_series(
    url: str | PacsClient,
    study: str,
    series: str | None = None,
    *,
    model: str | os.PathLike[str] | LoadedModel | None = None,
    scale: int = 2,
    device: str = "auto",
    consistency: str = "auto",
    degradation: str | None = None,
    ensemble: bool = False,
    precision: str = "fp32",
    maps: bool = False,
    attempts: int = 3,
    workdir: str | os.PathLike[str] | None = None,
    log: LogFn | None = None,
    **connect_options: Any,
) -> list[UpscaleResult]:
    """Upscale one series of ``study`` (or, without ``series``, each of its image series).

    ``series``: its full UID or its key (:func:`uid_key`); ``UID:N`` or ``KEY:N`` reads its
    N-th stack, as ``medsr upscale --series`` does, for a series that holds several (a
    localizer, echoes, time points: :mod:`medsr.io.dicom.stacks`, whose messages number them).
    A stack other than the first is its own derivation (:func:`derivation_token`). ``UID:all``
    or ``KEY:all`` reads the time points or cardiac phases of a series together, as ``medsr
    upscale --series KEY:all`` does, and stores ONE derived series over time (its own
    derivation too).

    ``maps``: also store the trust maps (consistency, uncertainty — the spread over the 8
    flips/rotations, 8x the network time — and the calibrated error bound, as ``medsr upscale
    --maps``) as derived series of the same study (:func:`map_token`); each result's ``maps``
    lists them.

    ``precision``: the network's arithmetic, as ``medsr upscale --precision`` (``fp32``,
    ``auto``, ``bf16``, ``fp16`` on CUDA); the derived series' DerivationDescription records the
    one that ran, and a precision other than fp32 is its own derivation (:func:`derivation_token`).

    Returns one :class:`UpscaleResult` per source series. A series that medsr itself derived
    is not upscaled again when the whole study is processed; non-image series are skipped
    (with ``series`` given, a non-image series raises :class:`PacsNotAnImageError`).

    Raises:
        PacsNotFoundError: unknown study or series UID.
        PacsNotAnImageError: the series (or every series of the study) holds no image.
        PacsStoreError: STOW-RS failed for some instances even after retries.
        PacsUnreachableError, PacsAuthError, PacsError: server problems.
        InvalidParameterError: bad model name or scale.
    """
    from medsr.io.dicom.stacks import split_series

    client = connect(url, **connect_options)
    study = check_uid(study, "StudyInstanceUID")
    stack: int | str | None = None
    if series is not None:
        wanted, stack = split_series(series)
        if wanted is None:  # ":N" names a stack of the only series of a folder: here, of none
            raise InvalidParameterError(
                f"--series {series.strip()!r} names a stack but no series: give UID:N, KEY:N "
                "or UID:all"
            )
        series = check_uid(wanted, "SeriesInstanceUID")
    from medsr.pipeline import check_options

    check_options(
        scale=scale, consistency=consistency, degradation=degradation, ensemble=ensemble,
        precision=precision, device=device,
    )  # fmt: skip
    scale = int(scale)
    loaded = _check_model(model, scale)
    say = log or (lambda _m: None)
    tag = _model_identity(loaded)[0]

    all_series = _search(client, study, None)
    if not all_series:
        client.check_root()  # "not found" at a URL that is no DICOMweb root says so
        raise PacsNotFoundError(f"study {uid_key(study)} was not found on {client.display_url}")
    if series is not None:
        chosen = _chosen_series(all_series, series)
        if not chosen:
            raise PacsNotFoundError(
                f"series {uid_key(series)} was not found in study {uid_key(study)} on "
                f"{client.display_url}"
            )
        if not chosen[0].is_image:
            raise PacsNotAnImageError(
                f"series {uid_key(series)} is a {chosen[0].modality} series, not an image series: "
                "nothing to upscale"
            )
    else:
        chosen = [s for s in all_series if s.derived_key is None]
        chosen.sort(key=lambda s: (s.number if s.number is not None else 1 << 30, s.series_uid))
        if not any(s.is_image for s in chosen):
            kinds = ", ".join(sorted({s.modality or "?" for s in chosen})) or "only medsr-derived"
            raise PacsNotAnImageError(
                f"study {uid_key(study)} holds no image series to upscale ({kinds})"
            )

    results: list[UpscaleResult] = []
    for info in chosen:
        if not info.is_image:
            results.append(
                UpscaleResult(
                    study,
                    info.series_uid,
                    "skipped",
                    modality=info.modality,
                    model=tag,
                    scale=scale,
                    reason=f"{info.modality} is not an image series",
                )
            )
            continue
        try:
            result = _upscale_one(
                client, info, loaded, scale, device, attempts, workdir, say,
                consistency=consistency, degradation=degradation, ensemble=ensemble,
                precision=precision, stack=stack, maps=maps,
            )  # fmt: skip
        except (NotAnImageError, SeriesMismatchError) as exc:
            if series is not None:
                raise  # a series not made of one regular volume is skipped in a whole study
            result = UpscaleResult(
                study,
                info.series_uid,
                "skipped",
                modality=info.modality,
                model=tag,
                scale=scale,
                reason=str(exc),
            )
        results.append(result)
    return results


def _chosen_series(all_series: list[SeriesInfo], series: str) -> list[SeriesInfo]:
    """The series of the study named by ``series``: its full UID or its key (:func:`uid_key`,
    as messages and logs name it; a unique start of the key will do, as for ``medsr upscale
    --series``)."""
    exact = [s for s in all_series if s.series_uid == series]
    if exact:
        return exact
    wanted = series.lower()
    if not re.fullmatch(r"[0-9a-f]{4,8}", wanted):
        return []
    hits = [s for s in all_series if uid_key(s.series_uid).startswith(wanted)]
    return hits if len(hits) == 1 else []


def _upscale_one(
    client: PacsClient,
    info: SeriesInfo,
    model: LoadedModel,
    scale: int,
    device: str,
    attempts: int,
    workdir: str | os.PathLike[str] | None,
    say: LogFn,
    *,
    consistency: str = "auto",
    degradation: str | None = None,
    ensemble: bool = False,
    precision: str = "fp32",
    stack: int | str | None = None,
    maps: bool = False,
) -> UpscaleResult:
    import pydicom

    from medsr.inference.device import resolve_device
    from medsr.inference.precision import resolve_precision
    from medsr.io.dicom import read_dicom, write_dicom
    from medsr.pipeline import upscale_with_safeguards
    from medsr.safeguards.maps import MAP_DESCRIPTIONS, write_map_series

    t0 = time.perf_counter()
    study, source = info.study_uid, info.series_uid
    model = _model_for_series(model, scale, degradation, info.modality)
    ensemble = ensemble and model.learned  # an interpolator is symmetric: the same output
    # the arithmetic that will run (auto: for this device and model), as the upscaler resolves it
    ran = resolve_precision(precision, resolve_device(device), model.checksum, model.learned)[0]
    # the first stack is what the series reads as when it reads at all: the same derivation
    chosen = source if stack in (None, 1) else f"{source}:{stack}"
    token, key = derivation_token(chosen, model, scale, ensemble, ran)
    tag = " ".join(token.strip(" []").split()[1:-2])  # MODEL[+][ PRECISION]
    base = UpscaleResult(
        study, source, "", modality=info.modality, model=tag, scale=scale, stack=stack
    )
    # the trust maps' tokens: name → (token, key); their series are found by key as the derived one
    map_keys = {n: map_token(key, n, scale) for n in MAP_DESCRIPTIONS} if maps else {}

    def finish(status: str, derived: str, n: int) -> UpscaleResult:
        base.status, base.derived_series_uid, base.instances = status, derived, n
        base.seconds = time.perf_counter() - t0
        return base

    found_all = _find_keyed(client, study, {key, *(k for _, k in map_keys.values())})
    found = found_all.get(key)
    if found is not None and info.instances and found.instances == info.instances:
        have = {n: found_all.get(k) for n, (_, k) in map_keys.items()}
        if all(m is not None and m.instances == info.instances for m in have.values()):
            base.maps = [
                {"map": n, "series_uid": m.series_uid, "status": "exists", "instances": m.instances}
                for n, m in have.items()
                if m is not None
            ]
            return finish("exists", found.series_uid, found.instances or 0)

    with tempfile.TemporaryDirectory(prefix="medsr-pacs-", dir=workdir) as tmp:
        src_dir, out_dir = Path(tmp) / "source", Path(tmp) / "derived"
        say(
            f"retrieving series {uid_key(source)} ({info.modality}, {info.instances or '?'} instances)"
        )
        client.retrieve_series(study, source, src_dir)
        try:
            image = read_dicom(src_dir, series_uid=source if stack is None else f"{source}:{stack}")
        except NotAnImageError as exc:
            text = _named_instances(str(exc), src_dir)
            raise PacsNotAnImageError(
                f"series {uid_key(source)} cannot be upscaled: {text}"
            ) from None
        except MedSRError as exc:  # e.g. instances of different sizes: SeriesMismatchError
            exc.args = (
                f"series {uid_key(source)} cannot be upscaled: "
                f"{_named_instances(str(exc), src_dir)}",
            )
            raise exc.with_traceback(None) from None
        say(f"upscaling series {uid_key(source)} x{scale} with {tag}")
        # the one pipeline: the same safeguards, provenance and maps as every other front end
        up, summary = upscale_with_safeguards(
            image, scale, model, consistency=consistency, degradation=degradation, maps=maps,
            tta=maps, warn=False, device=device, ensemble=ensemble, precision=precision,
        )  # fmt: skip
        del image
        for message in summary.get("warnings", []):
            say(f"warning: {message}")
        arrays = up.meta.get("maps") or {}
        up = up.replace(meta={k: v for k, v in up.meta.items() if k != "maps"})
        if maps and "error_bound" not in arrays:
            why = (summary.get("error_bound") or {}).get("reason", "not calibrated")
            say(f"warning: series {uid_key(source)}: no error bound map: {why}")
        write_dicom(up, out_dir, series_description_suffix=token)
        folders: dict[str, Path] = {}
        if arrays:  # each map's own token (map_token): found again by its key
            folders = write_map_series(
                arrays, Path(tmp) / "maps", up, description_suffix=lambda n: map_keys[n][0]
            )
        del up, arrays
        files = sorted(out_dir.glob("*.dcm"))
        if not files:  # pragma: no cover - write_dicom always writes at least one file
            raise PacsError(f"no derived instance was written for series {uid_key(source)}")
        first = pydicom.dcmread(files[0], stop_before_pixels=True)
        derived = str(first.SeriesInstanceUID)
        if str(first.StudyInstanceUID) != study:  # the writer keeps the study; never elsewhere
            raise PacsError(
                f"derived instances of series {uid_key(source)} do not belong to study "
                f"{uid_key(study)}"
            )

        # idempotence, again: another worker may have stored the same derivation meanwhile
        found_all = _find_keyed(client, study, {key, *(k for _, k in map_keys.values())})
        # what this run stored, so that Ctrl-C takes it all back: (what, series UID)
        stored: list[tuple[str, str]] = []
        # the earlier series of the same derivation this run deleted to store its own: gone
        # even where this run's own stores are taken back, so every message says so
        replaced: list[str] = []
        # the maps first: a derived series in the PACS has its trust maps beside it; Ctrl-C
        # between two stores (not only during one) takes back what this run stored too
        try:
            for name, folder in folders.items():
                label = f"{name.replace('_', ' ')} map series"
                map_files = sorted(folder.glob("*.dcm"))
                uid = str(pydicom.dcmread(map_files[0], stop_before_pixels=True).SeriesInstanceUID)
                had = found_all.get(map_keys[name][1])
                entry = {
                    "map": name,
                    "series_uid": uid,
                    "status": "stored",
                    "instances": len(map_files),
                }
                if had is not None and had.instances == len(map_files):
                    base.maps.append({**entry, "series_uid": had.series_uid, "status": "exists"})
                    continue
                if had is not None:
                    _remove_incomplete(client, study, had, label, len(map_files), say, replaced)
                say(f"storing {len(map_files)} instances of the {label} {uid_key(uid)}")
                _store_whole_series(
                    client, study, uid, map_files, attempts, label, stored, replaced
                )
                stored.append((label, uid))
                base.maps.append(entry)
            found = found_all.get(key)
            if found is not None:
                if found.instances == len(files):
                    return finish("exists", found.series_uid, len(files))
                _remove_incomplete(
                    client, study, found, "derived series", len(files), say, replaced
                )

            say(f"storing {len(files)} instances as series {uid_key(derived)}")  # logs: keys only
            _store_whole_series(
                client, study, derived, files, attempts, "derived series", stored, replaced
            )
        except KeyboardInterrupt as exc:
            if isinstance(exc, PacsInterrupted):  # during a store: already taken back
                raise
            raise _interrupted(client, study, None, earlier=stored, replaced=replaced) from None
    return finish("stored", derived, len(files))


def _remove_incomplete(
    client: PacsClient,
    study: str,
    found: SeriesInfo,
    what: str,
    n: int,
    say: LogFn,
    replaced: list[str] | None = None,
) -> None:
    """Delete a series of the same derivation an earlier run left with another number of
    instances than this run's ``n`` (or raise): one stored incompletely, or one an older medsr
    wrote otherwise (a trust map of an image over time was one series of the first time
    point's slices, the mean over the time points). The progress line said "removing incomplete
    earlier ... map series" of such a complete older map, and not how many instances it held.
    ``replaced``: where the deleted series is noted (its words), for the messages of a store
    that fails or is interrupted afterwards."""
    # the progress line names it by its key (logs: hashed UIDs only); the error, which asks
    # the user to delete it on the PACS, by its UID when medsr made it (a derived series)
    shown = found.series_uid if what == "derived series" else uid_key(found.series_uid)
    held = f"{found.instances} of {n} instances"
    say(f"removing the earlier {what} {uid_key(found.series_uid)}: {held}; storing it again")
    if not client.delete_series(study, found.series_uid):
        raise PacsStoreError(
            f"an earlier {what} {shown} of the same derivation ({held}: incomplete, or from an "
            f"older medsr) is in study {uid_key(study)} and the server does not allow deleting "
            "it: delete it on the PACS, then run again",
            series_uid=found.series_uid,
        )
    if replaced is not None:
        replaced.append(f"the earlier {what} {shown} ({held})")


def _replaced_words(replaced: list[str] | None) -> str:
    """What a failed or interrupted run says of the earlier series it deleted to replace them
    (they are not restored): "" when none. A Ctrl-C after such a replacement said "nothing was
    left in the PACS", though the earlier series was gone."""
    if not replaced:
        return ""
    return (
        f"; {' and '.join(replaced)} this run replaced had been deleted before: run the same "
        "command again to store " + ("it" if len(replaced) == 1 else "them")
    )


def _named_instances(text: str, folder: Path) -> str:
    """``text`` with the work folder's file names (``'000003.dcm'``: the order the server sent
    the instances in, meaningless to the user) replaced by the instances' Instance Numbers
    (what a viewer shows) and the keys of their SOP Instance UIDs (:func:`uid_key`; never the
    UIDs: messages end up in logs): "differ in image size (128×128 in '000001.dcm' vs 64×64 in
    '000003.dcm')" named no instance, and no series either."""
    import pydicom

    def instance(match: re.Match[str]) -> str:
        path = folder / match.group(1)
        try:
            head = pydicom.dcmread(
                path, stop_before_pixels=True, specific_tags=["SOPInstanceUID", "InstanceNumber"]
            )
            number = head.get("InstanceNumber")
            shown = f" (number {number})" if number not in (None, "") else ""
            return f"instance {uid_key(str(head.SOPInstanceUID))}{shown}"
        except Exception as exc:  # the name stays as it was
            if is_fatal(exc):
                raise
            return match.group(0)

    return re.sub(r"'(\d{6}\.dcm)'", instance, text).replace(str(folder), "the retrieved series")


def _store_whole_series(
    client: PacsClient,
    study: str,
    derived: str,
    files: list[Path],
    attempts: int,
    what: str = "derived series",
    earlier: list[tuple[str, str]] | None = None,
    replaced: list[str] | None = None,
) -> None:
    """STOW every instance or nothing: retry failures, then roll the partial series back (and
    at Ctrl-C too, with the series this run stored before it, ``earlier`` — its trust maps:
    :class:`PacsInterrupted` says whether they were). ``what``: ``"derived series"``, named by
    its UID, or a trust map's (``"error bound map series"``), named by its key; ``replaced``:
    the earlier series this run deleted (:func:`_remove_incomplete`), which its messages name."""
    n = len(files)
    shown = derived if what == "derived series" else uid_key(derived)
    try:
        outcome = client.store_all(files, study, attempts=attempts)
        failed = dict(outcome.failed)
        if not failed:
            listed = _search(client, study, {"SeriesInstanceUID": derived})
            count = _with_count(client, listed[0]).instances if listed else 0
            if count is not None and count >= n:
                return
            failed = {"?": f"the server lists {count} of {n} instances after storing"}
    except KeyboardInterrupt:
        raise _interrupted(client, study, derived, what, earlier or [], replaced) from None
    try:
        removed, unreachable = client.delete_series(study, derived), False
    except PacsUnreachableError:
        removed, unreachable = False, True
    listed_failed = ", ".join(f"{uid} ({why})" for uid, why in list(failed.items())[:5])
    more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
    if removed:
        tail = (
            "the partially stored series was deleted again, nothing "
            + ("of this run " if replaced else "")
            + "was left in the PACS"
        )
    elif unreachable:
        tail = (
            f"the DICOMweb server at {client.display_url} stopped answering (no connection or "
            f"a timeout), so the partial series {shown} may be left in study {uid_key(study)}: "
            "once the "
            "server is back, delete that series there if it is listed"
        )
    else:
        tail = (
            f"the partial series {shown} could not be deleted (the server allows no DELETE): "
            "delete it on the PACS"
        )
    raise PacsStoreError(
        f"storing {what} {shown} failed for {len(failed)} of {n} instances after "
        f"{max(1, attempts)} attempts: {listed_failed}{more}; {tail}{_replaced_words(replaced)}",
        series_uid=derived,
        failed=failed,
        removed=removed,
        unreachable=unreachable,
    )


def _interrupted(
    client: PacsClient,
    study: str,
    derived: str | None,
    what: str = "derived series",
    earlier: list[tuple[str, str]] | None = None,
    replaced: list[str] | None = None,
) -> PacsInterrupted:
    """Ctrl-C while ``derived`` was being stored (``None``: between two stores, or before the
    first): delete what was stored, and the series this run stored before it (``earlier``: its
    trust maps), so that the PACS holds what it held before the run (a second Ctrl-C or a server
    that stopped answering leaves them, and the message names them). It was left without a
    word, a half series in the study until a later run of the same derivation replaced it; and
    a Ctrl-C between two stores left the trust-map series already stored. The earlier series
    this run deleted to replace them (``replaced``) are gone: the message says so."""
    current = [] if derived is None else [(what, derived)]
    left: list[str] = []
    for label, uid in [*current, *(earlier or [])]:
        try:
            gone = client.delete_series(study, uid)
        except (PacsError, KeyboardInterrupt):
            gone = False
        if not gone:
            left.append(f"the {label} {uid if label == 'derived series' else uid_key(uid)}")
    before = len(earlier or [])
    if derived is None:
        head = "interrupted between two stores"
        done = (
            f"the {before} trust-map series this run stored were deleted again"
            if before
            else "this run had stored nothing"
        )
    else:
        shown = derived if what == "derived series" else uid_key(derived)
        head = f"interrupted while storing the {what} {shown}"
        also = f" (and the {before} trust-map series this run stored before it)" if before else ""
        done = f"the instances stored so far{also} were deleted again"
    deleted = _replaced_words(replaced)
    if not left:
        return PacsInterrupted(
            f"{head}; {done}, nothing "
            + ("of this run " if deleted else "")
            + f"was left in the PACS{deleted}",
            series_uid=derived or "",
            removed=True,
        )
    return PacsInterrupted(
        f"{head}; part of it may be left in study {uid_key(study)} ({', '.join(left)}): run the "
        "same command again (it replaces an incomplete derived series) or delete that series on "
        f"the PACS{deleted}",
        series_uid=derived or "",
    )


# =============================================================================== watch


def parse_interval(text: str | float | int) -> float:
    """``"30s"``, ``"5m"``, ``"1h"``, ``"500ms"`` or a number of seconds → seconds (> 0): the one
    duration grammar (:func:`medsr.durations.parse_duration`), without days."""
    from medsr.durations import parse_duration

    return parse_duration(text, "interval", allow_days=False)


def parse_filters(items: Iterable[str] | None) -> dict[str, str]:
    """``["modality=CT", "StudyDate=20240101-"]`` → QIDO-RS filters keyed by DICOM keyword."""
    from pydicom.datadict import keyword_dict

    lower = {k.lower(): k for k in keyword_dict}
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise InvalidParameterError(
                f"--filter expects KEY=VALUE (e.g. modality=CT), got {item!r}"
            )
        if re.fullmatch(r"[0-9A-Fa-f]{8}", key):
            name = key.upper()
        elif key.lower() in lower:
            name = lower[key.lower()]
        else:
            raise InvalidParameterError(
                f"--filter key {key!r} is not a DICOM attribute keyword (e.g. Modality, "
                "StudyDate, BodyPartExamined, StudyInstanceUID)"
            )
        value = value.strip()
        out[name] = value.upper() if name == "Modality" else value
    return out


#: filter attributes whose values identify a patient: never shown in a log line
_PATIENT_FILTER_KEYS = frozenset({"AccessionNumber", "StudyID", "IssuerOfPatientID"})


def describe_filters(filters: dict[str, str]) -> str:
    """``filters`` for a log line (``watching … (Modality=CT, StudyInstanceUID=1a2b3c4d)``):
    UID values by their key (:func:`uid_key`), patient attributes (names, IDs, birth dates,
    accession numbers...) as ``…``; ``all series`` without filters."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    def shown(key: str, value: str) -> str:
        tag = tag_for_keyword(key) if not re.fullmatch(r"[0-9A-F]{8}", key) else int(key, 16)
        try:
            vr = dictionary_VR(tag) if tag is not None else ""
        except KeyError:
            vr = ""
        if "Patient" in key or key in _PATIENT_FILTER_KEYS or vr in ("PN", ""):
            return "…"
        if vr == "UI":
            return ",".join(uid_key(v.strip()) for v in value.split(",") if v.strip())
        return value

    return ", ".join(f"{k}={shown(k, v)}" for k, v in filters.items()) or "all series"


def default_state_path(
    url: str, model: str | os.PathLike[str] | LoadedModel | None, scale: int
) -> Path:
    """``$XDG_STATE_HOME/medsr/pacs-watch-<hash>.json`` for this server, model and scale."""
    from medsr.pacs.client import safe_url

    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    _, identity = _model_identity(_resolve_model(model, scale))
    digest = hashlib.sha256(f"{safe_url(url)}|{identity}|x{scale}".encode()).hexdigest()[:12]
    return base / "medsr" / f"pacs-watch-{digest}.json"


def _load_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"version": 1, "series": {}}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidParameterError(
            f"watch state file '{path}' is unreadable ({type(exc).__name__}); "
            "move it away to start afresh"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("series"), dict):
        raise InvalidParameterError(f"watch state file '{path}' is not a medsr watch state")
    return state


def _save_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def watch(
    url: str | PacsClient,
    *,
    filters: dict[str, str] | None = None,
    model: str | os.PathLike[str] | None = None,
    scale: int = 2,
    interval: float | str = 30.0,
    max_series: int | None = None,
    max_polls: int | None = None,
    state_path: str | os.PathLike[str] | None = None,
    stop_event: threading.Event | None = None,
    settle_polls: int = 1,
    skip_existing: bool = False,
    device: str = "auto",
    consistency: str = "auto",
    degradation: str | None = None,
    ensemble: bool = False,
    precision: str = "fp32",
    maps: bool = False,
    attempts: int = 3,
    log: LogFn | None = None,
    **connect_options: Any,
) -> WatchSummary:
    """Poll QIDO-RS for series matching ``filters`` and upscale each new one exactly once.

    Args:
        filters: QIDO-RS filters by keyword, e.g. ``{"Modality": "CT"}`` (see :func:`parse_filters`).
        interval: seconds (or ``"30s"``) between polls.
        max_series: stop after this many series were handled (stored, found already derived,
            or failed); ``None`` = no limit.
        max_polls: stop after this many polls; ``None`` = no limit.
        state_path: JSON file remembering handled series across runs (default
            :func:`default_state_path`).
        stop_event: set it (e.g. from a SIGINT handler) to stop after the current series.
        settle_polls: a series is processed only once its instance count stayed the same for
            this many polls (a series still arriving is left for later); 0 = at once.
        skip_existing: on a first run (no state yet), mark every series already on the server as
            seen, so only series that arrive later are processed.
        precision: the network's arithmetic, as for :func:`upscale_series`.
        maps: store the trust-map series too, as for :func:`upscale_series`.

    A poll refused for its credentials, or at a URL that is no DICOMweb root, raises (waiting
    will not fix it); one that fails otherwise (no answer, HTTP 5xx) is a warning and the next
    poll tries again.

    Series medsr derived itself and non-image series are never processed. A series that fails
    for a reason that retrying will not fix (not an image, decoding error...) is recorded as
    failed and not tried again; one that fails for a reason that may pass (server unreachable,
    STOW failure, HTTP 5xx) is tried again at the next polls, three times in all.
    """
    client = connect(url, **connect_options)
    wait = parse_interval(interval)
    if max_series is not None and max_series < 1:
        raise InvalidParameterError(f"max-series must be at least 1, got {max_series}")
    if max_polls is not None and max_polls < 1:
        raise InvalidParameterError(f"max-polls must be at least 1, got {max_polls}")
    from medsr.pipeline import check_options

    check_options(
        scale=scale, consistency=consistency, degradation=degradation, ensemble=ensemble,
        precision=precision, device=device,
    )  # fmt: skip
    scale = int(scale)
    loaded = _check_model(model, scale)
    path = Path(state_path) if state_path else default_state_path(client.url, loaded, scale)
    state = _load_state(path)
    fresh = not path.exists()
    state.setdefault("server", client.display_url)
    seen: dict[str, Any] = state["series"]
    stop = stop_event or threading.Event()
    say = log or (lambda _m: None)
    summary = WatchSummary(state_path=str(path))
    counts: dict[str, tuple[int | None, int]] = {}  # series → (instances, polls unchanged)
    tries: dict[str, int] = {}  # series → failed attempts for reasons that may pass
    max_tries = 3

    def record(uid: str, entry: dict[str, Any]) -> None:
        entry["at"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        seen[uid] = entry
        _save_state(path, state)

    while not stop.is_set():
        summary.polls += 1
        try:
            candidates = _search(client, None, filters)
        except (PacsAuthError, PacsNotFoundError):
            raise  # credentials, or a URL that is not a DICOMweb root, will not fix themselves
        except PacsError as exc:
            say(f"warning: poll {summary.polls} failed: {exc}")
            candidates = []
        if fresh and skip_existing and summary.polls == 1:
            for info in candidates:
                seen.setdefault(info.series_uid, {"study": info.study_uid, "status": "existing"})
            _save_state(path, state)
            say(f"marked {len(candidates)} existing series as seen")
            candidates = []
        for info in candidates:
            if stop.is_set() or (max_series is not None and summary.handled >= max_series):
                break
            uid = info.series_uid
            if uid in seen or info.derived_key is not None or not info.is_image:
                continue
            if settle_polls > 0:
                last, stable = counts.get(uid, (None, -1))
                stable = stable + 1 if last == info.instances else 0
                counts[uid] = (info.instances, stable)
                if stable < settle_polls:
                    continue
            try:
                result = _upscale_one(
                    client, info, loaded, scale, device, attempts, None, say,
                    consistency=consistency, degradation=degradation, ensemble=ensemble,
                    precision=precision, maps=maps,
                )  # fmt: skip
            except PacsAuthError:
                raise  # credentials will not fix themselves
            except MedSRError as exc:
                transient = (
                    isinstance(exc, PacsUnreachableError | PacsStoreError) or type(exc) is PacsError
                )
                tries[uid] = tries.get(uid, 0) + 1
                if transient and tries[uid] < max_tries:
                    say(f"warning: series {uid_key(uid)}: {exc}; will retry at the next poll")
                    down = isinstance(exc, PacsStoreError) and exc.unreachable
                    if isinstance(exc, PacsUnreachableError) or down:
                        break  # the server is down: wait for the next poll
                    continue
                summary.failed[uid] = str(exc)
                record(uid, {"study": info.study_uid, "status": "failed", "error": str(exc)})
                say(f"failed series {uid_key(uid)}: {exc}")
                continue
            summary.results.append(result)
            record(
                uid,
                {
                    "study": info.study_uid,
                    "status": result.status,
                    "derived": result.derived_series_uid,
                    "model": result.model,
                    "scale": scale,
                    **({"maps": {m["map"]: m["series_uid"] for m in result.maps}} if maps else {}),
                },
            )
            say(result.describe())
        if not path.exists():
            _save_state(path, state)  # a watcher's state exists from its first poll on
        if max_series is not None and summary.handled >= max_series:
            summary.stopped_by = "max-series"
            break
        if max_polls is not None and summary.polls >= max_polls:
            summary.stopped_by = "max-polls"
            break
        stop.wait(wait)
    if not summary.stopped_by:
        summary.stopped_by = "stopped"
    return summary
