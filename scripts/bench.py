#!/usr/bin/env python3
"""`make bench`: run the speed suite against its references and rewrite BENCHMARKS.md's table.

Every job runs the asd side (release build) on each CPU backend and the reference side
(PyTorch / torchaudio / librosa / scikit-learn, the original BEATs code) at each thread count,
back to back in one sitting, and reports the median time, the ratio against the reference
measured in that sitting, and peak memory. The table between the `make bench` markers in
BENCHMARKS.md is replaced (temp file, then rename); raw results go to target/bench/results.jsonl.

Environment:
  ASD_BENCH_PYTHON  python with the reference packages (default: the venv that
                    scripts/bench-venv.sh makes, ~/.local/share/asd/bench-venv/bin/python)
  ASD_BEATS_SRC     folder with the original BEATs.py/backbone.py/modules.py (microsoft/unilm
                    beats/; scripts/bench-venv.sh fetches it); without it the BEATs row has no
                    reference
Options: --threads 1,2  --backends flex,ndarray  --only NAME[,NAME]  --quick (small sizes, a smoke
run of the harness; it does not touch BENCHMARKS.md)  --no-write.
"""
import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
GEN = ROOT / "tests" / "fixtures" / "gen"
# Jobs of a minute or more per step: run at the highest thread count only.
MAX_THREADS_ONLY = {"eat_lora_step", "beats_lora_step"}
# Jobs without burn tensors: run once, shown in the first backend's column.
PLAIN_RUST = {"fbank", "logmel", "knn"}
BEGIN, END = "<!-- make bench: begin -->", "<!-- make bench: end -->"


def jobs(quick):
    """(name, title, asd args, reference args or None, metric, repeat, reference note)."""
    q = quick
    dbc = ["--batch", "2" if q else "16", "--seconds", "2" if q else "10", "--steps", "1" if q else "3"]
    nf = ["--batch", "16" if q else "128", "--steps", "2" if q else "10"]
    runs = ["--runs", "1" if q else "3"]
    lora = ["--batch", "2" if q else "8", "--steps", "1"]
    default_src = pathlib.Path.home() / ".local/share/asd/unilm/beats"
    beats_src = os.environ.get("ASD_BEATS_SRC") or (str(default_src) if default_src.is_dir() else None)
    beats_ref = [str(GEN / "beats_torch.py"), "--beats-src", beats_src] + runs if beats_src else None
    clips = ["--clips", "5" if q else "50"]
    return [
        ("fbank", "BEATs Kaldi fbank, 10-s clips", ["frontends"] + clips, [str(GEN / "bench_frontends.py")] + clips,
         ("clips_per_s", "fbank_beats"), 3, "torchaudio"),
        ("logmel", "NF-CDEE log-mel (8192/512, 256 mels), 10-s clips", ["frontends"] + clips,
         [str(GEN / "bench_frontends.py")] + clips, ("clips_per_s", "logmel_nf_cdee"), 3, "librosa"),
        ("dbc_step", "Dual Branch CNN training step, batch 16 × 10 s", ["bench", "train-step"] + dbc,
         [str(GEN / "dual_branch_cnn_torch.py"), "--bench"] + dbc, ("s", "median_step_s"), 1, "PyTorch"),
        ("nf_cdee_step", "NF-CDEE training step, batch 128", ["bench", "train-step", "--model", "nf_cdee"] + nf,
         [str(GEN / "nf_cdee_torch.py"), "--bench", "--warmup", "1"] + nf, ("s", "median_step_s"), 1, "Pyro/PyTorch"),
        ("eat_lora_step", "EAT-LoRA training step, batch 8 × 10 s", ["bench", "train-step", "--model", "eat_lora"] + lora,
         [str(GEN / "lora_torch.py"), "--model", "eat"] + lora, ("s", "median_step_s"), 1, "PyTorch"),
        ("beats_lora_step", "BEATs-LoRA training step, batch 8 × 10 s",
         ["bench", "train-step", "--model", "beats_lora"] + lora,
         [str(GEN / "lora_torch.py"), "--model", "beats", "--beats-src", beats_src] + lora if beats_src else None,
         ("s", "median_step_s"), 1, "PyTorch + original BEATs"),
        ("eat_forward", "EAT-base forward, one 10-s clip", ["bench", "eat-forward"] + runs,
         [str(GEN / "eat_torch.py")] + runs, ("s", "median_s"), 1, "PyTorch"),
        ("eat_forward_repack", "EAT-base forward, one 10-s clip, weights repacked every pass",
         ["bench", "eat-forward", "--repack"] + runs, [str(GEN / "eat_torch.py")] + runs, ("s", "median_s"), 1, "PyTorch"),
        ("beats_forward", "BEATs iter3 forward, one 10-s clip", ["bench", "beats-forward"] + runs, beats_ref,
         ("s", "median_s"), 1, "original BEATs"),
        ("beats_forward_repack", "BEATs iter3 forward, one 10-s clip, weights repacked every pass",
         ["bench", "beats-forward", "--repack"] + runs, beats_ref, ("s", "median_s"), 1, "original BEATs"),
        ("knn", "kNN back-end, 1000 clips × 2 banks of 1000 × 256-d",
         ["bench", "knn"] + (["--test", "100", "--bank", "100"] if q else []) + ["--runs", "5"],
         [str(GEN / "knn_sklearn_bench.py")] + (["--test", "100", "--bank", "100"] if q else []) + ["--runs", "5"],
         ("s", "median_s"), 1, "scikit-learn"),
    ]


