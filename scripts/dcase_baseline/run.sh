#!/usr/bin/env bash
# Run the OFFICIAL DCASE 2024 Task 2 autoencoder baseline (unmodified) on a
# synthetic dev set in the DCASE 2024 layout, CPU only, one thread.
#
# Usage: scripts/dcase_baseline/run.sh <baseline_code_dir> <synth_data_root> <out_dir>
#   <synth_data_root> holds dev_data/raw/<machine>/{train,test}/section_00_*.wav
#   (e.g. /work/bench/asd-snap synth --out ROOT --split dev --seed S --seconds 10
#         --train-source 180 --train-target 20 --test-per-cell 50)
#
# Setup notes (what was used for the reported numbers):
#   * Code: github.com/nttcslab/dcase2023_task2_baseline_ae, tag v3.3.0
#     = commit ce6566afdbae428f1b5f60f355e258b7aa1303bc (merge of branch
#     2024t2/v3.x.x, head 9f98db6 "Made DCASE2024 Task2 legacy"; identical tree),
#     i.e. the DCASE2024T2 release of the baseline. Obtained as a bare mirror and
#       git --git-dir=<mirror> archive v3.3.0 | tar x -C <baseline_code_dir>
#     No file of it is edited; the script copies it into <out_dir>/work because the
#     code writes models/, logs/, results/ and the feature pickle cache
#     (data/dcase2024t2/dev_data/processed) relative to its working directory.
#   * Python: venv /work/bench/ae_baseline/venv (CPython 3.11.7), made with
#       python3.11 -m venv venv
#       venv/bin/pip install scipy==1.10.1 librosa==0.9.2 matplotlib==3.7.0 \
#           tqdm==4.63 seaborn==0.12.2 fasteners==0.18 pyYAML==6.0
#     (= requirements.txt minus torch/torchvision; pip resolved numpy 1.26.4,
#      numba 0.68.1, scikit-learn 1.9.1, pandas 3.0.6), then torch 2.11.0 (CPU use)
#     is taken from /work/pyref via a .pth file appended after the venv's own
#     site-packages:
#       echo /work/pyref/lib/python3.11/site-packages \
#           > venv/lib/python3.11/site-packages/zz_pyref_torch.pth
#     (a separate venv so /work/pyref keeps its numpy 2.4.6; scipy 1.10.1 and
#      matplotlib 3.7.0 need numpy < 2).  Override with PYVENV=<venv dir>.
#   * Settings: baseline.yaml defaults (100 epochs, batch 256, lr 1e-3, 128 mels,
#     5 frames, seed 13711). No CUDA visible -> CPU. OMP/MKL threads = 1
#     (torch picks its intra-op thread count from OMP_NUM_THREADS). DataLoader
#     workers: code default (0, main process).
#   * Scripts run: 01_train_2024t2.sh -d ; 02a_test_2024t2.sh -d (MSE) ;
#     02b_test_2024t2.sh -d (MAHALA) ; 03_summarize_results.sh DCASE2024T2 -d
#   * Cross-check: the anomaly_score CSVs are copied under official names
#     (anomaly_score_<machine>_section_00_test.csv) and scored by
#       $ASD evaluate --scores <dir> --ground-truth <synth_data_root> --json
set -euo pipefail

CODE=$(readlink -f "$1")
DATA=$(readlink -f "$2")
OUT=$(mkdir -p "$3" && readlink -f "$3")
PYVENV=${PYVENV:?set PYVENV to the baseline venv (see the setup notes above)}
ASD=$(readlink -f "${ASD:-target/debug/asd}")
MACHINES="ToyCar ToyTrain bearing fan gearbox slider valve"

export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1
export CUDA_VISIBLE_DEVICES=""
export PATH="$PYVENV/bin:$PATH"   # the baseline calls `python3`

WORK="$OUT/work"
rm -rf "$WORK"
mkdir -p "$WORK"
cp -a "$CODE/." "$WORK/"
# documented data layout: data/dcase2024t2/dev_data/raw/<machine>/{train,test}
for m in $MACHINES; do
    ln -s "$DATA/dev_data/raw/$m" "$WORK/data/dcase2024t2/dev_data/raw/$m"
done

cd "$WORK"
{
    echo "python3: $(command -v python3)"
    python3 -c 'import torch, numpy, scipy, librosa, sklearn; print("torch", torch.__version__, "threads", torch.get_num_threads(), "cuda", torch.cuda.is_available()); print("numpy", numpy.__version__, "scipy", scipy.__version__, "librosa", librosa.__version__, "sklearn", sklearn.__version__)'
    nproc; uptime
} > "$OUT/env.txt" 2>&1

/usr/bin/time -v -o "$OUT/time_train.txt"    bash 01_train_2024t2.sh -d  > "$OUT/train.log"    2>&1
/usr/bin/time -v -o "$OUT/time_test_mse.txt" bash 02a_test_2024t2.sh -d > "$OUT/test_mse.log"    2>&1
/usr/bin/time -v -o "$OUT/time_test_mahala.txt" bash 02b_test_2024t2.sh -d > "$OUT/test_mahala.log" 2>&1
bash 03_summarize_results.sh DCASE2024T2 -d > "$OUT/summarize.log" 2>&1 || echo "summarize failed (see summarize.log)" >&2

# copy the baseline's outputs under the official file names and cross-check
for mode in MSE MAHALA; do
    src="$WORK/results/dev_data/baseline_$mode"
    dst="$OUT/scores_$mode"
    mkdir -p "$dst"
    for m in $MACHINES; do
        cp "$src/anomaly_score_DCASE2024T2${m}_section_00_test_seed13711_id(0_).csv"   "$dst/anomaly_score_${m}_section_00_test.csv"
        cp "$src/decision_result_DCASE2024T2${m}_section_00_test_seed13711_id(0_).csv" "$dst/decision_result_${m}_section_00_test.csv"
        cp "$src/result_DCASE2024T2${m}_test_seed13711_id(0_)_roc.csv"                 "$dst/baseline_result_${m}.csv"
    done
    "$ASD" --quiet evaluate --scores "$dst" --ground-truth "$DATA" --json > "$OUT/asd_eval_$mode.json"
done
# (after the reported run, the 4.2 GB feature cache work/data/dcase2024t2/dev_data/processed was deleted by hand)
echo "done: $OUT"
