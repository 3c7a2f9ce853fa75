"""Speed benchmark: the network alone, and ``medsr upscale`` end to end with a per-stage breakdown.

One command re-measures every speed number of the README (CPU; about 30 min on 2 cores)::

    .venv/bin/python benchmarks/speed.py                  # network, e2e, volume and precision sections
    .venv/bin/python benchmarks/speed.py --device cuda    # GPU: fp32/bf16/fp16, channels-last, torch.compile, batches
    .venv/bin/python benchmarks/speed.py --quick          # a tiny run that checks the script (numbers meaningless)

Sections (``--sections``, comma-separated):

``network``
    the network alone on one 512² input slice, each configuration in its own process (its peak
    memory is its own): 1 and 2 threads, channels-last, bf16; ``medsr forward`` rows time what
    :class:`medsr.inference.planes.PlaneUpscaler` runs (network + base + low-band projection,
    bf16 for the learned residual only). On CUDA: fp32/bf16/fp16 × channels-last × batch
    1/16/64 and ``torch.compile``, at 256² and 512², with the fraction of the GPU's dense bf16
    peak FLOP/s (FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode``, 2 per
    multiply-add). → ``speed.json``/``.md`` (``speed_cuda.*`` on a GPU).
``e2e``
    ``medsr.pipeline.upscale_file`` in one process on a 512×512×9 CT (NIfTI, int16, from the
    corpus CT slices), a 9-slice DICOM series and one 2-D DICOM slice, with the time of every
    stage (read, setup, normalise, network, base/low-band, range clamp, peer, clip/padding,
    self-check, ood, consistency, maps, write; exclusive times, measured by wrapping those
    functions), and the
    whole ``medsr upscale`` process (imports included) with its peak memory.
    → ``speed_e2e.json``/``.md``; rows are kept per ``--label`` so before/after sit together.
``volume``
    the whole ``medsr upscale`` process on a 512×512×300 CT at ×2 with ``fast-x2``: wall time
    and peak memory (→ ``speed_e2e.*``).
``precision``
    ``benchmarks/precision.py``: HU and PSNR change of bf16 per shipped model (→ ``precision.*``).

``--src DIR`` runs the workers against another checkout's ``src`` (e.g. the code before a
change, with ``--label before``). Results go to ``benchmarks/results`` or ``--out`` (the device
check passes ``$OUT``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _machine import cpu_flags, cpu_model, cpu_short, flags_text, gpu_name, machine

RESULTS = Path(__file__).parent / "results"
SECTIONS = ("network", "e2e", "volume", "precision")
#: dense bf16 tensor-core peak, TFLOP/s (vendor datasheets, without sparsity)
PEAK_BF16_TFLOPS = {
    "H200": 989.4,
    "H100": 989.4,
    "GH200": 989.4,
    "A100": 312.0,
    "L40S": 362.1,
    "L4": 121.0,
    "A10": 125.0,
}
#: the end-to-end stages, in the order of the tables
STAGE_ORDER = (
    "read", "setup", "normalise", "network", "base/low-band", "range clamp", "peer", "clip/padding",
    "self-check (network)", "self-check", "ood", "consistency", "maps", "write", "other",
)  # fmt: skip
#: functions whose (exclusive) time is a stage: (module, attribute, stage); missing ones are
#: skipped, so the same list times the code before and after a change
STAGES = (
    ("medsr.io", "load_image", "read"),
    ("medsr.io", "save_image", "write"),
    ("medsr.pipeline", "write_maps", "maps"),
    ("medsr.pipeline", "check_options", "setup"),
    ("medsr.pipeline", "check_distribution", "ood"),
    ("medsr.pipeline", "detail_self_check", "self-check"),
    ("medsr.pipeline", "_shrink_detail", "self-check"),
    ("medsr.pipeline", "consistency_error", "consistency"),
    ("medsr.pipeline", "enforce_consistency", "consistency"),
    ("medsr.pipeline", "_error_stats", "consistency"),
    ("medsr.pipeline", "_ConsistencyTally.add", "consistency"),
    ("medsr.pipeline", "_ConsistencyTally.finish", "consistency"),
    ("medsr.intensity", "Normalizer.forward", "normalise"),
    ("medsr.intensity", "Normalizer.inverse", "normalise"),
    ("medsr.inference.planes", "PlaneUpscaler.prepare", "normalise"),
    ("medsr.inference.planes", "PlaneUpscaler.forward", "network"),
    ("medsr.inference.planes", "PlaneUpscaler._network", "network"),
    ("medsr.inference.planes", "PlaneUpscaler._base", "base/low-band"),
    ("medsr.inference.planes", "PlaneUpscaler._finish_planes", "clip/padding"),
    ("medsr.inference.planes", "PlaneUpscaler.finish", "clip/padding"),
    ("medsr.models.lowband", "keep_low_band", "base/low-band"),
    ("medsr.models.lowband", "project_low_band", "base/low-band"),
    # since session 19 (before, both counted in `other`): the overshoot clamp of each plane, and
    # the classical peer's pass the output is blended with when the self-check scaled the detail
    ("medsr.models.range_guard", "clamp_to_local_range", "range clamp"),
    ("medsr.models.range_guard", "low_band_drift", "range clamp"),
    ("medsr.inference.planes", "PlaneUpscaler._classical", "peer"),
)


# ====================================================================== inputs (corpus CT)
def ct_slices(size: int) -> list[np.ndarray]:
    """The corpus' 512² CT slices in HU (neck, pancreas, head with padding), cropped to ``size``."""
    from pydicom.data import get_testdata_file

    import medsr

    out = []
    for name in ("bad_sequence.dcm", "explicit_VR-UN.dcm", "J2K_pixelrep_mismatch.dcm"):
        arr = medsr.load_image(get_testdata_file(name)).array[0]
        if size < arr.shape[0]:
            o = (arr.shape[0] - size) // 2
            arr = arr[o : o + size, o : o + size]
        elif size > arr.shape[0]:
            arr = np.pad(arr, [(0, size - arr.shape[0])] * 2, mode="reflect")
        out.append(np.round(arr).astype(np.int16))
    return out


