"""The generation engine (models/generation.py): continuous batching gives what one-at-a-time
transformers `generate` gives, with rows stopping at different steps, a shared prompt prefix,
an out-of-memory in the middle, and the static fallback of pipelined placements; and the engine
driven by a fake step runner (no model), whose every next token is known."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_transformers_model import FEWSHOT, GEN_CONTEXTS, _hf, _hf_greedy, load, model_path  # noqa: F401

from lighteval_like.api.requests import GenerationRequest, GenerationResponse
from lighteval_like.models.transformers import generation
from lighteval_like.models.transformers.decoding import IncrementalText
from lighteval_like.models.transformers.generation import MIN_SHARED_PREFIX, Prompt, prefix_groups
from lighteval_like.models.transformers.model import ScoringStats

QUESTIONS = ["What is 4 minus 1?", "Who wrote the play?", "Where is the store?", "What is 2 plus 3?", "Paris?"]
# Different limits make rows leave the batch at different steps, so waiting rows join mid-way.
LIMITS = [3, 17, 6, 25, 1, 11, 9]


def _shared_prefix_requests() -> list[GenerationRequest]:
    contexts = [FEWSHOT + f"Question: {q}\nAnswer:" for q in QUESTIONS] + GEN_CONTEXTS[:2]
    return [GenerationRequest(c, (), n) for c, n in zip(contexts, LIMITS)]


def _expected(path: str, requests: list[GenerationRequest]) -> list[tuple[str, int]]:
    """One request at a time through transformers' `generate`."""
    out = []
    for r in requests:
        text, new = _hf_greedy(path, r.prompt.text, r.max_new_tokens)
        out.append((text, len(new)))
    return out


@pytest.mark.parametrize("batch_size", [1, 2, 4, None])
def test_continuous_batching_equals_one_at_a_time_generate(model_path, batch_size):  # noqa: F811
    """Rows stop at different steps (limits from 1 to 25 tokens) and waiting requests take their
    place; five share a few-shot prefix prefilled once. Every generation equals transformers'
    greedy `generate` of that request alone (text and number of tokens)."""
    requests = _shared_prefix_requests()
    model = load(model_path, batch_size=batch_size)
    responses = model.greedy_until(requests)
    assert [(r.text, r.num_tokens) for r in responses] == _expected(model_path, requests)
    assert model.counters.generated_tokens == sum(r.num_tokens for r in responses)
    assert model.counters.prefix_tokens_reused > 0  # the few-shot prefix was read from its cache


def test_confirmed_draft_tokens_leave_the_texts_unchanged(model_path):  # noqa: F811
    """Prompt-lookup drafts: rows that repeat earlier tokens take several tokens in one step (the
    model confirms them in the same forward); the texts are those of one-at-a-time `generate`,
    rows running up to their token limit included."""
    requests = [GenerationRequest(c, (), 200) for c in GEN_CONTEXTS]
    model = load(model_path, batch_size=4)
    responses = model.greedy_until(requests)
    assert [(r.text, r.num_tokens) for r in responses] == _expected(model_path, requests)
    assert model.counters.draft_tokens_accepted > 0


def test_stop_sequences_end_rows_at_different_steps(model_path):  # noqa: F811
    """Each row stops at its own stop sequence (found in the new text of a step); the text ends
    right before it, as with the whole generation cut at the stop."""
    _, tok = _hf(model_path)
    requests = []
    for context in GEN_CONTEXTS:
        full, new = _hf_greedy(model_path, context, 20)
        stop = next(tok.decode(new[:k]) for k in range(3, 20) if tok.decode(new[:k]).strip())[-2:]
        requests.append((GenerationRequest(context, (stop,), 20), full.split(stop)[0]))
    responses = load(model_path, batch_size=2).greedy_until([r for r, _ in requests])
    assert [r.text for r in responses] == [expected for _, expected in requests]
    assert any(r.num_tokens < 20 for r in responses)


def test_out_of_memory_mid_run_requeues_rows_and_changes_nothing(tiny_model, monkeypatch):
    """An out-of-memory during a decode step halves the budget; the rows in flight start again
    and every generation is as without it."""
    requests = _shared_prefix_requests()
    expected = [(r.text, r.num_tokens) for r in load(tiny_model).greedy_until(requests)]
    model = load(tiny_model)
    real_step, calls = generation.Engine._step, {"n": 0}

    def failing_step(engine):
        calls["n"] += 1
        if calls["n"] == 5:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_step(engine)

    monkeypatch.setattr(generation.Engine, "_step", failing_step)
    budget = model.token_budget
    assert [(r.text, r.num_tokens) for r in model.greedy_until(requests)] == expected
    assert model.token_budget == budget // 2


def test_pipelined_placement_falls_back_to_static_batches(tiny_model):
    """A placement without a usable cache (pp > 1) generates in static batches: same texts."""
    requests = _shared_prefix_requests()
    model = load(tiny_model, batch_size=3)
    expected = [(r.text, r.num_tokens) for r in model.greedy_until(requests)]
    model.placement.reuses_prefix_cache = False
    assert [(r.text, r.num_tokens) for r in model.greedy_until(requests)] == expected


def test_incremental_text_equals_a_full_decode(tiny_model):
    """Decoding a few tokens at a time gives the full decode's text, also when a character is
    split over several byte-level tokens."""
    _, tok = _hf(tiny_model)
    text = "Question: café € 😀 What is 4 minus 1?\nAnswer: 3 — naïve"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    incremental = IncrementalText(tok)
    pieces = [incremental.push(t) for t in ids]
    assert incremental.text == "".join(pieces) == tok.decode(ids) == text
    assert "" in pieces  # some token ended inside a character


