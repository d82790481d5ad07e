"""The small interface every model backend implements (the request and response types it speaks
are the ground floor's, `api/requests.py`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lighteval_like.api.requests import (
    GenerationRequest,
    GenerationResponse,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
    Request,
    RollingRequest,
)
from lighteval_like.models.prompt_encoder import PromptEncoder


@dataclass
class WorkPlan:
    """How a backend will compute a list of requests: `units` are groups of request indices
    that data-parallel ranks must not split (they share packed rows or a cached prefix);
    `prepared` is the backend's own form of the requests (tokenised, packed), handed back to
    it with its share so nothing is computed twice."""

    units: list[list[int]]
    prepared: Any = None


@dataclass(frozen=True)
class ModelIdentity:
    """Facts of a loaded model that decide its answers (part of the response-cache fingerprint)."""

    model_name: str
    model_sha: str | None = None
    model_dtype: str | None = None
    model_size: str | None = None
    max_length: int | None = None
    add_special_tokens: bool | None = None
    backend: str = "transformers"  # vllm's numbers are its kernels': never reused for another backend


@dataclass
class ModelInfo:
    """What the results record of the model: its identity, where it ran, and how it was split."""

    identity: ModelIdentity
    device: str | None = None
    parallelism: dict | None = None
    extra: dict = field(default_factory=dict)  # backend facts (a nanotron checkpoint's step, ...)

    def as_record(self) -> dict:
        """The `config_general` fields, in their order in the results file."""
        i = self.identity
        record = {
            "model_name": i.model_name, "model_sha": i.model_sha, "model_dtype": i.model_dtype,
            "model_size": i.model_size, "max_length": i.max_length, "device": self.device,
            "add_special_tokens": i.add_special_tokens,
        }
        if self.parallelism is not None:
            record["parallelism"] = self.parallelism
        return {**record, **self.extra}


class LanguageModel(ABC):
    """What the pipeline needs from a model; batching is the backend's business.

    Each request method takes an optional `plan` made by `plan()` for a list that holds the
    given requests (the pipeline plans every request, then hands each rank its share)."""

    max_length: int
    encoder: PromptEncoder  # renders and tokenises prompts (built from the tokenizer, no weights)
    # Called with (requests, responses) as each batch finishes, so the response cache can
    # commit it at once (a killed run then loses at most one batch). Optional for backends.
    on_batch: Callable[[list, list], None] | None = None

    def _batch_done(self, requests: list, responses: list) -> None:
        if self.on_batch is not None and requests:
            self.on_batch(requests, responses)

    @abstractmethod
    def loglikelihood(self, requests: list[LoglikelihoodRequest], plan: WorkPlan | None = None) -> list[LoglikelihoodResponse]: ...

    @abstractmethod
    def loglikelihood_rolling(self, requests: list[RollingRequest], plan: WorkPlan | None = None) -> list[LoglikelihoodResponse]: ...

    @abstractmethod
    def greedy_until(self, requests: list[GenerationRequest], plan: WorkPlan | None = None) -> list[GenerationResponse]: ...

    @abstractmethod
    def info(self) -> ModelInfo:
        """The model's facts for the results and the response cache."""

    def plan(self, requests: list[Request]) -> WorkPlan:
        """Units ranks must not split, and any prepared form of the requests (default: none)."""
        return WorkPlan([[i] for i in range(len(requests))])

    def stats(self) -> dict:
        """Counters for `summary_general` (tokens forwarded, ...)."""
        return {}
