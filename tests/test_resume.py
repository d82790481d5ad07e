"""Nothing lost: a killed run resumes from the response cache, batches are committed as they
finish, data-parallel shards are merged, out-of-memory is survived, outputs are atomic."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace

import pyarrow.parquet as pq
import pytest
import torch
from conftest import run_cli
from hooks import cache_rows, run_and_kill

from lighteval_like.api.errors import CacheError, LightevalLikeError
from lighteval_like.api.requests import GenerationRequest, LoglikelihoodRequest, LoglikelihoodResponse, RollingRequest
from lighteval_like.evaluation.cache import ResponseCache, model_fingerprint, response_cache_dir
from lighteval_like.evaluation.pipeline import Pipeline, PipelineParameters
from lighteval_like.models.base import LanguageModel, ModelIdentity
from lighteval_like.models.model_args import TransformersModelConfig
from lighteval_like.models.transformers.model import TransformersModel
from lighteval_like.results import outputs

TASKS = "leaderboard|truthfulqa:mc|0|0,leaderboard|arc:challenge|0|0"


def _results(output_dir: str) -> list[dict]:
    files = sorted(glob.glob(os.path.join(output_dir, "results", "*", "results_*.json")))
    return [json.load(open(f, encoding="utf-8")) for f in files]


def _loglikelihoods(output_dir: str) -> dict[str, list]:
    """Per-sample loglikelihoods of every details file, by task."""
    out = {}
    for path in sorted(glob.glob(os.path.join(output_dir, "details", "*", "*", "*.parquet"))):
        table = pq.read_table(path).to_pydict()
        out[os.path.basename(path).split("_")[1]] = table["loglikelihoods"]
    return out


# -------------------------------------------------------------- the kill test
def test_killed_run_resumes_and_computes_only_the_rest(tiny_model, mirror, tmp_path):
    """SIGKILL mid-run, same command again: it completes, computes exactly the requests the
    first run had not committed, and scores exactly as an uninterrupted run."""
    cache_dir, out = str(tmp_path / "cache"), str(tmp_path / "out")
    args = [
        "accelerate", "--model_args", f"pretrained={tiny_model},shared_prefix=False", "--tasks", TASKS,
        "--dataset_dir", mirror, "--override_batch_size", "1", "--save_details",
        "--output_dir", out, "--cache_dir", cache_dir,
    ]
    assert run_and_kill(args, cache_dir, rows=5, sleep_s=0.3, timeout_s=300) == -signal.SIGKILL
    finished = cache_rows(cache_dir)
    assert not _results(out) and not glob.glob(os.path.join(out, "**", ".tmp-*"), recursive=True)

    resumed = run_cli(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    [result] = _results(out)
    summary = result["summary_general"]
    total = summary["num_requests"]
    assert 0 < finished < total
    assert summary["response_cache"]["hits"] == finished
    assert summary["response_cache"]["computed"] == total - finished
    assert summary["scoring"]["forward_passes"] == total - finished  # batch size 1, one request per batch
    assert f"Response cache: {finished} reused, {total - finished} computed" in resumed.stdout

    fresh_out = str(tmp_path / "fresh")
    fresh_args = [a if a != out else fresh_out for a in args] + ["--no_cache"]
    fresh_args[fresh_args.index("--cache_dir") + 1] = str(tmp_path / "unused_cache")
    fresh = run_cli(fresh_args)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    [uninterrupted] = _results(fresh_out)
    assert uninterrupted["summary_general"]["response_cache"] == {
        "enabled": False, "fingerprint": None, "hits": 0, "computed": total,
    }
    assert not os.path.exists(response_cache_dir(str(tmp_path / "unused_cache")))  # --no_cache writes none
    assert result["results"] == uninterrupted["results"]
    assert _loglikelihoods(out) == _loglikelihoods(fresh_out) and _loglikelihoods(out)


# --------------------------------------------------- per-batch commits, in process
class CountingModel(LanguageModel):
    """Answers logprob = -len(text) in batches of two, reporting each; may die after N batches."""

    max_length = 1000

    def __init__(self, die_after_batches: int | None = None, report: bool = True):
        self.computed: list = []
        self.die_after_batches = die_after_batches
        self.report = report

    def loglikelihood(self, requests):
        out = []
        for number, start in enumerate(range(0, len(requests), 2)):
            if number == self.die_after_batches:
                raise RuntimeError("simulated crash")
            batch = requests[start : start + 2]
            answers = [LoglikelihoodResponse(-float(len(r.prompt.text + r.continuation)), False, 1) for r in batch]
            self.computed += batch
            out += answers
            if self.report:
                self._batch_done(batch, answers)
        return out

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError

    def greedy_until(self, requests):
        raise NotImplementedError

    def info(self) -> dict:
        return {"model_name": "counting"}


def _requests(n: int, start: int = 0) -> list[LoglikelihoodRequest]:
    return [LoglikelihoodRequest(f"context {i}", f" answer {i}") for i in range(start, start + n)]


def test_batches_committed_before_a_crash_are_kept(tmp_path):
    """A crash after two batches leaves those four responses committed; the rerun computes the rest."""
    requests = _requests(9)
    cache = ResponseCache(str(tmp_path), "fp")
    with pytest.raises(RuntimeError, match="simulated crash"):
        model = CountingModel(die_after_batches=2)
        cache.compute(model, model.loglikelihood, requests)
    cache.close()
    assert model.on_batch is None  # the hook is removed again, even on failure
    again = ResponseCache(str(tmp_path), "fp")
    found = again.lookup(requests)
    assert set(found) == set(requests[:4])
    model = CountingModel()
    rest = [r for r in requests if r not in found]
    again.compute(model, model.loglikelihood, rest)
    assert model.computed == requests[4:]
    assert len(ResponseCache(str(tmp_path), "fp").lookup(requests)) == 9


def test_backend_without_batch_reports_is_committed_at_the_end(tmp_path):
    model = CountingModel(report=False)
    cache = ResponseCache(str(tmp_path), "fp")
    cache.compute(model, model.loglikelihood, _requests(3))
    assert len(ResponseCache(str(tmp_path), "fp").lookup(_requests(3))) == 3


def test_unreadable_cache_file_is_a_clear_error(tmp_path):
    folder = tmp_path / "responses"
    folder.mkdir()
    (folder / "fp.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(CacheError, match="is unreadable .*delete it, or pass --no_cache"):
        ResponseCache(str(folder), "fp").lookup(_requests(1))


@pytest.fixture(scope="module")
def tiny_backend(tiny_model):
    config = TransformersModelConfig(pretrained=tiny_model, shared_prefix=False, max_length=24)
    return TransformersModel(config, batch_size=1, show_progress=False)


@pytest.mark.parametrize("method", ["loglikelihood", "loglikelihood_rolling", "greedy_until"])
def test_transformers_backend_reports_each_batch_as_it_finishes(tiny_backend, method):
    """Every request is reported once, while the call is still running, with the very
    response the call returns (rolling sums included)."""
    requests = {
        "loglikelihood": [LoglikelihoodRequest(f"Question: What is {i} plus {i}?\nAnswer:", f" {2 * i}")
                          for i in range(4)],
        # Longer than max_length=24 tokens: several windows per request, finished in different batches.
        "loglikelihood_rolling": [RollingRequest("She walked to the store because she needed milk, " * (i + 1))
                                  for i in range(3)],
        "greedy_until": [GenerationRequest(f"Question: What is {i}?\nAnswer:", ("\n",), 3) for i in range(3)],
    }[method]
    model = tiny_backend
    reports, passes_at_report = [], []

    def on_batch(batch_requests, batch_responses):
        reports.extend(zip(batch_requests, batch_responses))
        passes_at_report.append((model.counters.forward_passes, model.counters.generated_tokens))

    model.on_batch = on_batch
    try:
        before = (model.counters.forward_passes, model.counters.generated_tokens)
        responses = getattr(model, method)(requests)
        after = (model.counters.forward_passes, model.counters.generated_tokens)
    finally:
        model.on_batch = None
    assert sorted(map(repr, (q for q, _ in reports))) == sorted(map(repr, requests))  # each once
    assert dict(reports) == dict(zip(requests, responses))
    assert len(passes_at_report) >= 2 and passes_at_report[0] < after  # first reported mid-call
    assert before < passes_at_report[0]


# ------------------------------------------------------- data-parallel shards
RANK_SCRIPT = textwrap.dedent('''
    """One data-parallel rank: run the pipeline's request stage with the response cache."""
    import json, sys
    from dataclasses import asdict
    import torch.distributed as dist
    from lighteval_like.evaluation.execution import CacheSettings, execute
    from lighteval_like.api.requests import LoglikelihoodRequest, LoglikelihoodResponse
    from lighteval_like.models.base import LanguageModel, ModelIdentity, ModelInfo
    from lighteval_like.runtime import ProcessContext

    rank, world, store, cache_dir, n, out = int(sys.argv[1]), 2, sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)

    class Model(LanguageModel):
        max_length = 1000
        computed = []
        def loglikelihood(self, requests, plan=None):
            answers = [LoglikelihoodResponse(-float(len(r.prompt.text)), False, 1) for r in requests]
            for i in range(len(requests)):
                self._batch_done(requests[i : i + 1], answers[i : i + 1])
            self.computed += requests
            return answers
        def loglikelihood_rolling(self, requests, plan=None): raise NotImplementedError
        def greedy_until(self, requests, plan=None): raise NotImplementedError
        def info(self): return ModelInfo(ModelIdentity("fake"))

    model = Model()
    requests = [LoglikelihoodRequest(f"context {i:03d}", " x") for i in range(n)]
    execution = execute(requests, model, ProcessContext(rank, world, rank == 0),
                        CacheSettings({"pretrained": "fake"}, cache_dir))
    answers = execution.answers
    right = answers is None or all(answers[r].logprob == -float(len(r.prompt.text)) for r in requests)
    json.dump({"computed": len(model.computed), "summary": asdict(execution.cache), "right": right},
              open(out, "w"))
    dist.destroy_process_group()
