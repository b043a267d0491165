#!/usr/bin/env bash
# Pseudo-attributes on vs off (issue 18), on the sets and first models of
# scripts/bench_backends.sh (run it first, same OUTPUT_FOLDER): per seed,
# cluster the concealed-attribute machines' training clips (ToyTrain, gearbox,
# slider) by the trained demo Dual Branch CNN's embeddings, train the same
# model again with the clusters as auxiliary classes, and score both with kNN.
# Usage: scripts/bench_pseudo_attributes.sh [ASD_BINARY] [OUTPUT_FOLDER] [SEEDS...]
set -euo pipefail
ASD=${1:-target/debug/asd}
OUT=${2:-bench_backends}
shift $(( $# < 2 ? $# : 2 ))
SEEDS=${*:-1 2 3}
results="$OUT/pseudo.tsv"
: > "$results"
official() { "$ASD" evaluate --scores "$1" --ground-truth "$2" --json --quiet | python3 -c 'import json,sys; print(json.load(sys.stdin)["official_score"])'; }
for s in $SEEDS; do
    root="$OUT/data_$s"
    common=(--checkpoints "$OUT/ckpt_$s" --set "data.root=\"$root\"" --set "features.cache_dir=\"$OUT/features_$s\"" --set "seed=$s")
    [ -f "$OUT/scores_$s/knn/evaluation.json" ] || { echo "run scripts/bench_backends.sh first" >&2; exit 1; }
    labels="$OUT/pseudo_$s.json"
    [ -f "$labels" ] || "$ASD" pseudo-labels experiments/demo/dual_branch_cnn.json "${common[@]}" --clusters 4 --out "$labels" --quiet
    with=(--set "name=\"demo_dual_branch_cnn_pseudo\"" --set "data.pseudo_attributes=\"$labels\"")
    run="$OUT/ckpt_$s/demo_dual_branch_cnn_pseudo"
    if [ ! -f "$run/averaged/model.bpk" ]; then
        rm -rf "$run"
        "$ASD" train experiments/demo/dual_branch_cnn.json "${common[@]}" "${with[@]}" --quiet
    fi
    out="$OUT/scores_$s/knn_pseudo"
    [ -f "$out/evaluation.json" ] || "$ASD" score experiments/demo/dual_branch_cnn.json "${common[@]}" "${with[@]}" --out "$out" --quiet >/dev/null
    for name in knn knn_pseudo; do
        printf '%s\t%s\t%s\n' "$s" "$name" "$(official "$OUT/scores_$s/$name" "$root")" | tee -a "$results"
    done
done
