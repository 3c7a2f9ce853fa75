"""Output paths that mirror the input's folder structure.

* a NIfTI / PNG / TIFF / ``.npy`` file → the same relative path under the output folder, in the
  same format (a misnamed file gets the suffix of its real format);
* a single DICOM file → the same relative path (``.dcm`` added when the name has no suffix);
* a DICOM series of several files → a folder (one ``IM00001.dcm``… per slice): the series'
  own folder mirrored when that folder holds nothing else to process (the usual
  ``patient/study/series/`` layout), otherwise ``<folder>/series-<key>`` beside its neighbours
  (``key``: the 8-character hash of the Series Instance UID, never the UID itself); one stack
  of a series read stack by stack (echoes) gets that folder's name with the words of its stack
  (``<folder>_echo2``);
* a manifest row may name its output (relative to the output folder, or absolute).

With a maps folder (``medsr batch --maps DIR``) each item's consistency/uncertainty maps go to
``DIR/<its output path relative to the output folder>/`` (e.g. ``DIR/study1/ct/`` for the series
written to ``OUT/study1/ct``, ``DIR/volumes/brain.nii.gz/`` for ``OUT/volumes/brain.nii.gz``):
unique because the outputs are. An output outside the output folder (an absolute manifest
``output``) gets ``DIR/<its name>-<8-character hash of the item key>/``.

Two items that would write the same path (or the same JSON sidecar, or one inside the other's
series folder) cannot both succeed: the later one is marked failed with a clear message instead
of silently overwriting. The batch's own files (``batch_report.csv``, ``batch_state.jsonl``) are
reserved.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from medsr.batch.discover import BatchItem

__all__ = ["REPORT_NAME", "RESERVED", "STATE_NAME", "maps_folder", "plan_outputs"]

REPORT_NAME = "batch_report.csv"
STATE_NAME = "batch_state.jsonl"
RESERVED = (REPORT_NAME, STATE_NAME)


def _same_format_name(name: str, fmt: str) -> str:
    from medsr.errors import UnsupportedFormatError
    from medsr.io import OUTPUT_SUFFIX, format_for_output

    try:
        if format_for_output(name) == fmt:
            return name
    except UnsupportedFormatError:
        pass
    stem = name.split(".")[0] if name.lower().endswith(".nii.gz") else Path(name).stem
    return stem + OUTPUT_SUFFIX[fmt]


def _default_output(item: BatchItem, in_root: Path, out_root: Path, exclusive: set[str]) -> Path:
    from medsr.io.dicom import series_key

    first = Path(item.paths[0])
    if item.kind == "dicom-series":
        folder = Path(item.extra["folder"])
        rel = _relative(folder, in_root)
        key = series_key(_series_uid(item))
        if item.key in exclusive:
            target = out_root / (rel if rel != Path(".") else (in_root.name or f"series-{key}"))
        else:
            target = out_root / rel / f"series-{key}"
        stack = item.extra.get("stack")
        return target.with_name(f"{target.name}_{stack}") if stack else target
    if item.kind == "dicom-folder":
        rel = _relative(first, in_root)
        return out_root / (rel if rel != Path(".") else (first.name or "series"))
    rel_parent = _relative(first.parent, in_root)
    if item.kind == "dicom-file":
        name = first.name if first.suffix.lower() in (".dcm", ".dicom") else first.name + ".dcm"
        return out_root / rel_parent / name
    return out_root / rel_parent / _same_format_name(first.name, item.kind)


def _series_uid(item: BatchItem) -> str:
    """The Series Instance UID of a series item, without its choice of stacks (``UID:N``)."""
    from medsr.io.dicom.stacks import split_series

    return split_series(item.series_uid)[0] or ""


def _relative(path: Path, root: Path) -> Path:
    try:
        return path.resolve().relative_to(root)
    except ValueError:
        return Path(path.name)


def _exclusive_series(items: list[BatchItem], in_root: Path) -> set[str]:
    """Keys of series items whose folder holds no other runnable item (in its whole subtree);
    the stacks of one series read each on its own (the same files) are one series here."""
    out = set()
    runnable = [it for it in items if it.runnable]
    for it in runnable:
        if it.kind != "dicom-series":
            continue
        folder = Path(it.extra["folder"]).resolve()
        others = [o for o in runnable if o.paths != it.paths]
        if folder != in_root:
            others = [o for o in others if any(_under(Path(p), folder) for p in o.paths)]
        if not others:
            out.add(it.key)
    return out


def _under(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder)
        return True
    except ValueError:
        return False


def maps_folder(item: BatchItem, output: Path, out_root: Path, maps_root: Path) -> Path:
    """Where the maps of ``item`` (written to ``output``) go (see the module docstring)."""
    try:
        return maps_root / output.relative_to(out_root)
    except ValueError:
        import hashlib

        tag = hashlib.sha256(item.key.encode("utf-8")).hexdigest()[:8]
        return maps_root / f"{output.name}-{tag}"


def plan_outputs(
    items: list[BatchItem],
    in_root: str | os.PathLike[str],
    out_root: str | os.PathLike[str],
    requested: dict[str, str] | None = None,
    maps_root: str | os.PathLike[str] | None = None,
) -> list[BatchItem]:
    """``items`` with ``output`` set (absolute); clashes become failed items (``note`` set).

    With ``maps_root``, every runnable item also gets ``extra["maps"]``: its maps folder
    (:func:`maps_folder`); an output inside the maps folder is a clash."""
    from medsr.io import format_for_output
    from medsr.io.sidecar import sidecar_path

    in_base = Path(in_root).resolve()
    out_base = Path(out_root).resolve()
    maps_base = Path(maps_root).resolve() if maps_root is not None else None
    requested = requested or {}
    exclusive = _exclusive_series(items, in_base)
    claimed: dict[str, str] = {str(out_base / name): "the batch report/state" for name in RESERVED}
    folders: dict[str, str] = {}  # DICOM series output folders → label
    inputs = {str(Path(p).resolve()) for it in items for p in it.paths}
    planned: list[BatchItem] = []
    for item in items:
        if not item.runnable:
            planned.append(item)
            continue
        if item.key in requested:
            req = Path(requested[item.key]).expanduser()
            target = req if req.is_absolute() else out_base / req
        else:
            target = _default_output(item, in_base, out_base, exclusive)
        target = target.resolve()
        note = None
        try:
            fmt = format_for_output(target)
        except Exception as exc:  # an unknown suffix named in a manifest
            fmt, note = None, str(exc)
        names = [str(target)]
        if fmt not in (None, "dicom"):
            names.append(str(sidecar_path(target)))
        if note is None:
            for name in names:
                if name in claimed:
                    note = f"output '{_show(target, out_base)}' clashes with {claimed[name]}"
                    break
                if name in inputs or any(_under(Path(p), target) for p in item.paths):
                    note = f"output '{_show(target, out_base)}' would overwrite an input"
                    break
        if note is None:
            for folder, label in folders.items():
                if _under(target, Path(folder)) or (
                    fmt == "dicom" and _under(Path(folder), target)
                ):
                    note = f"output '{_show(target, out_base)}' clashes with the series folder of {label}"
                    break
        if note is None and fmt == "dicom" and target.suffix == "":
            for name, label in claimed.items():
                if _under(Path(name), target):
                    note = f"output '{_show(target, out_base)}' clashes with {label}"
                    break
        if note is None and maps_base is not None and _under(target, maps_base):
            note = f"output '{_show(target, out_base)}' lies inside the maps folder"
        if note is not None:
            planned.append(dataclasses.replace(item, output=str(target), kind="error", note=note))
            continue
        for name in names:
            claimed[name] = item.label
        if fmt == "dicom" and target.suffix == "":
            folders[str(target)] = item.label
        extra = dict(item.extra)
        if maps_base is not None:
            extra["maps"] = str(maps_folder(item, target, out_base, maps_base))
        planned.append(dataclasses.replace(item, output=str(target), extra=extra))
    return planned


def _show(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()
