#!/usr/bin/env bash
# Train medsr's shipped models from configs/ (what `make train-defaults` runs).
#
#   stage      runs (side by side, one thread each on a 2-core CPU)                  budget each
#   default    default-x2 (stage 1) + default-x4                                        DEFAULT_TIME
#   stage2     default-x2-stage2 + default-x4-stage2 (warm restarts of stage 1)         STAGE2_TIME
#   stage3     default-x2-stage3 (a warm restart of the default-x2 in src/medsr/weights: STAGE3_TIME
#              with INSTALL=1 that is stage 2's; in a later session, the shipped one).
#              The same restart of default-x4 lowered its validation gain (0.85 → 0.80 dB),
#              so default-x4 ships stage 2.
#   fast       fast-x2 + fast-x4 (distilled from runs/shipped/default-x{2,4})          FAST_TIME
#   baselines  srcnn-x2 + residual5-x2, then vdsr-x2 + srresnet-x2 (seed baselines:
#              same data/degradations/loss/optimiser; srresnet-x2 is not shipped)    BASELINE_TIME
#   kspace     mr-kspace-x2 + mr-kspace-x4 (fine-tunes of the shipped defaults on MR k-space
#              truncation) -> default-x2-kspace, default-x4-kspace; not in STAGES by default
#              (STAGES=kspace scripts/train_defaults.sh)                                KSPACE_TIME
#   selfens    default-x2-selfens (default-x2 distilled from its own 8-pass self-ensemble;
#              warm-starts from the shipped default-x2); not in STAGES by default       SELFENS_TIME
#   kernels    default-x4-kernels + default-x4-kernels-2 (CT and radiographs plain bicubic with a
#              range of reconstruction kernels; warm-starts from the shipped default-x4; the
#              second stage's last checkpoint ships); not in STAGES by default          KERNELS_TIME
#   kspacefast mr-kspace-fast-x2 + mr-kspace-fast-x4 (the k-space recipe on the fast networks,
#              from the shipped fast-x2/x4), then mr-kspace-fast-x2-distill (fast-x2-kspace
#              distilled from default-x2-kspace's 8-pass self-ensemble, session 19) -> fast-x2-kspace,
#              fast-x4-kspace; not in STAGES by default                             KSPACE_FAST_TIME
#
# Stage 1, 2 and 3 runs end at their max_epochs (5,120 / 8,192 / 4,608 / 5,120 / 8,192 steps)
# unless the budget stops them first; about 3 h 30 min in all on 2 CPU cores.
#
# Resumable: re-running continues each run from runs/<name>/checkpoints/last.ckpt until its
# total wall-clock budget (Lightning's timer is saved in the checkpoint) and skips runs that are
# already exported. Budgets (HH:MM:SS, total per run) can be overridden, e.g. on a GPU:
#   DEFAULT_TIME=12:00:00 STAGE2_TIME=04:00:00 FAST_TIME=03:00:00 scripts/train_defaults.sh
# Each run exports runs/<name>/<name>.safetensors; what ships is copied to runs/shipped/ and,
# with INSTALL=1, into src/medsr/weights/.
set -euo pipefail
cd "$(dirname "$0")/.."
MEDSR=${MEDSR:-.venv/bin/medsr}
DEFAULT_TIME=${DEFAULT_TIME:-01:30:00}
DEFAULT_X4_TIME=${DEFAULT_X4_TIME:-$DEFAULT_TIME}
STAGE2_TIME=${STAGE2_TIME:-00:50:00}
STAGE3_TIME=${STAGE3_TIME:-01:25:00}
FAST_TIME=${FAST_TIME:-00:30:00}
BASELINE_TIME=${BASELINE_TIME:-00:15:00}
KSPACE_TIME=${KSPACE_TIME:-00:55:00}
SELFENS_TIME=${SELFENS_TIME:-01:00:00}
KERNELS_TIME=${KERNELS_TIME:-00:40:00}
KSPACE_FAST_TIME=${KSPACE_FAST_TIME:-01:00:00}
THREADS=${THREADS:-1}
STAGES=${STAGES:-"default stage2 stage3 fast baselines"}

run() {  # run NAME CONFIG BUDGET: train (or resume) and export
  local name=$1 config=$2 budget=$3 dir=runs/$1
  if [ -f "$dir/$name.safetensors" ]; then echo "[$name] already exported"; return 0; fi
  local resume=()
  [ -f "$dir/checkpoints/last.ckpt" ] && resume=(--resume "$dir/checkpoints/last.ckpt")
  echo "[$name] $(date +%T) training (budget $budget) ${resume[*]:-}"
  OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS \
    "$MEDSR" train "$config" --max-time "$budget" --out-dir "$dir" "${resume[@]}" >>"$dir.log" 2>&1
  # the EMA weights of the last step (the cosine schedule ends there)
  "$MEDSR" export "$dir/checkpoints/last.ckpt" "$dir/$name.safetensors" >>"$dir.log" 2>&1
  echo "[$name] $(date +%T) exported $dir/$name.safetensors"
}

