#!/usr/bin/env bash
# The official AE baseline as a model (issue 18) on 10-s synthetic sets. Per
# seed: the AE trained per machine type (experiments/demo/official_ae.json,
# 4000 steps of 64 clips x 4 vectors per machine), scored by selective
# Mahalanobis and by MSE; then experiments/demo_official_ae.json (the demo
# system plus the AE) in a copy of a finished demo system run, so that only
# the AE is trained and fused anew.
# Usage: scripts/bench_official_ae.sh ASD DATA_PREFIX DEMO_PREFIX OUT [SEEDS...]
#   ${DATA_PREFIX}S: asd synth --split dev --seed S --seconds 10 --train-source 180 --train-target 20 --test-per-cell 50
#   ${DEMO_PREFIX}S: asd run experiments/demo.json --data ${DATA_PREFIX}S --out ${DEMO_PREFIX}S (finished)
set -euo pipefail
ASD=$1; DATA=$2; DEMO=$3; OUT=$4
shift 4
SEEDS=${*:-1 2 3}
official() { "$ASD" evaluate --scores "$1" --ground-truth "$2" --json --quiet | python3 -c 'import json,sys; print(json.load(sys.stdin)["official_score"])'; }
mkdir -p "$OUT"
for s in $SEEDS; do
    sys="$OUT/system_$s"
    [ -d "$sys" ] || { mkdir -p "$sys"; cp -al "$DEMO$s/runs" "$DEMO$s/members" "$DEMO$s/features" "$sys/"; }
    common=(--set "data.root=\"$DATA$s\"" --set "features.cache_dir=\"$sys/features\"" --set train.max_steps=4000 --checkpoints "$sys/runs" --quiet)
    "$ASD" train experiments/demo/official_ae.json "${common[@]}"
    "$ASD" score experiments/demo/official_ae.json "${common[@]}" --out "$OUT/ae_mahalanobis_$s" >/dev/null
    "$ASD" score experiments/demo/official_ae.json "${common[@]}" --set 'scoring.model_score="mse"' --out "$OUT/ae_mse_$s" >/dev/null
    "$ASD" run experiments/demo_official_ae.json --data "$DATA$s" --out "$sys" --quiet >/dev/null
    for r in "ae_mahalanobis $OUT/ae_mahalanobis_$s" "ae_mse $OUT/ae_mse_$s" "demo $DEMO$s/submission" "demo_official_ae $sys/submission"; do
        set -- $r
        printf '%s\t%s\t%s\n' "$s" "$1" "$(official "$2" "$DATA$s")" | tee -a "$OUT/results.tsv"
    done
done
