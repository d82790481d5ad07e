"""Tiny synthetic runs in the layout `Pipeline.save` writes (results JSON + details parquet),
for the `compare`, `report` and TensorBoard tests."""

from __future__ import annotations

import json
import math

from lighteval_like.metrics.library import METRICS, Metric, aggregate
from lighteval_like.results import layout, outputs


def write_run(output_dir: str, tasks: dict[str, dict], model_name: str = "tiny", timestamp: str = "2025-01-01T00-00-00.000000",
              details: bool = True, prompt_suffix: str = "", config: dict | None = None,
              config_tasks: dict | None = None, suite_average: bool = False) -> str:
    """`tasks`: {task_key: {metric: [per-sample values]}}; optional "_prompts": [prompt per doc],
    "_docs": [doc indices], "_choices": [[choice, ...] per doc], "_lls": [[loglikelihood, ...] per doc].
    Writes the results file (aggregated as the pipeline does, with group averages; a metric that
    is not built in as a mean) and, with `details`, one parquet per task. `config_tasks`: that
    section (e.g. with `metric_info`), else empty as in files written before it. `suite_average`:
    also each suite's whole-suite average (`bigbench|_average|0`). Returns the results path."""
    results: dict[str, dict[str, float]] = {}
    for key, spec in tasks.items():
        metrics = {m: v for m, v in spec.items() if not m.startswith("_")}
        n = len(next(iter(metrics.values())))
        docs = spec.get("_docs", list(range(n)))
        prompts = spec.get("_prompts", [f"Question {d} of {key}?{prompt_suffix}" for d in docs])
        results[key] = {}
        for metric, values in metrics.items():
            value, stderr = aggregate(METRICS.get(metric, Metric(metric)), values)
            results[key][metric], results[key][f"{metric}_stderr"] = value, stderr
        if details:
            rows = []
            for i, d in enumerate(docs):
                choices = spec.get("_choices", [[" yes", " no"]] * n)[i]
                lls = spec.get("_lls", [[-1.0 - 0.1 * i, -2.0] for i in range(n)])[i]
                sample = {m: values[i] for m, values in metrics.items()}
                rows.append({
                    "doc_index": d, "fewshot_seed": 0, "prompt": prompts[i], "prompts": [prompts[i]] * len(choices),
                    "choices": choices, "gold_index": [0], "loglikelihoods": lls, "greedy": [], "continuation_tokens": [1] * len(choices),
                    "generation": None, "prediction": choices[max(range(len(lls)), key=lambda j: lls[j])],
                    "metrics": json.dumps(sample), "num_fewshot": int(key.rsplit("|", 1)[1]), "fewshot_truncated": False,
                    "input_truncated": False,
                })
            outputs.save_details(layout.details_dir(output_dir, model_name, timestamp), key, timestamp, rows)
    groups: dict[str, list[str]] = {}
    for key in tasks:
        suite, name, fewshot = key.split("|")
        if ":" in name:
            groups.setdefault(f"{suite}|{name.split(':')[0]}:_average|{fewshot}", []).append(key)
        if suite_average:
            groups.setdefault(f"{suite}|_average|{fewshot}", []).append(key)
    for group, keys in groups.items():
        if len(keys) >= 2:
            names = {m for k in keys for m in results[k]}
            results[group] = {m: sum(results[k][m] for k in keys) / len(keys) for m in sorted(names)}
    overall: dict[str, list[float]] = {}
    for key, metrics in results.items():
        if not key.rsplit("|", 1)[0].endswith("_average"):
            for m, v in metrics.items():
                overall.setdefault(m, []).append(v)
    results["all"] = {m: sum(v) / len(v) for m, v in overall.items()}
    data = {
        "config_general": {"model_name": model_name, "model_dtype": "float32", **(config or {})},
        "results": results,
        "versions": {k: 0 for k in tasks},
        "config_tasks": config_tasks or {},
        "summary_tasks": {k: {"num_docs": len(next(iter(v.values())))} for k, v in tasks.items()},
        "summary_general": {},
    }
    path = layout.results_path(output_dir, model_name, timestamp)
    outputs.save_results(path, data)
    return path


def binary_pairs(both_right: int, a_only: int, b_only: int, both_wrong: int) -> tuple[list[float], list[float]]:
    """Per-doc 0/1 scores of A and B with the given concordant / discordant counts."""
    a = [1.0] * both_right + [1.0] * a_only + [0.0] * b_only + [0.0] * both_wrong
    b = [1.0] * both_right + [0.0] * a_only + [1.0] * b_only + [0.0] * both_wrong
    return a, b


def is_close(x: float, y: float, tol: float = 1e-9) -> bool:
    return math.isclose(x, y, rel_tol=tol, abs_tol=tol)
