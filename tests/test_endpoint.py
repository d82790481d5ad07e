"""The endpoint backend against a small OpenAI-style server built here (`endpoint_server.py`, a tiny
transformers model in fp32): its numbers equal the transformers backend's on the same model, a
misbehaving server is refused at load with one line, faults are retried to the same numbers, and a
failed run's finished requests are reused by the rerun. A real vLLM server runs behind `vllm`."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request

import pyarrow.parquet as pq
import pytest
from conftest import CHAT_TEMPLATE, build_tiny_model, free_port
from endpoint_server import TinyServer

from lighteval_like.api.errors import LightevalLikeError, ModelArgsError, ModelLoadError, UsageError
from lighteval_like.api.requests import GenerationRequest, LoglikelihoodRequest, RollingRequest, SamplingParams
from lighteval_like.cli.entrypoints import model_args_record, model_config_from_flags, one_process, run
from lighteval_like.evaluation.cache import model_fingerprint
from lighteval_like.evaluation.pipeline import PipelineParameters
from lighteval_like.models.base import ModelIdentity
from lighteval_like.models.endpoint import client as endpoint_client
from lighteval_like.models.endpoint.client import Client, EndpointError
from lighteval_like.models.endpoint.config import EndpointModelConfig
from lighteval_like.models.endpoint.model import EndpointModel
from lighteval_like.models.endpoint.queries import MAX_QUERY_IDS, asked, is_query, query_groups
from lighteval_like.models.endpoint.tokenize import ServerTokenizer
from lighteval_like.models.model_args import parse_model_args
from lighteval_like.models.packing import ScoreItem
from lighteval_like.models.transformers.config import TransformersModelConfig
from lighteval_like.models.transformers.model import TransformersModel

CONTEXT = "Question: What is the capital of France?\nAnswer:"
REQUESTS = [
    *(LoglikelihoodRequest(CONTEXT, c) for c in (" Paris", " water", " fire is hot")),
    LoglikelihoodRequest("", "She walked to the store"),
    LoglikelihoodRequest("A. water B. fire C. earth D. air Answer:", " A", single_token=True),
]
ROLLING = [RollingRequest("The following are multiple choice questions (with answers) about science. " * 6),
           RollingRequest("She walked to the store because she needed milk")]
GENERATIONS = [GenerationRequest(CONTEXT, ("\n",), 8), GenerationRequest("0 1 2 3 4 5", (), 6),
               GenerationRequest("Natalia sold clips to 48 of her friends", (".",), 12)]
MC_TASK = "leaderboard|arc:challenge|0|0"


@pytest.fixture(scope="module")
def server(tiny_model):
    served = TinyServer(tiny_model)
    yield served
    served.close()


@pytest.fixture
def clean(server, monkeypatch):
    """The module's server behaving, its counters at 0; retries wait 10 ms."""
    server.wait_idle()
    server.faults, server.fault_rate, server.fail_after = set(), 0.0, None
    server.completions = server.scored = server.queried = 0
    server.token_queries = True
    server.injected, server.rng = [], random.Random(2)  # a draw with each fault in the first 16
    server.fault_kinds = ["429", "500", "reset"]
    server.delay_s, server.missing, server.tokenized = 0.0, set(), []
    monkeypatch.setattr(endpoint_client, "BACKOFF_S", 0.01)
    return server


def endpoint_args(server, tiny_model, extra: str = "") -> str:
    return f"base_url={server.url},model=tiny,tokenizer={tiny_model}{extra}"


def endpoint(server, tiny_model, extra: str = "") -> EndpointModel:
    return EndpointModel(parse_model_args(endpoint_args(server, tiny_model, extra), EndpointModelConfig), False)


@pytest.fixture(scope="module")
def reference(tiny_model):
    """The transformers backend on the same model (the endpoint's context length)."""
    model = TransformersModel(parse_model_args(f"pretrained={tiny_model},dtype=float32,max_length=254"),
                              device="cpu", show_progress=False)
    return model.loglikelihood(REQUESTS), model.loglikelihood_rolling(ROLLING), model.greedy_until(GENERATIONS)


