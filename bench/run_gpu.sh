#!/usr/bin/env bash
# The training and generation benchmarks on one CUDA GPU with a ~1B+ model: bf16, 8-bit and 4-bit
# bases (bitsandbytes), reference recipe vs lora_app, then generation (base / unmerged / merged).
#
#   bash bench/run_gpu.sh                     # MODEL defaults to HuggingFaceTB/SmolLM2-1.7B-Instruct
#   MODEL=meta-llama/Llama-3.2-1B bash bench/run_gpu.sh
#
# Needs: a CUDA GPU, bitsandbytes, and MODEL in the Hugging Face cache (runs offline by default:
# HF_HUB_OFFLINE=1; set HF_HUB_OFFLINE=0 to let it download). Sized for a few minutes on one H200:
# 512 examples (32 optimizer steps of 4 x 4) per variant at max_length 128; 2 repeats in bf16,
# 1 for 8-bit and 4-bit. Results: bench/results/*.json and bench/results/gpu-<time>.log.
# Note: the reference recipe on a k-bit base calls prepare_model_for_kbit_training() with its
# defaults, i.e. gradient checkpointing ON (as the PEFT int8 notebook does); lora_app keeps it off
# unless training.gradient_checkpointing is set. The JSON records both settings.
set -u -o pipefail
cd "$(dirname "$0")/.."
MODEL="${MODEL:-HuggingFaceTB/SmolLM2-1.7B-Instruct}"
EXAMPLES="${EXAMPLES:-512}"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p bench/results
LOG="bench/results/gpu-$(date +%Y%m%d-%H%M%S).log"
status=0
run() {  # run <seconds> <command...>: one step; a failure is logged and the next step still runs
  local limit=$1; shift
  echo "== $*" | tee -a "$LOG"
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG" || { echo "!! exit $? : $*" | tee -a "$LOG"; status=1; }
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$LOG" || true
"$PY" -c "import torch, transformers, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$LOG"
"$PY" -c "import bitsandbytes as b; print('bitsandbytes', b.__version__)" 2>&1 | tee -a "$LOG"

run 240 "$PY" bench/bench_train.py --device cuda --model "$MODEL" --quant none --repeats 2 --examples "$EXAMPLES" --tag bf16
run 180 "$PY" bench/bench_train.py --device cuda --model "$MODEL" --quant 8bit --repeats 1 --examples "$EXAMPLES" \
    --no-startup --no-base-eval --tag 8bit
run 180 "$PY" bench/bench_train.py --device cuda --model "$MODEL" --quant 4bit --repeats 1 --examples "$EXAMPLES" \
    --no-startup --no-base-eval --tag 4bit
run 120 "$PY" bench/bench_generate.py --device cuda --model "$MODEL" --repeats 3
echo "log: $LOG" | tee -a "$LOG"
exit $status
