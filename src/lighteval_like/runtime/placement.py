"""A model split over the (dp, pp, tp) device mesh, for the `distributed` entry point.

Tokenisation, packing, batching and scoring stay the backend's; only where the model runs changes:

- tensor parallelism: the linear layers named by the model's own `base_model_tp_plan` are
  sharded with torch's `parallelize_module` (DTensor `ColwiseParallel` / `RowwiseParallel`),
  so each tp rank holds 1/tp of them and the forward is unchanged;
- pipeline parallelism: the decoder layers are split into `pp` stages (stage 0 also owns the
  embeddings, the last stage the final norm and head) and run by a
  `torch.distributed.pipelining` schedule over micro-batches; the attention mask and positions
  travel with the hidden states, so every stage sees the packed rows' tree layout.

Every rank of a data-parallel replica runs the same batches in the same order (the pipeline
shards requests by replica), which is what keeps the collectives in step.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections import OrderedDict

import torch
import torch.distributed as dist
from torch import nn

from lighteval_like.api.errors import LightevalLikeError, UsageError
from lighteval_like.runtime.single_device import SingleDevice

logger = logging.getLogger(__name__)

SCHEDULE_CACHE_SIZE = 8  # pipeline schedules kept per stage (one per distinct batch shape)


# ---------------------------------------------------------------- tensor parallelism
def _linear_splits(module: nn.Module, style: str, tp: int) -> bool:
    if not isinstance(module, nn.Linear):
        return False
    if style == "colwise":
        return module.out_features % tp == 0
    if style == "rowwise":
        return module.in_features % tp == 0
    return False


def _heads_split(model: nn.Module, tp: int) -> tuple[bool, str]:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    if heads is None:
        return True, ""
    ok = heads % tp == 0 and kv_heads % tp == 0
    return ok, f"{heads} attention heads / {kv_heads} key-value heads do not split into tp={tp}"


def _tp_rules(model: nn.Module) -> tuple[dict[str, str], str]:
    """The tensor-parallel plan and the module prefix it names layers under: the model's own, or,
    for an image+text model, its text tower's (the vision tower stays whole on every rank)."""
    rules = getattr(model.config, "base_model_tp_plan", None)
    if rules:
        return dict(rules), f"{model.base_model_prefix}."
    text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    tower = model.get_decoder() if hasattr(model, "get_decoder") else None
    rules = getattr(text, "base_model_tp_plan", None)
    if not rules or tower is None or tower is model:
        return {}, ""
    return dict(rules), next(name for name, module in model.named_modules() if module is tower) + "."


def tensor_parallel_plan(model: nn.Module, tp: int) -> tuple[dict[str, object], dict[str, str]]:
    """Module name -> torch ParallelStyle, from the model's `base_model_tp_plan`.

    Layers are grouped by parent (an attention block, an MLP): a group is sharded only if all
    of it can be (known styles, whole heads per rank, even widths), else it stays whole on every
    tp rank. Returns (plan, {replicated group pattern: reason}).
    """
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    rules, prefix = _tp_rules(model)
    if not rules:
        raise UsageError(
            f"{type(model).__name__} declares no tensor-parallel plan (config.base_model_tp_plan): use tp=1"
        )
    groups: dict[str, list[tuple[str, str, nn.Module]]] = {}
    for name, module in model.named_modules():
        if not name.startswith(prefix):
            continue
        style = rules.get(re.sub(r"\.\d+(?=\.|$)", ".*", name[len(prefix):]))
        if style is not None:
            groups.setdefault(name.rsplit(".", 1)[0], []).append((name, style, module))
    heads_ok, heads_reason = _heads_split(model, tp)
    plan: dict[str, object] = {}
    replicated: dict[str, str] = {}
    for parent, members in groups.items():
        pattern = re.sub(r"\.\d+(?=\.|$)", ".*", parent[len(prefix):])
        unknown = sorted({s for _, s, _ in members if s not in ("colwise", "rowwise")})
        is_attention = hasattr(model.get_submodule(parent), "head_dim")
        if unknown:
            replicated[pattern] = f"tensor-parallel style(s) {', '.join(unknown)} not supported"
        elif is_attention and not heads_ok:
            replicated[pattern] = heads_reason
        elif not all(_linear_splits(m, s, tp) for _, s, m in members):
            replicated[pattern] = f"layer widths do not divide by tp={tp}"
        else:
            for name, style, _ in members:
                plan[name] = ColwiseParallel() if style == "colwise" else RowwiseParallel()
    if not plan:
        reasons = "; ".join(f"{p}: {r}" for p, r in replicated.items())
        raise UsageError(f"tp={tp} cannot shard any layer of {type(model).__name__} ({reasons}): use another tp")
    return plan, replicated


