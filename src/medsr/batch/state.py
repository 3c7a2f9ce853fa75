"""Resume state and report of a batch.

Two files live in the output folder:

``batch_state.jsonl``
    a journal, one JSON object per finished item (``key``, ``status``, ``input_sha256``,
    ``model``, ``output``, ``output_files``, ``seconds``, ``finished_at``); the last line of a
    key wins. Lines are appended and flushed as items finish, so a batch killed at any moment
    keeps every item that completed (a torn last line is ignored); the journal is compacted at
    the end of a run. ``output_files`` is what the item wrote (:func:`output_manifest`: each
    file's name, size and modification time; a DICOM series folder: every slice file in it).
    An item is *up to date* when its last record is ``ok``, its output is still what was
    written (the same files with the same sizes and modification times: a deleted slice of a
    series, or a file replaced or truncated by something else, makes it run again), and the
    SHA-256 of its input bytes and the model fingerprint (model, scale and the safeguard
    settings: consistency on, maps asked for) are unchanged — and, when maps are asked for,
    its maps' ``summary.json`` exists; a rerun skips it. Failed items are retried. (A record
    of a medsr that did not journal ``output_files`` only asks that the output exists.)
``batch_report.csv``
    this run's outcome per item: ``input, output, status, seconds, error`` (+ ``kind``,
    ``finished_at``, ``warnings``): ``status`` is ``ok``, ``failed`` or ``skipped`` (not an
    image, or up to date); ``warnings`` are what the reader said of the input (a localizer left
    out, a questionable header value; naming the user's files, each once; a failed item's too,
    what was said before it failed) and the fidelity safeguards' (the output disagrees with
    the input, or the input is out of the model's distribution); then the trust maps' numbers
    of an ok item, those of its ``summary.json`` (:func:`trust_columns`): ``consistency_p99``,
    ``uncertainty_p99`` and ``error_bound_p99`` in ``units`` (the uncertainty and the bound with
    ``--maps``), and ``error_bound``, its calibration or why it has none. Rows are appended as
    items finish and the file is rewritten in input order at the end.

Neither file holds patient identifiers: inputs appear as paths relative to the input folder,
series by the hash key of their UID, errors are medsr's scrubbed messages.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsr.batch.plan import REPORT_NAME, STATE_NAME

__all__ = [
    "REPORT_FIELDS",
    "ItemResult",
    "Recorder",
    "StateJournal",
    "input_digest",
    "model_fingerprint",
    "output_as_written",
    "output_manifest",
    "run_fingerprint",
    "trust_columns",
]

#: the trust maps' numbers of an ok item (:func:`trust_columns`), after the outcome's columns
TRUST_FIELDS = ("consistency_p99", "uncertainty_p99", "error_bound_p99", "units", "error_bound")
REPORT_FIELDS = (
    "input", "output", "status", "seconds", "error", "kind", "finished_at", "warnings",
    *TRUST_FIELDS,
)  # fmt: skip
_CHUNK = 1 << 20


def _files_of(paths: tuple[str, ...] | list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted((f for f in p.rglob("*") if f.is_file()), key=lambda f: f.as_posix()))
        else:
            out.append(p)
            from medsr.io.sidecar import sidecar_path

            side = sidecar_path(p)
            if side != p and side.is_file() and not p.name.lower().endswith((".dcm", ".dicom")):
                out.append(side)  # spacing/rescale of a PNG or TIFF input change what is read
    return out


def input_digest(paths: tuple[str, ...] | list[str]) -> str:
    """SHA-256 over the bytes of the item's files (length-prefixed, in sorted order)."""
    h = hashlib.sha256()
    for f in _files_of(paths):
        h.update(f.stat().st_size.to_bytes(8, "little"))
        with open(f, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def output_manifest(output: str | os.PathLike[str]) -> dict[str, list[int]]:
    """What is at an item's output now, from file metadata only (no file is read, so checking
    a large archive on resume stays cheap): ``{name: [size in bytes, modification time in ns]}``
    for every file of a folder output (a DICOM series: its ``IM…dcm`` files, names relative to
    the folder), or for a file output and its JSON sidecar when it has one (names relative to
    the file's folder). ``{}`` when nothing is there."""
    p = Path(output)
    files: list[tuple[str, Path]] = []
    if p.is_dir():
        files = [(f.relative_to(p).as_posix(), f) for f in p.rglob("*")]
    elif p.exists():
        files = [(p.name, p)]
        if not p.name.lower().endswith((".dcm", ".dicom")):
            from medsr.io.sidecar import sidecar_path

            side = sidecar_path(p)
            if side != p:
                files.append((side.name, side))
    out: dict[str, list[int]] = {}
    for name, f in sorted(files):
        try:
            st = f.stat()
        except OSError:
            continue  # removed meanwhile: not part of the output
        if f.is_file():
            out[name] = [int(st.st_size), int(st.st_mtime_ns)]
    return out


def output_as_written(output: str | os.PathLike[str], recorded: dict[str, Any] | None) -> bool:
    """Whether ``output`` is still what the batch wrote: the same :func:`output_manifest` as
    ``recorded`` (no file added, removed, resized or rewritten). ``recorded`` ``None`` (a
    journal of a medsr that did not record it): the output exists."""
    if recorded is None:
        return Path(output).exists()
    return output_manifest(output) == {k: list(v) for k, v in recorded.items()}


def model_fingerprint(model: Any, scale: int) -> str:
    """What decides the pixels besides the input: the model's one checksum
    (:attr:`medsr.models.resolver.LoadedModel.checksum`: ``sha256:`` of the weights file, or
    ``classical:<name>``) plus the scale. ``None`` → ``default-x{scale}`` resolved to what it is
    today, so shipping new default weights re-processes the archive."""
    from medsr.models.resolver import resolve_model

    loaded = getattr(model, "loaded", model)  # a PlaneUpscaler carries its LoadedModel
    return f"{resolve_model(loaded, scale=scale).checksum}|x{scale}"


def _physics_default_fingerprint(model: Any, scale: int, degradation: str) -> str:
    """``|kspace-model=<checksum>`` when no model is named and k-space inputs (``kspace``, or MR
    under ``auto`` or ``default``) run a default of their own (:func:`medsr.models.resolver.default_model_name`):
    new weights for it re-process the archive too. Empty otherwise (earlier journals stay valid)."""
    from medsr.models.resolver import default_model_name, resolve_model

    if model is not None or degradation not in ("kspace", "auto", "default"):
        return ""
    name = default_model_name(scale, "kspace")
    if name == default_model_name(scale):
        return ""
    return f"|kspace-model={resolve_model(name, scale=scale).checksum}"


def run_fingerprint(
    model: str | os.PathLike[str] | None,
    scale: int,
    consistency: str = "auto",
    maps: bool = False,
    *,
    degradation: str | None = None,
    modality: str | None = None,
    ensemble: bool = False,
    output_dtype: str | None = None,
    precision: str = "fp32",
) -> str:
    """:func:`model_fingerprint` plus the settings that change what is written: ``|consistency=on``
    (other pixels), ``|maps`` (maps written), ``|ensemble`` (the mean over 8 flips/rotations),
    ``|dtype=float32`` (NIfTI outputs stored as float32) and ``|precision=bf16`` (the network's
    arithmetic as asked: ``auto`` is its own setting, whatever it picks on this machine). The
    default settings add nothing, so journals of earlier runs stay valid."""
    key = model_fingerprint(model, scale)
    if consistency != "off":  # "on", or "auto" (projects when the physics is known)
        key += f"|consistency={consistency}"
    if maps:
        key += "|maps"
    if degradation is not None:  # the physics changes the base interpolator and the projection
        key += f"|degradation={str(degradation).lower()}"
        key += _physics_default_fingerprint(model, scale, str(degradation).lower())
    if modality is not None:
        key += f"|modality={str(modality).upper()}"
    if ensemble:
        key += "|ensemble"
    if output_dtype is not None and str(output_dtype).lower() != "input":
        key += f"|dtype={str(output_dtype).lower()}"
    if str(precision).strip().lower() != "fp32":
        key += f"|precision={str(precision).strip().lower()}"
    return key


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class ItemResult:
    """What happened to one item."""

    key: str
    label: str
    kind: str
    status: str  # ok | failed | skipped
    output: str | None = None
    seconds: float = 0.0
    error: str = ""
    input_sha256: str | None = None
    finished_at: str = ""
    warnings: str = ""  # the reader's notes (also of a failed item), consistency / OOD
    output_files: dict[str, list[int]] | None = None  # an ok item: output_manifest() once written
    trust: dict[str, Any] | None = None  # an ok item: trust_columns() of its safeguards summary

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ItemResult:
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__ if k in d})


