"""Per-sample parity with lm-evaluation-harness: same model, same docs, same numbers?

Runs our harness and lm-eval (in its own python, offline, on the same dataset mirror through
`_lm_eval_offline.py`), matches docs by index and prints, per task, the largest |Δ| between
per-choice loglikelihoods (or the differing generations) and both harnesses' metrics side by
side. Exits 1 on any mismatch, so it can guard a change.

    python benchmarks/compare_lm_eval.py --model DIR --data_dir MIRROR \
        --lm_eval_python LM_EVAL_VENV/bin/python --tasks "truthfulqa:mc,hellaswag,mmlu:anatomy|5" \
        --limit 30 --out report.json [--write_reference tests/data/reference_smollm2.json]

Tasks are our names; `NAME|K` evaluates with K few-shot examples (both harnesses), and
`SUITE|NAME|K` picks the suite where a name is in several. Both draw most tasks' shots from
`train`, which the shared mirror lacks: `--stand_in_train` then compares on a copy of the mirror
(links) where each missing `train` is the validation split, else the test split, so the few-shot
draws themselves are compared.

BIG-bench: `bigbench|<task>` is compared with `bigbench_<task>_multiple_choice` (acc) and
`bigbench|<task>_gen` with `bigbench_<task>_generate_until` (exact_match). lm-eval's BIG-bench
templates name no few-shot split (it would draw from the evaluated split, doc included); with
shots, lm-eval gets `--include_path` copies of those task YAMLs adding `fewshot_split: train`, the
split ours draws from, and each doc's full prompt (shots included) must be identical.
`--work_dir DIR` keeps both harnesses' outputs; with `--reuse` a later call compares what is
there instead of re-running (delete DIR/ours to re-run only our side after a change).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
LL_TOLERANCE = 1e-4
METRIC_TOLERANCE = 1e-4
DEFAULT_TASKS = "truthfulqa:mc,hellaswag,arc:challenge"


@dataclass(frozen=True)
class TaskPair:
    """How one of our tasks maps onto lm-eval: its task names (their per-choice results are
    concatenated in this order, as our truthfulqa:mc scores the mc1 then the mc2 choices) and
    which lm-eval metric (task, metric key) each of our metrics corresponds to."""

    lm_eval_tasks: tuple[str, ...]
    metrics: dict[str, tuple[str, str]]
    generative: bool = False
    relative_metrics: tuple[str, ...] = ()  # compared relative to their size (perplexities)
    # lm-eval's task YAMLs (under lm_eval/tasks/) to re-declare with `fewshot_split` set to the
    # split ours draws shots from, for templates that name none (lm-eval then draws from the
    # evaluated split itself). Empty: lm-eval's own tasks as they are.
    fewshot_split_yamls: tuple[str, ...] = ()
    fewshot_split: str | None = None
    check_prompts: bool = False  # the rendered prompts (shots included) must be identical too


def task_pair(name: str, suite: str | None = None) -> TaskPair:
    """The lm-eval counterpart of our task `name` (in `suite`, where the name alone is ambiguous)."""
    if suite == "bigbench":
        return bigbench_pair(name)
    acc = {"acc": ("{t}", "acc,none")}
    acc_both = {"acc": ("{t}", "acc,none"), "acc_norm": ("{t}", "acc_norm,none")}
    simple = {
        "hellaswag": ("hellaswag", acc_both), "arc:challenge": ("arc_challenge", acc_both),
        "arc:easy": ("arc_easy", acc_both), "piqa": ("piqa", acc_both), "openbookqa": ("openbookqa", acc_both),
        "winogrande": ("winogrande", acc), "boolq": ("boolq", acc), "copa": ("copa", acc),
    }
    if name in simple:
        lm_task, metrics = simple[name]
        return TaskPair((lm_task,), {m: (lm_task, key) for m, (_, key) in metrics.items()})
    if name.startswith("mmlu:"):
        lm_task = "mmlu_" + name.split(":", 1)[1]
        return TaskPair((lm_task,), {"acc": (lm_task, "acc,none")})
    if name == "truthfulqa:mc":
        return TaskPair(
            ("truthfulqa_mc1", "truthfulqa_mc2"),
            {"mc1": ("truthfulqa_mc1", "acc,none"), "mc2": ("truthfulqa_mc2", "acc,none")},
        )
    if name == "lambada:openai":
        return TaskPair(
            ("lambada_openai",),
            {"acc_greedy": ("lambada_openai", "acc,none"), "perplexity": ("lambada_openai", "perplexity,none")},
            relative_metrics=("perplexity",),
        )
    if name in ("gsm8k", "gsm8k_cot"):
        return TaskPair(
            (name,),
            {"exact_match": (name, "exact_match,strict-match"), "qem": (name, "exact_match,flexible-extract")},
            generative=True,
        )
    raise SystemExit(f"compare_lm_eval: no lm-eval counterpart known for task '{name}'")


def bigbench_pair(name: str) -> TaskPair:
    """`bigbench|<task>` <-> `bigbench_<task>_multiple_choice` (acc), `bigbench|<task>_gen` <->
    `bigbench_<task>_generate_until` (exact_match). lm-eval's BIG-bench templates name no few-shot
    split; with shots, lm-eval is made to draw from `train`, as ours does (override YAMLs)."""
    from lighteval_like.tasks.registry import Registry

    config = Registry().get(f"bigbench|{name}")
    if name.endswith("_gen"):
        task, kind, metric = name[: -len("_gen")], "generate_until", ("exact_match", "exact_match,none")
    else:
        task, kind, metric = name, "multiple_choice", ("acc", "acc,none")
    lm_task = f"bigbench_{task}_{kind}"
    return TaskPair(
        (lm_task,), {metric[0]: (lm_task, metric[1])}, generative=kind == "generate_until",
        fewshot_split_yamls=(f"bigbench/{kind}/{task}.yaml",), fewshot_split=config.few_shots_split,
        check_prompts=True,
    )


@dataclass
class TaskRun:
    """One harness's outputs for one task: per-doc loglikelihoods or generations, and metrics."""

    loglikelihoods: dict[int, list[float]] = field(default_factory=dict)
    generations: dict[int, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    doc_metrics: dict[int, dict[str, float]] = field(default_factory=dict)  # our metric names
    prompts: dict[int, str] = field(default_factory=dict)  # each doc's (first) full prompt


def parse_tasks(text: str) -> list[tuple[str, str, int]]:
    """`[suite|]name[|K],...` -> (suite, name, fewshot); without a suite, the first suite of our
    registry that has the name."""
    from lighteval_like.tasks.registry import Registry

    registry = Registry()
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        parts = item.split("|")
        shots = parts.pop() if len(parts) > 1 and parts[-1].isdigit() else "0"
        suite, name = parts if len(parts) == 2 else (None, parts[0])
        suites = [n.split("|", 1)[0] for n in registry.names() if n.split("|", 1)[1] == name]
        if suite is not None:
            suites = [s for s in suites if s == suite]
        if len(parts) > 2 or not suites:
            raise SystemExit(f"compare_lm_eval: unknown task '{item}'")
        out.append((suites[0], name, int(shots)))
    return out


# ------------------------------------------------------------------ our harness
def our_command(
    model: str, data_dir: str, specs: list[tuple[str, str, int]], limit: int, out_dir: str,
    batch_size: int | None = None, processes: int = 1, chat: bool = False,
) -> list[str]:
    """The command line evaluating `specs` with our CLI (under `accelerate launch` when processes > 1)."""
    launcher = [sys.executable, "-m", "lighteval_like"]
    if processes > 1:
        launcher = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), "-m", "lighteval_like",
        ]
    args = [
        "accelerate", "--model_args", f"pretrained={model},dtype=float32",
        "--tasks", ",".join(f"{s}|{n}|{k}|0" for s, n, k in specs),
        "--max_samples", str(limit), "--save_details", "--output_dir", out_dir, "--dataset_dir", data_dir,
        "--no_cache",  # measure what the model computes now, never responses cached by an earlier run
    ]
    if batch_size:
        args += ["--override_batch_size", str(batch_size)]
    if chat:
        args.append("--use_chat_template")
    return launcher + args


