"""The backend registry: the one-line error of an unknown name, every backend's config class
round-tripping its model args, and a backend registered here running through `run` end to end."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields

import pytest
import yaml
from fakes import WordEncoder

from lighteval_like.api.errors import UsageError
from lighteval_like.api.typed_config import keys_of
from lighteval_like.cli.entrypoints import model_args_record, model_config_from_flags, one_process, run
from lighteval_like.evaluation.pipeline import PipelineParameters
from lighteval_like.models import registry
from lighteval_like.models.base import (
    GenerationResponse,
    LanguageModel,
    LoglikelihoodResponse,
    ModelIdentity,
    ModelInfo,
)
from lighteval_like.models.config import BackendConfig
from lighteval_like.models.model_args import load_model_config, parse_model_args

BACKENDS = sorted(registry.BACKENDS)
TRANSFORMERS_ARGS = ("pretrained=org/model,tokenizer=org/tok,revision=v2,max_gen_toks=32,max_length=512,dtype=bf16,"
                     "add_special_tokens,device=cpu,attn_implementation=sdpa,shared_prefix=False,"
                     "generation_parameters={temperature:0.5,seed:7}")
# Args other than the defaults, per backend (one not named here round-trips its defaults).
CHANGED_ARGS = {
    "transformers": TRANSFORMERS_ARGS,
    "nanotron": TRANSFORMERS_ARGS,
    "vllm": "pretrained=org/model,dtype=fp16,seed=7,gpu_memory_utilization=0.5,tensor_parallel_size=2,"
            "data_parallel_size=2,max_model_length=1024,swap_space=2.5,batch_size=8,enforce_eager,use_chat_template,"
            "max_gen_toks=32,quantization=awq,load_format=safetensors",
    "endpoint": "base_url=http://127.0.0.1:8000/v1;http://127.0.0.1:8001/v1,model=served,tokenizer=tok,api_key_env=KEY,"
                "concurrent_requests=4,prompts_per_request=2,timeout_s=5.0,max_retries=2,chat,max_length=512,"
                "max_gen_toks=32,generation_parameters={temperature:0.5,seed:7}",
}
GENERATIVE_TASK = '''
from lighteval_like.tasks import RequestType, TaskConfig, arithmetic, prompts

TASKS_TABLE = [
    TaskConfig(
        name="arithmetic_gen", suite="custom", prompt_function=prompts.arithmetic,
        hf_repo="generated/arithmetic", hf_subset="2da", evaluation_split="validation",
        few_shots_split=None, request_type=RequestType.GENERATIVE, metrics=("em",),
        generation_size=6, stop_sequences=("\\n",), data_builder=arithmetic.builder("2da"),
    )
]
'''


def test_unknown_backend_is_one_line_naming_the_known_ones():
    with pytest.raises(UsageError) as error:
        registry.get_backend("tpu")
    assert str(error.value) == f"unknown backend 'tpu': use one of {', '.join(registry.BACKENDS)}"
    assert {"transformers", "nanotron", "vllm"} <= set(registry.BACKENDS)


def _as_flag(value) -> str:
    """A recorded value as `--model_args` spells it (a mapping as `{k:v,k:v}`)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{v}" for k, v in value.items()) + "}"
    return str(value)


@pytest.mark.parametrize("name", BACKENDS)
def test_config_class_round_trips_its_model_args(name, tmp_path):
    """Parsed, recorded, written back as flags and as YAML: the same args, in the same order."""
    cls = registry.get_backend(name).config_class
    record = model_args_record(parse_model_args(CHANGED_ARGS.get(name, "pretrained=org/model"), cls))
    assert list(record) == keys_of(cls) and "cache_dir" not in record
    as_flags = ",".join(f"{k}={_as_flag(v)}" for k, v in record.items())
    assert model_args_record(parse_model_args(as_flags, cls)) == record
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump({"model_parameters": record}))
    assert model_args_record(load_model_config(str(path), cls)) == record
    assert json.loads(json.dumps(record)) == record  # what the results file holds


@pytest.mark.parametrize("name", BACKENDS)
def test_key_order_lists_every_model_arg_once(name):
    """A backend that pins the order of its args (errors, results files) lists each exactly once."""
    cls = registry.get_backend(name).config_class
    args = sorted(f.name for f in fields(cls) if f.metadata.get("cli", True))
    assert not cls.KEY_ORDER or sorted(cls.KEY_ORDER) == args


# ------------------------------------------------------------------ a backend registered here
@dataclass
class FakeConfig(BackendConfig):
    """The shared model args plus one of its own: how far off its answers are."""

    offset: int = 0


