"""Results JSON, per-sample details (parquet) and the printed score table. Writes are atomic."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lighteval_like.results import RunReport, TaskScores, details_rows
from lighteval_like.samples import Sample


@dataclass
class EvaluationResult:
    """A run's report and the files it was written to."""

    report: RunReport
    results_path: str
    details_paths: list[str] = field(default_factory=list)
    tensorboard_path: str | None = None

    @property
    def results(self) -> dict:
        """The results document, as written to `results_path`."""
        return self.report.to_json()


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Write through a temporary file in the same folder, then rename: never a half file."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _write_json(data: dict) -> Callable[[str], None]:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False, default=str)

    return write


def results_path(output_dir: str, model_name: str, timestamp: str) -> str:
    return os.path.join(output_dir, "results", model_name, f"results_{timestamp}.json")


def details_dir(output_dir: str, model_name: str, timestamp: str) -> str:
    return os.path.join(output_dir, "details", model_name, timestamp)


def save_results(path: str, results: dict) -> None:
    atomic_write(path, _write_json(results))


def save_details(folder: str, task_key: str, timestamp: str, rows: list[dict[str, Any]]) -> str:
    path = os.path.join(folder, f"details_{task_key}_{timestamp}.parquet")
    table = pa.Table.from_pylist(rows)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    return path


def save_run(output_dir: str, timestamp: str, report: RunReport, samples: list[Sample],
             detail_tasks: list[str], tensorboard: bool = False) -> EvaluationResult:
    """The details of `detail_tasks` (one parquet file each), the results file, and with
    `tensorboard` the scores as TensorBoard scalars (at the checkpoint step, if one was given)."""
    model_name = report.config_general.model_name
    paths = []
    for key in detail_tasks:
        folder = details_dir(output_dir, model_name, timestamp)
        paths.append(save_details(folder, key, timestamp, details_rows([s for s in samples if s.task_key == key])))
    path = results_path(output_dir, model_name, timestamp)
    document = report.to_json()
    save_results(path, document)
    events = None
    if tensorboard:
        from lighteval_like.tensorboard import write_tensorboard

        events = write_tensorboard(document, output_dir, model_name, document["config_general"].get("checkpoint_step"))
    return EvaluationResult(report, path, paths, events)


def format_table(results: dict[str, TaskScores], versions: dict[str, int]) -> str:
    """Aligned text table of every metric with its stderr (task names contain '|', so no markdown)."""
    rows = [("Task", "Version", "Metric", "Value", "Stderr")]
    for task, scores in results.items():
        for i, (name, score) in enumerate(scores.items()):
            rows.append((
                task if i == 0 else "", str(versions.get(task, "")) if i == 0 else "", name,
                f"{score.value:.4f}", f"± {score.stderr:.4f}" if isinstance(score.stderr, float) else "",
            ))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
