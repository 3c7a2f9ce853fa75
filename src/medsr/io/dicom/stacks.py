"""One series' files as real exports present them: copies, stacks, echoes and time points.

A PACS export holds more than one regular volume under one Series Instance UID: the localizer
(scout) the technologist took first, in another orientation and size; the echoes of a multi-echo
MR (``EchoNumbers``) or the time points of a dynamic series (``TemporalPositionIdentifier``,
or ``AcquisitionNumber`` where positions repeat), each at the same positions; and the same
instance exported twice (one file in the folder and a copy in a sub-folder).

:func:`drop_duplicate_instances` keeps one file per SOP Instance UID; :func:`split_stacks` cuts
a series into stacks of one orientation, image size, echo and time point; :func:`choose_stack`
takes the one asked for (``series_uid="KEY:N"``), or the main stack when the others are
clearly not it (a localizer: another orientation or size, fewer images), and otherwise says
which stacks there are and how to choose one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from medsr.errors import MedSRWarning, SeriesMismatchError
from medsr.io.dicom.geometry import _plane, _same
from medsr.io.dicom.header import _GEOM_TOL_COS, series_key

Member = tuple[Path, Dataset]

#: what tells volumes apart at the same positions, with the words a message uses for each
_VOLUME_KEYS = (("EchoNumbers", "echo"), ("TemporalPositionIdentifier", "time point"))


def split_choice(series_uid: str | None) -> tuple[str | None, int | None]:
    """``"KEY:N"`` → ``("KEY", N)``: a series (its key or UID; empty: the only one) and its
    N-th stack (1-based, as :func:`choose_stack`'s message numbers them). A UID holds digits and
    dots only, so a colon followed by digits can only be a stack number."""
    if series_uid is None:
        return None, None
    text = str(series_uid).strip()
    head, sep, tail = text.rpartition(":")
    if sep and tail.strip().isdigit():
        return (head.strip() or None), int(tail)
    return text, None


def _text(ds: Dataset, key: str) -> str:
    value = ds.get(key)
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v).strip() for v in value)
    return str(value).strip()


def drop_duplicate_instances(members: list[Member], folder: str) -> list[Member]:
    """Keep the first file (in path order) of each SOP Instance UID.

    The same instance exported twice is one slice, not two at one position; a copy whose pixels
    differ from the first file's is not a copy, and raises :class:`SeriesMismatchError`."""
    first: dict[str, Member] = {}
    kept: list[Member] = []
    copies: list[str] = []
    for path, ds in sorted(members, key=lambda m: m[0].as_posix()):
        uid = str(ds.get("SOPInstanceUID", "") or "").strip()
        if not uid:
            kept.append((path, ds))
            continue
        if uid not in first:
            first[uid] = (path, ds)
            kept.append((path, ds))
            continue
        other_path, other = first[uid]
        if other.get("PixelData") != ds.get("PixelData"):
            raise SeriesMismatchError(
                f"'{other_path.name}' and '{path.name}' are the same instance (SOP Instance UID) "
                "with different pixels: remove the one that is not the original"
            )
        copies.append(path.name)
    if copies:
        more = f" and {len(copies) - 1} more" if len(copies) > 1 else ""
        warnings.warn(
            f"'{folder}': left out {len(copies)} file(s) that repeat an instance already read "
            f"(same SOP Instance UID and pixels: '{copies[0]}'{more})",
            MedSRWarning,
            stacklevel=3,
        )
    return kept


@dataclass
class Stack:
    """Images of one series that may form one volume: one orientation, size, echo, time point."""

    iop: np.ndarray | None
    size: tuple[int, int]
    labels: dict[str, str]  # "echo" / "time point" / "acquisition" → value, where stated
    members: list[Member] = field(default_factory=list)

    def geometry_of(self, other: Stack) -> bool:
        return self.size == other.size and _same(self.iop, other.iop, _GEOM_TOL_COS)

    def describe(self) -> str:
        rows, cols = self.size
        parts = [f"{len(self.members)} image{'s' if len(self.members) != 1 else ''}"]
        parts.append(f"{_plane_name(self.iop)} {rows}×{cols}")
        parts += [f"{word} {value}" for word, value in self.labels.items() if value]
        return ", ".join(parts)


def _plane_name(iop: np.ndarray | None) -> str:
    if iop is None:
        return "unoriented"
    normal = np.cross(iop[:3], iop[3:])
    normal = normal / (np.linalg.norm(normal) or 1.0)
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) < 0.8:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _position(ds: Dataset, iop: np.ndarray | None) -> float | None:
    ipp = _plane(ds)[1]
    if ipp is None or iop is None:
        return None
    normal = np.cross(iop[:3], iop[3:])
    return round(float(np.dot(normal / np.linalg.norm(normal), ipp)), 2)


