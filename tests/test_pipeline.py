"""The evaluation pipeline in-process (through `run_accelerate`): aggregation, invariances,
few-shot bookkeeping, and the offline demo task."""

from __future__ import annotations

import json
import logging

import pyarrow.parquet as pq
import pytest
from conftest import write_rows

from lighteval_like.api.errors import BadSampleError
from lighteval_like.cli.entrypoints import run_accelerate
from lighteval_like.evaluation.scoring import group_averages, overall
from lighteval_like.results.record import MetricScore, scores_record
from lighteval_like.tasks.docs import TaskData
from lighteval_like.tasks.registry import Registry, ResolvedTask
from lighteval_like.tasks.specs import parse_one_spec


def evaluate(tmp_path, name: str, model: str, tasks: str, mirror: str | None, model_args: str = "",
             batch_size: int = -1, **flags):
    """One in-process `accelerate` run with its own output and cache folders."""
    return run_accelerate(
        model_args=f"pretrained={model}" + (f",{model_args}" if model_args else ""), model_config_path=None,
        override_batch_size=batch_size, cache_dir=str(tmp_path / name / "cache"), tasks=tasks,
        output_dir=str(tmp_path / name / "out"), dataset_dir=mirror, save_details=True, **flags,
    )


def detail_rows(result, key: str) -> list[dict]:
    (path,) = [p for p in result.details_paths if f"details_{key}_" in p]
    return pq.read_table(path).to_pylist()


def test_group_averages_and_overall():
    """A group averages two or more members run with one fewshot; `all` averages tasks only."""
    registry = Registry()
    results = {
        "leaderboard|mmlu:anatomy|5": {"acc": 0.2, "acc_stderr": 0.1},
        "leaderboard|mmlu:astronomy|5": {"acc": 0.6, "acc_stderr": 0.3},
        "leaderboard|mmlu:virology|0": {"acc": 1.0, "acc_stderr": 0.0},
        "leaderboard|arc:challenge|0": {"acc": 0.5, "acc_stderr": 0.2, "acc_norm": 0.25, "acc_norm_stderr": 0.1},
    }
    data = []
    for key in results:
        spec = parse_one_spec(key + "|0")
        data.append(TaskData(ResolvedTask(spec, registry.get(spec.full_name)), [], [], None, 0))
    typed = {k: {m: MetricScore(v[m], v[f"{m}_stderr"]) for m in v if not m.endswith("_stderr")} for k, v in results.items()}
    groups = group_averages(list(registry.groups.values()), data, typed)
    assert set(groups) == {"leaderboard|mmlu:_average|5"}  # virology alone at 0-shot; arc in no group
    assert scores_record(groups["leaderboard|mmlu:_average|5"]) == pytest.approx({"acc": 0.4, "acc_stderr": 0.2})
    everything = scores_record(overall(typed))
    assert everything["acc"] == pytest.approx((0.2 + 0.6 + 1.0 + 0.5) / 4)
    assert everything["acc_norm"] == pytest.approx(0.25)


TASKS = "leaderboard|arc:challenge|0|0,leaderboard|truthfulqa:mc|0|0,leaderboard|mmlu:anatomy|1|0"


@pytest.fixture(scope="module")
def reference_run(tiny_model, mirror, tmp_path_factory):
    return evaluate(tmp_path_factory.mktemp("pipeline-ref"), "ref", tiny_model, TASKS, mirror, max_samples=2)


