"""Wall time, peak memory and per-sample parity: lighteval-like vs lm-eval 0.4.13 vs lighteval 0.13.

    python benchmarks/compare_harnesses.py --model DIR --data_dir MIRROR \
        --lm_eval_python VENV/bin/python --lighteval_python VENV2/bin/python \
        [--vllm_python .venv-vllm/bin/python]   # also `lighteval-like vllm` and lm-eval's `--model vllm` \
        [--tasks truthfulqa,hellaswag,arc,mmlu,gsm8k,bigbench,gsm8k5,gsm8k_cot] [--limit 40] [--batch_size 8] \
        [--repeats 1] [--stand_in_train]   # gsm8k5 needs it: the mirror has no gsm8k train split

Every harness runs as a whole command on the same model folder, the same mirror rows (the first
`--limit` docs) and the same batch size; runs alternate between harnesses, and each figure is
the median over `--repeats`. Peak memory is the largest summed RSS of the command's process
tree (sampled every 50 ms). Parity compares our per-choice loglikelihoods (or gsm8k generations)
with lm-eval's logged samples through `compare_lm_eval`.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

MMLU_SUBJECTS = ["anatomy", "astronomy", "college_biology"]
# Five BIG-Bench-Hard multiple-choice tasks of the shared mirror, 0-shot; only lm-eval runs beside
# ours (no lighteval counterpart is wired for them).
BIGBENCH_TASKS = ["causal_judgment", "date_understanding", "logical_deduction", "navigate", "snarks"]


@dataclass
class Benchmark:
    """One benchmark task as each harness names it."""

    ours: str
    lm_eval: str
    lighteval: str | None
    lm_eval_fewshot: int = 0


BENCHMARKS = {
    "truthfulqa": Benchmark("leaderboard|truthfulqa:mc|0|0", "truthfulqa_mc1,truthfulqa_mc2", "leaderboard|truthfulqa:mc|0"),
    "hellaswag": Benchmark("leaderboard|hellaswag|0|0", "hellaswag", "leaderboard|hellaswag|0"),
    "arc": Benchmark("leaderboard|arc:challenge|0|0", "arc_challenge", "leaderboard|arc:challenge|0"),
    "mmlu": Benchmark(
        ",".join(f"leaderboard|mmlu:{s}|5|0" for s in MMLU_SUBJECTS),
        ",".join(f"mmlu_{s}" for s in MMLU_SUBJECTS),
        ",".join(f"leaderboard|mmlu:{s}|5" for s in MMLU_SUBJECTS),
        lm_eval_fewshot=5,
    ),
    "gsm8k": Benchmark("leaderboard|gsm8k|0|0", "gsm8k", "leaderboard|gsm8k|0"),
    "bigbench": Benchmark(
        ",".join(f"bigbench|{t}|0|0" for t in BIGBENCH_TASKS),
        ",".join(f"bigbench_{t}_multiple_choice" for t in BIGBENCH_TASKS),
        None,
    ),
    "gsm8k5": Benchmark("leaderboard|gsm8k|5|0", "gsm8k", "leaderboard|gsm8k|5", lm_eval_fewshot=5),
    "gsm8k_cot": Benchmark("lighteval|gsm8k_cot|8|0", "gsm8k_cot", None, lm_eval_fewshot=8),
}


@dataclass
class Run:
    seconds: float
    peak_mb: float
    ok: bool
    output_dir: str
    tail: str = ""


@dataclass
class Figures:
    runs: dict[str, list[Run]] = field(default_factory=dict)

    def median(self, harness: str) -> float | None:
        good = [r.seconds for r in self.runs.get(harness, []) if r.ok]
        return statistics.median(good) if good else None

    def peak(self, harness: str) -> float | None:
        good = [r.peak_mb for r in self.runs.get(harness, []) if r.ok]
        return max(good) if good else None


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def timed(cmd: list[str], env: dict, cwd: str) -> tuple[float, float, int, str]:
    """(wall seconds, peak tree RSS in MB, exit code, output tail) of one command."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        ps = psutil.Process(proc.pid)
        peak = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                try:
                    peak = max(peak, _tree_rss(ps))
                except psutil.Error:
                    pass
                stop.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        stop.set()
        sampler.join()
        seconds = time.perf_counter() - start
        log.seek(0)
        tail = log.read()[-3000:]
    return seconds, peak / 2**20, code, tail


