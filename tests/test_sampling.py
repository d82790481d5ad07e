"""Generation parameters (model argument, --gen_kwargs, task defaults), seeded sampling that does
not depend on the batch or the order of requests, and the metrics over samples (pass@k, maj@k,
avg@k) against hand-computed values."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from conftest import free_port, run_cli
from hooks import cache_rows, run_and_kill
from test_parity_smollm2 import hub_mirror, smollm2  # noqa: F401
from test_transformers_model import GEN_CONTEXTS, load

from lighteval_like.api.doc import Doc
from lighteval_like.api.errors import ConfigError, TaskSpecError
from lighteval_like.api.generation import GenerationParameters, parse_gen_kwargs, sample_seed
from lighteval_like.api.requests import GenerationRequest, GenerationResponse, SamplingParams
from lighteval_like.cli.entrypoints import run_accelerate
from lighteval_like.metrics.library import OverSamples, majority, pass_at_k
from lighteval_like.models.model_args import parse_model_args
from lighteval_like.tasks.registry import Registry, resolve_metrics

GOLD = Doc("q", ["work\n#### 42"], 0)


def _gen(*texts: str) -> list[GenerationResponse]:
    return [GenerationResponse(t, 1) for t in texts]


def _value(kind: str, texts: list[str], k: int | None = None) -> float:
    spec = OverSamples(kind, lambda t: t.strip(), lambda d: "42", k)
    (metric,) = spec.metrics(len(texts))
    return metric.sample_fn(GOLD, _gen(*texts))


# ------------------------------------------------------------------ metrics
@pytest.mark.parametrize("n, c, k, expected", [
    (4, 1, 1, 1 / 4),
    (4, 1, 2, 1 - 3 / 6),  # 1 - C(3,2)/C(4,2)
    (5, 2, 3, 1 - 1 / 10),  # 1 - C(3,3)/C(5,3)
    (4, 0, 2, 0.0),
    (4, 3, 2, 1.0),  # n - c < k: every pair holds a pass
])
def test_pass_at_k_unbiased_estimator(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)
    texts = ["42"] * c + ["7"] * (n - c)
    assert _value("pass", texts, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_with_fewer_samples_than_k_is_refused():
    with pytest.raises(ValueError, match="undefined with n=2"):
        pass_at_k(2, 1, 4)
    task = Registry().get("lighteval|gsm8k_cot_maj")
    spec = OverSamples("pass", str, str, 4)
    with pytest.raises(TaskSpecError, match="pass@4 needs num_samples >= 4, got 2"):
        resolve_metrics(dataclasses.replace(task, metrics=(spec,)), 2)


@pytest.mark.parametrize("texts, k, expected", [
    (["42", "7", "42", "7", "7"], None, 0.0),  # 3 votes for 7 against 2
    (["42", "7", "42", "7", "7"], 4, 1.0),  # the first 4: a 2-2 tie goes to the answer given first
    (["7", "42", "42", "7"], None, 0.0),  # a tie: 7 came first
    (["42", "[invalid]", "[invalid]"], None, 0.0),  # unparsed answers vote too (as lm-eval)
    (["42", "7"], 8, 1.0),  # n < k: the vote of all n
])
def test_maj_at_k(texts, k, expected):
    assert _value("maj", texts, k) == expected


def test_avg_at_k_and_majority_ties():
    assert _value("avg", ["42", "7", "42", "7"]) == 0.5
    assert _value("avg", ["42", "7", "42", "7"], 1) == 1.0
    assert _value("avg", ["7", "42"], 4) == 0.5  # n < k: the mean over the n there are
    assert majority(["b", "a", "a", "b"]) == "b"


def test_metric_names_follow_the_number_of_samples():
    task = Registry().get("lighteval|gsm8k_cot_maj")
    assert [m.name for m in resolve_metrics(task)] == ["exact_match", "maj@8", "avg@8"]
    assert [m.name for m in resolve_metrics(task, 4)] == ["exact_match", "maj@4", "avg@4"]


# --------------------------------------------------------- generation parameters
def test_generation_parameters_model_arg_and_gen_kwargs():
    config = parse_model_args("pretrained=x,generation_parameters={temperature:0.5,top_p:0.9,seed:7},dtype=float32")
    assert config.generation_parameters == GenerationParameters(temperature=0.5, top_p=0.9, seed=7)
    assert config.dtype == "float32"
    user = parse_gen_kwargs("temperature=0.2,max_gen_toks=64,num_samples=4").over(config.generation_parameters)
    assert user == GenerationParameters(temperature=0.2, top_p=0.9, max_new_tokens=64, seed=7, num_samples=4)
    assert parse_gen_kwargs("do_sample=false").temperature == 0.0
    with pytest.raises(ConfigError, match="unknown --gen_kwargs key.*temprature.*did you mean temperature"):
        parse_gen_kwargs("temprature=1")
    with pytest.raises(ConfigError, match="top_p=1.5 is not valid"):
        parse_gen_kwargs("top_p=1.5")
    with pytest.raises(ConfigError, match="generation_parameters.temperature=hot"):
        parse_model_args("pretrained=x,generation_parameters={temperature:hot}")


def test_user_values_win_over_task_defaults():
    task = GenerationParameters(temperature=0.2, num_samples=8)
    assert GenerationParameters(num_samples=4).over(task) == GenerationParameters(temperature=0.2, num_samples=4)
    assert GenerationParameters().over(task) == task


def test_sample_seed_is_stable_and_distinct():
    assert sample_seed(1234, "lighteval|gsm8k_cot_maj|8", 3, 0) == sample_seed(1234, "lighteval|gsm8k_cot_maj|8", 3, 0)
    seeds = {sample_seed(s, t, d, i) for s in (1, 2) for t in ("a", "b") for d in (0, 1) for i in (0, 1)}
    assert len(seeds) == 16


# ------------------------------------------------------------- seeded sampling
def _sampled(contexts: list[str], samples: int = 3) -> list[GenerationRequest]:
    sampling = SamplingParams(temperature=1.0, top_k=50, top_p=0.95)
    return [GenerationRequest(c, (), 12, sampling, sample_seed(1234, "t", d, i))
            for d, c in enumerate(contexts) for i in range(samples)]


def test_sampled_texts_do_not_depend_on_batch_or_order(tiny_model):
    """Each request draws from its own seeded stream: the same texts with batch 1, batch 4,
    the automatic batch and the requests reversed; different seeds draw different texts."""
    requests = _sampled(GEN_CONTEXTS)
    texts = [r.text for r in load(tiny_model, batch_size=1).greedy_until(requests)]
    assert [r.text for r in load(tiny_model, batch_size=4).greedy_until(requests)] == texts
    assert [r.text for r in load(tiny_model).greedy_until(requests)] == texts
    backwards = load(tiny_model, batch_size=3).greedy_until(requests[::-1])
    assert [r.text for r in backwards][::-1] == texts
    assert len(set(texts)) > len(GEN_CONTEXTS)  # samples of one prompt differ


def test_sampling_without_a_seed_is_refused(tiny_model):
    request = GenerationRequest(GEN_CONTEXTS[0], (), 4, SamplingParams(temperature=0.7))
    with pytest.raises(Exception, match="needs a seed"):
        load(tiny_model).greedy_until([request])


def test_sampled_task_end_to_end_records_parameters_and_resumes(tiny_model, mirror, tmp_path):
    """gsm8k_cot_maj with 3 samples per doc: maj@3/avg@3 with stderrs, the values used recorded
    per task; the same run again takes every sample from the response cache, same scores."""
    def run(batch: int):
        return run_accelerate(
            model_args=f"pretrained={tiny_model},generation_parameters={{max_new_tokens:8}}", model_config_path=None,
            override_batch_size=batch, cache_dir=str(tmp_path / "cache"), tasks="lighteval|gsm8k_cot_maj|2|0",
            output_dir=str(tmp_path / f"out{batch}"), dataset_dir=mirror, gen_kwargs="num_samples=3,top_k=20",
            save_details=True,
        )

    first = run(4)
    rows = pq.read_table(first.details_paths[0]).to_pylist()
    assert all(len(r["generations"]) == 3 and r["generation"] == r["generations"][0] for r in rows)
    with open(first.results_path, encoding="utf-8") as f:
        written = json.load(f)
    scores = written["results"]["lighteval|gsm8k_cot_maj|2"]
    assert list(scores) == ["exact_match", "exact_match_stderr", "maj@3", "maj@3_stderr", "avg@3", "avg@3_stderr"]
    assert written["summary_tasks"]["lighteval|gsm8k_cot_maj|2"]["generation_parameters"] == {
        "temperature": 0.2, "top_p": 1.0, "top_k": 20, "min_p": 0.0, "repetition_penalty": 1.0,
        "max_new_tokens": 8, "seed": 1234, "num_samples": 3,
    }
    assert written["summary_general"]["num_requests"] == 3 * 3  # 3 docs x 3 samples
    second = run(1)
    with open(second.results_path, encoding="utf-8") as f:
        again = json.load(f)
    assert again["summary_general"]["response_cache"]["hits"] == 9
    assert again["results"]["lighteval|gsm8k_cot_maj|2"] == scores


def _sample_texts(out_dir) -> tuple[dict, dict]:
    """({doc: sampled texts}, scores) of the run written to `out_dir`."""
    (results,) = glob.glob(os.path.join(out_dir, "results", "*", "*.json"))
    (details,) = glob.glob(os.path.join(out_dir, "details", "*", "*", "*.parquet"))
    with open(results, encoding="utf-8") as f:
        scores = json.load(f)["results"]
    return {r["doc_index"]: r["generations"] for r in pq.read_table(details).to_pylist()}, scores


# (model fixture, mirror fixture, task, --max_samples, --gen_kwargs): the tiny model with short
# prompts and generations in the default suite; SmolLM2 on 10 real gsm8k docs, k=4, full length.
SAMPLED_RUNS = [
    pytest.param("tiny_model", "mirror", "lighteval|gsm8k_cot_maj|2|0", None, "num_samples=4,max_new_tokens=6", id="tiny"),
    pytest.param("smollm2", "hub_mirror", "lighteval|gsm8k_cot_maj|8|0", "10", "num_samples=4", id="smollm2",
                 marks=pytest.mark.slow),
]


def _sampled_command(request, model_fixture: str, mirror_fixture: str, task: str, docs: str | None,
                     gen_kwargs: str) -> list[str]:
    model, mirror = request.getfixturevalue(model_fixture), request.getfixturevalue(mirror_fixture)
    return ["accelerate", "--model_args", f"pretrained={model},dtype=float32", "--tasks", task, "--gen_kwargs",
            gen_kwargs, "--save_details", "--dataset_dir", mirror, *(["--max_samples", docs] if docs else [])]


@pytest.mark.parametrize("model_fixture, mirror_fixture, task, docs, gen_kwargs", SAMPLED_RUNS)
def test_sampled_run_same_with_two_data_parallel_processes(request, tmp_path, model_fixture, mirror_fixture, task, docs,
                                                            gen_kwargs):
    """gsm8k_cot_maj: two gloo ranks at batch 8 draw the texts and scores of one process at batch 1."""
    common = [*_sampled_command(request, model_fixture, mirror_fixture, task, docs, gen_kwargs), "--no_cache"]
    single = run_cli([*common, "--output_dir", str(tmp_path / "single"), "--override_batch_size", "1"])
    assert single.returncode == 0, single.stderr[-3000:]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(free_port()), "-m", "lighteval_like"]
    dp = subprocess.run([*launch, *common, "--output_dir", str(tmp_path / "dp"), "--override_batch_size", "8"],
                        capture_output=True, text=True, env=env, timeout=3600)
    assert dp.returncode == 0, dp.stderr[-3000:]
    texts, scores = _sample_texts(tmp_path / "single")
    assert _sample_texts(tmp_path / "dp") == (texts, scores)
    assert len(texts) == int(docs or 3) and all(len(t) == 4 for t in texts.values())
    assert len({t for doc in texts.values() for t in doc}) > len(texts)  # the samples of a doc differ


@pytest.mark.parametrize("model_fixture, mirror_fixture, task, docs, gen_kwargs", SAMPLED_RUNS)
def test_sampled_run_killed_and_resumed_draws_the_same_texts(request, tmp_path, model_fixture, mirror_fixture, task, docs,
                                                            gen_kwargs):
    """SIGKILL a sampled run mid-way; the same command again reuses the committed samples (keyed
    by their seeds), draws the rest, and ends with the texts and scores of an uninterrupted run
    (at batch 8, the resumed one at batch 1)."""
    common = _sampled_command(request, model_fixture, mirror_fixture, task, docs, gen_kwargs)
    total = 4 * int(docs or 3)
    whole = run_cli([*common, "--output_dir", str(tmp_path / "whole"), "--override_batch_size", "8", "--no_cache"])
    assert whole.returncode == 0, whole.stderr[-3000:]
    cache_dir, out = str(tmp_path / "cache"), str(tmp_path / "out")
    args = [*common, "--output_dir", out, "--cache_dir", cache_dir, "--override_batch_size", "1"]
    assert run_and_kill(args, cache_dir, rows=4, sleep_s=0.5, timeout_s=1800) == -signal.SIGKILL
    finished = cache_rows(cache_dir)
    assert 4 <= finished < total
    resumed = run_cli(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Response cache: {finished} reused, {total - finished} computed" in resumed.stdout
    assert _sample_texts(out) == _sample_texts(tmp_path / "whole")


def test_distributed_override_generation_section(tmp_path):
    """The override's `generation:` takes the same keys; max_new_tokens keeps capping tasks that set
    no size (max_gen_toks), the rest become the model's generation parameters."""
    from lighteval_like.cli.override_config import load_override_config

    path = tmp_path / "override.yaml"
    path.write_text("tasks: {tasks: 'x|y|0|0'}\ngeneration: {temperature: 1, num_samples: 2, max_new_tokens: 9}\n")
    config = parse_model_args("pretrained=x,generation_parameters={top_p:0.5}")
    load_override_config(str(path)).apply_to_model(config)
    assert config.max_gen_toks == 9
    assert config.generation_parameters == GenerationParameters(temperature=1.0, top_p=0.5, num_samples=2)
    path.write_text("tasks: {tasks: 'x|y|0|0'}\ngeneration: {temperature: hot}\n")
    with pytest.raises(ConfigError, match="key 'generation.temperature' must be float"):
        load_override_config(str(path))


def test_distributed_override_reasoning_tags(tmp_path):
    """`tasks: {remove_reasoning_tags: true, reasoning_tags: ...}` in the override are the
    `accelerate` flags: parsed into the run's tag pairs, and the tags alone are refused."""
    from lighteval_like.api.errors import UsageError
    from lighteval_like.cli.entrypoints import generation_options
    from lighteval_like.cli.override_config import load_override_config

    path = tmp_path / "override.yaml"
    path.write_text("tasks: {tasks: 'x|y|0|0', remove_reasoning_tags: true, reasoning_tags: '<r>,</r>;<t>,</t>'}\n")
    tasks = load_override_config(str(path)).tasks
    options = generation_options(None, None, tasks.remove_reasoning_tags, tasks.reasoning_tags)
    assert options["reasoning_tags"] == (("<r>", "</r>"), ("<t>", "</t>"))
    assert load_override_config(str(path)).pipeline_parameters().reasoning_tags is None  # set with the options
    with pytest.raises(UsageError, match="pass both"):
        generation_options(None, None, False, "<r>,</r>")
