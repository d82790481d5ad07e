"""`--model_args "k=v,k=v"` and `--model_config_path` (YAML) -> a backend's model config
(`TransformersModelConfig` for `accelerate`/`distributed`, `VLLMModelConfig` for `vllm`)."""

from __future__ import annotations

import difflib
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lighteval_like.api.errors import ModelArgsError
from lighteval_like.api.generation import GenerationParameters
from lighteval_like.api.typed_config import Vocabulary, build, keys_of, read_yaml, short

DTYPES = ("auto", "float32", "float16", "bfloat16", "4bit", "8bit")
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
ATTN_IMPLEMENTATIONS = ("flash_attention_2", "sdpa", "eager")


@dataclass
class TransformersModelConfig:
    """Model arguments, named as in lighteval (plus `attn_implementation`, `gguf_file`)."""

    pretrained: str
    tokenizer: str | None = None
    multichoice_continuations_start_space: bool | None = None
    subfolder: str | None = None
    revision: str = "main"
    max_gen_toks: int = 256
    max_length: int | None = None
    # lm-eval encodes without special tokens by default; so do we, to match its numbers.
    add_special_tokens: bool = False
    model_parallel: bool = False
    dtype: str = "auto"
    device: str | None = None  # default: cuda if available, else cpu
    quantization_config: dict | None = None
    trust_remote_code: bool = False
    attn_implementation: str | None = None
    gguf_file: str | None = None
    # Score requests that share a prefix together (see models/packing.py); off = one row per request.
    shared_prefix: bool = True
    # Sampling settings, token limit, seed and samples per doc of generative tasks (the user's
    # values win over a task's defaults): generation_parameters={temperature:0.2,top_p:0.95}.
    generation_parameters: GenerationParameters | None = None
    cache_dir: str | None = field(default=None, metadata={"cli": False})

    def __post_init__(self):
        self.dtype = DTYPE_ALIASES.get(str(self.dtype), str(self.dtype))
        if self.dtype not in DTYPES:
            raise ModelArgsError(f"dtype '{self.dtype}' is not supported: use one of {', '.join(DTYPES)}")
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
        _check_source(self.pretrained, self.revision)
        if self.quantization_config is not None:
            _check_quantization_keys(self.quantization_config)

    @property
    def quantized(self) -> bool:
        return self.dtype in ("4bit", "8bit") or self.quantization_config is not None

    @property
    def model_name(self) -> str:
        """Name used for the results folder: hub ids as given, local paths by their last part, GGUF files by their name."""
        if self.gguf_file:  # the folder only holds it: the file names the model
            return os.path.splitext(os.path.basename(self.gguf_file))[0]
        return _model_name(self.pretrained)


def _model_name(pretrained: str) -> str:
    path = pretrained.rstrip("/")
    return os.path.basename(path) if os.path.isdir(path) else path


def _check_source(pretrained: str, revision: str) -> None:
    if not pretrained:
        raise ModelArgsError("pretrained must name a hub id or a local model directory")
    if revision != "main" and os.path.isdir(os.path.expanduser(pretrained)):
        raise ModelArgsError(
            f"revision={revision} cannot apply to the local folder '{pretrained}' (a revision is "
            f"a hub repository's): check it out into the folder and drop revision=, or pass the hub id"
        )


VLLM_DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass
class VLLMModelConfig:
    """Model arguments of the `vllm` entry point, named as in lighteval's vLLM config. Tokenisation
    args mean what they mean for `TransformersModelConfig`; the rest go to the vLLM engine."""

    pretrained: str
    revision: str = "main"
    dtype: str = "auto"
    tokenizer: str | None = None
    subfolder: str | None = None
    trust_remote_code: bool = False
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
    add_special_tokens: bool = False
    multichoice_continuations_start_space: bool | None = None
    max_gen_toks: int = 256
    quantization: str | None = None
    load_format: str | None = None
    cache_dir: str | None = field(default=None, metadata={"cli": False})

    def __post_init__(self):
        self.dtype = DTYPE_ALIASES.get(str(self.dtype), str(self.dtype))
        if self.dtype not in VLLM_DTYPES:
            raise ModelArgsError(f"dtype '{self.dtype}' is not supported by vllm: use one of {', '.join(VLLM_DTYPES)}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ModelArgsError(f"gpu_memory_utilization={self.gpu_memory_utilization} must be in (0, 1]")
        sizes = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "max_gen_toks",
                 "max_model_length", "batch_size", "max_num_batched_tokens")
        bad = [k for k in sizes if getattr(self, k) is not None and getattr(self, k) <= 0]
        if bad:
            raise ModelArgsError(f"{', '.join(bad)} must be positive integers")
        if self.swap_space is not None and self.swap_space < 0:
            raise ModelArgsError(f"swap_space={self.swap_space} must be a number of GiB >= 0")
        _check_source(self.pretrained, self.revision)

    @property
    def model_name(self) -> str:
        """Name used for the results folder, as for the transformers backend."""
        return _model_name(self.pretrained)


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