def commands(name: str, bench: Benchmark, args, out: str) -> dict[str, list[str]]:
    ours = [
        sys.executable, "-m", "lighteval_like", "accelerate",
        "--model_args", f"pretrained={args.model},dtype=float32", "--tasks", bench.ours,
        "--max_samples", str(args.limit), "--override_batch_size", str(args.batch_size),
        "--output_dir", os.path.join(out, "ours"), "--dataset_dir", args.data_dir, "--save_details", "--no_cache",
    ]
    cmds = {"lighteval-like": ours}
    if args.lm_eval_python:
        cmds["lm-eval"] = [
            args.lm_eval_python, os.path.join(HERE, "_lm_eval_offline.py"), "--mirror", args.data_dir, "--",
            "--model", "hf", "--model_args", f"pretrained={args.model},dtype=float32", "--tasks", bench.lm_eval,
            "--num_fewshot", str(bench.lm_eval_fewshot), "--limit", str(args.limit),
            "--batch_size", str(args.batch_size), "--device", "cpu", "--log_samples",
            "--output_path", os.path.join(out, "lm-eval"),
        ]
    if args.vllm_python:  # vLLM's own environment: our `vllm` entry point and lm-eval's `--model vllm`
        cmds["lighteval-like vllm"] = [
            args.vllm_python, "-m", "lighteval_like", "vllm", "--model_args", f"pretrained={args.model},dtype=float32",
            "--tasks", bench.ours, "--max_samples", str(args.limit), "--output_dir", os.path.join(out, "ours-vllm"),
            "--dataset_dir", args.data_dir, "--save_details", "--no_cache",
        ]
        cmds["lm-eval vllm"] = [
            args.vllm_python, os.path.join(HERE, "_lm_eval_offline.py"), "--mirror", args.data_dir, "--",
            "--model", "vllm", "--model_args", f"pretrained={args.model},dtype=float32,enforce_eager=True",
            "--tasks", bench.lm_eval, "--num_fewshot", str(bench.lm_eval_fewshot), "--limit", str(args.limit),
            "--batch_size", "auto", "--log_samples", "--output_path", os.path.join(out, "lm-eval-vllm"),
        ]
    if args.lighteval_python and bench.lighteval:
        cmds["lighteval"] = [
            args.lighteval_python, os.path.join(HERE, "_lighteval_offline.py"), "--mirror", args.data_dir, "--",
            # a fresh cache_dir: lighteval 0.13 otherwise reuses the samples of an earlier run
            "accelerate",
            f"model_name={args.model},batch_size={args.batch_size},dtype=float32,cache_dir={out}/lighteval-cache",
            bench.lighteval,
            "--max-samples", str(args.limit), "--output-dir", os.path.join(out, "lighteval"),
        ]
    return cmds


