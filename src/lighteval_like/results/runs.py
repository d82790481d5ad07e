"""A finished run as `compare` and `report` read it: its results JSON and, where it was saved
with `--save_details`, its per-sample details parquet files.

Where its files lie is `layout.py`'s. A run is named by its results file or by an output
directory holding results files.

How to read a metric (its aggregation, and whether higher is better) comes from the results file,
`config_tasks.<task>.metric_info`, which the pipeline writes for every metric a task reports (a
custom task's included); for files written before it, from the built-in task or metric of that name.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from lighteval_like.api.errors import UsageError
from lighteval_like.results import layout


class RunNotFoundError(UsageError):
    """A path names no results file, or a directory holds none (or several where one is needed)."""


class MissingDetailsError(UsageError):
    """A run was saved without `--save_details`, and per-sample details are needed."""


@dataclass
class Run:
    results_path: str
    data: dict
    timestamp: str
    label: str = ""
    _details: dict[str, list[dict[str, Any]]] = field(default_factory=dict, repr=False)

    @property
    def model_name(self) -> str:
        return str(self.data.get("config_general", {}).get("model_name", "model"))

    @property
    def scores(self) -> dict[str, dict[str, float]]:
        """{task_key: {metric: value, metric_stderr: value}} (the overall 'all' row left out)."""
        return {k: v for k, v in self.data.get("results", {}).items() if k != "all"}

    @property
    def output_dir(self) -> str:
        """The folder the run was written to."""
        return layout.output_dir_of(self.results_path, self.model_name)

    @property
    def details_dir(self) -> str:
        return layout.details_dir(self.output_dir, self.model_name, self.timestamp)

    def details_path(self, task_key: str) -> str:
        return os.path.join(self.details_dir, layout.details_file(task_key, self.timestamp))

    def has_details(self, task_key: str) -> bool:
        return task_key in self._details or os.path.exists(self.details_path(task_key))

    def described_metric(self, task_key: str, metric: str) -> tuple[str, bool] | None:
        """(aggregation, higher_is_better) of a metric as the results file describes it (a group
        average or `all`: as the tasks averaged do), or None (a file written before `metric_info`)."""
        tasks = {k: v for k, v in (self.data.get("config_tasks") or {}).items() if isinstance(v, dict)}
        name = task_name(task_key)
        if name in tasks:
            described = [tasks[name]]
        elif name == "all" or name.endswith("_average"):  # `suite|group:_average`, `suite|_average`
            prefix = "" if name == "all" else name.removesuffix("_average")
            described = [cfg for full_name, cfg in tasks.items() if full_name.startswith(prefix)]
        else:
            described = []
        for cfg in described:
            info = (cfg.get("metric_info") or {}).get(metric)
            if isinstance(info, dict) and {"aggregation", "higher_is_better"} <= info.keys():
                return str(info["aggregation"]), bool(info["higher_is_better"])
        return None

    def details(self, task_key: str) -> list[dict[str, Any]]:
        """The task's per-sample rows (the `metrics` column parsed from its JSON string)."""
        if task_key not in self._details:
            path = self.details_path(task_key)
            if not os.path.exists(path):
                raise MissingDetailsError(
                    f"run {self.results_path} has no per-sample details for {task_key} (looked for {path}): "
                    "rerun it with --save_details"
                )
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
            for row in rows:
                raw = row.get("metrics")
                row["metrics"] = json.loads(raw) if isinstance(raw, str) else (raw or {})
            self._details[task_key] = rows
        return self._details[task_key]


def group_of(key: str) -> tuple[str, str] | None:
    """A group average's member-key prefix and few-shot count (`suite|group:_average|k` gives
    ("suite|group:", "k"); a whole suite's `suite|_average|k` gives ("suite|", "k")); None for a task."""
    head, sep, fewshot = key.rpartition("|")
    prefix = head.removesuffix("_average")
    if sep and prefix != head and prefix.endswith((":", "|")):
        return prefix, fewshot
    return None