ship() {  # ship RUN AS: runs/RUN/RUN.safetensors -> runs/shipped/AS.safetensors (+ package)
  mkdir -p runs/shipped
  cp "runs/$1/$1.safetensors" "runs/shipped/$2.safetensors"
  if [ "${INSTALL:-0}" = 1 ]; then
    cp "runs/shipped/$2.safetensors" src/medsr/weights/
    # the model card, readable without loading the weights
    "${MEDSR%/medsr}/python" -c 'import json, sys; from medsr.models.weights import read_card
print(json.dumps(read_card(sys.argv[1]), indent=2))' "src/medsr/weights/$2.safetensors" > "src/medsr/weights/$2.json"
  fi
  echo "[$2] shipped from $1"
}

pair() {  # two runs side by side; fails if either fails
  run "$1" "$2" "$3" &
  local first=$!
  run "$4" "$5" "$6" &
  local second=$!
  local status=0
  wait "$first" || status=1
  wait "$second" || status=1
  return "$status"
}

mkdir -p runs
for stage in $STAGES; do
  case $stage in
    default)   pair default-x2 configs/default-x2.yaml "$DEFAULT_TIME" \
                    default-x4 configs/default-x4.yaml "$DEFAULT_X4_TIME" ;;
    stage2)    pair default-x2-stage2 configs/default-x2-stage2.yaml "$STAGE2_TIME" \
                    default-x4-stage2 configs/default-x4-stage2.yaml "$STAGE2_TIME"
               ship default-x2-stage2 default-x2; ship default-x4-stage2 default-x4 ;;
    stage3)    THREADS=2 run default-x2-stage3 configs/default-x2-stage3.yaml "$STAGE3_TIME"
               ship default-x2-stage3 default-x2 ;;
    fast)      pair fast-x2 configs/fast-x2.yaml "$FAST_TIME" \
                    fast-x4 configs/fast-x4.yaml "$FAST_TIME"
               ship fast-x2 fast-x2; ship fast-x4 fast-x4 ;;
    baselines) pair srcnn-x2 configs/baseline-srcnn-x2.yaml "$BASELINE_TIME" \
                    residual5-x2 configs/baseline-residual5-x2.yaml "$BASELINE_TIME"
               ship srcnn-x2 srcnn-x2; ship residual5-x2 residual5-x2
               pair vdsr-x2 configs/baseline-vdsr-x2.yaml "$BASELINE_TIME" \
                    srresnet-x2 configs/baseline-srresnet-x2.yaml "$BASELINE_TIME"
               # srresnet-x2 is trained for the comparison, not shipped: 256 steps in the budget
               # leave it 13 dB below bicubic (README, Trained models)
               ship vdsr-x2 vdsr-x2 ;;
    kspace)    # the MR k-space defaults (session 9): fine-tunes of the shipped default-x2/x4 on MR,
               # every patch k-space truncated; the best validation checkpoint ships
               pair mr-kspace-x2 configs/mr-kspace-x2.yaml "$KSPACE_TIME" \
                    mr-kspace-x4 configs/mr-kspace-x4.yaml "$KSPACE_TIME"
               for s in 2 4; do
                 best=$(ls runs/mr-kspace-x$s/checkpoints/best-*.ckpt | tail -1)
                 "$MEDSR" export "$best" "runs/mr-kspace-x$s/mr-kspace-x$s.safetensors" --overwrite
                 ship "mr-kspace-x$s" "default-x$s-kspace"
               done ;;
    selfens)   # default-x2 distilled from its own 8-pass self-ensemble (session 17): warm-starts
               # from the default-x2 in src/medsr/weights/; the best validation checkpoint ships
               run default-x2-selfens configs/default-x2-selfens.yaml "$SELFENS_TIME"
               best=$(ls runs/default-x2-selfens/checkpoints/best-*.ckpt | tail -1)
               "$MEDSR" export "$best" runs/default-x2-selfens/default-x2-selfens.safetensors --overwrite
               ship default-x2-selfens default-x2 ;;
    kernels)   # default-x4 without the LR-only CT/radiograph blur, with hr_blur (session 18)
               run default-x4-kernels configs/default-x4-kernels.yaml "$KERNELS_TIME"
               THREADS=2 run default-x4-kernels-2 configs/default-x4-kernels-2.yaml "$KERNELS_TIME"
               ship default-x4-kernels-2 default-x4 ;;
    kspacefast) # the fast models for MR k-space data (session 15; the best validation checkpoints),
               # then fast-x2-kspace distilled from default-x2-kspace's self-ensemble (session 19;
               # warm-starts from the fast-x2-kspace in src/medsr/weights/: with INSTALL=1, the first
               # stage's; its last and best checkpoint, step 3,840, ships)
               pair mr-kspace-fast-x2 configs/mr-kspace-fast-x2.yaml "$KSPACE_FAST_TIME" \
                    mr-kspace-fast-x4 configs/mr-kspace-fast-x4.yaml "$KSPACE_FAST_TIME"
               for s in 2 4; do
                 best=$(ls runs/mr-kspace-fast-x$s/checkpoints/best-*.ckpt | tail -1)
                 "$MEDSR" export "$best" "runs/mr-kspace-fast-x$s/mr-kspace-fast-x$s.safetensors" --overwrite
                 ship "mr-kspace-fast-x$s" "fast-x$s-kspace"
               done
               run mr-kspace-fast-x2-distill configs/mr-kspace-fast-x2-distill.yaml "$KSPACE_FAST_TIME"
               ship mr-kspace-fast-x2-distill fast-x2-kspace ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
