"""End to end through `python -m lighteval_like` on the tiny model and the dataset mirror."""

from __future__ import annotations

import glob
import json
import math
import os
import re

import pyarrow.parquet as pq
import pytest
from conftest import run_cli

MAX_SAMPLES = 2
GEN_TOKENS = 24
DETAIL_COLUMNS = {"prompt", "choices", "gold_index", "loglikelihoods", "prediction", "metrics", "num_fewshot",
                  "fewshot_truncated"}
TASKS = [
    "leaderboard|arc:challenge|0|0",
    "leaderboard|mmlu:abstract_algebra|1|0",
    "leaderboard|mmlu:anatomy|1|0",
    "leaderboard|truthfulqa:mc|0|0",
    "custom|gsm8k_short|1|0",
    "lighteval|wikitext:2|0|0",
    "lighteval|lambada:openai|0|0",
]
# gsm8k's prompt, metrics and rows, generating GEN_TOKENS tokens instead of 256 (CPU time).
CUSTOM_TASKS = f'''
from lighteval_like.tasks import RequestType, TaskConfig
from lighteval_like.metrics.library import GSM8K_FLEXIBLE, GSM8K_STRICT
from lighteval_like.tasks.prompts import gsm8k

TASKS_TABLE = [
    TaskConfig(name="gsm8k_short", suite="custom", prompt_function=gsm8k, hf_repo="openai/gsm8k", hf_subset="main",
               evaluation_split="test", few_shots_split=None, request_type=RequestType.GENERATIVE,
               metrics=(GSM8K_STRICT, GSM8K_FLEXIBLE), generation_size={GEN_TOKENS}, stop_sequences=("Question:",)),
]
'''


def _env(tmp) -> dict:
    return {"HF_DATASETS_CACHE": str(tmp / "hf-datasets"), "LIGHTEVAL_LIKE_CACHE": str(tmp / "cache")}


@pytest.fixture(scope="module")
def run(tiny_model, mirror, tmp_path_factory):
    """One `accelerate` run over every request type, with details saved."""
    tmp = tmp_path_factory.mktemp("cli-run")
    (tmp / "custom_tasks.py").write_text(CUSTOM_TASKS, encoding="utf-8")
    (tmp / "tasks.txt").write_text("# the tasks of the end-to-end test\n" + "\n".join(TASKS) + "\n", encoding="utf-8")
    out = tmp / "out"
    proc = run_cli([
        "accelerate", "--model_args", f"pretrained={tiny_model}", "--tasks", str(tmp / "tasks.txt"),
        "--custom_tasks", str(tmp / "custom_tasks.py"), "--dataset_dir", mirror, "--output_dir", str(out),
        "--cache_dir", str(tmp / "cache"), "--max_samples", str(MAX_SAMPLES), "--save_details",
    ], env=_env(tmp))
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = glob.glob(str(out / "results" / "*" / "*.json"))
    assert len(files) == 1
    with open(files[0], encoding="utf-8") as f:
        results = json.load(f)
    return {"proc": proc, "out": out, "path": files[0], "results": results, "model": tiny_model}


def details(run, key: str) -> list[dict]:
    (path,) = glob.glob(str(run["out"] / "details" / "*" / "*" / f"details_{glob.escape(key)}_*.parquet"))
    return pq.read_table(path).to_pylist()


def test_results_file_location_and_sections(run):
    """results_<timestamp>.json under results/<model name>/ with lighteval's sections."""
    model_name = os.path.basename(run["model"].rstrip("/"))
    folder, name = os.path.split(run["path"])
    assert folder == str(run["out"] / "results" / model_name)
    assert re.fullmatch(r"results_\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(\.\d+)?\.json", name)
    data = run["results"]
    for section in ("config_general", "results", "versions", "config_tasks", "summary_tasks", "summary_general"):
        assert section in data
    general = data["config_general"]
    assert general["model_name"] == model_name and general["max_samples"] == MAX_SAMPLES
    assert general["model_args"]["pretrained"] == run["model"]
    keys = [t.rsplit("|", 1)[0] for t in TASKS]
    assert set(data["versions"]) == set(keys) == set(data["summary_tasks"])
    assert set(data["config_tasks"]) == {k.rsplit("|", 1)[0] for k in keys}
    assert data["config_tasks"]["leaderboard|arc:challenge"]["metrics"] == ["acc", "acc_norm"]
    assert data["config_tasks"]["custom|gsm8k_short"]["generation_size"] == GEN_TOKENS
    assert data["summary_general"]["num_samples"] == MAX_SAMPLES * len(TASKS)


