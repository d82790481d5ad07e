"""The key/value cache of the generation engine, and the attention that reads it.

Rows that share a prompt prefix (a chain-of-thought preamble, a long system prompt) attend to
one copy of that prefix's keys and values, read once per step for all of them ("cascade"
attention: the prefix part and the row's own part are computed apart and merged through their
log-normalisers). Each row's own columns live in a slot of a buffer allocated once, so a step
writes one column per row instead of growing (and copying) the whole cache, and a row that
leaves frees its slot without touching the others.

transformers' attention layers call `cache.update(keys, values, layer)` and pass what it
returns to the attention function registered under the model's `_attn_implementation`; while
the engine runs a forward, that name is `ATTENTION` (`RowCache.attending`), `update` returns the
layer's handle and the function below asks the cache to attend. Without a mask function for that
name, transformers builds no mask: the cache knows each row's columns.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ATTENTION = "lighteval_like_rows"
# Copying a row's columns for the second part of a step costs about as much as this many inputs.
GATHER = 4


@dataclass
class Prefix:
    """Keys and values of a prompt prefix ([1, kv heads, columns, dim] per layer: a one-row
    `RowCache` as wide as the prefix)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]


@dataclass
class _Layer:
    """What `RowCache.update` hands to the attention function: the layer and its new columns."""

    cache: RowCache
    index: int
    keys: torch.Tensor
    values: torch.Tensor


@dataclass
class _Part:
    """Inputs of the packed step that attend to their rows' own columns together: rows `slots`
    (a slice: no copy of the cache) with their inputs `first` to `first + count - 1` padded to
    `count`; `inputs` [rows, count] indexes them in the packed sequence (pads: one past its end)
    and `visible` [rows, count, columns] is what each sees."""

    slots: slice | torch.Tensor
    inputs: torch.Tensor
    visible: torch.Tensor
    _mask: torch.Tensor | None = None

    def mask(self, groups: int, dtype: torch.dtype) -> torch.Tensor:
        """`visible` as scores to add, [rows, 1, groups x count, columns] (each query head of a
        key/value head in turn); made at the step's first layer."""
        if self._mask is None:
            rows, count, columns = self.visible.shape
            hidden = torch.zeros(self.visible.shape, dtype=dtype, device=self.visible.device)
            hidden.masked_fill_(~self.visible, float("-inf"))
            self._mask = hidden[:, None, None].expand(rows, 1, groups, count, columns).reshape(rows, 1, -1, columns)
        return self._mask


@dataclass
class _Step:
    """The next forward decodes `counts[r]` inputs of each row r (its last token, then draft
    tokens to verify; a joining row's prompt), packed row after row in one sequence: input t is row `rows[t]`'s, written
    at its column `columns[t]`. `parts` split the inputs for the attention to own columns (so a
    row with a long draft does not pad every other row to its length); `prefix_runs` give each
    prefix the inputs that attend to it (None: all)."""

    counts: list[int]
    rows: torch.Tensor
    columns: torch.Tensor
    parts: list[_Part]
    prefix_runs: list[tuple[Prefix, torch.Tensor | None]]
    padded: torch.Tensor | None = None  # the inputs' queries and a pad, made at the first layer


def _first_part_count(counts: list[int]) -> int:
    """Inputs per row in the step's first part (all rows, padded); rows with more inputs attend
    with the rest in a second part, whose rows' columns are gathered (counted as `GATHER` inputs
    each). Chosen for the fewest padded inputs."""
    rows, widest = len(counts), max(counts)

    def cost(first: int) -> int:
        longer = sum(c > first for c in counts)
        return rows * first + longer * (widest - first + GATHER)

    return min(sorted(set(counts)), key=cost)


