"""Ours against lmms-eval 0.7.3 on image benchmarks: the same rows, the same tiny random
Qwen2.5-VL (float32 on both sides), doc-by-doc generations, the task metrics, and wall time and
peak memory of alternating runs (no response cache).

    python benchmarks/compare_lmms_eval.py --lmms_python .venv-lmms/bin/python --tokenizer TOK \\
        [--images 32] [--pairs 3] [--pipeline chat|simple] [--tasks mme,pope] [--golden FILE]

TOK is a folder with a tokenizer (SmolLM2's: `python -m lighteval_like.demo export DIR`). The
data are MME- and POPE-format mirrors made from the easy-vqa wheel's images
(`lighteval_like.tasks.vision_mirror`); lmms-eval reads them through a local task YAML
(`--include_path`) that uses its own MME/POPE functions. `--golden FILE` writes lmms-eval's
answers and metrics for `tests/test_vision.py`. `make lmms-env` builds lmms-eval's environment.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
OURS = {"mme": "lmms|mme|0|0", "pope": "lmms|pope|0|0"}
LMMS_METRICS = {"mme": ("mme_perception_score", "mme_cognition_score"),
                "pope": ("pope_accuracy", "pope_precision", "pope_recall", "pope_f1_score", "pope_yes_ratio")}
UTILS = ("from lmms_eval.tasks.mme.utils import mme_aggregate_results, mme_doc_to_text, mme_doc_to_visual, "
         "mme_process_results  # noqa\nfrom lmms_eval.tasks.pope.utils import *  # noqa\n")
YAML = """dataset_path: parquet
dataset_kwargs:
  data_files:
    test: {path}
task: {task}_local
test_split: test
output_type: generate_until
doc_to_visual: !function utils.{task}_doc_to_visual
doc_to_text: !function utils.{task}_doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: {tokens}
  temperature: 0
  top_p: 1.0
  num_beams: 1
  do_sample: false
process_results: !function utils.{task}_process_results
metric_list:
{metrics}
lmms_eval_specific_kwargs:
  default:
    pre_prompt: ""
    post_prompt: "\\nAnswer the question using a single word or phrase."
"""
AGGREGATION = {"mme_perception_score": "mme_aggregate_results", "mme_cognition_score": "mme_aggregate_results",
               "pope_accuracy": "pope_aggregate_accuracy", "pope_precision": "pope_aggregate_precision",
               "pope_recall": "pope_aggregate_recall", "pope_f1_score": "pope_aggregate_f1_score",
               "pope_yes_ratio": "pope_aggregate_yes_ratio"}


def task_yaml(folder: str, task: str, path: str) -> None:
    metrics = "\n".join(f"  - metric: {m}\n    aggregation: !function utils.{AGGREGATION[m]}\n    higher_is_better: true"
                        for m in LMMS_METRICS[task])
    with open(os.path.join(folder, f"{task}_local.yaml"), "w") as f:
        f.write(YAML.format(path=path, task=task, tokens=16 if task == "mme" else 128, metrics=metrics))


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """(wall seconds, peak resident KiB, its stderr) of a command, which must succeed."""
    start = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{out.stderr[-3000:]}")
    return seconds, int(out.stderr.strip().splitlines()[-1]), out.stderr


def where_time_goes(name: str, seconds: float, log: str, out: str) -> str:
    """Generation time against the whole run: lmms-eval logs the sum of its `generate` calls per
    task; ours records its stages in the results file."""
    if name == "lmms-eval":
        generating = sum(float(t) for t in re.findall(r"Total elapsed time: ([0-9.]+)s", log))
        return f"lmms-eval: {seconds:.1f} s, of which model.generate {generating:.1f} s (batch 1, each question's image encoded again)"
    results = sorted(glob.glob(os.path.join(out, "results", "**", "results_*.json"), recursive=True))[-1]
    with open(results) as f:
        timings = json.load(f)["summary_general"]["timings_seconds"]
    stages = ", ".join(f"{k} {v:.1f}" for k, v in timings.items() if v >= 0.05)
    return f"ours: {seconds:.1f} s, stages (s): {stages}"


def run_lmms(args, model: str, include: str, out: str) -> tuple[float, int]:
    model_args = f"pretrained={model},device=cpu,device_map=cpu,max_pixels={args.max_pixels}"
    cmd = [args.lmms_python, os.path.join(HERE, "lmms_eval_fp32.py"), "--model", "qwen2_5_vl", "--model_args",
           model_args, "--tasks", ",".join(f"{t}_local" for t in args.tasks), "--include_path", include,
           "--batch_size", "1", "--log_samples", "--output_path", out, "--verbosity", "INFO"]
    return timed(cmd + (["--force_simple"] if args.pipeline == "simple" else []), dict(os.environ, HF_HUB_OFFLINE="1"))


def run_ours(args, model: str, mirror: str, out: str) -> tuple[float, int]:
    model_args = f"pretrained={model},dtype=float32,image_pipeline={args.pipeline},max_pixels={args.max_pixels}"
    cmd = [sys.executable, "-m", "lighteval_like", "accelerate", "--model_args", model_args, "--tasks",
           ",".join(OURS[t] for t in args.tasks), "--dataset_dir", mirror, "--output_dir", out, "--save_details",
           "--no_cache"]
    return timed(cmd)


def _text(resps) -> str:
    """A logged response (lmms-eval logs `resps` only where it differs from `filtered_resps`): the text
    itself, or a (nested) list holding it."""
    while isinstance(resps, list):
        resps = resps[0]
    return resps


def lmms_answers(out: str, task: str) -> tuple[dict[int, str], dict[str, float]]:
    samples = sorted(glob.glob(os.path.join(out, "**", f"*_samples_{task}_local.jsonl"), recursive=True))[-1]
    with open(samples) as f:
        answers = {int(row["doc_id"]): _text(row.get("resps", row["filtered_resps"])) for row in map(json.loads, f)}
    results = sorted(glob.glob(os.path.join(out, "**", "*_results.json"), recursive=True))[-1]
    with open(results) as f:
        values = json.load(f)["results"][f"{task}_local"]
    return answers, {m: values.get(f"{m},none") for m in LMMS_METRICS[task]}


def our_answers(out: str, task: str) -> tuple[dict[int, str], dict[str, float]]:
    details = sorted(glob.glob(os.path.join(out, "details", "**", f"details_{OURS[task].rsplit('|', 1)[0]}_*.parquet"),
                               recursive=True))[-1]
    answers = {int(row["doc_index"]): row["generation"] for row in pq.read_table(details).to_pylist()}
    results = sorted(glob.glob(os.path.join(out, "results", "**", "results_*.json"), recursive=True))[-1]
    with open(results) as f:
        values = json.load(f)["results"][OURS[task].rsplit("|", 1)[0]]
    return answers, {m: values[m] for m in LMMS_METRICS[task]}


def setup(args, work: str) -> tuple[str, str, str]:
    """The tiny model, the mirror and lmms-eval's task folder, made under `work`."""
    from lighteval_like.demo_vision import build
    from lighteval_like.tasks.vision_mirror import write_mirror

    model = build(os.path.join(work, "tiny-qwen2_5_vl"), args.tokenizer, "qwen2_5_vl")
    mirror = os.path.join(work, "mirror")
    write_mirror(mirror, args.images)
    include = os.path.join(work, "lmms_tasks")
    os.makedirs(include)
    with open(os.path.join(include, "utils.py"), "w") as f:
        f.write(UTILS)
    paths = {"mme": "lmms-lab-encoder/MME/default/test.parquet", "pope": "lmms-lab-encoder/POPE/default/test.parquet"}
    for task in args.tasks:
        task_yaml(include, task, os.path.join(mirror, paths[task]))
    return model, mirror, include