class FakeModel(LanguageModel):
    """Answers 'What is A plus B?' with A + B + offset: right when the offset is 0, failing when it is negative."""

    max_length = 64

    def __init__(self, config: FakeConfig):
        self.config = config
        self.encoder = WordEncoder(self.max_length)

    def _answer(self, context: str) -> str:
        a, b = map(int, re.findall(r"What is (\d+) plus (\d+)\?", context)[-1])
        return f" {a + b + self.config.offset}"

    def loglikelihood(self, requests, plan=None):
        if self.config.offset < 0:
            raise RuntimeError("the fake model fails")
        out = []
        for r in requests:
            right = r.continuation == self._answer(r.prompt.text)
            out.append(LoglikelihoodResponse(0.0 if right else -5.0, right, 1))
        self._batch_done(requests, out)
        return out

    def loglikelihood_rolling(self, requests, plan=None):
        raise NotImplementedError

    def greedy_until(self, requests, plan=None):
        out = [GenerationResponse(self._answer(r.prompt.text), 1) for r in requests]
        self._batch_done(requests, out)
        return out

    def info(self) -> ModelInfo:
        return ModelInfo(ModelIdentity(self.config.model_name, backend="fake"), device="cpu")


@pytest.fixture
def fake_backend(monkeypatch):
    """A backend registered for the test: what it was asked to check, load and close."""
    calls = []

    def load(config, context):
        calls.append(("load", context.batch_size, context.show_progress))
        return FakeModel(config)

    backend = registry.Backend("fake", FakeConfig, load, close=lambda model: calls.append(("close", model.config.offset)),
                               check=lambda: calls.append(("check",)))
    monkeypatch.setitem(registry.BACKENDS, "fake", backend)
    return calls


@pytest.mark.parametrize("offset, score", [(0, 1.0), (1, 0.0)])
def test_a_registered_backend_runs_through_run(fake_backend, tmp_path, offset, score):
    """Its model args parse with its config class, its model scores a loglikelihood and a
    generative task, the results record its args, and it is checked, loaded and closed once."""
    custom = tmp_path / "custom_tasks.py"
    custom.write_text(GENERATIVE_TASK)
    config = model_config_from_flags(f"pretrained=org/fake,offset={offset}", None, FakeConfig)
    params = PipelineParameters(tasks="lighteval|arithmetic_generated:2da|0|0,custom|arithmetic_gen|0|0",
                                custom_tasks=str(custom), max_samples=4, output_dir=str(tmp_path / "out"), batch_size=2)
    result = run("fake", config, params, one_process())
    scores = result.results["results"]
    assert scores["lighteval|arithmetic_generated:2da|0"]["acc_greedy"] == score
    assert scores["custom|arithmetic_gen|0"]["em"] == score
    with open(result.results_path, encoding="utf-8") as f:
        general = json.load(f)["config_general"]
    assert general["model_args"] == {**model_args_record(BackendConfig("org/fake")), "offset": offset}
    assert general["model_name"] == "org/fake"
    assert fake_backend == [("check",), ("load", 2, True), ("close", offset)]


def test_a_failed_run_still_closes_the_model(fake_backend, tmp_path):
    config = model_config_from_flags("pretrained=org/fake,offset=-1", None, FakeConfig)
    params = PipelineParameters(tasks="lighteval|arithmetic_generated:2da|0|0", max_samples=2,
                                output_dir=str(tmp_path / "out"))
    with pytest.raises(RuntimeError, match="the fake model fails"):
        run("fake", config, params, one_process())
    assert fake_backend == [("check",), ("load", None, True), ("close", -1)]
    assert not list((tmp_path / "out").rglob("results_*.json"))


def test_a_backend_that_counts_no_tokens_refuses_truncation_before_anything_loads(fake_backend, tmp_path):
    @dataclass
    class TokenlessConfig(FakeConfig):
        @property
        def counts_tokens(self) -> bool:
            return False

    config = model_config_from_flags("pretrained=org/fake", None, TokenlessConfig)
    params = PipelineParameters(tasks="lighteval|arithmetic_generated:2da|3|1", max_samples=2,
                                output_dir=str(tmp_path / "out"))
    with pytest.raises(UsageError, match=r"lighteval\|arithmetic_generated:2da\|3 asks for truncate=1, but backend "
                                         r"'fake' counts no tokens: use truncate=0"):
        run("fake", config, params, one_process())
    assert fake_backend == [("check",)]  # nothing loaded
