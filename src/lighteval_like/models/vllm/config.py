"""`VLLMModelConfig`: the model args of the vLLM backend (`vllm`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from lighteval_like.api.errors import ModelArgsError
from lighteval_like.models.config import BackendConfig


@dataclass
class VLLMModelConfig(BackendConfig):
    """Model arguments of the `vllm` entry point, named as in lighteval's vLLM config. Tokenisation
    args mean what they mean for `TransformersModelConfig`; the rest go to the vLLM engine."""

    seed: int = 1234
    # On CPU a fraction of host memory (unless VLLM_CPU_KVCACHE_SPACE gives the KV cache in GiB).
    gpu_memory_utilization: float = 0.8
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1  # engine replicas, each in a worker process of its own
    max_model_length: int | None = None  # None: the engine's own maximum
    swap_space: float | None = None  # GiB of CPU swap per GPU (None: vLLM's default)
    batch_size: int | None = None  # most sequences per engine step (vLLM's max_num_seqs)
    max_num_batched_tokens: int | None = None
    enforce_eager: bool | None = None  # None: True on CPU (graph capture costs more than it saves there)
    use_chat_template: bool = False
    quantization: str | None = None
    load_format: str | None = None

    DTYPE_REFUSED_BY: ClassVar[str] = " by vllm"
    KEY_ORDER: ClassVar[tuple[str, ...]] = (
        "pretrained", "revision", "dtype", "tokenizer", "subfolder", "trust_remote_code", "seed",
        "gpu_memory_utilization", "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size",
        "max_model_length", "swap_space", "batch_size", "max_num_batched_tokens", "enforce_eager", "use_chat_template",
        "add_special_tokens", "multichoice_continuations_start_space", "max_gen_toks", "quantization", "load_format",
    )

    def check_args(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ModelArgsError(f"gpu_memory_utilization={self.gpu_memory_utilization} must be in (0, 1]")
        sizes = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "max_gen_toks",
                 "max_model_length", "batch_size", "max_num_batched_tokens")
        bad = [k for k in sizes if getattr(self, k) is not None and getattr(self, k) <= 0]
        if bad:
            raise ModelArgsError(f"{', '.join(bad)} must be positive integers")
        if self.swap_space is not None and self.swap_space < 0:
            raise ModelArgsError(f"swap_space={self.swap_space} must be a number of GiB >= 0")

    def run_defaults(self) -> dict[str, Any]:
        return {"use_chat_template": self.use_chat_template, "batch_size": self.batch_size}