MODEL_ARGS = Vocabulary(ModelArgsError, "model arg", text_values=True)
ModelConfig = TypeVar("ModelConfig", TransformersModelConfig, VLLMModelConfig)


def _valid_keys(cls: type = TransformersModelConfig) -> list[str]:
    return keys_of(cls)


def _bool_keys(cls: type) -> list[str]:
    """Args that may be given bare (`trust_remote_code` = `trust_remote_code=True`)."""
    hints = typing.get_type_hints(cls)
    return [k for k in _valid_keys(cls) if hints[k] is bool or bool in typing.get_args(hints[k])]


def build_config(values: dict[str, Any], cls: type[ModelConfig] = TransformersModelConfig) -> ModelConfig:
    if "pretrained" not in values and not [k for k in values if k not in _valid_keys(cls)]:
        raise ModelArgsError("model args must include pretrained=<hub id or local model directory>")
    return build(cls, values, MODEL_ARGS)


def parse_model_args(text: str, cls: type[ModelConfig] = TransformersModelConfig) -> ModelConfig:
    """Parse `k=v,k=v`; a bare key means True. Errors name the bad part and the valid keys."""
    values: dict[str, Any] = {}
    for part in _top_level_parts(str(text)):
        part = part.strip()
        if not part:
            raise ModelArgsError(f"empty entry in --model_args '{short(text, 200)}' (stray comma?): expected k=v,k=v")
        key, sep, value = part.partition("=")
        key = key.strip()
        if not key:
            raise ModelArgsError(f"entry '{short(part)}' in --model_args has no key: expected k=v")
        if key in values:
            raise ModelArgsError(f"model arg '{short(key, 40)}' is given twice in --model_args")
        bare_ok = key in _bool_keys(cls)
        if sep and not value.strip():
            raise ModelArgsError(
                f"model arg '{short(key, 40)}' has an empty value: write {short(key, 40)}=<value>"
                + (", or the bare key for True" if bare_ok else "")
            )
        if not sep and key in _valid_keys(cls) and not bare_ok:
            raise ModelArgsError(
                f"model arg '{key}' needs a value: write {key}=<value> (only true/false args may be given bare: "
                f"{', '.join(_bool_keys(cls))})"
            )
        value = value.strip()
        values[key] = _braced_mapping(key, value) if value.startswith("{") else value if sep else "True"
    return build_config(values, cls)


def _top_level_parts(text: str) -> list[str]:
    """`text` split at the commas outside braces (`generation_parameters={a:1,b:2}` is one part)."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]


def _braced_mapping(key: str, value: str) -> dict[str, str]:
    """`{k:v,k:v}` (lighteval's spelling; `k=v` also accepted) as a mapping of text values."""
    if not value.endswith("}"):
        raise ModelArgsError(f"model arg '{short(key, 40)}' opens a brace it does not close: write {key}={{k:v,k:v}}")
    mapping = {}
    for item in filter(str.strip, value[1:-1].split(",")):
        name, sep, item_value = item.replace("=", ":", 1).partition(":")
        if not sep or not name.strip():
            raise ModelArgsError(f"entry '{short(item)}' of model arg '{short(key, 40)}' is not k:v")
        mapping[name.strip()] = item_value.strip()
    return mapping


def load_model_config(path: str, cls: type[ModelConfig] = TransformersModelConfig) -> ModelConfig:
    """A YAML file: the args at top level, or under `model_parameters` (lighteval's layout)."""
    data = read_yaml(path, "model config", ModelArgsError)
    if isinstance(data, dict) and set(data) == {"model_parameters"}:
        data = data["model_parameters"]
    if not isinstance(data, dict):
        raise ModelArgsError(f"model config '{path}' must be a mapping of model args (or model_parameters: ...)")
    if "model_name" in data and "pretrained" not in data:
        data["pretrained"] = data.pop("model_name")
    try:
        return build_config(data, cls)
    except ModelArgsError as e:
        raise ModelArgsError(f"{path}: {e}") from e
