"""Responses -> scores: each task's metrics per sample, their aggregation with a stderr, the
averages of task groups (`leaderboard|mmlu:_average|5`, `bigbench|_average|0`) and the overall
`all` average.

Each task's metrics are resolved once (`task_metrics`), before anything loads: what they need
(`Metric.needs`) is checked then (`permit_code_execution`, `require_judge`), and scoring hands
them a `ScoringContext` holding it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from lighteval_like.api.errors import UsageError
from lighteval_like.api.generation import GenerationParameters
from lighteval_like.api.requests import request_identity
from lighteval_like.api.sample import Sample
from lighteval_like.evaluation.reasoning import unclosed_count
from lighteval_like.evaluation.samples import prompt_texts, samples_per_doc
from lighteval_like.metrics.judge import JudgeAnswers, unparsed_count
from lighteval_like.metrics.library import CODE_EXECUTION, JUDGE, Metric, aggregate
from lighteval_like.metrics.sandbox import Isolation, require_isolation
from lighteval_like.results.record import MetricScore, TaskScores, TaskSummary, text_hash
from lighteval_like.tasks.config import TaskGroup
from lighteval_like.tasks.docs import TaskData
from lighteval_like.tasks.registry import ResolvedTask, resolve_metrics

TaskMetrics = dict[str, list[Metric]]  # task key -> its metrics, resolved once


@dataclass(frozen=True)
class ScoringContext:
    """What metrics may use beyond the responses: the isolation level model-written programs run
    at (None: the run runs no code) and the judge's answers (None: the run has no judge)."""

    isolation: Isolation | None = None
    judge: JudgeAnswers | None = None


def task_metrics(tasks: list[ResolvedTask], generation: GenerationParameters) -> TaskMetrics:
    """Each task's metrics for the number of samples it runs with (`generation`: the user's), by
    task key; an unknown metric, or one the samples cannot give (pass@k with fewer), fails now."""
    return {t.key: resolve_metrics(t.config, samples_per_doc(t.config, generation)) for t in tasks}


def score_task(samples: list[Sample], metrics: list[Metric], context: ScoringContext) -> TaskScores:
    """Fill each sample's `metrics` and aggregate them; a value None (a judge's verdict that could
    not be read) is no value, left out of the aggregate (metrics no sample has a value of are left out)."""
    for m in metrics:
        if m.batch_fn is not None:
            values = m.batch_fn(samples, context) if samples else []
        else:
            values = [m.sample_fn(s.doc, s.responses) for s in samples]
        for s, value in zip(samples, values):
            s.metrics[m.name] = value
    scores: TaskScores = {}
    for m in metrics:
        values = [s.metrics[m.name] for s in samples if s.metrics[m.name] is not None]
        if values:
            scores[m.name] = MetricScore(*aggregate(m, values))
    return scores


def _mean(scores: list[MetricScore]) -> MetricScore:
    return MetricScore(sum(s.value for s in scores) / len(scores), sum(s.stderr for s in scores) / len(scores))


def _mean_per_metric(scores: list[TaskScores]) -> TaskScores:
    """Each metric's mean (and mean stderr) over the tasks that have it."""
    names = sorted({m for s in scores for m in s})
    return {m: _mean([s[m] for s in scores if m in s]) for m in names}


def group_averages(groups: list[TaskGroup], data: list[TaskData], results: dict[str, TaskScores]) -> dict[str, TaskScores]:
    """Per group and few-shot count, the mean over the members that ran with it (two or more)."""
    out: dict[str, TaskScores] = {}
    for group in groups:
        members = set(group.members)
        by_fewshot: dict[int, list[str]] = {}
        for td in data:
            if td.task.config.full_name in members:
                by_fewshot.setdefault(td.task.spec.num_fewshot, []).append(td.task.key)
        for num_fewshot, keys in by_fewshot.items():
            if len(keys) >= 2:
                out[group.average_key(num_fewshot)] = _mean_per_metric([results[k] for k in keys])
    return out


def overall(results: dict[str, TaskScores]) -> TaskScores:
    """Mean of each metric (and of its stderr) over the evaluated tasks (pass tasks, not groups)."""
    return _mean_per_metric(list(results.values()))


