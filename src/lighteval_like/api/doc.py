"""`Doc`: one evaluation example as a task's prompt function renders it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Doc:
    """One evaluation example, rendered: what the model sees and what counts as right.

    `query` is the text before the answer. For tasks whose choices change the context
    (Winogrande), `query_per_choice` holds one context per choice and `choices` the
    continuation scored after each. `fewshot_target` is the answer shown when the doc is
    used as a few-shot example (defaults to the gold choice). `images` are the encoded images
    (PNG, JPEG, ... bytes as the dataset stores them) shown before the query, in order;
    `texts_before_images`, when set (one per image), interleaves them: each image follows its
    text (an empty one shows nothing) and the query follows the last image (MMMU's `<image N>`).
    `next_turns` are a multi-turn doc's later user turns (MT-Bench's second question): each is
    asked after the model's own answer to the turn before, in a generation round of its own.
    """

    query: str
    choices: list[str]
    gold_index: int | list[int]
    instruction: str = ""
    target_delimiter: str = " "
    fewshot_target: str | None = None
    query_per_choice: list[str] | None = None
    specific: dict[str, Any] = field(default_factory=dict)
    images: list[bytes] = field(default_factory=list)
    texts_before_images: list[str] = field(default_factory=list)
    next_turns: list[str] = field(default_factory=list)

    @property
    def gold_indices(self) -> list[int]:
        return [self.gold_index] if isinstance(self.gold_index, int) else list(self.gold_index)

    @property
    def fewshot_query(self) -> str:
        """The query shown when this doc is another doc's few-shot example (gold context)."""
        return self.query_per_choice[self.gold_indices[0]] if self.query_per_choice else self.query

    @property
    def fewshot_answer(self) -> str:
        """The answer shown after `fewshot_query` (defaults to the gold choice)."""
        return self.fewshot_target if self.fewshot_target is not None else self.choices[self.gold_indices[0]]

    def as_fewshot_example(self) -> str:
        """Query and answer, as shown in another doc's few-shot context."""
        return f"{self.fewshot_query}{self.target_delimiter}{self.fewshot_answer}"
