"""Speed benchmark: slices/s and peak memory of whole-slice upscaling at 512² input.

For every shipped model (``medsr/weights``) plus bicubic, and on the CPU (fp32; channels_last;
batch sizes) and, when CUDA is present, on the GPU (fp32, bf16/fp16 autocast, channels_last,
``torch.compile``), each configuration runs in its own subprocess so its peak memory (RSS on CPU,
``torch.cuda.max_memory_allocated`` on GPU) is its own. Writes ``benchmarks/results/speed.json``
and ``speed.md``.

    .venv/bin/python benchmarks/speed.py [--size 512] [--models default-x2,fast-x2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from _machine import machine

RESULTS = Path(__file__).parent / "results"

WORKER = r"""
import json, resource, sys, time, torch
from medsr.inference.predictor import load_upscaler
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"]) if cfg["threads"] else None
dev = torch.device(cfg["device"])
if cfg.get("pipeline"):  # end to end: medsr.upscale on a CT-like MedImage (normalise, net, clip)
    import numpy as np
    import medsr
    from medsr.image import MedImage
    rng = np.random.default_rng(0)
    arr = rng.normal(40, 300, (cfg["batch"], cfg["size"], cfg["size"])).astype(np.float32)
    img = MedImage(arr, spacing=(1.0, 0.7, 0.7), modality="CT", units="HU")
    kw = dict(scale=cfg["scale"], model=cfg["model"], device=cfg["device"], precision=cfg["precision"],
              batch_size=cfg.get("plane_batch"))  # None: medsr.upscale's default for the device
    medsr.upscale(img, **kw)
    times = []
    for _ in range(cfg["repeats"]):
        t0 = time.perf_counter(); medsr.upscale(img, **kw); times.append(time.perf_counter() - t0)
    times.sort(); med = times[len(times) // 2]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res = {"ms_per_slice": 1000 * med / cfg["batch"], "slices_per_s": cfg["batch"] / med, "peak_mb": peak}
    if cfg["precision"] != "fp32":  # what the faster arithmetic changes, on a real CT slice (HU)
        from medsr.training.data import resolve_corpus
        ct = medsr.load_image(resolve_corpus("CT_small.dcm"))
        d = np.abs(medsr.upscale(ct, **kw).array - medsr.upscale(ct, **{**kw, "precision": "fp32"}).array)
        res.update(delta_max=float(d.max()), delta_rms=float(np.sqrt(np.mean(d**2))), delta_units="HU")
    print(json.dumps(res))
    sys.exit(0)
net, card = load_upscaler(cfg["model"], cfg["scale"])
net = net.to(dev).eval()
x = torch.rand(cfg["batch"], 1, cfg["size"], cfg["size"], device=dev)
if cfg["channels_last"]:
    net = net.to(memory_format=torch.channels_last); x = x.contiguous(memory_format=torch.channels_last)
if cfg["compile"]:
    net = torch.compile(net)
dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg["precision"]]
def run():
    with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
        y = net(x)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return y
from torch.utils.flop_counter import FlopCounterMode
with FlopCounterMode(display=False) as fc:  # FLOPs of one forward pass (2 per multiply-add)
    run()
flops = fc.get_total_flops()
times = []
for _ in range(cfg["repeats"]):
    t0 = time.perf_counter(); run(); times.append(time.perf_counter() - t0)
times.sort()
med = times[len(times) // 2]
peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"ms_per_slice": 1000 * med / cfg["batch"], "slices_per_s": cfg["batch"] / med, "peak_mb": peak,
                  "gflops_per_s": flops / med / 1e9}))
