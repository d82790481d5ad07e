"""The `distributed` (alias `nanotron`) entry point's parts: its two YAML configs, the torchrun
environment, the (dp, pp, tp) device mesh, and fail-fast error handling across ranks.

The evaluation itself is the shared `Pipeline`; this module only decides which process does
what (`ProcessContext`) and loads the model split over the mesh (models/parallel_model.py).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import time
import traceback
import types
import typing
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import yaml

from lighteval_like.errors import ConfigError, LightevalLikeError, UsageError
from lighteval_like.models.model_args import TransformersModelConfig, load_model_config
from lighteval_like.parallel import ProcessContext

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# lmms-eval's choice: long generations on big models can keep a collective waiting for hours.
DEFAULT_TIMEOUT_S = 60000


# ------------------------------------------------------------------ override config
@dataclass
class LoggingArgs:
    """Where results go (named as lighteval's nanotron override)."""

    output_dir: str = "results"
    save_details: bool = False
    cache_dir: str | None = None  # response cache (resume); None = $LIGHTEVAL_LIKE_CACHE or ~/.cache
    no_cache: bool = False


@dataclass
class ParallelismArgs:
    """Process layout: WORLD_SIZE must equal dp * tp * pp."""

    dp: int = 1
    tp: int = 1
    pp: int = 1
    pp_engine: Literal["afab", "1f1b"] = "afab"  # afab = all forward then all backward (GPipe)
    tp_mode: Literal["ALL_REDUCE"] = "ALL_REDUCE"
    pp_microbatches: int | None = None  # micro-batches per pipelined batch; None = 2 * pp
    timeout_s: int = DEFAULT_TIMEOUT_S  # process-group timeout (a collective waiting longer fails)

    def __post_init__(self):
        for name in ("dp", "tp", "pp", "timeout_s"):
            if getattr(self, name) < 1:
                raise ConfigError(f"key 'parallelism.{name}' must be >= 1, got {getattr(self, name)}")
        if self.pp_microbatches is not None and self.pp_microbatches < 1:
            raise ConfigError(f"key 'parallelism.pp_microbatches' must be >= 1, got {self.pp_microbatches}")

    @property
    def world_size(self) -> int:
        return self.dp * self.tp * self.pp


@dataclass
class TasksArgs:
    """What to evaluate; `tasks` takes the same specs or task-list file as `accelerate --tasks`."""

    tasks: str
    custom_tasks: str | None = None
    max_samples: int | None = None
    num_fewshot_seeds: int | None = None  # None = 1
    dataset_loading_processes: int = 1
    multichoice_continuations_start_space: bool | None = None

    def __post_init__(self):
        for name in ("max_samples", "num_fewshot_seeds", "dataset_loading_processes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"key 'tasks.{name}' must be >= 1, got {value}")


@dataclass
class GenerationArgs:
    """Greedy decoding only; `max_new_tokens` caps tasks that set no generation size."""

    max_new_tokens: int | None = None

    def __post_init__(self):
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"key 'generation.max_new_tokens' must be >= 1, got {self.max_new_tokens}")


@dataclass
class LightevalOverrideConfig:
    """`--lighteval_config_path`: everything but the model."""

    tasks: TasksArgs
    batch_size: int | None = None  # rows per forward on every rank; None = automatic token budget
    generation: GenerationArgs | None = None
    logging: LoggingArgs = field(default_factory=LoggingArgs)
    parallelism: ParallelismArgs = field(default_factory=ParallelismArgs)

    def __post_init__(self):
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"key 'batch_size' must be >= 1 or null, got {self.batch_size}")


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation))


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """`value` checked against `annotation` (scalars, Optional, Literal, nested dataclasses)."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"key '{key}' must not be null")
    for option in options:
        if option is type(None):
            continue
        if dataclasses.is_dataclass(option):
            if isinstance(value, dict):
                return _build(option, value, f"{key}.")
        elif typing.get_origin(option) is Literal:
            if value in typing.get_args(option):
                return value
        elif option is bool:
            if isinstance(value, bool):
                return value
        elif option is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif option is str:
            if isinstance(value, str):
                return value
    wanted = " or ".join(_type_name(o) for o in options if o is not type(None))
    if any(dataclasses.is_dataclass(o) for o in options):
        wanted = "a mapping"
    raise ConfigError(f"key '{key}' must be {wanted}, got {type(value).__name__} {value!r}")


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}' (valid: {', '.join(prefix + n for n in fields)})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], prefix + name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key '{prefix}{name}'")
    return cls(**kwargs)


def _read_yaml(path: str, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"cannot read {what} '{path}': {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} '{path}' is not valid YAML: {str(e).splitlines()[0]}") from e


def load_override_config(path: str) -> LightevalOverrideConfig:
    """Parse and validate `--lighteval_config_path`; errors name the key and the file."""
    data = _read_yaml(path, "lighteval config")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping with at least 'tasks: {{tasks: ...}}'")
    try:
        return _build(LightevalOverrideConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def load_checkpoint_config(path: str) -> TransformersModelConfig:
    """`--checkpoint_config_path`: the model args of `accelerate --model_config_path`
    (at top level or under `model_parameters`), validated by the same code."""
    return load_model_config(path)


# --------------------------------------------------------------------- torchrun
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


# ------------------------------------------------------------------ the session
@dataclass
class DistributedSession:
    """The initialised process group, the (dp, pp, tp) mesh and this rank's `ProcessContext`."""

    env: TorchrunEnv
    parallelism: ParallelismArgs
    mesh: Any
    device: Any
    process: ProcessContext

    @classmethod
    def start(cls, parallelism: ParallelismArgs, env: TorchrunEnv, device_pref: str | None) -> DistributedSession:
        """nccl on CUDA (one GPU per local rank), gloo on CPU; ranks are torchrun's global ones."""
        import torch
        import torch.distributed as dist
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
        dp_mesh = mesh["dp"]
        dp_group = dp_mesh.get_group()
        process = ProcessContext(
            dp_rank=dp_mesh.get_local_rank(), dp_size=p.dp, is_main=env.rank == 0,
            group=dp_group, gather_dst=dist.get_global_rank(dp_group, 0), world_barrier=True,
        )
        return cls(env, parallelism, mesh, device, process)

    def layout(self):
        from lighteval_like.models.parallel_model import ParallelLayout

        p = self.parallelism
        return ParallelLayout(self.mesh, self.device, p.dp, p.pp, p.tp, p.pp_engine, p.pp_microbatches)

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _is_peer_failure(error: BaseException) -> bool:
    """A collective failed because another rank is gone (gloo reports it as a RuntimeError)."""
    import torch.distributed as dist

    text = str(error)
    return isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError) and "/gloo/transport/" in text and "peer" in text.lower()
    )


