"""Size, compute and CPU speed of every learned model at its default size.

For each registered learned model (1 channel, ×2, default width/depth) this measures

* parameters;
* GFLOPs to produce one 512×512 output from a 256×256 input, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` on the meta device. FlopCounterMode counts
  convolutions and matrix products only, **2 FLOPs per multiply-add** (so GMACs = GFLOPs / 2,
  the "Multi-Adds" most SR papers quote); activations, interpolation, pixel shuffle and
  element-wise additions are not counted;
* CPU milliseconds per slice (wall clock, batch 1, float32, ``torch.no_grad()``): median and
  minimum of ``--repeats`` timed runs after warm-up runs (repeated until the time stops
  dropping: the first runs pay for page faults and kernel selection), once with torch's default
  thread count for the machine and once with 1 thread. The 1-thread figure is the robust one on a
  shared machine: when other processes keep a core busy, torch's OpenMP threads wait for each
  other at every operator and multi-thread times can be many times too slow (the load average is
  recorded for that reason).

A model whose 256² single-thread run would take longer than ``--max-seconds`` is timed on a 128²
(or 64²) input and the times multiplied by the area ratio (4 or 16); the table says so. Conv
networks scale almost exactly with area, so this is accurate to a few percent.

The bicubic interpolator is included as the reference row. Run::

    .venv/bin/python benchmarks/models.py

It writes ``benchmarks/results/models.json`` and ``benchmarks/results/models.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from _machine import cpu_model
from torch.utils.flop_counter import FlopCounterMode

from medsr.models import create_model, list_models

SCALE = 2
OUT_SIZE = 512
IN_SIZE = OUT_SIZE // SCALE


def count_flops(name: str, size: int) -> int:
    with torch.device("meta"):
        model = create_model(name, scale=SCALE, in_channels=1)
        x = torch.empty(1, 1, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def time_once(model: torch.nn.Module, x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        model(x)
    return time.perf_counter() - t0


def warm_up(model: torch.nn.Module, x: torch.Tensor, max_runs: int = 8) -> float:
    """Run until the time stops dropping; returns the last (settled) time in seconds."""
    prev = time_once(model, x)
    for _ in range(max_runs - 1):
        cur = time_once(model, x)
        if cur > 0.85 * prev:
            return min(cur, prev)
        prev = cur
    return prev


def timed(
    model: torch.nn.Module, x: torch.Tensor, threads: int, repeats: int, factor: float
) -> dict:
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        warm_up(model, x)
        runs = [time_once(model, x) * 1e3 for _ in range(repeats)]
    finally:
        torch.set_num_threads(saved)
    return {
        "threads": threads,
        "ms_runs_timed_input": runs,
        "ms_per_slice": statistics.median(runs) * factor,
        "ms_per_slice_min": min(runs) * factor,
    }


def benchmark(name: str, repeats: int, max_seconds: float, threads: int) -> dict:
    torch.manual_seed(0)
    model = create_model(name, scale=SCALE, in_channels=1).eval()
    params = sum(p.numel() for p in model.parameters())
    flops = count_flops(name, IN_SIZE)
    # single-thread probe at 64² chooses the timed size
    torch.set_num_threads(1)
    est_256 = warm_up(model, torch.rand(1, 1, 64, 64)) * (IN_SIZE / 64) ** 2
    torch.set_num_threads(threads)
    size = IN_SIZE
    while size > 64 and est_256 * (size / IN_SIZE) ** 2 > max_seconds:
        size //= 2
    factor = (IN_SIZE / size) ** 2
    x = torch.rand(1, 1, size, size)
    configs = [timed(model, x, threads, repeats, factor)]
    if threads > 1:
        configs.append(timed(model, x, 1, repeats, factor))
    return {
        "model": name,
        "learned": bool(getattr(model, "learned", True)),
        "params": params,
        "gflops": flops / 1e9,
        "gmacs": flops / 2e9,
        "timed_input": size,
        "time_scale_factor": factor,
        "timings": configs,
    }


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_1min_at_start": os.getloadavg()[0],
    }


def markdown(results: list[dict], info: dict, repeats: int) -> str:
    n = info["torch_threads"]
    lines = [
        "# Model size, compute and CPU speed",
        "",
        f"Default size of each model, 1 channel, ×{SCALE}: one {IN_SIZE}² input slice → "
        f"{OUT_SIZE}² output, batch 1, float32, `torch.no_grad()`.",
        "",
        f"Machine: {info['cpu']}, {info['logical_cores']} logical cores, torch {info['torch']}, "
        f"Python {info['python']} ({info['date']}); 1-min load average "
        f"{info['load_average_1min_at_start']:.1f} at start, {info['load_average_1min_at_end']:.1f} "
        "at end (above 0 means other processes shared the CPU).",
        "",
        "GFLOPs from `torch.utils.flop_counter.FlopCounterMode`: convolutions and matrix products "
        "only, 2 FLOPs per multiply-add (GMACs = GFLOPs / 2). Times: wall-clock median (min) of "
        f"{repeats} runs after warm-up, with {n} torch threads (the machine's default) and with 1 "
        "thread. On a shared machine the multi-thread figure can be badly inflated (threads wait "
        "for each other at every operator while another process holds a core); the 1-thread "
        "figure is the robust one.",
        "",
        f"| model | params | GFLOPs | GMACs | ms / slice, {n} threads | ms / slice, 1 thread | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        note = "" if r["learned"] else "reference (interpolator)"
        if r["time_scale_factor"] != 1:
            note = f"timed at {r['timed_input']}² input, ×{r['time_scale_factor']:g} (area)"
        cells = [f"{t['ms_per_slice']:,.0f} ({t['ms_per_slice_min']:,.0f})" for t in r["timings"]]
        if len(cells) == 1:
            cells.append(cells[0])
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['gflops']:.1f} | {r['gmacs']:.1f} "
            f"| {cells[0]} | {cells[1]} | {note} |"
        )
    lines.append("")
    lines.append("Reproduce: `.venv/bin/python benchmarks/models.py`.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", help="model names (default: every learned model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=2.5,
        help="time a smaller input (and scale) when one single-thread 256² run would take longer",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    names = args.models or ["bicubic", *list_models(learned=True)]
    info = machine()
    threads = info["torch_threads"]
    results = []
    for name in names:
        r = benchmark(name, args.repeats, args.max_seconds, threads)
        times = ", ".join(f"{t['ms_per_slice']:.1f} ms @{t['threads']}T" for t in r["timings"])
        print(
            f"{name:12s} {r['params']:>11,d} params {r['gflops']:8.1f} GFLOPs  {times} "
            f"(timed at {r['timed_input']}²)",
            flush=True,
        )
        results.append(r)
    info["load_average_1min_at_end"] = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": info,
        "scale": SCALE,
        "input_size": IN_SIZE,
        "output_size": OUT_SIZE,
        "channels": 1,
        "flop_convention": "FlopCounterMode: conv/matmul only, 2 FLOPs per multiply-add",
        "results": results,
    }
    (args.out / "models.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / "models.md").write_text(markdown(results, info, args.repeats))
    print(f"wrote {args.out / 'models.json'} and {args.out / 'models.md'}")


if __name__ == "__main__":
    main()
