"""`--remove_reasoning_tags`: a reasoning model's thinking is cut out of its generations before
answers are extracted. The details keep the raw text, the answer left and the number of reasoning
tokens (`extras["reasoning"]`); a generation whose reasoning never closes has no answer (its
text becomes empty) and is counted per task (`summary_tasks[...]["unclosed_reasoning"]`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lighteval_like.api.errors import UsageError
from lighteval_like.api.requests import GenerationResponse
from lighteval_like.models.prompt_encoder import PromptEncoder

DEFAULT_TAGS = (("<think>", "</think>"),)


@dataclass(frozen=True)
class Reasoning:
    answer: str  # the text without its reasoning ("" when the reasoning never closed)
    reasoning: str
    closed: bool


def parse_reasoning_tags(text: str | None) -> tuple[tuple[str, str], ...]:
    """`--reasoning_tags "<think>,</think>;<reason>,</reason>"`: pairs of opening and closing tags."""
    if not text:
        return DEFAULT_TAGS
    pairs = []
    for part in text.split(";"):
        tags = tuple(t.strip() for t in part.split(","))
        if len(tags) != 2 or not all(tags):
            raise UsageError(f"--reasoning_tags entry '{part}' is not 'open,close' (e.g. '<think>,</think>')")
        pairs.append(tags)
    return tuple(pairs)


def split_reasoning(text: str, tags: tuple[tuple[str, str], ...]) -> Reasoning:
    """The reasoning blocks cut out of `text`. A closing tag with no opening one before it closes
    reasoning that began in the prompt (chat templates that open the block themselves)."""
    thoughts = []
    for opening, closing in tags:
        while True:
            start = text.find(opening)
            end = text.find(closing, start + len(opening) if start >= 0 else 0)
            if start < 0 and end < 0:
                break
            if end < 0:  # opened, never closed: no answer
                return Reasoning("", "".join(thoughts) + text[start + len(opening) :], False)
            if start < 0 or start > end:
                thoughts.append(text[:end])
                text = text[end + len(closing) :]
            else:
                thoughts.append(text[start + len(opening) : end])
                text = text[:start] + text[end + len(closing) :]
    return Reasoning(text, "".join(thoughts), True)


def _count(encoder: PromptEncoder, text: str) -> int | None:
    if not text:
        return 0
    return encoder.count_tokens(text) if encoder.counts_tokens else None


def remove_reasoning(samples: list, tags: tuple[tuple[str, str], ...], encoder: PromptEncoder) -> None:
    """Cut the reasoning out of every generation of `samples` (in place); each sample's
    `extras["reasoning"]` records, per generation, the raw and stripped text and the number of
    reasoning tokens (None where the backend counts no tokens)."""
    for sample in samples:
        if not sample.responses or not isinstance(sample.responses[0], GenerationResponse):
            continue
        records, responses = [], []
        for response in sample.responses:
            cut = split_reasoning(response.text, tags)
            records.append({
                "raw": response.text, "stripped": cut.answer, "closed": cut.closed,
                "reasoning_tokens": _count(encoder, cut.reasoning),
            })
            responses.append(dataclasses.replace(response, text=cut.answer))
        sample.responses = responses
        sample.extras["reasoning"] = records


def unclosed_count(samples: list) -> int | None:
    """Samples with a generation whose reasoning never closed (None: reasoning not removed)."""
    records = [s.extras["reasoning"] for s in samples if "reasoning" in s.extras]
    return sum(not all(r["closed"] for r in rs) for rs in records) if records else None
