"""One series' files as real exports present them: copies, stacks, echoes and time points.

A PACS export holds more than one regular volume under one Series Instance UID: the localizer
(scout) the technologist took first, in another orientation and size, or marked as one in its
Image Type (CT: ``ORIGINAL\\PRIMARY\\LOCALIZER``) whatever its geometry; the echoes of a
multi-echo MR (``EchoNumbers``) or the time points of a dynamic series
(``TemporalPositionIdentifier``), each at the same positions, or, where positions repeat and
neither is stated, echoes told apart by ``EchoTime``, cardiac phases by ``TriggerTime`` and time
points by ``AcquisitionNumber`` (a cine whose trigger times drift from position to position by
the order of its trigger times at each position); and the same instance exported twice (one
file in the folder and a copy in a sub-folder).

:func:`drop_duplicate_instances` keeps one file per SOP Instance UID; :func:`split_stacks` cuts
a series into stacks of one orientation, image size, echo and time point; :func:`choose_stack`
takes the one asked for (``series_uid="KEY:N"``), or the main stack when the others are
clearly not it (a localizer: another orientation or size, fewer images), and otherwise says
which stacks there are and how to choose one; :func:`time_stacks` gives all of them, in time
order, where they are the time points or cardiac phases of one volume (``KEY:all``);
:func:`series_volumes` says what a series is read as where nobody can choose for it (``medsr
batch``): all of it over time, its main stack, or each stack on its own.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from medsr.errors import InvalidParameterError, MedSRError, MedSRWarning, SeriesMismatchError
from medsr.io.dicom.geometry import Planes, _same
from medsr.io.dicom.header import _GEOM_TOL_COS, _first_float, series_key

Member = tuple[Path, Dataset]

#: what tells volumes apart at the same positions, with the words a message uses for each
_VOLUME_KEYS = (("EchoNumbers", "echo"), ("TemporalPositionIdentifier", "time point"))
#: what may tell them apart where those are not stated and positions repeat (tried in this
#: order, each on its own and then together): the word, and whether the value is in ms
_REPEAT_KEYS = (
    ("EchoTime", "echo time", True),
    ("TriggerTime", "trigger time", True),
    ("AcquisitionNumber", "acquisition", False),
)
#: every header element that :func:`split_stacks`, :func:`choose_stack` and :func:`time_stacks`
#: read (besides the pixels :func:`drop_duplicate_instances` compares): a caller that reads only
#: some elements of each header (batch discovery) reads these to cut a series as the reader does
STACK_TAGS = (
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "Rows",
    "Columns",
    "ImageType",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "SharedFunctionalGroupsSequence",  # the plane of an enhanced object (geometry._plane)
    "InstanceNumber",
    "CardiacNumberOfImages",
    *(key for key, _ in _VOLUME_KEYS),
    *(key for key, _, _ in _REPEAT_KEYS),
)
#: Image Type values (from the third on) of a localizer: CT's defined term (PS3.3 C.8.2.1.1.1;
#: GE writes ``ORIGINAL\\PRIMARY\\LOCALIZER`` on its scouts), mammography's stereotactic
#: scout, and the vendor words for one (Siemens' topogram, Philips' surview)
_LOCALIZER_TYPES = frozenset({"LOCALIZER", "SCOUT", "TOPOGRAM", "SURVIEW", "STEREO_SCOUT"})


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


#: what ``KEY:all`` (``series_uid="KEY:all"``) asks for: every stack of a series, as time
ALL_STACKS = "all"
#: the label words of :class:`Stack` that tell volumes apart in time (``KEY:all`` joins them);
#: any other that differs (an echo) makes stacks no time series
_TIME_WORDS = ("time point", "cardiac phase", "trigger time", "acquisition")


def split_all(series_uid: str | None) -> tuple[str | None, bool]:
    """``"KEY:all"`` → ``("KEY", True)``: every stack of a series (its key or UID; empty: the
    only one), read as one image over time (:func:`time_stacks`); anything else →
    ``(series_uid, False)``."""
    if series_uid is None:
        return None, False
    head, sep, tail = str(series_uid).strip().rpartition(":")
    if sep and tail.strip().lower() == ALL_STACKS:
        return (head.strip() or None), True
    return series_uid, False


def split_series(series_uid: str | None) -> tuple[str | None, int | str | None]:
    """A series choice in one parse: ``"KEY:all"`` → ``("KEY", ALL_STACKS)``
    (:func:`split_all`), ``"KEY:N"`` → ``("KEY", N)`` (:func:`split_choice`), anything else →
    ``(text, None)``; the key is ``None`` where the choice names none (``":N"``, ``":all"``)."""
    head, whole = split_all(series_uid)
    return (head, ALL_STACKS) if whole else split_choice(series_uid)


def _text(ds: Dataset, key: str) -> str:
    value = ds.get(key)
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v).strip() for v in value)
    return str(value).strip()


def is_localizer(ds: Dataset) -> bool:
    """Whether the Image Type says the image is a localizer (scout, topogram, surview)."""
    value = ds.get("ImageType")
    values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    return any(str(v or "").strip().upper() in _LOCALIZER_TYPES for v in values[2:])


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
    localizer: bool = False  # its Image Type says so (beside images that are not localizers)

    def geometry_of(self, other: Stack) -> bool:
        return self.size == other.size and _same(self.iop, other.iop, _GEOM_TOL_COS)

    def describe(self) -> str:
        rows, cols = self.size
        parts = [f"{len(self.members)} image{'s' if len(self.members) != 1 else ''}"]
        parts.append(f"{_plane_name(self.iop)} {rows}×{cols}")
        parts += [f"{word} {value}" for word, value in self.labels.items() if value]
        if self.localizer:
            parts.append("localizer (ImageType)")
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


def _position(ds: Dataset, iop: np.ndarray | None, planes: Planes) -> float | None:
    ipp = planes(ds)[1]
    if ipp is None or iop is None:
        return None
    normal = np.cross(iop[:3], iop[3:])
    return round(float(np.dot(normal / np.linalg.norm(normal), ipp)), 2)


def _repeats_positions(members: list[Member], iop: np.ndarray | None, planes: Planes) -> bool:
    positions = [_position(ds, iop, planes) for _, ds in members]
    known = [p for p in positions if p is not None]
    return len(set(known)) < len(known)


def _value(ds: Dataset, key: str, ms: bool) -> str:
    if not ms:
        return _text(ds, key)
    value = _first_float(ds.get(key))
    return "" if value is None else f"{value:g} ms"


def _sort_value(text: str) -> tuple[int, float, str]:
    number = _first_float(text.split()[0]) if text else None
    return (0, number, text) if number is not None else (1, 0.0, text)


def _split_repeats(stack: Stack, planes: Planes) -> list[Stack]:
    """A stack whose positions repeat, cut by the first of :data:`_REPEAT_KEYS` (or all that
    vary, together) into parts that each hold every position once (the same positions in
    each: a value that differs from slice to slice is no volume); else a cine's phases
    (:func:`_split_phases`); else the stack as it is (the reader says that positions repeat)."""
    varying = [
        (key, word, ms)
        for key, word, ms in _REPEAT_KEYS
        if len({_value(ds, key, ms) for _, ds in stack.members}) > 1
    ]
    tries = [[k] for k in varying] + ([varying] if len(varying) > 1 else [])
    for keys in tries:
        parts: dict[tuple[str, ...], list[Member]] = {}
        for path, ds in stack.members:
            value = tuple(_value(ds, key, ms) for key, _, ms in keys)
            parts.setdefault(value, []).append((path, ds))
        places = [[_position(ds, stack.iop, planes) for _, ds in m] for m in parts.values()]
        if all(len(set(p)) == len(p) and set(p) == set(places[0]) for p in places):
            return [
                Stack(
                    stack.iop,
                    stack.size,
                    {**stack.labels, **{w: v for (_, w, _), v in zip(keys, values, strict=True)}},
                    parts[values],
                    stack.localizer,
                )
                for values in sorted(parts, key=lambda vs: [_sort_value(v) for v in vs])
            ]
    return _split_phases(stack, {key for key, _, _ in varying}, planes) or [stack]


def _split_phases(stack: Stack, varying: set[str], planes: Planes) -> list[Stack] | None:
    """A cardiac cine whose TriggerTime drifts from position to position, cut into its phases.

    Each position of a cine is acquired in other heartbeats, so the trigger time of one phase
    differs by a few to tens of ms between positions and exact values do not cut the series.
    Where every image states a trigger time (and one echo time), and every position holds
    the same number P of images, the images at each position are ordered by trigger time (then
    InstanceNumber) and phase k is the k-th image at each position, provided the phases do
    not overlap in time (the latest trigger time of phase k is earlier than the earliest of
    phase k + 1) and agree with CardiacNumberOfImages where it is stated; otherwise
    :class:`SeriesMismatchError` says what was seen. None where this is no such series."""
    if "TriggerTime" not in varying or "EchoTime" in varying:
        return None
    members = stack.members
    times: list[float] = []
    at: dict[float, list[int]] = {}  # position → its images
    for i, (_, ds) in enumerate(members):
        time, place = _first_float(ds.get("TriggerTime")), _position(ds, stack.iop, planes)
        if time is None or place is None:
            return None
        times.append(time)
        at.setdefault(place, []).append(i)
    counts = {len(images) for images in at.values()}
    if len(at) < 2 or len(counts) != 1:
        return None
    (phases,) = counts

    def order(i: int) -> tuple[float, float]:
        number = _first_float(members[i][1].get("InstanceNumber"))
        return (times[i], float("inf") if number is None else number)

    ranked = [sorted(images, key=order) for _, images in sorted(at.items())]
    groups = [[images[k] for images in ranked] for k in range(phases)]
    spans = [(min(times[i] for i in g), max(times[i] for i in g)) for g in groups]
    uid = str(members[0][1].get("SeriesInstanceUID", "") or "")
    seen = (
        f"series {series_key(uid)} holds {len(members)} images at {len(at)} positions, "
        f"{phases} at each, told apart by TriggerTime only"
    )
    for k in range(phases - 1):
        (low, high), (next_low, next_high) = spans[k], spans[k + 1]
        if high >= next_low:
            raise SeriesMismatchError(
                f"{seen}, and these do not group them into cardiac phases: the trigger times "
                f"of image {k + 1} at each position ({low:g}–{high:g} ms) overlap those of "
                f"image {k + 2} ({next_low:g}–{next_high:g} ms). Split the series into one "
                "folder per phase"
            )
    stated = {
        _first_float(ds.get("CardiacNumberOfImages"))
        for _, ds in members
        if ds.get("CardiacNumberOfImages") not in (None, "")
    }
    if stated and stated != {phases}:
        said = ", ".join(f"{n:g}" for n in sorted(n for n in stated if n is not None))
        raise SeriesMismatchError(
            f"{seen}, but CardiacNumberOfImages says {said or 'nothing readable'}: the "
            "images do not form one cine of whole cardiac cycles. Split the series into one "
            "folder per phase"
        )
    return [
        Stack(
            stack.iop,
            stack.size,
            {
                **stack.labels,
                "cardiac phase": (
                    f"{k + 1} (trigger time ~{np.mean([times[i] for i in g]):.0f} ms)"
                ),
            },
            [members[i] for i in sorted(g)],
            stack.localizer,
        )
        for k, g in enumerate(groups)
    ]


def split_stacks(members: list[Member], planes: Planes | None = None) -> list[Stack]:
    """Cut one series into stacks of one orientation, image size, echo (``EchoNumbers``) and
    time point (``TemporalPositionIdentifier``), with the images its Image Type marks as
    localizers apart (where others are not); a stack whose positions repeat is cut by
    ``EchoTime``, ``TriggerTime`` or ``AcquisitionNumber`` too when that gives stacks of the
    same positions without repeats (a multi-echo, cardiac or dynamic series that states no
    echo or time point numbers: CT vendors number parts of one volume as acquisitions, so
    these are used only where the positions say they must be); a cardiac cine whose trigger
    times drift from position to position is cut into its phases by :func:`_split_phases`
    (which raises :class:`SeriesMismatchError` where the order of the trigger times forms no
    phases). In file order within each stack; the largest stack first, localizers last.

    ``planes``: the read's :class:`~medsr.io.dicom.geometry.Planes`, for a read that goes on
    to use the slices' planes (each is computed once); by default one of this call's own."""
    planes = Planes() if planes is None else planes
    marked = [is_localizer(ds) for _, ds in members]
    apart = any(marked) and not all(marked)
    stacks: list[Stack] = []
    for (path, ds), localizer in zip(members, marked, strict=True):
        iop = planes(ds)[0]
        size = (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
        labels = {word: _text(ds, key) for key, word in _VOLUME_KEYS}
        localizer = localizer and apart
        for stack in stacks:
            if (
                stack.labels == labels
                and stack.size == size
                and stack.localizer == localizer
                and _same(stack.iop, iop, _GEOM_TOL_COS)
            ):
                stack.members.append((path, ds))
                break
        else:
            stacks.append(Stack(iop, size, labels, [(path, ds)], localizer))
    out: list[Stack] = []
    for stack in stacks:
        if _repeats_positions(stack.members, stack.iop, planes):
            out += _split_repeats(stack, planes)
        else:
            out.append(stack)
    # stable: file order among equals
    return sorted(out, key=lambda s: (s.localizer, -len(s.members)))


def _beside(main: Stack, other: Stack) -> bool:
    """Whether ``other`` is a localizer beside the ``main`` stack of a series: marked as one in
    its Image Type, or of another orientation or image size and with fewer images."""
    return other.localizer or (
        len(other.members) < len(main.members) and not other.geometry_of(main)
    )


def _kept_beside(stacks: list[Stack]) -> tuple[list[bool], list[Stack]]:
    """Which of a series' stacks are read beside its main one (the first): those that are not
    a localizer beside it (:func:`_beside`), and those stacks."""
    main = stacks[0]
    kept = [s is main or not _beside(main, s) for s in stacks]
    return kept, [s for s, k in zip(stacks, kept, strict=True) if k]


def quiet_stacks(members: list[Member], folder: str) -> list[Stack]:
    """The stacks of one series' files as the reader cuts them (:func:`drop_duplicate_instances`,
    then :func:`split_stacks`), for a caller that lists them before any read: without the
    reader's warnings (its read warns again), and ``[]`` where the reader refuses the series
    whole (its read says why)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedSRWarning)
        try:
            return split_stacks(drop_duplicate_instances(members, folder))
        except MedSRError:
            return []