def test_max_samples_limits_every_task(run):
    """--max_samples N evaluates only the first N docs of each task."""
    for key, summary in run["results"]["summary_tasks"].items():
        assert summary["num_docs"] == summary["num_samples"] == MAX_SAMPLES, key
    prompts = [row["prompt"] for row in details(run, "leaderboard|arc:challenge|0")]
    assert [("case 0" in p, "case 1" in p) for p in prompts] == [(True, False), (False, True)]


def test_table_printed(run):
    """The score table lists each task's metrics with the values of the results file."""
    stdout = run["proc"].stdout
    results = run["results"]["results"]
    for key in results:
        assert key in stdout
    arc_line = next(line for line in stdout.splitlines() if "leaderboard|arc:challenge|0" in line)
    assert f"{results['leaderboard|arc:challenge|0']['acc']:.4f}" in arc_line
    assert f"Results written to {run['path']}" in stdout


def test_all_and_mmlu_average(run):
    """`all` averages each metric over tasks (not groups); mmlu subtasks get an `_average` group."""
    results = run["results"]["results"]
    aa, an = results["leaderboard|mmlu:abstract_algebra|1"], results["leaderboard|mmlu:anatomy|1"]
    average = results["leaderboard|mmlu:_average|1"]
    assert average["acc"] == pytest.approx((aa["acc"] + an["acc"]) / 2)
    assert average["acc_stderr"] == pytest.approx((aa["acc_stderr"] + an["acc_stderr"]) / 2)
    arc = results["leaderboard|arc:challenge|0"]
    assert results["all"]["acc"] == pytest.approx((arc["acc"] + aa["acc"] + an["acc"]) / 3)
    assert results["all"]["acc_norm"] == pytest.approx(arc["acc_norm"])
    assert results["all"]["mc2"] == pytest.approx(results["leaderboard|truthfulqa:mc|0"]["mc2"])
    assert not any(k.startswith("lighteval|") and "_average" in k for k in results)


def test_details_multiple_choice(run):
    """Details hold prompts, choices, gold, loglikelihoods and a consistent prediction/metric."""
    rows = details(run, "leaderboard|arc:challenge|0")
    assert len(rows) == MAX_SAMPLES
    assert DETAIL_COLUMNS <= set(rows[0])
    for row in rows:
        assert row["choices"] == ["water", "rock", "wood", "iron"] and row["gold_index"] == [0]
        assert row["prompt"].startswith("Question: Which is a liquid") and row["prompt"].endswith("\nAnswer:")
        lls = row["loglikelihoods"]
        assert len(lls) == 4 and all(x < 0 for x in lls)
        best = max(range(4), key=lambda i: lls[i])
        assert row["prediction"] == row["choices"][best]
        metrics = json.loads(row["metrics"])
        assert metrics["acc"] == float(best == 0)
        assert row["num_fewshot"] == 0 and row["fewshot_truncated"] is False
    mean_acc = sum(json.loads(r["metrics"])["acc"] for r in rows) / len(rows)
    assert run["results"]["results"]["leaderboard|arc:challenge|0"]["acc"] == pytest.approx(mean_acc)


def test_details_fewshot_from_dev_split(run):
    """mmlu's one shot comes from its dev split, after the subject instruction."""
    for row in details(run, "leaderboard|mmlu:anatomy|1"):
        assert row["num_fewshot"] == 1
        assert row["prompt"].startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")
        assert "dev question 0 about anatomy?" in row["prompt"] and row["choices"] == ["A", "B", "C", "D"]
    assert run["results"]["summary_tasks"]["leaderboard|mmlu:anatomy|1"]["effective_few_shots"] == 1.0


