#!/usr/bin/env bash
# GPU check: every model on `cuda` and `wgpu` against the flex CPU backend,
# then the GPU benchmark rows. Runs unattended on a GPU machine with the
# NVIDIA driver but no network and no Rust toolchain, from the folder that
# scripts/gpu-bundle.sh makes (or from a checkout where that folder was built):
#
#   scripts/gpu-bundle.sh target/gpu-bundle      # here: build + gather, < 64 MB
#   target/gpu-bundle/gpu-check.sh [OUT_DIR]     # there: at most 9 minutes
#
# Results: OUT_DIR (default $OUT, else ./gpu-check-out) gets summary.md, one
# JSON line per model and backend (check_<backend>.jsonl) and per benchmark
# (bench.jsonl), and the logs. PyTorch CUDA rows are added when the machine's
# python3 has torch with CUDA (the bundle cannot carry it); otherwise the
# summary says so. Exit status: 1 if a backend that started disagreed with
# flex, else 0.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-${OUT:-$PWD/gpu-check-out}}"
mkdir -p "$out"
cd "$here"
asd="${ASD_GPU_BIN:-$here/bin/asd}"
if [ ! -x "$asd" ] && [ -f "$here/bin/asd.gz" ]; then
    asd="$(mktemp -d)/asd"
    gunzip -c "$here/bin/asd.gz" >"$asd" && chmod +x "$asd"
fi
[ -x "$asd" ] || { echo "gpu-check: no $asd (run scripts/gpu-bundle.sh first)" >&2; exit 2; }
# libdevice for the CUDA kernels, gathered by the bundle.
if [ -z "${CUDA_PATH:-}" ] && [ -f "$here/cuda/nvvm/libdevice/libdevice.10.bc" ]; then
    export CUDA_PATH="$here/cuda"
fi
summary="$out/summary.md"
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
# Everything ends within ${ASD_GPU_CHECK_S:-540} s: each step gets what is left, at most its own limit.
deadline=${ASD_GPU_CHECK_S:-540}
slot() { local left=$(( deadline - $(elapsed) )); [ "$left" -lt "$1" ] && echo "$left" || echo "$1"; }
{
    echo "# GPU check $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo '```'
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | head -n 5
    else
        echo "nvidia-smi: not found"
    fi
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
    echo "asd: $("$asd" --version 2>&1)"
    echo "CUDA_PATH=${CUDA_PATH:-unset}"
    echo '```'
} >"$summary"

# The models, on configurations small enough for seconds per model; the
# tiny BEATs/EAT checkpoints ship in tests/fixtures.
experiments=(
    experiments/demo/dual_branch_cnn.json
    experiments/demo/nf_cdee.json
    experiments/demo/official_ae.json
    experiments/demo/beats_lora_tiny.json
    experiments/demo/eat_lora_tiny.json
    experiments/demo/beats_eat_tiny.json
)
status=0
echo -e "\n## Every model against flex (one batch of 8 synthetic 4-s clips, then one SGD step)\n" >>"$summary"
for backend in cuda wgpu; do
    log="$out/check_$backend.log"
    limit=$(slot 200)
    [ "$limit" -ge 10 ] || { echo "- $backend: skipped (time budget spent)" >>"$summary"; continue; }
    timeout "$limit" "$asd" check-backend --backend "$backend" "${experiments[@]}" >"$out/check_$backend.jsonl" 2>"$log"
    rc=$?
    if [ $rc -eq 0 ]; then
        echo "- **$backend: all models agree with flex** (tolerance 1e-3):" >>"$summary"
    elif grep -q "cannot start on this machine" "$log"; then
        echo "- $backend: did not start: $(grep -m1 'error' "$log")" >>"$summary"
        continue
    else
        echo "- **$backend: FAILED (exit $rc)**:" >>"$summary"
        status=1
    fi
    sed -n 's/^\(ok  \|FAIL\) /    - \1 /p' "$log" >>"$summary"
    grep -m1 '^error' "$log" | sed 's/^/    - /' >>"$summary"
done

echo -e "\n## Benchmarks (median step / pass; peak RSS is host memory)\n" >>"$summary"
bench() { # label, timeout, command...
    local label="$1" limit
    limit=$(slot "$2")
    shift 2
    if [ "$limit" -lt 10 ]; then
        echo "- $label: skipped (time budget spent)" >>"$summary"
        return
    fi
    local line
    line=$(timeout "$limit" "$@" 2>>"$out/bench.log" | tail -n 1)
    if [ -n "$line" ]; then
        echo "$line" >>"$out/bench.jsonl"
        echo "- $label: \`$line\`" >>"$summary"
    else
        echo "- $label: no result (see bench.log)" >>"$summary"
    fi
}
burn_benches() { # backend; skipped when its check could not start it
    grep -q "^- $1: \(did not start\|skipped\)" "$summary" && return
    bench "burn-$1 Dual Branch CNN, batch 16 x 10 s" 60 \
        "$asd" bench train-step --backend "$1" --model dual_branch_cnn --batch 16 --seconds 10 --steps 10
    bench "burn-$1 NF-CDEE, batch 128" 60 \
        "$asd" bench train-step --backend "$1" --model nf_cdee --batch 128 --steps 20
    bench "burn-$1 EAT-base forward, one 10-s clip" 60 \
        "$asd" bench eat-forward --backend "$1" --runs 10
}
# CUDA and its PyTorch reference first; wgpu gets what time is left.
burn_benches cuda
if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    py=(python3)
    bench "PyTorch CUDA Dual Branch CNN, batch 16 x 10 s" 60 \
        "${py[@]}" torch_ref/dual_branch_cnn_torch.py --bench --device cuda --batch 16 --seconds 10 --steps 10
    if python3 -c 'import pyro' 2>/dev/null; then
        bench "PyTorch+Pyro CUDA NF-CDEE, batch 128" 60 \
            "${py[@]}" torch_ref/nf_cdee_torch.py --bench --device cuda --batch 128 --steps 20
    fi
    bench "PyTorch CUDA EAT-base forward, one 10-s clip" 60 \
        "${py[@]}" torch_ref/eat_torch.py --device cuda --runs 10
else
    echo "- PyTorch CUDA: not run (this machine's python3 has no torch with CUDA; the bundle cannot carry it)" >>"$summary"
fi
burn_benches wgpu
echo -e "\nTotal $(elapsed) s." >>"$summary"
cat "$summary"
exit $status