def choose_stack(
    stacks: list[Stack], wanted: int | None, uid: str, folder: str
) -> tuple[list[Member], str | None]:
    """The members of the stack asked for (``wanted``, 1-based) or of the main stack, and the
    note of what was left out (also warned as :class:`MedSRWarning`), if anything.

    Without a choice, the largest stack is read when every other one is a localizer: marked
    as one in its Image Type, or of another orientation or image size and with fewer images (a
    localizer exported with its series); stacks that differ by echo or time point, or as large
    as the largest, are a choice only the user can make: :class:`SeriesMismatchError` lists
    them with the ``--series KEY:N`` that reads each."""
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
    if not main.localizer and all(_beside(main, s) for s in others):
        left = sum(len(s.members) for s in others)
        choice = f"{key}:2" if len(stacks) == 2 else f"{key}:N (N from 2 to {len(stacks)})"
        marked = sum(s.localizer for s in others)
        if marked == len(others):
            what = f"marked as localizer (ImageType) beside its main stack ({main.describe()})"
            guess = ""
        else:
            what = f"of another orientation or size than its main stack ({main.describe()})"
            what = f"marked as localizer (ImageType) or {what}" if marked else what
            guess = " (a localizer?)"
        note = (
            f"'{folder}': series {key} holds {left} image(s) {what}, left out{guess}: "
            f"{'; '.join(s.describe() for s in others)}. Read them with --series {choice}"
        )
        warnings.warn(note, MedSRWarning, stacklevel=3)
        return main.members, note
    try:  # time points or cardiac phases: the choice of all of them together is said too
        over_time, _ = time_stacks_beside(stacks, uid, folder)
    except SeriesMismatchError:
        together = ""
    else:
        kind = _time_kind(over_time)
        together = (
            f", or all {len(over_time)} {kind} as one image over time with --series {key}:all"
        )
    raise SeriesMismatchError(
        f"series {key} holds {len(stacks)} stacks of images, not one volume: {listing}. "
        f"Choose one with --series {key}:N (Python: series_uid='{key}:N'){together}"
    )