def run(cmd, env):
    """One program run: its last JSON object, or an error line."""
    p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()
        return None, f"exit {p.returncode}: {tail[-1] if tail else ''}"[:160]
    out = p.stdout
    start = out.find("{")
    try:
        return json.loads(out[start:]), None
    except ValueError:
        return None, f"no JSON in output: {out[:120]!r}"


def value(obj, metric):
    unit, key = metric
    if unit == "clips_per_s":
        return obj[key]["clips_per_s"] if isinstance(obj.get(key), dict) else None
    return obj.get(key)


def measure(cmd, env, metric, repeat):
    """Median value over `repeat` runs, peak RSS of the last, the error if any."""
    vals, rss, err = [], None, None
    for _ in range(repeat):
        obj, err = run(cmd, env)
        if obj is None:
            return None, None, err
        v = value(obj, metric)
        if v is None:
            return None, None, f"no {metric[1]} in output"
        vals.append(float(v))
        rss = obj.get("peak_rss_mib", rss)
    return statistics.median(vals), rss, None


def speed_ratio(unit, asd, ref):
    """asd speed / reference speed (> 1: asd is faster)."""
    if asd is None or ref is None or asd <= 0 or ref <= 0:
        return None
    return asd / ref if unit == "clips_per_s" else ref / asd


def fmt(unit, v):
    if v is None:
        return "—"
    if unit == "clips_per_s":
        return f"{v:.0f} clips/s"
    return f"{v:.3f} s" if v < 10 else f"{v:.1f} s"


def machine():
    flags = open("/proc/cpuinfo").read()
    cpu = next((l.split(":", 1)[1].strip() for l in flags.splitlines() if l.startswith("model name")), "?")
    avx = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
    mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0) / 2**20
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{cpu} ({avx}), {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} {platform.release()}, {rustc}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--backends", default="flex,ndarray")
    ap.add_argument("--only", default="")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target")))
    a = ap.parse_args()
    py = os.environ.get("ASD_BENCH_PYTHON", str(pathlib.Path.home() / ".local/share/asd/bench-venv/bin/python"))
    if not pathlib.Path(py).exists():
        sys.exit(f"bench: no reference python at {py}: run scripts/bench-venv.sh or set ASD_BENCH_PYTHON")
    target = pathlib.Path(a.target_dir) / "release"
    asd, frontends = str(target / "asd"), str(target / "examples" / "bench_frontends")
    threads = [int(t) for t in a.threads.split(",")]
    backends = a.backends.split(",")
    only = set(filter(None, a.only.split(",")))
    load = open("/proc/loadavg").read().split()[:3]
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = []
    for name, title, asd_args, ref_args, metric, repeat, ref_name in jobs(a.quick):
        if only and name not in only:
            continue
        for t in threads:
            if name in MAX_THREADS_ONLY and t != max(threads):
                continue
            env = dict(os.environ, RAYON_NUM_THREADS=str(t), OMP_NUM_THREADS=str(t), MKL_NUM_THREADS=str(t),
                       OPENBLAS_NUM_THREADS=str(t), NUMBA_NUM_THREADS=str(t))
            row = {"job": name, "title": title, "threads": t, "unit": metric[0], "reference": ref_name, "asd": {}}
            if ref_args is None:
                row["ref"], row["ref_rss"], row["ref_err"] = None, None, "reference not run (ASD_BEATS_SRC unset)"
            else:
                ref_cmd = [py] + ref_args + ["--threads", str(t)]
                row["ref"], row["ref_rss"], row["ref_err"] = measure(ref_cmd, env, metric, repeat)
                row["ref_cmd"] = " ".join(ref_cmd)
            for b in backends:
                if b != backends[0] and (t != max(threads) or name in MAX_THREADS_ONLY):
                    continue  # other backends: side by side at the highest thread count, no LoRA steps
                if name in PLAIN_RUST:
                    if b != backends[0]:
                        continue  # no burn backend involved
                    cmd = [frontends, "--threads", str(t)] + asd_args[1:] if asd_args[0] == "frontends" else [asd] + asd_args
                else:
                    cmd = [asd] + asd_args + ["--backend", b]
                v, rss, err = measure(cmd, env, metric, repeat)
                row["asd"][b] = {"value": v, "rss": rss, "err": err, "cmd": " ".join(cmd),
                                 "ratio": speed_ratio(metric[0], v, row["ref"])}
            print(json.dumps(row), flush=True)
            rows.append(row)
    out_dir = pathlib.Path(a.target_dir) / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "results.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    if a.quick or a.no_write:
        return
    write_table(rows, backends, py, started, load)


