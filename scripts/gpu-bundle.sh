#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh needs on a GPU machine without network or
# Rust, into one folder (default target/gpu-bundle, under 64 MB):
#   bin/asd.gz  the stripped release binary with the cuda, wgpu and cpu
#               backends (its hidden `asd bench` runs the benchmark programs);
#               LLVM is linked in statically, so it is gzipped to fit;
#   cuda/       libdevice.10.bc (CUDA_PATH at run time);
#   experiments/, the tiny BEATs/EAT checkpoints of experiments/demo/*_tiny.json;
#   torch_ref/  the PyTorch re-statements, used if the machine has torch;
#   gpu-check.sh
# Needs scripts/setup-cuda.sh's LLVM (run here first; it is run if missing).
# The build goes to $CARGO_TARGET_DIR (default target/gpu), apart from the
# default build: a feature change rebuilds most of burn (~40 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-target/gpu-bundle}"
target="${CARGO_TARGET_DIR:-target/gpu}"
features="${ASD_GPU_FEATURES:-cuda,wgpu,cpu}"
limit_mb=64

setup_log=$(mktemp)
scripts/setup-cuda.sh --libdevice | tee "$setup_log"
cuda_path=$(sed -n 's/.*export CUDA_PATH=//p' "$setup_log")
rm -f "$setup_log"

CARGO_TARGET_DIR="$target" cargo build --release --features "$features" --bin asd

rm -rf "$dest.tmp"
mkdir -p "$dest.tmp/bin" "$dest.tmp/cuda/nvvm/libdevice" "$dest.tmp/torch_ref" \
    "$dest.tmp/tests/fixtures/shared/beats" "$dest.tmp/tests/fixtures/shared/eat"
strip --strip-all -o "$dest.tmp/bin/asd" "$target/release/asd"
gzip -9 "$dest.tmp/bin/asd"
cp "$cuda_path/nvvm/libdevice/libdevice.10.bc" "$dest.tmp/cuda/nvvm/libdevice/"
cp -r experiments "$dest.tmp/"
cp tests/fixtures/shared/beats/beats_tiny.pt "$dest.tmp/tests/fixtures/shared/beats/"
cp tests/fixtures/shared/eat/eat_tiny_fairseq.pt "$dest.tmp/tests/fixtures/shared/eat/"
cp tests/fixtures/gen/dual_branch_cnn_torch.py tests/fixtures/gen/nf_cdee_torch.py tests/fixtures/gen/eat_torch.py \
    "$dest.tmp/torch_ref/"
cp scripts/gpu-check.sh "$dest.tmp/"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
size_mb=$(du -sm "$dest" | cut -f1)
echo "gpu-bundle: $dest, ${size_mb} MB"
du -sh "$dest"/* | sed 's/^/  /'
if [ "$size_mb" -ge "$limit_mb" ]; then
    echo "gpu-bundle: over the ${limit_mb} MB limit" >&2
    exit 1
fi