def _time_kind(stacks: list[Stack]) -> str:
    """What the stacks of a series over time are called: cardiac phases, or time points."""
    return "cardiac phases" if any(s.labels.get("cardiac phase") for s in stacks) else "time points"


def _differ(labels: list[dict[str, str]], words: Iterable[str] | None = None) -> list[str]:
    """The words (of ``words``, else of ``labels`` in the order first seen) whose value is not
    the same in every one of ``labels`` (a missing word reads as empty): what tells stacks
    apart (``echo``, ``cardiac phase``)."""
    names = dict.fromkeys(w for one in labels for w in one) if words is None else words
    return [w for w in names if len({one.get(w, "") for one in labels}) > 1]


def time_stacks(stacks: list[Stack], uid: str, planes: Planes | None = None) -> list[Stack]:
    """The stacks of a series that ``KEY:all`` reads as one image over time, in time order
    (:data:`_TIME_WORDS`: time point, cardiac phase, trigger time, acquisition; then the mean
    TriggerTime of their images).

    Every stack must be a time point or cardiac phase of the same volume: the same orientation,
    image size, number of images and positions, none a localizer, and nothing but time telling
    them apart (echoes are other contrasts, not a time series). Anything else, or a series of
    one stack, is a :class:`SeriesMismatchError` that says why and how to read one stack.
    ``planes``: the read's slice planes, as for :func:`split_stacks`."""
    planes = Planes() if planes is None else planes
    key = series_key(uid)
    listing = "; ".join(f"{key}:{i} ({s.describe()})" for i, s in enumerate(stacks, 1))
    one = f"choose one with --series {key}:N (Python: series_uid='{key}:N')"
    if len(stacks) < 2:
        raise SeriesMismatchError(
            f"series {key} is one volume ({stacks[0].describe()}), not time points or cardiac "
            f"phases: read it without ':all'"
        )

    def refuse(why: str) -> SeriesMismatchError:
        return SeriesMismatchError(
            f"series {key} cannot be read as one series over time (':all'): {why}. It holds "
            f"{listing}; {one}"
        )

    first = stacks[0]
    for n, stack in enumerate(stacks, 1):
        if stack.localizer:
            raise refuse(f"{key}:{n} is a localizer")
        if not stack.geometry_of(first):
            raise refuse(f"{key}:{n} is of another orientation or image size than {key}:1")
    echoes = [w for w in _differ([s.labels for s in stacks]) if w not in _TIME_WORDS]
    if echoes:
        raise refuse(f"its stacks differ by {' and '.join(sorted(echoes))}, not by time only")
    counts = {len(s.members) for s in stacks}
    if len(counts) > 1:
        raise refuse("its stacks hold different numbers of images")
    places = [sorted(str(_position(ds, s.iop, planes)) for _, ds in s.members) for s in stacks]
    if any(p != places[0] for p in places):
        raise refuse("its stacks lie at different positions")

    def when(stack: Stack) -> list[tuple[int, float, str]]:
        times = [_first_float(ds.get("TriggerTime")) for _, ds in stack.members]
        known = [t for t in times if t is not None]
        mean = float(np.mean(known)) if known else 0.0
        return [_sort_value(stack.labels.get(w, "")) for w in _TIME_WORDS] + [(0, mean, "")]

    return sorted(stacks, key=when)


