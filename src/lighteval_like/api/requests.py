"""What the pipeline asks of a model and what it answers: frozen requests that carry a
structured `Prompt`, their responses, and the one request identity (the response cache's key, the
executor's order, the prompt hash of compare)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from lighteval_like.api.prompt import Prompt


def _plain_prompt(request) -> None:
    """A string given as a request's prompt is a plain prompt of that text."""
    if isinstance(request.prompt, str):
        object.__setattr__(request, "prompt", Prompt.plain(request.prompt))


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """log P(continuation | prompt); `single_token` asks the backend to check it is one token."""

    prompt: Prompt
    continuation: str
    single_token: bool = False

    def __post_init__(self):
        _plain_prompt(self)


@dataclass(frozen=True)
class RollingRequest:
    """log P(text), over as many windows of `max_length` as the text needs."""

    text: str


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen; temperature 0 is greedy (argmax). Part of the request, so
    the response cache keeps generations made with different settings apart."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass(frozen=True)
class GenerationRequest:
    """Generation from `prompt` until a stop sequence or `max_new_tokens`. `seed` seeds the
    request's own random stream when it samples (so its text does not depend on the batch).
    `regex` is a constraint on the whole text, honoured where the backend offers structured output
    (an endpoint whose server does); elsewhere the text is generated freely and parsed."""

    prompt: Prompt
    stop_sequences: tuple[str, ...]
    max_new_tokens: int | None
    sampling: SamplingParams = SamplingParams()
    seed: int | None = None
    regex: str | None = field(default=None, metadata={"keyed_when_set": True})

    def __post_init__(self):
        _plain_prompt(self)


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


def request_identity(request: Request) -> str:
    """The one identity of a request: its kind and every field, the prompt by `Prompt.identity`
    (image digests included, so two images behind the same placeholder tokens are two requests).
    A plain prompt is keyed as its text under `context`, as before prompts had structure, and a
    field added later (`keyed_when_set`) only when set, so response caches written then are still read."""
    fields = {}
    for f in dataclasses.fields(request):
        value = getattr(request, f.name)
        if value is None and f.metadata.get("keyed_when_set"):
            continue
        if isinstance(value, Prompt):
            fields["context"] = value.identity()
        else:
            fields[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return json.dumps([type(request).__name__, fields], sort_keys=True, ensure_ascii=False)
