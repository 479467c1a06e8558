#!/usr/bin/env bash
# The graph-only pretraining behind checkpoints/mmsa-small-graph*: masked attributes, hypergraph, memory and
# descriptor-regression terms on the default corpus (136k molecules, every downstream test split excluded), bf16,
# one torch thread, resumable. Run it again with RESUME=1 after an interruption.
#
#   NAME=graph-desc STEPS=10000 BUDGET=85 bash benchmarks/pretrain_graph.sh                 # from scratch
#   NAME=graph-desc-cont INIT=checkpoints/mmsa-small-graph LR=5e-4 bash benchmarks/pretrain_graph.sh  # continued
#   FINGERPRINT=1 ...                                                                      # + Morgan-bit term
#   ASSAY=1 ...                                                     # + ToxCast/HIV/MUV assay term (Hu et al.)
#   DESCRIPTORS=0 ...                                               # without the descriptor term
#   SEED=1 OVERRIDES='{"assay_weight": 10.0}' ...                   # other data order / masks; config fields
#
# Output: $OUT_ROOT/$NAME (checkpoints, metrics.jsonl, final/). Featurization and descriptors are cached by
# `datasets` under $HF_DATASETS_CACHE (about 10 min of descriptors on 2 cores, once).
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${NAME:-graph-desc}
STEPS=${STEPS:-10000}
BUDGET=${BUDGET:-85}
LR=${LR:-1e-3}
OUT_ROOT=${OUT_ROOT:-$HOME/.cache/mmsa/runs}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} HF_HUB_OFFLINE=1 HF_HUB_DISABLE_XET=1
export HF_DATASETS_CACHE=${HF_DATASETS_CACHE:-$HOME/.cache/mmsa/datasets}
PY=${PYTHON:-.venv/bin/python}
ARGS=(--max_steps "$STEPS" --time_budget_minutes "$BUDGET" --batch_size 256 --learning_rate "$LR"
      --mixed_precision bf16 --num_proc 2 --checkpointing_steps 500 --log_every 50 --seed "${SEED:-0}"
      --no_image --no_geometry --output_dir "$OUT_ROOT/$NAME")
if [ "${DESCRIPTORS:-1}" = 1 ]; then ARGS+=(--descriptor_targets); fi
if [ -n "${INIT:-}" ]; then ARGS+=(--init_from "$INIT"); fi
if [ "${FINGERPRINT:-0}" = 1 ]; then ARGS+=(--fingerprint_targets); fi
if [ "${ASSAY:-0}" = 1 ]; then ARGS+=(--assay_targets); fi
if [ -n "${OVERRIDES:-}" ]; then ARGS+=(--config_overrides "$OVERRIDES"); fi
if [ "${RESUME:-0}" = 1 ]; then ARGS+=(--resume_from_checkpoint latest); fi
exec $PY -m accelerate.commands.launch --cpu --num_processes 1 --num_machines 1 --mixed_precision bf16 \
  --dynamo_backend no scripts/pretrain.py "${ARGS[@]}"
