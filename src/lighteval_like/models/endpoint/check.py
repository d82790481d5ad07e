"""The self-check run at load, before any request of the run: the server's numbers are proven
aligned to the tokens sent, or the run stops with one line naming the problem and the fix.

(a) A few tokens generated greedily from a fixed prompt, then the prompt and the generation scored
    with echo: the echo must be the ids sent (no echo, an added BOS), and each generated token the
    top-1 at its own position (log-probabilities shifted by one).
(b) A text prompt echoed: the server's ids must be the encoder's (another tokenizer; with
    tokenizer=server, other special tokens than add_special_tokens= gives).
(c) Before the run's first sampled generation: the probe's prompt sampled twice with that request's
    seed and parameters (16 tokens, a temperature of at least 1) must come back the same (a server
    that ignores `seed`).

And, once a run sends a request with a regex constraint, whether the server offers structured
output (`offers_structured_output`): a constraint no free generation would meet must be met; once
a run scores single-target items, whether the server answers next-token queries
(`offers_token_queries`) with its echo's values."""

from __future__ import annotations

from lighteval_like.models.endpoint.client import Client, EndpointError
from lighteval_like.models.endpoint.queries import next_token_logprobs, query_body
from lighteval_like.models.endpoint.wire import choice_text, choices, echoed, score_body, token_id
from lighteval_like.models.prompt_encoder import TokenizerEncoder

PROBE = "The following are multiple choice questions (with answers) about science."
PROBE_TOKENS = 4
STRUCTURED_PROBE = "zq{3}7"  # vLLM's structured_outputs regex; the text must be exactly "zqqq7"
QUERY_TOLERANCE = 1e-3  # a next-token query's log-probability against the echo's, same server


def _greedy_tokens(client: Client, model: str, prompt: list[int]) -> list[int]:
    body = {"model": model, "prompt": prompt, "max_tokens": PROBE_TOKENS, "temperature": 0.0, "logprobs": 1,
            "return_tokens_as_token_ids": True}
    choice = choices(client.request("/completions", body), 1)[0]
    tokens = [token_id(t) for t in (choice.get("logprobs") or {}).get("tokens") or []]
    if not tokens:
        raise EndpointError("endpoint self-check: the server returned no generated tokens with logprobs=1: use a "
                            "server that returns token log-probabilities (vLLM)")
    return tokens[-PROBE_TOKENS:]


def check_alignment(client: Client, model: str, encoder: TokenizerEncoder) -> None:
    """(a): the generation scored with echo; each generated token is the top-1 where it stands."""
    prompt = encoder.encode(PROBE)
    generated = _greedy_tokens(client, model, prompt)
    sent = prompt + generated
    choice = choices(client.request("/completions", score_body(model, [sent])), 1)[0]
    try:
        _, tops = echoed(choice, sent)
    except EndpointError as e:
        raise EndpointError(f"endpoint self-check: {e}") from e
    wrong = [p for p in range(len(prompt), len(sent)) if tops[p] != sent[p]]
    if wrong:
        raise EndpointError(
            f"endpoint self-check: the server's prompt log-probabilities are not aligned to the tokens sent (a token "
            f"it generated greedily is not the top-1 at its own position {wrong[0]}; shifted by one?): use a server "
            "whose echo logprobs are aligned (vLLM; with llama.cpp, a model that adds a BOS)")


def check_tokenizer(client: Client, model: str, encoder: TokenizerEncoder, tokenizer_name: str) -> None:
    """(b): the server tokenises a text as the local tokenizer does."""
    local = encoder.encode(PROBE)
    choice = choices(client.request("/completions", score_body(model, PROBE)), 1)[0]
    served = [token_id(t) for t in (choice.get("logprobs") or {}).get("tokens") or []][: len(local) + 2]
    if served[: len(local)] != local or len(served) != len(local) + 1:
        raise EndpointError(
            f"endpoint self-check: the server tokenises text otherwise than tokenizer={tokenizer_name} "
            f"({served[:6]}... against {local[:6]}...; an added BOS or another tokenizer): give tokenizer= the served "
            "model's own tokenizer folder (and add_special_tokens= as the server encodes)")


def offers_structured_output(client: Client, model: str) -> bool:
    """Whether the server constrains a generation by `structured_outputs: {"regex": ...}` (vLLM's;
    the older `guided_regex` is silently ignored by vLLM 0.32): a server that refuses the field, or
    answers anything but the one text the regex allows, does not."""
    body = {"model": model, "prompt": PROBE, "max_tokens": 8, "temperature": 0.0,
            "structured_outputs": {"regex": STRUCTURED_PROBE}}
    try:
        choice = choices(client.request("/completions", body), 1)[0]
    except EndpointError:
        return False
    return choice.get("text") == "zqqq7"


def check_seed(client: Client, path: str, body: dict) -> None:
    """(c): a sampled request sent twice with its seed answers the same text. Its prompt is the probe's
    and its temperature at least 1, so that a server ignoring the seed answers two texts (a prompt
    of the run might end both samples at once)."""
    source = {"messages": [{"role": "user", "content": PROBE}]} if "messages" in body else {"prompt": PROBE}
    kept = {k: v for k, v in body.items() if k not in ("stop", "prompt", "messages")}
    probe = kept | source | {"max_tokens": 16, "temperature": max(1.0, body.get("temperature", 1.0))}
    texts = [choice_text(choices(client.request(path, probe), 1)[0]) for _ in range(2)]
    if texts[0] != texts[1]:
        raise EndpointError(
            f"endpoint self-check: the server ignores the request's seed (seed={body.get('seed')} sampled twice gave "
            f"{texts[0]!r} and {texts[1]!r}): use a server that honours seed (vLLM), or generate greedily")


def offers_token_queries(client: Client, model: str, encoder: TokenizerEncoder) -> bool:
    """Whether a next-token query (`logprob_token_ids`, vLLM's) reports, for a few tokens after the
    probe, the log-probabilities the echo gives them (within QUERY_TOLERANCE) and the echo's top-1
    as its argmax. A server that refuses the field, ignores it or reports other numbers does not."""
    prompt = encoder.encode(PROBE)
    candidates = sorted({encoder.encode(text)[-1] for text in (" A", " the", " science")})
    try:
        answer = client.request("/completions", query_body(model, [prompt], set(candidates)))
        values, top = next_token_logprobs(choices(answer, 1)[0])
    except EndpointError:
        return False
    echo = choices(client.request("/completions", score_body(model, [prompt + [t] for t in candidates])),
                   len(candidates))
    for t, choice in zip(candidates, echo):
        logprobs, tops = echoed(choice, prompt + [t])
        if t not in values or abs(values[t] - logprobs[-1]) > QUERY_TOLERANCE or top != tops[-1]:
            return False
    return True
