"""Before/after check for a refactor that must change no number: a fixed set of runs, then a diff.

    python benchmarks/compare_runs.py run --src BEFORE_TREE/src --out runs/before [--model DIR]
        [--data_dir D] [--python PY] [--vllm_python PY] [--only NAME,...]
    python benchmarks/compare_runs.py run --src src --out runs/after
    python benchmarks/compare_runs.py compare runs/before runs/after

`run` evaluates the demo model (SmolLM2-135M-Instruct as a transformers folder, fp32; exported
with `python -m lighteval_like.demo export` when `--model` has none) on a fixed set of runs
(`RUNS`): `accelerate` on loglikelihood, few-shot, rolling, generative, code-executing and
chat-template tasks, `vllm` on one loglikelihood and one generative task, and `distributed` at
tp=2 under torchrun. Every run has `--save_details`, `--no_cache` and a fixed `--max_samples`,
and writes into `<out>/<run name>/`. The source tree `--src` comes first on `sys.path` of every
process (`PYTHONPATH`, checked for each interpreter before anything runs), so one virtual
environment runs the code before and after a change. Model processes run one at a time, `nice`d.

`compare` checks, run by run, that the results JSON files are equal key for key and value for
value, except the few keys in `IGNORED_KEYS` (times and figures derived from time), with the
run's own output folder written as `<OUT>` in every string; and that every details parquet is
equal row for row and column for column (exact equality, floats included). It prints a table
and each difference, and exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_ARGS = "pretrained={model},dtype=float32"
# vLLM's context is capped so that its KV cache fits VLLM_CPU_KVCACHE_SPACE (1 GiB by default here).
VLLM_MODEL_ARGS = "pretrained={model},dtype=float32,max_model_length=2048"
MANIFEST = "manifest.json"

# Keys of the results JSON that legitimately differ between two runs of the same code (dotted
# paths, fnmatch patterns; list items are numbered). Nothing else is ignored.
# Keys named with --redefined (a hash whose input the change redefines on purpose).
REDEFINED: list[str] = []
IGNORED_KEYS = (
    "config_general.start_time",  # wall-clock time the run started
    "config_general.end_time",  # wall-clock time the run ended
    "config_general.total_evaluation_time_secondes",  # end_time - start_time
    "summary_general.timings_seconds.*",  # seconds spent in each stage
    "summary_general.requests_per_second",  # requests / seconds
    "summary_general.scoring.generation_seconds",  # seconds spent generating
    "summary_general.scoring.generated_tokens_per_second",  # tokens / generation_seconds
)


@dataclass(frozen=True)
class RunSpec:
    """One run of the set: its entry point and its arguments (templates: {model})."""

    name: str
    entry: str  # accelerate, vllm or distributed
    tasks: str
    max_samples: int
    flags: tuple[str, ...] = ()
    parallelism: tuple[int, int, int] = (1, 1, 1)  # dp, tp, pp (distributed only)


RUNS = (
    RunSpec("truthfulqa_mc", "accelerate", "leaderboard|truthfulqa:mc|0|0", 20),
    RunSpec("arc_challenge_5shot", "accelerate", "leaderboard|arc:challenge|5|0", 20),
    RunSpec("gsm8k_cot", "accelerate", "lighteval|gsm8k_cot|8|0", 8),
    RunSpec("lambada_openai", "accelerate", "lighteval|lambada:openai|0|0", 20),
    RunSpec("humaneval", "accelerate", "lighteval|humaneval|0|0", 6, ("--allow_code_execution",)),
    RunSpec("arc_challenge_chat", "accelerate", "leaderboard|arc:challenge|0|0", 20, ("--use_chat_template",)),
    RunSpec("vllm_truthfulqa_gsm8k_cot", "vllm", "leaderboard|truthfulqa:mc|0|0,lighteval|gsm8k_cot|8|0", 8),
    RunSpec("distributed_tp2_truthfulqa", "distributed", "leaderboard|truthfulqa:mc|0|0", 20, parallelism=(1, 2, 1)),
)


# ----------------------------------------------------------------------------------------- run
def run_env(src: str, data_dir: str, out: str) -> dict:
    """The environment of every process: `src` first on sys.path, offline, the mirror, a private cache."""
    return {
        **os.environ, "PYTHONPATH": os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])]),
        "LIGHTEVAL_LIKE_DATA_DIR": data_dir, "LIGHTEVAL_LIKE_CACHE": os.path.join(out, ".cache"),
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
    }


def check_source(python: str, src: str, env: dict, cwd: str) -> str:
    """Where `python` imports lighteval_like from with this environment; exits unless under `src`."""
    code = "import lighteval_like; print(lighteval_like.__file__)"
    found = subprocess.run([python, "-c", code], env=env, cwd=cwd, capture_output=True, text=True)
    path = os.path.realpath(found.stdout.strip()) if found.returncode == 0 else ""
    if not path.startswith(os.path.realpath(src) + os.sep):
        sys.exit(f"compare_runs: {python} imports lighteval_like from {path or found.stderr.strip()!r}, not from {src}")
    return path


def command(spec: RunSpec, folder: str, model: str, python: str, vllm_python: str) -> list[str]:
    """The command line of one run (its output under `folder/output`)."""
    out = os.path.join(folder, "output")
    if spec.entry == "distributed":
        ckpt, override = write_distributed_configs(spec, folder, model, out)
        dp, tp, pp = spec.parallelism
        return [python, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc-per-node={dp * tp * pp}",
                "-m", "lighteval_like", "distributed", "--checkpoint_config_path", ckpt,
                "--lighteval_config_path", override]
    exe, args = (vllm_python, VLLM_MODEL_ARGS) if spec.entry == "vllm" else (python, MODEL_ARGS)
    return [exe, "-m", "lighteval_like", spec.entry, "--model_args", args.format(model=model), "--tasks", spec.tasks,
            "--max_samples", str(spec.max_samples), "--save_details", "--no_cache", "--output_dir", out, *spec.flags]


def write_distributed_configs(spec: RunSpec, folder: str, model: str, out: str) -> tuple[str, str]:
    """The checkpoint and override YAML files of a `distributed` run (JSON is YAML)."""
    dp, tp, pp = spec.parallelism
    ckpt = {"model_parameters": {"pretrained": model, "dtype": "float32"}}
    override = {
        "batch_size": None,
        "logging": {"output_dir": out, "save_details": True, "no_cache": True},
        "parallelism": {"dp": dp, "tp": tp, "pp": pp},
        "tasks": {"tasks": spec.tasks, "max_samples": spec.max_samples},
    }
    paths = os.path.join(folder, "checkpoint.yaml"), os.path.join(folder, "override.yaml")
    for path, data in zip(paths, (ckpt, override)):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
    return paths


def run_one(spec: RunSpec, args: argparse.Namespace, env: dict) -> dict:
    """Run one spec into a fresh `<out>/<name>/`; returns its manifest entry."""
    folder = os.path.join(args.out, spec.name)
    if os.path.exists(os.path.join(folder, "output")):
        sys.exit(f"compare_runs: {folder}/output exists: give --out a fresh folder (or remove that run)")
    os.makedirs(folder, exist_ok=True)
    argv = command(spec, folder, args.model, args.python, args.vllm_python)
    print(f"[{spec.name}] {shlex.join(argv)}", flush=True)
    start = time.monotonic()
    with open(os.path.join(folder, "log.txt"), "w", encoding="utf-8") as log:
        code = subprocess.run(["nice", "-n", "10", *argv], env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                              timeout=args.timeout).returncode
    seconds = round(time.monotonic() - start, 1)
    print(f"[{spec.name}] exit {code} in {seconds} s", flush=True)
    return {"name": spec.name, "spec": spec_record(spec), "argv": argv, "returncode": code, "seconds": seconds}


def spec_record(spec: RunSpec) -> dict:
    """What defines a run, for checking that two sides ran the same set."""
    return {"entry": spec.entry, "tasks": spec.tasks, "max_samples": spec.max_samples, "flags": list(spec.flags),
            "parallelism": list(spec.parallelism)}


def ensure_model(args: argparse.Namespace, env: dict) -> None:
    """Export the demo model to `--model` unless a transformers folder is already there."""
    if os.path.isfile(os.path.join(args.model, "config.json")):
        return
    print(f"exporting the demo model to {args.model}", flush=True)
    subprocess.run([args.python, "-m", "lighteval_like.demo", "export", args.model], env=env, check=True)


def save_manifest(out: str, header: dict, entries: list[dict]) -> dict:
    """Write `<out>/manifest.json`: these runs replace earlier ones of the same name (an `--only` rerun)."""
    names = {e["name"] for e in entries}
    runs = [e for e in load_manifest(out)["runs"] if e["name"] not in names] + entries
    order = {spec.name: i for i, spec in enumerate(RUNS)}
    runs.sort(key=lambda e: order.get(e["name"], len(RUNS)))
    manifest = {**header, "runs": runs, "wall_seconds": round(sum(e["seconds"] for e in runs), 1)}
    with open(os.path.join(out, MANIFEST), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
    return manifest


def cmd_run(args: argparse.Namespace) -> int:
    """`run`: the whole set (or `--only` some of it) into `--out`, with a manifest."""
    args.src, args.out, args.model = (os.path.abspath(p) for p in (args.src, args.out, args.model))
    os.makedirs(args.out, exist_ok=True)
    env = run_env(args.src, os.path.abspath(args.data_dir), args.out)
    specs = [s for s in RUNS if not args.only or s.name in args.only.split(",")]
    unknown = set(args.only.split(",")) - {s.name for s in RUNS} if args.only else set()
    if unknown:
        sys.exit(f"compare_runs: unknown run(s) {', '.join(sorted(unknown))}; the runs: {', '.join(s.name for s in RUNS)}")
    pythons = {args.python, *([args.vllm_python] if any(s.entry == "vllm" for s in specs) else [])}
    sources = {python: check_source(python, args.src, env, args.out) for python in sorted(pythons)}
    ensure_model(args, env)
    start = time.monotonic()
    entries = [run_one(spec, args, env) for spec in specs]
    seconds = round(time.monotonic() - start, 1)
    manifest = save_manifest(args.out, {"src": args.src, "model": args.model, "sources": sources}, entries)
    print(f"{len(entries)} runs in {seconds} s (the set: {manifest['wall_seconds']} s of runs)")
    failed = [e["name"] for e in entries if e["returncode"] != 0]
    print(f"failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


# ------------------------------------------------------------------------------------- compare
def flatten(value, prefix: str = "") -> dict:
    """A JSON document as {dotted path: leaf value}; list items are numbered, empty containers kept."""
    if isinstance(value, dict) and value:
        items = value.items()
    elif isinstance(value, list) and value:
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {prefix: value}
    out: dict = {}
    for key, item in items:
        out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def ignored(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in IGNORED_KEYS)


def normalise(value, out_dir: str):
    """The run's own output folder written as <OUT> in strings (it differs between sides by design)."""
    return value.replace(out_dir, "<OUT>") if isinstance(value, str) else value


