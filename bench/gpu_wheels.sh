#!/usr/bin/env bash
# Prepare, here, what travels to the GPU machine for bench/run_gpu.sh: the bundled model's tokenizer
# files in .gpu_assets/tokenizer (3.4 MB) and the wheels it installs (CPython 3.12, x86_64
# manylinux, no network there). The GPU machine already has torch 2.11, transformers 5.17,
# accelerate, huggingface_hub 1.33, tokenizers, safetensors, pandas, pyarrow, pyyaml, psutil;
# it lacks bitsandbytes and pydantic (lora_app.config), and may lack peft. Nothing on the bench
# path imports datasets, gradio or gguf (tests/test_bench_gpu.py proves it), so they do not travel.
#   bash bench/gpu_wheels.sh [DEST]      # DEST defaults to .whl (ignored by git)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${1:-.whl}"
PY="${PYTHON:-python3}"
# Pins: the versions requirements.txt tests together (pydantic_core, annotated_types,
# typing_inspection and typing_extensions: the versions installed with pydantic 2.14.3 here;
# typing_extensions travels because pydantic_core may need a newer one than torch brought).
PKGS=(bitsandbytes==0.50.0 peft==0.21.2 pydantic==2.14.3 pydantic_core==2.50.4 annotated_types==0.8.0
      typing_inspection==0.4.5 typing_extensions==4.16.0)
mkdir -p "$DEST"
for p in "${PKGS[@]}"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "$p"
done
ls -l "$DEST"
du -ch "$DEST"/*.whl | tail -1
# The tokenizer: SmolLM2's (vocabulary 49,152, the same family as SmolLM2-1.7B's), from the bundled model
# (converted once into $LORA_APP_HOME on first use); APP_PYTHON: a Python with lora_app's requirements.
"${APP_PYTHON:-$PY}" - <<'EOF'
import shutil
from pathlib import Path
from lora_app import models
src, dst = models.bundled_model_dir(), Path(".gpu_assets/tokenizer")
dst.mkdir(parents=True, exist_ok=True)
for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
    if (src / name).is_file():
        shutil.copy(src / name, dst / name)
print("tokenizer files:", sorted(p.name for p in dst.iterdir()))
EOF
du -sh .gpu_assets