@pytest.mark.parametrize("model_args, batch_size", [("shared_prefix=False", 1), ("shared_prefix=True", 2)])
def test_results_invariant_to_batching_and_prefix_sharing(reference_run, tiny_model, mirror, tmp_path,
                                                          model_args, batch_size):
    """Batch size and prefix sharing change no per-sample loglikelihood nor any score."""
    other = evaluate(tmp_path, "other", tiny_model, TASKS, mirror, model_args, batch_size, max_samples=2)
    ref_results, other_results = reference_run.results["results"], other.results["results"]
    assert set(ref_results) == set(other_results)
    for key, metrics in ref_results.items():
        assert other_results[key] == pytest.approx(metrics, abs=1e-4), key
    for key in ("leaderboard|arc:challenge|0", "leaderboard|truthfulqa:mc|0", "leaderboard|mmlu:anatomy|1"):
        for a, b in zip(detail_rows(reference_run, key), detail_rows(other, key)):
            assert b["loglikelihoods"] == pytest.approx(a["loglikelihoods"], abs=1e-4)
    assert other.results["config_general"]["override_batch_size"] == batch_size
    assert other.results["config_general"]["model_args"]["shared_prefix"] is (model_args == "shared_prefix=True")


def test_identical_requests_scored_once(reference_run):
    """truthfulqa repeats answers between mc1 and mc2: each distinct request is scored once."""
    general = reference_run.results["summary_general"]
    total = sum(len(r["loglikelihoods"]) for key in reference_run.results["summary_tasks"]
                for r in detail_rows(reference_run, key))
    assert general["num_requests"] < total
    rows = detail_rows(reference_run, "leaderboard|truthfulqa:mc|0")
    for row in rows:  # "Nothing happens." is choice 0 and 3, "It breaks." 1 and 5
        assert row["loglikelihoods"][0] == row["loglikelihoods"][3]
        assert row["loglikelihoods"][1] == row["loglikelihoods"][5]


def test_summary_counts(reference_run):
    """Per-task summaries count docs, samples and few-shots; hashes identify prompts."""
    summary = reference_run.results["summary_tasks"]
    assert summary["leaderboard|arc:challenge|0"]["num_docs"] == 2
    assert summary["leaderboard|mmlu:anatomy|1"]["requested_few_shots"] == 1
    assert summary["leaderboard|mmlu:anatomy|1"]["effective_few_shots"] == 1.0
    hashes = {s["hashes"]["full_prompts"] for s in summary.values()}
    assert len(hashes) == 3
    assert reference_run.results["summary_general"]["num_samples"] == 6


def test_fewshot_truncation_recorded(tiny_model, mirror, tmp_path):
    """truncate=1 with a short max_length drops shots and records it in summary and details."""
    result = evaluate(tmp_path, "trunc", tiny_model, "leaderboard|arc:challenge|3|1", mirror, "max_length=40",
                      max_samples=2)
    summary = result.results["summary_tasks"]["leaderboard|arc:challenge|3"]
    rows = detail_rows(result, "leaderboard|arc:challenge|3")
    assert summary["requested_few_shots"] == 3
    assert summary["effective_few_shots"] < 3
    assert summary["truncated"] == sum(r["fewshot_truncated"] or r["input_truncated"] for r in rows) > 0
    assert all(r["num_fewshot"] < 3 and r["fewshot_truncated"] for r in rows)
    assert summary["effective_few_shots"] == sum(r["num_fewshot"] for r in rows) / len(rows)


def test_fewshot_seeds_multiply_samples(tiny_model, mirror, tmp_path):
    """--num_fewshot_seeds N evaluates every doc under N few-shot draws."""
    result = evaluate(tmp_path, "seeds", tiny_model, "leaderboard|arc:challenge|1|0", mirror, max_samples=2,
                      num_fewshot_seeds=2, seed=5)
    rows = detail_rows(result, "leaderboard|arc:challenge|1")
    assert sorted((r["doc_index"], r["fewshot_seed"]) for r in rows) == [(0, 5), (0, 6), (1, 5), (1, 6)]
    summary = result.results["summary_tasks"]["leaderboard|arc:challenge|1"]
    assert summary["num_samples"] == 4
    assert summary["fewshot_split"] == "train"  # lm-eval's few-shot split, present in the test mirror
    assert all(r["prompt"].count("What is hot, example") == 1 for r in rows)


