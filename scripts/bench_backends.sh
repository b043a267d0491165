#!/usr/bin/env bash
# Back-end ablation on `asd synth` data (issue 18): per seed, synthesise a dev
# set (7 machine types, default counts, 4-s clips), train the demo Dual Branch
# CNN once, then score that one trained run with the default kNN and with the
# back-end of every experiments/ablations/dual_branch_cnn_backend_*.json.
# Prints a markdown table: the official score per seed, mean and spread.
# Usage: scripts/bench_backends.sh [ASD_BINARY] [OUTPUT_FOLDER] [SEEDS...]
set -euo pipefail
ASD=${1:-target/debug/asd}
OUT=${2:-bench_backends}
shift $(( $# < 2 ? $# : 2 ))
SEEDS=${*:-1 2 3}
mkdir -p "$OUT"
results="$OUT/results.tsv"
: > "$results"
backend_of() { python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["scoring"]["backend"]))' "$1"; }
official() { "$ASD" evaluate --scores "$1" --ground-truth "$2" --json --quiet | python3 -c 'import json,sys; print(json.load(sys.stdin)["official_score"])'; }
for s in $SEEDS; do
    root="$OUT/data_$s"
    [ -d "$root/dev_data" ] || "$ASD" synth --out "$root" --split dev --seed "$s" --seconds 4 --quiet
    common=(--checkpoints "$OUT/ckpt_$s" --set "data.root=\"$root\"" --set "features.cache_dir=\"$OUT/features_$s\"" --set "seed=$s")
    run="$OUT/ckpt_$s/demo_dual_branch_cnn"
    if [ ! -f "$run/averaged/model.bpk" ]; then
        rm -rf "$run"
        "$ASD" train experiments/demo/dual_branch_cnn.json "${common[@]}" --quiet
    fi
    for f in default experiments/ablations/dual_branch_cnn_backend_*.json; do
        if [ "$f" = default ]; then name=knn; backend='{"kind": "knn"}'; else
            name=$(basename "$f" .json); name=${name#dual_branch_cnn_backend_}; backend=$(backend_of "$f"); fi
        out="$OUT/scores_$s/$name"
        [ -f "$out/evaluation.json" ] || "$ASD" score experiments/demo/dual_branch_cnn.json "${common[@]}" \
            --set "scoring.backend=$backend" --out "$out" --quiet >/dev/null
        printf '%s\t%s\t%s\n' "$s" "$name" "$(official "$out" "$root")" | tee -a "$results"
    done
done
python3 - "$results" <<'PY'
import collections, statistics, sys
rows = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    seed, name, score = line.split()
    rows[name][seed] = 100 * float(score)
seeds = sorted({s for r in rows.values() for s in r})
print("| back-end | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |")
print("|---|" + "---|" * (len(seeds) + 1))
for name, r in rows.items():
    v = [r[s] for s in seeds]
    spread = statistics.stdev(v) if len(v) > 1 else 0.0
    print(f"| {name} | " + " | ".join(f"{x:.2f}" for x in v) + f" | {statistics.mean(v):.2f} ± {spread:.2f} |")
PY
