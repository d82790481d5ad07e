"""Results JSON, per-sample details (parquet) and the printed score table. Writes are atomic."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


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


def format_table(results: dict[str, dict[str, float]], versions: dict[str, int]) -> str:
    """Aligned text table of every metric with its stderr (task names contain '|', so no markdown)."""
    rows = [("Task", "Version", "Metric", "Value", "Stderr")]
    for task, metrics in results.items():
        first = True
        for name, value in metrics.items():
            if name.endswith("_stderr"):
                continue
            stderr = metrics.get(f"{name}_stderr")
            rows.append((
                task if first else "", str(versions.get(task, "")) if first else "", name,
                f"{value:.4f}", f"± {stderr:.4f}" if isinstance(stderr, float) else "",
            ))
            first = False
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