def same(a, b) -> bool:
    """Exact equality, NaN equal to NaN, recursing into lists and dicts (a details cell)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def short(value, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def compare_results(a_path: str, b_path: str, a_out: str, b_out: str) -> tuple[int, list[str]]:
    """Keys compared and the differences of two results files (a key named by `--redefined` is
    marked `redefined:`: its definition changed on purpose, and the table does not count it)."""
    with open(a_path, encoding="utf-8") as f:
        a = {k: normalise(v, a_out) for k, v in flatten(json.load(f)).items() if not ignored(k)}
    with open(b_path, encoding="utf-8") as f:
        b = {k: normalise(v, b_out) for k, v in flatten(json.load(f)).items() if not ignored(k)}
    diffs = []
    for key in sorted(a.keys() | b.keys()):
        if key not in a or key not in b:
            diffs.append(f"{key}: only in {'before' if key in a else 'after'}")
        elif not same(a[key], b[key]):
            mark = "redefined: " if any(fnmatch.fnmatchcase(key, p) for p in REDEFINED) else ""
            diffs.append(f"{mark}{key}: {short(a[key])} != {short(b[key])}")
    return len(a.keys() | b.keys()), diffs


def compare_details(a_path: str, b_path: str, a_out: str, b_out: str) -> tuple[int, list[str]]:
    """Rows compared and the differences of two details parquet files (cell by cell, exact)."""
    import pyarrow.parquet as pq

    a, b = pq.read_table(a_path), pq.read_table(b_path)
    if a.schema != b.schema:
        return max(a.num_rows, b.num_rows), [f"schema differs:\n{a.schema}\n!=\n{b.schema}"]
    a_rows, b_rows = a.to_pylist(), b.to_pylist()
    diffs = []
    for i in range(max(len(a_rows), len(b_rows))):
        if i >= len(a_rows) or i >= len(b_rows):
            diffs.append(f"row {i}: only in {'before' if i < len(a_rows) else 'after'}")
            continue
        cells = [c for c in a.column_names
                 if not same(normalise(a_rows[i][c], a_out), normalise(b_rows[i][c], b_out))]
        if cells:
            also = f" (also {', '.join(cells[1:])})" if cells[1:] else ""
            diffs.append(f"row {i} column {cells[0]}: {short(a_rows[i][cells[0]])} != {short(b_rows[i][cells[0]])}{also}")
    return max(len(a_rows), len(b_rows)), diffs


TIMESTAMP = re.compile(r"_?\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d+")


def output_files(run_dir: str, kind: str) -> dict:
    """{name without timestamps: path} of a run's results JSON ('results') or details ('details')."""
    pattern = "results/**/results_*.json" if kind == "results" else "details/**/details_*.parquet"
    root = os.path.join(run_dir, "output")
    return {os.path.normpath(TIMESTAMP.sub("", os.path.relpath(p, root))): p for p in glob.glob(os.path.join(root, pattern), recursive=True)}