def ct_volume(slices: int, size: int) -> np.ndarray:
    """``(slices, size, size)`` int16 HU: the corpus slices in turn, each shifted a row further."""
    src = ct_slices(size)
    return np.stack([np.roll(src[k % len(src)], k // len(src), axis=0) for k in range(slices)])


def write_nifti_input(path: Path, vol: np.ndarray) -> Path:
    """An int16 NIfTI (0.7 × 0.7 × 1 mm), as CT volumes are usually stored."""
    import nibabel as nib

    img = nib.Nifti1Image(
        np.ascontiguousarray(vol.transpose(2, 1, 0)), np.diag([-0.7, -0.7, 1.0, 1.0])
    )
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))
    return path


def write_dicom_series(folder: Path, vol: np.ndarray) -> Path:
    """One uncompressed CT series (16-bit signed HU) with the header of the corpus' neck CT."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    src = pydicom.dcmread(get_testdata_file("bad_sequence.dcm"))
    series = generate_uid(entropy_srcs=["medsr-speed", "series", str(vol.shape)])
    for k, plane in enumerate(vol):
        ds = src.copy()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid(
            entropy_srcs=["medsr-speed", "sop", str(vol.shape), str(k)]
        )
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(k)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SliceThickness = 1.0
        ds.Rows, ds.Columns = plane.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = np.ascontiguousarray(plane, dtype="<i2").tobytes()
        for tag in ("PixelPaddingValue", "SmallestImagePixelValue", "LargestImagePixelValue"):
            if tag in ds:
                del ds[tag]
        ds.save_as(folder / f"{k:04d}.dcm", enforce_file_format=True)
    return folder


def build_inputs(
    work: Path, size: int, slices: int, volume_slices: int, sections: set[str]
) -> dict[str, Path]:
    """The benchmark's inputs under ``work`` (reused when present)."""
    from pydicom.data import get_testdata_file

    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    if "e2e" in sections:
        nii = work / f"ct_{size}x{size}x{slices}.nii.gz"
        if not nii.exists():
            write_nifti_input(nii, ct_volume(slices, size))
        out[f"NIfTI {size}²×{slices}"] = nii
        dcm = work / f"ct_{size}x{size}x{slices}_dicom"
        if not dcm.exists():
            write_dicom_series(dcm, ct_volume(slices, size))
        out[f"DICOM series {size}²×{slices}"] = dcm
        if size == 512:
            out["DICOM 2-D 512² (J2K)"] = Path(get_testdata_file("explicit_VR-UN.dcm"))
    if "volume" in sections:
        vol = work / f"ct_{size}x{size}x{volume_slices}.nii.gz"
        if not vol.exists():
            write_nifti_input(vol, ct_volume(volume_slices, size))
        out[f"NIfTI {size}²×{volume_slices}"] = vol
    return out


# ====================================================================== stage clock
class StageClock:
    """Exclusive time per stage: entering a stage pauses the one it is nested in.

    A ``network`` (or base) call inside the self-check counts as ``self-check (network)``;
    anything else inside it as ``self-check``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._stack: list[list[Any]] = []

    def reset(self) -> None:
        self.seconds.clear()
        self._stack.clear()

    def _label(self, stage: str) -> str:
        if any(s == "self-check" or s.startswith("self-check ") for s, _ in self._stack):
            return "self-check (network)" if stage == "network" else "self-check"
        return stage

    def wrap(self, fn: Any, stage: str) -> Any:
        clock = self

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            now = time.perf_counter()
            if clock._stack:
                top = clock._stack[-1]
                clock.seconds[top[0]] += now - top[1]
            clock._stack.append([clock._label(stage), now])
            try:
                return fn(*args, **kwargs)
            finally:
                end = time.perf_counter()
                label, start = clock._stack.pop()
                clock.seconds[label] += end - start
                if clock._stack:
                    clock._stack[-1][1] = end

        return timed

    def install(self) -> list[str]:
        """Wrap every function of :data:`STAGES` that exists; return the ones wrapped."""
        import importlib

        done = []
        for module, attr, stage in STAGES:
            try:
                owner: Any = importlib.import_module(module)
            except ImportError:
                continue
            *path, name = attr.split(".")
            for part in path:
                owner = getattr(owner, part, None)
            fn = getattr(owner, name, None) if owner is not None else None
            if fn is None or getattr(fn, "__wrapped__", None) is not None:
                continue
            setattr(owner, name, self.wrap(fn, stage))
            done.append(f"{module}.{attr}")
        return done


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ====================================================================== workers (own process)
def worker_e2e(cfg: dict[str, Any]) -> dict[str, Any]:
    """``upscale_file`` in this process: median total and per-stage times of ``repeats`` runs."""
    clock = StageClock()
    wrapped = clock.install()
    from medsr.pipeline import upscale_file

    out_dir = Path(cfg["out_dir"])
    src = Path(cfg["input"])
    target = out_dir / ("out" if src.is_dir() or src.suffix == ".dcm" else "out.nii.gz")
    maps = out_dir / "maps" if cfg.get("maps") else None
    kwargs: dict[str, Any] = dict(model=cfg["model"], scale=cfg["scale"], device=cfg["device"], overwrite=True,
                                  modality="CT", maps_dir=maps)  # fmt: skip
    if cfg["precision"] != "fp32":
        kwargs["precision"] = cfg["precision"]
    runs = []
    for r in range(cfg["repeats"] + 1):  # the first run warms up (lazy imports, allocator)
        _remove_outputs(out_dir)  # each run writes a new file, as a user's does (not timed)
        clock.reset()
        t0 = time.perf_counter()
        written = upscale_file(src, target, **kwargs)
        total = time.perf_counter() - t0
        if r:
            runs.append((total, dict(clock.seconds)))
    runs.sort(key=lambda t: t[0])
    total, stages = runs[len(runs) // 2]
    stages["other"] = max(0.0, total - sum(stages.values()))
    used = _precision_used(Path(written))
    return {"total_s": total, "stages_s": stages, "peak_mb": _peak_mb(), "precision_used": used,
            "all_totals_s": [t for t, _ in runs], "wrapped": len(wrapped)}  # fmt: skip


def _remove_outputs(out_dir: Path) -> None:
    """Delete the previous run's outputs: replacing a 30 MB file costs its deletion (about 13 ms
    on this host, 1.4 ms per slice of a 9-slice volume), which a user's new output does not."""
    import shutil

    for p in out_dir.glob("*"):
        if p.name == "maps" or p.name.startswith("out"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def _precision_used(written: Path) -> str | None:
    """The precision the output's provenance records (sidecar JSON or DICOM description)."""
    side = written.with_name(written.name.removesuffix(".gz").removesuffix(".nii") + ".json")
    try:
        meta = json.loads(side.read_text())
        for key in ("derivation", "provenance"):
            block = meta.get(key) or {}
            if "precision" in block:
                return str(block["precision"])
        return str(meta.get("precision")) if "precision" in meta else None
    except (OSError, ValueError):
        return None


def worker_network(cfg: dict[str, Any]) -> dict[str, Any]:
    """One network configuration (CPU): median time of ``repeats`` passes, FLOP/s, peak RSS."""
    import torch

    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    return _time_network(cfg)


def _make_runner(cfg: dict[str, Any]) -> tuple[Any, bool]:
    """``(run, widened)``: a function running one pass on the configured device, and whether the
    network it runs was widened (``RLFN.widened``; False where its widths were multiples already)."""
    import torch

    dev = torch.device(cfg["device"])
    x = torch.rand(cfg["batch"], 1, cfg["size"], cfg["size"], device=dev)
    if cfg["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    if cfg["path"] == "network":
        from medsr.inference.predictor import load_upscaler

        net, _ = load_upscaler(cfg["model"], cfg["scale"])
        net = net.to(dev).eval()
        plain = net
        if cfg.get("widened") and callable(getattr(net, "widened", None)):
            net = net.widened(8)
        widened = net is not plain
        if cfg["channels_last"]:
            net = net.to(memory_format=torch.channels_last)
        if cfg["compile"]:
            net = torch.compile(net)
        dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg["precision"]]

        def run() -> Any:
            with (
                torch.inference_mode(),
                torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None),
            ):
                return net(x)

    else:  # what medsr runs: PlaneUpscaler's forward on device tensors (base, residual, low band)
        from medsr.inference import planes
        from medsr.inference.planes import PlaneUpscaler

        # on CUDA, RLFN's 46 channels widened to 48 (the same function) or as trained
        planes.CUDA_CHANNEL_MULTIPLE = 8 if cfg.get("widened", True) else None
        up = PlaneUpscaler(
            cfg["model"], cfg["scale"], device=cfg["device"], precision=cfg["precision"]
        )
        widened = up.net is not up.loaded.net
        up.channels_last = bool(cfg["channels_last"])
        up.net = up.net.to(
            memory_format=torch.channels_last if cfg["channels_last"] else torch.contiguous_format
        )
        if cfg["compile"]:
            up.compile()

        def run() -> Any:
            with torch.inference_mode():
                return up.forward_tensor(x)[0]

    return run, widened