def apply_tensor_parallel(model: nn.Module, tp_mesh, announce: bool) -> dict[str, str]:
    """Shard the plan's linears over `tp_mesh` in place; returns the groups left whole."""
    from torch.distributed.tensor.parallel import parallelize_module

    plan, replicated = tensor_parallel_plan(model, tp_mesh.size())
    # Every rank loaded the same weights, so each cuts its own shard (no scatter from rank 0).
    parallelize_module(model, tp_mesh, plan, src_data_rank=None)
    if replicated and announce:
        logger.warning(
            "tensor parallel: kept whole on every tp rank: %s",
            "; ".join(f"{p} ({r})" for p, r in replicated.items()),
        )
    return replicated


# -------------------------------------------------------------- pipeline parallelism
class _NotOnThisStage(nn.Module):
    """Stands in for a module another stage owns: passes the hidden states through.

    The embedding's stand-in keeps an empty `weight` of the original dtype, because the
    backend reads the activation dtype from `get_input_embeddings().weight`."""

    def __init__(self, dtype: torch.dtype | None = None):
        super().__init__()
        if dtype is not None:
            self.weight = torch.empty(0, dtype=dtype)

    def forward(self, *args, **kwargs):
        return args[0] if args else kwargs.get("hidden_states", next(iter(kwargs.values())))


def stage_layers(num_layers: int, pp: int, stage: int) -> range:
    """Contiguous layers of `stage`; earlier stages take the remainder (the last one runs the head)."""
    base, extra = divmod(num_layers, pp)
    start = stage * base + min(stage, extra)
    return range(start, start + base + (1 if stage < extra else 0))


def split_pipeline_stage(model: nn.Module, pp: int, stage: int) -> range:
    """Drop from `model` (in place) every module another stage owns; returns this stage's layers.

    The layout comes from the model's `base_model_pp_plan` (embeddings, layer list, norm)."""
    pp_plan = getattr(model.config, "base_model_pp_plan", None)
    if not pp_plan:
        raise UsageError(f"{type(model).__name__} declares no pipeline plan (config.base_model_pp_plan): use pp=1")
    base = getattr(model, model.base_model_prefix)
    names = list(pp_plan)
    stack = next((n for n in names if isinstance(getattr(base, n, None), nn.ModuleList)), None)
    if stack is None:
        raise UsageError(f"{type(model).__name__}: no layer list in its pipeline plan {names}: use pp=1")
    layers = getattr(base, stack)
    if pp > len(layers):
        raise UsageError(f"pp={pp} is more stages than the model's {len(layers)} layers")
    mine = stage_layers(len(layers), pp, stage)
    for i in range(len(layers)):
        if i not in mine:
            layers[i] = _NotOnThisStage()
    before, after = names[: names.index(stack)], names[names.index(stack) + 1 :]
    if stage != 0:
        for name in before:
            old = getattr(base, name)
            setattr(base, name, _NotOnThisStage(getattr(old, "weight", torch.empty(0)).dtype))
    if stage != pp - 1:
        for name in after:
            setattr(base, name, _NotOnThisStage())
        model.lm_head = _NotOnThisStage()
    return mine


