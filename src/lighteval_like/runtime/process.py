"""Who computes what: data-parallel sharding of work, and the collectives the pipeline uses."""

from __future__ import annotations

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
    # `barrier` and `broadcast_from_main` then span the whole world, so they stay in step too.
    world_barrier: bool = False
    # True: this process computes by itself inside a process group, with no collective (the main
    # process's judge pass under torchrun, while the other ranks wait): see `by_itself`.
    alone: bool = False

    @property
    def _distributed(self) -> bool:
        return not self.alone and dist.is_initialized() and dist.get_world_size() > 1

    def by_itself(self) -> ProcessContext:
        """This process computing every request by itself, whatever process group is up: the
        whole shard, no collective, main as it is."""
        return ProcessContext(is_main=self.is_main, alone=True)

    @property
    def rank(self) -> int:
        """Global rank (names this process's files); the dp rank outside a process group."""
        return dist.get_rank() if dist.is_initialized() else self.dp_rank

    def shard(self, weights: Sequence[int]) -> list[int]:
        """Indices of the units (given by weight) this replica handles: contiguous runs of the
        given order with about equal total weight, so neighbours (which share prefixes) stay together."""
        if self.dp_size == 1:
            return list(range(len(weights)))
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
        out = [None] * self.dp_size if dist.get_rank() == self.gather_dst else None
        dist.gather_object(obj, out, dst=self.gather_dst, group=self.group)
        return out

    def broadcast_from_main(self, obj: Any) -> Any:
        """The main process's `obj` on every rank (the main process is global rank 0)."""
        if not self._distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.alone or not dist.is_initialized():
            return
        if self.world_barrier:
            dist.barrier()
        elif self.dp_size > 1:
            dist.barrier(group=self.group)