def _count_flops(cfg: dict[str, Any]) -> int:
    """FLOPs of one pass (2 per multiply-add), counted on the uncompiled configuration."""
    from torch.utils.flop_counter import FlopCounterMode

    run, _ = _make_runner(
        {**cfg, "compile": False, "widened": False}
    )  # the useful FLOPs, not the zero channels
    with FlopCounterMode(display=False) as fc:
        run()
    return int(fc.get_total_flops())


def _time_network(cfg: dict[str, Any]) -> dict[str, Any]:
    import torch

    cuda = cfg["device"].startswith("cuda")
    flops = _count_flops(cfg)
    run, widened = _make_runner(cfg)

    def once() -> None:
        run()
        if cuda:
            torch.cuda.synchronize()

    for _ in range(cfg.get("warmup", 1)):
        once()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(cfg["repeats"]):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _peak_mb()
    res = {"widened": widened, "ms_per_slice": 1000 * med / cfg["batch"], "slices_per_s": cfg["batch"] / med,
           "peak_mb": peak, "gflop_per_slice": flops / cfg["batch"] / 1e9, "gflops_per_s": flops / med / 1e9}  # fmt: skip
    if cuda and cfg.get("peak_tflops"):
        res["fraction_of_bf16_peak"] = flops / med / (cfg["peak_tflops"] * 1e12)
    return res


