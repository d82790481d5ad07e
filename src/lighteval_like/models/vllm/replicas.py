"""vLLM engine replicas, one worker process each, for data parallelism without Ray.

The main process tokenises and shards; each replica (spawned, its own process group, so its
engine's own workers go with it) runs one `vllm.LLM` on its share of devices and streams
results back chunk by chunk, so finished work reaches the response cache while the rest runs.
A replica that dies is seen at once (its process sentinel), the others are stopped, and the run
ends with the replica's error and exit code. This module imports vLLM only inside replicas.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from lighteval_like.api.errors import LightevalLikeError, ModelLoadError, one_line
from lighteval_like.api.requests import SamplingParams

ROOT_CAUSE = re.compile(r"(\b\w*(?:Error|Exception)\b: .*\S)")
CHUNK_TOKENS = 32768  # prompt tokens per chunk sent back (the response cache commits each)
CHUNK_PROMPTS = 256
STOP_GRACE_S = 5.0  # for a failed replica's processes to clean up
CLOSE_GRACE_S = 30.0  # for replicas to shut their engines down at the end of a run

KV_CACHE_FIX = ("not enough memory for the KV cache: on GPU raise gpu_memory_utilization or lower max_model_length; "
                "on CPU lower gpu_memory_utilization (the replicas' share of host memory) or set "
                "VLLM_CPU_KVCACHE_SPACE=<GiB per replica> within free memory")
# (words in a vLLM start-up error, what to tell the user): the failures users meet, with the fix.
STARTUP_FIXES: list[tuple[tuple[str, ...], str]] = [
    (("max_model_len", "greater than"),
     "max_model_length is above the model's maximum context: lower it, or omit it to use the model's own"),
    (("divisible by tensor parallel size",),
     "tensor_parallel_size must divide the model's number of attention heads: pick a divisor of it"),
    (("memory", "cache"), KV_CACHE_FIX),
    (("available memory",), KV_CACHE_FIX),
]


class ReplicaError(LightevalLikeError):
    """A replica failed: its message, and its exit code as the run's (128 + signal when killed)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class ScoreJob:
    """Prompt log-probabilities of `tokens[start:]` (each given the tokens before it)."""

    tokens: tuple[int, ...]
    start: int


@dataclass(frozen=True)
class GenerateJob:
    prompt: tuple[int, ...]
    max_new_tokens: int
    stop: tuple[str, ...]
    sampling: SamplingParams = SamplingParams()
    seed: int | None = None  # the request's own random stream (vLLM seeds a generator per request)
    regex: str | None = None  # a constraint on the text (vLLM's structured outputs)


Job = ScoreJob | GenerateJob


def startup_fix(message: str) -> str | None:
    """The one-line fix for a known start-up failure, or None."""
    lowered = message.lower()
    for words, fix in STARTUP_FIXES:
        if all(w.lower() in lowered for w in words):
            return fix
    return None


def chunks(jobs: Sequence[Job]) -> list[tuple[int, int]]:
    """(start, end) runs of `jobs` of about CHUNK_TOKENS prompt tokens (CHUNK_PROMPTS at most)."""
    bounds, start, tokens = [], 0, 0
    for i, job in enumerate(jobs):
        tokens += len(job.tokens if isinstance(job, ScoreJob) else job.prompt)
        if tokens >= CHUNK_TOKENS or i + 1 - start >= CHUNK_PROMPTS:
            bounds.append((start, i + 1))
            start, tokens = i + 1, 0
    if start < len(jobs):
        bounds.append((start, len(jobs)))
    return bounds


