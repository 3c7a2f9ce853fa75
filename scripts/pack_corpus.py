"""Pack the corpus files that training recipes name into one portable folder.

A GPU or cluster machine often has no network and lacks the corpus' Python packages
(pydicom-data, dipy) and the ``make corpus`` cache. This copies every ``corpus:`` file that the
given recipes read (training and validation) into ``OUT/data`` and writes each recipe to
``OUT/<name>.yaml`` with those entries turned into paths (``modality`` and ``patient`` written
out, so the split and the physics stay the same). Volumes with ``max_slices`` are cut to the
slices training keeps and written as ``.nii.gz`` (a 512² head CT of 18 MB becomes ~5 MB); for
a volume normalised per image (``minmax``), the packed slices' own range then sets the
normalisation — the script prints how far it moved (``range kept``). Large uncompressed DICOM
files become ``.nii.gz`` too (the array as ``medsr.io.load_image`` reads it, modality written
out). Everything else is copied byte for byte. ::

    python scripts/pack_corpus.py configs/default-x2-fixed-esa-gpu.yaml --out .gpu
    # on the other machine, from the repository root:
    medsr train .gpu/default-x2-fixed-esa-gpu.yaml

Paths in the packed recipes are relative to the repository root (where ``medsr train`` runs).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import yaml

from medsr.io import save_image
from medsr.training.config import load_config
from medsr.training.data import CORPUS_FILES, read_source, resolve_corpus, subsample_slices

#: DICOM files larger than this are re-written as compressed NIfTI
BIG_BYTES = 2_000_000


def _safe(name: str) -> str:
    return name.replace("/", "__")


def _pack_entry(entry: dict, dest: Path, normalization: dict) -> dict:
    raw = str(entry["path"]).strip()
    if not raw.startswith("corpus:"):
        return entry
    name = raw[len("corpus:") :].strip()
    src = resolve_corpus(name)
    out = dict(entry)
    out["patient"] = entry.get("patient") or name
    modality = entry.get("modality") or CORPUS_FILES.get(name)
    big = src.stat().st_size > BIG_BYTES
    max_slices = entry.get("max_slices")
    if not big and max_slices is None and src.suffix.lower() != ".inv3":  # a copy reads the same
        target = dest / _safe(name)
        if not target.exists():
            shutil.copyfile(src, target)
        out["path"] = str(dest / target.name)
        if modality:
            out["modality"] = modality
        return out
    image = read_source(src, name)  # as training reads it
    modality = (modality or image.modality or "OT").upper()
    arr = image.array
    note = ""
    if max_slices is not None and arr.ndim == 3 and arr.shape[0] > max_slices:
        keep = subsample_slices(arr.shape[0], int(max_slices))
        sub = arr[keep]
        spec = normalization.get(modality) or normalization.get("default") or {}
        if spec.get("kind") == "minmax":
            full = float(np.nanmax(arr) - np.nanmin(arr))
            part = float(np.nanmax(sub) - np.nanmin(sub))
            note = f", range kept {part / full:.3f}"
        image = image.replace(array=np.ascontiguousarray(sub))
        out.pop("max_slices", None)
    target = dest / (_safe(Path(name).stem.removesuffix(".nii")) + ".nii.gz")
    if not target.exists():
        save_image(image, target)
    out["path"] = str(dest / target.name)
    out["modality"] = modality
    print(
        f"  {name}: {src.stat().st_size / 1e6:.1f} MB -> {target.stat().st_size / 1e6:.1f} MB{note}"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="folder inside the repository")
    args = ap.parse_args(argv)
    dest = args.out / "data"
    dest.mkdir(parents=True, exist_ok=True)
    for path in args.configs:
        cfg = load_config(path)  # validates the recipe first
        d = cfg.to_dict()
        norm = d.get("normalization") or {}
        print(f"{path}:")
        for key in ("files", "val_files"):
            entries = []
            for e in d["data"].get(key) or []:
                entries.append(_pack_entry(e if isinstance(e, dict) else {"path": e}, dest, norm))
            d["data"][key] = entries
        target = args.out / path.name
        target.write_text(yaml.safe_dump(d, sort_keys=False), encoding="utf-8")
        load_config(target)  # the packed recipe is valid too
        print(f"  -> {target}")
    total = sum(f.stat().st_size for f in dest.iterdir())
    print(f"{dest}: {total / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    from medsr.errors import MedSRError

    try:
        sys.exit(main())
    except MedSRError as exc:  # a bad recipe or a missing corpus file: one line, as the CLI
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
