"""What defines a task: a `TaskConfig` row (its prompt function yields the ground floor's `Doc`s)
and the groups tasks belong to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from lighteval_like.api.doc import Doc
from lighteval_like.api.generation import GenerationParameters


class RequestType(str, Enum):
    """What a task asks of the model; each maps onto one method of the model interface."""

    MULTIPLE_CHOICE = "multiple_choice"  # loglikelihood of each choice given the query
    LOGLIKELIHOOD = "loglikelihood"  # loglikelihood of the gold continuation only
    SINGLE_TOKEN = "loglikelihood_single_token"  # multiple choice, every choice one token
    ROLLING = "loglikelihood_rolling"  # perplexity of the whole text
    GENERATIVE = "greedy_until"  # generation until a stop sequence (greedy unless sampling is asked for)


PromptFunction = Callable[[dict, str], Doc]


@dataclass(frozen=True)
class TaskConfig:
    """Everything that defines a task; prompt functions turn dataset rows into `Doc`s.

    `data_builder`, when set, generates the rows for a split instead of loading a dataset,
    so such tasks run offline (the demo's arithmetic tasks). `data_files`, when set, reads a split's
    rows from the task's own files under the data dir (`--dataset_dir`, `$LIGHTEVAL_LIKE_DATA_DIR`;
    None when neither is set), for data not laid out as the hub mirror (MT-Bench). `columns` names the row fields the
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
    data_files: Callable[[str | None, str], list[dict]] | None = None
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
    # Tasks that ask a chat model (MT-Bench's conversations): a run without a chat template is
    # refused before anything loads (`cli.entrypoints._refuse_bare_prompts`).
    needs_chat_template: bool = False

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
        out["data_files"] = self.data_files.__name__ if self.data_files else None
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