class StageModule(nn.Module):
    """One pipeline stage with tensor-only inputs and outputs, as torch.distributed.pipelining wants.

    Stage 0 takes token ids, later stages hidden states; every stage also takes the boolean
    attention mask [rows, 1, width, width], the positions and the `needed` columns (one copy per
    row, so micro-batching splits them with the rows), and passes them on. The last stage
    returns the logits at the needed columns.
    """

    def __init__(self, model: nn.Module, is_first: bool, is_last: bool, dtype: torch.dtype, logits_to_keep: bool):
        super().__init__()
        self.model = model
        self.is_first, self.is_last = is_first, is_last
        self.dtype = dtype
        self.logits_to_keep = logits_to_keep

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, positions: torch.Tensor, needed: torch.Tensor):
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=allowed.device)
        mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)
        inputs = {"input_ids": x} if self.is_first else {"inputs_embeds": x}
        common = {"attention_mask": mask, "position_ids": positions, "use_cache": False}
        if self.is_last:
            columns = needed[0]
            if self.logits_to_keep:
                return self.model(**inputs, **common, logits_to_keep=columns).logits
            return self.model(**inputs, **common).logits[:, columns]
        base = getattr(self.model, self.model.base_model_prefix)
        return base(**inputs, **common).last_hidden_state, allowed, positions, needed


