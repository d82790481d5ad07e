"""Results/details files and the printed score table."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest

from lighteval_like.results import layout, outputs
from lighteval_like.results.record import MetricScore


def test_layout_of_results_and_details(tmp_path):
    """Results go to <out>/results/<model>/results_<ts>.json, details to
    <out>/details/<model>/<ts>/details_<task key>_<ts>.parquet; a results file leads back to both."""
    out = str(tmp_path)
    results = layout.results_path(out, "org/model", "2024-01-01T00-00-00")
    assert results == os.path.join(out, "results", "org/model", "results_2024-01-01T00-00-00.json")
    assert layout.details_dir(out, "org/model", "ts") == os.path.join(out, "details", "org/model", "ts")
    assert layout.details_file("leaderboard|arc:challenge|0", "ts") == "details_leaderboard|arc:challenge|0_ts.parquet"
    assert layout.timestamp_of(results) == "2024-01-01T00-00-00" and layout.timestamp_of("notes.json") is None
    assert layout.output_dir_of(results, "org/model") == out


def test_save_results_round_trip(tmp_path):
    """save_results writes readable JSON (creating folders), non-ASCII kept, odd types stringified."""
    path = str(tmp_path / "results" / "m" / "results_ts.json")
    outputs.save_results(path, {"results": {"t": {"acc": 0.5}}, "note": "café", "path": tmp_path})
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    assert data == {"results": {"t": {"acc": 0.5}}, "note": "café", "path": str(tmp_path)}
    assert os.listdir(os.path.dirname(path)) == ["results_ts.json"]


def test_atomic_write_failure_leaves_old_file_and_no_temp(tmp_path):
    """A failed write neither truncates the existing file nor leaves a temporary file behind."""
    path = tmp_path / "results.json"
    path.write_text("old", encoding="utf-8")

    def broken(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        outputs.atomic_write(str(path), broken)
    assert path.read_text(encoding="utf-8") == "old"
    assert os.listdir(tmp_path) == ["results.json"]


def test_save_details_parquet(tmp_path):
    """Details are a parquet file per task named after the task key and timestamp."""
    rows = [
        {"prompt": "Q1", "choices": ["a", "b"], "gold_index": [1], "loglikelihoods": [-1.0, -0.5], "num_fewshot": 0},
        {"prompt": "Q2", "choices": ["a", "b"], "gold_index": [0], "loglikelihoods": [-0.1, -0.5], "num_fewshot": 0},
    ]
    path = outputs.save_details(str(tmp_path / "d"), "leaderboard|arc:challenge|0", "ts", rows)
    assert os.path.basename(path) == "details_leaderboard|arc:challenge|0_ts.parquet"
    assert pq.read_table(path).to_pylist() == rows


def test_format_table_lists_metrics_with_stderr():
    """The table shows every task and metric with value and stderr, and no '_stderr' rows."""
    results = {
        "leaderboard|arc:challenge|0": {"acc": MetricScore(0.75, 0.25), "acc_norm": MetricScore(0.5, 0.125)},
        "all": {"acc": MetricScore(0.75, 0.25)},
    }
    table = outputs.format_table(results, {"leaderboard|arc:challenge|0": 3})
    lines = table.splitlines()
    assert "_stderr" not in table
    arc = next(line for line in lines if "leaderboard|arc:challenge|0" in line)
    assert "acc" in arc and "0.7500" in arc and "0.2500" in arc and "3" in arc.split("leaderboard|arc:challenge|0")[1]
    norm = next(line for line in lines if "acc_norm" in line)
    assert "0.5000" in norm and "0.1250" in norm and "leaderboard" not in norm  # task shown once
    assert any("all" in line and "0.7500" in line for line in lines)
    assert len([line for line in lines if "0." in line]) == 3  # one line per metric
