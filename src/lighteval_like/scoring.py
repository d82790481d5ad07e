"""Responses -> scores: each task's metrics per sample, their aggregation with a stderr, group
averages over subtasks (`mmlu:_average`) and the overall `all` average."""

from __future__ import annotations

import json
from dataclasses import asdict

from lighteval_like.docs import TaskData
from lighteval_like.metrics import aggregate, resolve_metrics
from lighteval_like.results import MetricScore, TaskScores, TaskSummary, text_hash
from lighteval_like.samples import Sample
from lighteval_like.sandbox import Isolation


def score_task(data: TaskData, samples: list[Sample], isolation: Isolation | None = None) -> TaskScores:
    """Fill each sample's `metrics` and aggregate them (metrics no sample has are left out)."""
    metrics = resolve_metrics(data.task.config)
    for m in metrics:
        if m.batch_fn is not None:
            values = m.batch_fn(samples, isolation) if samples else []
        else:
            values = [m.sample_fn(s.doc, s.responses) for s in samples]
        for s, value in zip(samples, values):
            s.metrics[m.name] = value
    scores: TaskScores = {}
    for m in metrics:
        values = [s.metrics[m.name] for s in samples]
        if values:
            scores[m.name] = MetricScore(*aggregate(m, values))
    return scores


def group_averages(data: list[TaskData], results: dict[str, TaskScores]) -> dict[str, TaskScores]:
    """`suite|prefix:_average|fewshot` over subtasks sharing a prefix (e.g. mmlu:*)."""
    groups: dict[str, list[str]] = {}
    for td in data:
        cfg = td.task.config
        if ":" in cfg.name:
            prefix = cfg.name.split(":", 1)[0]
            groups.setdefault(f"{cfg.suite}|{prefix}:_average|{td.task.spec.num_fewshot}", []).append(td.task.key)
    out: dict[str, TaskScores] = {}
    for name, keys in groups.items():
        if len(keys) < 2:
            continue
        out[name] = {}
        for m in sorted({m for k in keys for m in results[k]}):
            present = [results[k][m] for k in keys if m in results[k]]
            out[name][m] = MetricScore(
                sum(s.value for s in present) / len(present), sum(s.stderr for s in present) / len(present)
            )
    return out


def overall(results: dict[str, TaskScores]) -> TaskScores:
    """Mean of each metric (and of its stderr) over the evaluated tasks (group averages not counted twice)."""
    sums: dict[str, list[MetricScore]] = {}
    for key, scores in results.items():
        if ":_average|" in key:
            continue
        for m, score in scores.items():
            sums.setdefault(m, []).append(score)
    return {
        m: MetricScore(sum(s.value for s in v) / len(v), sum(s.stderr for s in v) / len(v)) for m, v in sums.items()
    }


def summarise_task(td: TaskData, samples: list[Sample]) -> TaskSummary:
    truncated = sum(s.fewshot_truncated or any(r.input_truncated for r in s.responses) for s in samples)
    return TaskSummary(
        hashes={
            "examples": text_hash(json.dumps(asdict(s.doc), sort_keys=True, default=str) for s in samples),
            "full_prompts": text_hash(c for s in samples for c in s.contexts),
            "requests": text_hash(repr(r) for s in samples for r in s.requests),
        },
        num_samples=len(samples),
        num_docs=len(td.docs),
        skipped_bad_samples=td.skipped,
        truncated=truncated,
        non_truncated=len(samples) - truncated,
        effective_few_shots=(sum(s.num_fewshot for s in samples) / len(samples)) if samples else 0.0,
        requested_few_shots=td.task.spec.num_fewshot,
        fewshot_split=td.fewshot_split,
    )


def score_run(
    data: list[TaskData], samples: list[Sample], isolation: Isolation | None = None
) -> tuple[dict[str, TaskScores], dict[str, TaskSummary]]:
    """Scores of every task, its group averages and `all`; and each task's summary. Programs
    of code tasks run at `isolation` (the level `sandbox.permit_code_execution` chose)."""
    by_task: dict[str, list[Sample]] = {td.task.key: [] for td in data}
    for s in samples:
        by_task[s.task_key].append(s)
    results = {td.task.key: score_task(td, by_task[td.task.key], isolation) for td in data}
    summaries = {td.task.key: summarise_task(td, by_task[td.task.key]) for td in data}
    results.update(group_averages(data, results))
    results["all"] = overall(results)
    return results, summaries