def free_port() -> int:
    """A free local port for the ranks' rendezvous (the default one may be taken by another run)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_logged(command: list[str], env: dict | None = None) -> None:
    """Run quietly; on failure show the end of its stderr and raise CalledProcessError."""
    print("$ " + " ".join(command), flush=True)
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        print(done.stderr[-4000:], file=sys.stderr)
        raise subprocess.CalledProcessError(done.returncode, command)


def run_ours(command: list[str], out_dir: str, reuse: bool = False) -> dict[str, TaskRun]:
    """Run our CLI (unless `reuse` and `out_dir` holds a finished run) and read back its results
    file and details parquet files, keyed `suite|name|k`."""
    from lighteval_like.results.layout import results_path

    if reuse and glob.glob(results_path(glob.escape(out_dir), "*", "*")):
        return read_our_outputs(out_dir)
    run_logged(command, {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    return read_our_outputs(out_dir)


def read_our_outputs(out_dir: str) -> dict[str, TaskRun]:
    """The one run in `out_dir`: each task with details, its metrics and per-doc rows."""
    from lighteval_like.results.runs import load_one

    ours = load_one(out_dir)
    runs: dict[str, TaskRun] = {}
    for key, scores in ours.scores.items():
        if not ours.has_details(key):  # group averages
            continue
        run = TaskRun(metrics={m: v for m, v in scores.items() if not m.endswith("_stderr")})
        for row in ours.details(key):
            run.doc_metrics[row["doc_index"]] = row["metrics"]
            run.prompts[row["doc_index"]] = row["prompt"]
            if row["generation"] is not None:
                run.generations[row["doc_index"]] = row["generation"]
            else:
                run.loglikelihoods[row["doc_index"]] = list(row["loglikelihoods"])
        runs[key] = run
    return runs


# --------------------------------------------------------------------- lm-eval
def run_lm_eval(
    lm_eval_python: str, model: str, data_dir: str, lm_tasks: list[str], fewshot: int, limit: int,
    batch_size: int, out_dir: str, reuse: bool = False, chat: bool = False, include_path: str | None = None,
) -> tuple[dict, dict[str, list[dict]]]:
    """Run lm-eval offline (unless `reuse` and `out_dir` holds a finished run); returns its
    results section and its logged samples per task."""
    if not (reuse and glob.glob(os.path.join(out_dir, "**", "results_*.json"), recursive=True)):
        _run_lm_eval(lm_eval_python, model, data_dir, lm_tasks, fewshot, limit, batch_size, out_dir, chat, include_path)
    (results_path,) = glob.glob(os.path.join(out_dir, "**", "results_*.json"), recursive=True)
    with open(results_path, encoding="utf-8") as f:
        results = json.load(f)["results"]
    samples = {}
    for task in lm_tasks:
        (path,) = glob.glob(os.path.join(out_dir, "**", f"samples_{task}_*.jsonl"), recursive=True)
        with open(path, encoding="utf-8") as f:
            samples[task] = [json.loads(line) for line in f]
    return results, samples


def _run_lm_eval(
    lm_eval_python: str, model: str, data_dir: str, lm_tasks: list[str], fewshot: int, limit: int,
    batch_size: int, out_dir: str, chat: bool = False, include_path: str | None = None,
) -> None:
    command = [
        lm_eval_python, os.path.join(HERE, "_lm_eval_offline.py"), "--mirror", data_dir, "--",
        "--model", "hf", "--model_args", f"pretrained={model},dtype=float32", "--device", "cpu",
        "--tasks", ",".join(lm_tasks), "--num_fewshot", str(fewshot), "--limit", str(limit),
        "--batch_size", str(batch_size), "--log_samples", "--output_path", out_dir,
    ]
    if chat:  # shots as user/assistant turns, as ours under --use_chat_template
        command += ["--apply_chat_template", "--fewshot_as_multiturn"]
    if include_path:  # re-declared tasks (same names) override lm-eval's own
        command += ["--include_path", include_path]
    run_logged(command)


def lm_eval_tasks_dir(lm_eval_python: str) -> str:
    """lm-eval's `lm_eval/tasks` folder in its own environment."""
    out = subprocess.run(
        [lm_eval_python, "-c", "import os, lm_eval; print(os.path.join(os.path.dirname(lm_eval.__file__), 'tasks'))"],
        capture_output=True, text=True, check=True,
    )
    return out.stdout.strip()