def time_stacks_beside(
    stacks: list[Stack], uid: str, folder: str, planes: Planes | None = None
) -> tuple[list[Stack], str | None]:
    """What ``KEY:all`` reads: :func:`time_stacks`, or, where that refuses because localizers
    lie beside the time points (as :func:`choose_stack` counts one: marked as one in its Image
    Type, or of another orientation or image size and with fewer images), the time stacks
    without them and the note of what is left out (in :func:`choose_stack`'s words; not warned
    here). Anything else: :func:`time_stacks`' refusal."""
    try:
        return time_stacks(stacks, uid, planes), None
    except SeriesMismatchError:
        if not stacks or stacks[0].localizer:
            raise
        kept, read = _kept_beside(stacks)
        if not 1 < len(read) < len(stacks):
            raise
        try:
            return time_stacks(read, uid, planes), _left_beside(
                stacks, kept, series_key(uid), folder
            )
        except SeriesMismatchError:
            pass
        raise  # time_stacks' refusal of the whole series


@dataclass
class Volume:
    """One volume of a series as :func:`series_volumes` gives it, read with
    ``series_uid=f"{UID}:{choice}"`` (``choice`` ``None``: the series' UID alone).

    Attributes:
        choice: ``None`` (the series as the reader reads it without a choice: one stack, or its
            main stack beside a localizer), ``"all"`` (every time point or cardiac phase, as
            one image over time) or ``"N"`` (its N-th stack, as the reader numbers them).
        stacks: the stacks it reads (in time order for ``"all"``).
        apart: what tells it apart from the series' other volumes (``{"echo": "2"}``), for a
            volume of one stack among others read each on its own.
        note: what reading it leaves out (the note the reader warns), or why it is left out.
        left_out: a localizer beside stacks that are read each on its own: not read at all.
    """

    choice: str | None
    stacks: list[Stack]
    apart: dict[str, str] = field(default_factory=dict)
    note: str | None = None
    left_out: bool = False

    def describe(self) -> str:
        """The volume in the words of :meth:`Stack.describe` (``KEY:N (…)``), for a choice of
        all: how many time points of how many images (``3 cardiac phases × 4 images, axial
        16×16``)."""
        if self.choice != ALL_STACKS:
            return self.stacks[0].describe()
        first = self.stacks[0]
        words = _differ([s.labels for s in self.stacks], _TIME_WORDS)
        n = len(first.members)
        rows, cols = first.size
        return (
            f"{len(self.stacks)} {words[0] if words else 'time point'}s × {n} "
            f"image{'s' if n != 1 else ''}, {_plane_name(first.iop)} {rows}×{cols}"
        )