def worker_cuda_sweep(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Every GPU configuration of one model and size in one process (peak memory reset each);
    configurations left when ``deadline`` (epoch s) has passed are skipped."""
    import torch

    torch.backends.cudnn.benchmark = True
    rows = []
    for c in cfg["configs"]:
        if time.time() > cfg.get("deadline", float("inf")):
            rows.append({**c, "error": "skipped: time budget spent"})
            continue
        try:
            rows.append({**c, **_time_network(c)})
        except Exception as exc:  # one failing configuration (e.g. compile) does not end the sweep
            text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            rows.append({**c, "error": f"{type(exc).__name__}: {text}"})
        torch.cuda.empty_cache()
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


# ====================================================================== parent: run and report
def _run_worker(mode: str, cfg: dict[str, Any], src: str | None, timeout: float) -> Any:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if src:
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, __file__, "--worker", mode, json.dumps(cfg)], capture_output=True,
                          text=True, timeout=timeout, env=env)  # fmt: skip
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["no output"]
        return {"error": lines[-1][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _whole_process(argv: list[str], src: str | None, timeout: float) -> dict[str, Any]:
    """Wall time and peak RSS of one ``medsr`` process (``os.wait4`` gives its own rusage)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if src:
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "medsr.cli", *argv], stdout=subprocess.DEVNULL,
                                stderr=err, env=env)  # fmt: skip
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                return {"error": f"timed out after {timeout:.0f} s"}
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            lines = err.read().decode(errors="replace").strip().splitlines() or ["no output"]
            return {"error": lines[-1][:300]}
    return {"wall_s": wall, "peak_mb": usage.ru_maxrss / 1024}