"""


def configs(models: list[str], size: int, repeats: int, pipeline_only: bool = False) -> list[dict]:
    import torch

    out = []
    for model in models:
        if pipeline_only:  # medsr.upscale's default path (plane batch: 1 on CPU) against batch 8
            for precision in ("fp32", "bf16"):
                for plane_batch in (None, 8):
                    out.append({"model": model, "device": "cpu", "precision": precision, "channels_last": True,
                                "compile": False, "batch": 8, "threads": 0, "pipeline": True,
                                "plane_batch": plane_batch})
            continue
        for threads in (1, 0):
            out.append({"model": model, "device": "cpu", "precision": "fp32", "channels_last": False,
                        "compile": False, "batch": 1, "threads": threads})
        for precision in ("fp32", "bf16"):  # bf16: AVX-512 BF16 / AMX CPUs
            out.append({"model": model, "device": "cpu", "precision": precision, "channels_last": True,
                        "compile": False, "batch": 1, "threads": 0})
        # end to end through medsr.upscale (what `medsr upscale` runs: channels_last on CPU,
        # normalisation, clipping): 8 slices of 512²
        for precision in ("fp32", "bf16"):
            out.append({"model": model, "device": "cpu", "precision": precision, "channels_last": True,
                        "compile": False, "batch": 8, "threads": 0, "pipeline": True})
        if torch.cuda.is_available():
            for precision in ("fp32", "bf16", "fp16"):
                for batch in (1, 16, 64):
                    out.append({"model": model, "device": "cuda", "precision": precision, "channels_last": True,
                                "compile": False, "batch": batch, "threads": 0})
            out.append({"model": model, "device": "cuda", "precision": "bf16", "channels_last": True,
                        "compile": True, "batch": 64, "threads": 0})
    for c in out:
        c.update(size=size, scale=int(c["model"].rsplit("x", 1)[-1]) if "-x" in c["model"] else 2, repeats=repeats)
    return out


def main() -> None:
    from medsr.models.resolver import list_pretrained

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--models", default=",".join(["bicubic", *(m.name for m in list_pretrained(kind="in-plane"))]))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pipeline-only", action="store_true",
                    help="only medsr.upscale rows, default plane batch vs 8; writes speed_pipeline.json/.md")
    args = ap.parse_args()
    stem = "speed_pipeline" if args.pipeline_only else "speed"
    rows = []
    for cfg in configs([m for m in args.models.split(",") if m], args.size, args.repeats, args.pipeline_only):
        proc = subprocess.run([sys.executable, "-c", WORKER, json.dumps(cfg)], capture_output=True, text=True,
                              timeout=1800, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if proc.returncode != 0:
            rows.append({**cfg, "error": proc.stderr.strip().splitlines()[-1][:200]})
        else:
            rows.append({**cfg, **json.loads(proc.stdout.strip().splitlines()[-1])})
        print(rows[-1], flush=True)
    load = os.getloadavg()[0]
    info = {"machine": machine(), "load_average_1min": load, "size": args.size, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(info, indent=2) + "\n")
    head = ["model", "path", "device", "precision", "channels_last", "compile", "batch", "plane batch", "threads", "ms / slice",
            "slices / s", "GFLOP/s", "peak MB", "max / rms change vs fp32"]
    md = [f"Upscaling one {args.size}² input slice. Machine: {info['machine']} (1-min load {load:.1f}; "
          "threads 0 = torch default). Peak memory: process RSS on CPU, max allocated on GPU. GFLOP/s: "
          "the network's FLOPs (torch FlopCounterMode, 2 per multiply-add) over its time. Change vs "
          "fp32: medsr.upscale of the corpus CT_small slice, in HU.", "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [r["model"], "medsr.upscale" if r.get("pipeline") else "network", r["device"], r["precision"], str(r["channels_last"]), str(r["compile"]), str(r["batch"]),
                str(r.get("plane_batch") or ("default" if r.get("pipeline") else "")), str(r["threads"] or "default")]
        gf = f"{r['gflops_per_s']:.1f}" if r.get("gflops_per_s") else ""
        delta = f"{r['delta_max']:.1f} / {r['delta_rms']:.2f} {r['delta_units']}" if "delta_max" in r else ""
        vals += ([f"{r['ms_per_slice']:.1f}", f"{r['slices_per_s']:.2f}", gf, f"{r['peak_mb']:.0f}", delta]
                 if "error" not in r else ["error", r["error"], "", "", ""])
        md.append("| " + " | ".join(vals) + " |")
    (RESULTS / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