def table(rows, backends):
    head = "| job | threads | reference | " + " | ".join(f"asd {b} | {b} speed vs reference" for b in backends)
    head += " | peak RSS reference / asd " + backends[0] + " |"
    lines = [head, "|" + "---|" * (4 + 2 * len(backends))]
    for r in rows:
        ref = fmt(r["unit"], r["ref"]) + (f" ({r['ref_err']})" if r["ref_err"] else "")
        cells = [r["title"], str(r["threads"]), f"{ref} ({r['reference']})"]
        first_rss = None
        for b in backends:
            x = r["asd"].get(b)
            if x is None:
                cells += ["—", ""]
                continue
            first_rss = first_rss if first_rss is not None else x["rss"]
            val = fmt(r["unit"], x["value"]) if not x["err"] else f"failed: {x['err']}"
            ratio = "—" if x["ratio"] is None else f"{x['ratio']:.2f}×"
            ratio = f"**{ratio}**" if x["ratio"] is not None and x["ratio"] >= 1 else ratio
            cells += [val, ratio]
        rss = "—" if not (r["ref_rss"] or first_rss) else f"{r['ref_rss'] or '—'} / {first_rss or '—'} MiB"
        lines.append("| " + " | ".join(cells + [rss]) + " |")
    return lines


def write_table(rows, backends, py, started, load):
    versions = subprocess.run([py, "-c", "import torch, sklearn, sys; print(sys.version.split()[0], torch.__version__, "
                               "sklearn.__version__)"], capture_output=True, text=True).stdout.split()
    body = [
        BEGIN,
        f"Generated by `make bench` ({started}; load average before: {' '.join(load)}). Machine: {machine()}.",
        f"asd: release build. Reference: Python {' '.join(versions[:1])}, PyTorch {' '.join(versions[1:2])}, "
        f"scikit-learn {' '.join(versions[2:3])}, CPU execution. Times are medians (training steps after one",
        "warm-up step; forwards after one warm-up pass; front-ends the median of 3 runs of 50 clips). "
        "\"Speed vs reference\" is the reference's time over asd's (above 1: asd is faster), both measured",
        "back to back in this sitting; bold where asd is faster. Other backends run at the highest thread count",
        "and not the LoRA steps (minutes per step); front-ends and kNN use no burn backend. asd's encoder",
        "forwards keep the Linear weights packed by the warm-up pass, as scoring does over a dataset; the",
        "\"repacked\" rows read and pack them on every pass. Commands: target/bench/results.jsonl (`cmd`, `ref_cmd`).",
        "",
    ] + table(rows, backends) + [END]
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text()
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: "\n".join(body), text, flags=re.S)
    else:
        sys.exit("bench: BENCHMARKS.md has no `make bench` markers")
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    print(f"bench: rewrote the table in {path}")


if __name__ == "__main__":
    main()