def test_mirror_without_the_fewshot_split_draws_from_the_evaluated_split(tiny_model, tmp_path, caplog):
    """The shared mirror keeps evaluation splits only: shots then come from the evaluated split,
    never a doc's own row, with a warning and the split recorded in the results."""
    root = str(tmp_path / "mirror")
    write_rows(root, "allenai/ai2_arc", "ARC-Challenge", "test", [
        {"id": f"q{i}", "question": f"Which is wet, case {i}?",
         "choices": {"text": ["water", "rock"], "label": ["A", "B"]}, "answerKey": "A"}
        for i in range(3)
    ])
    with caplog.at_level(logging.WARNING, logger="lighteval_like.tasks.data"):
        result = evaluate(tmp_path, "fallback", tiny_model, "leaderboard|arc:challenge|2|0", root)
    assert "leaderboard|arc:challenge: the mirror has no few-shot split 'train'" in caplog.text
    assert result.results["summary_tasks"]["leaderboard|arc:challenge|2"]["fewshot_split"] == "test"
    rows = detail_rows(result, "leaderboard|arc:challenge|2")
    assert len(rows) == 3
    for row in rows:  # the two other docs are the shots; the doc's own question is asked once, last
        prompt = row["prompt"]
        assert all(prompt.count(f"case {i}?") == 1 for i in range(3))
        assert prompt.rindex(f"case {row['doc_index']}?") > max(prompt.index(f"case {i}?") for i in range(3) if i != row["doc_index"])


def test_skip_bad_samples(tiny_model, tmp_path):
    """A row breaking the prompt function fails the run, or is skipped and counted with the flag."""
    root = str(tmp_path / "mirror")
    good = {"id": "g", "question": "Which is wet?", "choices": {"text": ["water", "rock"], "label": ["A", "B"]},
            "answerKey": "A"}
    write_rows(root, "allenai/ai2_arc", "ARC-Challenge", "test", [good, {**good, "answerKey": "Z"}, good])
    with pytest.raises(BadSampleError, match="row 1"):
        evaluate(tmp_path, "bad", tiny_model, "leaderboard|arc:challenge|0|0", root)
    result = evaluate(tmp_path, "skip", tiny_model, "leaderboard|arc:challenge|0|0", root, skip_bad_samples=True)
    summary = result.results["summary_tasks"]["leaderboard|arc:challenge|0"]
    assert summary["skipped_bad_samples"] == 1 and summary["num_docs"] == 2
    assert [r["doc_index"] for r in detail_rows(result, "leaderboard|arc:challenge|0")] == [0, 2]


def test_arithmetic_demo_without_data_dir(tiny_model, tmp_path, monkeypatch):
    """The generated arithmetic tasks run with no mirror and no hub (data generated locally)."""
    monkeypatch.delenv("LIGHTEVAL_LIKE_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    config = tmp_path / "model.yaml"
    config.write_text(f"model_parameters:\n  model_name: {tiny_model}\n", encoding="utf-8")
    result = run_accelerate(
        model_args=None, model_config_path=str(config), override_batch_size=-1, cache_dir=str(tmp_path / "cache"),
        tasks="lighteval|arithmetic_generated:2da|0|0,lighteval|arithmetic_generated:1dc|0|0",
        output_dir=str(tmp_path / "out"), max_samples=3, save_details=True,
    )
    results = result.results
    for kind in ("2da", "1dc"):
        key = f"lighteval|arithmetic_generated:{kind}|0"
        assert results["summary_tasks"][key]["num_docs"] == 3
        assert 0.0 <= results["results"][key]["acc_greedy"] <= 1.0
        assert results["config_tasks"][key[:-2]]["data_builder"] == f"arithmetic_generated_{kind}"
    rows = detail_rows(result, "lighteval|arithmetic_generated:2da|0")
    assert all(r["prompt"].startswith("Question: What is ") and r["prompt"].endswith("\nAnswer:") for r in rows)
    assert all(r["choices"][0].strip().lstrip("-").isdigit() for r in rows)
    assert "lighteval|arithmetic_generated:_average|0" in results["results"]
    with open(result.results_path, encoding="utf-8") as f:
        assert json.load(f)["results"] == json.loads(json.dumps(results["results"]))
