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
class _Prefill:
    """The next forward prefills rows into the slots after the active ones: their prompts are
    left-padded to one width, `lengths` are their real columns, all after `prefix`."""

    prefix: Prefix | None
    lengths: list[int]


@dataclass
class _Step:
    """The next forward decodes `counts[r]` inputs of each row r (its last token, then draft
    tokens to verify), packed row after row in one sequence: input t is row `rows[t]`'s number
    `offsets[t]`, written at its column `columns[t]`; `visible` [rows, inputs, columns] is what
    each padded input of a row sees."""

    counts: list[int]
    rows: torch.Tensor
    offsets: torch.Tensor
    columns: torch.Tensor
    visible: torch.Tensor
    prefix_runs: list[tuple[Prefix, torch.Tensor | None]]


class RowCache:
    """Slots [0, rows) hold the active rows: `lengths[s]` own columns each, after `prefixes[s]`."""

    def __init__(self, capacity: int, width: int):
        self.capacity, self.width = capacity, width
        self.keys: list[torch.Tensor] = []  # per layer [capacity, kv heads, width, dim], made at first use
        self.values: list[torch.Tensor] = []
        self.lengths: list[int] = []
        self.prefixes: list[Prefix | None] = []
        self._prefill: _Prefill | None = None
        self._step: _Step | None = None

    @property
    def rows(self) -> int:
        return len(self.lengths)

    # -- the forward the engine runs next ------------------------------------------------

    def prefill(self, prefix: Prefix | None, lengths: list[int]) -> None:
        self._prefill, self._step = _Prefill(prefix, lengths), None

    def decode(self, counts: list[int]) -> None:
        """The next forward decodes `counts[r]` inputs of row r, packed (see `_Step`)."""
        self._prefill = None
        device = self.keys[0].device
        counts_t = torch.tensor(counts)
        rows = torch.repeat_interleave(torch.arange(self.rows), counts_t)
        offsets = torch.cat([torch.arange(c) for c in counts])
        # the last column each query sees (the padding queries of a row with fewer inputs stay in its slot)
        ends = (torch.tensor(self.lengths)[:, None] + torch.arange(max(counts))).clamp(max=self.width - 1)
        visible = torch.arange(int(ends.max()) + 1) <= ends[:, :, None]
        columns = torch.tensor(self.lengths)[rows] + offsets
        self._step = _Step(counts, rows.to(device), offsets.to(device), columns.to(device), visible.to(device),
                           self._prefix_runs())

    def _prefix_runs(self) -> list[tuple[Prefix, torch.Tensor | None]]:
        """Each prefix with the slots that attend to it (None: every slot)."""
        runs: dict[int, tuple[Prefix, list[int]]] = {}
        for slot, prefix in enumerate(self.prefixes):
            if prefix is not None:
                runs.setdefault(id(prefix), (prefix, []))[1].append(slot)
        device = self.keys[0].device
        return [(p, None if len(s) == self.rows else torch.tensor(s, device=device)) for p, s in runs.values()]

    def advance(self, kept: list[int] | None = None) -> None:
        """After a forward: the prefilled rows are active, or each row keeps its first `kept[r]`
        decoded inputs (those whose draft tokens were confirmed; default all)."""
        if self._prefill is not None:
            self.lengths += self._prefill.lengths
            self.prefixes += [self._prefill.prefix] * len(self._prefill.lengths)
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
        if self._prefill is not None:
            start, width = self.rows, keys.shape[-2]
            for j, n in enumerate(self._prefill.lengths):
                self.keys[layer_idx][start + j, :, :n] = keys[j, :, width - n :]
                self.values[layer_idx][start + j, :, :n] = values[j, :, width - n :]
        else:  # one packed sequence: [1, kv heads, inputs, dim]
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
        """The prompts after their prefix, causal, pads masked (a pad sees itself, so nothing is NaN)."""
        rows, width = query.shape[0], query.shape[2]
        keys, values = layer.keys, layer.values
        shared = 0
        if self._prefill.prefix is not None:
            prefix_keys, prefix_values = self._prefill.prefix.keys[layer.index], self._prefill.prefix.values[layer.index]
            shared = prefix_keys.shape[-2]
            keys = torch.cat([prefix_keys.expand(rows, -1, -1, -1), keys], 2)
            values = torch.cat([prefix_values.expand(rows, -1, -1, -1), values], 2)
        groups = query.shape[1] // keys.shape[1]
        keys, values = keys.repeat_interleave(groups, 1), values.repeat_interleave(groups, 1)
        position = torch.arange(width, device=query.device)
        starts = torch.tensor([width - n for n in self._prefill.lengths], device=query.device)
        own = (position[None, :] <= position[:, None]) & (position[None, None, :] >= starts[:, None, None])
        own |= torch.eye(width, dtype=torch.bool, device=query.device)
        mask = torch.cat([own.new_ones(rows, width, shared), own], 2)
        out = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask[:, None], scale=scaling)
        return out.transpose(1, 2)

    def _attend_step(self, layer: _Layer, query: torch.Tensor, scaling: float) -> torch.Tensor:
        """The packed inputs of each row over its prefix (each prefix read once for all its rows)
        and its own columns, in one softmax; [1, inputs, heads, dim]."""
        step = self._step
        _, heads, _, dim = query.shape
        rows, inputs, kv_heads = self.rows, max(step.counts), layer.keys.shape[1]
        padded = query.new_zeros(rows, heads, inputs, dim)
        padded[step.rows, :, step.offsets] = query[0].transpose(0, 1)
        q = padded.reshape(rows, kv_heads, -1, dim)  # [rows, kv heads, groups x inputs, dim]
        columns = step.visible.shape[-1]
        keys, values = self.keys[layer.index][:rows, :, :columns], self.values[layer.index][:rows, :, :columns]
        own = torch.matmul(q, keys.transpose(-1, -2)).float() * scaling
        # [rows, kv heads, groups, inputs, columns]: each query head of an input sees that input's columns
        own = own.view(rows, kv_heads, -1, inputs, columns).masked_fill(~step.visible[:, None, None], float("-inf"))
        own = own.view(rows, kv_heads, -1, columns)
        runs = step.prefix_runs
        widest = max((prefix.keys[layer.index].shape[-2] for prefix, _ in runs), default=0)
        one_run = len(runs) == 1 and runs[0][1] is None  # every row after the same prefix
        shared = None if one_run or not runs else own.new_full((rows, kv_heads, q.shape[2], widest), float("-inf"))
        for prefix, slots in runs:
            part = q if slots is None else q[slots]
            # the run's queries against the one copy of its prefix: [kv heads, rows x queries, dim]
            flat = part.transpose(0, 1).reshape(kv_heads, -1, dim)
            scores = torch.matmul(flat, prefix.keys[layer.index][0].transpose(-1, -2)).float() * scaling
            scores = scores.reshape(kv_heads, part.shape[0], -1, scores.shape[-1]).transpose(0, 1)
            if one_run:
                shared = scores
            else:
                shared[(slice(None) if slots is None else slots), ..., : scores.shape[-1]] = scores
        probs = own.softmax(-1) if shared is None else torch.cat([shared, own], -1).softmax(-1)
        width = probs.shape[-1] - columns
        out = torch.matmul(probs[..., width:].to(values.dtype), values)
        for prefix, slots in runs:
            length = prefix.keys[layer.index].shape[-2]
            part = probs[..., :length] if slots is None else probs[slots, ..., :length]
            flat = part.transpose(0, 1).reshape(kv_heads, -1, length).to(values.dtype)
            mixed = torch.matmul(flat, prefix.values[layer.index][0]).reshape(kv_heads, part.shape[0], -1, dim)
            out = out + mixed.transpose(0, 1) if slots is None else out.index_add(0, slots, mixed.transpose(0, 1))
        out = out.to(query.dtype).reshape(rows, heads, inputs, dim)[step.rows, :, step.offsets]  # [inputs, heads, dim]
        return out[None]

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