def test_stop_found_once_where_it_completes(tiny_model):
    """A stop sequence is reported at the token that completes it, and not again after."""
    _, tok = _hf(tiny_model)
    ids = tok("ab\n\nQuestion: x y z", add_special_tokens=False)["input_ids"]
    incremental = IncrementalText(tok)
    hits = [incremental.stopped_by(incremental.push(t), ("Question:",)) for t in ids]
    first = next(k for k in range(len(ids)) if "Question:" in tok.decode(ids[: k + 1]))
    assert [k for k, hit in enumerate(hits) if hit] == [first]


def test_prefix_groups_share_only_long_prefixes():
    long = list(range(100, 100 + MIN_SHARED_PREFIX + 4))
    prompts = [Prompt(long + [1, 2], False, 4), Prompt([7, 8, 9], False, 4), Prompt(long + [3], False, 4),
               Prompt(long[:5] + [9, 9], False, 4)]
    groups = prefix_groups(prompts)
    shared = [g for g in groups if g.prefix]
    assert len(shared) == 1 and shared[0].prefix == tuple(long) and sorted(shared[0].members) == [0, 2]
    assert shared[0].members[0] == 0  # longest prompt first
    assert sorted(i for g in groups for i in g.members) == [0, 1, 2, 3]


# ------------------------------------------------------------------ a fake step runner
VOCAB, EOS = 26, 25  # token t is the letter chr(97 + t); "z" ends the generation
SHARED = "abcdefghijklmnopqr"  # longer than MIN_SHARED_PREFIX: prefilled once for two requests


class _Letters:
    """A tokenizer of single letters; the end-of-sequence token is "</s>" (a special token)."""

    eos_token_id = pad_token_id = EOS

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join(("" if skip_special_tokens else "</s>") if t == EOS else chr(97 + t) for t in ids)


class _AlphabetRunner:
    """A `StepRunner` with no model: whatever the context, token t is followed by t + 1. It
    records how many rows each forward decodes and each finished request; forward `oom_at`
    raises an out-of-memory (handled as the model does with an automatic batch size), forward
    100 an error (an engine that does not end)."""

    def __init__(self, batch_size: int, oom_at: int | None = None):
        self.tokenizer, self.device, self.counters = _Letters(), torch.device("cpu"), ScoringStats()
        self.show_progress, self.batch_size, self.token_budget = False, batch_size, 4096
        self.supports_row_cache, self.oom_at = True, oom_at
        self.rows: list[int] = []
        self.finished: list[tuple[GenerationRequest, GenerationResponse]] = []

    def encode(self, request: GenerationRequest) -> tuple[list[int], bool, int]:
        return [ord(c) - 97 for c in request.prompt.text], False, request.max_new_tokens

    def forward(self, ids, positions, keep, cache, images=()) -> torch.Tensor:
        self.rows.append(cache.rows)
        assert len(self.rows) < 100, "the engine does not end"
        if len(self.rows) == self.oom_at:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        kept = ids[-keep:] if isinstance(keep, int) else [ids[k] for k in keep.tolist()]
        return F.one_hot((torch.tensor(kept) + 1) % VOCAB, VOCAB).float()

    def generate_padded(self, input_ids, attention_mask, config, stopping_criteria):
        raise AssertionError("a runner with a row cache is never asked for static batches")

    def with_oom_backoff(self, run, batch_rows: int):
        try:
            return run()
        except torch.OutOfMemoryError:
            self.token_budget //= 2
            return None

    def on_finished(self, requests: list[GenerationRequest], responses: list[GenerationResponse]) -> None:
        self.finished += zip(requests, responses)


# (request, its text, its number of new tokens): the end-of-sequence token, a stop sequence
# ("fg": the text ends before it, its tokens count), token limits, a row whose earlier tokens
# draft its next ones, and two rows after a shared prefix.
ALPHABET_CASES = [
    (GenerationRequest("ab", (), 50), "cdefghijklmnopqrstuvwxy", 24),
    (GenerationRequest("ab", ("fg",), 50), "cde", 5),
    (GenerationRequest("klm", (), 3), "nop", 3),
    (GenerationRequest("abcdeabc", (), 6), "defghi", 6),
    (GenerationRequest("x", (), 1), "y", 1),
    (GenerationRequest("w", (), 10), "xy", 3),
    (GenerationRequest(SHARED + "a", (), 2), "bc", 2),
    (GenerationRequest(SHARED + "k", (), 4), "lmno", 4),
]


@pytest.mark.parametrize("oom_at", [None, 6])
def test_fake_runner_answers_every_request_once_through_two_slots(oom_at):
    """Eight requests through a batch of two: rows that finish (end of sequence, stop sequence,
    token limit) free their slot for a waiting one, every request is handed to `on_finished`
    exactly once with its response, also when an out-of-memory restarts the rows in flight."""
    requests = [request for request, _, _ in ALPHABET_CASES]
    expected = [GenerationResponse(text, n) for _, text, n in ALPHABET_CASES]
    runner = _AlphabetRunner(batch_size=2, oom_at=oom_at)
    assert generation.generate(runner, requests) == expected
    assert sorted(requests.index(r) for r, _ in runner.finished) == list(range(len(requests)))
    assert all(response == expected[requests.index(r)] for r, response in runner.finished)
    assert max(runner.rows) == 2
    counters = runner.counters
    assert counters.generated_tokens == sum(n for _, _, n in ALPHABET_CASES)
    assert counters.forward_passes == len(runner.rows) - (oom_at is not None)
    assert counters.draft_tokens_accepted > 0 and counters.prefix_tokens_reused > 0
