"""Look tasks up by `suite|name`, expand groups, load custom task files, and resolve a task's
metric names and specs into `Metric` objects."""

from __future__ import annotations

import difflib
import importlib.util
import os
from dataclasses import dataclass

from lighteval_like.api.errors import TaskSpecError, UsageError
from lighteval_like.metrics.library import METRICS, Metric, SampledMetrics
from lighteval_like.tasks.config import TaskConfig, TaskGroup
from lighteval_like.tasks.default_tasks import GROUPS, TASKS_TABLE
from lighteval_like.tasks.specs import TaskSpec, visible


def resolve_metrics(task: TaskConfig, num_samples: int | None = None) -> list[Metric]:
    """The task's metrics as objects, those over samples for `num_samples` generations per doc
    (checked; default: the task's own number); an unknown name is a usage error naming the task."""
    default = (task.generation_parameters.num_samples if task.generation_parameters else None) or 1
    out = []
    for metric in task.metrics:
        if isinstance(metric, Metric):
            out.append(metric)
        elif isinstance(metric, SampledMetrics):
            if num_samples is not None:
                metric.check(task.full_name, num_samples)
            out += metric.metrics(num_samples or default)
        elif metric in METRICS:
            out.append(METRICS[metric])
        else:
            close = difflib.get_close_matches(str(metric), list(METRICS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise TaskSpecError(
                f"task {task.full_name}: unknown metric {metric!r}{hint}; valid metrics are {', '.join(METRICS)} "
                "(or a lighteval_like.metrics.library.Metric object)"
            )
    return out


@dataclass(frozen=True)
class ResolvedTask:
    """A task config paired with the spec (fewshot, truncate) it was asked with."""

    spec: TaskSpec
    config: TaskConfig

    @property
    def key(self) -> str:
        return self.spec.key


def load_custom_tasks(path: str) -> tuple[list[TaskConfig], list[TaskGroup]]:
    """Import a Python file and return its `TASKS_TABLE` (a list of `TaskConfig`) and its optional
    `TASK_GROUPS` (a list of `TaskGroup`)."""
    if not os.path.isfile(path):
        raise UsageError(f"custom tasks file '{path}' does not exist")
    try:
        module_spec = importlib.util.spec_from_file_location("lighteval_like_custom_tasks", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    except Exception as e:  # any import-time failure of user code
        raise UsageError(f"custom tasks file '{path}' failed to import: {type(e).__name__}: {e}") from e
    table = getattr(module, "TASKS_TABLE", None)
    if not isinstance(table, (list, tuple)) or not all(isinstance(t, TaskConfig) for t in table):
        raise UsageError(
            f"custom tasks file '{path}' must define TASKS_TABLE, a list of lighteval_like.tasks.TaskConfig"
        )
    groups = getattr(module, "TASK_GROUPS", [])
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, TaskGroup) for g in groups):
        raise UsageError(f"custom tasks file '{path}': TASK_GROUPS must be a list of lighteval_like.tasks.TaskGroup")
    return list(table), list(groups)


class Registry:
    """All known tasks and groups: the built-in tables plus any custom ones (which may override)."""

    def __init__(self, custom_tasks_path: str | None = None):
        self.tasks: dict[str, TaskConfig] = {t.full_name: t for t in TASKS_TABLE}
        self.groups: dict[str, TaskGroup] = {g.full_name: g for g in GROUPS}
        if custom_tasks_path:
            tasks, groups = load_custom_tasks(custom_tasks_path)
            self.tasks.update((t.full_name, t) for t in tasks)
            self.groups.update((g.full_name, g) for g in groups)

    def names(self, suite: str | None = None) -> list[str]:
        return sorted(n for n in self.tasks if suite is None or n.split("|", 1)[0] == suite)

    def runnable_groups(self) -> list[TaskGroup]:
        """Groups a task spec can name (whole-suite groups only average)."""
        return [g for _, g in sorted(self.groups.items()) if g.name]

    def get(self, full_name: str) -> TaskConfig:
        if full_name in self.tasks:
            return self.tasks[full_name]
        raise TaskSpecError(self._unknown_message(full_name))

    def _unknown_message(self, full_name: str) -> str:
        full_name = visible(full_name)
        suite = full_name.split("|", 1)[0]
        suites = sorted({n.split("|", 1)[0] for n in self.tasks})
        if suite not in suites:
            return f"unknown suite '{suite}' in '{full_name}': known suites are {', '.join(suites)}"
        # Compare task names without the suite: the shared 'suite|' prefix alone made anything look close.
        by_task: dict[str, list[str]] = {}
        for known in [*self.tasks, *(g.full_name for g in self.runnable_groups())]:
            by_task.setdefault(known.split("|", 1)[1], []).append(known)
        wanted = full_name.split("|", 1)[-1]
        close = [n for t in difflib.get_close_matches(wanted, list(by_task), n=5, cutoff=0.6) for n in by_task[t]][:5]
        hint = f"; did you mean {', '.join(close)}?" if close else "; run `lighteval-like tasks list` to see them"
        return f"unknown task '{full_name}'{hint}"

    def resolve(self, specs: list[TaskSpec]) -> list[ResolvedTask]:
        """Expand groups and pair every spec with its config, keeping the given order."""
        resolved: list[ResolvedTask] = []
        seen: set[str] = set()
        for spec in specs:
            group = self.groups.get(spec.full_name)
            names = group.members if group else [spec.full_name]
            for name in names:
                config = self.get(name)
                if config.zero_shot_only and spec.num_fewshot:
                    raise TaskSpecError(f"task {config.full_name} is zero-shot only (its docs have no answers to show "
                                        f"as examples); ask for {config.full_name}|0|0")
                sub = TaskSpec(config.suite, config.name, spec.num_fewshot, spec.truncate_fewshot)
                if sub.key in seen:
                    continue
                seen.add(sub.key)
                resolved.append(ResolvedTask(sub, config))
        return resolved
