"""The process layout of a `distributed` run: data, tensor and pipeline parallel sizes and how the
pipeline and the process group run (the `parallelism:` block of the override config)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lighteval_like.api.errors import ConfigError

# lmms-eval's choice: long generations on big models can keep a collective waiting for hours.
DEFAULT_TIMEOUT_S = 60000


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
