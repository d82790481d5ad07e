"""Single-target items scored as next-token queries instead of echoed prompts.

An item with one target (a multiple-choice letter, " yes"/" no") needs the log-probability of one
token after its inputs. Its choices share those inputs, so one generation request per distinct
context answers them all: the context is sent once, one token is generated greedily, and vLLM's
`logprob_token_ids` returns the raw log-probability of each target (the argmax is the greedy
token). Unlike echoed prompt log-probabilities, which vLLM computes afresh for every position of
every choice, such a request reads the server's prefix cache (a few-shot prefix is computed once)
and computes logits at the last position only. Whether the server offers it, with values equal to
its echo, is asked once (`check.offers_token_queries`); elsewhere every item is echoed."""

from __future__ import annotations

from collections.abc import Sequence

from lighteval_like.models.endpoint.client import EndpointError
from lighteval_like.models.endpoint.wire import MISSING_LOGPROBS, choices, token_id
from lighteval_like.models.packing import ScoreItem, Scores

Query = tuple[tuple[int, ...], list[ScoreItem]]  # (context tokens, the items scored after it)


MAX_QUERY_IDS = 128  # vLLM's bound on the logprob_token_ids of one request


def is_query(item: ScoreItem) -> bool:
    """Whether the item's one target is predicted by its last input token."""
    return len(item.targets) == 1 and item.first_pred == len(item.tokens) - 1 and not item.media


def by_context(items: Sequence[ScoreItem]) -> dict[tuple[int, ...], list[ScoreItem]]:
    grouped: dict[tuple[int, ...], list[ScoreItem]] = {}
    for item in items:
        grouped.setdefault(item.tokens, []).append(item)
    return grouped


def queried(items: Sequence[ScoreItem]) -> list[ScoreItem]:
    """The items asked as queries: single-target ones whose context has at most MAX_QUERY_IDS
    distinct targets (the others are echoed)."""
    grouped = by_context([it for it in items if is_query(it)])
    return [it for group in grouped.values() if len({i.targets[0] for i in group}) <= MAX_QUERY_IDS for it in group]


def query_groups(items: Sequence[ScoreItem], per_request: int) -> list[list[Query]]:
    """The items by context, contexts in token order (the server's prefix cache sees shared
    prefixes together), up to `per_request` contexts and MAX_QUERY_IDS targets a request."""
    grouped = by_context(items)
    groups: list[list[Query]] = []
    ids: set[int] = set()
    for context in sorted(grouped):
        targets = {it.targets[0] for it in grouped[context]}
        if not groups or len(groups[-1]) == per_request or len(ids | targets) > MAX_QUERY_IDS:
            groups.append([])
            ids = set()
        groups[-1].append((context, grouped[context]))
        ids |= targets
    return groups


def query_body(model: str, contexts: list[list[int]], token_ids: set[int]) -> dict:
    """One greedy token after each context, with the log-probabilities of `token_ids` there."""
    return {"model": model, "prompt": contexts, "max_tokens": 1, "temperature": 0.0, "logprobs": 1,
            "logprob_token_ids": sorted(token_ids), "return_tokens_as_token_ids": True}


def group_body(model: str, group: list[Query]) -> dict:
    return query_body(model, [list(c) for c, _ in group], {it.targets[0] for _, items in group for it in items})


def next_token_logprobs(choice: dict) -> tuple[dict[int, float], int]:
    """(log-probability of each token reported after the context, the argmax among them: the
    greedy token the server sampled is always reported)."""
    tops = (choice.get("logprobs") or {}).get("top_logprobs") or []
    if not tops or not tops[0]:
        raise EndpointError(MISSING_LOGPROBS)
    values = {token_id(t): v for t, v in tops[0].items()}
    return values, max(values, key=values.get)


def group_scores(answer: dict, group: list[Query]) -> Scores:
    """(log-probability of the target, the target the greedy token) of each item of the group."""
    scores: Scores = {}
    for (_, items), choice in zip(group, choices(answer, len(group))):
        values, top = next_token_logprobs(choice)
        missing = [it.targets[0] for it in items if it.targets[0] not in values]
        if missing:
            raise EndpointError(f"the server left token {missing[0]} out of its logprob_token_ids answer: "
                                "use a server that honours logprob_token_ids (vLLM), or pass token_queries=false")
        scores.update({it: (values[it.targets[0]], top == it.targets[0]) for it in items})
    return scores
