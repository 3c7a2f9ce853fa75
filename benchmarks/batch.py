"""Batch throughput: items/s of ``medsr batch`` for ``--workers 1`` vs ``2`` and the Ray engine.

Builds a folder of corpus-derived inputs (CT_small and MR_small DICOM copies with their own
UIDs, NIfTI volumes from the emri_small frames, PNG crops of the JPEG-lossless ultrasound
frame; ``--items`` in all, a quarter each), then times ``run_batch`` end to end (discovery,
checksums, read ‖ model ‖ write, report) for each configuration into a fresh output folder:

* ``local`` engine with 1 and 2 reader/writer threads, and with 2 and one intra-op torch thread
  for the model (``--threads 1``, what each Ray actor gets);
* ``ray`` engine, 2 actors: *cold* (the command starts a private local Ray and stops it:
  what ``medsr batch --engine ray`` costs on one machine) and *warm* (Ray already running, as
  with ``--address auto`` on a cluster).

Models: ``bicubic`` (I/O-bound) and a randomly initialised ``rlfn`` (a learned network, timed
only). Writes ``benchmarks/results/batch.json`` and ``batch.md`` with the machine and its load.

    .venv/bin/python benchmarks/batch.py [--items 40] [--repeats 2] [--no-ray]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import machine

RESULTS = Path(__file__).parent / "results"


def build_inputs(root: Path, n: int) -> dict[str, int]:
    """``n`` corpus-derived items under ``root`` (a quarter each of CT, MR, NIfTI, US PNG)."""
    import nibabel as nib
    import pydicom
    from PIL import Image
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    from medsr.io import load_image

    rng = np.random.default_rng(0)
    per = [n // 4 + (1 if i < n % 4 else 0) for i in range(4)]
    for name, count, sub in (("CT_small.dcm", per[0], "ct"), ("MR_small.dcm", per[1], "mr")):
        src = pydicom.dcmread(get_testdata_file(name))
        for i in range(count):
            ds = src.copy()
            ds.StudyInstanceUID = generate_uid(entropy_srcs=[name, "study", str(i)])
            ds.SeriesInstanceUID = generate_uid(entropy_srcs=[name, "series", str(i)])
            ds.SOPInstanceUID = generate_uid(entropy_srcs=[name, "sop", str(i)])
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            folder = root / sub / f"patient{i:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            ds.save_as(folder / name, enforce_file_format=True)
    emri = load_image(get_testdata_file("emri_small.dcm")).array  # (10, 64, 64)
    (root / "nifti").mkdir(parents=True, exist_ok=True)
    for i in range(per[2]):
        vol = emri + rng.normal(0, 1, emri.shape).astype(np.float32)
        nib.save(
            nib.Nifti1Image(vol.transpose(2, 1, 0), np.diag([0.9, 0.9, 5.0, 1.0])),
            root / "nifti" / f"vol{i:02d}.nii.gz",
        )
    us = load_image(get_testdata_file("JPGLosslessP14SV1_1s_1f_8b.dcm")).array[0]  # (768, 1024)
    (root / "us").mkdir(parents=True, exist_ok=True)
    for i in range(per[3]):
        y, x = 64 + 16 * i, 128 + 16 * i
        crop = np.clip(us[y : y + 256, x : x + 320], 0, 255).astype(np.uint8)
        Image.fromarray(crop).save(root / "us" / f"frame{i:02d}.png")
    return {"ct_dicom": per[0], "mr_dicom": per[1], "nifti": per[2], "us_png": per[3]}


def time_run(inputs: Path, out: Path, **kwargs) -> dict[str, float]:
    from medsr.batch import run_batch

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    summary = run_batch(inputs, out, **kwargs)
    wall = time.perf_counter() - t0
    if summary.counts.get("failed"):
        raise SystemExit(f"benchmark items failed: {summary.counts}")
    return {
        "seconds": wall,
        "items": summary.counts["ok"],
        "items_per_s": summary.counts["ok"] / wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--items", type=int, default=40)
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs per configuration (bicubic); the median is kept",
    )
    ap.add_argument(
        "--learned-repeats",
        type=int,
        default=1,
        help="runs per configuration for the learned model",
    )
    ap.add_argument("--models", default="bicubic,rlfn")
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()

    import torch

    from medsr.batch.ray_engine import ray_available
    from medsr.models.registry import create_model
    from medsr.models.weights import save_model

    work = Path(tempfile.mkdtemp(prefix="medsr-batch-bench-"))
    try:
        inputs = work / "in"
        mix = build_inputs(inputs, args.items)
        models: dict[str, str] = {}
        for name in args.models.split(","):
            if name == "rlfn":
                torch.manual_seed(0)
                card = {
                    "architecture": "rlfn",
                    "kwargs": {
                        "scale": 2,
                        "num_features": 46,
                        "num_blocks": 4,
                        "global_residual": True,
                    },
                    "scale": 2,
                }
                models[name] = str(
                    save_model(
                        create_model("rlfn", **card["kwargs"]), work / "rlfn.safetensors", card
                    )
                )
            else:
                models[name] = name
        configs: list[tuple[str, dict]] = [
            ("local, --workers 1", {"engine": "local", "workers": 1}),
            ("local, --workers 2", {"engine": "local", "workers": 2}),
            # the model stage with one intra-op thread, as each Ray actor has (num_cpus=1)
            ("local, --workers 2 --threads 1", {"engine": "local", "workers": 2, "threads": 1}),
        ]
        use_ray = ray_available() and not args.no_ray
        if use_ray:
            configs.append(("ray, 2 actors, cold (starts Ray)", {"engine": "ray", "workers": 2}))
            configs.append(
                (
                    "ray, 2 actors, warm (Ray running)",
                    {"engine": "ray", "workers": 2, "_warm": True},
                )
            )
        rows = []
        for label, model in models.items():
            for name, cfg in configs:
                cfg = dict(cfg)
                warm = cfg.pop("_warm", False)
                if warm:
                    import ray

                    ray.init(
                        num_cpus=2,
                        include_dashboard=False,
                        _node_ip_address="127.0.0.1",
                        log_to_driver=False,
                        logging_level="ERROR",
                    )
                runs = []
                repeats = args.repeats if label == "bicubic" else args.learned_repeats
                try:
                    for r in range(repeats):
                        runs.append(
                            time_run(
                                inputs, work / f"out-{r}", model=model, scale=2, device="cpu", **cfg
                            )
                        )
                finally:
                    if warm:
                        ray.shutdown()
                med = statistics.median(x["items_per_s"] for x in runs)
                rows.append(
                    {
                        "model": label,
                        "config": name,
                        "items": runs[0]["items"],
                        "seconds": [round(x["seconds"], 2) for x in runs],
                        "items_per_s": round(med, 2),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
        load = os.getloadavg()
        result = {
            "machine": machine(),
            "load_average": [round(v, 2) for v in load],
            "inputs": mix,
            "scale": 2,
            "device": "cpu",
            "repeats": {"bicubic": args.repeats, "learned": args.learned_repeats},
            "ray": use_ray,
            "rows": rows,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "batch.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"`medsr batch` end to end (discovery, checksums, read ‖ model ‖ write, report) on {args.items} "
        f"corpus-derived items ({mix['ct_dicom']} CT DICOM 128², {mix['mr_dicom']} MR DICOM 64², "
        f"{mix['nifti']} NIfTI 64²×10, {mix['us_png']} US PNG 256×320), ×2 on CPU. "
        f"Machine: {result['machine']}; load average {', '.join(map(str, result['load_average']))} "
        f"(shared machine: the numbers move with the load). Median of {args.repeats} runs for bicubic, "
        f"{args.learned_repeats} for `rlfn` (the default-x2 architecture, 46 features × 4 blocks, with "
        "random weights: speed only). The local engine's model uses torch's default intra-op "
        f"threads ({torch.get_num_threads()}) unless `--threads 1`; each Ray actor reserves 1 CPU "
        "and uses 1 thread. *cold*: the command starts and stops a private Ray; *warm*: Ray already "
        "running (actors still start per run).",
        "",
        "| model | engine / workers | items | seconds per run | items / s |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        secs = ", ".join(f"{s:.2f}" for s in r["seconds"])
        lines.append(
            f"| {r['model']} | {r['config']} | {r['items']} | {secs} | {r['items_per_s']:.2f} |"
        )
    (RESULTS / "batch.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
