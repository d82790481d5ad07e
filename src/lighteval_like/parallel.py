"""Who computes what: data-parallel sharding of requests and gathering of responses.

The pipeline only sees a `ProcessContext`; the accelerate entry point builds one from
Accelerate's state, the distributed entry point from its (dp, tp, pp) mesh.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist


@dataclass
class ProcessContext:
    """`dp_rank`/`dp_size` pick the shard; `gather` brings shards to the main process.

    `group` is the process group spanning the data-parallel replicas (None = the world);
    `gather_dst` the global rank that receives. `is_main` writes results.
    """

    dp_rank: int = 0
    dp_size: int = 1
    is_main: bool = True
    group: Any = None
    gather_dst: int = 0
    # True when ranks outside the data-parallel group exist (tensor/pipeline parallelism):
    # `barrier` then waits for the whole world, so they stay in step too.
    world_barrier: bool = False

    def shard(self, items: Sequence, weights: Sequence[int]) -> list[int]:
        """Indices of `items` this replica handles: contiguous runs of the given order with
        about equal total weight, so neighbours (which share prefixes) stay together."""
        if self.dp_size == 1:
            return list(range(len(items)))
        total = sum(weights) or 1
        bounds, acc = [], 0
        for w in weights:
            bounds.append(min(self.dp_size - 1, acc * self.dp_size // total))
            acc += w
        return [i for i, b in enumerate(bounds) if b == self.dp_rank]

    def gather(self, obj: Any) -> list | None:
        """Every replica's `obj`, in dp-rank order, on the main process (None elsewhere)."""
        if self.dp_size == 1 or not dist.is_initialized():
            return [obj]
        my_rank = dist.get_rank()
        out = [None] * self.dp_size if my_rank == self.gather_dst else None
        dist.gather_object(obj, out, dst=self.gather_dst, group=self.group)
        return out

    def barrier(self) -> None:
        if not dist.is_initialized():
            return
        if self.world_barrier:
            dist.barrier()
        elif self.dp_size > 1:
            dist.barrier(group=self.group)


def accelerate_context() -> tuple[ProcessContext, str | None]:
    """Context and device under `accelerate launch` (or a single plain process)."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # Launched as several ranks on a machine without CUDA (`accelerate launch --multi_gpu` on
    # CPU), PartialState() finds no accelerator backend and silently makes every rank a lone
    # process: each would score every request and write the results. Ask for CPU (gloo) ranks.
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or (launched and not torch.cuda.is_available())
    state = PartialState(cpu=cpu)
    device = str(state.device) if state.num_processes > 1 else None
    return ProcessContext(state.process_index, state.num_processes, state.is_main_process), device