def series_volumes(stacks: list[Stack], uid: str, folder: str) -> list[Volume]:
    """What a series cut into ``stacks`` (:func:`split_stacks`) is read as where nobody can
    choose for it (``medsr batch``), with the reader's own rules:

    * one stack: the series (choice ``None``);
    * time points or cardiac phases of one volume (what :func:`time_stacks` accepts): all of
      them as one image over time (choice ``"all"``);
    * a main stack beside localizers (what :func:`choose_stack` reads without a choice): the
      main stack (choice ``None``), with the reader's note of what it leaves out;
    * time points or cardiac phases beside localizers (:func:`time_stacks_beside`, what the
      reader's ``KEY:all`` reads): the time stacks as one image over time (choice ``"all"``,
      ``stacks`` without the localizers, with the ``note`` of what is left out);
    * other stacks (echoes, or echoes × time points): each on its own (choice ``"N"``), with the
      label words that tell it apart; a localizer beside them (as :func:`choose_stack` counts
      one) is left out (``left_out``) with a note that says how to read it.
    """
    if len(stacks) < 2:
        return [Volume(None, stacks)]
    try:
        over_time, note = time_stacks_beside(stacks, uid, folder)
        return [Volume(ALL_STACKS, over_time, note=note)]
    except SeriesMismatchError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedSRWarning)  # its read warns, and says it again
        try:
            _, note = choose_stack(stacks, None, uid, folder)
            return [Volume(None, [stacks[0]], note=note)]
        except SeriesMismatchError:
            pass
    key = series_key(uid)
    kept, read = _kept_beside(stacks)
    differ = _differ([s.labels for s in read])
    out = []
    for n, (stack, keep) in enumerate(zip(stacks, kept, strict=True), 1):
        if keep:
            apart = {w: stack.labels[w] for w in differ if stack.labels.get(w)}
            out.append(Volume(str(n), [stack], apart))
            continue
        out.append(
            Volume(
                str(n),
                [stack],
                note=(
                    f"'{folder}': {key}:{n} ({stack.describe()}) is a localizer beside the "
                    f"{len(read)} stacks of series {key} read each on its own: left out. "
                    f"Read it with --series {key}:{n}"
                ),
                left_out=True,
            )
        )
    return out