def test_truthfulqa_mc1_mc2(run):
    """truthfulqa scores mc1 and mc2 choices in one sample; mc2 lies in [0, 1]."""
    rows = details(run, "leaderboard|truthfulqa:mc|0")
    assert all(len(r["loglikelihoods"]) == 6 for r in rows)
    result = run["results"]["results"]["leaderboard|truthfulqa:mc|0"]
    assert 0.0 <= result["mc2"] <= 1.0 and result["mc1"] in (0.0, 0.5, 1.0)


def test_generative_task(run):
    """The generative task generates (at most its generation size), is scored with gsm8k's metrics."""
    rows = details(run, "custom|gsm8k_short|1")
    for row in rows:
        assert isinstance(row["prediction"], str)
        assert row["loglikelihoods"] == []
        metrics = json.loads(row["metrics"])
        assert set(metrics) == {"exact_match", "qem"}
        assert row["prompt"].endswith("How many clips in total?\nAnswer:")
        assert row["prompt"].count("#### ") == 1  # the one shot's answer
        assert "Question:" not in row["prediction"]  # cut at the stop sequence
    result = run["results"]["results"]["custom|gsm8k_short|1"]
    per_sample = [json.loads(r["metrics"])["exact_match"] for r in rows]
    assert result["exact_match"] == pytest.approx(sum(per_sample) / len(per_sample))
    scoring = run["results"]["summary_general"]["scoring"]
    assert 0 < scoring["generated_tokens"] <= GEN_TOKENS * MAX_SAMPLES


def test_rolling_task(run):
    """wikitext is scored by rolling windows; the perplexities agree with bits_per_byte."""
    rows = details(run, "lighteval|wikitext:2|0")
    assert all(len(r["loglikelihoods"]) == 1 for r in rows)
    assert max(r["continuation_tokens"][0] for r in rows) > 256  # the long page needed several windows
    result = run["results"]["results"]["lighteval|wikitext:2|0"]
    assert result["word_perplexity"] > result["byte_perplexity"] > 1.0
    assert result["bits_per_byte"] == pytest.approx(math.log2(result["byte_perplexity"]))
    pairs = [json.loads(r["metrics"])["byte_perplexity"] for r in rows]
    total_ll, total_bytes = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
    assert result["byte_perplexity"] == pytest.approx(math.exp(-total_ll / total_bytes))


def test_loglikelihood_task(run):
    """lambada scores the last word given the rest; perplexity = exp(-mean loglikelihood)."""
    rows = details(run, "lighteval|lambada:openai|0")
    assert [r["choices"] for r in rows] == [[" milk"], [" author"]]
    assert rows[0]["prompt"] == "She walked to the store because she needed"
    result = run["results"]["results"]["lighteval|lambada:openai|0"]
    mean_ll = sum(r["loglikelihoods"][0] for r in rows) / len(rows)
    assert result["perplexity"] == pytest.approx(math.exp(-mean_ll), rel=1e-6)
    assert result["acc_greedy"] == pytest.approx(sum(all(r["greedy"]) for r in rows) / len(rows))


def test_tasks_list_suite():
    """`tasks list --suite leaderboard` prints that suite's tasks and supersets only."""
    proc = run_cli(["tasks", "list", "--suite", "leaderboard"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "leaderboard|arc:challenge" in lines and "leaderboard|mmlu:anatomy" in lines
    assert not any(line.startswith("lighteval|") for line in lines)
    assert any(line.startswith("leaderboard|mmlu") and "57" in line for line in lines)


def test_tasks_inspect_shows_dataset_metrics_and_prompt(mirror):
    """`tasks inspect` shows the dataset, metrics and a rendered prompt from the mirror."""
    proc = run_cli(["tasks", "inspect", "leaderboard|arc:challenge", "--dataset_dir", mirror, "--num_fewshot", "1"])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "allenai/ai2_arc" in out and "ARC-Challenge" in out
    assert "acc, acc_norm" in out
    assert "Question: Which is a liquid, case 0?\nAnswer:" in out
    assert "What is hot, example" in out  # the shot, from the train split
    assert "water" in out
