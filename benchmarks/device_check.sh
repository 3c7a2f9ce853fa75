#!/usr/bin/env bash
# The GPU check, one command, about 5 minutes on an H100/H200:
#
#   bash benchmarks/device_check.sh                       # results in $OUT (default benchmarks/results/device)
#   DEVICE=cpu QUICK=1 SLOW=8 BUDGET=2400 bash benchmarks/device_check.sh   # CPU fallback: checks this script
#
# 1. the environment (GPU, torch, CUDA, bf16 support)             -> environment.txt
# 2. the CUDA-only tests (pytest -m gpu, in the files that mark them) -> gpu_tests.txt
# 3. benchmarks/speed.py --device cuda: medsr's forward pass of default-x2 and fast-x2, every model
#    at 256² before 512²: as trained vs widened to tensor-core channel counts, NCHW vs channels-last,
#    bf16/fp16 at batch 64, torch.compile, bf16 at batch 256/16/1, fp32, the bare network:
#    slices/s and the fraction of the GPU's dense bf16 peak     -> speed_cuda.json/.md
# 4. benchmarks/precision.py --device cuda: HU/PSNR change of bf16, fp16 and TF32  -> precision.json/.md
# 5. benchmarks/speed.py --sections e2e: upscale_file on the 512x512x9 CT on the GPU -> speed_e2e.json/.md
#
# Needs a Python with torch ($PYTHON, else python3/python on PATH) and no network. When medsr's
# dependencies are not importable it makes a venv with --system-site-packages ($VENV) and tries
# `pip install -e .` (offline that may fail: then what can run, runs). Each step has a time limit
# (BUDGET seconds in all, default 290) and keeps what it measured when the limit ends it.
#
# On a machine with no network and without medsr's dependencies (session 7's H200): carry the
# wheels of pydicom, nibabel, monai, isal and pylibjpeg(-libjpeg/-openjpeg/-rle) for its Python,
# install them with `pip install --no-index --no-deps --target /tmp/site`, PYTHONPATH=/tmp/site,
# and copy the corpus DICOM files the benchmarks read (bad_sequence.dcm, explicit_VR-UN.dcm,
# MR-SIEMENS-DICOM-WithOverlays.dcm, emri_small.dcm; scripts/pack_corpus.py collects them) into
# pydicom's data/test_files folder there.
set -u
cd "$(dirname "$0")/.." || exit 1
REPO=$(pwd)
OUT=${OUT:-$REPO/benchmarks/results/device}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
BUDGET=${BUDGET:-290}
SLOW=${SLOW:-1}  # multiplies every step's limit (e.g. SLOW=8 BUDGET=2400 for the CPU fallback on 2 cores)
# which steps (default all): e.g. STEPS=speed,e2e first with the GPU to itself, then
# STEPS=tests,precision beside a training run (neither is timed); results append in $OUT
STEPS=${STEPS:-env,tests,speed,precision,e2e}
want() { [[ ",$STEPS," == *",$1,"* ]]; }
mkdir -p "$OUT"
exec > >(tee -a "$OUT/device_check.log") 2>&1
START=$(date +%s)

left() { echo $((BUDGET - ($(date +%s) - START))); }

# run NAME SECONDS CMD...: CMD with a limit of min(SECONDS, time left); never stops the script
run() {
    local name=$1 limit=$(($2 * SLOW))
    shift 2
    local rest
    rest=$(left)
    [ "$rest" -lt "$limit" ] && limit=$rest
    if [ "$limit" -le 5 ]; then
        echo "== $name: skipped (time budget spent)"
        return 0
    fi
    echo "== $name (limit ${limit}s): $*"
    local t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@"
    local rc=$?
    echo "== $name: exit $rc after $(($(date +%s) - t0))s$([ $rc -eq 124 ] && echo ' (time limit: partial results)')"
    return 0
}

