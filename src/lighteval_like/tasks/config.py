"""The two data types every task is made of: a `TaskConfig` row and the `Doc`s it yields."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from lighteval_like.api.generation import GenerationParameters


class RequestType(str, Enum):
    """What a task asks of the model; each maps onto one method of the model interface."""

    MULTIPLE_CHOICE = "multiple_choice"  # loglikelihood of each choice given the query
    LOGLIKELIHOOD = "loglikelihood"  # loglikelihood of the gold continuation only
    SINGLE_TOKEN = "loglikelihood_single_token"  # multiple choice, every choice one token
    ROLLING = "loglikelihood_rolling"  # perplexity of the whole text
    GENERATIVE = "greedy_until"  # generation until a stop sequence (greedy unless sampling is asked for)


@dataclass
class Doc:
    """One evaluation example, rendered: what the model sees and what counts as right.

    `query` is the text before the answer. For tasks whose choices change the context
    (Winogrande), `query_per_choice` holds one context per choice and `choices` the
    continuation scored after each. `fewshot_target` is the answer shown when the doc is
    used as a few-shot example (defaults to the gold choice).
    """

    query: str
    choices: list[str]
    gold_index: int | list[int]
    instruction: str = ""
    target_delimiter: str = " "
    fewshot_target: str | None = None
    query_per_choice: list[str] | None = None
    specific: dict[str, Any] = field(default_factory=dict)

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


PromptFunction = Callable[[dict, str], Doc]


@dataclass(frozen=True)
class TaskConfig:
    """Everything that defines a task; prompt functions turn dataset rows into `Doc`s.

    `data_builder`, when set, generates the rows for a split instead of loading a dataset,
    so such tasks run offline (the demo's arithmetic tasks). `columns` names the row fields the
    prompt function reads: a row where one is missing or None is a bad sample (`datasets` fills
    a missing key with None, which a prompt would render as the text 'None'). Left empty, the
    columns the prompt function reads as `row[key]` are required (see `docs.make_docs`).
    """

    name: str
    suite: str
    prompt_function: PromptFunction
    hf_repo: str
    hf_subset: str | None
    evaluation_split: str
    few_shots_split: str | None
    metrics: tuple  # names of metrics.METRICS, or metrics.Metric objects (checked before a run loads anything)
    request_type: RequestType = RequestType.MULTIPLE_CHOICE
    few_shots_select: str = "random"  # "random" (lm-eval's seeded draws) or "first_n"
    # lm-eval draws n + 1 examples and drops the evaluated doc where its task's fewshot_split
    # equals its test_split (both unset counts); the extra draw moves the random sequence.
    few_shots_draw_extra: bool = False
    generation_size: int | None = None
    stop_sequences: tuple[str, ...] = ()
    hf_revision: str | None = None
    data_builder: Callable[[str], list[dict]] | None = None
    # Rows it returns False for are dropped before `max_samples` and before numbering (lm-eval's
    # process_docs filters), e.g. BIG-bench's free-form rows in a multiple-choice variant.
    row_filter: Callable[[dict], bool] | None = None
    version: int = 0
    columns: tuple[str, ...] = ()
    # Defaults of generative tasks (sampling, num_samples, ...); the user's values win.
    generation_parameters: GenerationParameters | None = None
    # Few-shot examples fixed by the task (lm-eval's `fewshot_config.samples`), rows for the
    # prompt function, taken in order instead of a split's.
    fewshot_rows: tuple[dict, ...] = ()
    # Tasks whose docs have no answer to show (IFEval): a spec asking for shots is refused.
    zero_shot_only: bool = False

    @property
    def full_name(self) -> str:
        return f"{self.suite}|{self.name}"

    @property
    def fewshot_split(self) -> str:
        """Where few-shot examples come from: the few-shot split, else the evaluation split
        (the evaluated doc then excluded)."""
        return self.few_shots_split or self.evaluation_split

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view for `config_tasks` in the results file."""
        out = asdict(self)
        out["prompt_function"] = self.prompt_function.__name__
        out["request_type"] = self.request_type.value
        out["data_builder"] = self.data_builder.__name__ if self.data_builder else None
        out["row_filter"] = self.row_filter.__name__ if self.row_filter else None
        out["metrics"] = [m if isinstance(m, str) else m.name for m in self.metrics]
        out["stop_sequences"] = list(self.stop_sequences)
        out["fewshot_rows"] = len(self.fewshot_rows)
        return out


@dataclass(frozen=True)
class TaskGroup:
    """Tasks reported together, so a suite or a benchmark inside it gets one number.

    A task spec naming the group (`suite|name|k|0`) runs all its members. When two or more members
    ran with the same few-shot count k, the mean of each metric over them is reported as
    `suite|name:_average|k`; a whole-suite group (name "") reports as `suite|_average|k` and cannot
    be run by name (run its tasks or a named group).
    """

    suite: str
    name: str
    members: tuple[str, ...]  # full names, `suite|task`

    @property
    def full_name(self) -> str:
        return f"{self.suite}|{self.name}"

    def average_key(self, num_fewshot: int | str) -> str:
        head = f"{self.full_name}:" if self.name else f"{self.suite}|"
        return f"{head}_average|{num_fewshot}"