class PipelineRunner:
    """Runs a batch through the stages with a torch.distributed.pipelining schedule.

    Schedules need fixed micro-batch shapes, so one is built per (micro-batches, rows, width,
    columns) and kept in a small cache; every stage of the replica builds the same ones in the
    same order because all of them see the same batches.
    """

    def __init__(self, module: StageModule, layout: MeshPlacement, hidden_size: int, vocab_size: int, pad_id: int):
        self.module = module
        self.layout = layout
        self.stage = layout.pp_rank
        self.hidden_size, self.vocab_size, self.pad_id = hidden_size, vocab_size, pad_id
        self.microbatches = layout.pp_microbatches or 2 * layout.pp
        self.schedules: OrderedDict[tuple, object] = OrderedDict()

    @property
    def is_last(self) -> bool:
        return self.stage == self.layout.pp - 1

    def _schedule(self, n_mb: int, rows: int, width: int, columns: int):
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

        key = (n_mb, rows, width, columns)
        if key in self.schedules:
            self.schedules.move_to_end(key)
            return self.schedules[key]
        meta = torch.device("meta")
        dtype = self.module.dtype
        carried = (
            torch.empty((rows, 1, width, width), dtype=torch.bool, device=meta),
            torch.empty((rows, width), dtype=torch.long, device=meta),
            torch.empty((rows, columns), dtype=torch.long, device=meta),
        )
        hidden = torch.empty((rows, width, self.hidden_size), dtype=dtype, device=meta)
        first_in = torch.empty((rows, width), dtype=torch.long, device=meta)
        inputs = ((first_in if self.stage == 0 else hidden), *carried)
        if self.is_last:
            outputs = (torch.empty((rows, columns, self.vocab_size), dtype=dtype, device=meta),)
        else:
            outputs = (hidden, *carried)
        stage = PipelineStage(
            self.module, self.stage, self.layout.pp, self.layout.device,
            input_args=inputs, output_args=outputs, group=self.layout.pp_group,
        )
        schedule_class = Schedule1F1B if self.layout.pp_engine == "1f1b" else ScheduleGPipe
        schedule = schedule_class(stage, n_microbatches=n_mb)
        self.schedules[key] = schedule
        if len(self.schedules) > SCHEDULE_CACHE_SIZE:
            self.schedules.popitem(last=False)
        return schedule

    @torch.no_grad()
    def run(self, input_ids: torch.Tensor, allowed: torch.Tensor, positions: torch.Tensor, needed: list[int]):
        """Logits [rows, len(needed), vocab] on the last stage, None on the others."""
        rows, width = input_ids.shape
        n_mb = min(self.microbatches, rows)
        pad = (-rows) % n_mb
        if pad:  # micro-batches must have equal shapes: add rows that attend only to themselves
            input_ids = torch.cat([input_ids, input_ids.new_full((pad, width), self.pad_id)])
            eye = torch.eye(width, dtype=torch.bool, device=allowed.device).expand(pad, 1, width, width)
            allowed = torch.cat([allowed, eye])
            positions = torch.cat([positions, positions.new_zeros((pad, width))])
        columns = torch.tensor(needed, dtype=torch.long, device=input_ids.device).expand(rows + pad, -1).contiguous()
        schedule = self._schedule(n_mb, (rows + pad) // n_mb, width, len(needed))
        if self.stage == 0:
            out = schedule.eval(input_ids, allowed.contiguous(), positions, columns)
        else:
            out = schedule.eval()
        return out[:rows] if self.is_last else None


# ---------------------------------------------------------------------- placement
class MeshPlacement(SingleDevice):
    """This process's place in the (dp, pp, tp) mesh: its tp shard and pp stage of the model."""

    def __init__(self, mesh, device: torch.device, dp: int = 1, pp: int = 1, tp: int = 1,
                 pp_engine: str = "afab", pp_microbatches: int | None = None):
        super().__init__(device)
        self.mesh = mesh  # torch DeviceMesh with dims ("dp", "pp", "tp")
        self.dp, self.pp, self.tp = dp, pp, tp
        self.pp_engine = pp_engine
        self.pp_microbatches = pp_microbatches  # None: 2 * pp
        self.replicated_groups: dict[str, str] = {}
        self.runner: PipelineRunner | None = None

    @property
    def reuses_prefix_cache(self) -> bool:  # the prefix cache would live in every stage: not split yet
        return self.pp == 1

    @property
    def load_device(self) -> torch.device:
        """A split model is loaded once on the host and only this rank's part is moved."""
        return self.device if self.pp == 1 and self.tp == 1 else torch.device("cpu")

    @property
    def pp_rank(self) -> int:
        return self.mesh["pp"].get_local_rank() if self.pp > 1 else 0

    @property
    def pp_group(self):
        return self.mesh["pp"].get_group()

    def pp_global_rank(self, stage: int) -> int:
        return dist.get_global_rank(self.pp_group, stage)

    def check(self, quantized: bool, model_parallel: bool) -> None:
        if model_parallel:
            raise UsageError("model_parallel=True (device_map='auto') cannot be combined with `distributed`")
        if quantized and (self.tp > 1 or self.pp > 1):
            raise UsageError("quantized models (4bit/8bit, quantization_config) are not supported with tp > 1 or pp > 1")

    def place(self, model: nn.Module, pad_token_id: int) -> nn.Module:
        if self.pp > 1:
            split_pipeline_stage(model, self.pp, self.pp_rank)
        model.to(self.device)
        if self.tp > 1:
            self.replicated_groups = apply_tensor_parallel(model, self.mesh["tp"], dist.get_rank() == 0)
        if self.pp > 1:
            text_config = model.config.get_text_config()
            dtype = model.get_input_embeddings().weight.dtype
            logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
            module = StageModule(model, self.pp_rank == 0, self.pp_rank == self.pp - 1, dtype, logits_to_keep)
            self.runner = PipelineRunner(module, self, text_config.hidden_size, text_config.vocab_size, pad_token_id)
        return model

    def on_out_of_memory(self) -> LightevalLikeError:
        return LightevalLikeError(
            "out of memory under `distributed`: set a smaller batch_size in the override config "
            "(the batch size cannot adapt when ranks must run identical batches)"
        )

    def info(self) -> dict:
        return {
            "dp": self.dp, "tp": self.tp, "pp": self.pp, "pp_engine": self.pp_engine,
            "tp_replicated": dict(self.replicated_groups),
        }

    def forward_logits(self, model, input_ids, positions, mask, wanted, cache=None):
        if self.runner is None:
            return super().forward_logits(model, input_ids, positions, mask, wanted, cache)
        # Stages exchange fixed shapes, so the last one computes the union of the rows' columns.
        needed = sorted({c for cols in wanted for c in cols})
        logits = self.runner.run(input_ids, mask == 0, positions, needed)
        if logits is None:
            return None
        column = {c: i for i, c in enumerate(needed)}
        return torch.cat([logits[b, [column[c] for c in cols]] for b, cols in enumerate(wanted)])

    def share_scores(self, keys, scored):
        """The last stage computed the scores: every stage of the replica gets them."""
        if self.runner is None:
            return scored
        values = torch.zeros((len(keys), 2), dtype=torch.float64, device=self.device)
        if self.runner.is_last:
            values[:, 0] = torch.tensor([scored[k][0] for k in keys], dtype=torch.float64)
            values[:, 1] = torch.tensor([float(scored[k][1]) for k in keys], dtype=torch.float64)
        dist.broadcast(values, src=self.pp_global_rank(self.pp - 1), group=self.pp_group)
        return {key: (logprob, bool(greedy)) for key, (logprob, greedy) in zip(keys, values.tolist())}

    def generate(self, model, input_ids, attention_mask, generation_config, stopping_criteria):
        if self.runner is None:
            return super().generate(model, input_ids, attention_mask, generation_config, stopping_criteria)
        return pipelined_greedy(self, input_ids, attention_mask, generation_config, stopping_criteria)


@torch.no_grad()
def pipelined_greedy(placement: MeshPlacement, input_ids, attention_mask, generation_config, stopping_criteria):
    """Greedy decoding through the pipeline, one token per step.

    No key/value cache: each step forwards the whole (fixed-width) buffer, future slots
    masked out, so one schedule serves every step. The stopping rules are `generate`'s:
    finished rows get the pad token, a row finishes on EOS or the stopping criteria."""
    rows, width = input_ids.shape
    max_new, pad_id, eos_id = generation_config.max_new_tokens, generation_config.pad_token_id, generation_config.eos_token_id
    total, device = width + max_new, input_ids.device
    ids = input_ids.new_full((rows, total), pad_id)
    ids[:, :width] = input_ids
    attention = attention_mask.new_zeros((rows, total))
    attention[:, :width] = attention_mask
    unfinished = torch.ones(rows, dtype=torch.bool, device=device)
    causal = torch.ones((total, total), dtype=torch.bool, device=device).tril()
    eye = torch.eye(total, dtype=torch.bool, device=device)
    last = placement.pp_global_rank(placement.pp - 1)
    end = width
    for step in range(max_new):
        end = width + step
        real = attention.bool()
        allowed = (causal & real[:, None, :] & real[:, :, None]) | eye
        positions = (attention.cumsum(-1) - 1).masked_fill(attention == 0, 1)
        logits = placement.runner.run(ids, allowed[:, None], positions, [end - 1])
        next_tokens = torch.empty(rows, dtype=torch.long, device=device)
        if logits is not None:
            next_tokens.copy_(logits[:, 0].float().argmax(-1))
        dist.broadcast(next_tokens, src=last, group=placement.pp_group)
        next_tokens = torch.where(unfinished, next_tokens, torch.full_like(next_tokens, pad_id))
        ids[:, end] = next_tokens
        attention[:, end] = 1
        unfinished &= ~stopping_criteria(ids[:, : end + 1], None)
        if eos_id is not None:
            unfinished &= ~torch.isin(next_tokens, torch.tensor(eos_id, device=device).flatten())
        if not unfinished.any():
            break
    return ids[:, : end + 1]