def write_fewshot_split_overrides(pairs: list[TaskPair], tasks_dir: str, out_dir: str) -> str | None:
    """For each pair with `fewshot_split_yamls`: a copy of lm-eval's task YAML in `out_dir` (its
    `include` made absolute) plus `fewshot_split: <pair.fewshot_split>`, so lm-eval draws that
    task's shots from the split ours uses. The folder for `--include_path`, or None if none."""
    written = 0
    for pair in pairs:
        for rel in pair.fewshot_split_yamls:
            source = os.path.join(tasks_dir, rel)
            with open(source, encoding="utf-8") as f:
                lines = f.read().splitlines()
            out = []
            for line in lines:
                key, _, value = line.partition(":")
                if key.strip() == "include":
                    line = f"include: {os.path.normpath(os.path.join(os.path.dirname(source), value.strip()))}"
                if key.strip() != "fewshot_split":
                    out.append(line)
            out.append(f"fewshot_split: {pair.fewshot_split}")
            os.makedirs(out_dir, exist_ok=True)
            # one file per task: lm-eval's multiple_choice/x.yaml and generate_until/x.yaml share a name
            with open(os.path.join(out_dir, rel.replace("/", "__")), "w", encoding="utf-8") as f:
                f.write("# lm-eval's task with shots from our few-shot split (compare_lm_eval.py)\n")
                f.write("\n".join(out) + "\n")
            written += 1
    return out_dir if written else None


