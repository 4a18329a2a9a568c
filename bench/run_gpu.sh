#!/usr/bin/env bash
# The training and generation benchmarks on one CUDA GPU, offline, on a 1.7 B model with random
# weights in SmolLM2-1.7B's shape (bench/make_model.py; speed does not depend on the weights):
#   1. bf16: reference recipe vs lora_app, batch 4 x accumulation 4 (the recipe's), 48 steps each;
#   2. bf16-large: lora_app alone at 64 x 4 rows per step (the MFU a big batch reaches);
#   3. generation: base / adapter unmerged / adapter merged, greedy 64 new tokens;
#   4. 8bit and 5. 4bit bases (bitsandbytes): reference vs lora_app, 10 steps each.
# Each step has its own time limit (all together at most 90+130+90+80+90+90+20 s = 9.8 min); a
# failed step is logged and the next one still runs; a training step cut short still leaves a
# partial JSON. Sized to finish in ~4-5 minutes on one H200 (each variant is a fresh process:
# ~15-25 s of imports, model load and CUDA start before its first step).
#
#   bash bench/run_gpu.sh              # on the GPU machine; results into $OUT (else bench/results)
#   bash bench/run_gpu.sh --dry-run    # on CPU: a 2-layer model, a few steps, the same scripts and
#                                      # code path; the CUDA-only steps (8bit, 4bit) are skipped, said so
#
# Needs: python3 with torch, transformers, peft, accelerate, pydantic, pyyaml, pandas, psutil (and
# bitsandbytes for steps 4-5); the bundled model's tokenizer files in .gpu_assets/tokenizer (or
# $GPU_TOKENIZER); nothing from the network. bench/gpu_wheels.sh prepares both: the missing packages
# as wheels in .whl/ (installed into a folder on PYTHONPATH before this script runs) and the tokenizer.
# Writes one log and one JSON per step (at most 7 files) into $OUT or bench/results.
set -u -o pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
PY="${PYTHON:-python3}"
OUTDIR="${OUT:-bench/results}"
mkdir -p "$OUTDIR" && OUTDIR="$(cd "$OUTDIR" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/lora_gpu_bench.XXXXXX")"
export BENCH_RESULTS="$OUTDIR" LORA_APP_HOME="$WORK/home" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
  HF_HUB_DISABLE_PROGRESS_BARS=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
TS="$(date +%Y%m%d-%H%M%S)"
LOG="$OUTDIR/gpu-$TS$([ $DRY = 1 ] && echo -dry).log"
T0=$(date +%s)
status=0
say() { echo "$*" | tee -a "$LOG"; }
run() {  # run <name> <seconds> <command...>: one step; a failure is logged and the next step still runs
  local name=$1 limit=$2 t rc; shift 2
  t=$(date +%s)
  say "== [$name] (limit ${limit}s, at +$((t - T0))s) $*"
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  if [ "$rc" = 0 ]; then say "== [$name] ok in $(($(date +%s) - t))s"
  else say "!! [$name] FAILED exit $rc$([ "$rc" = 124 ] && echo " (time limit ${limit}s)") after $(($(date +%s) - t))s"; status=1; fi
}
skip() { say "-- [$1] SKIPPED: $2"; }

say "# lora_app GPU benchmark $TS $([ $DRY = 1 ] && echo '(DRY RUN on CPU: tiny model, timings mean nothing)')"
say "# repo $(git rev-parse --short HEAD 2>/dev/null || echo '?'), out $OUTDIR, work $WORK, load $(cut -d' ' -f1-3 /proc/loadavg)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import importlib.util, sys
from importlib.metadata import PackageNotFoundError, version
print("python", sys.version.split()[0])
for m in ("torch", "transformers", "peft", "accelerate", "huggingface_hub", "tokenizers", "pydantic", "bitsandbytes",
          "datasets", "gradio", "gguf"):  # read from the metadata, not imported (slow); the last three are not needed
    spec = importlib.util.find_spec(m)
    try:
        print(f"  {m} {version(m)} ({spec.origin.rsplit('/', 3)[0] if spec else 'NOT IMPORTABLE'})")
    except PackageNotFoundError:
        print(f"  {m} MISSING")
import torch
if torch.cuda.is_available():
    print("cuda", torch.version.cuda, "|", torch.cuda.get_device_name(0), "| bf16", torch.cuda.is_bf16_supported())
else:
    print("no CUDA device")
EOF

if [ $DRY = 1 ]; then
  DEV=cpu SHAPE=tiny
  TRAIN=(--examples 64 --holdout 40)          # 4 steps of 4 x 4
  LARGE=(--batch 8 --accum 2 --examples 48 --holdout 40)
  GEN=(--repeats 1 --new-tokens 8)
  KBIT=(--examples 32 --holdout 40)
  L_MODEL=120 L_TRAIN=150 L_GEN=90  # a shared 2-core CPU is slow to import
else
  DEV=cuda SHAPE=smollm2-1.7b
  TRAIN=(--examples 768 --holdout 200)        # 48 optimizer steps of 4 x 4 rows (the recipe's)
  LARGE=(--batch 64 --accum 4 --examples 3072 --holdout 232)  # 12 steps of 256 rows (768 rows: 3 steps an epoch)
  GEN=(--repeats 2 --new-tokens 64)
  KBIT=(--examples 160 --holdout 200)         # 10 steps of 4 x 4 (bitsandbytes steps are slow; the reference checkpoints)
  L_MODEL=90 L_TRAIN=130 L_GEN=80
fi
MODEL="$WORK/model-$SHAPE"
COMMON=(--device "$DEV" --model "$MODEL" --repeats 1 --no-startup --no-base-eval --max-length 128)

run make-model "$L_MODEL" "$PY" bench/make_model.py "$MODEL" --shape "$SHAPE" --device "$DEV" \
    --tokenizer "${GPU_TOKENIZER:-.gpu_assets/tokenizer}"
run bf16 "$L_TRAIN" "$PY" bench/bench_train.py "${COMMON[@]}" --quant none "${TRAIN[@]}" --keep-adapter "$WORK/adapter" --tag bf16
run bf16-large 90 "$PY" bench/bench_train.py "${COMMON[@]}" --quant none --variants app "${LARGE[@]}" \
    --keep-adapter "$WORK/adapter-large" --tag bf16-large
if [ -f "$WORK/adapter/adapter_config.json" ]; then
  run generate "$L_GEN" "$PY" bench/bench_generate.py --device "$DEV" --model "$MODEL" --adapter "$WORK/adapter" "${GEN[@]}" --tag gpu
else
  run generate "$L_GEN" "$PY" bench/bench_generate.py --device "$DEV" --model "$MODEL" "${GEN[@]}" --tag gpu-random-adapter
fi
for q in 8bit 4bit; do
  if [ $DRY = 1 ]; then skip "$q" "needs a CUDA GPU and bitsandbytes (dry run on CPU)"; continue; fi
  run "$q" 90 "$PY" bench/bench_train.py "${COMMON[@]}" --quant "$q" "${KBIT[@]}" --keep-adapter "$WORK/adapter-$q" --tag "$q"
done
run summary 20 "$PY" bench/gpu_summary.py "$OUTDIR" --since "$T0"
say "# done in $(($(date +%s) - T0))s, status $status; log $LOG"
rm -rf "$WORK"
exit $status