def _left_beside(stacks: list[Stack], kept: list[bool], key: str, folder: str) -> str:
    """The note of the localizers (``kept`` false) left out beside the time points or cardiac
    phases of a series read as one image over time, in :func:`choose_stack`'s words."""
    left = [(n, s) for n, (s, k) in enumerate(zip(stacks, kept, strict=True), 1) if not k]
    count = sum(len(s.members) for _, s in left)
    marked = sum(s.localizer for _, s in left)
    if marked == len(left):
        what, guess = "marked as localizer (ImageType)", ""
    else:
        what = "of another orientation or size than its time points"
        what = f"marked as localizer (ImageType) or {what}" if marked else what
        guess = " (a localizer?)"
    choice = " or ".join(f"{key}:{n}" for n, _ in left)
    return (
        f"'{folder}': series {key} holds {count} image(s) {what}, left out of {key}:all"
        f"{guess}: {'; '.join(s.describe() for _, s in left)}. Read them with --series {choice}"
    )


def stack_choices(stacks: list[Stack], uid: str) -> list[dict[str, object]]:
    """The stacks of a series as a front end offers them (``SeriesMismatchError.stacks``), in
    the order and numbering of :func:`choose_stack`: per stack ``key`` (the series key),
    ``number``, ``series`` (the choice that reads it: ``KEY:N``), ``label`` (what tells it apart
    from the others: ``echo 2``, ``cardiac phase 3 (trigger time ~80 ms)``, ``coronal 24×20,
    localizer``), ``images``, ``description`` (as the reader's message lists it) and
    ``over_time``: ``KEY:all`` where the reader reads the stacks together as one image over
    time (:func:`time_stacks_beside`: localizers beside them left out), else ``None``, and
    ``over_time_points``: how many time points that reads (the same on every stack)."""
    key = series_key(uid)
    try:
        over, _ = time_stacks_beside(stacks, uid, "")
    except SeriesMismatchError:
        over = []
    over_time = f"{key}:{ALL_STACKS}" if over else None

    def words(s: Stack) -> dict[str, str]:
        rows, cols = s.size
        out = {"": f"{_plane_name(s.iop)} {rows}×{cols}"}
        out.update({w: f"{w} {v}" for w, v in s.labels.items() if v})
        if s.localizer:
            out["localizer"] = "localizer"
        return out

    parts = [words(s) for s in stacks]
    differ = _differ(parts)
    return [
        {
            "key": key,
            "number": n,
            "series": f"{key}:{n}",
            "label": ", ".join(p[w] for w in differ if p.get(w)) or s.describe(),
            "images": len(s.members),
            "description": s.describe(),
            "over_time": over_time,
            "over_time_points": len(over) or None,
        }
        for n, (s, p) in enumerate(zip(stacks, parts, strict=True), 1)
    ]


