"""The run's results as dataclasses, turned into the results document and details rows only
when they are written (outputs.py). The JSON layout is pinned by tests/test_results_layout.py."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from lighteval_like import __version__
from lighteval_like.api.prompt import media_digest
from lighteval_like.api.requests import GenerationResponse, LoglikelihoodResponse
from lighteval_like.api.sample import Sample
from lighteval_like.metrics.sandbox import Isolation, describe
from lighteval_like.models.base import ModelInfo


@dataclass
class MetricScore:
    value: float
    stderr: float


TaskScores = dict[str, MetricScore]  # metric name -> score


def scores_record(scores: TaskScores) -> dict[str, float]:
    """`{metric: value, metric_stderr: stderr, ...}` as the results file holds them."""
    out: dict[str, float] = {}
    for name, score in scores.items():
        out[name], out[f"{name}_stderr"] = score.value, score.stderr
    return out


@dataclass
class CacheSummary:
    """What the cache did this run, for `summary_general` (counts over all ranks)."""

    enabled: bool
    fingerprint: str | None = None
    hits: int = 0
    computed: int = 0


def text_hash(texts) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(str(t).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


@dataclass
class TaskSummary:
    hashes: dict[str, str]
    num_samples: int
    num_docs: int
    skipped_bad_samples: int
    truncated: int
    non_truncated: int
    effective_few_shots: float
    requested_few_shots: int
    fewshot_split: str | None
    generation_parameters: dict | None = None  # what a generative task ran with (user's over the task's)
    unclosed_reasoning: int | None = None  # samples whose reasoning never closed (None: tags not removed)
    judge_unparsed: int | None = None  # the judge's verdicts no rating was read from (None: nothing judged)


@dataclass
class GeneralConfig:
    """`config_general`: versions, times, run options and the model's facts."""

    versions: dict[str, str]  # lighteval_like_version, transformers_version, ...
    start_time: str
    end_time: str
    total_evaluation_time_secondes: float
    options: dict[str, Any]  # job_id, num_processes, override_batch_size, ...
    model: ModelInfo
    model_args: dict

    @property
    def model_name(self) -> str:
        return self.model.identity.model_name

    def record(self) -> dict:
        return {
            **self.versions, "start_time": self.start_time, "end_time": self.end_time,
            "total_evaluation_time_secondes": self.total_evaluation_time_secondes, **self.options,
            **self.model.as_record(), "model_args": self.model_args,
        }


def general_config(params, num_processes: int, start_time: float, model: ModelInfo, model_args: dict,
                   isolation: Isolation | None = None, cleanup_failures: int = 0) -> GeneralConfig:
    """`config_general` of a run with the given `PipelineParameters`, ending now. A run of code
    tasks records its isolation level, what the sandbox contained here, and how many programs'
    clean-ups failed (each is written on its sample's details)."""
    import torch
    import transformers

    end = time.time()
    versions = {
        "lighteval_like_version": __version__, "transformers_version": transformers.__version__,
        "torch_version": torch.__version__, "python_version": platform.python_version(),
    }
    options = {
        "job_id": params.job_id, "num_processes": num_processes, "override_batch_size": params.batch_size,
        "max_samples": params.max_samples, "num_fewshot_seeds": params.num_fewshot_seeds, "seed": params.seed,
        "use_chat_template": params.use_chat_template, "system_prompt": params.system_prompt,
        **({"code_execution_isolation": str(isolation.value), "code_execution_containment": describe(isolation),
            "code_execution_cleanup_failures": cleanup_failures} if isolation else {}),
        **({"checkpoint_step": params.checkpoint_step} if params.checkpoint_step is not None else {}),
        **({"reasoning_tags": [list(t) for t in params.reasoning_tags]} if params.reasoning_tags else {}),
    }
    return GeneralConfig(
        versions, datetime.fromtimestamp(start_time).isoformat(), datetime.fromtimestamp(end).isoformat(),
        round(end - start_time, 3), options, model, model_args,
    )


