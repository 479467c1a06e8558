#!/usr/bin/env bash
# GPU check (run on a lent CUDA machine, from the repo root, with benchmarks/gpu_batches carried):
# pretrain the `base` preset in bf16 for a bounded number of steps; print molecules/s, peak GPU
# memory, and fail if the loss does not fall. Prepare the batches on a CPU box first:
#   python benchmarks/gpu_pretrain.py prepare --n 2048 --image_size 224
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-benchmarks/results}"
mkdir -p "$OUT_DIR"
nvidia-smi --query-gpu=name,memory.total --format=csv || true
python3 benchmarks/gpu_pretrain.py run --preset base --steps "${STEPS:-200}" --mixed_precision bf16 \
  --out "$OUT_DIR/gpu_pretrain.json" 2>&1 | tee "$OUT_DIR/gpu_pretrain.log"
