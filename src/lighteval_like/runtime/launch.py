"""The launch environments: `accelerate launch` (or one plain process) and torchrun with its
(dp, pp, tp) device mesh. Each yields the `ProcessContext` the pipeline runs under."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from lighteval_like.api.errors import UsageError
from lighteval_like.runtime.process import ProcessContext

if TYPE_CHECKING:
    from lighteval_like.runtime.parallelism import ParallelismArgs
    from lighteval_like.runtime.placement import MeshPlacement

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def accelerate_context() -> tuple[ProcessContext, str | None]:
    """Context and device under `accelerate launch` (or a single plain process)."""
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


@dataclass(frozen=True)
class TorchrunEnv:
    """Global rank and world size (multi-node safe), plus this node's local rank."""

    rank: int
    world_size: int
    local_rank: int
    nnodes: int


def launch_command(nproc: int, checkpoint_config_path: str, lighteval_config_path: str) -> str:
    return (
        f"torchrun --standalone --nnodes=1 --nproc-per-node={nproc} -m lighteval_like distributed "
        f"--checkpoint_config_path {shlex.quote(checkpoint_config_path)} "
        f"--lighteval_config_path {shlex.quote(lighteval_config_path)}"
    )


def torchrun_env(parallelism: ParallelismArgs, checkpoint_config_path: str, lighteval_config_path: str) -> TorchrunEnv:
    """The torchrun variables, checked against dp * tp * pp before anything is loaded."""
    need = parallelism.world_size
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise UsageError(
            f"`distributed` runs under torchrun ({', '.join(missing)} not set); launch it as: "
            + launch_command(need, checkpoint_config_path, lighteval_config_path)
        )
    try:
        env = TorchrunEnv(
            int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]),
            int(os.environ.get("GROUP_WORLD_SIZE", "1")),
        )
    except ValueError as e:
        raise UsageError(f"malformed torchrun environment: {e}") from e
    if env.world_size != need:
        p = parallelism
        per_node = f"--nproc-per-node={need // env.nnodes}" if need % env.nnodes == 0 else f"{need} processes in all"
        raise UsageError(
            f"WORLD_SIZE={env.world_size} but {lighteval_config_path} asks for dp*tp*pp = "
            f"{p.dp}*{p.tp}*{p.pp} = {need} processes: launch torchrun with {per_node}"
            + (f" on each of the {env.nnodes} nodes" if env.nnodes > 1 else "")
            + ", or change 'parallelism'"
        )
    return env


@dataclass
class DistributedSession:
    """The initialised process group, the (dp, pp, tp) mesh and this rank's `ProcessContext`."""

    env: TorchrunEnv
    parallelism: ParallelismArgs
    mesh: Any
    device: torch.device
    process: ProcessContext

    @classmethod
    def start(cls, parallelism: ParallelismArgs, env: TorchrunEnv, device_pref: str | None) -> DistributedSession:
        """nccl on CUDA (one GPU per local rank), gloo on CPU; ranks are torchrun's global ones."""
        from torch.distributed.device_mesh import init_device_mesh

        use_cuda = torch.cuda.is_available() and device_pref != "cpu"
        if use_cuda:
            device = torch.device("cuda", env.local_rank)
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", rank=env.rank, world_size=env.world_size,
            timeout=timedelta(seconds=parallelism.timeout_s),
            **({"device_id": device} if use_cuda else {}),
        )
        p = parallelism
        mesh = init_device_mesh(device.type, (p.dp, p.pp, p.tp), mesh_dim_names=("dp", "pp", "tp"))
        dp_group = mesh["dp"].get_group()
        process = ProcessContext(
            dp_rank=mesh["dp"].get_local_rank(), dp_size=p.dp, is_main=env.rank == 0,
            group=dp_group, gather_dst=dist.get_global_rank(dp_group, 0), world_barrier=True,
        )
        return cls(env, parallelism, mesh, device, process)

    def placement(self) -> MeshPlacement:
        from lighteval_like.runtime.placement import MeshPlacement

        p = self.parallelism
        return MeshPlacement(self.mesh, self.device, p.dp, p.pp, p.tp, p.pp_engine, p.pp_microbatches)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
