"""Find the work of a batch: every DICOM series, NIfTI and image under a folder, or a manifest.

:func:`discover` walks a folder (sorted, hidden entries skipped) and sniffs every file from its
bytes (:func:`medsr.io.sniff_format`):

* DICOM headers are read with ``pydicom.dcmread(stop_before_pixels=True, specific_tags=...)``
  (a few hundred bytes each) and image objects are **grouped by Series Instance UID across
  folders**: the slices of one series become one item wherever they lie. Multi-frame objects are
  items of their own; duplicate SOP Instance UIDs (the same instance copied twice) count once.
  A series that holds several stacks is cut as the reader cuts it
  (:func:`medsr.io.dicom.stacks.series_volumes`): its time points or cardiac phases are one
  item read as one image over time (``series_uid="UID:all"``; a localizer beside them is left
  out of its files, and its note goes to the report), its main stack beside a
  localizer one item (the reader's note of what it leaves out goes to the report), other stacks
  (echoes) one item each (``"UID:N"``, ``extra["stack"]``: the words that name its output),
  and a localizer beside those a skipped item that says how to read it.
  Non-image objects (SEG, SR, presentation states, DICOMDIR...) are reported as skipped.
* NIfTI, PNG, TIFF and ``.npy`` files are one item each. A medsr JSON sidecar beside an image
  belongs to that image and is not an item.
* Anything else (a readme, a spreadsheet) is reported as skipped, not an error; a file named
  like an image (``.dcm``, ``.nii.gz``, ``.png``...) whose bytes are not one, or one cut short
  or not readable, is a damaged input: reported as failed, with the reason.

:func:`read_manifest` reads a CSV with an ``input`` column (paths relative to the manifest's
folder or absolute; a folder is read as one DICOM series, cut into its stacks as above where
it holds several) and an optional ``output`` column.

Discovery never raises for one bad file: an unreadable header becomes an item that the runner
reports as failed.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsr.errors import EmptyInputError, InputNotFoundError, InvalidParameterError, MedSRError

__all__ = ["BatchItem", "discover", "read_manifest"]

#: item kinds that the runner processes; ``skip`` and ``error`` items are only reported.
IMAGE_KINDS = ("dicom-series", "dicom-file", "dicom-folder", "nifti", "png", "tiff", "npy")
_DICOM_TAGS = (
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "Modality",
    "NumberOfFrames",
    "Rows",
)


def _header_tags() -> list[str]:
    """What discovery reads of each DICOM header: what it needs and what cuts a series into
    stacks (:data:`medsr.io.dicom.stacks.STACK_TAGS`)."""
    from medsr.io.dicom.stacks import STACK_TAGS

    return list(dict.fromkeys((*_DICOM_TAGS, *STACK_TAGS)))


@dataclass(frozen=True)
class BatchItem:
    """One unit of work (an image or a DICOM series) or one file that is only reported.

    Attributes:
        key: stable identifier within the batch (the resume state is keyed by it).
        label: the input as shown in the report (relative to the input folder).
        kind: one of :data:`IMAGE_KINDS`, ``"skip"`` (not an image: reported as skipped) or
            ``"error"`` (unreadable: reported as failed).
        paths: absolute input files, in sorted order (a folder for ``dicom-folder``).
        series_uid: the Series Instance UID of a DICOM series item, as the reader takes it:
            ``UID:N`` for one stack of a series read stack by stack, ``UID:all`` for the time
            points or cardiac phases of a series read as one image over time.
        output: absolute output path (set by :func:`medsr.batch.plan.plan_outputs`).
        note: why an item is skipped or failed before any work.
    """

    key: str
    label: str
    kind: str
    paths: tuple[str, ...] = ()
    series_uid: str | None = None
    output: str | None = None
    note: str | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def runnable(self) -> bool:
        return self.kind in IMAGE_KINDS and self.note is None

    def to_dict(self) -> dict[str, object]:
        return {
            "key": self.key,
            "label": self.label,
            "kind": self.kind,
            "paths": list(self.paths),
            "series_uid": self.series_uid,
            "output": self.output,
            "note": self.note,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> BatchItem:
        return cls(
            key=str(d["key"]),
            label=str(d["label"]),
            kind=str(d["kind"]),
            paths=tuple(str(p) for p in d.get("paths") or ()),  # type: ignore[union-attr]
            series_uid=d.get("series_uid") or None,  # type: ignore[arg-type]
            output=d.get("output") or None,  # type: ignore[arg-type]
            note=d.get("note") or None,  # type: ignore[arg-type]
            extra=dict(d.get("extra") or {}),  # type: ignore[call-overload]
        )


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _walk(root: Path, exclude: Iterable[Path]) -> list[Path]:
    """Every regular file under ``root``, sorted, without hidden entries or excluded folders."""
    excluded = {p.resolve() for p in exclude}
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in excluded
        )
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            f = here / name
            if f.is_file():
                out.append(f)
    return sorted(out, key=lambda p: p.as_posix())


def _short_error(exc: BaseException) -> str:
    if isinstance(exc, MedSRError):
        return str(exc)
    from medsr.errors import scrub

    return scrub(exc)


def _kept(ds: Any) -> Any:
    """What grouping reads of a header (:data:`~medsr.io.dicom.stacks.STACK_TAGS`, and the
    character set that decodes its text), as read: a plain dataset of those elements, not yet
    decoded, without the file's meta information, preamble or other elements. Discovery keeps
    one per file until its series is grouped: under half the header as read and classified."""
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataset import Dataset

    from medsr.io.dicom.stacks import STACK_TAGS

    tags = [tag_for_keyword(name) for name in ("SpecificCharacterSet", *STACK_TAGS)]
    return Dataset({tag: ds.get_item(tag) for tag in tags if tag is not None and tag in ds})


def _dicom_header(f: Path):
    """Header of ``f`` (a few tags, no pixels) with medsr errors for unreadable files."""
    import pydicom

    from medsr.errors import CorruptInputError

    with open(f, "rb") as fh:
        head = fh.read(132)
    has_preamble = len(head) >= 132 and head[128:132] == b"DICM"
    try:
        return pydicom.dcmread(
            f,
            stop_before_pixels=True,
            specific_tags=_header_tags(),
            force=not has_preamble,
        )
    except Exception as exc:
        raise CorruptInputError(
            f"truncated or corrupt DICOM: '{f.name}' ({_short_error(exc)})"
        ) from None


def _non_image_reason(ds) -> str | None:
    from medsr.io.dicom import MEDIA_STORAGE_DIRECTORY, non_image_reason

    fm = getattr(ds, "file_meta", None)
    media_class = str(fm.get("MediaStorageSOPClassUID", "") or "") if fm is not None else ""
    if media_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        return "it is a DICOMDIR (an index of other files), not an image"
    if "SOPClassUID" not in ds and media_class:
        ds.SOPClassUID = media_class
    reason = non_image_reason(ds, assume_pixels=True)
    if not reason and "Rows" not in ds:
        reason = "it is a DICOM object without an image (no Rows)"
    return reason


def _is_image_class(ds) -> bool:
    """An image SOP class (the header says so) that lacks what every image has: cut short."""
    from pydicom.uid import UID

    uid = str(ds.get("SOPClassUID", "") or "")
    return "Rows" not in ds and bool(uid) and "Image Storage" in UID(uid).name


def _sniff(f: Path, key: str, label: str, *, listed: bool = False) -> str | BatchItem:
    """The format of ``f`` from its bytes, or the item that reports why it is not processed.

    A file that is not an image is skipped (a readme, a spreadsheet) unless its name says it is
    one (``.dcm``, ``.nii.gz``, ``.png``...) or it is empty in a manifest that lists it: then it
    is a damaged image, and fails with the reason. So does a file cut short or not readable."""
    from medsr.errors import UnsupportedFormatError
    from medsr.io import sniff_format
    from medsr.io.sniff import IMAGE_SUFFIXES

    named_as_image = f.name.lower().endswith(IMAGE_SUFFIXES)
    try:
        return sniff_format(f)
    except UnsupportedFormatError as exc:
        if named_as_image:
            return BatchItem(key, label, "error", (str(f),), note=f"{exc}: corrupt or mislabelled")
        return BatchItem(key, label, "skip", (str(f),), note="not an image format medsr reads")
    except EmptyInputError as exc:
        kind = "error" if named_as_image or listed else "skip"
        return BatchItem(key, label, kind, (str(f),), note=str(exc))
    except MedSRError as exc:  # cut short (CorruptInputError), not readable (permissions)
        return BatchItem(key, label, "error", (str(f),), note=str(exc))
    except OSError as exc:
        return BatchItem(key, label, "error", (str(f),), note=f"cannot read: {exc.strerror}")


def _frames(ds) -> int:
    try:
        return int(float(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def discover(
    root: str | os.PathLike[str], *, exclude: Iterable[str | os.PathLike[str]] = ()
) -> list[BatchItem]:
    """Items under the folder ``root`` (see the module docstring); ``exclude``: folders to skip.

    Items come in a stable order: by label. Nothing is read beyond DICOM headers and the first
    bytes of other files.
    """

    base = Path(root)
    if not base.exists():
        raise InputNotFoundError(f"input '{base}' does not exist")
    if not base.is_dir():
        raise InvalidParameterError(f"'{base.name}' is neither a folder nor a manifest (.csv)")
    base = base.resolve()
    files = _walk(base, [Path(e) for e in exclude])
    items: list[BatchItem] = []
    sidecar_owners: set[str] = set()
    json_files: list[Path] = []
    # series uid → [(path, sop uid, frames, label, header)]
    series: dict[str, list[tuple[Path, str, int, str, Any]]] = {}
    for f in files:
        label = _rel(f, base)
        if f.name.lower().endswith(".json"):
            json_files.append(f)
            continue
        fmt = _sniff(f, label, label)
        if isinstance(fmt, BatchItem):
            items.append(fmt)
            continue
        if fmt != "dicom":
            items.append(BatchItem(label, label, fmt, (str(f),)))
            from medsr.io.sidecar import sidecar_path

            sidecar_owners.add(sidecar_path(f).as_posix())
            continue
        try:
            ds = _dicom_header(f)
        except MedSRError as exc:
            items.append(BatchItem(label, label, "error", (str(f),), note=str(exc)))
            continue
        kept = _kept(ds)  # before the checks below decode elements of ds
        reason = _non_image_reason(ds)
        if reason and _is_image_class(ds):
            items.append(
                BatchItem(
                    label,
                    label,
                    "error",
                    (str(f),),
                    note=f"truncated or corrupt DICOM: '{f.name}' has no image size (Rows)",
                )
            )
            continue
        if reason:
            items.append(BatchItem(label, label, "skip", (str(f),), note=reason))
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        sop = str(ds.get("SOPInstanceUID", "") or "")
        series.setdefault(uid or f"file:{label}", []).append((f, sop, _frames(ds), label, kept))

    while series:  # each series' headers are let go once it is grouped
        uid, members = series.popitem()
        # the same instance copied twice counts once
        seen: set[str] = set()
        unique = []
        for m in members:
            if m[1] and m[1] in seen:
                continue
            seen.add(m[1])
            unique.append(m)
        multi = len(unique) > 1 and any(frames > 1 for _, _, frames, _, _ in unique)
        if len(unique) == 1 or multi:
            for f, _, _, label, _ in unique:
                items.append(
                    BatchItem(label, label, "dicom-file", (str(f),), series_uid=uid or None)
                )
            continue
        items += _series_items(uid, sorted(unique, key=lambda m: m[0].as_posix()), base)
    for f in json_files:
        if f.as_posix() in sidecar_owners:
            continue  # the medsr sidecar of an image: read with it
        label = _rel(f, base)
        items.append(
            BatchItem(label, label, "skip", (str(f),), note="not an image format medsr reads")
        )
    return sorted(items, key=lambda it: it.label)


def _series_items(
    uid: str, members: list[tuple[Path, str, int, str, Any]], base: Path
) -> list[BatchItem]:
    """The items of one series of several files (``members`` in path order): one, or one per
    volume where it holds several stacks (see the module docstring)."""
    from medsr.io.dicom import series_key
    from medsr.io.dicom.stacks import quiet_stacks, series_volumes

    paths = tuple(str(m[0]) for m in members)
    common = Path(os.path.commonpath([str(m[0].parent) for m in members]))
    rel = _rel(common, base)
    where = f"{rel}/" if rel not in ("", ".") else "./"
    key = series_key(uid)
    stacks = quiet_stacks([(m[0], m[4]) for m in members], where)
    volumes = series_volumes(stacks, uid, where) if stacks else []
    if len(volumes) < 2 and not (volumes and volumes[0].choice):
        note = volumes[0].note if volumes else None
        return [
            BatchItem(
                f"series:{key}:{rel}",
                f"{where} [series {key}, {len(paths)} files]",
                "dicom-series",
                paths,
                series_uid=uid,
                extra={"folder": str(common), **({"left_out": note} if note else {})},
            )
        ]
    names = [_stack_name(v.apart) or f"stack{v.choice}" for v in volumes]
    if len(set(names)) < len(names):
        names = [f"stack{v.choice}" for v in volumes]
    items = []
    for volume, name in zip(volumes, names, strict=True):
        label = f"{where} [series {key}:{volume.choice} ({volume.describe()})]"
        extra = {"folder": str(common)}
        read = paths
        if volume.choice != "all":
            extra["stack"] = name
        elif volume.note:  # localizers beside the time points: ':all' reads the rest only
            read = tuple(sorted(str(f) for s in volume.stacks for f, _ in s.members))
            extra["left_out"] = volume.note
        items.append(
            BatchItem(
                f"series:{key}:{volume.choice}:{rel}",
                label,
                "skip" if volume.left_out else "dicom-series",
                read,
                series_uid=f"{uid}:{volume.choice}",
                note=volume.note if volume.left_out else None,
                extra=extra,
            )
        )
    return items


def _stack_name(apart: dict[str, str]) -> str:
    """What tells a stack apart, as a file name: ``{"echo": "2"}`` → ``"echo2"``,
    ``{"cardiac phase": "2 (trigger time ~50 ms)"}`` → ``"cardiacphase2"`` (each value's first
    word), several joined by ``_``."""
    import re

    parts = [word.replace(" ", "") + (value.split() or [""])[0] for word, value in apart.items()]
    return "_".join(re.sub(r"[^A-Za-z0-9.+-]", "", part) for part in parts)


def _folder_stacks(folder: Path, key: str, label: str, taken: set[str]) -> list[BatchItem]:
    """The items of a manifest's folder that holds one series of several stacks, cut as
    :func:`discover` cuts it (echoes: one item each, keyed ``KEY:N``; time points or cardiac
    phases: one item over time, ``KEY:all``; a localizer beside echoes: a skipped item that
    says how to read it), labelled by the manifest's row. ``[]`` where the reader reads the
    folder as it is: one volume, a main stack beside a localizer, or anything but one series
    beside files that are not images (its read says what is wrong)."""
    from medsr.io.dicom.stacks import split_series

    found = discover(folder)
    series = [it for it in found if it.series_uid]
    if any(it.kind != "skip" for it in found if not it.series_uid):
        return []  # another image or a damaged file beside the series
    parsed = [split_series(it.series_uid) for it in series]
    if (
        not series
        or len({uid for uid, _ in parsed}) != 1
        or any(choice is None for _, choice in parsed)
        or any(it.kind not in ("dicom-series", "skip") for it in series)
    ):
        return []
    out = []
    for it, (_, choice) in zip(series, parsed, strict=True):
        item_key = f"{key}:{choice}"
        while item_key in taken:
            item_key += "'"
        out.append(
            dataclasses.replace(
                it,
                key=item_key,
                label=f"{label} [{it.label.split(' [', 1)[1]}",
                extra={**it.extra, "folder": str(folder)},
            )
        )
    return out


def read_manifest(manifest: str | os.PathLike[str]) -> tuple[list[BatchItem], dict[str, str]]:
    """Items of a manifest CSV and the requested outputs by item key.

    Columns: ``input`` (required) and ``output`` (optional, relative to the batch's output
    folder or absolute). Relative inputs are relative to the manifest's folder. A folder input is
    one DICOM series; one that holds several stacks (echoes, time points) is cut as
    :func:`discover` cuts a series, each stack's output named after the row's (``OUT_echo2``).
    A row naming a missing file is a failed item, not an abort.
    """

    mpath = Path(manifest)
    if not mpath.is_file():
        raise InputNotFoundError(f"manifest '{mpath}' does not exist")
    base = mpath.resolve().parent
    try:
        with open(mpath, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [c.strip().lower() for c in reader.fieldnames or []]
            if "input" not in fields:
                raise InvalidParameterError(
                    f"manifest '{mpath.name}' needs an 'input' column (found: {', '.join(fields) or 'none'})"
                )
            rows = [
                {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
                for row in reader
            ]
    except UnicodeDecodeError:
        raise InvalidParameterError(f"manifest '{mpath.name}' is not a UTF-8 CSV file") from None
    items: list[BatchItem] = []
    outputs: dict[str, str] = {}
    seen: set[str] = set()
    for n, row in enumerate(rows, start=2):
        raw = row.get("input", "")
        if not raw:
            continue
        p = Path(raw).expanduser()
        p = p if p.is_absolute() else base / p
        label = _rel(p, base)
        key = label if label not in seen else f"{label}#row{n}"
        seen.add(key)
        if row.get("output") and not p.is_dir():
            outputs[key] = row["output"]
        if not p.exists():
            items.append(
                BatchItem(
                    key,
                    label,
                    "error",
                    (str(p),),
                    note=f"input '{label}' does not exist (manifest row {n})",
                )
            )
            continue
        if p.is_dir():
            # one series of several stacks: cut as discovery cuts it (the output named in the
            # row gets each stack's words: OUTPUT_echo2); else the reader reads the folder
            folder = _folder_stacks(p, key, label, seen) or [
                BatchItem(key, label, "dicom-folder", (str(p),), extra={"folder": str(p)})
            ]
            for it in folder:
                seen.add(it.key)
                stack = it.extra.get("stack")
                if row.get("output") and it.runnable:
                    outputs[it.key] = f"{row['output']}_{stack}" if stack else row["output"]
            items += folder
            continue
        fmt = _sniff(p, key, label, listed=True)
        if isinstance(fmt, BatchItem):
            items.append(fmt)
            continue
        if fmt == "dicom":
            try:
                reason = _non_image_reason(_dicom_header(p))
            except MedSRError as exc:
                items.append(BatchItem(key, label, "error", (str(p),), note=str(exc)))
                continue
            if reason:
                items.append(BatchItem(key, label, "skip", (str(p),), note=reason))
                continue
            items.append(BatchItem(key, label, "dicom-file", (str(p),)))
        else:
            items.append(BatchItem(key, label, fmt, (str(p),)))
    return items, outputs