def compare(args, ours_out: str, lmms_out: str) -> dict:
    report = {}
    for task in args.tasks:
        mine, my_metrics = our_answers(ours_out, task)
        theirs, their_metrics = lmms_answers(lmms_out, task)
        differ = [d for d in theirs if mine.get(d) != theirs[d]]
        print(f"{task}: {len(theirs)} docs, {len(theirs) - len(differ)} identical generations, {len(differ)} differ "
              f"{differ[:5]}")
        for m in LMMS_METRICS[task]:
            print(f"  {m}: ours {my_metrics.get(m)}  lmms-eval {their_metrics[m]}")
        report[task] = {"answers": {str(d): t for d, t in sorted(theirs.items())}, "metrics": their_metrics,
                        "identical": len(differ) == 0}
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lmms_python", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--pipeline", choices=("chat", "simple"), default="chat")
    parser.add_argument("--tasks", default="mme,pope", type=lambda s: s.split(","))
    parser.add_argument("--max_pixels", type=int, default=1605632)
    parser.add_argument("--golden", help="write lmms-eval's answers and metrics here")
    parser.add_argument("--work_dir", help="keep the model, data and outputs here")
    args = parser.parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="compare-lmms-")
    model, mirror, include = setup(args, work)
    times: dict[str, list[tuple[float, int, str]]] = {"ours": [], "lmms-eval": []}
    for i in range(args.pairs):
        times["lmms-eval"].append(run_lmms(args, model, include, os.path.join(work, f"lmms-{i}")))
        times["ours"].append(run_ours(args, model, mirror, os.path.join(work, f"ours-{i}")))
        print(f"pair {i}: lmms-eval {times['lmms-eval'][-1][:2]}, ours {times['ours'][-1][:2]} (s, peak KiB)", flush=True)
        for name in ("lmms-eval", "ours"):
            seconds, _, log = times[name][-1]
            print("  " + where_time_goes(name, seconds, log, os.path.join(work, f"ours-{i}")), flush=True)
    report = compare(args, os.path.join(work, "ours-0"), os.path.join(work, "lmms-0"))
    medians = {k: statistics.median(t for t, _, _ in v) for k, v in times.items()}
    peaks = {k: max(m for _, m, _ in v) for k, v in times.items()}
    print(f"median seconds: ours {medians['ours']:.2f}, lmms-eval {medians['lmms-eval']:.2f}, "
          f"ratio {medians['lmms-eval'] / medians['ours']:.2f}x; peak RSS MiB: ours {peaks['ours'] / 1024:.0f}, "
          f"lmms-eval {peaks['lmms-eval'] / 1024:.0f}")
    if args.golden:
        with open(args.golden, "w") as f:
            json.dump({"pipeline": args.pipeline, "images": args.images, "max_pixels": args.max_pixels, **report}, f,
                      indent=1, sort_keys=True)
    return 0 if all(r["identical"] for r in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
