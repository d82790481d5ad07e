"""Prefix-tree packing: node counts, row limits, prediction nodes and the 4D attention mask."""

from __future__ import annotations

import torch

from lighteval_like.models.packing import ScoreItem, batch_inputs, pack_rows, unique_tokens


def item(tokens, first_pred=None, n_targets=1) -> ScoreItem:
    tokens = tuple(tokens)
    first = len(tokens) - n_targets if first_pred is None else first_pred
    return ScoreItem(tokens, first, tuple(range(100, 100 + n_targets)))


def _path(row, node):
    """Tokens from the root to `node` (inclusive), following parents."""
    out = []
    while node >= 0:
        out.append(row.tokens[node])
        node = row.parents[node]
    return out[::-1]


def test_unique_tokens_counts_prefix_tree_nodes():
    """Shared prefixes count once; identical sequences count once; disjoint ones fully."""
    items = [item([1, 2, 3, 4]), item([1, 2, 3, 5]), item([1, 2, 6]), item([7, 8]), item([1, 2, 3, 4])]
    # tree: 1-2-3-4, 3-5, 2-6 ; 7-8  -> 4 + 1 + 1 + 2 nodes
    assert unique_tokens(items) == 8
    assert unique_tokens([item([1, 2, 3])]) == 3
    assert unique_tokens([item([1, 2]), item([1, 2, 3])]) == 3


def test_pack_rows_single_row_shares_prefix():
    """Items sharing a prefix go in one row whose node count is the tree size."""
    items = [item([1, 2, 3, 4]), item([1, 2, 3, 5]), item([1, 2, 6])]
    rows = pack_rows(items, row_tokens=100)
    assert len(rows) == 1
    row = rows[0]
    assert len(row.tokens) == unique_tokens(items) == 6
    assert row.depths == [len(_path(row, n)) - 1 for n in range(len(row.tokens))]
    assert sorted(idx for idx, _ in row.predictions) == [0, 1, 2]


def test_predictions_map_to_right_nodes():
    """Each prediction node is the node of the token at first_pred + t on that item's own path."""
    items = [
        item([5, 6, 7, 8, 9], first_pred=2, n_targets=3),
        item([5, 6, 7, 1], first_pred=1, n_targets=3),
        item([5, 6, 2, 3], first_pred=3, n_targets=1),
        item([4, 4]),
    ]
    rows = pack_rows(items, row_tokens=100)
    seen = set()
    for row in rows:
        for idx, nodes in row.predictions:
            it = items[idx]
            assert len(nodes) == len(it.targets)
            for t, node in enumerate(nodes):
                assert _path(row, node) == list(it.tokens[: it.first_pred + t + 1])
            seen.add(idx)
    assert seen == {0, 1, 2, 3}


def test_pack_rows_respects_row_tokens():
    """No row exceeds row_tokens nodes, unless a single item is longer than that."""
    items = [item([i % 3, i, i + 1, i + 2]) for i in range(10)] + [item(list(range(50, 62)))]
    rows = pack_rows(items, row_tokens=8)
    assert len(rows) > 1
    for row in rows:
        assert len(row.tokens) <= 8 or len(row.predictions) == 1
        assert len(row.tokens) == len(row.parents) == len(row.depths)
    long_rows = [r for r in rows if len(r.tokens) > 8]
    assert len(long_rows) == 1 and len(long_rows[0].tokens) == 12
    assert sorted(idx for r in rows for idx, _ in r.predictions) == list(range(len(items)))


def test_row_split_restarts_tree():
    """When a row is full, the next row holds the next item's full path from its root."""
    items = [item([1, 2, 3]), item([1, 2, 4]), item([1, 2, 5])]
    rows = pack_rows(items, row_tokens=4)  # 1-2-3 + 4 = 4 nodes, then 1-2-5 in a new row
    assert [len(r.tokens) for r in rows] == [4, 3]
    assert rows[1].tokens == [1, 2, 5] and rows[1].parents == [-1, 0, 1]