def ours_scoring(output_dir: str) -> dict:
    files = glob.glob(os.path.join(output_dir, "ours", "results", "*", "results_*.json"))
    if not files:
        return {}
    return json.load(open(sorted(files)[-1]))["summary_general"].get("scoring", {})


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--lm_eval_python", default=os.environ.get("LM_EVAL_PYTHON"))
    parser.add_argument("--lighteval_python", default=os.environ.get("LIGHTEVAL_PYTHON"))
    parser.add_argument("--vllm_python", default=os.environ.get("VLLM_PYTHON"),
                        help="python of an environment with vLLM, lighteval-like and lm-eval (make vllm-bench-env)")
    parser.add_argument("--tasks", default="truthfulqa,hellaswag,arc,mmlu,gsm8k,bigbench")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--gsm8k_limit", type=int, default=10, help="generation is slow on CPU")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--skip_lighteval", action="store_true")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("--stand_in_train", action="store_true",
                        help="give datasets without a train split one (their validation, else test split), so both "
                             "harnesses draw few-shot examples from it (gsm8k5: the mirror has no gsm8k train split)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    args.model, args.data_dir = os.path.abspath(args.model), os.path.abspath(args.data_dir)
    if args.skip_lighteval:
        args.lighteval_python = None
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
    report = {}
    work = tempfile.mkdtemp(prefix="compare-harnesses-")
    if args.stand_in_train:
        from compare_lm_eval import mirror_with_train

        args.data_dir = mirror_with_train(args.data_dir, os.path.join(work, "mirror"))
    for name in args.tasks.split(","):
        bench = BENCHMARKS[name]
        limit = args.gsm8k_limit if name.startswith("gsm8k") else args.limit
        run_args = argparse.Namespace(**{**vars(args), "limit": limit})
        figures = Figures()
        last_dirs: dict[str, str] = {}
        for rep in range(args.repeats):
            out = os.path.join(work, f"{name}-{rep}")
            cmds = commands(name, bench, run_args, out)
            order = list(cmds)
            order = order[rep % len(order):] + order[: rep % len(order)]  # alternate who goes first
            for harness in order:
                seconds, peak, code, tail = timed(cmds[harness], env, work)
                figures.runs.setdefault(harness, []).append(Run(seconds, peak, code == 0, out, tail))
                last_dirs[harness] = out
                status = "ok" if code == 0 else f"FAILED (exit {code})"
                print(f"[{name} #{rep}] {harness:15s} {seconds:8.1f} s  peak {peak:7.0f} MB  {status}", flush=True)
                if code != 0:
                    print(tail[-1500:], flush=True)
        ours = figures.median("lighteval-like")
        entry = {"limit": limit, "batch_size": args.batch_size, "scoring": ours_scoring(last_dirs["lighteval-like"])}
        for harness in figures.runs:
            entry[harness] = {"seconds": figures.median(harness), "peak_mb": figures.peak(harness)}
            if ours and figures.median(harness):
                entry[harness]["ratio_to_ours"] = round(figures.median(harness) / ours, 2)
        if "lm-eval" in last_dirs and figures.median("lm-eval"):
            entry["parity"] = parity_report(
                os.path.join(last_dirs["lighteval-like"], "ours"), os.path.join(last_dirs["lm-eval"], "lm-eval")
            )
        report[name] = entry
    print("\n" + format_report(report))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return 0


def parity_report(ours_dir: str, lm_eval_dir: str) -> dict:
    """Per-sample parity of our run with lm-eval's logged samples (the checks of compare_lm_eval)."""
    from compare_lm_eval import compare_task, lm_eval_run, read_our_outputs, run_lm_eval, task_pair

    ours = read_our_outputs(ours_dir)
    pairs = {key: task_pair(key.split("|")[1], key.split("|")[0]) for key in ours}
    lm_tasks = [t for pair in pairs.values() for t in pair.lm_eval_tasks]
    # reuse=True: only read the finished run in `lm_eval_dir` (nothing is launched).
    results, samples = run_lm_eval("", "", "", lm_tasks, 0, 0, 0, lm_eval_dir, reuse=True)
    tasks = {key: compare_task(pair, ours[key], lm_eval_run(pair, results, samples)) for key, pair in pairs.items()}
    lls = [t["loglikelihoods"] for t in tasks.values() if "loglikelihoods" in t]
    gens = [t["generations"] for t in tasks.values() if "generations" in t]
    parts = []
    if lls:
        parts.append(f"max|Δll| {max(x['max_abs_delta'] for x in lls):.1e}, {sum(x['over_tolerance'] for x in lls)} over 1e-4")
    if gens:
        parts.append(f"{sum(len(g['differing_docs']) for g in gens)} of {sum(g['docs'] for g in gens)} generations differ")
    parts.append("metrics equal" if all(t["ok"] for t in tasks.values()) else "MISMATCH")
    return {"ok": all(t["ok"] for t in tasks.values()), "summary": "; ".join(parts), "tasks": tasks}


def format_report(report: dict) -> str:
    head = (f"{'task':11s} {'ours s':>8s} {'lm-eval s':>10s} {'x faster':>9s} {'lighteval s':>12s} {'x faster':>9s}"
            f" {'ours MB':>8s} {'lm-eval MB':>11s} {'fwd/unique':>10s}  parity vs lm-eval")
    lines = [head, "-" * len(head)]
    for name, e in report.items():
        ours, lm, le = e.get("lighteval-like", {}), e.get("lm-eval", {}), e.get("lighteval", {})

        def num(x, fmt):
            return format(x, fmt) if isinstance(x, (int, float)) else "-"

        lines.append(
            f"{name:11s} {num(ours.get('seconds'), '8.1f')} {num(lm.get('seconds'), '10.1f')} "
            f"{num(lm.get('ratio_to_ours'), '9.2f')} {num(le.get('seconds'), '12.1f')} {num(le.get('ratio_to_ours'), '9.2f')} "
            f"{num(ours.get('peak_mb'), '8.0f')} {num(lm.get('peak_mb'), '11.0f')} "
            f"{num(e.get('scoring', {}).get('forwarded_over_unique'), '10.3f')}  {e.get('parity', {}).get('summary', '-')}"
        )
    lines += ["", "every harness (median seconds, peak MB):"]
    for name, e in report.items():
        figures = [f"{h} {v['seconds']:.1f} s {v['peak_mb']:.0f} MB" for h, v in e.items()
                   if isinstance(v, dict) and v.get("seconds") is not None]
        lines.append(f"{name:11s} " + " | ".join(figures))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