# How long a rank that only lost contact with a peer waits before leaving: long enough for
# torchrun's agent (polling every 0.1 s) to see the failing rank exit first and stop this one.
PEER_FAILURE_GRACE_S = 10.0


def fail_rank(error: BaseException, env: TorchrunEnv, debug: bool = False) -> typing.NoReturn:
    """Report this rank's error and leave without waiting on any collective.

    os._exit skips interpreter teardown (which could block on the process group); torchrun's
    agent sees the exit and stops the other ranks, and a peer blocked in a collective with
    this rank fails as its connection closes. The error is also written to torchrun's error
    file, so its final summary names this rank and message. A rank failing only because a
    peer is gone writes no error file and waits a moment: torchrun names the failure with the
    earliest timestamp (whole seconds, ties to the lowest rank) as the root cause, and that
    must be the peer's own error, not this echo of it.
    """
    where = f"rank {env.rank}/{env.world_size}"
    peer_failure = _is_peer_failure(error)
    if debug:
        traceback.print_exception(error)
    if isinstance(error, LightevalLikeError):
        code, message = error.exit_code, str(error)
    elif isinstance(error, KeyboardInterrupt):
        code, message = 130, "interrupted"
    elif peer_failure:
        code = 1
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        message = f"lost contact with another rank ({first}); the first failing rank's error is the cause"
    else:
        code, message = 1, f"{type(error).__name__}: {error}"
        if not debug:
            traceback.print_exception(error)
    print(f"lighteval-like: error ({where}): {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    if peer_failure:
        time.sleep(PEER_FAILURE_GRACE_S)
        os._exit(code)
    try:
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        ErrorHandler().record_exception(error)
    except Exception:  # the report above is what matters; the error file is a courtesy
        pass
    os._exit(code)
