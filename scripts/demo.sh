#!/usr/bin/env bash
# The main job on its embedded default, on synthetic data (no download):
# synthesise a small DCASE-2024-style dev set -> train the Dual Branch CNN
# on the CPU -> score the test clips with the kNN back-end (official CSVs)
# -> evaluate with the official metrics.
# Usage: scripts/demo.sh [ASD_BINARY] [OUTPUT_FOLDER]
set -euo pipefail
ASD=${1:-target/debug/asd}
OUT=${2:-demo}
mkdir -p "$OUT"

echo "== 1/3 synthesise machine sounds into $OUT/data"
if [ ! -d "$OUT/data/dev_data" ]; then
    "$ASD" synth --out "$OUT/data" --split dev --seed 0 --seconds 4
fi

echo "== 2/3 train + score: Dual Branch CNN (experiments/demo/dual_branch_cnn.json)"
"$ASD" run experiments/demo/dual_branch_cnn.json --checkpoints "$OUT/checkpoints" \
    --set data.root="$OUT/data" --set features.cache_dir="$OUT/features"

echo "== 3/3 evaluate the submission files with the official metrics"
"$ASD" evaluate --scores "$OUT/checkpoints/demo_dual_branch_cnn/scores" --ground-truth "$OUT/data"
