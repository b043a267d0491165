#!/usr/bin/env bash
# Detection quality of the Dual Branch CNN and its ablations on synthetic
# data (10 s clips, default `asd synth` counts), CPU-sized training:
# batch 16, no accumulation, 60 steps, cosine schedule over the run,
# the mean of the last three periodic checkpoints (steps 40, 50, 60; no
# test label is read to choose them). Prints one JSON line per run.
# Usage: scripts/bench_synth.sh [ASD_BINARY] [OUTPUT_FOLDER] [EXPERIMENT_FILES...]
# (default: the Dual Branch CNN and its ablations)
set -euo pipefail
ASD=${1:-target/debug/asd}
OUT=${2:-bench}
shift 2 || true
if [ $# -gt 0 ]; then EXPS=("$@"); else EXPS=(experiments/models/dual_branch_cnn.json experiments/ablations/dual_branch_cnn_*.json); fi
mkdir -p "$OUT"
[ -d "$OUT/data/dev_data" ] || "$ASD" synth --out "$OUT/data" --split dev --seed 0 --quiet
CPU=(--checkpoints "$OUT/checkpoints" --set data.root="$OUT/data" --set features.cache_dir="$OUT/features"
     --set train.batch_size=16 --set train.grad_accum=1 --set train.max_steps=60
     --set 'train.schedule={"first_cycle_steps": 60, "warmup_steps": 5, "max_lr": 5e-3, "min_lr": 1e-5}'
     --set train.save_last_every=20 --set train.checkpoint_every=10)
for exp in "${EXPS[@]}"; do
    name=$(basename "$exp" .json)
    start=$(date +%s)
    "$ASD" run "$exp" "${CPU[@]}" --quiet > /dev/null
    secs=$(( $(date +%s) - start ))
    json=$("$ASD" evaluate --scores "$OUT/checkpoints/$name/scores" --ground-truth "$OUT/data" --json --quiet)
    echo "{\"run\": \"$name\", \"seconds\": $secs, \"result\": $json}"
done