# ----------------------------------------------------------------------------- replica side
def _watch_parent(parent: int) -> None:
    """Ends this replica (and its engine's workers) when the main process is gone, even by kill -9."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _prompt_logprobs(llm, jobs: Sequence[ScoreJob], read_cache: bool) -> list:
    from vllm import SamplingParams, TokensPrompt

    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False,
                            skip_reading_prefix_cache=not read_cache)
    return llm.generate([TokensPrompt(prompt_token_ids=list(j.tokens)) for j in jobs], params, use_tqdm=False)


def _score(llm, jobs: list[ScoreJob]) -> list[tuple[float, bool, int]]:
    """(sum of log P(token | tokens before), every token the argmax, prompt tokens read from the
    prefix cache) over each job's scored tokens. Positions read from the prefix cache have no
    log-probabilities (vLLM leaves them 0): a job whose scored tokens reach into them runs again
    without reading the cache."""
    outputs = _prompt_logprobs(llm, jobs, read_cache=True)
    redo = [k for k, out in enumerate(outputs) if (out.num_cached_tokens or 0) >= jobs[k].start]
    for k, out in zip(redo, _prompt_logprobs(llm, [jobs[k] for k in redo], read_cache=False) if redo else []):
        outputs[k] = out
    results = []
    for job, out in zip(jobs, outputs):
        picked = [out.prompt_logprobs[p][job.tokens[p]] for p in range(job.start, len(job.tokens))]
        results.append((sum(lp.logprob for lp in picked), all(lp.rank == 1 for lp in picked), out.num_cached_tokens or 0))
    return results


def _generate(llm, jobs: list[GenerateJob]) -> list[tuple[str, int]]:
    """(text, new tokens) of each generation, cut at the first stop sequence; a sampled one
    draws from its own seeded stream, so its text does not depend on the batch; one with a regex
    is constrained to match it."""
    from vllm import SamplingParams as VLLMSampling
    from vllm import TokensPrompt
    from vllm.sampling_params import StructuredOutputsParams

    params = [
        VLLMSampling(max_tokens=j.max_new_tokens, stop=list(j.stop), temperature=j.sampling.temperature,
                     top_p=j.sampling.top_p, top_k=j.sampling.top_k, min_p=j.sampling.min_p,
                     repetition_penalty=j.sampling.repetition_penalty, seed=j.seed,
                     structured_outputs=StructuredOutputsParams(regex=j.regex) if j.regex else None)
        for j in jobs
    ]
    outputs = llm.generate([TokensPrompt(prompt_token_ids=list(j.prompt)) for j in jobs], params, use_tqdm=False)
    return [(out.outputs[0].text, len(out.outputs[0].token_ids)) for out in outputs]


def engine_facts(llm) -> dict[str, Any]:
    """The settings the engine runs with (read from it, not from what was asked)."""
    config = llm.llm_engine.vllm_config
    model, cache, sched, par = config.model_config, config.cache_config, config.scheduler_config, config.parallel_config
    return {
        "model": model.model, "revision": model.revision, "tokenizer": model.tokenizer,
        "dtype": str(model.dtype).replace("torch.", ""), "seed": model.seed, "max_model_len": model.max_model_len,
        "trust_remote_code": model.trust_remote_code, "quantization": model.quantization,
        "enforce_eager": model.enforce_eager, "load_format": str(getattr(config.load_config, "load_format", None)),
        "gpu_memory_utilization": cache.gpu_memory_utilization, "swap_space": getattr(cache, "swap_space", None),
        "enable_prefix_caching": cache.enable_prefix_caching, "max_num_seqs": sched.max_num_seqs,
        "max_num_batched_tokens": sched.max_num_batched_tokens, "tensor_parallel_size": par.tensor_parallel_size,
        "pipeline_parallel_size": par.pipeline_parallel_size, "device": str(config.device_config.device),
    }


def _check_engine_args(engine_args: dict) -> None:
    """Model args this vLLM no longer (or not yet) has fail by name, not as a TypeError."""
    import dataclasses

    import vllm
    from vllm.engine.arg_utils import EngineArgs

    known = {f.name for f in dataclasses.fields(EngineArgs)}
    unknown = sorted(k for k in engine_args if k not in known)
    if unknown:
        raise ValueError(f"vLLM {vllm.__version__} has no engine argument {', '.join(unknown)}: drop that model arg")


def _end_children() -> None:
    """The engine's processes, which a failure may leave behind: a few seconds to clean up
    (shared memory), then killed."""
    import psutil  # a dependency of vLLM

    children = psutil.Process().children(recursive=True)
    for child in children:
        child.terminate()
    for child in psutil.wait_procs(children, timeout=STOP_GRACE_S)[1]:
        child.kill()


def root_cause(error: BaseException, log_path: str) -> str:
    """The error as one line; vLLM's "see root cause above" replaced by the last error its
    engine processes logged (they run in other processes, so only their log has it)."""
    message = f"{type(error).__name__}: {one_line(error)}"
    if "root cause" not in message:
        return message
    with open(log_path, encoding="utf-8", errors="replace") as f:
        causes = [m.group(1) for line in f if (m := ROOT_CAUSE.search(line)) and "root cause" not in line]
    return one_line(RuntimeError(causes[-1])) if causes else message


def _serve(engine_args: dict, env: dict[str, str], conn: Connection, parent: int, log_path: str) -> None:
    """A replica's life: start the engine, report its facts, then answer job lists chunk by chunk.
    Its output and its engine processes' go to `log_path` (the run's terminal shows our progress)."""
    os.setsid()  # its own process group: stopping the replica stops its engine's processes too
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.environ.update(env)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:
        from vllm import LLM

        _check_engine_args(engine_args)
        llm = LLM(**engine_args)
        conn.send(("ready", engine_facts(llm)))
        while (chunk := conn.recv()) is not None:
            conn.send(("done", (_score if isinstance(chunk[0], ScoreJob) else _generate)(llm, chunk)))
        llm.llm_engine.engine_core.shutdown()
    except BaseException as e:  # every failure goes back to the main process as one line
        traceback.print_exc()
        conn.send(("error", root_cause(e, log_path)))
        conn.close()
        _end_children()
        sys.exit(1)
    conn.close()  # returning lets the engine's finalizers release its shared memory


# ------------------------------------------------------------------------------ main side
def _quiet_resource_tracker() -> None:
    """Start the resource tracker the replicas share so that it frees the shared memory of an
    engine that was killed without the warning per segment, which would follow the run's error line."""
    from multiprocessing import resource_tracker

    sys.warnoptions.append("ignore::UserWarning")
    try:
        resource_tracker.ensure_running()
    finally:
        sys.warnoptions.remove("ignore::UserWarning")


