"""HumanEval generations side by side: two runs, each ours or lm-eval's, doc by doc.

    python benchmarks/compare_humaneval.py RUN_A RUN_B [--execute] [--allow_weaker_isolation] [--out report.json]

A run is our `--output_dir` (or its results file) saved with `--save_details`, read for
`lighteval|humaneval|0`, or lm-eval's `--log_samples` output for `humaneval` (its samples jsonl,
or a folder holding one). Docs are matched by index (both take the test split in order); the
completion compared is the generated text after each harness cut it at its stop sequences
(ours: the details' `generation`; lm-eval: `resps`, before its filter prepends the prompt).
Prints the docs compared, how many prompts and completions are identical, each differing
task_id with the first differing character and both texts there, and each run's pass@1.
Ours carries its pass@1; lm-eval run with `--predict_only` (or the `code_eval` stand-in of
`_lm_eval_offline.py`) has none, and `--execute` runs its completions through our sandbox,
program assembled as our task does (prompt + completion + test + check(entry_point)).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from dataclasses import dataclass, field

TASK_KEY = "lighteval|humaneval|0"
CONTEXT = 30  # characters shown either side of the first difference


@dataclass
class Side:
    """One run's view of HumanEval, by doc index."""

    label: str
    harness: str  # "ours" or "lm-eval"
    prompts: dict[int, str] = field(default_factory=dict)
    completions: dict[int, str] = field(default_factory=dict)
    passed: dict[int, bool] = field(default_factory=dict)  # empty when the run executed nothing
    docs: dict[int, dict] = field(default_factory=dict)  # lm-eval logs the dataset rows


def lm_eval_samples_file(path: str) -> str | None:
    """lm-eval's samples jsonl named by `path` (the file, or the only one under a folder)."""
    if os.path.isfile(path):
        return path if path.endswith(".jsonl") else None
    found = glob.glob(os.path.join(glob.escape(path), "**", "samples_humaneval_*.jsonl"), recursive=True)
    if len(found) > 1:
        raise SystemExit(f"{path} holds {len(found)} lm-eval humaneval sample files: name one")
    return found[0] if found else None


def lm_eval_samples(path: str):
    """(doc index, rendered prompt, first response, row) of each line of lm-eval's logged samples."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            args = row["arguments"]
            prompt = args["gen_args_0"]["arg_0"] if isinstance(args, dict) else args[0][0]
            yield int(row["doc_id"]), prompt, row["resps"][0][0], row


def read_lm_eval(path: str) -> Side:
    side = Side(label=path, harness="lm-eval")
    for i, prompt, response, row in lm_eval_samples(path):
        side.prompts[i], side.completions[i] = prompt, response
        side.docs[i] = row["doc"]
        score = row.get("pass@1", row.get("pass_at_k"))  # absent (`bypass`) under --predict_only
        if isinstance(score, (int, float)) and score == score:
            side.passed[i] = bool(score)
    return side


def read_ours(path: str) -> Side:
    from lighteval_like.results.runs import load_one

    run = load_one(path)
    side = Side(label=path, harness="ours")
    for row in run.details(TASK_KEY):
        i = int(row["doc_index"])
        side.prompts[i], side.completions[i] = row["prompt"], row["generation"]
        if "pass@1" in row["metrics"]:
            side.passed[i] = bool(row["metrics"]["pass@1"])
    return side


def read_side(path: str) -> Side:
    samples = lm_eval_samples_file(path)
    return read_lm_eval(samples) if samples else read_ours(path)


def execute(side: Side, allow_weaker: bool) -> None:
    """pass@1 of an lm-eval run's completions, through our sandbox and program assembly."""
    from lighteval_like.metrics.sandbox import require_isolation, run_programs
    from lighteval_like.tasks.humaneval import assemble_program, humaneval

    if not side.docs:
        raise SystemExit(f"{side.label}: no logged dataset rows to assemble programs from")
    order = sorted(side.completions)
    programs = [assemble_program(humaneval(side.docs[i], "humaneval"), side.completions[i]) for i in order]
    results = run_programs(programs, isolation=require_isolation(allow_weaker))
    side.passed = {i: r.passed for i, r in zip(order, results)}


def first_difference(a: str, b: str) -> int:
    return len(os.path.commonprefix([a, b]))


def compare(a: Side, b: Side, task_ids: dict[int, str]) -> dict:
    docs = sorted(set(a.completions) & set(b.completions))
    differing = []
    for i in docs:
        x, y = a.completions[i], b.completions[i]
        if x != y:
            at = first_difference(x, y)
            differing.append({
                "doc_index": i, "task_id": task_ids.get(i, str(i)), "first_difference": at,
                "a": x[max(0, at - CONTEXT) : at + CONTEXT], "b": y[max(0, at - CONTEXT) : at + CONTEXT],
                "a_passed": a.passed.get(i), "b_passed": b.passed.get(i),
            })
    pass_at_1 = {
        name: (sum(s.passed[i] for i in docs) / len(docs) if docs and all(i in s.passed for i in docs) else None)
        for name, s in (("A", a), ("B", b))
    }
    return {
        "docs_compared": len(docs),
        "only_in_a": len(set(a.completions) - set(b.completions)),
        "only_in_b": len(set(b.completions) - set(a.completions)),
        "identical_prompts": sum(a.prompts.get(i) == b.prompts.get(i) for i in docs),
        "identical_completions": len(docs) - len(differing),
        "pass@1": pass_at_1,
        "outcomes_differ": sum(a.passed.get(i) != b.passed.get(i) for i in docs if i in a.passed and i in b.passed),
        "differing": differing,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    parser.add_argument("--execute", action="store_true", help="run lm-eval's completions in our sandbox")
    parser.add_argument("--allow_weaker_isolation", action="store_true")
    parser.add_argument("--out", help="write the report as JSON here too")
    args = parser.parse_args(argv)
    a, b = read_side(args.run_a), read_side(args.run_b)
    for side in (a, b):
        if args.execute and not side.passed:
            execute(side, args.allow_weaker_isolation)
    task_ids = {i: d["task_id"] for s in (a, b) for i, d in s.docs.items()}
    report = compare(a, b, task_ids)
    print(f"A ({a.harness}): {a.label}\nB ({b.harness}): {b.label}")
    print(f"docs compared: {report['docs_compared']} (only in A: {report['only_in_a']}, only in B: {report['only_in_b']})")
    print(f"identical prompts: {report['identical_prompts']}/{report['docs_compared']}")
    print(f"identical completions: {report['identical_completions']}/{report['docs_compared']}")
    for label, value in report["pass@1"].items():
        print(f"pass@1 {label}: " + ("not executed" if value is None else f"{value:.4f}"))
    for d in report["differing"]:
        print(f"  {d['task_id']}: first difference at char {d['first_difference']} "
              f"(passed A={d['a_passed']} B={d['b_passed']})\n    A: {d['a']!r}\n    B: {d['b']!r}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