def _same_scores(got, expected) -> None:
    for a, b in zip(got, expected, strict=True):
        # 1e-4, or a float32 sum's rounding over a long rolling window (1e-6 relative)
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4, rel=1e-6)
        assert (a.is_greedy, a.num_tokens, a.input_truncated) == (b.is_greedy, b.num_tokens, b.input_truncated)


def test_loglikelihoods_and_generations_equal_the_transformers_backend(clean, tiny_model, reference):
    model = endpoint(clean, tiny_model, ",prompts_per_request=2,concurrent_requests=3")
    _same_scores(model.loglikelihood(REQUESTS), reference[0])
    _same_scores(model.loglikelihood_rolling(ROLLING), reference[1])
    assert [g.text for g in model.greedy_until(GENERATIONS)] == [g.text for g in reference[2]]
    items = [model.encoder.request_item(r)[0] for r in REQUESTS]
    contexts = {it.tokens for it in items if is_query(it)}  # single-target items, one query per context
    echoed = len(items) - sum(map(is_query, items))
    assert contexts and echoed  # both ways are taken
    # contexts by 2, echoed items by 2, 2 windows by 2, one generation a request
    assert model.stats()["requests"] == -(-len(contexts) // 2) - (-echoed // 2) + 1 + 3
    assert model.queries and clean.queried == 1 + len(contexts)  # the probe's context, then the run's


def test_queries_keep_to_the_servers_bound_on_token_ids_a_request():
    """vLLM takes at most MAX_QUERY_IDS logprob_token_ids a request: contexts are packed under it,
    and a context with more distinct targets is echoed instead."""
    def items(context: int, targets: range) -> list[ScoreItem]:
        return [ScoreItem((context, 1, 2), 2, (t,)) for t in targets]

    small = [it for c in range(10) for it in items(c, range(c * 40, c * 40 + 40))]  # 40 new ids a context
    wide = items(99, range(MAX_QUERY_IDS + 1))
    multi = [ScoreItem((5, 6), 1, (7, 8))]
    assert asked(query_groups(small + wide + multi, per_request=8)) == set(small)
    groups = query_groups(small, per_request=8)
    assert [len(g) for g in groups] == [3, 3, 3, 1]  # 3 x 40 ids <= 128 < 4 x 40
    assert [c for g in groups for c, _ in g] == sorted({it.tokens for it in small})


@pytest.mark.parametrize("serves, fault", [(False, None), (True, "query_shift")])
def test_a_server_without_true_next_token_queries_has_every_item_echoed(clean, tiny_model, reference, serves, fault):
    """A server that ignores logprob_token_ids, or reports other numbers than its echo, is asked
    once and then only echoed prompts are sent; `token_queries=false` asks nothing."""
    clean.token_queries, clean.faults = serves, {fault} - {None}
    model = endpoint(clean, tiny_model, ",prompts_per_request=2")
    _same_scores(model.loglikelihood(REQUESTS), reference[0])
    assert model.queries is False and model.stats()["requests"] == 3 and clean.queried == int(serves)
    clean.faults = set()
    unasked = endpoint(clean, tiny_model, ",prompts_per_request=2,token_queries=false")
    _same_scores(unasked.loglikelihood(REQUESTS), reference[0])
    assert unasked.queries is False and clean.queried == int(serves)


def test_generations_alike_share_a_request_and_a_per_sample_seed_goes_alone(clean, tiny_model):
    alike = [GenerationRequest(p, ("\n",), 8) for p in (CONTEXT, "0 1 2 3 4 5", "Natalia sold clips to 48 of her")]
    seeded = [GenerationRequest(CONTEXT, ("\n",), 8, SamplingParams(temperature=1.0), seed=s) for s in (1, 2)]
    one = endpoint(clean, tiny_model, ",prompts_per_request=1").greedy_until(alike + seeded)
    model = endpoint(clean, tiny_model, ",prompts_per_request=2")
    batched = model.greedy_until(alike + seeded)
    assert [(g.text, g.num_tokens) for g in batched] == [(g.text, g.num_tokens) for g in one]
    assert model.stats()["requests"] == 2 + 2  # 3 greedy by 2, each seed alone
    assert model.stats()["generated_tokens"] == sum(g.num_tokens for g in one)


def _run(backend: str, args: str, tmp_path, mirror, tasks: str = MC_TASK, name: str = "out", **params):
    config = model_config_from_flags(args, None, EndpointModelConfig if backend == "endpoint" else TransformersModelConfig)
    pipeline = PipelineParameters(tasks=tasks, dataset_dir=mirror, output_dir=str(tmp_path / name), **params)
    return run(backend, config, pipeline, one_process())


def test_a_multiple_choice_run_scores_as_accelerate(clean, tiny_model, mirror, tmp_path):
    ours = _run("endpoint", endpoint_args(clean, tiny_model), tmp_path, mirror, name="endpoint")
    theirs = _run("transformers", f"pretrained={tiny_model},dtype=float32,max_length=254", tmp_path, mirror,
                  name="accelerate")
    for key, values in theirs.results["results"].items():
        assert ours.results["results"][key] == pytest.approx(values, abs=1e-6)
    with open(ours.results_path, encoding="utf-8") as f:
        general = json.load(f)["config_general"]
    assert general["model_name"] == "tiny" and general["endpoint"]["served"] == {"id": "tiny", "root": tiny_model}


@pytest.mark.parametrize("fault, message", [
    ("shift", "not aligned to the tokens sent .* shifted by one\\?\\): use a server whose echo logprobs are aligned"),
    ("no_echo", "did not echo the prompt .*: use a server whose completions honour echo=true"),
    ("bos", "echoed other tokens than it was sent .* adds tokens \\(a BOS\\?\\) to token prompts; turn that off"),
    ("text_bos", "tokenises text otherwise than tokenizer=.*an added BOS or another tokenizer\\): give tokenizer="),
])
def test_a_misbehaving_server_is_refused_at_load_with_one_line(clean, tiny_model, mirror, tmp_path, fault, message):
    clean.faults = {fault}
    with pytest.raises(EndpointError, match="endpoint self-check: the server.*" + message) as error:
        _run("endpoint", endpoint_args(clean, tiny_model), tmp_path, mirror)
    assert "\n" not in str(error.value)
    assert clean.scored <= 2  # the self-check's own probes, nothing of the run
    assert not list(tmp_path.rglob("results_*.json"))


def test_a_server_ignoring_the_seed_is_refused_before_the_first_sampled_generation(clean, tiny_model):
    model = endpoint(clean, tiny_model)
    clean.faults = {"seed_ignored"}
    greedy = model.greedy_until(GENERATIONS[:1])  # greedy: no seed sent, nothing to check
    sampled = [GenerationRequest(CONTEXT, ("\n",), 8, SamplingParams(temperature=1.0), seed=s) for s in (1, 2)]
    before = clean.completions
    with pytest.raises(EndpointError, match="^endpoint self-check: the server ignores the request's seed \\(seed=1 "
                                            "sampled twice gave .*\\): use a server that honours seed"):
        model.greedy_until(sampled)
    assert greedy and clean.completions == before + 2  # the probe's two requests, none of the run's


def test_injected_faults_are_retried_to_the_same_numbers(clean, tiny_model, reference):
    clean.fault_rate = 0.2
    model = endpoint(clean, tiny_model, ",prompts_per_request=1,concurrent_requests=4,max_retries=8")
    _same_scores(model.loglikelihood(REQUESTS), reference[0])
    _same_scores(model.loglikelihood_rolling(ROLLING), reference[1])
    assert [g.text for g in model.greedy_until(GENERATIONS)] == [g.text for g in reference[2]]
    assert len(clean.injected) >= 2 and model.stats()["retries"] == len(clean.injected)


def test_timeouts_and_truncated_bodies_are_retried(clean, tiny_model, reference):
    clean.fault_rate, clean.fault_kinds = 0.3, ["slow", "truncated"]
    model = endpoint(clean, tiny_model, ",prompts_per_request=1,timeout_s=0.5,max_retries=8")
    _same_scores(model.loglikelihood(REQUESTS), reference[0])
    assert set(clean.injected) == {"slow", "truncated"} and model.stats()["retries"] == len(clean.injected)

def test_a_dead_base_url_is_left_out_of_the_rotation(clean, tiny_model, reference):
    args = f"base_url={clean.url};http://127.0.0.1:9/v1,model=tiny,tokenizer={tiny_model},prompts_per_request=1"
    model = EndpointModel(parse_model_args(args, EndpointModelConfig), False)
    _same_scores(model.loglikelihood(REQUESTS), reference[0])
    assert model.stats()["retries"] <= 2  # the dead one fails once or twice, then is benched


def test_exhausted_retries_stop_the_run_in_one_line_and_the_rerun_reuses_what_finished(clean, tiny_model, mirror,
                                                                                      tmp_path):
    # every choice echoed (token_queries=false), so that the requests counted are one per choice
    args = endpoint_args(clean, tiny_model, ",prompts_per_request=1,concurrent_requests=1,max_retries=2,token_queries=false")
    clean.fail_after = 6  # the self-check's 3 requests, then 3 scored
    with pytest.raises(EndpointError, match="still failing after 2 retries \\(HTTP 500\\): .* a rerun resumes") as error:
        _run("endpoint", args, tmp_path, mirror)
    assert "\n" not in str(error.value)
    clean.fail_after, clean.scored = None, 0
    rerun = _run("endpoint", args, tmp_path, mirror)
    assert rerun.results["summary_general"]["response_cache"]["hits"] == 3
    clean.scored = 0
    fresh = _run("endpoint", args, tmp_path, mirror, name="fresh", no_cache=True)
    assert fresh.results["results"] == rerun.results["results"]
    assert clean.scored == 6 * 4 + 2 * 0 + 2  # 6 docs x 4 choices, and the self-check's 2 echoes


def _fault_proxy(upstream: str, *flags: str) -> tuple[subprocess.Popen, str]:
    """tests/fault_proxy.py in its own process; (process, its base URL)."""
    proxy = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fault_proxy.py")
    proc = subprocess.Popen([sys.executable, proxy, upstream, *flags], stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def test_a_run_through_a_fault_injecting_proxy_scores_as_a_clean_run(clean, tiny_model, mirror, tmp_path):
    proc, url = _fault_proxy(clean.url, "--rate", "0.2", "--seed", "3", "--retry_after", "0")
    try:
        args = f"base_url={url},model=tiny,tokenizer={tiny_model},prompts_per_request=1,max_retries=8"
        through = _run("endpoint", args, tmp_path, mirror, name="proxied", no_cache=True)
        with urllib.request.urlopen(url.rsplit("/v1", 1)[0] + "/fault_proxy/stats") as answer:
            injected = json.load(answer)["injected"]
    finally:
        proc.kill()
        proc.wait()
    direct = _run("endpoint", endpoint_args(clean, tiny_model), tmp_path, mirror, name="direct", no_cache=True)
    assert through.results["results"] == direct.results["results"]
    assert set(injected) == {"429", "500", "reset", "truncated"}
    assert through.results["summary_general"]["scoring"]["retries"] == sum(injected.values())


def test_a_run_killed_midway_resumes_from_the_requests_it_finished(clean, tiny_model, mirror, tmp_path):
    args = endpoint_args(clean, tiny_model, ",prompts_per_request=1,concurrent_requests=1,token_queries=false")
    clean.delay_s = 0.05
    killed = subprocess.Popen([sys.executable, "-m", "lighteval_like", "endpoint", "--model_args", args, "--tasks",
                               MC_TASK, "--dataset_dir", mirror, "--output_dir", str(tmp_path / "killed")],
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while clean.scored < 2 + 12 and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    clean.wait_idle()  # the request in flight when the run was killed
    clean.delay_s, clean.scored = 0.0, 0
    rerun = _run("endpoint", args, tmp_path, mirror, name="rerun")
    assert 10 <= rerun.results["summary_general"]["response_cache"]["hits"] < 24  # 6 docs x 4 choices
    assert clean.scored == 2 + 24 - rerun.results["summary_general"]["response_cache"]["hits"]
    fresh = _run("endpoint", args, tmp_path, mirror, name="fresh", no_cache=True)
    assert fresh.results["results"] == rerun.results["results"]


def test_without_a_tokenizer_loglikelihood_tasks_are_refused_before_anything_loads(clean, mirror, tmp_path):
    args = f"base_url={clean.url},model=tiny"
    with pytest.raises(UsageError, match=f"task {MC_TASK[:-2]} scores loglikelihoods, but backend 'endpoint' has no "
                                         "tokenizer .*: pass tokenizer=") as error:
        _run("endpoint", args, tmp_path, mirror)
    assert "\n" not in str(error.value) and clean.completions == 0


def test_generation_without_a_tokenizer_sends_text(clean, tiny_model, reference):
    model = EndpointModel(parse_model_args(f"base_url={clean.url},model=tiny", EndpointModelConfig), False)
    assert not model.encoder.counts_tokens
    assert [g.text for g in model.greedy_until(GENERATIONS)] == [g.text for g in reference[2]]


def server_tokenized(server, extra: str = "") -> EndpointModel:
    """The endpoint with tokenizer=server."""
    return EndpointModel(parse_model_args(f"base_url={server.url},model=tiny,tokenizer=server{extra}",
                                          EndpointModelConfig), False)


def test_tokenizer_server_scores_and_generates_as_the_local_tokenizer(clean, tiny_model):
    ours, local = server_tokenized(clean, ",concurrent_requests=4"), endpoint(clean, tiny_model)
    assert isinstance(ours.encoder.tokenizer, ServerTokenizer)
    assert ours.loglikelihood(REQUESTS) == local.loglikelihood(REQUESTS)  # an empty context starts with the BOS
    assert ours.loglikelihood_rolling(ROLLING) == local.loglikelihood_rolling(ROLLING)
    assert ours.greedy_until(GENERATIONS) == local.greedy_until(GENERATIONS)


def test_tokenizer_server_asks_each_text_once_however_many_ask_at_a_time(clean):
    clean.delay_s = 0.02  # the three requests sharing CONTEXT ask for it at the same time
    model = server_tokenized(clean, ",concurrent_requests=4")
    clean.tokenized, clean.most_active = [], 0
    model.loglikelihood(REQUESTS)  # its 5 items go in one /completions request: the rest are /tokenize
    asked = list(clean.tokenized)
    assert (CONTEXT, False) in asked and len(asked) == len(set(asked)) and clean.most_active > 1
    model.loglikelihood(REQUESTS)
    model.loglikelihood_rolling(ROLLING)
    assert sorted(clean.tokenized[len(asked):]) == sorted((r.text, False) for r in ROLLING)


@pytest.mark.parametrize("chat", [False, True])
def test_a_multiple_choice_run_with_tokenizer_server_scores_as_with_the_local_folder(tiny_chat_model, mirror,
                                                                                    tmp_path, chat):
    served = TinyServer(tiny_chat_model)
    try:
        runs = [_run("endpoint", f"base_url={served.url},model=tiny,tokenizer={tokenizer}", tmp_path, mirror,
                     name=tokenizer[-6:], use_chat_template=chat, save_details=True)
                for tokenizer in ("server", tiny_chat_model)]
    finally:
        served.close()
    ours, local = ([_detail_scores(row) for row in pq.read_table(r.details_paths[0]).to_pylist()] for r in runs)
    assert ours == local and len(ours) == 6 and ours[0][0].startswith("user: ") == chat
    assert runs[0].results["results"] == runs[1].results["results"]
    assert any(text.startswith("[") for text, _ in served.tokenized) == chat  # the chat template went to /tokenize
    assert runs[0].results["config_general"]["model_args"]["tokenizer"] == f"server:{served.url}"


def _detail_scores(row: dict) -> tuple:
    return row["prompt"], row["loglikelihoods"], row["continuation_tokens"]


def test_a_server_without_tokenize_is_refused_at_load_in_one_line(clean, mirror, tmp_path):
    from click.testing import CliRunner

    from lighteval_like.cli.commands import main

    clean.missing = {"/tokenize", "/detokenize"}
    done = CliRunner().invoke(main, ["endpoint", "--tasks", MC_TASK, "--dataset_dir", mirror, "--output_dir",
                                     str(tmp_path), "--model_args", f"base_url={clean.url},model=tiny,tokenizer=server"])
    assert done.exit_code != 0
    assert done.stderr.strip().splitlines() == [
        "lighteval-like: error: the server has no /tokenize: pass tokenizer=<the served model's tokenizer folder>"]
    assert clean.completions == 0 and not list(tmp_path.rglob("results_*.json"))


def test_a_bos_the_server_does_not_tell_is_refused_where_it_is_needed(clean, tiny_model):
    clean.missing = {"/tokenizer_info"}  # as vLLM by default; the tiny tokenizer adds no BOS before a text
    model = server_tokenized(clean)
    assert model.loglikelihood(REQUESTS[:3]) == endpoint(clean, tiny_model).loglikelihood(REQUESTS[:3])
    with pytest.raises(ModelLoadError, match="^tokenizer=server: the server does not tell its tokenizer's bos_token "
                                             "\\(.*\\), which an empty context or a rolling window starts with: pass "
                                             "tokenizer=<the served model's tokenizer folder>$"):
        model.loglikelihood_rolling(ROLLING)
    clean.faults = {"text_bos"}  # now its tokenizer adds the BOS (id 0) before a text
    assert ServerTokenizer(model.client, "tiny").bos_token_id == 0


def test_a_chat_the_server_cannot_render_exactly_is_refused_in_one_line(clean, monkeypatch):
    tokenizer = ServerTokenizer(Client([clean.url], None, 10.0, 0), "tiny")
    with pytest.raises(LightevalLikeError, match="^--use_chat_template: the server applied no chat template \\(.*answered "
                                                 "HTTP 400: .*\\): serve the model with one \\(vLLM's --chat-template\\), "
                                                 "or pass tokenizer=<the served model's tokenizer folder>$"):
        tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 plus 2?"}])
    monkeypatch.setattr(clean.tokenizer, "chat_template", CHAT_TEMPLATE)
    assert tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 plus 2?"}]) == (
        "user: What is 2 plus 2?\nassistant:")
    decode = clean.tokenizer.decode
    monkeypatch.setattr(clean.tokenizer, "decode", lambda ids: decode(ids).upper())  # a /detokenize that loses text
    with pytest.raises(ModelLoadError, match="^tokenizer=server: the server's chat template, decoded by /detokenize, "
                                             "does not tokenise back to its ids: pass tokenizer=<the served"):
        tokenizer.apply_chat_template([{"role": "user", "content": "And times 3?"}])


def test_tokenizer_server_is_recorded_and_keyed_as_the_servers(clean, tiny_model):
    def config(tokenizer: str) -> EndpointModelConfig:
        return parse_model_args(f"base_url={clean.url},model=tiny,tokenizer={tokenizer}", EndpointModelConfig)

    identity = ModelIdentity("tiny", backend="endpoint")
    recorded = model_args_record(config("server"))["tokenizer"]
    assert recorded == f"server:{clean.url}" and config(recorded).tokenizes_on_server
    assert (model_fingerprint(model_args_record(config("server")), identity)[0]
            != model_fingerprint(model_args_record(config(tiny_model)), identity)[0])
    with pytest.raises(ModelArgsError, match="names other servers than base_url=.*: pass tokenizer=server$"):
        config("server:http://127.0.0.1:1/v1")


def test_the_api_key_is_sent_but_never_recorded(tiny_model, mirror, tmp_path, monkeypatch):
    secret = "sk-test-never-written"
    keyed = TinyServer(tiny_model, key=secret)
    try:
        args = f"base_url={keyed.url},model=tiny,tokenizer={tiny_model},api_key_env=TEST_ENDPOINT_KEY"
        with pytest.raises(EndpointError, match="api_key_env=TEST_ENDPOINT_KEY names an unset environment variable"):
            _run("endpoint", args, tmp_path, mirror)
        monkeypatch.setenv("TEST_ENDPOINT_KEY", secret)
        _run("endpoint", args, tmp_path, mirror, save_details=True)
    finally:
        keyed.close()
    written = [p for root in (tmp_path, os.environ["LIGHTEVAL_LIKE_CACHE"]) for p in _files(root)]
    assert written and not [p for p in written if secret.encode() in open(p, "rb").read()]


def _files(root) -> list[str]:
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]


def test_the_fingerprint_keys_the_url_and_the_served_model(clean, tiny_model):
    model = endpoint(clean, tiny_model)
    identity = model.info().identity
    assert identity.backend == "endpoint" and identity.model_sha == tiny_model

    def fingerprint(args: str) -> str:
        return model_fingerprint(model_args_record(parse_model_args(args, EndpointModelConfig)), identity)[0]

    base = fingerprint(endpoint_args(clean, tiny_model))
    assert fingerprint(endpoint_args(clean, tiny_model, ",concurrent_requests=2,api_key_env=K")) == base
    assert fingerprint(f"base_url=http://127.0.0.1:1/v1,model=tiny,tokenizer={tiny_model}") != base
    assert fingerprint(f"base_url={clean.url},model=other,tokenizer={tiny_model}") != base


def test_a_model_the_server_does_not_serve_is_one_line_naming_those_it_does(clean, tiny_model):
    with pytest.raises(ModelLoadError, match="^the server does not serve model 'other' \\(it serves: tiny\\): pass "
                                             "model=<one of them>$"):
        EndpointModel(parse_model_args(f"base_url={clean.url},model=other", EndpointModelConfig), False)

def test_sampled_texts_follow_each_request_seed_whatever_the_concurrency(clean, tiny_model):
    sampled = [GenerationRequest(CONTEXT, (), 8, SamplingParams(temperature=1.0), seed=s) for s in range(6)]
    one = endpoint(clean, tiny_model, ",concurrent_requests=1").greedy_until(sampled)
    many = endpoint(clean, tiny_model, ",concurrent_requests=6").greedy_until(sampled)
    assert [g.text for g in one] == [g.text for g in many] and len({g.text for g in one}) > 1


def test_chat_generates_through_chat_completions(clean, tiny_model, reference):
    model = endpoint(clean, tiny_model, ",chat")
    assert [g.text for g in model.greedy_until(GENERATIONS)] == [g.text for g in reference[2]]
    assert clean.completions == 3  # the self-check's; the generations went to /chat/completions

def test_an_answer_without_text_is_an_error_never_scored(clean, tiny_model):
    model = endpoint(clean, tiny_model)
    clean.faults = {"empty"}
    with pytest.raises(EndpointError, match="the server gave no answer \\(finish_reason 'abort'\\): an empty answer is "
                                            "never scored"):
        model.greedy_until(GENERATIONS[:1])

def test_the_endpoint_command(clean, tiny_model, mirror, tmp_path):
    """`lighteval-like endpoint` runs as `accelerate` does; a refused run is one line on stderr."""
    from click.testing import CliRunner

    from lighteval_like.cli.commands import main

    args = ["endpoint", "--tasks", MC_TASK, "--dataset_dir", mirror, "--output_dir", str(tmp_path)]
    done = CliRunner().invoke(main, [*args, "--model_args", endpoint_args(clean, tiny_model)])
    assert done.exit_code == 0, done.output
    assert list(tmp_path.rglob("results_*.json"))
    refused = CliRunner().invoke(main, [*args, "--model_args", f"base_url={clean.url},model=tiny"])
    assert refused.exit_code != 0
    assert refused.stderr.strip().splitlines() == [
        f"lighteval-like: error: task {MC_TASK[:-2]} scores loglikelihoods, but backend 'endpoint' has no tokenizer "
        "to decide token boundaries: pass tokenizer=<the served model's tokenizer folder>"]

# ------------------------------------------------------------------ a real vLLM server (marker vllm)
@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    """vLLM's OpenAI server (this interpreter's vllm, fp32, eager) on a tiny Llama with heads of 32
    dimensions, healthy and warmed up; stopped after the module."""
    pytest.importorskip("vllm")
    folder = build_tiny_model(str(tmp_path_factory.mktemp("tiny-served")), "llama", hidden=128, heads=4, kv_heads=2)
    port = free_port()
    log = open(tmp_path_factory.mktemp("vllm-log") / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", folder, "--served-model-name", "tiny",
         "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_healthy(proc, url, log.name)
        yield url, folder
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def _wait_healthy(proc, url: str, log: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, open(log).read()[-3000:]
        try:
            urllib.request.urlopen(url + "/models", timeout=5).read()
            body = json.dumps({"model": "tiny", "prompt": "warm up", "max_tokens": 2}).encode()
            request = urllib.request.Request(url + "/completions", body, {"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=120).read()
            return
        except OSError:
            time.sleep(2)
    raise AssertionError("the vLLM server was not healthy in 300 s: " + open(log).read()[-3000:])


@pytest.mark.vllm
def test_a_real_vllm_server_scores_and_generates_as_the_transformers_backend(vllm_server):
    url, folder = vllm_server
    model = EndpointModel(parse_model_args(f"base_url={url},model=tiny,tokenizer={folder}", EndpointModelConfig), False)
    assert model.max_length == 254  # the server's max_model_len (256) less the scored and generated tokens
    local = TransformersModel(parse_model_args(f"pretrained={folder},dtype=float32,max_length=254"), device="cpu",
                              show_progress=False)
    for ours, theirs in ((model.loglikelihood(REQUESTS), local.loglikelihood(REQUESTS)),
                         (model.loglikelihood_rolling(ROLLING), local.loglikelihood_rolling(ROLLING))):
        for a, b in zip(ours, theirs, strict=True):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-3)
            assert (a.is_greedy, a.num_tokens) == (b.is_greedy, b.num_tokens)
    assert [g.text for g in model.greedy_until(GENERATIONS)] == [g.text for g in local.greedy_until(GENERATIONS)]


@pytest.mark.vllm
def test_a_real_vllm_server_honours_each_request_seed_whatever_the_concurrency(vllm_server):
    url, folder = vllm_server
    sampled = [GenerationRequest(CONTEXT, (), 8, SamplingParams(temperature=1.0), seed=s) for s in range(16)]
    texts = []
    for concurrency in (1, 16, 16):  # one at a time, then all at once twice
        args = f"base_url={url},model=tiny,tokenizer={folder},concurrent_requests={concurrency}"
        texts.append([g.text for g in EndpointModel(parse_model_args(args, EndpointModelConfig), False)
                      .greedy_until(sampled)])
    assert texts[0] == texts[1] == texts[2] and len(set(texts[0])) > 1


@pytest.mark.vllm
def test_a_run_through_a_real_vllm_server_scores_as_accelerate(vllm_server, mirror, tmp_path):
    """Multiple choice, perplexity and gsm8k through the server: accelerate's numbers."""
    url, folder = vllm_server
    tasks = f"{MC_TASK},lighteval|wikitext:2|0|0,leaderboard|gsm8k|0|0"
    ours = _run("endpoint", f"base_url={url},model=tiny,tokenizer={folder}", tmp_path, mirror, tasks, "endpoint")
    theirs = _run("transformers", f"pretrained={folder},dtype=float32,max_length=254", tmp_path, mirror, tasks,
                  "accelerate")
    for key, values in theirs.results["results"].items():
        assert ours.results["results"][key] == pytest.approx(values, rel=1e-4), key
