"""Requests -> responses: every distinct request computed once, the response cache read and
committed batch by batch, each data-parallel rank given its share of the model's work plan,
and the responses gathered on the main process."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lighteval_like.api.requests import (
    GenerationRequest,
    LoglikelihoodRequest,
    Request,
    Response,
    RollingRequest,
    request_identity,
)
from lighteval_like.evaluation.cache import ResponseCache, model_fingerprint, response_cache_dir
from lighteval_like.models.base import LanguageModel
from lighteval_like.results.record import CacheSummary
from lighteval_like.runtime import ProcessContext

logger = logging.getLogger(__name__)

# Request kind, the model method answering it, and a cost estimate that balances the shards.
KINDS: list[tuple[type, str, Callable[[Request], int]]] = [
    (LoglikelihoodRequest, "loglikelihood", lambda r: len(r.prompt.text) + len(r.continuation)),
    (RollingRequest, "loglikelihood_rolling", lambda r: len(r.text)),
    (GenerationRequest, "greedy_until", lambda r: len(r.prompt.text) + 4 * (r.max_new_tokens or 256)),
]


@dataclass(frozen=True)
class CacheSettings:
    """Whether and where responses are cached; `model_args` fingerprint the model with its identity."""

    model_args: dict
    cache_dir: str | None = None
    enabled: bool = True


@dataclass
class Execution:
    """What the request stage produced: responses (main process only) and its counts."""

    answers: dict[Request, Response] | None
    num_requests: int
    cache: CacheSummary
    timings: dict[str, float] = field(default_factory=dict)


def _open_cache(
    settings: CacheSettings, model: LanguageModel, unique: list[Request], process: ProcessContext
) -> tuple[ResponseCache | None, dict]:
    """This rank's response cache and the requests it already answers.

    The main process alone reads the cache files, then sends every rank the fingerprint and
    which requests are done: all ranks skip the same ones (the shards of the rest must
    line up), and no rank writes before the main process has read."""
    if not settings.enabled:
        return None, {}
    if not settings.model_args:
        logger.warning("response cache off: the pipeline was given no model args to fingerprint the model")
        return None, {}
    folder = response_cache_dir(settings.cache_dir)
    found: dict[Request, Response] = {}
    shared = None
    if process.is_main:
        fingerprint, description = model_fingerprint(settings.model_args, model.info().identity)
        found = ResponseCache(folder, fingerprint, description=description).lookup(unique)
        position = {r: i for i, r in enumerate(unique)}
        shared = (fingerprint, description, sorted(position[r] for r in found))
    fingerprint, description, done = process.broadcast_from_main(shared)
    cache = ResponseCache(folder, fingerprint, process.rank, process.is_main, description)
    return cache, found if process.is_main else {unique[i]: None for i in done}


def _my_share(model: LanguageModel, todo: list[Request], process: ProcessContext, weight) -> tuple[list[int], object]:
    """Indices of `todo` this replica computes, and the model's plan: whole units as the model
    plans them, so the rows (hence the numbers) are those a single process would compute."""
    plan = model.plan(todo)
    chosen = process.shard([sum(weight(todo[i]) for i in unit) for unit in plan.units])
    return sorted(i for u in chosen for i in plan.units[u]), plan


def execute(requests: list[Request], model: LanguageModel, process: ProcessContext, settings: CacheSettings) -> Execution:
    """Compute every distinct request once; responses come back on the main process.

    Responses found in the response cache are reused; the others are committed to it batch
    by batch, so the same command run again after a crash computes only what was left."""
    unique = list(dict.fromkeys(requests))
    cache, cached = _open_cache(settings, model, unique, process)
    answers: dict[Request, Response] = dict(cached)
    timings: dict[str, float] = {}
    try:
        for kind, method_name, weight in KINDS:
            todo = sorted((r for r in unique if isinstance(r, kind) and r not in cached), key=request_identity)
            if not todo:
                continue
            mine, plan = _my_share(model, todo, process, weight)
            method = getattr(model, method_name)

            def run(batch: list[Request], method=method, plan=plan) -> list[Response]:
                return method(batch, plan)

            t0 = time.perf_counter()
            share = [todo[i] for i in mine]
            responses = cache.compute(model, run, share) if cache else run(share)
            timings[f"scoring_{kind.__name__}"] = round(time.perf_counter() - t0, 4)
            for part in process.gather(list(zip(mine, responses))) or []:
                for index, response in part:
                    answers[todo[index]] = response
    finally:
        if cache:
            cache.close()
    if cache:
        process.barrier()  # every shard is closed before the main process merges them
        if process.is_main:
            cache.merge_shards()
    summary = CacheSummary(cache is not None, cache.fingerprint if cache else None, len(cached), len(unique) - len(cached))
    return Execution(answers if process.is_main else None, len(unique), summary, timings)


def combined(first: Execution, then: Execution) -> Execution:
    """Two executions of one model (generation rounds) as one: answers, counts and timings added."""
    answers = None if first.answers is None else {**first.answers, **(then.answers or {})}
    cache = CacheSummary(first.cache.enabled, first.cache.fingerprint or then.cache.fingerprint,
                         first.cache.hits + then.cache.hits, first.cache.computed + then.cache.computed)
    timings = {k: round(first.timings.get(k, 0.0) + then.timings.get(k, 0.0), 4) for k in {**first.timings, **then.timings}}
    return Execution(answers, first.num_requests + then.num_requests, cache, timings)
