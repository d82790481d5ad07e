"""The generation engine's cache (models/row_cache.py): prefill and decode attention against plain
attention over each row's whole key/value sequence, with grouped-query heads, two prefixes and a
row without one in one batch, packed steps where rows decode several inputs (draft tokens) and keep
some, and a row leaving (the last row moves into its slot)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lighteval_like.models.transformers.row_cache import (
    Prefix,
    RowCache,
    _first_part_count,
    _fused_partial_attention,
    _materialised_partial_attention,
)

KV_HEADS, HEADS, DIM = 2, 6, 8


def _kv(rows: int, columns: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(rows, KV_HEADS, columns, DIM), torch.randn(rows, KV_HEADS, columns, DIM)


def _reference(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, causal: bool) -> torch.Tensor:
    """[1, columns, heads, dim] by SDPA over the whole sequence (keys repeated per head group)."""
    groups = HEADS // KV_HEADS
    keys, values = keys.repeat_interleave(groups, 1), values.repeat_interleave(groups, 1)
    q_len, k_len = query.shape[2], keys.shape[2]
    mask = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len) if causal else None
    return F.scaled_dot_product_attention(query, keys, values, attn_mask=mask).transpose(1, 2)


def _prefill_then_steps(prefixes: list[Prefix | None], own: list[int], steps: list[tuple[list[int], list[int]]],
                        width: int, leave_at: int | None = None) -> RowCache:
    """Prefill rows one by one, then packed steps (inputs per row, inputs each keeps); at step
    `leave_at` the first row leaves. Every output is checked against plain attention."""
    cache = RowCache(capacity=len(own), width=width)
    history = []  # each row's keys and values from its first column on (prefix included)
    for prefix, n in zip(prefixes, own):
        keys, values = _kv(1, n)
        query = torch.randn(1, HEADS, n, DIM)
        if prefix is None:
            cache.prefill([n])
        else:  # a row after a prefix joins a step (the rows already there decode nothing here)
            cache.decode([0] * cache.rows + [n], [prefix])
        handle, _ = cache.update(keys, values, 0)
        out = cache.attend(handle, query, DIM**-0.5)
        cache.advance()
        full_k = keys if prefix is None else torch.cat([prefix.keys[0], keys], 2)
        full_v = values if prefix is None else torch.cat([prefix.values[0], values], 2)
        torch.testing.assert_close(out, _reference(query, full_k, full_v, causal=True))
        history.append((full_k, full_v))
    for step, (counts, kept) in enumerate(steps):
        if step == leave_at:  # the first row leaves: the last one moves into slot 0
            cache.remove(0)
            history = [history[-1], *history[1:-1]]
        keys, values = _kv(1, sum(counts))
        query = torch.randn(1, HEADS, sum(counts), DIM)
        cache.decode(counts)
        handle, _ = cache.update(keys, values, 0)
        out = cache.attend(handle, query, DIM**-0.5)
        cache.advance(kept)
        start = 0
        for row, (count, keep) in enumerate(zip(counts, kept)):
            mine = slice(start, start + count)
            k, v = (torch.cat([h, x[:, :, mine]], 2) for h, x in zip(history[row], (keys, values)))
            torch.testing.assert_close(out[:, mine], _reference(query[:, :, mine], k, v, causal=True))
            history[row] = (k[:, :, : k.shape[2] - count + keep], v[:, :, : v.shape[2] - count + keep])
            start += count
    return cache


def test_prefill_then_steps_equal_attention_over_the_whole_sequence():
    torch.manual_seed(0)
    prefixes = [Prefix(*[[t] for t in _kv(1, 5)]), None, Prefix(*[[t] for t in _kv(1, 3)])]
    # steps: inputs per row (a last token, then draft tokens) and how many each row keeps
    steps = [([1, 1, 1], [1, 1, 1]), ([1, 3, 2], [1, 2, 2]), ([1, 1], [1, 1])]
    cache = _prefill_then_steps(prefixes, [4, 2, 6], steps, width=10, leave_at=2)
    assert cache.lengths == [10, 6]


def test_a_long_draft_attends_apart_from_the_other_rows():
    """One row decodes 12 inputs, the others 1 or 2: the rows are padded to 2 inputs and the long
    row's other 10 attend in a second part (its columns gathered); outputs unchanged."""
    torch.manual_seed(2)
    prefix = Prefix(*[[t] for t in _kv(1, 7)])
    steps = [([1, 12, 2, 1], [1, 5, 2, 1]), ([2, 1, 12, 1], [2, 1, 12, 1]), ([1, 1, 1], [1, 1, 1])]
    cache = _prefill_then_steps([prefix, prefix, None, prefix], [3, 5, 2, 4], steps, width=24, leave_at=2)
    assert cache.lengths == [7, 12, 17]
    assert _first_part_count(steps[0][0]) == 2 and _first_part_count(steps[1][0]) == 2  # two parts were used


def test_packed_prefill_rows_keep_only_their_own_columns():
    """Two prompts of different lengths prefilled in one packed sequence: each row's output and
    stored columns are those of its prompt alone."""
    torch.manual_seed(1)
    cache = RowCache(capacity=2, width=6)
    keys, values = _kv(1, 7)
    query = torch.randn(1, HEADS, 7, DIM)
    cache.prefill([5, 2])
    handle, _ = cache.update(keys, values, 0)
    out = cache.attend(handle, query, DIM**-0.5)
    cache.advance()
    torch.testing.assert_close(out[:, :5], _reference(query[:, :, :5], keys[:, :, :5], values[:, :, :5], causal=True))
    torch.testing.assert_close(out[:, 5:], _reference(query[:, :, 5:], keys[:, :, 5:], values[:, :, 5:], causal=True))
    torch.testing.assert_close(cache.keys[0][1, :, :2], keys[0, :, 5:])
    assert cache.lengths == [5, 2]


def test_both_partial_attentions_give_the_log_normaliser_and_output_of_the_visible_columns():
    """The fused CPU kernel and the materialised scores (other devices) agree with a softmax over
    the columns the mask leaves visible, a query seeing one column included."""
    torch.manual_seed(3)
    query, keys, values = torch.randn(2, 3, 4, DIM), torch.randn(2, 3, 9, DIM), torch.randn(2, 3, 9, DIM)
    visible = torch.rand(2, 1, 4, 9) < 0.6
    visible[..., 0] = True
    visible[0, 0, 1] = torch.arange(9) == 4  # sees column 4 only
    mask = torch.zeros(visible.shape).masked_fill_(~visible, float("-inf"))
    scores = (query @ keys.transpose(-1, -2)) * DIM**-0.5 + mask
    expected = (torch.logsumexp(scores, -1), torch.softmax(scores, -1) @ values)
    for attend in (_fused_partial_attention, _materialised_partial_attention):
        norm, out = attend(query, keys, values, DIM**-0.5, mask)
        torch.testing.assert_close(norm, expected[0])
        torch.testing.assert_close(out, expected[1])
    torch.testing.assert_close(out[0, :, 1], values[0, :, 4])