def lm_eval_version(lm_eval_python: str) -> str:
    out = subprocess.run(
        [lm_eval_python, "-c", "import importlib.metadata as m; print(m.version('lm_eval'))"],
        capture_output=True, text=True,
    )
    return out.stdout.strip() or "unknown"


def first_context(arguments) -> str:
    """The context of a logged sample's first request: `arguments` is a list of request args, or
    (lm-eval 0.4.13) {"gen_args_0": {"arg_0": context, "arg_1": ...}, ...}."""
    if isinstance(arguments, dict):
        return arguments["gen_args_0"]["arg_0"]
    return arguments[0][0]


def lm_eval_run(pair: TaskPair, results: dict, samples: dict[str, list[dict]]) -> TaskRun:
    """lm-eval's per-doc numbers for one of our tasks (its tasks' choices concatenated)."""
    run = TaskRun(metrics={ours: results[task][key] for ours, (task, key) in pair.metrics.items()})
    for ours, (task, key) in pair.metrics.items():
        metric, _, filter_name = key.partition(",")
        for sample in samples[task]:
            if sample.get("filter", "none") == filter_name:
                run.doc_metrics.setdefault(int(sample["doc_id"]), {})[ours] = float(sample[metric])
    for task in pair.lm_eval_tasks:
        for sample in samples[task]:
            doc = int(sample["doc_id"])
            run.prompts.setdefault(doc, first_context(sample["arguments"]))
            if pair.generative:
                # One line per filter; the raw generation (resps) is the same in each.
                run.generations.setdefault(doc, sample["resps"][0][0])
            else:
                # resps: one [[loglikelihood, is_greedy]] per request (choice).
                run.loglikelihoods.setdefault(doc, []).extend(float(r[0][0]) for r in sample["resps"])
    return run