class ReplicaPool:
    """N replicas started together; `run` hands each its jobs and reports results as they come."""

    def __init__(self, engine_args: dict, envs: list[dict[str, str]]):
        ctx = multiprocessing.get_context("spawn")  # vLLM's engine may not start in a forked process
        _quiet_resource_tracker()
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.conns: list[Connection] = []
        folder = tempfile.mkdtemp(prefix="lighteval-like-vllm-")
        self.logs = [os.path.join(folder, f"replica{r}.log") for r in range(len(envs))]
        for env, log in zip(envs, self.logs):
            mine, theirs = ctx.Pipe()
            process = ctx.Process(target=_serve, args=(engine_args, env, theirs, os.getpid(), log), daemon=False)
            process.start()
            theirs.close()
            self.processes.append(process)
            self.conns.append(mine)
        self.facts: list[dict] = [{} for _ in envs]

        def ready(r: int, message: tuple) -> bool:
            self.facts[r] = message[1]
            return True

        try:
            self._collect(ready, list(range(len(envs))))
        except ReplicaError as e:
            fix = startup_fix(str(e))
            raise ModelLoadError(f"{e}: {fix}" if fix else str(e)) from e

    def run(self, shares: list[list[Job]], on_chunk: Callable[[int, int, list], None]) -> None:
        """Each replica computes `shares[r]`, chunk by chunk (all chunks are queued at once);
        `on_chunk(r, start, results)` as each finishes."""
        bounds = [chunks(share) for share in shares]
        for conn, share, runs in zip(self.conns, shares, bounds):
            for start, end in runs:
                conn.send(share[start:end])
        done = [0] * len(shares)

        def dispatch(r: int, message: tuple) -> bool:
            on_chunk(r, bounds[r][done[r]][0], message[1])
            done[r] += 1
            return done[r] == len(bounds[r])

        try:
            self._collect(dispatch, [r for r in range(len(shares)) if bounds[r]])
        except ReplicaError as e:
            raise ReplicaError(f"{e}; finished requests are in the response cache: rerun to resume", e.exit_code) from e

    def _collect(self, dispatch: Callable[[int, tuple], bool], replicas: list[int]) -> None:
        """Messages of `replicas` until `dispatch` says each is done; a failure or death stops them all."""
        waiting = set(replicas)
        while waiting:
            ready = wait([self.conns[r] for r in waiting] + [self.processes[r].sentinel for r in waiting])
            for r in sorted(waiting):
                if self.conns[r] in ready and self.conns[r].poll():
                    if dispatch(r, self._receive(r)):
                        waiting.discard(r)
                elif self.processes[r].sentinel in ready and not self.conns[r].poll():
                    self._fail(r, "exited without a word")

    def _receive(self, r: int) -> tuple:
        try:
            message = self.conns[r].recv()
        except (EOFError, OSError):
            self._fail(r, "exited without a word")
        if message[0] == "error":
            self._fail(r, message[1])
        return message

    def _fail(self, r: int, reason: str) -> None:
        process = self.processes[r]
        process.join(STOP_GRACE_S)
        code = process.exitcode
        self.close(graceful=False)
        exit_code = 128 - code if code is not None and code < 0 else (code or 1)
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"failed (exit code {code})"
        raise ReplicaError(f"vLLM replica {r} {how}: {reason} (its log: {self.logs[r]})", exit_code)

    def close(self, graceful: bool = True) -> None:
        """Stop every replica and its engine's processes: when their work is done (`graceful`), or
        at once, after a failure."""
        for conn, process in zip(self.conns, self.processes):
            try:
                if graceful:
                    conn.send(None)
                elif process.exitcode is None and process.pid is not None:
                    os.killpg(process.pid, signal.SIGTERM)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + (CLOSE_GRACE_S if graceful else STOP_GRACE_S)
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None and process.pid is not None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.join(STOP_GRACE_S)
        self.processes, self.conns = [], []
