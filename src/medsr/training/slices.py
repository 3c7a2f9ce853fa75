"""Training data for slice interpolation: volumes → triplets of consecutive slices.

:class:`SliceDataModule` is the ``task: slice-interpolation`` counterpart of
:class:`~medsr.training.data.SRDataModule` and shares its machinery: the same file entries
(``corpus:NAME``, files, folders; :func:`~medsr.training.data.resolve_entries`), the same
patient-wise split (``data.val_files`` or :func:`~medsr.training.data.split_by_patient` per
modality group, a 4-D file's frames staying together as one patient) and the same
reproducible per-epoch draw (:class:`~medsr.training.data.EpochSampler`: patch ``i`` of epoch
``e`` on rank ``r`` is a pure function of ``(seed, e, r, i)``).

1. **Read** each source with :func:`medsr.io.load_image` (``luminance=True``); a 4-D series
   gives one volume per frame; ``max_slices`` keeps a contiguous central slab of that many z
   slices. **Normalise** each volume on its own: the ``slices.percentiles`` of its finite
   values map to 0…1 (:func:`medsr.interpolation.core.volume_range`, what inference does).
2. **Stacks**: every axis in ``slices.axes`` along which a volume has at least 3 slices gives a
   stack (that axis first); stacks smaller than the patch are padded (reflect, or edge when too
   small to reflect).
3. **Training triplets** (``data.patches_per_epoch`` per epoch): a stack in proportion to its
   number of triplets, a middle slice ``i`` and a ``patch_size``² position uniformly; the
   triplet ``(i−1, i, i+1)`` is redrawn (up to 10 tries, then the busiest try) while the middle
   patch's standard deviation is below ``data.min_patch_std``. Augmentation (``data.augment``):
   reversed slice order (the task is symmetric), vertical and horizontal flips. Batches are
   ``{"cond": (N, 2, p, p), "target": (N, 1, p, p)}``.
4. **Validation**: for each validation volume and axis, ``data.val_slices_per_file`` triplets
   evenly spaced over the central 80 %, centre-cropped to at most ``data.val_max_size``²; the
   linear baseline (mean of the two neighbours) is scored once. Metrics: normalised units,
   ``data_range = 1``, border crop 2 px (:func:`~medsr.training.data.sr_metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medsr.errors import InvalidParameterError
from medsr.interpolation.core import axis_index, volume_range
from medsr.training.config import Config
from medsr.training.data import (
    EpochDataModule,
    Source,
    file_records,
    read_source,
    resolve_entries,
    sr_metrics,
    train_val_split,
)

__all__ = ["SliceDataModule", "SliceVolume", "TripletDataset", "load_slice_volumes"]

#: border crop of the validation metrics (pixels)
VAL_CROP = 2


@dataclass
class SliceVolume:
    """One normalised training volume (a 3-D file or one frame of a 4-D one)."""

    source: Source
    name: str
    modality: str
    group: str
    array: np.ndarray  # (Z, Y, X) float32, normalised to the volume's percentiles


def load_slice_volumes(src: Source, spec: dict[str, Any]) -> list[SliceVolume]:
    """Read ``src`` and normalise each 3-D volume in it with the percentile ``spec``."""
    from medsr.degradations.compose import modality_group

    image = read_source(src.path, src.name)
    modality = (src.modality or image.modality or "OT").upper()
    if image.channels == "time":
        frames = [(f"{src.name}[{t}]", image.array[t]) for t in range(image.array.shape[0])]
    elif image.channels:
        raise InvalidParameterError(f"'{src.name}': slice interpolation needs grayscale volumes")
    else:
        frames = [(src.name, image.array)]
    out = []
    for name, arr in frames:
        if src.max_slices is not None and arr.shape[0] > src.max_slices:
            z0 = (arr.shape[0] - src.max_slices) // 2
            arr = arr[z0 : z0 + src.max_slices]
        lo, hi = volume_range(arr, spec)
        norm = np.ascontiguousarray((arr - lo) / (hi - lo), dtype=np.float32)
        out.append(SliceVolume(src, name, modality, modality_group(modality), norm))
    return out


def _stacks(volumes: list[SliceVolume], axes: list[str], patch: int) -> list[np.ndarray]:
    stacks = []
    for v in volumes:
        for ax in axes:
            a = axis_index(ax)
            if v.array.shape[a] < 3:
                continue
            st = np.moveaxis(v.array, a, 0)
            ph, pw = max(0, patch - st.shape[1]), max(0, patch - st.shape[2])
            if ph or pw:
                if min(st.shape[1:]) > max(ph, pw):
                    st = np.pad(st, ((0, 0), (0, ph), (0, pw)), mode="reflect")
                else:
                    st = np.pad(st, ((0, 0), (0, ph), (0, pw)), mode="edge")
            stacks.append(np.ascontiguousarray(st))
    return stacks


class TripletDataset(Dataset):
    """Random ``(cond (2, p, p), target (1, p, p))`` triplets (module docstring, step 3)."""

    def __init__(
        self,
        stacks: list[np.ndarray],
        patch: int,
        *,
        seed: int = 0,
        min_std: float = 0.0,
        augment: bool = True,
        tries: int = 10,
    ) -> None:
        if not stacks:
            raise InvalidParameterError(
                "no training volume has 3 or more slices along the configured slices.axes"
            )
        self.stacks = stacks
        self.patch = int(patch)
        self.seed = int(seed)
        self.min_std = float(min_std)
        self.augment = bool(augment)
        self.tries = int(tries)
        w = np.array([s.shape[0] - 2 for s in stacks], dtype=float)
        self.p = w / w.sum()

    def __len__(self) -> int:  # nominal: keys come from EpochSampler
        return 1 << 30

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        st = self.stacks[int(rng.choice(len(self.stacks), p=self.p))]
        p = self.patch
        best, best_std = None, -1.0
        for _ in range(max(1, self.tries)):
            i = int(rng.integers(1, st.shape[0] - 1))
            y = int(rng.integers(0, st.shape[1] - p + 1))
            x = int(rng.integers(0, st.shape[2] - p + 1))
            trip = st[i - 1 : i + 2, y : y + p, x : x + p]
            sd = float(trip[1].std())
            if sd > best_std:
                best, best_std = trip, sd
            if sd >= self.min_std:
                break
        assert best is not None
        return best

    def __getitem__(self, key: Any) -> dict[str, torch.Tensor]:
        epoch, rank, i = key if isinstance(key, tuple) else (0, 0, int(key))
        rng = np.random.default_rng([self.seed, int(epoch), int(rank), int(i)])
        trip = self.draw(rng)
        if self.augment:
            if rng.random() < 0.5:
                trip = trip[::-1]  # reverse slice order: the task is symmetric
            if rng.random() < 0.5:
                trip = trip[:, :, ::-1]
            if rng.random() < 0.5:
                trip = trip[:, ::-1, :]
        t = torch.from_numpy(np.ascontiguousarray(trip, dtype=np.float32))
        return {"cond": t[0::2], "target": t[1:2]}


@dataclass
class SliceValItem:
    name: str
    cond: torch.Tensor  # (2, h, w)
    target: torch.Tensor  # (1, h, w)
    linear_psnr: float
    linear_ssim: float


class _ValDataset(Dataset):
    def __init__(self, items: list[SliceValItem]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        it = self.items[i]
        return {"cond": it.cond, "target": it.target, "linear_psnr": it.linear_psnr,
                "linear_ssim": it.linear_ssim, "index": i}  # fmt: skip


class SliceDataModule(EpochDataModule):
    """Triplets for training, fixed validation triplets (module docstring has the details)."""

    unit = "triplets"

    def __init__(self, config: Config) -> None:
        super().__init__()
        if config.task != "slice-interpolation" or config.slices is None:
            raise InvalidParameterError("SliceDataModule needs a task: slice-interpolation recipe")
        self.cfg = config
        self.slices = config.slices
        self.spec = config.slices.normalization()
        self._ready = False
        self.train_volumes: list[SliceVolume] = []
        self.val_volumes: list[SliceVolume] = []
        self.val_items: list[SliceValItem] = []
        self.unvalidated_groups: list[str] = []
        self.stacks: list[np.ndarray] = []

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        d = self.cfg.data
        self.train_volumes, self.val_volumes, self.unvalidated_groups = train_val_split(
            resolve_entries(d.files),
            resolve_entries(d.val_files),
            lambda src: load_slice_volumes(src, self.spec),
            d.val_fraction,
            d.seed,
            key=lambda v: (v.group, v.source.patient),
        )
        if not self.train_volumes:
            raise InvalidParameterError("no training volumes left after the validation split")
        self.stacks = _stacks(self.train_volumes, self.slices.axes, d.patch_size)
        self.val_items = self._make_val_items()
        self._ready = True

    def _make_val_items(self) -> list[SliceValItem]:
        d = self.cfg.data
        items = []
        for v in self.val_volumes:
            for ax in self.slices.axes:
                a = axis_index(ax)
                st = np.moveaxis(v.array, a, 0)
                n = st.shape[0]
                if n < 3:
                    continue
                centres = sorted(
                    {round(c) for c in np.linspace(max(1, 0.1 * (n - 1)), min(n - 2, 0.9 * (n - 1)), d.val_slices_per_file)}
                )  # fmt: skip
                h, w = st.shape[1:]
                ch, cw = min(h, d.val_max_size), min(w, d.val_max_size)
                if min(ch, cw) - 2 * VAL_CROP < 11:
                    continue  # too small to score SSIM
                y0, x0 = (h - ch) // 2, (w - cw) // 2
                for i in centres:
                    trip = np.ascontiguousarray(st[i - 1 : i + 2, y0 : y0 + ch, x0 : x0 + cw])
                    if float(trip[1].std()) < max(d.min_patch_std, 1e-6):
                        continue
                    lin = 0.5 * (trip[0] + trip[2])
                    lp, ls = sr_metrics(lin, trip[1], VAL_CROP)
                    t = torch.from_numpy(trip)
                    items.append(SliceValItem(f"{v.name}[{ax}={i}]", t[0::2], t[1:2], lp, ls))
        return items

    # ---------------------------------------------------------------- description (model card)
    def describe(self) -> dict[str, Any]:
        """What the model card records about the data (file names only, never paths)."""
        from medsr.safeguards.ood import intensity_stats

        self.setup()
        modalities = sorted({v.modality for v in [*self.train_volumes, *self.val_volumes]})
        by_modality: dict[str, list[np.ndarray]] = {}
        for v in self.train_volumes:
            by_modality.setdefault(v.modality, []).extend(list(v.array))
        return {
            "train_files": list(dict.fromkeys(v.source.name for v in self.train_volumes)),
            "val_files": list(dict.fromkeys(v.source.name for v in self.val_volumes)),
            "files": file_records(
                [v.source for v in self.train_volumes], [v.source for v in self.val_volumes]
            ),
            "train_volumes": [v.name for v in self.train_volumes],
            "modalities": modalities,
            "axes": list(self.slices.axes),
            "patch_size": self.cfg.data.patch_size,
            "patches_per_epoch": self.cfg.data.patches_per_epoch,
            "triplets": int(sum(s.shape[0] - 2 for s in self.stacks)),
            "normalization": dict(self.spec),
            "training_stats": {m: intensity_stats(s) for m, s in sorted(by_modality.items())},
            "val_triplets": len(self.val_items),
            "unvalidated_groups": list(self.unvalidated_groups),
        }

    # ---------------------------------------------------------------- loaders
    def train_dataset(self) -> TripletDataset:
        self.setup()
        d = self.cfg.data
        return TripletDataset(
            self.stacks, d.patch_size, seed=d.seed, min_std=d.min_patch_std, augment=d.augment
        )

    def val_dataset(self) -> _ValDataset:
        return _ValDataset(self.val_items)
