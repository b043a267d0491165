#!/usr/bin/env bash
# Detection quality of NF-CDEE on synthetic data, one model per machine group:
# the report's architecture (8 blocks, 2048 hidden units, 256 mel bins) with a
# CPU-sized schedule (batch 32, 500 Adam steps per group, lr 1e-3, final
# weights), for the seeds given (default 0 1). Data: `asd synth --split dev
# --seed 0` defaults (10 s clips, 7 dev machine types). Prints one JSON line
# per run: the evaluation of all machines (groups are read from it).
# Usage: scripts/bench_nf_cdee.sh [ASD_BINARY] [OUTPUT_FOLDER] [SEEDS...]
set -euo pipefail
ASD=${1:-target/debug/asd}
OUT=${2:-bench}
shift 2 || true
[ $# -gt 0 ] && SEEDS=("$@") || SEEDS=(0 1)
mkdir -p "$OUT"
[ -d "$OUT/data/dev_data" ] || "$ASD" synth --out "$OUT/data" --split dev --seed 0 --quiet
for seed in "${SEEDS[@]}"; do
    name="nf_cdee_seed$seed"
    start=$(date +%s)
    "$ASD" run experiments/models/nf_cdee.json --checkpoints "$OUT/checkpoints" \
        --set name="\"$name\"" --set seed="$seed" --set data.root="$OUT/data" \
        --set features.cache_dir="$OUT/features" --set train.batch_size=32 --set train.max_steps=500 \
        --set train.checkpoint_every=0 --quiet > /dev/null
    secs=$(( $(date +%s) - start ))
    json=$("$ASD" evaluate --scores "$OUT/checkpoints/$name/scores" --ground-truth "$OUT/data" --json --quiet)
    echo "{\"run\": \"$name\", \"seconds\": $secs, \"result\": $json}"
done