def test_mask_sees_exactly_ancestors():
    """In the 4D mask a token attends to itself and its ancestors only; positions are depths."""
    items = [item([1, 2, 3, 4]), item([1, 2, 5]), item([1, 6])]
    rows = pack_rows(items, row_tokens=100) + pack_rows([item([9, 9])], row_tokens=100)
    input_ids, positions, mask = batch_inputs(rows, pad_id=0, dtype=torch.float32)
    width = max(len(r.tokens) for r in rows)
    assert input_ids.shape == (2, width) and mask.shape == (2, 1, width, width)
    minimum = torch.finfo(torch.float32).min
    for b, row in enumerate(rows):
        n = len(row.tokens)
        assert input_ids[b, :n].tolist() == row.tokens
        assert positions[b, :n].tolist() == row.depths
        for i in range(n):
            ancestors = set()
            node = i
            while node >= 0:
                ancestors.add(node)
                node = row.parents[node]
            for j in range(width):
                expected = 0.0 if j in ancestors else minimum
                assert mask[b, 0, i, j].item() == expected, (b, i, j)
        for i in range(n, width):  # padding: only itself, never an all-masked row
            assert input_ids[b, i].item() == 0
            assert (mask[b, 0, i] == 0).nonzero().flatten().tolist() == [i]


def test_mask_dtype_minimum():
    """The masked value is the minimum of the requested dtype (no overflow in half precision)."""
    rows = pack_rows([item([1, 2]), item([1, 3])], row_tokens=10)
    _, _, mask = batch_inputs(rows, pad_id=0, dtype=torch.bfloat16)
    assert mask.dtype == torch.bfloat16
    assert mask.min().item() == torch.finfo(torch.bfloat16).min
    assert torch.isfinite(mask).all()


def test_group_by_prefix_splits_off_long_shared_prefix():
    """A long prefix shared by more items than fit one row is split off once; suffix rows plus
    the prefix rebuild every item, and predictions point back to the original items."""
    from lighteval_like.models.packing import group_by_prefix

    prefix = list(range(200, 240))  # 40 shared tokens
    items = [item(prefix + [i, i + 1, i + 2], n_targets=2) for i in range(10)] + [item([1, 2, 3]), item([1, 2, 4])]
    groups = group_by_prefix(items, row_tokens=45, min_prefix=32)
    shared = [g for g in groups if g.prefix]
    loose = [g for g in groups if not g.prefix]
    assert len(shared) == 1 and len(loose) == 1
    assert list(shared[0].prefix) == prefix
    covered = []
    for group in groups:
        for row in group.rows:
            assert len(row.tokens) <= 45
            for idx, nodes in row.predictions:
                it = items[idx]
                for t, node in enumerate(nodes):
                    assert list(group.prefix) + _path(row, node) == list(it.tokens[: it.first_pred + t + 1])
                covered.append(idx)
    assert sorted(covered) == list(range(len(items)))
    assert sorted(i for row in loose[0].rows for i, _ in row.predictions) == [10, 11]


def test_group_by_prefix_keeps_small_or_short_runs_plain():
    """Prefixes shorter than min_prefix, or runs that fit in one row, are packed as plain rows."""
    from lighteval_like.models.packing import group_by_prefix

    short = [item([1, 2, 3, i]) for i in range(20)]
    (group,) = group_by_prefix(short, row_tokens=8, min_prefix=32)
    assert group.prefix == () and len(group.rows) > 1
    fits = [item(list(range(40)) + [100 + i]) for i in range(3)]
    (group,) = group_by_prefix(fits, row_tokens=100, min_prefix=32)
    assert group.prefix == () and len(group.rows) == 1


def test_group_prefix_stops_at_prediction():
    """The split-off prefix never includes a position whose output is a prediction."""
    from lighteval_like.models.packing import group_by_prefix

    base = list(range(300, 350))
    items = [item(base + [i], first_pred=35, n_targets=16) for i in range(6)]
    groups = group_by_prefix(items, row_tokens=20, min_prefix=32)
    assert all(len(g.prefix) <= 35 for g in groups)
    assert any(g.prefix for g in groups)


def test_mask_with_cached_prefix():
    """Rows continuing a cached prefix attend to all of it, and positions start after it."""
    rows = pack_rows([item([1, 2, 3]), item([1, 2, 4]), item([5])], row_tokens=100)
    input_ids, positions, mask = batch_inputs(rows, pad_id=0, dtype=torch.float32, prefix_len=7)
    width = max(len(r.tokens) for r in rows)
    assert mask.shape == (len(rows), 1, width, 7 + width)
    assert (mask[:, :, :, :7] == 0).all()
    row = rows[0]
    assert positions[0, : len(row.tokens)].tolist() == [d + 7 for d in row.depths]
    plain = batch_inputs(rows, pad_id=0, dtype=torch.float32)[2]
    assert torch.equal(mask[:, :, :, 7:], plain)