def summarise_task(td: TaskData, samples: list[Sample]) -> TaskSummary:
    truncated = sum(s.fewshot_truncated or any(r.input_truncated for r in s.responses) for s in samples)
    return TaskSummary(
        hashes={
            "examples": text_hash(json.dumps(asdict(s.doc), sort_keys=True, default=str) for s in samples),
            "full_prompts": text_hash(prompt_texts(samples)),
            "requests": text_hash(request_identity(r) for s in samples for r in s.requests),
        },
        num_samples=len(samples),
        num_docs=len(td.docs),
        skipped_bad_samples=td.skipped,
        truncated=truncated,
        non_truncated=len(samples) - truncated,
        effective_few_shots=(sum(s.num_fewshot for s in samples) / len(samples)) if samples else 0.0,
        requested_few_shots=td.task.spec.num_fewshot,
        fewshot_split=td.fewshot_split,
        generation_parameters=samples[0].generation.record() if samples and samples[0].generation else None,
        unclosed_reasoning=unclosed_count(samples),
        judge_unparsed=unparsed_count(samples),
    )


def by_task(data: list[TaskData], samples: list[Sample]) -> dict[str, list[Sample]]:
    """The samples of each task, by task key (every task of `data`, those with none included)."""
    out: dict[str, list[Sample]] = {td.task.key: [] for td in data}
    for s in samples:
        out[s.task_key].append(s)
    return out


def score_run(data: list[TaskData], samples: list[Sample], groups: list[TaskGroup], metrics: TaskMetrics,
              context: ScoringContext) -> tuple[dict[str, TaskScores], dict[str, TaskSummary]]:
    """Scores of every task, the averages of `groups` and `all`; and each task's summary."""
    grouped = by_task(data, samples)
    results = {key: score_task(task_samples, metrics[key], context) for key, task_samples in grouped.items()}
    summaries = {td.task.key: summarise_task(td, grouped[td.task.key]) for td in data}
    averages = group_averages(groups, data, results)
    everything = overall(results)
    results.update(averages)
    results["all"] = everything
    return results, summaries


def metric_info(data: list[TaskData], metrics: TaskMetrics, results: dict[str, TaskScores]) -> dict[str, dict]:
    """{task full name: {metric: {"aggregation", "higher_is_better"}}} for every metric the task
    reports (`config_tasks.<task>.metric_info`: how `compare` and `report` read its results)."""
    out: dict[str, dict] = {}
    for td in data:
        info = out.setdefault(td.task.config.full_name, {})
        for m in metrics[td.task.key]:
            if m.name in results.get(td.task.key, {}):
                info[m.name] = {"aggregation": m.aggregation, "higher_is_better": m.higher_is_better}
    return out


def cleanup_failures(samples: list[Sample]) -> int:
    """Programs of code tasks whose clean-up failed (each sample's `extras` says what was left)."""
    runs = [r for s in samples for r in s.extras.get("executions", [s.extras.get("execution") or {}])]
    return sum(1 for r in runs if r.get("cleanup"))


def needing(tasks: list[ResolvedTask], metrics: TaskMetrics, need: str) -> list[tuple[ResolvedTask, Metric]]:
    """The (task, metric) pairs whose metric needs `need`."""
    return [(t, m) for t in tasks for m in metrics[t.key] if need in m.needs]


def permit_code_execution(tasks: list[ResolvedTask], metrics: TaskMetrics, allowed: bool,
                          allow_weaker: bool) -> Isolation | None:
    """Before anything loads: the isolation level for the given tasks' programs (None when no
    task runs code), or one line saying what to pass when the user has not opted in."""
    running = list(dict.fromkeys(t.config.full_name for t, _ in needing(tasks, metrics, CODE_EXECUTION)))
    if not running:
        return None
    if not allowed:
        raise UsageError(
            f"{', '.join(running)} run{'s' if len(running) == 1 else ''} the code the model writes: pass "
            "--allow_code_execution to allow it (each program runs sandboxed; see the README)"
        )
    return require_isolation(allow_weaker)


PIPELINE_JUDGE_FIX = ("pass --judge_model_args 'base_url=...,model=...,chat' (or judge_backend=transformers,"
                      "pretrained=...), or give the pipeline one, Pipeline(..., judge=JudgeModel(load, model_args)), "
                      "or leave the task out")


def require_judge(tasks: list[ResolvedTask], metrics: TaskMetrics, has_judge: bool, fix: str = PIPELINE_JUDGE_FIX) -> None:
    """Before anything loads: one line naming the first task and metric that need a judge model,
    and `fix`, when the run has none."""
    judged = needing(tasks, metrics, JUDGE)
    if judged and not has_judge:
        task, metric = judged[0]
        raise UsageError(f"task {task.config.full_name} metric {metric.name} needs a judge model and this run has none: {fix}")
