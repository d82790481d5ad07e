"""`TransformersModelConfig`: the model args of the transformers backend (`accelerate`, `distributed`)."""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from lighteval_like.api.errors import ModelArgsError
from lighteval_like.api.generation import GenerationParameters
from lighteval_like.api.typed_config import short
from lighteval_like.models.config import BackendConfig

ATTN_IMPLEMENTATIONS = ("flash_attention_2", "sdpa", "eager")
IMAGE_PIPELINES = ("chat", "simple")


@dataclass
class TransformersModelConfig(BackendConfig):
    """Model arguments, named as in lighteval (plus `attn_implementation`, `gguf_file`)."""

    max_length: int | None = None
    model_parallel: bool = False
    device: str | None = None  # default: cuda if available, else cpu
    quantization_config: dict | None = None
    attn_implementation: str | None = None
    gguf_file: str | None = None
    # Score requests that share a prefix together (see models/packing.py); off = one row per request.
    shared_prefix: bool = True
    # Sampling settings, token limit, seed and samples per doc of generative tasks (the user's
    # values win over a task's defaults): generation_parameters={temperature:0.2,top_p:0.95}.
    generation_parameters: GenerationParameters | None = None
    # Vision-language models: where the weights go (lmms-eval's name: auto = model_parallel, else
    # a device), the pixel range images are resized into, and lmms-eval's image preparation to
    # reproduce: chat (its qwen2_5_vl chat class, the default) or simple (its --force_simple class).
    device_map: str | None = None
    min_pixels: int = 256 * 28 * 28
    max_pixels: int = 1605632
    image_pipeline: str = "chat"

    DTYPES: ClassVar[tuple[str, ...]] = ("auto", "float32", "float16", "bfloat16", "4bit", "8bit")
    KEY_ORDER: ClassVar[tuple[str, ...]] = (
        "pretrained", "tokenizer", "multichoice_continuations_start_space", "subfolder", "revision", "max_gen_toks",
        "max_length", "add_special_tokens", "model_parallel", "dtype", "device", "quantization_config",
        "trust_remote_code", "attn_implementation", "gguf_file", "shared_prefix", "generation_parameters",
        "device_map", "min_pixels", "max_pixels", "image_pipeline",
    )

    def __post_init__(self):
        super().__post_init__()
        if self.quantization_config is not None:
            _check_quantization_keys(self.quantization_config)

    def check_args(self) -> None:
        self._check_vision_args()
        if self.attn_implementation in ("None", "none", ""):
            self.attn_implementation = None
        if self.attn_implementation is not None and self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ModelArgsError(
                f"attn_implementation '{self.attn_implementation}' is not allowed: use one of "
                f"None, {', '.join(ATTN_IMPLEMENTATIONS)}"
            )
        if self.device is not None and not (
            self.device in ("cpu", "cuda", "mps") or re.fullmatch(r"cuda:[0-9]{1,4}", self.device)
        ):
            raise ModelArgsError(f"device '{self.device}' is not valid: use cpu, cuda, cuda:N or mps")
        if self.max_gen_toks <= 0 or (self.max_length is not None and self.max_length <= 0):
            raise ModelArgsError("max_gen_toks and max_length must be positive integers")

    def _check_vision_args(self) -> None:
        if self.image_pipeline not in IMAGE_PIPELINES:
            raise ModelArgsError(f"image_pipeline '{self.image_pipeline}' is not one of {', '.join(IMAGE_PIPELINES)}")
        if self.min_pixels <= 0 or self.max_pixels < self.min_pixels:
            raise ModelArgsError(f"max_pixels ({self.max_pixels}) is below min_pixels ({self.min_pixels}): "
                                 "give max_pixels >= min_pixels > 0")
        if self.device_map == "auto":
            self.model_parallel = True
        elif self.device_map:
            self.device = self.device_map

    def run_defaults(self) -> dict[str, Any]:
        return {"generation": self.generation_parameters}

    @property
    def quantized(self) -> bool:
        return self.dtype in ("4bit", "8bit") or self.quantization_config is not None

    @property
    def model_name(self) -> str:
        """Name used for the results folder: hub ids as given, local paths by their last part, GGUF files by their name."""
        if self.gguf_file:  # the folder only holds it: the file names the model
            return os.path.splitext(os.path.basename(self.gguf_file))[0]
        return super().model_name


def _check_quantization_keys(options: dict) -> None:
    """BitsAndBytesConfig keeps unknown keys without a word: a typo would quietly load other weights."""
    import inspect

    from transformers import BitsAndBytesConfig

    known = [k for k in inspect.signature(BitsAndBytesConfig.__init__).parameters if k not in ("self", "kwargs")]
    unknown = [short(k, 40) for k in options if k not in known]
    if unknown:
        close = [m for k in unknown for m in difflib.get_close_matches(k, known, n=1)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelArgsError(
            f"unknown quantization_config key(s) {', '.join(unknown)}{hint}: bitsandbytes accepts {', '.join(known)}"
        )
