"""`accelerate launch --multi_gpu --num_processes 2` on a CPU-only machine is real data parallelism.

Without CUDA, accelerate's PartialState() finds no backend for the launched ranks and makes
each a lone process, so both ranks used to score everything and write the results twice.
parallel.accelerate_context asks for CPU (gloo) ranks instead; this checks the outcome: one
results file, two processes recorded, and the numbers of a single-process run.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
from conftest import free_port, run_cli

TASKS = (
    "leaderboard|truthfulqa:mc|0|0,leaderboard|arc:challenge|0|0,"
    "lighteval|lambada:openai|0|0,leaderboard|gsm8k|0|0"
)


def _outputs(out_dir: str) -> tuple[list[str], dict, dict]:
    """(results files, results json, {(task, doc): (loglikelihoods, generation)})."""
    paths = glob.glob(os.path.join(out_dir, "results", "*", "*.json"))
    with open(paths[0], encoding="utf-8") as f:
        results = json.load(f)
    rows = {}
    for path in glob.glob(os.path.join(out_dir, "details", "*", "*", "*.parquet")):
        task = os.path.basename(path)[len("details_") :].rsplit("_", 1)[0]
        for row in pq.read_table(path).to_pylist():
            rows[(task, row["doc_index"])] = (row["loglikelihoods"], row["generation"])
    return paths, results, rows


def test_two_cpu_ranks_score_as_one_process(tiny_model, mirror, tmp_path):
    common = [
        "accelerate", "--model_args", f"pretrained={tiny_model},dtype=float32", "--tasks", TASKS,
        "--max_samples", "4", "--save_details", "--dataset_dir", mirror, "--no_cache",
    ]
    single = run_cli([*common, "--output_dir", str(tmp_path / "single")])
    assert single.returncode == 0, single.stderr[-3000:]

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), "-m", "lighteval_like",
    ]
    dp = subprocess.run(
        [*launch, *common, "--output_dir", str(tmp_path / "dp")], capture_output=True, text=True, env=env, timeout=600
    )
    assert dp.returncode == 0, dp.stderr[-3000:]

    _, single_results, single_rows = _outputs(str(tmp_path / "single"))
    paths, dp_results, dp_rows = _outputs(str(tmp_path / "dp"))
    assert len(paths) == 1, f"only the main rank writes results, got {paths}"
    assert dp_results["config_general"]["num_processes"] == 2
    assert dp_rows.keys() == single_rows.keys() and single_rows
    for key, (lls, generation) in single_rows.items():
        dp_lls, dp_generation = dp_rows[key]
        assert len(dp_lls) == len(lls), key
        assert all(abs(a - b) <= 1e-4 for a, b in zip(dp_lls, lls)), key
        assert dp_generation == generation, key
    for task, metrics in single_results["results"].items():
        for name, value in metrics.items():
            assert abs(dp_results["results"][task][name] - value) <= 1e-4, (task, name)