def group_members(group: str, keys) -> list[str]:
    """The task keys (not groups) of `keys` that `group` averages: its prefix and few-shot count."""
    prefix, fewshot = group_of(group)
    return [k for k in keys if group_of(k) is None and k.startswith(prefix) and k.rsplit("|", 1)[1] == fewshot]


def task_name(task_key: str) -> str:
    """`suite|name` of a task key `suite|name|fewshot` (`config_tasks`' keys)."""
    return "|".join(task_key.split("|")[:2])


@functools.cache
def _declared_metrics(name: str) -> dict:
    """The metrics a built-in task declares, by name (none for an unknown or custom task)."""
    from lighteval_like.tasks.registry import Registry, resolve_metrics

    registry = Registry()
    if name not in registry.tasks:
        return {}
    return {m.name: m for m in resolve_metrics(registry.get(name))}


def builtin_metric_info(task_key: str, metric: str) -> tuple[str, bool]:
    """(aggregation, higher_is_better) of a built-in task's metric, else of the built-in metric of
    that name, else a higher-is-better mean: how results files without `metric_info` are read."""
    from lighteval_like.metrics.library import METRICS

    m = _declared_metrics(task_name(task_key)).get(metric) or METRICS.get(metric)
    if m is None:
        return "mean", True
    return m.aggregation, m.higher_is_better


def find_results(path: str) -> list[str]:
    """Results files named by `path`: the file itself, or every results_*.json under a directory
    (oldest first: the timestamp in the name sorts in time order)."""
    if os.path.isfile(path):
        if layout.timestamp_of(path) is None:
            raise RunNotFoundError(f"{path} is not a results file (results_<timestamp>.json)")
        return [path]
    if not os.path.isdir(path):
        raise RunNotFoundError(f"{path}: no such results file or output directory")
    found = [
        p for p in glob.glob(os.path.join(glob.escape(path), "**", layout.RESULTS_FILE_GLOB), recursive=True)
        if layout.timestamp_of(p) is not None
    ]
    if not found:
        raise RunNotFoundError(f"{path} holds no results_<timestamp>.json (is it a run's --output_dir?)")
    return sorted(found, key=lambda p: (os.path.basename(p), p))


def load_run(results_path: str, label: str | None = None) -> Run:
    try:
        with open(results_path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise RunNotFoundError(f"cannot read results file {results_path}: {e}") from None
    if not isinstance(data, dict) or "results" not in data:
        raise RunNotFoundError(f"{results_path} is not a lighteval-like results file (no 'results' key)")
    timestamp = layout.timestamp_of(results_path)
    run = Run(results_path=results_path, data=data, timestamp=timestamp)
    run.label = label or f"{run.model_name}@{timestamp[:19]}"
    return run


def _default_label(path: str) -> str:
    """A directory holding one run is called by the name it was given; else model@timestamp."""
    return os.path.basename(os.path.normpath(path)) if os.path.isdir(path) else ""


def load_one(path: str) -> Run:
    """The single run named by `path` (a results file, or an output directory with one run)."""
    found = find_results(path)
    if len(found) > 1:
        listing = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise RunNotFoundError(f"{path} holds {len(found)} runs ({listing}): name one results file")
    return load_run(found[0], _default_label(path) or None)


def load_many(paths: list[str]) -> list[Run]:
    """Every run named by `paths`, in command-line order (runs found in one directory oldest first)."""
    runs = []
    for path in paths:
        found = find_results(path)
        runs += [load_run(p, _default_label(path) if len(found) == 1 else None) for p in found]
    labels = [r.label for r in runs]
    for run in runs:
        if labels.count(run.label) > 1:
            run.label = f"{run.label} ({run.output_dir})"
    return runs


def prompt_hash(row: dict[str, Any]) -> str:
    """Hash of one sample's identity: its doc index and every prompt (context) it was scored on."""
    h = hashlib.sha256()
    h.update(str(row.get("doc_index")).encode())
    for prompt in row.get("prompts") or [row.get("prompt")]:
        h.update(b"\x00")
        h.update(str(prompt).encode("utf-8"))
    return h.hexdigest()[:16]
