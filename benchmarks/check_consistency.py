"""Do batch size and data parallelism leave per-sample numbers unchanged?

Evaluates the same tasks with our harness several ways (automatic batch size, each
`--override_batch_size` given, and `accelerate launch --multi_gpu --num_processes N`, which on
CPU starts N gloo ranks) and prints, per task and per way, the largest |Δ| between per-choice
loglikelihoods and the run with automatic batching, plus differing generations and metrics.
Exits 1 when any |Δ| exceeds 1e-4, a generation or a metric differs, or a run fails.

    python benchmarks/check_consistency.py --model DIR --data_dir MIRROR \
        --tasks "truthfulqa:mc,hellaswag,arc:challenge" --limit 30 --batch_sizes 1,16 --processes 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from compare_lm_eval import (
    DEFAULT_TASKS,
    LL_TOLERANCE,
    TaskRun,
    compare_generations,
    compare_loglikelihoods,
    our_command,
    parse_tasks,
    run_ours,
)


def compare_runs(base: dict[str, TaskRun], other: dict[str, TaskRun], tolerance: float) -> dict[str, dict]:
    """Per task: loglikelihood differences, differing generations and metrics against `base`."""
    out = {}
    for key in sorted(set(base) | set(other)):
        if key not in base or key not in other:
            out[key] = {"ok": False, "problem": "task missing from one run"}
            continue
        a, b = base[key], other[key]
        ll = compare_loglikelihoods(b.loglikelihoods, a.loglikelihoods, tolerance)
        gen = compare_generations(b.generations, a.generations)
        metrics = {m: (a.metrics.get(m), b.metrics.get(m)) for m in sorted(set(a.metrics) | set(b.metrics))}
        differing_metrics = {
            m: v for m, v in metrics.items() if v[0] is None or v[1] is None or abs(v[0] - v[1]) > tolerance
        }
        ok = not ll["over_tolerance"] and not ll["problems"] and not gen["differing_docs"] and not differing_metrics
        out[key] = {"ok": ok, "loglikelihoods": ll, "generations": gen, "differing_metrics": differing_metrics}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="transformers model folder (evaluated in float32)")
    parser.add_argument("--data_dir", required=True, help="hub mirror root (<repo>/<subset>/<split>.jsonl)")
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help="our task names, NAME or NAME|FEWSHOT, comma-separated")
    parser.add_argument("--limit", type=int, default=30, help="first N docs of each task")
    parser.add_argument("--batch_sizes", default="1,16", help="--override_batch_size values to compare (comma-separated)")
    parser.add_argument("--processes", type=int, default=2, help="data-parallel processes (0 or 1: skip that run)")
    parser.add_argument("--tolerance", type=float, default=LL_TOLERANCE, help="largest |Δ| accepted")
    parser.add_argument("--out", help="write the report (JSON) here")
    args = parser.parse_args(argv)
    model, data_dir = os.path.abspath(args.model), os.path.abspath(args.data_dir)
    specs = parse_tasks(args.tasks)

    ways: list[tuple[str, int | None, int]] = [("automatic batch", None, 1)]
    ways += [(f"--override_batch_size {b}", int(b), 1) for b in args.batch_sizes.split(",") if b.strip()]
    if args.processes > 1:
        ways.append((f"accelerate launch --num_processes {args.processes}", None, args.processes))

    report: dict[str, dict] = {}
    failed = False
    with tempfile.TemporaryDirectory(prefix="check_consistency_") as tmp:
        runs = {}
        for i, (label, batch_size, processes) in enumerate(ways):
            out_dir = os.path.join(tmp, f"run{i}")
            try:
                runs[label] = run_ours(
                    our_command(model, data_dir, specs, args.limit, out_dir, batch_size, processes), out_dir
                )
            except subprocess.CalledProcessError as e:
                print(f"!! {label}: the run failed (exit {e.returncode})")
                report[label] = {"failed": True}
                failed = True
        base_label = ways[0][0]
        if base_label not in runs:
            return 1
        for label, run in runs.items():
            if label != base_label:
                report[label] = compare_runs(runs[base_label], run, args.tolerance)

    print(f"\nper-choice loglikelihoods against the run with {base_label} (tolerance {args.tolerance:g}):")
    for label, tasks in report.items():
        if tasks.get("failed"):
            continue
        for key, rep in tasks.items():
            if "loglikelihoods" not in rep:
                print(f"  {label:<36} {key:<34} {rep['problem']}")
                continue
            ll, gen = rep["loglikelihoods"], rep["generations"]
            extra = f", {len(gen['differing_docs'])} generations differ" if gen["docs"] else ""
            extra += f", metrics differ: {rep['differing_metrics']}" if rep["differing_metrics"] else ""
            print(f"  {label:<36} {key:<34} max |Δ| = {ll['max_abs_delta']:.3g} (rel {ll['max_rel_delta']:.2g}) over {ll['choices']} choices, "
                  f"{ll['over_tolerance']} over tolerance{extra} {'OK' if rep['ok'] else 'MISMATCH'}")
            failed |= not rep["ok"]
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    print("\nMISMATCH" if failed else "\nconsistent")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