# ------------------------------------------------------------------ comparison
def compare_loglikelihoods(
    ours: dict[int, list[float]], ref: dict[int, list[float]], tolerance: float = LL_TOLERANCE
) -> dict:
    """Max |Δ| over every choice of every doc, how many exceed the tolerance, and structural
    differences (docs missing on one side, different numbers of choices)."""
    problems, deltas = [], []
    for doc in sorted(set(ours) | set(ref)):
        if doc not in ours or doc not in ref:
            problems.append(f"doc {doc} only in {'ours' if doc in ours else 'the reference'}")
            continue
        if len(ours[doc]) != len(ref[doc]):
            problems.append(f"doc {doc}: {len(ours[doc])} choices vs {len(ref[doc])}")
            continue
        deltas += [(abs(a - b), doc, i, abs(a - b) / max(abs(b), 1e-9)) for i, (a, b) in enumerate(zip(ours[doc], ref[doc]))]
    worst = max(deltas, default=(0.0, None, None, 0.0))
    return {
        "choices": len(deltas),
        "max_abs_delta": worst[0],
        # fp32 rounding grows with a continuation's length, hence with |loglikelihood|.
        "max_rel_delta": max((d[3] for d in deltas), default=0.0),
        "worst_at": {"doc": worst[1], "choice": worst[2]},
        "over_tolerance": sum(d[0] > tolerance for d in deltas),
        "problems": problems,
    }


def compare_generations(ours: dict[int, str], ref: dict[int, str]) -> dict:
    differing = [doc for doc in sorted(set(ours) | set(ref)) if ours.get(doc) != ref.get(doc)]
    return {"docs": len(set(ours) | set(ref)), "differing_docs": differing}


def compare_prompts(ours: dict[int, str], ref: dict[int, str]) -> dict:
    """Docs whose full prompt (instruction, shots, query) differs: shots drawn differently show here."""
    differing = [doc for doc in sorted(set(ours) | set(ref)) if ours.get(doc) != ref.get(doc)]
    return {"docs": len(set(ours) | set(ref)), "differing_docs": differing}


def metrics_equal(a: float, b: float, relative: bool) -> bool:
    if relative:
        return math.isclose(a, b, rel_tol=METRIC_TOLERANCE)
    return abs(a - b) <= METRIC_TOLERANCE


def compare_task(pair: TaskPair, ours: TaskRun, ref: TaskRun) -> dict:
    report: dict = {"metrics": {}}
    if pair.generative:
        report["generations"] = compare_generations(ours.generations, ref.generations)
        ok = not report["generations"]["differing_docs"]
    else:
        report["loglikelihoods"] = compare_loglikelihoods(ours.loglikelihoods, ref.loglikelihoods)
        ok = not report["loglikelihoods"]["over_tolerance"] and not report["loglikelihoods"]["problems"]
    if pair.check_prompts:
        report["prompts"] = compare_prompts(ours.prompts, ref.prompts)
        ok &= not report["prompts"]["differing_docs"]
    for name, (task, key) in pair.metrics.items():
        a, b = ours.metrics.get(name), ref.metrics.get(name)
        same = a is not None and b is not None and metrics_equal(a, b, name in pair.relative_metrics)
        # Per doc too: equal means could hide two disagreements that cancel out.
        differing_docs = [
            doc for doc in sorted(set(ours.doc_metrics) | set(ref.doc_metrics))
            if (x := ours.doc_metrics.get(doc, {}).get(name)) is None
            or (y := ref.doc_metrics.get(doc, {}).get(name)) is None
            or abs(x - y) > METRIC_TOLERANCE
        ]
        report["metrics"][name] = {
            "ours": a, "lm_eval": b, "lm_eval_name": f"{task} {key}", "equal": same and not differing_docs,
            "differing_docs": differing_docs,
        }
        ok &= same and not differing_docs
    report["ok"] = bool(ok)
    return report


