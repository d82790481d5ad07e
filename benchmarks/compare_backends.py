"""Per-sample agreement of two runs of the same tasks (e.g. `accelerate` vs `vllm`), from their details.

    python benchmarks/compare_backends.py RUN_A RUN_B [--tolerance 1e-3]

For each task: the largest |Δ| between per-choice loglikelihoods, the docs whose metrics differ
(continuous ones such as mc2 or perplexity within the tolerance; and how many of the differing docs
have two choices closer than the tolerance in run A, where the argmax may flip), and for generative tasks how many generations are identical. Exit 1 if any loglikelihood is
over the tolerance or a metric differs without such a near tie.
"""

from __future__ import annotations

import argparse
import sys

from lighteval_like.results.runs import load_one


def near_tie(lls: list[float], tolerance: float) -> bool:
    ordered = sorted(lls, reverse=True)
    return len(ordered) > 1 and ordered[0] - ordered[1] < tolerance


def same_metrics(a: dict, b: dict, tolerance: float) -> bool:
    """Equal 0/1 metrics; continuous ones (mc2, perplexity) within `tolerance`, relative past 1."""
    return a.keys() == b.keys() and all(
        a[k] == b[k] or (isinstance(a[k], float) and abs(a[k] - b[k]) <= tolerance * max(1.0, abs(a[k]))) for k in a
    )


def compare_task(a_rows: list[dict], b_rows: list[dict], tolerance: float) -> dict:
    deltas, differing, ties, same_generation, generations = [0.0], 0, 0, 0, 0
    for a, b in zip(a_rows, b_rows, strict=True):
        deltas += [abs(x - y) for x, y in zip(a["loglikelihoods"], b["loglikelihoods"], strict=True)]
        if a["generation"] is not None:
            generations += 1
            same_generation += a["generation"] == b["generation"]
        if not same_metrics(a["metrics"], b["metrics"], tolerance):
            differing += 1
            ties += near_tie(a["loglikelihoods"], tolerance)
    ok = max(deltas) <= tolerance and differing == ties and (not generations or same_generation >= 0.9 * generations)
    return {"docs": len(a_rows), "max_abs_delta": max(deltas), "metrics_differ": differing, "near_ties": ties,
            "generations": generations, "identical_generations": same_generation, "ok": ok}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    parser.add_argument("--tolerance", type=float, default=1e-3)
    args = parser.parse_args()
    a, b = load_one(args.run_a), load_one(args.run_b)
    all_ok = True
    print(f"{'task':40s} {'docs':>5s} {'max|Δll|':>10s} {'metrics differ':>15s} {'near ties':>10s} {'same generations':>17s}")
    for task in sorted(a.scores):
        if task not in b.scores:
            continue
        r = compare_task(a.details(task), b.details(task), args.tolerance)
        all_ok &= r["ok"]
        gens = f"{r['identical_generations']}/{r['generations']}" if r["generations"] else "-"
        print(f"{task:40s} {r['docs']:5d} {r['max_abs_delta']:10.2e} {r['metrics_differ']:15d} {r['near_ties']:10d} "
              f"{gens:>17s}  {'ok' if r['ok'] else 'MISMATCH'}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
