#!/usr/bin/env python3
"""Collect the baseline runs under runs/s<seed>/ into results.json.

Usage: collect.py <runs_dir> <out_json> [seed ...]
Reads, per seed and mode (MSE, MAHALA):
  scores_<mode>/baseline_result_<machine>.csv  (the baseline's own result CSV)
  asd_eval_<mode>.json                         (our evaluator on the same scores)
  time_*.txt                                   (/usr/bin/time -v)
  work/results/dev_data/baseline/summarize/DCASE2024T2/*.csv (03_summarize_results.sh)
"""
import csv, glob, json, os, re, statistics, sys

MACHINES = ["ToyCar", "ToyTrain", "bearing", "fan", "gearbox", "slider", "valve"]
MODES = ["MSE", "MAHALA"]


def hmean(xs):
    eps = sys.float_info.epsilon
    xs = [max(x, eps) for x in xs]
    return len(xs) / sum(1.0 / x for x in xs)


def parse_time(path):
    out = {}
    if not os.path.exists(path):
        return None
    for line in open(path):
        line = line.strip()
        if line.startswith("Elapsed (wall clock) time"):
            t = line.rsplit(" ", 1)[1]
            parts = [float(p) for p in t.split(":")]
            s = 0.0
            for p in parts:
                s = s * 60 + p
            out["wall_s"] = round(s, 2)
        elif line.startswith("Maximum resident set size"):
            out["peak_rss_mib"] = round(int(line.rsplit(" ", 1)[1]) / 1024, 1)
        elif line.startswith("User time"):
            out["user_s"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("System time"):
            out["sys_s"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("Percent of CPU"):
            out["cpu_percent"] = line.rsplit(" ", 1)[1]
        elif line.startswith("Exit status"):
            out["exit_status"] = int(line.rsplit(" ", 1)[1])
    return out


def baseline_csv(path):
    rows = list(csv.reader(open(path)))
    head = rows[0]
    sec = rows[1]
    d = dict(zip(head, sec))
    return {
        "auc_source": float(d["AUC (source)"]),
        "auc_target": float(d["AUC (target)"]),
        "pauc": float(d["pAUC"]),
        "pauc_source": float(d["pAUC (source)"]),
        "pauc_target": float(d["pAUC (target)"]),
        "precision_source": float(d["precision (source)"]),
        "precision_target": float(d["precision (target)"]),
        "recall_source": float(d["recall (source)"]),
        "recall_target": float(d["recall (target)"]),
        "f1_source": float(d["F1 score (source)"]),
        "f1_target": float(d["F1 score (target)"]),
    }


def summarize_total(run, mode):
    """TOTAL_score_hmean from the baseline's own 03_summarize_results.sh output."""
    files = glob.glob(f"{run}/work/results/dev_data/baseline/summarize/DCASE2024T2/*.csv")
    for f in files:
        rows = list(csv.reader(open(f)))
        if not rows:
            continue
        head = rows[0]
        if "TOTAL_score_hmean" not in head:
            continue
        i = head.index("TOTAL_score_hmean")
        for r in rows[1:]:
            if r and f"baseline_{mode}" in ",".join(r[:2]) and len(r) > i:
                try:
                    return float(r[i])
                except ValueError:
                    pass
    return None


def main():
    runs, out = sys.argv[1], sys.argv[2]
    seeds = [int(s) for s in sys.argv[3:]] or [1, 2, 3]
    res = {
        "meta": {
            "baseline_repo": "github.com/nttcslab/dcase2023_task2_baseline_ae",
            "baseline_tag": "v3.3.0",
            "baseline_commit": "ce6566afdbae428f1b5f60f355e258b7aa1303bc",
            "settings": "baseline.yaml defaults: 100 epochs, batch 256, lr 1e-3, 128 mels x 5 frames, seed 13711, dev mode (-d)",
            "device": "CPU (no CUDA), OMP_NUM_THREADS=MKL_NUM_THREADS=1 (torch.get_num_threads()==1), DataLoader workers: default 0",
            "python": "CPython 3.11.7; torch 2.11.0 (from /work/pyref), numpy 1.26.4, scipy 1.10.1, librosa 0.9.2, scikit-learn 1.9.1, matplotlib 3.7.0",
            "data": "asd-snap synth --split dev --seed S --seconds 10 --train-source 180 --train-target 20 --test-per-cell 50",
            "official_score": "harmonic mean over the 7 machines x {AUC(source), AUC(target), pAUC} (DCASE 2024 Task 2 evaluator definition)",
            "timing_note": "wall times on a 2-core VM shared with concurrent cargo builds (load avg ~3)",
            "seeds_run": seeds,
        },
        "seeds": {}, "summary": {}}
    for seed in seeds:
        run = f"{runs}/s{seed}"
        if not os.path.exists(f"{run}/scores_MSE"):
            continue
        r = {"timing": {k: parse_time(f"{run}/time_{k}.txt") for k in ["train", "test_mse", "test_mahala"]},
             "modes": {}}
        for mode in MODES:
            per = {m: baseline_csv(f"{run}/scores_{mode}/baseline_result_{m}.csv") for m in MACHINES}
            vals = [v for m in MACHINES for v in (per[m]["auc_source"], per[m]["auc_target"], per[m]["pauc"])]
            asd = json.load(open(f"{run}/asd_eval_{mode}.json"))
            diffs = []
            for m in MACHINES:
                am = asd["machines"][m]
                per[m]["asd_evaluate"] = am
                for k_b, k_a in [("auc_source", "auc_source"), ("auc_target", "auc_target"), ("pauc", "pauc")]:
                    if k_a in am:
                        diffs.append(abs(per[m][k_b] - am[k_a]))
            r["modes"][mode] = {
                "official_score": hmean(vals),
                "official_score_asd_evaluate": asd.get("official_score"),
                "official_score_baseline_summarize": summarize_total(run, mode),
                "arith_mean_auc_s_auc_t_pauc": statistics.mean(vals),
                "max_abs_diff_baseline_vs_asd_evaluate": max(diffs) if diffs else None,
                "machines": per,
            }
        res["seeds"][str(seed)] = r
    for mode in MODES:
        xs = [res["seeds"][s]["modes"][mode]["official_score"] for s in res["seeds"]]
        if xs:
            res["summary"][mode] = {
                "official_score_per_seed": xs,
                "mean": statistics.mean(xs),
                "std": statistics.stdev(xs) if len(xs) > 1 else None,
                "min": min(xs), "max": max(xs),
            }
    json.dump(res, open(out, "w"), indent=2)


if __name__ == "__main__":
    main()