def _number(v: Any) -> str:
    return "" if v is None else f"{float(v):.6g}"


def trust_columns(summary: dict[str, Any] | None) -> dict[str, str]:
    """The report's columns of an item's safeguards summary
    (:func:`medsr.pipeline.upscale_with_safeguards`; the numbers of its ``summary.json``, in the
    image's ``units``): the 99th percentiles of the consistency error, of the uncertainty map
    and of the error bound (where there are maps), and ``error_bound``: its calibration factor
    and coverage, or why there is none (an image too small to calibrate one scale down)."""
    s = summary or {}
    cons = (s.get("consistency") or {}).get("error") or {}
    unc = (s.get("uncertainty") or {}).get("map") or {}
    info = s.get("error_bound") or {}
    bound = info.get("map") or {}
    if info.get("calibrated"):
        note = (
            f"calibrated one scale down: k {_number(info.get('factor'))}, "
            f"about {float(info.get('coverage', 0.9)):.0%} of pixels' error below it"
        )
    elif info:
        note = f"none: {info.get('reason', 'not calibrated')}"
    else:
        note = ""
    return {
        "consistency_p99": _number(cons.get("p99")),
        "uncertainty_p99": _number(unc.get("p99")),
        "error_bound_p99": _number(bound.get("p99")),
        "units": str(cons.get("units") or unc.get("units") or bound.get("units") or ""),
        "error_bound": note,
    }