def _repeats_positions(members: list[Member], iop: np.ndarray | None) -> bool:
    positions = [_position(ds, iop) for _, ds in members]
    known = [p for p in positions if p is not None]
    return len(set(known)) < len(known)


def split_stacks(members: list[Member]) -> list[Stack]:
    """Cut one series into stacks of one orientation, image size, echo (``EchoNumbers``) and
    time point (``TemporalPositionIdentifier``); a stack whose positions repeat is cut by
    ``AcquisitionNumber`` too when that gives stacks without repeats (a dynamic series that
    numbers its acquisitions only: CT vendors number parts of one volume too, so it is used
    only where the positions say it must be). In file order within each stack."""
    stacks: list[Stack] = []
    for path, ds in members:
        iop = _plane(ds)[0]
        size = (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
        labels = {word: _text(ds, key) for key, word in _VOLUME_KEYS}
        for stack in stacks:
            if (
                stack.labels == labels
                and stack.size == size
                and _same(stack.iop, iop, _GEOM_TOL_COS)
            ):
                stack.members.append((path, ds))
                break
        else:
            stacks.append(Stack(iop, size, labels, [(path, ds)]))
    out: list[Stack] = []
    for stack in stacks:
        if not _repeats_positions(stack.members, stack.iop):
            out.append(stack)
            continue
        parts: dict[str, list[Member]] = {}
        for path, ds in stack.members:
            parts.setdefault(_text(ds, "AcquisitionNumber"), []).append((path, ds))
        if len(parts) > 1 and not any(_repeats_positions(m, stack.iop) for m in parts.values()):
            for number, part in parts.items():
                labels = {**stack.labels, "acquisition": number}
                out.append(Stack(stack.iop, stack.size, labels, part))
        else:
            out.append(stack)  # the reader says that positions repeat
    return sorted(out, key=lambda s: -len(s.members))  # stable: file order among equals


def choose_stack(
    stacks: list[Stack], wanted: int | None, uid: str, folder: str
) -> tuple[list[Member], str | None]:
    """The members of the stack asked for (``wanted``, 1-based) or of the main stack, and the
    note of what was left out (also warned as :class:`MedSRWarning`), if anything.

    Without a choice, the largest stack is read when every other one has another orientation
    or image size and fewer images (a localizer exported with its series); stacks that differ
    by echo or time point, or as large as the largest, are a choice only the user can make:
    :class:`SeriesMismatchError` lists them with the ``--series KEY:N`` that reads each."""
    key = series_key(uid)
    listing = "; ".join(f"{key}:{i} ({s.describe()})" for i, s in enumerate(stacks, 1))
    if wanted is not None:
        if not 1 <= wanted <= len(stacks):
            raise SeriesMismatchError(
                f"series {key} has no stack {wanted}: it holds "
                + (listing if len(stacks) > 1 else f"one stack ({stacks[0].describe()})")
            )
        return stacks[wanted - 1].members, None
    if len(stacks) == 1:
        return stacks[0].members, None
    main, others = stacks[0], stacks[1:]
    if all(len(s.members) < len(main.members) and not s.geometry_of(main) for s in others):
        left = sum(len(s.members) for s in others)
        choice = f"{key}:2" if len(stacks) == 2 else f"{key}:N (N from 2 to {len(stacks)})"
        note = (
            f"'{folder}': series {key} holds {left} image(s) of another orientation or size "
            f"than its main stack ({main.describe()}), left out (a localizer?): "
            f"{'; '.join(s.describe() for s in others)}. Read them with --series {choice}"
        )
        warnings.warn(note, MedSRWarning, stacklevel=3)
        return main.members, note
    raise SeriesMismatchError(
        f"series {key} holds {len(stacks)} stacks of images, not one volume: {listing}. "
        f"Choose one with --series {key}:N (Python: series_uid='{key}:N')"
    )