@dataclass
class GeneralSummary:
    prompts_hash: str
    num_samples: int
    num_requests: int
    truncated: int
    timings_seconds: dict[str, float]
    requests_per_second: float | None
    response_cache: CacheSummary  # hits and computed requests over all ranks
    scoring: dict  # counters of the main process's model (its shard, under data parallelism)
    judge: dict | None = None  # the judge pass of judge metrics: model args, requests, response cache

    def record(self) -> dict:
        return {
            "hashes": {"full_prompts": self.prompts_hash},
            "num_samples": self.num_samples,
            "num_requests": self.num_requests,
            "truncated": self.truncated,
            "non_truncated": self.num_samples - self.truncated,
            "timings_seconds": dict(self.timings_seconds),
            "requests_per_second": self.requests_per_second,
            "response_cache": asdict(self.response_cache),
            "scoring": self.scoring,
            **({"judge": self.judge} if self.judge is not None else {}),
        }


@dataclass
class RunReport:
    config_general: GeneralConfig
    results: dict[str, TaskScores]  # task key (and group averages, "all") -> scores
    versions: dict[str, int]
    config_tasks: dict[str, dict]
    summary_tasks: dict[str, TaskSummary]
    summary_general: GeneralSummary

    def to_json(self) -> dict:
        return {
            "config_general": self.config_general.record(),
            "results": {key: scores_record(scores) for key, scores in self.results.items()},
            "versions": self.versions,
            "config_tasks": self.config_tasks,
            "summary_tasks": {key: asdict(s) for key, s in self.summary_tasks.items()},
            "summary_general": self.summary_general.record(),
        }


def _prediction(sample: Sample) -> tuple[str | None, str | None]:
    """(generation, prediction): the generated text, else the choice of highest loglikelihood."""
    if sample.responses and isinstance(sample.responses[0], GenerationResponse):
        return sample.responses[0].text, sample.responses[0].text
    lls = [r.logprob for r in sample.responses if isinstance(r, LoglikelihoodResponse)]
    if lls and len(lls) == len(sample.doc.choices):
        return None, sample.doc.choices[max(range(len(lls)), key=lambda i: lls[i])]
    return None, None


THUMBNAIL_PIXELS = 64  # the longer side of the thumbnail `report` shows


def image_facts(data: bytes) -> dict:
    """What the details keep of an image: its digest, format, size, bytes and a small JPEG
    thumbnail for the report's sample browser, never its pixels."""
    import base64
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(data))
    facts = {"digest": media_digest(data), "format": image.format, "width": image.width, "height": image.height,
             "bytes": len(data)}
    thumb = image.convert("RGB")
    thumb.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=70)
    return {**facts, "thumbnail": "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()}


def details_rows(samples: list[Sample]) -> list[dict]:
    """One row per sample for the details parquet."""
    rows = []
    for s in samples:
        generation, prediction = _prediction(s)
        scored = [r for r in s.responses if isinstance(r, LoglikelihoodResponse)]
        rows.append({
            "doc_index": s.doc_index,
            "fewshot_seed": s.fewshot_seed,
            "prompt": s.contexts[0],
            "prompts": s.contexts,
            "choices": s.doc.choices,
            "gold_index": s.doc.gold_indices,
            "loglikelihoods": [r.logprob for r in scored],
            "greedy": [r.is_greedy for r in scored],
            "continuation_tokens": [r.num_tokens for r in s.responses],
            "generation": generation,
            "prediction": prediction,
            "metrics": json.dumps(s.metrics, default=str),
            "num_fewshot": s.num_fewshot,
            "fewshot_truncated": s.fewshot_truncated,
            "input_truncated": any(r.input_truncated for r in s.responses),
            **({"extras": json.dumps(s.extras, default=str)} if s.extras else {}),
            **({"images": json.dumps([image_facts(data) for data in s.doc.images])} if s.doc.images else {}),
            **({"generations": [r.text for r in s.responses]} if generation is not None and len(s.responses) > 1 else {}),
        })
    return rows
