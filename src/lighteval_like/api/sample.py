"""`Sample`: one doc under one few-shot seed as it goes through the stages: its rendered contexts,
requests, responses, metric values and what metrics recorded for the details."""

from __future__ import annotations

from dataclasses import dataclass, field

from lighteval_like.api.doc import Doc
from lighteval_like.api.generation import GenerationParameters
from lighteval_like.api.requests import Request, Response

SampleValue = float | tuple[float, ...] | None  # None: no value (an unreadable verdict), left out


@dataclass
class Sample:
    """One doc under one few-shot seed, with its rendered contexts and requests."""

    task_key: str
    doc_index: int
    fewshot_seed: int
    doc: Doc
    contexts: list[str]  # the prompts as the model reads them (rendered by the encoder)
    requests: list[Request]
    num_fewshot: int
    fewshot_truncated: bool = False
    responses: list[Response] = field(default_factory=list)
    metrics: dict[str, SampleValue] = field(default_factory=dict)
    extras: dict = field(default_factory=dict)  # what a metric recorded for the details (e.g. a program run)
    generation: GenerationParameters | None = None  # the values a generative task ran with