# ---------------------------------------------------------------- a Python with torch
PY=""
for cand in "${PYTHON:-}" python3 python; do
    if [ -n "$cand" ] && command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import torch" >/dev/null 2>&1; then
        PY=$(command -v "$cand")
        break
    fi
done
if [ -z "$PY" ]; then
    echo "no Python with torch found (set PYTHON=...)"
    exit 1
fi
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONWARNINGS=ignore
NEEDED="import medsr.pipeline, nibabel, pydicom, safetensors, monai, pytest"
if ! "$PY" -c "$NEEDED" >/dev/null 2>&1; then
    VENV=${VENV:-/tmp/medsr-device-venv}
    echo "== medsr's dependencies are missing for $PY: venv $VENV (--system-site-packages) + pip install -e ."
    "$PY" -m venv --system-site-packages "$VENV" \
        && { "$VENV/bin/python" -m pip install -q -e "$REPO[corpus]" \
            || "$VENV/bin/python" -m pip install -q -e "$REPO" \
            || "$VENV/bin/python" -m pip install -q --no-deps -e "$REPO"; } \
        && PY=$VENV/bin/python
fi

# ---------------------------------------------------------------- 1. environment
want env && "$PY" - <<'EOF' | tee "$OUT/environment.txt"
import importlib, os, platform, sys
import torch
print(f"python {platform.python_version()} at {sys.executable}; torch {torch.__version__}; CUDA {torch.version.cuda}")
print(f"cpu: {os.cpu_count()} cores")
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}, "
              f"bf16 native {torch.cuda.is_bf16_supported(including_emulation=False)}")
else:
    print("no CUDA device")
missing = [m for m in ("medsr", "nibabel", "pydicom", "safetensors", "monai", "pytest", "data_store", "lightning")
           if importlib.util.find_spec(m) is None]
print("missing modules:", ", ".join(missing) or "none")
EOF
want env && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv \
    | tee -a "$OUT/environment.txt"

# ---------------------------------------------------------------- 2. CUDA-only tests
mapfile -t GPU_TESTS < <(grep -rlE "mark\.gpu" tests --include='test_*.py' | sort)
want tests && run "CUDA-only tests (${#GPU_TESTS[@]} files)" 90 \
    "$PY" -m pytest -q -rs -m gpu -p no:cacheprovider --continue-on-collection-errors "${GPU_TESTS[@]}" \
    > >(tee "$OUT/gpu_tests.txt") 2>&1

# ---------------------------------------------------------------- 3-5. benchmarks
if [ "$QUICK" = 1 ]; then
    SPEED=(--quick --models fast-x2 --repeats 1 --no-compile)
    PREC=(--quick)
    E2E=(--quick)
else
    # session 7 on an H200: 10 repeats and a 100-s budget reached only default-x2's rows, and
    # 25 s only fast-x2's end-to-end rows: 5 repeats, 150 s, and 60 s for end to end
    SPEED=(--models default-x2,fast-x2 --repeats 5 --time-budget 150)
    PREC=(--models fast-x2,default-x2 --repeats 3)
    E2E=(--e2e-models fast-x2,default-x2 --repeats 2)
fi
want speed && run "speed, network ($DEVICE)" 170 "$PY" benchmarks/speed.py --device "$DEVICE" --sections network \
    --out "$OUT" "${SPEED[@]}"
want precision && run "precision ($DEVICE)" 30 "$PY" benchmarks/precision.py --device "$DEVICE" --out "$OUT" "${PREC[@]}"
want e2e && run "end to end ($DEVICE)" 60 "$PY" benchmarks/speed.py --device "$DEVICE" --sections e2e --e2e-inputs NIfTI \
    --precisions fp32,auto --no-maps --no-process --label "$DEVICE" --out "$OUT" "${E2E[@]}"

echo "== done in $(($(date +%s) - START))s; results in $OUT:"
ls -l "$OUT"
for f in speed_cuda.md speed.md precision.md speed_e2e.md; do
    [ -f "$OUT/$f" ] && { echo; echo "---- $f"; cat "$OUT/$f"; }
done
exit 0