class StateJournal:
    """The append-only ``batch_state.jsonl`` of an output folder (thread-safe)."""

    def __init__(self, out_dir: str | os.PathLike[str]):
        self.out_dir = Path(out_dir).resolve()
        self.path = self.out_dir / STATE_NAME
        self.records: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        if self.path.is_file():
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # a line torn by a kill
                    if isinstance(rec, dict) and "key" in rec:
                        self.records[str(rec["key"])] = rec
        self._fh: io.TextIOBase | None = None

    def _rel(self, output: str | None) -> str | None:
        """Outputs are recorded relative to the output folder, so the folder can move."""
        if output is None:
            return None
        try:
            return Path(output).resolve().relative_to(self.out_dir).as_posix()
        except ValueError:
            return str(output)

    def expectation(self, key: str, model: str, output: str | None) -> dict[str, Any] | None:
        """What an up-to-date item must match (``input_sha256``, and ``output_files``: the
        :func:`output_manifest` of what was written, ``None`` in older journals), or None when
        it must run."""
        rec = self.records.get(key)
        if not rec or rec.get("status") != "ok" or rec.get("model") != model:
            return None
        if output is None or rec.get("output") != self._rel(output):
            return None
        return {"input_sha256": rec.get("input_sha256"), "output_files": rec.get("output_files")}

    def append(self, result: ItemResult, model: str) -> None:
        rec = {
            "key": result.key,
            "status": result.status,
            "input_sha256": result.input_sha256,
            "model": model,
            "output": self._rel(result.output),
            "seconds": round(result.seconds, 4),
            "error": result.error,
            "finished_at": result.finished_at,
        }
        if result.output_files is not None:
            rec["output_files"] = result.output_files
        with self._lock:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "a", encoding="utf-8")
            self._fh.write(json.dumps(rec, sort_keys=True) + "\n")
            self._fh.flush()
            self.records[result.key] = rec

    def close(self, compact: bool = True) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
            if compact and self.records:
                tmp = self.path.with_name(f".{self.path.name}.tmp")
                with open(tmp, "w", encoding="utf-8") as fh:
                    for rec in self.records.values():
                        fh.write(json.dumps(rec, sort_keys=True) + "\n")
                os.replace(tmp, self.path)


class Recorder:
    """Collects results: journal line, report row (flushed), counters; thread-safe."""

    def __init__(
        self, out_dir: str | os.PathLike[str], journal: StateJournal, model: str, on_result=None
    ):
        self.out_dir = Path(out_dir)
        self.journal = journal
        self.model = model
        self.results: dict[str, ItemResult] = {}
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}
        self.on_result = on_result
        self._lock = threading.Lock()
        self.report_path = self.out_dir / REPORT_NAME
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.report_path, "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._fh)
        self._csv.writerow(REPORT_FIELDS)
        self._fh.flush()

    def _row(self, r: ItemResult) -> list[str]:
        out = ""
        if r.output:
            try:
                out = Path(r.output).relative_to(self.out_dir.resolve()).as_posix()
            except ValueError:
                out = r.output
        trust = r.trust or {}
        return [
            r.label, out, r.status, f"{r.seconds:.3f}", r.error, r.kind, r.finished_at,
            r.warnings or "", *(str(trust.get(k, "")) for k in TRUST_FIELDS),
        ]  # fmt: skip

    def record(self, result: ItemResult) -> None:
        result.finished_at = result.finished_at or _now()
        with self._lock:
            if result.status in ("ok", "failed"):
                self.journal.append(result, self.model)
            self.results[result.key] = result
            self.counts[result.status] = self.counts.get(result.status, 0) + 1
            self._csv.writerow(self._row(result))
            self._fh.flush()
        if self.on_result is not None:
            self.on_result(result)

    def close(self, order: list[str]) -> None:
        """Rewrite the report in ``order`` (item keys) and compact the journal."""
        with self._lock:
            self._fh.close()
            tmp = self.report_path.with_name(f".{REPORT_NAME}.tmp")
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(REPORT_FIELDS)
                for key in order:
                    if key in self.results:
                        w.writerow(self._row(self.results[key]))
            os.replace(tmp, self.report_path)
        self.journal.close()


def read_report(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Rows of a ``batch_report.csv`` as dicts."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
