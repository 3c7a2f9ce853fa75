"""The per-item work of a batch, in three stages: read → upscale → write.

The upscale stage is :func:`medsr.pipeline.upscale_with_safeguards` with the batch's
loaded model and the batch's ``consistency`` setting, and the write stage is
:func:`~medsr.pipeline.save_safeguarded` — what ``medsr upscale`` does for one file —
so every output records the same provenance (medsr version, model name and checksum, scale,
assumed degradation, consistency setting, safeguards summary: DICOM DerivationDescription, or
the JSON sidecar of NIfTI/PNG/TIFF). An item planned with a maps folder
(``item.extra["maps"]``) also gets its consistency and test-time-augmentation uncertainty maps
and ``summary.json`` there. Consistency/out-of-distribution warnings go to the report, and so do
the trust maps' numbers (:func:`~medsr.batch.state.trust_columns`: the p99 of the consistency
error, of the uncertainty and of the error bound, and the bound's calibration or why it has none).

The read stage decodes each input in a child process under a time limit
(:class:`medsr.io.isolated.IsolatedReader`, as the web service does for uploads), so an input
that hangs or crashes a decoder becomes one failed item ("could not be read within N s") and
the batch goes on.

The local engine runs the stages in separate pools (:mod:`medsr.batch.runner`); the Ray engine
runs :func:`process_item`, the three chained, inside one model actor per slot
(:mod:`medsr.batch.ray_engine`). Every stage turns any exception into a failed
:class:`~medsr.batch.state.ItemResult`: one bad file never stops the batch.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsr.batch.discover import BatchItem
from medsr.batch.state import (
    ItemResult,
    input_digest,
    output_as_written,
    output_manifest,
    trust_columns,
)
from medsr.errors import MedSRError

if TYPE_CHECKING:
    from medsr.io.isolated import IsolatedReader

__all__ = [
    "Loaded",
    "failed",
    "process_item",
    "read_item",
    "safeguard",
    "said_of",
    "skipped_result",
    "upscale_loaded",
    "write_item",
]

UP_TO_DATE = "up to date (output as written; input and model unchanged)"
#: default longest time one input may take to read (``medsr batch --decode-timeout``)
DECODE_TIMEOUT_S = 300.0


@dataclass
class Loaded:
    """An item read and ready for the model."""

    item: BatchItem
    image: Any
    input_sha256: str
    seconds: float = 0.0  # time spent on this item so far (read, model)
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] | None = None  # safeguards summary (upscale_with_safeguards)
    notes: list[str] = field(default_factory=list)  # the reader's warnings (load_item)

    def failure(self, exc: BaseException, more: float = 0.0) -> ItemResult:
        """This item's failed result, ``more`` seconds after :attr:`seconds`, with what was
        said of it before (:func:`failed`: the reader's notes, the safeguards' summary)."""
        return failed(
            self.item, exc, self.seconds + more, self.input_sha256, self.notes, self.summary
        )


def error_text(exc: BaseException) -> str:
    """A report-safe message: medsr's own, or the exception type with quoted values removed."""
    if isinstance(exc, MedSRError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory while processing this item"
    from medsr.errors import scrub

    return scrub(exc)


def said_of(item: BatchItem, notes: list[str], summary: dict[str, Any] | None = None) -> str:
    """The report's ``warnings`` of an item: discovery's note of what it left out (a localizer),
    the reader's ``notes`` and the safeguards' warnings of ``summary``, each once (the reader
    says the localizer's note again)."""
    left_out = [item.extra["left_out"]] if item.extra.get("left_out") else []
    said = left_out + list(notes) + [str(w) for w in (summary or {}).get("warnings", [])]
    return "; ".join(dict.fromkeys(said))


def failed(
    item: BatchItem,
    exc: BaseException | str,
    seconds: float = 0.0,
    sha: str | None = None,
    notes: list[str] | None = None,
    summary: dict[str, Any] | None = None,
) -> ItemResult:
    """A failed item's result: the error, and in ``warnings`` what was said of the item before
    it failed (:func:`said_of`: the reader's ``notes``, the safeguards' ``summary``)."""
    msg = exc if isinstance(exc, str) else error_text(exc)
    return ItemResult(
        item.key, item.label, item.kind, "failed", item.output, seconds, msg, sha,
        warnings=said_of(item, notes or [], summary),
    )  # fmt: skip


def skipped_result(item: BatchItem) -> ItemResult:
    """The result of an item that is not processed at all (not an image, or unreadable)."""
    if item.kind == "skip":
        return ItemResult(item.key, item.label, item.kind, "skipped", None, 0.0, item.note or "")
    return ItemResult(item.key, item.label, item.kind, "failed", item.output, 0.0, item.note or "")


@contextlib.contextmanager
def _series_folder(item: BatchItem) -> Iterator[tuple[Path, dict[str, str]]]:
    """A private folder holding exactly the files of a DICOM series (symbolic links, or copies
    where links are not allowed), so the series reader sees neither neighbours nor broken files."""
    tmp = Path(tempfile.mkdtemp(prefix="medsr-series-"))
    try:
        width = len(str(len(item.paths)))
        links: dict[str, str] = {}
        for i, src in enumerate(item.paths):
            dst = tmp / f"{i:0{width}d}_{Path(src).name}"
            try:
                os.symlink(os.path.abspath(src), dst)
            except OSError:
                shutil.copy2(src, dst)
            links[str(dst)] = str(src)
        yield tmp, links
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _real_names(message: str, folder: Path, links: dict[str, str], item: BatchItem) -> str:
    """``message`` of the series reader with each link of :func:`_series_folder` (``3_a.dcm``)
    named as the file it stands for, relative to the series' folder (``a.dcm``, ``x/a.dcm``),
    and the private folder as the item."""
    base = item.extra.get("folder")
    for link, src in links.items():
        real = os.path.relpath(src, base) if base else Path(src).name
        message = message.replace(str(link), real).replace(Path(link).name, real)
    where = item.label.split(" [")[0]
    return message.replace(str(folder), where).replace(folder.name, where)


def load_item(
    item: BatchItem, reader: IsolatedReader | None = None, notes: list[str] | None = None
) -> Any:
    """The MedImage of an item (with the batch's ``modality`` for formats that carry none).

    A DICOM series is read with its ``series_uid``: ``UID:N`` for one stack of a series that
    holds several (echoes), ``UID:all`` for its time points or cardiac phases as one image over
    time (:func:`medsr.batch.discover.discover`). With ``reader`` the input is decoded in its
    child process, under its time limit; without, in this process (one item at a time: its
    warnings are caught with :func:`warnings.catch_warnings`).

    The reader's warnings (a localizer left out, a questionable header value) are appended to
    ``notes``, naming the files and folder the user gave (not the links the series is read
    from), for the report; nothing is printed.
    """
    from medsr.io import load_image
    from medsr.io.isolated import noting
    from medsr.pipeline import set_modality

    said: list[str] = []

    def load(path: Path | str, **options: Any) -> Any:
        if reader is None:
            return noting(lambda: load_image(path, **options), said)
        return reader.read(path, item.label, options=options, notes=said)[0]

    if item.kind == "dicom-series":
        choice = {"series_uid": item.series_uid} if item.series_uid else {}
        with _series_folder(item) as (folder, links):
            try:
                image = load(folder, **choice)
            except MedSRError as exc:  # it names the link ('3_a.dcm'): name the file instead
                exc.args = (_real_names(str(exc), folder, links, item),)
                raise
            finally:
                said = [_real_names(n, folder, links, item) for n in said]
                if notes is not None:
                    notes += said
        meta = dict(image.meta)  # name the real files, not the links
        meta["source_paths"] = [links.get(str(p), str(p)) for p in meta.get("source_paths") or []]
        image = image.replace(meta=meta)
    else:
        try:
            image = load(item.paths[0])
        finally:
            if notes is not None:
                notes += said
    return set_modality(image, item.extra.get("modality"))


def read_item(
    item: BatchItem,
    expect: dict[str, Any] | None = None,
    reader: IsolatedReader | None = None,
    scale: int | None = None,
) -> Loaded | ItemResult:
    """Checksum the input; an up-to-date item is skipped, otherwise its image is read (by
    ``reader``, in a child process under a time limit, when given). With ``scale``, an image
    whose output would be past the pixel ceiling or its format's axis limit fails here
    (:func:`medsr.io.limits.check_output_size`), before a forward pass shared across items
    allocates it."""
    t0 = time.perf_counter()
    sha = None
    notes: list[str] = []
    try:
        sha = input_digest(item.paths)
        if (
            expect is not None
            and expect.get("input_sha256") == sha
            and item.output is not None
            and output_as_written(item.output, expect.get("output_files"))
            and (not item.extra.get("maps") or (Path(item.extra["maps"]) / "summary.json").exists())
        ):
            return ItemResult(
                item.key, item.label, item.kind, "skipped", item.output,
                time.perf_counter() - t0, UP_TO_DATE, sha,
            )  # fmt: skip
        image = load_item(item, reader, notes)
        if scale is not None:
            from medsr.io.limits import check_output_size

            nz, ny, nx = image.spatial_shape
            check_output_size(image, (nz, ny * scale, nx * scale), item.output)
    except Exception as exc:  # the reader may have said something before (a localizer)
        return failed(item, exc, time.perf_counter() - t0, sha, notes)
    dt = time.perf_counter() - t0
    return Loaded(item, image, sha, dt, {"read": dt}, notes=notes)


def safeguard(loaded: Loaded, upscaler: Any, consistency: str = "auto", output: Any = None) -> None:
    """Upscale ``loaded.image`` with safeguards and provenance (in place).

    ``output``: the model's plain output when a shared forward pass already computed it (then
    no uncertainty maps: they need the model under test-time augmentation).
    """
    from medsr.pipeline import upscale_with_safeguards

    maps = bool(loaded.item.extra.get("maps"))
    sr, summary = upscale_with_safeguards(
        loaded.image, upscaler.scale, upscaler, consistency=consistency, maps=maps,
        degradation=loaded.item.extra.get("degradation"),
        tta=maps and output is None, warn=False, output=output,
        batch_size=upscaler.batch_size, clip=upscaler.clip, tile=upscaler.tile,
        ensemble=bool(loaded.item.extra.get("ensemble")),
    )  # fmt: skip
    loaded.image, loaded.summary = sr, summary


def upscale_loaded(loaded: Loaded, upscaler: Any, consistency: str = "auto") -> Loaded | ItemResult:
    t0 = time.perf_counter()
    try:
        safeguard(loaded, upscaler, consistency)
    except Exception as exc:
        return loaded.failure(exc, time.perf_counter() - t0)
    dt = time.perf_counter() - t0
    loaded.seconds += dt
    loaded.timings["model"] = dt
    return loaded


def write_item(loaded: Loaded) -> ItemResult:
    """Write the upscaled image atomically (replacing a stale output of an earlier run), and its
    maps when the item has a maps folder."""
    from medsr.io import format_for_output
    from medsr.pipeline import save_safeguarded

    item = loaded.item
    t0 = time.perf_counter()
    try:
        assert item.output is not None  # planned items always have one
        dtype = item.extra.get("output_dtype")
        nifti = format_for_output(item.output) == "nifti"
        save_safeguarded(
            loaded.image, item.output, summary=loaded.summary,
            maps_dir=item.extra.get("maps") or None, overwrite=True,
            **({"dtype": dtype} if dtype and nifti else {}),  # NIfTI items only (formats mix)
        )  # fmt: skip
    except Exception as exc:
        return loaded.failure(exc, time.perf_counter() - t0)
    seconds = loaded.seconds + time.perf_counter() - t0
    return ItemResult(
        item.key, item.label, item.kind, "ok", item.output, seconds, "", loaded.input_sha256,
        warnings=said_of(item, loaded.notes, loaded.summary),
        output_files=output_manifest(item.output),  # what resume checks
        trust=trust_columns(loaded.summary),
    )  # fmt: skip


def process_item(
    item: BatchItem,
    upscaler: Any,
    expect: dict[str, Any] | None = None,
    consistency: str = "auto",
    reader: IsolatedReader | None = None,
) -> ItemResult:
    """Read (with ``reader``, when given), upscale (with safeguards) and write one item; never
    raises."""
    if not item.runnable:
        return skipped_result(item)
    step: Loaded | ItemResult = read_item(item, expect, reader, upscaler.scale)
    if isinstance(step, ItemResult):
        return step
    step = upscale_loaded(step, upscaler, consistency)
    if isinstance(step, ItemResult):
        return step
    return write_item(step)