def _slices_of(name: str) -> int:
    return int(name.rsplit("×", 1)[-1]) if "×" in name else 1


def section_network(args: argparse.Namespace) -> None:
    rows: list[dict[str, Any]] = []
    cuda = args.device.startswith("cuda")
    models = [m for m in args.models.split(",") if m]
    base = {
        "device": args.device,
        "compile": False,
        "threads": 0,
        "repeats": args.repeats,
        "warmup": 1,
    }
    if not cuda:
        for model in models:
            scale = _scale_of(model)
            cfgs = [
                {
                    "path": "network",
                    "precision": "fp32",
                    "channels_last": False,
                    "batch": 1,
                    "threads": 1,
                },
                {"path": "network", "precision": "fp32", "channels_last": False, "batch": 1},
                {"path": "network", "precision": "fp32", "channels_last": True, "batch": 1},
                {"path": "network", "precision": "bf16", "channels_last": True, "batch": 1},
                {"path": "medsr forward", "precision": "fp32", "channels_last": True, "batch": 1},
                {"path": "medsr forward", "precision": "bf16", "channels_last": True, "batch": 1},
            ]
            for c in cfgs:
                cfg = {**base, **c, "model": model, "scale": scale, "size": args.size}
                rows.append({**cfg, **_run_worker("network", cfg, args.src, 3600)})
                print(json.dumps(rows[-1]), flush=True)
        stem = "speed"
    else:
        peak = args.peak_tflops or next(
            (v for k, v in PEAK_BF16_TFLOPS.items() if k in (gpu_name() or "")), None
        )
        deadline = time.time() + args.time_budget if args.time_budget else float("inf")
        stem = "speed_cuda"
        for size in sorted(
            {256, args.size}
        ):  # every model at 256² first (a time budget may end the sweep)
            for model in models:
                common = {**base, "model": model, "scale": _scale_of(model), "size": size, "peak_tflops": peak,
                          "warmup": 3}  # fmt: skip
                # most telling first (a time budget may end the sweep): as trained vs widened to
                # tensor-core channel counts, the layouts, torch.compile, then batches and fp32
                fwd = {**common, "path": "medsr forward", "widened": True}
                configs = [
                    {
                        **fwd,
                        "precision": "bf16",
                        "channels_last": False,
                        "batch": 64,
                        "widened": False,
                    }
                ]
                configs += [
                    {**fwd, "precision": p, "channels_last": cl, "batch": 64}
                    for p in ("bf16", "fp16") for cl in (False, True)
                ]  # fmt: skip
                if not args.no_compile and size == 256:
                    configs.append(
                        {
                            **fwd,
                            "precision": "bf16",
                            "channels_last": True,
                            "batch": 64,
                            "compile": True,
                        }
                    )
                configs += [
                    {**fwd, "precision": "bf16", "channels_last": True, "batch": b}
                    for b in (256, 16, 1)
                ]
                configs += [
                    {**fwd, "precision": "fp32", "channels_last": cl, "batch": 64}
                    for cl in (False, True)
                ]
                configs.append(
                    {
                        **fwd,
                        "precision": "fp32",
                        "channels_last": False,
                        "batch": 64,
                        "widened": False,
                    }
                )
                configs.append({**common, "path": "network", "precision": "bf16", "channels_last": True, "batch": 64,
                                "widened": True})  # fmt: skip
                left = max(60.0, deadline - time.time()) if deadline != float("inf") else 3600
                got = _run_worker(
                    "cuda_sweep", {"configs": configs, "deadline": deadline}, args.src, left + 120
                )
                rows.extend(got if isinstance(got, list) else [{**configs[0], **got}])
                info = {
                    "machine": machine(load=True),
                    "cpu_flags": cpu_flags(),
                    "size": args.size,
                    "rows": rows,
                }
                _write(
                    args.out, stem, info, _network_md(info, cuda), quiet=True
                )  # partial results survive
    info = {
        "machine": machine(load=True),
        "cpu_flags": cpu_flags(),
        "size": args.size,
        "rows": rows,
    }
    _write(args.out, stem, info, _network_md(info, cuda))