def compare_files(a_dir: str, b_dir: str, kind: str) -> tuple[int, list[str]]:
    """One run's files of one kind on both sides: (keys or rows compared, differences)."""
    a_files, b_files = output_files(a_dir, kind), output_files(b_dir, kind)
    count, diffs = 0, []
    if not a_files and not b_files:
        diffs.append(f"no {kind} file on either side")
    for name in sorted(a_files.keys() | b_files.keys()):
        if name not in a_files or name not in b_files:
            diffs.append(f"{name}: only in {'before' if name in a_files else 'after'}")
            continue
        compare = compare_results if kind == "results" else compare_details
        n, file_diffs = compare(a_files[name], b_files[name], os.path.join(a_dir, "output"), os.path.join(b_dir, "output"))
        count += n
        diffs += [f"{name}: {d}" for d in file_diffs]
    return count, diffs


def load_manifest(side: str) -> dict:
    path = os.path.join(side, MANIFEST)
    if not os.path.isfile(path):
        return {"runs": []}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def compare_manifests(a: dict, b: dict) -> list[str]:
    """Runs that failed, or that were defined differently on the two sides."""
    diffs = []
    b_specs = {e["name"]: e["spec"] for e in b["runs"]}
    for entry in a["runs"]:
        if entry["name"] in b_specs and entry["spec"] != b_specs[entry["name"]]:
            diffs.append(f"{entry['name']}: run defined differently: {entry['spec']} != {b_specs[entry['name']]}")
    for side, manifest in (("before", a), ("after", b)):
        diffs += [f"{e['name']}: failed in {side} (exit {e['returncode']})" for e in manifest["runs"] if e["returncode"]]
    return diffs