''')


def _run_ranks(tmp_path, cache_dir: str, n: int, name: str) -> list[dict]:
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT, encoding="utf-8")
    store = tmp_path / f"store-{name}"
    outs = [tmp_path / f"{name}-rank{r}.json" for r in range(2)]
    procs = [
        subprocess.Popen([sys.executable, str(script), str(r), str(store), cache_dir, str(n), str(outs[r])],
                         stderr=subprocess.PIPE, text=True)
        for r in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    return [json.loads(o.read_text()) for o in outs]


def test_ranks_write_own_shards_and_main_merges(tmp_path):
    """Two real gloo ranks: each commits its part to its own file, rank 0 merges; a leftover
    shard of a killed run is read on resume and merged too."""
    cache_dir = str(tmp_path / "cache")
    folder = response_cache_dir(cache_dir)
    first = _run_ranks(tmp_path, cache_dir, 10, "first")
    assert all(r["right"] for r in first)
    assert first[0]["computed"] > 0 and first[1]["computed"] > 0  # both ranks worked
    assert first[0]["computed"] + first[1]["computed"] == 10
    fingerprint = first[0]["summary"]["fingerprint"]
    assert os.listdir(folder) == [f"{fingerprint}.sqlite"]  # rank 1's shard merged and removed

    # A rank-1 shard left by a killed run, holding responses of requests 10-13.
    leftover = ResponseCache(folder, fingerprint, rank=1, is_main=False)
    more = [LoglikelihoodRequest(f"context {i:03d}", " x") for i in range(10, 14)]
    leftover.store(more, [LoglikelihoodResponse(-float(len(r.prompt.text)), False, 1) for r in more])
    leftover.close()
    assert sorted(os.listdir(folder)) == [f"{fingerprint}.rank1.sqlite", f"{fingerprint}.sqlite"]

    second = _run_ranks(tmp_path, cache_dir, 16, "second")
    assert all(r["right"] for r in second)
    assert second[0]["summary"]["hits"] == 14 and second[0]["summary"]["computed"] == 2
    assert second[0]["computed"] + second[1]["computed"] == 2
    assert os.listdir(folder) == [f"{fingerprint}.sqlite"]
    assert cache_rows(cache_dir) == 16


def test_fingerprint_follows_what_changes_the_answers(tmp_path):
    """Placement (device) keeps the cache; dtype, hub commit or re-saved weights start a new one."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"1")
    args = {"pretrained": str(folder), "dtype": "float32", "device": "cpu", "model_parallel": False}
    info = ModelIdentity("model", model_dtype="float32")  # the device is no part of a model's identity
    base = model_fingerprint(args, info)[0]
    assert model_fingerprint({**args, "device": "cuda", "model_parallel": True}, info)[0] == base
    assert model_fingerprint({**args, "dtype": "bfloat16"}, info)[0] != base
    assert model_fingerprint(args, replace(info, model_sha="abc123"))[0] != base
    (folder / "model.safetensors").write_bytes(b"22")  # the model re-saved in place
    assert model_fingerprint(args, info)[0] != base


# ---------------------------------------------------------------- out of memory
def _pipeline(tmp_path, mirror, tiny_model, name: str, batch_size: int | None, oom_once: bool):
    config = TransformersModelConfig(pretrained=tiny_model)
    calls = {"n": 0}

    def load():
        model = TransformersModel(config, batch_size=batch_size, show_progress=False)
        if oom_once:
            real = model.model.forward

            def forward(*args, **kwargs):
                calls["n"] += 1
                if calls["n"] == 1:
                    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
                return real(*args, **kwargs)

            model.model.forward = forward
        return model

    params = PipelineParameters(tasks=TASKS, output_dir=str(tmp_path / name), dataset_dir=mirror,
                                batch_size=batch_size, no_cache=True)
    return Pipeline(params, load), calls


def test_oom_with_automatic_batch_size_halves_and_gives_the_same_scores(tiny_model, mirror, tmp_path):
    baseline, _ = _pipeline(tmp_path, mirror, tiny_model, "baseline", None, oom_once=False)
    expected = baseline.evaluate().results
    pipeline, calls = _pipeline(tmp_path, mirror, tiny_model, "oom", None, oom_once=True)
    got = pipeline.evaluate().results
    assert calls["n"] > 1  # the failed forward was retried
    for task, metrics in expected["results"].items():
        assert got["results"][task] == pytest.approx(metrics, rel=1e-5, abs=1e-6)


def test_oom_with_fixed_batch_size_suggests_a_smaller_one(tiny_model, mirror, tmp_path):
    pipeline, _ = _pipeline(tmp_path, mirror, tiny_model, "fixed", 4, oom_once=True)
    with pytest.raises(LightevalLikeError) as info:
        pipeline.evaluate()
    assert "out of memory at --override_batch_size 4: pass a smaller one (e.g. 2)" in str(info.value)
    assert not glob.glob(str(tmp_path / "fixed" / "**" / "*.json"), recursive=True)


# ---------------------------------------------------------------- atomic outputs
def test_results_file_is_never_half_written(tmp_path):
    """A writer killed by SIGKILL half-way leaves the previous results file whole."""
    path = str(tmp_path / "results" / "m" / "results_x.json")
    outputs.save_results(path, {"version": "old"})
    script = textwrap.dedent(f'''
        import os, signal
        from lighteval_like.results import outputs

        def write(tmp):
            with open(tmp, "w") as f:
                f.write('{{"version": "new", "half')
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)

        outputs.atomic_write({path!r}, write)
    ''')
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert json.load(open(path, encoding="utf-8")) == {"version": "old"}
    folder = os.path.dirname(path)
    assert glob.glob(os.path.join(folder, "results_*.json")) == [path]
    assert all(name.startswith(".tmp-") for name in os.listdir(folder) if name != "results_x.json")


def test_failed_write_leaves_no_file_and_no_temp(tmp_path):
    path = str(tmp_path / "results_y.json")

    def write(tmp):
        with open(tmp, "w") as f:
            f.write("{")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        outputs.atomic_write(path, write)
    assert os.listdir(tmp_path) == []
