#!/usr/bin/env bash
# The main job on its embedded default, on synthetic data (no download):
# synthesise a small DCASE-2024-style dev set -> train two Dual Branch CNN
# variants on the CPU -> score the test clips with the kNN back-end (official
# CSVs) -> fuse the calibrated scores per machine group -> evaluate with the
# official metrics.
# Usage: scripts/demo.sh [ASD_BINARY] [OUTPUT_FOLDER]
set -euo pipefail
ASD=${1:-target/debug/asd}
OUT=${2:-demo}
mkdir -p "$OUT"
COMMON=(--checkpoints "$OUT/checkpoints" --set data.root="$OUT/data" --set features.cache_dir="$OUT/features")

echo "== 1/4 synthesise machine sounds into $OUT/data"
if [ ! -d "$OUT/data/dev_data" ]; then
    "$ASD" synth --out "$OUT/data" --split dev --seed 0 --seconds 4
fi

echo "== 2/4 train + score: Dual Branch CNN with self-attention (experiments/demo/dual_branch_cnn.json)"
"$ASD" run experiments/demo/dual_branch_cnn.json "${COMMON[@]}"

echo "== 3/4 train + score: the same network without attention (experiments/demo/dual_branch_cnn_no_attention.json)"
"$ASD" run experiments/demo/dual_branch_cnn_no_attention.json "${COMMON[@]}"

echo "== 4/4 fuse both per machine group and evaluate with the official metrics"
"$ASD" fuse experiments/demo/system.json --checkpoints "$OUT/checkpoints"
"$ASD" evaluate --scores "$OUT/checkpoints/demo_system/scores" --ground-truth "$OUT/data"