def _scale_of(model: str) -> int:
    return int(m.group(1)) if (m := re.search(r"-x(\d+)", model)) else 2


def _network_md(info: dict[str, Any], cuda: bool) -> str:
    head = ["model", "path", "device", "precision", "channels_last", "compile", "batch", "size", "threads",
            "ms / slice", "slices / s", "GFLOP / slice", "GFLOP/s", "peak MB"]  # fmt: skip
    if cuda:
        head.insert(5, "widened")
        head.append("of bf16 peak")
    md = [
        f"Machine: {info['machine']}. Peak memory: process RSS on CPU, max allocated on GPU. "
        "`network`: the bare network (`bf16` = autocast of the whole network); `medsr forward`: what "
        "`medsr upscale` runs per plane batch (base interpolation + network + low-band projection; "
        "`bf16` = the learned residual only, base, add and projection in fp32). `widened`: RLFN's channel "
        "counts rounded up to multiples of 8 with zero channels (the same function; GFLOP counts the "
        "useful ones). fp32 on CUDA: "
        "torch's defaults (cuDNN convolutions may use TF32). GFLOP: "
        "`torch.utils.flop_counter.FlopCounterMode` (2 per multiply-add). threads 0 = torch default.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in info["rows"]:
        vals = [r["model"], r["path"], r["device"], r["precision"], str(r["channels_last"]), str(r["compile"]),
                str(r["batch"]), str(r["size"]), str(r.get("threads") or "default")]  # fmt: skip
        if cuda:
            vals.insert(5, str(bool(r.get("widened", False))))
        if "error" in r:
            vals += ["error", r["error"]] + [""] * (len(head) - len(vals) - 2)
        else:
            vals += [f"{r['ms_per_slice']:.2f}", f"{r['slices_per_s']:.1f}", f"{r['gflop_per_slice']:.1f}",
                     f"{r['gflops_per_s']:.0f}", f"{r['peak_mb']:.0f}"]  # fmt: skip
            if cuda:
                f = r.get("fraction_of_bf16_peak")
                vals.append(f"{100 * f:.1f} %" if f is not None else "")
        md.append("| " + " | ".join(vals) + " |")
    return "\n".join(md) + "\n"


def section_e2e(args: argparse.Namespace, inputs: dict[str, Path], volume: bool) -> None:
    path = args.out / "speed_e2e.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    kind = "volume" if volume else "e2e"
    rows: list[dict[str, Any]] = []
    models = [m for m in args.e2e_models.split(",") if m]
    precisions = [p for p in args.precisions.split(",") if p]
    with tempfile.TemporaryDirectory(prefix="medsr-speed-") as tmp:
        wanted = [w for w in args.e2e_inputs.split(",") if w]
        for name, src in inputs.items():
            is_volume = _slices_of(name) >= 100
            if is_volume != volume or (
                wanted and not volume and not any(w in name for w in wanted)
            ):
                continue
            for model in ["fast-x2"] if volume else models:
                for precision in precisions:
                    for maps in ([False] if volume else ([False, True] if model == models[0] and args.maps and
                                                        name.startswith("NIfTI") and precision == "fp32" else [False])):  # fmt: skip
                        row = {"label": args.label, "kind": kind, "input": name, "slices": _slices_of(name), "model": model,
                               "precision": precision, "maps": maps, "device": args.device,
                               "cpu": cpu_short()}  # fmt: skip
                        out_dir = Path(tmp) / f"{len(rows)}"
                        out_dir.mkdir()
                        if not volume:
                            cfg = {"input": str(src), "out_dir": str(out_dir), "model": model, "scale": 2,
                                   "precision": precision, "device": args.device, "repeats": args.repeats,
                                   "maps": maps}  # fmt: skip
                            row.update(_run_worker("e2e", cfg, args.src, 3600))
                        target = out_dir / (
                            "cli" if src.is_dir() or src.suffix == ".dcm" else "cli.nii.gz"
                        )
                        argv = ["upscale", str(src), str(target), "--model", model, "--modality", "CT",
                                "--device", args.device, "--overwrite"]  # fmt: skip
                        if precision != "fp32":
                            argv += ["--precision", precision]
                        if maps:
                            argv += ["--maps", str(out_dir / "cli_maps")]
                        walls = []
                        for _ in range(0 if args.no_process else 1 if volume else args.repeats):
                            got = _whole_process(argv, args.src, 3600)
                            if "error" in got:
                                row["process_error"] = got["error"]
                                break
                            walls.append(got)
                        if walls:
                            walls.sort(key=lambda g: g["wall_s"])
                            row["process_s"] = walls[len(walls) // 2]["wall_s"]
                            row["process_peak_mb"] = max(g["peak_mb"] for g in walls)
                        rows.append(row)
                        print(json.dumps(row), flush=True)

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            r.get(k) for k in ("label", "kind", "input", "model", "precision", "maps", "device")
        )

    new_keys = {key(r) for r in rows}  # a row measured again replaces the old one; others are kept
    keep = [r for r in old.get("rows", []) if key(r) not in new_keys]
    info = {
        "machine": machine(load=True),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "rows": keep + rows,
    }
    _write(args.out, "speed_e2e", info, _e2e_md(info))


def _e2e_md(info: dict[str, Any]) -> str:
    md = [
        f"End to end, `medsr upscale` of CT inputs at ×2 (`--modality CT`, defaults otherwise: "
        f"consistency auto, self-check on, no maps unless stated). Machine of the latest run: "
        f"{info['machine']}. The rows come from several machines: `CPU` names each row's (recorded "
        "since session 28; an earlier row's label or the README's speed section names its machine).",
        "",
        "*In process*: `medsr.pipeline.upscale_file` called in one Python process (median of the "
        "repeats after one warm-up; since session 13 each run writes a new output, where earlier runs "
        "replaced the previous one and paid for deleting it), per input slice, split into stages by timing the functions "
        "that do them (exclusive times: a stage nested in another is not counted twice). "
        "`network`: the model on the input; `self-check (network)`: the model one scale down "
        "(the detail self-check, 1/s² of the pixels); `overhead`: everything but the network "
        "passes, as a fraction of `network`. *Whole process*: `python -m medsr.cli upscale` from start "
        "to exit (imports, model loading and writing included), per slice, and its peak memory (RSS).",
        "",
    ]
    stages = [s for s in STAGE_ORDER if any(s in (r.get("stages_s") or {}) for r in info["rows"])]
    head = ["label", "CPU", "input", "model", "precision", "maps", "ms / slice", *stages, "overhead",
            "peak MB", "whole process ms / slice", "whole process peak MB"]  # fmt: skip
    md += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in info["rows"]:
        n = max(1, r["slices"])
        prec = r["precision"] + (
            f" → {r['precision_used']}"
            if r.get("precision_used") and r["precision_used"] != r["precision"]
            else ""
        )
        vals = [
            r["label"],
            r.get("cpu", ""),
            r["input"],
            r["model"],
            prec,
            "on" if r.get("maps") else "off",
        ]
        st = r.get("stages_s") or {}
        if "total_s" in r:
            net = st.get("network", 0.0) + st.get("self-check (network)", 0.0)
            over = (r["total_s"] - net) / st["network"] if st.get("network") else None
            vals += [f"{1000 * r['total_s'] / n:.0f}"] + [
                f"{1000 * st[s] / n:.1f}" if s in st else "" for s in stages
            ]
            vals += [f"{100 * over:.0f} %" if over is not None else "", f"{r['peak_mb']:.0f}"]
        else:
            vals += [r.get("error", "")] + [""] * (len(stages) + 2)
        if "process_s" in r:
            vals += [f"{1000 * r['process_s'] / n:.0f}", f"{r['process_peak_mb']:.0f}"]
        else:
            vals += [r.get("process_error", ""), ""]
        md.append("| " + " | ".join(vals) + " |")
    vols = [r for r in info["rows"] if r.get("kind") == "volume" and "process_s" in r]
    for r in vols:
        md += ["", f"* {r['label']}: {r['input']} with `{r['model']}` ({r['precision']}), whole process: "
               f"**{r['process_s']:.1f} s**, peak memory **{r['process_peak_mb'] / 1024:.2f} GB**."]  # fmt: skip
    return "\n".join(md) + "\n"


def _write(out: Path, stem: str, info: dict[str, Any], md: str, *, quiet: bool = False) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(info, indent=2) + "\n")
    (out / f"{stem}.md").write_text(md)
    if not quiet:
        print(md, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument(
        "--size", type=int, default=512, help="input plane size (network rows; e2e inputs)"
    )
    ap.add_argument("--slices", type=int, default=9, help="slices of the e2e NIfTI/DICOM volumes")
    ap.add_argument("--volume-slices", type=int, default=300)
    ap.add_argument(
        "--models",
        default=None,
        help="network rows (default: bicubic + every shipped in-plane model)",
    )
    ap.add_argument("--e2e-models", default="fast-x2,default-x2")
    ap.add_argument("--precisions", default="fp32,auto", help="e2e rows: fp32, bf16, auto")
    ap.add_argument(
        "--maps", action=argparse.BooleanOptionalAction, default=True, help="an e2e row with --maps"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--label", default="current", help="e2e rows are kept per label (e.g. before / after)"
    )
    ap.add_argument(
        "--src", default=None, help="PYTHONPATH for the workers (another checkout's src)"
    )
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("MEDSR_BENCH_OUT") or RESULTS))
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "medsr-speed-inputs")
    ap.add_argument(
        "--peak-tflops", type=float, default=None, help="GPU dense bf16 peak (default: by name)"
    )
    ap.add_argument("--no-compile", action="store_true", help="GPU: skip the torch.compile rows")
    ap.add_argument(
        "--time-budget", type=float, default=None, help="GPU sweep: seconds; later rows are skipped"
    )
    ap.add_argument(
        "--e2e-inputs",
        default="",
        help="e2e: only inputs whose name contains one of these (comma-separated)",
    )
    ap.add_argument(
        "--no-process", action="store_true", help="e2e: skip the whole-process (CLI) timings"
    )
    ap.add_argument(
        "--quick", action="store_true", help="tiny sizes and one repeat: checks the script"
    )
    ap.add_argument("--worker", nargs=2, metavar=("MODE", "JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        from medsr.inference.memory import retain_freed_memory

        retain_freed_memory()  # as the medsr command does (MEDSR_RETAIN_FREED_MEMORY=0: not)
        mode, cfg = args.worker[0], json.loads(args.worker[1])
        fn = {"e2e": worker_e2e, "network": worker_network, "cuda_sweep": worker_cuda_sweep}[mode]
        print(json.dumps(fn(cfg)))
        return
    if args.quick:
        args.size, args.slices, args.volume_slices, args.repeats = 64, 2, 100, 1
        args.models = args.models or "fast-x2"
        args.e2e_models = "fast-x2"
        args.work = args.work.with_name(args.work.name + "-quick")
    if args.models is None:
        from medsr.models.resolver import list_pretrained

        args.models = ",".join(["bicubic", *(m.name for m in list_pretrained(kind="in-plane"))])
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = sections - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    print(f"machine: {machine(load=True)}; flags: {flags_text()}", flush=True)
    inputs = build_inputs(args.work, args.size, args.slices, args.volume_slices, sections)
    if "network" in sections:
        section_network(args)
    if "e2e" in sections:
        section_e2e(args, inputs, volume=False)
    if "volume" in sections:
        section_e2e(args, inputs, volume=True)
    if "precision" in sections:
        import precision

        precision.run(args.out, quick=args.quick, device=args.device, src=args.src)


if __name__ == "__main__":
    main()
