#!/usr/bin/env bash
# The reference environment of `make bench`, outside the repository:
#   - a venv (ASD_BENCH_VENV, default ~/.local/share/asd/bench-venv) with the pinned packages of
#     tests/fixtures/gen/requirements-bench.txt (PyTorch, torchaudio, librosa, scikit-learn);
#   - the original BEATs code (microsoft/unilm, folder beats/ only) in ASD_BEATS_HOME (default
#     ~/.local/share/asd/unilm), for the BEATs row; it is read, never copied into the repository.
# Needs python3-venv, git and network access to PyPI and GitHub. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${ASD_BENCH_VENV:-$HOME/.local/share/asd/bench-venv}
beats=${ASD_BEATS_HOME:-$HOME/.local/share/asd/unilm}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet -r tests/fixtures/gen/requirements-bench.txt
if [ ! -f "$beats/beats/BEATs.py" ]; then
    rm -rf "$beats"
    git clone --quiet --depth 1 --filter=blob:none --sparse https://github.com/microsoft/unilm "$beats"
    git -C "$beats" sparse-checkout set beats
fi
echo "bench-venv: ready. make bench uses it by default; elsewhere:"
echo "  export ASD_BENCH_PYTHON=$venv/bin/python ASD_BEATS_SRC=$beats/beats"