#: what names a series in a choice: its key (8 hexadecimal characters, or their start) or its
#: Series Instance UID (digits and dots)
_SERIES_NAME = re.compile(r"[0-9A-Fa-f.]{1,64}")


def check_series_choice(text: str | None) -> str | None:
    """``text`` as a series choice the reader takes (``series_uid``; the command line's
    ``--series``), stripped; ``None`` when empty. ``KEY`` (a series), ``KEY:N`` (its N-th
    stack, from 1), ``KEY:all`` (its time points or cardiac phases as one image over time),
    ``:N`` and ``:all`` (of the only series), parsed by :func:`split_series`; anything else is an :class:`~medsr.errors.InvalidParameterError`
    (before any file is read)."""
    value = (text or "").strip()
    if not value:
        return None
    head, stack = split_series(value)
    ok = (stack is not None or ":" not in value) and (not isinstance(stack, int) or stack >= 1)
    if ok and (head is None or _SERIES_NAME.fullmatch(head)):
        return value
    raise InvalidParameterError(
        f"series must be KEY:N (the N-th stack of a series, from 1), KEY:all (its time points "
        f"or cardiac phases as one image over time), :N or :all (of the only series), or KEY "
        f"(the series' key or Series Instance UID); got {value[:40]!r}"
    )
