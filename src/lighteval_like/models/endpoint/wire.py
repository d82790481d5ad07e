"""The OpenAI completions schema, both ways: request bodies for scoring and generation, and the
checked reading of their answers (echoed token ids, prompt log-probabilities, generated text).

Tokens come back as ids (`return_tokens_as_token_ids`, vLLM's), so an answer is checked against
the ids sent: a prompt not echoed as sent is an error, never a score."""

from __future__ import annotations

from lighteval_like.api.requests import SamplingParams
from lighteval_like.models.endpoint.client import EndpointError
from lighteval_like.models.packing import ScoreItem

ID_PREFIX = "token_id:"
MISSING_LOGPROBS = ("the server left prompt log-probabilities out of its echo: use a server that returns token_logprobs "
                    "and top_logprobs with echo=true (vLLM)")


def scored_prompt(item: ScoreItem) -> list[int]:
    """The item's inputs and its last target: the targets are its last tokens."""
    return list(item.tokens + item.targets[-1:])


def score_body(model: str, prompts: list[list[int]] | str) -> dict:
    """Prompt log-probabilities of each prompt (echoed, one token generated and ignored)."""
    return {"model": model, "prompt": prompts, "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 1,
            "return_tokens_as_token_ids": True}


def generation_body(model: str, source: dict, max_tokens: int, stop: list[str],
                    sampling: SamplingParams, seed: int | None, regex: str | None = None) -> dict:
    """`source` is {"prompt": ids or text} (completions) or {"messages": [...]} (chat completions);
    `regex` constrains the text (vLLM's `structured_outputs`; give it only to a server that offers it)."""
    body = {"model": model, **source, "max_tokens": max_tokens, "temperature": sampling.temperature,
            "top_p": sampling.top_p}
    if stop:
        body["stop"] = stop
    if regex is not None:
        body["structured_outputs"] = {"regex": regex}
    if not sampling.greedy and seed is not None:
        body["seed"] = seed
    defaults = SamplingParams()  # the server's own extensions, sent only when asked for
    body.update({k: getattr(sampling, k) for k in ("top_k", "min_p", "repetition_penalty")
                 if getattr(sampling, k) != getattr(defaults, k)})
    return body


def batched_body(bodies: list[dict]) -> dict:
    """One request of bodies alike but for their prompts (one body is sent as it is); each
    choice's generated tokens come back as `logprobs` (the usage counts them all together)."""
    if len(bodies) == 1:
        return bodies[0]
    return {**bodies[0], "prompt": [b["prompt"] for b in bodies], "logprobs": 0}


def generated_tokens(choice: dict, answer: dict, n: int) -> int:
    """How many tokens the server generated for `choice`, one of the `n` of `answer`."""
    if n == 1:
        return (answer.get("usage") or {}).get("completion_tokens", 0)
    return len((choice.get("logprobs") or {}).get("tokens") or [])


def token_id(token: str) -> int:
    if not token.startswith(ID_PREFIX):
        raise EndpointError(f"the server returns tokens as text ({token!r}), not ids: use a server that honours "
                            "return_tokens_as_token_ids (vLLM)")
    return int(token[len(ID_PREFIX):])


def choices(answer: dict, n: int) -> list[dict]:
    """The answer's `n` choices in prompt order; too few is an error."""
    got = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))
    if len(got) != n:
        raise EndpointError(f"the server answered {len(got)} choices for {n} prompts: it must answer each prompt once")
    return got


def echoed(choice: dict, sent: list[int]) -> tuple[list[float | None], list[int]]:
    """(log-probability, top-1 id) of each prompt position, once the echo is checked against `sent`."""
    logprobs = choice.get("logprobs") or {}
    tokens = [token_id(t) for t in logprobs.get("tokens") or []]
    if tokens[: len(sent)] != sent:
        if len(tokens) < len(sent):
            raise EndpointError(f"the server did not echo the prompt ({len(tokens)} tokens back for {len(sent)} sent): "
                                "use a server whose completions honour echo=true with logprobs (vLLM)")
        raise EndpointError(f"the server echoed other tokens than it was sent ({tokens[:4]}... for {sent[:4]}...): "
                            "it adds tokens (a BOS?) to token prompts; turn that off on the server")
    values, tops = (logprobs.get(k) or [] for k in ("token_logprobs", "top_logprobs"))
    if len(values) < len(sent) or len(tops) < len(sent):
        raise EndpointError(MISSING_LOGPROBS)
    return values[: len(sent)], [top_id(t) for t in tops[: len(sent)]]


def top_id(top: dict | None) -> int | None:
    """The most likely token of a position's `top_logprobs` (None at the first position)."""
    if not top:
        return None
    return token_id(max(top.items(), key=lambda kv: kv[1])[0])


def item_score(choice: dict, item: ScoreItem) -> tuple[float, bool]:
    """(sum of the targets' log-probabilities, every target the top-1 at its position)."""
    sent = scored_prompt(item)
    logprobs, tops = echoed(choice, sent)
    start = item.first_pred + 1
    picked = range(start, len(sent))
    if any(logprobs[p] is None for p in picked):
        raise EndpointError(MISSING_LOGPROBS)
    return sum(logprobs[p] for p in picked), all(tops[p] == sent[p] for p in picked)


def choice_text(choice: dict) -> str | None:
    """A completion's text or a chat completion's message content."""
    return choice.get("text", (choice.get("message") or {}).get("content"))


def generated(choice: dict, stop: list[str]) -> str:
    """The choice's text cut at the first stop sequence; an answer without text is an error."""
    text = choice_text(choice)
    if text is None or choice.get("finish_reason") not in ("stop", "length"):
        raise EndpointError(f"the server gave no answer (finish_reason {choice.get('finish_reason')!r}): "
                            "an empty answer is never scored; check the server's log")
    cuts = [text.find(s) for s in stop if s in text]
    return text[: min(cuts)] if cuts else text