def print_report(reports: dict[str, dict]) -> None:
    for key, rep in reports.items():
        print(f"\n== {key}: {'OK' if rep['ok'] else 'MISMATCH'}")
        if "loglikelihoods" in rep:
            ll = rep["loglikelihoods"]
            print(f"   loglikelihoods: {ll['choices']} choices, max |Δ| = {ll['max_abs_delta']:.3g} "
                  f"(relative {ll['max_rel_delta']:.2g}) "
                  f"(doc {ll['worst_at']['doc']}, choice {ll['worst_at']['choice']}), "
                  f"{ll['over_tolerance']} over {LL_TOLERANCE:g}")
            for problem in ll["problems"][:10]:
                print(f"   ! {problem}")
        if "prompts" in rep:
            pr = rep["prompts"]
            print(f"   prompts: {pr['docs']} docs, {len(pr['differing_docs'])} differ {pr['differing_docs'][:10]}")
        if "generations" in rep:
            gen = rep["generations"]
            print(f"   generations: {gen['docs']} docs, {len(gen['differing_docs'])} differ {gen['differing_docs'][:10]}")
        for name, m in rep["metrics"].items():
            mark = "==" if m["equal"] else "!="
            per_doc = f", differs on docs {m['differing_docs'][:10]}" if m["differing_docs"] else ", same on every doc"
            print(f"   {name:<12} ours {m['ours']!s:<22} {mark} lm-eval {m['lm_eval']!s:<22} ({m['lm_eval_name']}{per_doc})")


def reference_data(runs: dict[str, TaskRun], reports: dict[str, dict], limit: int, provenance: dict) -> dict:
    """Our per-choice loglikelihoods and metrics, rounded to 1e-6, for the slow parity test, with
    how far they were from lm-eval's when written."""
    return {
        **provenance,
        "max_samples": limit,
        "loglikelihood_tolerance": LL_TOLERANCE,
        "tasks": {
            key: {
                "lm_eval_max_abs_delta": float(f"{reports[key]['loglikelihoods']['max_abs_delta']:.3g}"),
                "metrics": {m: round(v, 6) for m, v in sorted(run.metrics.items())},
                "loglikelihoods": {str(d): [round(x, 6) for x in lls] for d, lls in sorted(run.loglikelihoods.items())},
            }
            for key, run in sorted(runs.items())
            if key in reports and "loglikelihoods" in reports[key]
        },
    }


