"""What the generation engine needs of a model: the step-runner interface.

The engine (`generation.py`) schedules (which requests decode together, drafts, stops, the row
cache's bookkeeping); a `StepRunner` runs what it schedules (the forwards, on its device, through
its placement, with its out-of-memory backoff) and takes the finished requests. The split is
vLLM's scheduler/runner one: the engine reads nothing else of the model, so it can be driven by
any runner, a fake one in tests included. `model.TransformersStepRunner` is the real one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

import torch

from lighteval_like.api.requests import GenerationRequest, GenerationResponse
from lighteval_like.models.transformers.row_cache import RowCache

if TYPE_CHECKING:
    from transformers import GenerationConfig, StoppingCriteriaList

T = TypeVar("T")


class Tokenizer(Protocol):
    """What the engine reads of a tokenizer."""

    eos_token_id: int | None  # ends a row; its text is a stop sequence
    pad_token_id: int | None  # pads the static batches

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str: ...


class Counters(Protocol):
    """The statistics the engine adds to (the model's `ScoringStats`)."""

    forward_passes: int
    tokens_forwarded: int
    prefix_tokens_reused: int
    draft_tokens_accepted: int
    generated_tokens: int
    generation_seconds: float


class StepRunner(Protocol):
    """A model as the generation engine sees it."""

    tokenizer: Tokenizer  # decodes the new tokens (stop sequences, responses)
    device: torch.device  # where the row cache lives
    counters: Counters
    show_progress: bool  # whether to show a progress bar
    batch_size: int | None  # rows decoded together; None: as many as `token_budget` holds
    supports_row_cache: bool  # forwards may go through a `RowCache` (else: static batches)

    @property
    def token_budget(self) -> int:
        """Tokens (rows x their prompt and new tokens) a batch may hold; an out-of-memory lowers it."""

    def encode(self, request: GenerationRequest) -> tuple:
        """The request's prompt ids (cut on the left to leave room for the new tokens), whether
        they were cut, its token limit (the model's default where the request sets none), and
        for prompts with images their spans (start, end, digest), rotary positions and shift
        (the fields of `generation.Prompt`)."""

    def forward(self, ids: list[int], positions: torch.Tensor, keep: int | torch.Tensor, cache: RowCache,
                images: list[tuple[int, str, int, int]] = ()) -> torch.Tensor:
        """One packed sequence (`ids` at `positions`: [n], or [3, n] multimodal) through the
        model, its attention reading and writing `cache` (whose `prefill` or `decode` says how);
        the logits [kept, vocabulary] of the inputs `keep` (indices, or that many last ones).
        `images`: (input, digest, first token, count): those inputs are that image's tokens."""

    def generate_padded(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, config: GenerationConfig,
                        stopping_criteria: StoppingCriteriaList) -> torch.Tensor:
        """transformers' `generate` of a left-padded batch (prompts and new tokens, [rows, columns]),
        for the runners without `supports_row_cache`."""

    def with_oom_backoff(self, run: Callable[[], T], batch_rows: int) -> T | None:
        """`run()`; None after an out-of-memory that lowered the budget (the engine retries with
        fewer rows), an error when it cannot be lowered."""

    def on_finished(self, requests: list[GenerationRequest], responses: list[GenerationResponse]) -> None:
        """Finished requests and their responses (committed to the response cache at once)."""
