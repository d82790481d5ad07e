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
from lighteval_like.models.item_scoring import context_units
from lighteval_like.models.packing import ScoreItem, Scores

Query = tuple[tuple[int, ...], list[ScoreItem]]  # (context tokens, the items scored after it)


MAX_QUERY_IDS = 128  # vLLM's bound on the logprob_token_ids of one request


def is_query(item: ScoreItem) -> bool:
    """Whether the item's one target is predicted by its last input token."""
    return len(item.targets) == 1 and item.first_pred == len(item.tokens) - 1 and not item.media


def query_groups(items: Sequence[ScoreItem], per_request: int) -> list[list[Query]]:
    """The single-target items by context (`context_units`), contexts in token order (the
    server's prefix cache sees shared prefixes together), up to `per_request` contexts and
    MAX_QUERY_IDS targets a request; a context with more distinct targets is left out (echoed)."""
    single = [it for it in items if is_query(it)]
    contexts = sorted(([single[j] for j in unit] for unit in context_units(single)), key=lambda u: u[0].tokens)
    groups: list[list[Query]] = []
    ids: set[int] = set()
    for unit in contexts:
        targets = {it.targets[0] for it in unit}
        if len(targets) > MAX_QUERY_IDS:
            continue
        if not groups or len(groups[-1]) == per_request or len(ids | targets) > MAX_QUERY_IDS:
            groups.append([])
            ids = set()
        groups[-1].append((unit[0].tokens, unit))
        ids |= targets
    return groups


def asked(groups: list[list[Query]]) -> set[ScoreItem]:
    """The items the query groups score."""
    return {it for group in groups for _, unit in group for it in unit}


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