def mirror_with_train(root: str, out: str) -> str:
    """`out`: `root` linked file by file, plus a `train.jsonl` (the validation split, else the
    test split) in every dataset folder that has none."""
    for folder, _, files in os.walk(root):
        splits = {f[: -len(".jsonl")] for f in files if f.endswith(".jsonl")}
        if not splits:
            continue
        target = os.path.join(out, os.path.relpath(folder, root))
        os.makedirs(target, exist_ok=True)
        for split in splits:
            os.symlink(os.path.join(folder, f"{split}.jsonl"), os.path.join(target, f"{split}.jsonl"))
        stand_in = next((s for s in ("validation", "test") if s in splits), None)
        if "train" not in splits and stand_in:
            os.symlink(os.path.join(folder, f"{stand_in}.jsonl"), os.path.join(target, "train.jsonl"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="transformers model folder (evaluated in float32)")
    parser.add_argument("--data_dir", required=True, help="hub mirror root (<repo>/<subset>/<split>.jsonl)")
    parser.add_argument("--lm_eval_python", default=os.environ.get("LM_EVAL_PYTHON"),
                        help="python of the environment where lm-eval is installed (default: $LM_EVAL_PYTHON)")
    parser.add_argument("--tasks", default=DEFAULT_TASKS,
                        help="our task names, [SUITE|]NAME[|FEWSHOT], comma-separated")
    parser.add_argument("--limit", type=int, default=30, help="first N docs of each task")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="ours: --override_batch_size (default automatic); lm-eval: --batch_size (default 8)")
    parser.add_argument("--out", help="write the full comparison report (JSON) here")
    parser.add_argument("--write_reference", help="write our per-choice loglikelihoods and metrics (JSON) here")
    parser.add_argument("--work_dir", help="keep both harnesses' outputs here (default: a temporary folder)")
    parser.add_argument("--reuse", action="store_true",
                        help="with --work_dir: compare the outputs a previous run left there instead of re-running")
    parser.add_argument("--stand_in_train", action="store_true",
                        help="give datasets without a train split one (their validation, else test split), "
                             "so both harnesses draw few-shot examples from it")
    parser.add_argument("--chat", action="store_true",
                        help="render prompts with the model's chat template (ours: --use_chat_template; "
                             "lm-eval: --apply_chat_template --fewshot_as_multiturn)")
    args = parser.parse_args(argv)
    if not args.lm_eval_python:
        parser.error("pass --lm_eval_python or set LM_EVAL_PYTHON")
    model, data_dir = os.path.abspath(args.model), os.path.abspath(args.data_dir)
    specs = parse_tasks(args.tasks)

    with tempfile.TemporaryDirectory(prefix="compare_lm_eval_") as tmp:
        work = args.work_dir or tmp
        if args.stand_in_train:
            data_dir = os.path.join(work, "mirror")
            if not (args.reuse and os.path.isdir(data_dir)):
                mirror_with_train(os.path.abspath(args.data_dir), data_dir)
        ours_dir = os.path.join(work, "ours")
        command = our_command(model, data_dir, specs, args.limit, ours_dir, args.batch_size, chat=args.chat)
        ours = run_ours(command, ours_dir, args.reuse)
        reports: dict[str, dict] = {}
        for shots in sorted({k for _, _, k in specs}):
            group = [(s, n, k) for s, n, k in specs if k == shots]
            pairs = {f"{s}|{n}|{k}": task_pair(n, s) for s, n, k in group}
            lm_tasks = [t for p in pairs.values() for t in p.lm_eval_tasks]
            include_path = None
            if shots and any(p.fewshot_split_yamls for p in pairs.values()):
                include_path = write_fewshot_split_overrides(
                    list(pairs.values()), lm_eval_tasks_dir(args.lm_eval_python),
                    os.path.join(work, f"lm_eval_tasks_{shots}shot"),
                )
            results, samples = run_lm_eval(
                args.lm_eval_python, model, data_dir, lm_tasks, shots, args.limit, args.batch_size or 8,
                os.path.join(work, f"lm_eval_{shots}shot"), args.reuse, chat=args.chat, include_path=include_path,
            )
            for key, pair in pairs.items():
                reports[key] = compare_task(pair, ours[key], lm_eval_run(pair, results, samples))

    print_report(reports)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"limit": args.limit, "model": args.model, "tasks": reports}, f, indent=2)
    ok = all(r["ok"] for r in reports.values())
    if args.write_reference:
        if not ok:
            print("not writing the reference: the harnesses disagree", file=sys.stderr)
        else:
            os.makedirs(os.path.dirname(os.path.abspath(args.write_reference)), exist_ok=True)
            provenance = {
                "model_folder": os.path.basename(model.rstrip(os.sep)),
                "lm_eval_version": lm_eval_version(args.lm_eval_python),
                "written_by": "benchmarks/compare_lm_eval.py --write_reference",
                "stand_in_train": args.stand_in_train,
                "chat": args.chat,
            }
            with open(args.write_reference, "w", encoding="utf-8") as f:
                json.dump(reference_data(ours, reports, args.limit, provenance), f, indent=1)
                f.write("\n")
    print(f"\n{'all tasks match' if ok else 'MISMATCH'} (tolerance {LL_TOLERANCE:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
