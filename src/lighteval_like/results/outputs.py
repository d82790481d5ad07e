"""Results JSON, per-sample details (parquet) and the printed score table. Writes are atomic,
and a run's files appear together or not at all (see `save_run`)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lighteval_like.api.errors import OutputError
from lighteval_like.api.sample import Sample
from lighteval_like.results import layout
from lighteval_like.results.record import RunReport, TaskScores, details_rows


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


def _new_file_mode() -> int:
    """The mode the user's umask gives a new file (mkstemp's own 0600 would hide results from
    teammates sharing the folder). The umask can only be read by setting it, so it is set back."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Write through a temporary file in the same folder, then rename: never a half file."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _new_file_mode())
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


def save_results(path: str, results: dict) -> None:
    atomic_write(path, _write_json(results))


def save_details(folder: str, task_key: str, timestamp: str, rows: list[dict[str, Any]]) -> str:
    path = os.path.join(folder, layout.details_file(task_key, timestamp))
    table = pa.Table.from_pylist(rows)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    return path


def _unwritable(path: str, error: OSError) -> str:
    return f"cannot write to '{path}': {error.strerror or error}"


def check_output_dir(output_dir: str) -> None:
    """Create the output folder and write a probe file in it, before any data or model loads:
    a read-only mount, a path under a file or a full disk is found before the scoring, not after."""
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir, prefix=".tmp-probe-") as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise OutputError(f"output folder '{output_dir}' is not writable: {_unwritable(e.filename or output_dir, e)}; "
                          f"pass --output_dir <writable folder>") from e


def save_run(output_dir: str, timestamp: str, report: RunReport, samples: list[Sample],
             detail_tasks: list[str], cached: bool, tensorboard: bool = False) -> EvaluationResult:
    """The details of `detail_tasks` (one parquet file each) and the results file, all or none;
    then with `tensorboard` the scores as TensorBoard scalars (at the checkpoint step, if given).

    Everything is written into one staging folder under `output_dir`, then the details folder
    and the results file are renamed into place (renames do not need disk space). Guarantee:
    when the results file exists, every details file of the run exists, complete; when saving
    fails, nothing of this run is left (staging folder removed, a moved details folder taken
    back). A failure raises `OutputError` carrying `report`, so the scores can still be shown;
    `cached` says whether the response cache lets a rerun recompute nothing.
    """
    model_name = report.config_general.model_name
    final_details = layout.details_dir(output_dir, model_name, timestamp)
    final_results = layout.results_path(output_dir, model_name, timestamp)
    stage = moved = None
    try:
        os.makedirs(output_dir, exist_ok=True)
        stage = tempfile.mkdtemp(dir=output_dir, prefix=".tmp-run-")
        staged_details = layout.details_dir(stage, model_name, timestamp)
        paths = []
        for key in detail_tasks:
            rows = details_rows([s for s in samples if s.task_key == key])
            save_details(staged_details, key, timestamp, rows)
            paths.append(os.path.join(final_details, layout.details_file(key, timestamp)))
        document = report.to_json()
        staged_results = layout.results_path(stage, model_name, timestamp)
        save_results(staged_results, document)
        if paths:
            os.makedirs(os.path.dirname(final_details), exist_ok=True)
            os.rename(staged_details, final_details)
            moved = final_details
        os.makedirs(os.path.dirname(final_results), exist_ok=True)
        os.replace(staged_results, final_results)
    except OSError as e:
        if moved:
            shutil.rmtree(moved, ignore_errors=True)
        rerun = ("a rerun takes every scored request from the response cache" if cached
                 else "with --no_cache the scored requests were not kept")
        raise OutputError(f"results not saved: {_unwritable(output_dir, e)}; {rerun}", report) from e
    finally:
        if stage:
            shutil.rmtree(stage, ignore_errors=True)
    events = None
    if tensorboard:
        from lighteval_like.results.tensorboard import write_tensorboard

        events = write_tensorboard(document, output_dir, model_name, document["config_general"].get("checkpoint_step"))
    return EvaluationResult(report, final_results, paths, events)


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
