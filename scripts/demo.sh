#!/usr/bin/env bash
# The main job on its embedded default, on synthetic data (no download):
# synthesise a small DCASE-2024-style dev set, then run the demo system
# (experiments/demo.json): train NF-CDEE and the Dual Branch CNN (and the
# pre-trained members when their checkpoints are under pretrained/), score
# each with its back-end, calibrate and fuse per machine group, evaluate
# with the official metrics and write a report with plots.
# Usage: scripts/demo.sh [ASD_BINARY] [OUTPUT_FOLDER]
set -euo pipefail
ASD=${1:-target/debug/asd}
OUT=${2:-demo}
mkdir -p "$OUT"

echo "== synthesise machine sounds into $OUT/data"
if [ ! -d "$OUT/data/dev_data" ]; then
    "$ASD" synth --out "$OUT/data" --split dev --seed 0 --seconds 4
fi

echo "== run the demo system (experiments/demo.json) into $OUT/run"
"$ASD" run experiments/demo.json --data "$OUT/data" --out "$OUT/run"
echo "== report: $OUT/run/report.md"
