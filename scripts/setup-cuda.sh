#!/usr/bin/env bash
# Makes `cargo build --features cuda` (and `--features cpu`) work on a machine
# that reaches only package registries (PyPI, Debian), no GitHub.
#
# burn's CUDA and CPU-JIT runtimes link LLVM 23.1 through cubecl-llvm, whose
# build script (crate tracel-llvm-bundler) downloads a prebuilt LLVM from
# GitHub unless `<data dir>/tracel/tracel-llvm-<bundler version>/` already
# holds a `.tracel-llvm-installed` marker and a working `bin/llvm-config`
# (<data dir> is $XDG_DATA_HOME, else ~/.local/share). PyPI's mlc-llvm-static
# (+ -extra-targets for NVPTX) is a static LLVM 23.1 SDK whose llvm-config
# answers the flags that build script asks, so this script installs it into a
# venv outside the repository and points that folder at it.
#
# Usage: scripts/setup-cuda.sh [--libdevice]
#   --libdevice  also install nvidia-cuda-nvcc-cu12 (libdevice.10.bc, which
#                CUDA kernels need at run time) and print the CUDA_PATH to use.
# Environment: ASD_LLVM_VENV (default <data dir>/asd/llvm-venv), PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/.."

llvm_pkg=23.1.1.post0
data_dir="${XDG_DATA_HOME:-$HOME/.local/share}"
venv="${ASD_LLVM_VENV:-$data_dir/asd/llvm-venv}"
python="${PYTHON:-python3}"
want_libdevice=0
for arg in "$@"; do
    case "$arg" in
        --libdevice) want_libdevice=1 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "setup-cuda: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

die() { echo "setup-cuda: $*" >&2; exit 1; }

# The folder name follows the bundler crate locked in Cargo.lock.
bundler=$(awk '/^name = "tracel-llvm-bundler"/ { getline; gsub(/[" ]/, "", $0); sub(/version=/, "", $0); print; exit }' Cargo.lock)
[ -n "$bundler" ] || die "Cargo.lock names no tracel-llvm-bundler; has burn's cuda dependency changed?"
case "$bundler" in
    23.1.*) ;;
    *) die "Cargo.lock wants tracel-llvm-bundler $bundler, but PyPI's mlc-llvm-static $llvm_pkg is LLVM 23.1; update this script" ;;
esac

# LLVM's static libraries want zlib and zstd at link time (llvm-config --system-libs).
for lib in libz.so libzstd.so; do
    if ! ldconfig -p 2>/dev/null | grep -q "[[:space:]]$lib (" && ! compgen -G "/usr/lib*/$lib" >/dev/null \
        && ! compgen -G "/usr/lib*/*/$lib" >/dev/null; then
        pkg=$([ "$lib" = libz.so ] && echo zlib1g-dev || echo libzstd-dev)
        if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            echo "setup-cuda: installing $pkg (LLVM links $lib)"
            apt-get install -y "$pkg" >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y "$pkg" >/dev/null; }
        else
            die "LLVM links against $lib; install the $pkg package (or your system's equivalent)"
        fi
    fi
done

if [ ! -x "$venv/bin/python" ]; then
    echo "setup-cuda: creating venv $venv"
    if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
        rm -rf "$venv"
        if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            echo "setup-cuda: installing python3-venv"
            apt-get install -y python3-venv >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y python3-venv >/dev/null; }
        fi
        "$python" -m venv "$venv" || die "could not create a venv with $python (Debian: apt-get install python3-venv)"
    fi
fi
pkgs=("mlc-llvm-static==$llvm_pkg" "mlc-llvm-static-extra-targets==$llvm_pkg")
[ $want_libdevice = 1 ] && pkgs+=("nvidia-cuda-nvcc-cu12")
echo "setup-cuda: pip install ${pkgs[*]}"
"$venv/bin/pip" install --quiet --disable-pip-version-check "${pkgs[@]}" || die "pip install failed (see above)"

prefix=$("$venv/bin/python" -m mlc_llvm_static.config --prefix)
config="$prefix/bin/llvm-config"
[ -x "$config" ] || die "$config is missing or not executable"
version=$("$config" --version)
case "$version" in 23.1.*) ;; *) die "$config reports LLVM $version, expected 23.1.x" ;; esac
"$config" --targets-built | tr ' ' '\n' | grep -qx NVPTX \
    || die "$config has no NVPTX target; is mlc-llvm-static-extra-targets installed?"

target="$data_dir/tracel/tracel-llvm-$bundler"
mkdir -p "$data_dir/tracel"
if [ -e "$target" ] && [ ! -L "$target" ]; then
    # A bundle the build script downloaded itself: it works, leave it.
    [ -f "$target/.tracel-llvm-installed" ] || die "$target exists but is not a finished LLVM install; move it away and rerun"
    echo "setup-cuda: $target is a downloaded LLVM bundle already; nothing to link"
else
    ln -sfn "$prefix" "$target"
    # Created once: the build script reruns (and burn rebuilds) when its mtime changes.
    [ -f "$prefix/.tracel-llvm-installed" ] || touch "$prefix/.tracel-llvm-installed"
    echo "setup-cuda: $target -> $prefix (LLVM $version)"
fi

echo "setup-cuda: ready. Build with: cargo build --release --features cuda   (or --features cpu, wgpu, ...)"
if [ $want_libdevice = 1 ]; then
    nvcc_dir=$("$venv/bin/python" -c 'import nvidia.cuda_nvcc, os; print(os.path.dirname(nvidia.cuda_nvcc.__file__))' 2>/dev/null \
        || "$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cuda_nvcc"))')
    [ -f "$nvcc_dir/nvvm/libdevice/libdevice.10.bc" ] || die "no nvvm/libdevice/libdevice.10.bc under $nvcc_dir"
    echo "setup-cuda: at run time: export CUDA_PATH=$nvcc_dir"
fi
