"""Shared-prefix scoring: pack token sequences into rows laid out as a prefix tree.

Every sequence to score is `tokens` (the model input) with `targets` predicted from
position `first_pred` on. Sequences are sorted so that those sharing a prefix are adjacent;
a row holds the union of their paths in the tree, each token once, attending only to its
ancestors and placed at position = its depth. A context shared by N choices (or a few-shot
prefix shared by many docs in the row) is therefore forwarded once, and each prediction
sees exactly the tokens it would see alone.

A prefix shared by more sequences than fit in one row (MMLU's 5-shot examples, TruthfulQA's
preamble) is split off as a `PrefixGroup`: forwarded once, its key/value cache reused by
every row of the group, instead of being repeated at the root of each row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch


def media_key(tokens, media: tuple[tuple[int, int, str], ...]) -> tuple[int, ...]:
    """`tokens` as sorted and shared: the positions of each image span (start, end, digest) stand
    for that image (negative numbers drawn from its digest, never a token id), not for its
    placeholder ids, so two images never share a prefix past the text before them."""
    if not media:
        return tuple(tokens)
    key = list(tokens)
    for start, end, digest in media:
        for offset in range(start, end):
            key[offset] = -1 - int.from_bytes(hashlib.sha256(f"{digest}:{offset - start}".encode()).digest()[:7], "big")
    return tuple(key)


@dataclass(frozen=True)
class ScoreItem:
    """`tokens` scored from `first_pred` on. `media` marks image spans of `tokens` (start, end,
    digest): sorting and prefix sharing go by `key` (`media_key`), never by the placeholder ids."""

    tokens: tuple[int, ...]
    first_pred: int  # index in `tokens` whose output predicts targets[0]
    targets: tuple[int, ...]
    media: tuple[tuple[int, int, str], ...] = ()

    @property
    def key(self) -> tuple[int, ...]:
        return media_key(self.tokens, self.media)

    def suffix(self, start: int) -> ScoreItem:
        """The item without its first `start` tokens (a shared prefix forwarded apart)."""
        media = tuple((max(a - start, 0), b - start, d) for a, b, d in self.media if b > start)
        return ScoreItem(self.tokens[start:], self.first_pred - start, self.targets, media)


@dataclass
class PackedRow:
    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)  # -1 for a root
    depths: list[int] = field(default_factory=list)
    # (item index, node predicting targets[0], node predicting targets[1], ...)
    predictions: list[tuple[int, list[int]]] = field(default_factory=list)


Scores = dict[ScoreItem, tuple[float, bool]]  # (loglikelihood, greedy) of each scored item


def owner_map(owned: Iterable[tuple[ScoreItem, int]]) -> dict[ScoreItem, list[int]]:
    """Each distinct item with the indices (of requests, or of their places) that hold it, in
    order: an item several requests share is scored once and its score given to each owner."""
    owners: dict[ScoreItem, list[int]] = {}
    for item, i in owned:
        owners.setdefault(item, []).append(i)
    return owners


class RollingWindows:
    """Rolling loglikelihood requests as the scored windows they are made of (a window several
    requests share is scored once); a request's total is reported as soon as its last window is
    scored, summed in window order so that it equals the one returned at the end."""

    def __init__(self, windows: list[list[ScoreItem]]):
        self.windows = windows
        self.owners = owner_map((item, i) for i, items in enumerate(windows) for item in items)
        self.scored: Scores = {}

    @property
    def items(self) -> list[ScoreItem]:
        return list(self.owners)

    def total(self, i: int) -> tuple[float, bool, int]:
        """(summed loglikelihood, every window greedy, scored tokens) of request i."""
        scores = [self.scored[item] for item in self.windows[i]]
        return sum(s[0] for s in scores), all(s[1] for s in scores), sum(len(it.targets) for it in self.windows[i])

    def add(self, batch: Scores) -> list[int]:
        """Take a batch of scores; the requests it completes."""
        self.scored.update(batch)
        touched = {i for item in batch for i in self.owners[item]}
        return sorted(i for i in touched if all(item in self.scored for item in self.windows[i]))


def common_length(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Length of the longest common prefix of two sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def unique_tokens(items: list[ScoreItem]) -> int:
    """Nodes of the prefix tree of all inputs: the fewest tokens any scorer must forward."""
    seqs = sorted({it.key for it in items})
    return sum(len(s) - (common_length(prev, s) if prev is not None else 0) for prev, s in zip([None, *seqs], seqs))


def pack_rows(items: list[ScoreItem], row_tokens: int) -> list[PackedRow]:
    """Rows of at most `row_tokens` tree nodes (or one item, if longer)."""
    order = sorted(range(len(items)), key=lambda i: items[i].key)
    rows: list[PackedRow] = []
    row: PackedRow | None = None
    prev: tuple[int, ...] = ()
    path: list[int] = []  # node index in `row` at each depth of the previous item
    for idx in order:
        seq, tokens = items[idx].key, items[idx].tokens
        shared = common_length(prev, seq) if row is not None else 0
        if row is not None and len(row.tokens) + len(seq) - shared > row_tokens:
            row, shared = None, 0
        if row is None:
            row = PackedRow()
            rows.append(row)
            path = []
        path = path[:shared]
        for depth in range(shared, len(seq)):
            row.parents.append(path[-1] if path else -1)
            row.depths.append(depth)
            row.tokens.append(tokens[depth])
            path.append(len(row.tokens) - 1)
        item = items[idx]
        row.predictions.append((idx, [path[item.first_pred + t] for t in range(len(item.targets))]))
        prev = seq
    return rows


@dataclass
class PrefixGroup:
    """Rows whose sequences all start with `prefix` (empty: no shared prefix)."""

    prefix: tuple[int, ...]
    rows: list[PackedRow]


def group_by_prefix(items: list[ScoreItem], row_tokens: int, min_prefix: int = 32) -> list[PrefixGroup]:
    """Split off long prefixes shared by more than a row's worth of sequences; pack the rest.

    A run of (sorted) sequences sharing at least `min_prefix` tokens whose tree would not
    fit in one row becomes a group: the prefix (never past a prediction position) is
    forwarded once and the suffixes are packed. Everything else is packed as plain rows.
    """
    order = sorted(range(len(items)), key=lambda i: items[i].key)
    runs: list[tuple[list[int], int]] = []  # (item indices, shared prefix length)
    for idx in order:
        if runs:
            run, common = runs[-1]
            shared = min(common, common_length(items[run[-1]].key, items[idx].key), items[idx].first_pred)
            if shared >= min_prefix:
                run.append(idx)
                runs[-1] = (run, shared)
                continue
        runs.append(([idx], min(len(items[idx].tokens), items[idx].first_pred)))
    groups, loose = [], []
    for run, shared in runs:
        members = [items[i] for i in run]
        if len(run) > 1 and shared >= min_prefix and unique_tokens(members) > row_tokens:
            suffixes = [m.suffix(shared) for m in members]
            rows = pack_rows(suffixes, row_tokens)
            for row in rows:  # back to indices into `items`
                row.predictions = [(run[i], nodes) for i, nodes in row.predictions]
            groups.append(PrefixGroup(members[0].tokens[:shared], rows))
        else:
            loose.extend(run)
    if loose:
        rows = pack_rows([items[i] for i in loose], row_tokens)
        for row in rows:
            row.predictions = [(loose[i], nodes) for i, nodes in row.predictions]
        groups.append(PrefixGroup((), rows))
    return groups


def batch_inputs(
    rows: list[PackedRow], pad_id: int, dtype: torch.dtype, prefix_len: int = 0
) -> tuple[torch.Tensor, ...]:
    """input_ids, position_ids and an additive 4D mask (0 = may attend, dtype min = may not).

    With `prefix_len`, the rows continue a cached prefix: every token may attend to it and
    positions start after it; the mask then spans prefix + row columns.
    """
    width = max(len(r.tokens) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    allowed = torch.zeros((len(rows), width, prefix_len + width), dtype=torch.bool)
    allowed[:, :, :prefix_len] = True
    own = allowed[:, :, prefix_len:]
    for b, row in enumerate(rows):
        n = len(row.tokens)
        input_ids[b, :n] = torch.tensor(row.tokens)
        positions[b, :n] = torch.tensor(row.depths) + prefix_len
        parents = row.parents
        for i in range(n):
            if parents[i] >= 0:
                own[b, i] = own[b, parents[i]]
            own[b, i, i] = True
        for i in range(n, width):  # padding attends only to itself, so no row is all-masked
            own[b, i, i] = True
    mask = torch.zeros((len(rows), 1, width, prefix_len + width), dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    return input_ids, positions, mask
