"""Loglikelihood requests as `ScoreItem`s for a backend that scores items by itself (vLLM's engine,
a server): each distinct item scored once, in token order, units grouped by context (so ranks and
replicas keep a shared prefix together), answers reported to the response cache as they come."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence

from lighteval_like.api.requests import LoglikelihoodRequest, LoglikelihoodResponse, RollingRequest
from lighteval_like.models.base import LanguageModel, WorkPlan
from lighteval_like.models.packing import RollingWindows, ScoreItem, Scores, owner_map


def context_units(items: Sequence[ScoreItem]) -> list[list[int]]:
    """Indices of `items` (in token order) grouped by context: replicas never split a context."""
    units: dict[tuple[int, ...], list[int]] = {}
    for j, item in enumerate(items):
        units.setdefault(item.tokens[: item.first_pred + 1], []).append(j)
    return list(units.values())


class ItemScoringModel(LanguageModel):
    """`loglikelihood` and `loglikelihood_rolling` over `_score_items`, the backend's own scorer."""

    label = "?"  # the backend's name in progress bars

    @abstractmethod
    def _score_items(self, unique: list[ScoreItem], label: str, report: Callable[[Scores], None]) -> Scores:
        """(sum of target logprobs, every target the argmax) of each item; `report` as batches finish."""

    def _each(self, encode: Callable, values: list) -> list:
        """`encode` of each value, in order, one at a time (a backend whose tokenizer is a server's
        encodes several at a time)."""
        return [encode(v) for v in values]

    def plan(self, requests: list) -> WorkPlan:
        """Loglikelihood requests tokenised once, units grouped by context in token order; one
        unit per other request."""
        scored = [i for i, r in enumerate(requests) if isinstance(r, LoglikelihoodRequest)]
        distinct = list(dict.fromkeys(requests[i] for i in scored))
        items = dict(zip(distinct, self._each(self.encoder.request_item, distinct))) if distinct else {}
        order = sorted(scored, key=lambda i: items[requests[i]][0].tokens)
        units = [[order[j] for j in unit] for unit in context_units([items[requests[i]][0] for i in order])]
        return WorkPlan(units + [[i] for i, r in enumerate(requests) if not isinstance(r, LoglikelihoodRequest)], items)

    def loglikelihood(self, requests: list[LoglikelihoodRequest], plan: WorkPlan | None = None) -> list[LoglikelihoodResponse]:
        items = (plan.prepared if plan is not None else None) or self.plan(requests).prepared
        owners = owner_map((items[request][0], i) for i, request in enumerate(requests))

        def respond(i: int, score: tuple[float, bool]) -> LoglikelihoodResponse:
            item, truncated = items[requests[i]]
            return LoglikelihoodResponse(score[0], score[1], len(item.targets), truncated)

        def report(scores: dict) -> None:
            done = [(i, score) for item, score in scores.items() for i in owners[item]]
            self._batch_done([requests[i] for i, _ in done], [respond(i, s) for i, s in done])

        scores = self._score_items(list(owners), f"loglikelihood ({self.label})", report)
        return [respond(i, scores[items[r][0]]) for i, r in enumerate(requests)]

    def loglikelihood_rolling(self, requests: list[RollingRequest], plan: WorkPlan | None = None) -> list[LoglikelihoodResponse]:
        rolling = RollingWindows(self._each(self.encoder.rolling_windows, [req.text for req in requests]))

        def report(batch: dict) -> None:
            ready = rolling.add(batch)
            self._batch_done([requests[i] for i in ready], [LoglikelihoodResponse(*rolling.total(i)) for i in ready])

        rolling.add(self._score_items(rolling.items, f"rolling loglikelihood ({self.label})", report))
        return [LoglikelihoodResponse(*rolling.total(i)) for i in range(len(requests))]
