"""The small interface every model backend implements, and the request/response types it speaks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """log P(continuation | context); `single_token` asks the backend to check it is one token."""

    context: str
    continuation: str
    single_token: bool = False


@dataclass(frozen=True)
class RollingRequest:
    """log P(text), over as many windows of `max_length` as the text needs."""

    text: str


@dataclass(frozen=True)
class GenerationRequest:
    """Greedy generation from `context` until a stop sequence or `max_new_tokens`."""

    context: str
    stop_sequences: tuple[str, ...]
    max_new_tokens: int | None


Request = LoglikelihoodRequest | RollingRequest | GenerationRequest


@dataclass
class LoglikelihoodResponse:
    logprob: float
    is_greedy: bool
    num_tokens: int  # continuation tokens scored
    input_truncated: bool = False  # context cut on the left to fit max_length


@dataclass
class GenerationResponse:
    text: str
    num_tokens: int
    input_truncated: bool = False


Response = LoglikelihoodResponse | GenerationResponse


class LanguageModel(ABC):
    """What the pipeline needs from a model; batching is the backend's business."""

    max_length: int
    # Called with (requests, responses) as each batch finishes, so the response cache can
    # commit it at once (a killed run then loses at most one batch). Optional for backends.
    on_batch: Callable[[list, list], None] | None = None

    def _batch_done(self, requests: list, responses: list) -> None:
        if self.on_batch is not None and requests:
            self.on_batch(requests, responses)

    @abstractmethod
    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[LoglikelihoodResponse]: ...

    @abstractmethod
    def loglikelihood_rolling(self, requests: list[RollingRequest]) -> list[LoglikelihoodResponse]: ...

    @abstractmethod
    def greedy_until(self, requests: list[GenerationRequest]) -> list[GenerationResponse]: ...

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens of `text` as the model would encode a context (for few-shot truncation)."""

    def shard_units(self, requests: list[Request]) -> list[list[int]]:
        """Groups of request indices that data-parallel ranks must not split (default: none)."""
        return [[i] for i in range(len(requests))]

    def info(self) -> dict:
        """Model facts for `config_general` in the results file."""
        return {}

    def stats(self) -> dict:
        """Counters for `summary_general` (tokens forwarded, ...)."""
        return {}