class RowCache:
    """Slots [0, rows) hold the active rows: `lengths[s]` own columns each, after `prefixes[s]`."""

    def __init__(self, capacity: int, width: int, device: torch.device | str = "cpu"):
        self.capacity, self.width, self.device = capacity, width, torch.device(device)
        self.keys: list[torch.Tensor] = []  # per layer [capacity, kv heads, width, dim], made at first use
        self.values: list[torch.Tensor] = []
        self.lengths: list[int] = []
        self.prefixes: list[Prefix | None] = []
        self._prefill: list[int] | None = None  # the lengths of the prompts the next forward prefills
        self._step: _Step | None = None

    @property
    def rows(self) -> int:
        return len(self.lengths)

    # -- the forward the engine runs next ------------------------------------------------

    def prefill(self, lengths: list[int]) -> None:
        """The next forward prefills prompts of `lengths` (no prefix), packed in one sequence, into
        the slots after the active rows; each attends alone (causal, by SDPA)."""
        self._prefill, self._step = lengths, None

    def decode(self, counts: list[int], joining: list[Prefix | None] = ()) -> None:
        """The next forward decodes `counts[r]` inputs of row r, packed (see `_Step`); rows
        `joining` (their prefixes) take the slots after the active ones, with no columns yet:
        their counts are their prompts after the prefix."""
        self._prefill = None
        self.lengths += [0] * len(joining)
        self.prefixes += list(joining)
        device = self.device
        counts_t = torch.tensor(counts)
        rows = torch.repeat_interleave(torch.arange(self.rows), counts_t)
        starts = torch.cumsum(counts_t, 0) - counts_t
        offsets = torch.arange(len(rows)) - starts[rows]
        columns = torch.tensor(self.lengths)[rows] + offsets
        first = _first_part_count(counts)
        parts = [self._part(slice(0, self.rows), counts_t, starts, 0, first, len(rows))] if first else []
        longer = torch.nonzero(counts_t > first).flatten()
        if len(longer):
            parts.append(self._part(longer, counts_t[longer], starts[longer], first, max(counts) - first, len(rows)))
        runs = [(p, None if s is None else torch.nonzero(torch.isin(rows, s)).flatten().to(device))
                for p, s in self._prefix_runs()]
        runs = [(p, inputs) for p, inputs in runs if inputs is None or len(inputs)]  # rows decoding nothing
        self._step = _Step(counts, rows.to(device), columns.to(device), parts, runs)

    def _part(self, slots: slice | torch.Tensor, counts: torch.Tensor, starts: torch.Tensor, first: int,
              count: int, total: int) -> _Part:
        """Inputs `first` to `first + count - 1` of the rows in `slots`, of `total` (see `_Part`)."""
        device = self.device
        offsets = first + torch.arange(count)
        lengths = torch.tensor(self.lengths)[slots]
        inputs = torch.where(offsets < counts[:, None], starts[:, None] + offsets, total)
        ends = (lengths[:, None] + offsets).clamp(max=self.width - 1)
        visible = torch.arange(int(ends.max()) + 1) <= ends[:, :, None]
        if isinstance(slots, torch.Tensor):
            slots = slots.to(device)
        return _Part(slots, inputs.to(device), visible.to(device))

    def _prefix_runs(self) -> list[tuple[Prefix, torch.Tensor | None]]:
        """Each prefix with the slots that attend to it (None: every slot)."""
        runs: dict[int, tuple[Prefix, list[int]]] = {}
        for slot, prefix in enumerate(self.prefixes):
            if prefix is not None:
                runs.setdefault(id(prefix), (prefix, []))[1].append(slot)
        return [(p, None if len(s) == self.rows else torch.tensor(s)) for p, s in runs.values()]

    def advance(self, kept: list[int] | None = None) -> None:
        """After a forward: the prefilled rows are active, or each row keeps its first `kept[r]`
        decoded inputs (those whose draft tokens were confirmed; default all)."""
        if self._prefill is not None:
            self.lengths += self._prefill
            self.prefixes += [None] * len(self._prefill)
        else:
            self.lengths = [n + k for n, k in zip(self.lengths, kept or self._step.counts)]
        self._prefill = self._step = None

    def remove(self, slot: int) -> None:
        """The row in `slot` leaves; the last row moves into its slot."""
        last = self.rows - 1
        if slot != last:
            n = self.lengths[last]
            for keys, values in zip(self.keys, self.values):
                keys[slot, :, :n] = keys[last, :, :n]
                values[slot, :, :n] = values[last, :, :n]
            self.lengths[slot], self.prefixes[slot] = self.lengths[last], self.prefixes[last]
        self.lengths.pop()
        self.prefixes.pop()

    # -- what transformers calls -----------------------------------------------------------

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # the engine always passes position ids

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args, **kwargs):
        if layer_idx == len(self.keys):
            shape = (self.capacity, keys.shape[1], self.width, keys.shape[-1])
            self.keys.append(keys.new_zeros(shape))  # zeros: masked columns are multiplied by 0
            self.values.append(values.new_zeros(shape))
        if self._prefill is not None:  # [1, kv heads, inputs, dim]: the prompts one after the other
            at = 0
            for slot, n in enumerate(self._prefill, start=self.rows):
                self.keys[layer_idx][slot, :, :n] = keys[0, :, at : at + n]
                self.values[layer_idx][slot, :, :n] = values[0, :, at : at + n]
                at += n
        else:
            step = self._step
            self.keys[layer_idx][step.rows, :, step.columns] = keys[0].transpose(0, 1)
            self.values[layer_idx][step.rows, :, step.columns] = values[0].transpose(0, 1)
        handle = _Layer(self, layer_idx, keys, values)
        return handle, handle

    def attend(self, layer: _Layer, query: torch.Tensor, scaling: float) -> torch.Tensor:
        """Attention output [rows, query columns, heads, dim] of `query` [rows, heads, columns, dim]."""
        if self._prefill is not None:
            return self._attend_prefill(layer, query, scaling)
        return self._attend_step(layer, query, scaling)

    def _attend_prefill(self, layer: _Layer, query: torch.Tensor, scaling: float) -> torch.Tensor:
        """Each packed prompt over its own columns, causal: [1, inputs, heads, dim]."""
        groups = query.shape[1] // layer.keys.shape[1]
        out, at = torch.empty_like(query), 0
        for n in self._prefill:
            own = slice(at, at + n)
            keys, values = (x[:, :, own].repeat_interleave(groups, 1) for x in (layer.keys, layer.values))
            out[:, :, own] = F.scaled_dot_product_attention(query[:, :, own], keys, values, is_causal=True, scale=scaling)
            at += n
        return out.transpose(1, 2)

    def _attend_step(self, layer: _Layer, query: torch.Tensor, scaling: float) -> torch.Tensor:
        """The packed inputs [1, heads, inputs, dim] over their rows' own columns (by `_Part`) and
        prefixes (each read once for all its inputs), merged through their log-normalisers;
        [1, inputs, heads, dim]."""
        step = self._step
        _, heads, total, dim = query.shape
        kv_heads = layer.keys.shape[1]
        q = query[0].reshape(kv_heads, -1, total, dim)  # [kv heads, groups, inputs, dim]: head h reads kv h // groups
        groups = q.shape[1]
        if step.padded is None:  # one pad input (index `total`) for the parts
            step.padded = q.new_zeros(kv_heads, groups, total + 1, dim)
        step.padded[:, :, :total] = q
        # each input's softmax over its own columns: log-normaliser and output (the pads write one past the end)
        own_norm = q.new_empty(kv_heads, groups, total + 1, dtype=torch.float32)
        own_out = q.new_empty(kv_heads, groups, total + 1, dim)
        for part in step.parts:
            rows, count = part.inputs.shape
            flat = part.inputs.flatten()
            mine = step.padded[:, :, flat].reshape(kv_heads, groups, rows, count, dim).permute(2, 0, 1, 3, 4)
            columns = part.visible.shape[-1]
            norm, out = _partial_attention(
                mine.reshape(rows, kv_heads, groups * count, dim), self.keys[layer.index][part.slots, :, :columns],
                self.values[layer.index][part.slots, :, :columns], scaling, part.mask(groups, q.dtype),
            )  # [rows, kv heads, groups x count(, dim)]
            own_norm[:, :, flat] = norm.view(rows, kv_heads, groups, count).permute(1, 2, 0, 3).reshape(kv_heads, groups, -1)
            own_out[:, :, flat] = out.view(rows, kv_heads, groups, count, dim).permute(1, 2, 0, 3, 4).reshape(kv_heads, groups, -1, dim)
        own_norm, own_out = own_norm[:, :, :total], own_out[:, :, :total]
        if not step.prefix_runs:
            return own_out.reshape(heads, total, dim).transpose(0, 1)[None]
        if step.prefix_runs[0][1] is None:  # one prefix for every input
            pre_norm, pre_out = self._attend_prefix(layer, q, *step.prefix_runs[0], scaling)
        else:  # inputs without a prefix keep a log-normaliser of -inf there (weight 0)
            pre_norm, pre_out = torch.full_like(own_norm, float("-inf")), torch.zeros_like(own_out)
            for prefix, inputs in step.prefix_runs:
                pre_norm[:, :, inputs], pre_out[:, :, inputs] = self._attend_prefix(layer, q, prefix, inputs, scaling)
        own_weight = torch.sigmoid(own_norm - pre_norm)[..., None]  # = e^own / (e^own + e^prefix)
        out = own_out * own_weight.to(own_out.dtype) + pre_out * (1 - own_weight).to(pre_out.dtype)
        return out.reshape(heads, total, dim).transpose(0, 1)[None]

    @staticmethod
    def _attend_prefix(layer: _Layer, q: torch.Tensor, prefix: Prefix, inputs: torch.Tensor | None,
                       scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
        """`inputs` (None: all) of `q` [kv heads, groups, inputs, dim] over the one copy of
        `prefix`: log-normalisers [kv heads, groups, n] and outputs [kv heads, groups, n, dim]."""
        mine = q if inputs is None else q[:, :, inputs]
        kv_heads, groups, n, dim = mine.shape
        norm, out = _partial_attention(
            mine.reshape(1, kv_heads, groups * n, dim), prefix.keys[layer.index], prefix.values[layer.index], scaling
        )
        return norm.view(kv_heads, groups, n), out.view(kv_heads, groups, n, dim)

    @contextmanager
    def attending(self, model):
        """Route `model`'s attention through this cache for the forwards inside."""
        from transformers import AttentionInterface

        AttentionInterface.register(ATTENTION, _attention_function)
        config = model.config
        before = config._attn_implementation
        config._attn_implementation = ATTENTION
        try:
            yield self
        finally:
            config._attn_implementation = before


def _partial_attention(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scaling: float,
                       mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention [batch, heads, queries, dim] over part of the columns, to be merged with the
    rest: each query's log-normaliser (float32, [batch, heads, queries]) and output. `mask` is
    added to the scores."""
    if query.device.type == "cpu":
        return _fused_partial_attention(query, keys, values, scaling, mask)
    return _materialised_partial_attention(query, keys, values, scaling, mask)


def _fused_partial_attention(query, keys, values, scaling, mask=None):
    """CPU: one threaded kernel that keeps no score matrix (2-3x faster than the materialised
    scores at a step's sizes: 8-100 inputs against a 730-column prefix, SmolLM2's heads)."""
    out, norm = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, keys, values, attn_mask=mask, scale=scaling
    )
    return norm, out


def _materialised_partial_attention(query, keys, values, scaling, mask=None):
    """Any device: the scores in float32, then their softmax."""
    scores = torch.matmul(query, keys.transpose(-1, -2)).float() * scaling
    if mask is not None:
        scores += mask
    top = scores.amax(-1, keepdim=True)
    weights = scores.sub_(top).exp_()
    total = weights.sum(-1, keepdim=True)
    out = torch.matmul(weights.to(values.dtype), values) / total.to(values.dtype)
    return (top + total.log()).squeeze(-1), out


def _attention_function(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The function transformers calls under `ATTENTION` (key and value are the layer's handle)."""
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    return key.cache.attend(key, query, scaling), None


def supports_row_cache(model) -> bool:
    """Whether every layer of `model` attends to all earlier columns (no sliding window or
    chunked layers, no attention sinks or soft-capping), as `RowCache` assumes."""
    config = getattr(model.config, "text_config", None) or model.config
    if getattr(config, "sliding_window", None) or getattr(config, "attention_chunk_size", None):
        return False
    if any(t != "full_attention" for t in getattr(config, "layer_types", None) or ()):
        return False
    return not getattr(config, "attn_logit_softcapping", None) and config.model_type not in {"gpt_oss"}
