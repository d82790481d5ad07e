"""Judge metrics: a second model (the judge) reads what the evaluated model answered and gives
a verdict, which a metric turns into a value per sample.

A judge metric is two pure halves (`Judge`): `build_judge_requests(samples)`, the generation
requests the judge is asked about a task's samples, and `parse_verdicts(samples, responses)`, the
judge's answers to them (in the same order) as one value per sample. `judge_metric` makes it a
`Metric` that needs `JUDGE`: the pipeline asks the judge every such request of the run in one
pass, through the same executor and response cache as the evaluated model (under the judge's own
fingerprint, so a killed judge pass resumes), once the evaluated model is released; scoring
finds the answers in its context's judge slot (`JudgeAnswers`).

A judge that reads a rating out of each verdict keeps them in the sample's details
(`extras["verdicts"]`: the verdict's text and its rating, None where none could be read); such a
verdict is no value (None: left out of the mean, never scored as 0) and is counted in
`summary_tasks[task].judge_unparsed` (`unparsed_count`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from lighteval_like.api.requests import GenerationRequest, GenerationResponse
from lighteval_like.metrics.library import JUDGE, Metric, SampleValue
from lighteval_like.models.base import LanguageModel

if TYPE_CHECKING:
    from lighteval_like.runtime import ProcessContext


class Judge(Protocol):
    """The two pure halves of a judge metric."""

    def build_judge_requests(self, samples: list) -> list[GenerationRequest]:
        """What the judge is asked about these samples (of one task, with their responses)."""

    def parse_verdicts(self, samples: list, responses: list[GenerationResponse]) -> list[SampleValue]:
        """One value per sample from the judge's responses to `build_judge_requests(samples)`."""


@dataclass(frozen=True)
class JudgeModel:
    """The model a run asks judge metrics' requests: how to load it, its model args (they
    fingerprint its response cache entries, apart from the evaluated model's), how to close it
    after its pass, its backend's name (recorded with the args in `summary_general.judge`) and
    the process its pass runs in: None, the run's own ranks (data parallel, as the evaluated
    model); else the main process by itself (`ProcessContext.by_itself`: under torchrun, whose
    mesh places the evaluated model), while the other ranks wait at a barrier."""

    load: Callable[[], LanguageModel]
    model_args: dict
    close: Callable[[LanguageModel], None] | None = None
    backend: str | None = None
    process: ProcessContext | None = None


@dataclass(frozen=True)
class JudgeAnswers:
    """The judge's response to every judge request of the run: the scoring context's judge slot."""

    responses: Mapping[GenerationRequest, GenerationResponse]

    def answer(self, requests: list[GenerationRequest]) -> list[GenerationResponse]:
        return [self.responses[r] for r in requests]


def _verdicts(judge: Judge, samples: list, context) -> list[SampleValue]:
    return judge.parse_verdicts(samples, context.judge.answer(judge.build_judge_requests(samples)))


def judge_metric(name: str, judge: Judge, aggregation: str = "mean", higher_is_better: bool = True) -> Metric:
    """A metric whose values are the judge's verdicts on each sample."""
    return Metric(name, aggregation=aggregation, higher_is_better=higher_is_better,
                  batch_fn=functools.partial(_verdicts, judge), needs=frozenset({JUDGE}),
                  judge_requests=judge.build_judge_requests)


def collect_judge_requests(metrics: dict[str, list[Metric]], samples: dict[str, list]) -> list[GenerationRequest]:
    """Every request the run's judge metrics ask (`metrics` and `samples` by task key), in order."""
    return [r for key, task_metrics in metrics.items() if samples[key] for m in task_metrics if m.judge_requests
            for r in m.judge_requests(samples[key])]


def unparsed_count(samples: list) -> int | None:
    """The verdicts of these samples no rating could be read from (None: no verdict recorded)."""
    verdicts = [v for s in samples for v in s.extras.get("verdicts", [])]
    return sum(v["rating"] is None for v in verdicts) if verdicts else None
