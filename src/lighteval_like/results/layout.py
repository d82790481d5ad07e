"""Where a run's files lie under its output folder, spelled once for the writer (`outputs.py`)
and every reader (`runs.py`, the benchmarks):

    <output_dir>/results/<model_name>/results_<timestamp>.json
    <output_dir>/details/<model_name>/<timestamp>/details_<task_key>_<timestamp>.parquet
"""

from __future__ import annotations

import os
import re

RESULTS, DETAILS = "results", "details"
RESULTS_FILE_GLOB = "results_*.json"
_RESULTS_FILE = re.compile(r"^results_(?P<timestamp>.+)\.json$")


def results_path(output_dir: str, model_name: str, timestamp: str) -> str:
    return os.path.join(output_dir, RESULTS, model_name, f"results_{timestamp}.json")


def details_dir(output_dir: str, model_name: str, timestamp: str) -> str:
    return os.path.join(output_dir, DETAILS, model_name, timestamp)


def details_file(task_key: str, timestamp: str) -> str:
    """The name of a task's details file in its run's details folder."""
    return f"details_{task_key}_{timestamp}.parquet"


def timestamp_of(results_file: str) -> str | None:
    """The timestamp in a results file's name; None for a file not named as results files are."""
    match = _RESULTS_FILE.match(os.path.basename(results_file))
    return match.group("timestamp") if match else None


def output_dir_of(results_file: str, model_name: str) -> str:
    """The output folder a results file was written to: its path less `results/<model_name>/<file>`."""
    folder = os.path.dirname(os.path.abspath(results_file))
    suffix = os.path.join(RESULTS, model_name)
    if folder.endswith(os.sep + suffix):
        return folder[: -len(suffix) - 1]
    return os.path.dirname(os.path.dirname(folder))