def run_names(side: str) -> set:
    return {os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(side, "*", "output"))}


def cmd_compare(args: argparse.Namespace) -> int:
    """`compare`: the table, then every difference; 1 when there is any."""
    a, b = os.path.abspath(args.before), os.path.abspath(args.after)
    diffs = compare_manifests(load_manifest(a), load_manifest(b))
    rows = []
    REDEFINED.extend(args.redefined)
    redefined = []
    for name in sorted(run_names(a) | run_names(b)):
        keys, key_diffs = compare_files(os.path.join(a, name), os.path.join(b, name), "results")
        redefined += [f"{name}: {d}" for d in key_diffs if ": redefined: " in d]
        key_diffs = [d for d in key_diffs if ": redefined: " not in d]
        rows_n, row_diffs = compare_files(os.path.join(a, name), os.path.join(b, name), "details")
        rows.append((name, keys, len(key_diffs), rows_n, len(row_diffs)))
        diffs += [f"{name}: results: {d}" for d in key_diffs] + [f"{name}: details: {d}" for d in row_diffs]
    print_table(rows)
    print(f"\nignored results keys: {', '.join(IGNORED_KEYS)}")
    for line in redefined:
        print(f"REDEFINED {line}")
    for line in diffs:
        print(f"DIFF {line}")
    print(f"\n{len(diffs)} difference(s)" if diffs else "\nno difference")
    return 1 if diffs or not rows else 0


def print_table(rows: list) -> None:
    header = ("run", "results keys", "differing keys", "details rows", "differing rows")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


# ----------------------------------------------------------------------------------------- CLI
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the fixed set with one source tree")
    run.add_argument("--src", required=True, help="source tree put first on sys.path (the folder holding lighteval_like)")
    run.add_argument("--out", required=True, help="a fresh folder; each run writes <out>/<run name>/")
    run.add_argument("--python", default=sys.executable, help="interpreter of accelerate and distributed runs")
    run.add_argument("--vllm_python", default=os.path.join(REPO, ".venv-vllm", "bin", "python"),
                     help="interpreter with vllm-cpu (`make vllm-env`)")
    run.add_argument("--model", default=os.path.join(REPO, ".cache", "smollm2"),
                     help="the demo model as a transformers folder (exported there when missing); same for both sides")
    run.add_argument("--data_dir", default=os.environ.get("LIGHTEVAL_LIKE_DATA_DIR")
                     or os.path.join(REPO, "..", "shared", "data", "hub"), help="dataset mirror root")
    run.add_argument("--only", help="comma-separated run names (default: all): " + ",".join(s.name for s in RUNS))
    run.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    cmp = sub.add_parser("compare", help="compare two `run` output folders")
    cmp.add_argument("before")
    cmp.add_argument("after")
    cmp.add_argument("--redefined", action="append", default=[], metavar="PATTERN",
                     help="results keys (fnmatch) whose definition the change alters on purpose: listed, not counted")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return cmd_run(args) if args.command == "run" else cmd_compare(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
