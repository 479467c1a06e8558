#!/usr/bin/env bash
# Short, equal-budget pretraining runs of the objective variants, compared by the validation-only linear probe
# (benchmarks/pretrain_proxy.py). Same corpus subsample, seed, data order and molecules seen for every variant.
#
#   bash benchmarks/objective_ablation.sh [STEPS] [MAX_MOLECULES] [OUT_DIR]
#
# Writes benchmarks/results/pretrain_proxy.{json,md}. One torch thread per run.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-400}
MAX_MOLECULES=${2:-32000}
OUT=${3:-$HOME/.cache/mmsa/ablation}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} HF_HUB_OFFLINE=1 HF_HUB_DISABLE_XET=1
PY=${PYTHON:-.venv/bin/python}
declare -A VARIANTS=(
  [new]=""
  [no_masked_attributes]="--no_masked_attributes"
  [legacy]="--legacy_objectives"
)
for name in new no_masked_attributes legacy; do
  if [ ! -f "$OUT/$name/final/model.safetensors" ]; then
    $PY -m accelerate.commands.launch --cpu --num_processes 1 --num_machines 1 --mixed_precision no \
      --dynamo_backend no scripts/pretrain.py --config small --max_molecules "$MAX_MOLECULES" --seed 0 \
      --max_steps "$STEPS" --batch_size 64 --num_proc 2 --checkpointing_steps 0 \
      --output_dir "$OUT/$name" ${VARIANTS[$name]}
  fi
done
$PY benchmarks/pretrain_proxy.py --random_seeds 0 1 2 \
  --checkpoints "MMSA, new objective ($STEPS steps)=$OUT/new/final" \
  "MMSA without masked attributes ($STEPS steps)=$OUT/no_masked_attributes/final" \
  "MMSA, first objective ($STEPS steps)=$OUT/legacy/final" \
  --notes "Variants: $STEPS steps x 64 molecules from the same ${MAX_MOLECULES}-molecule subsample of the default corpus (test molecules excluded), seed 0, small preset."
