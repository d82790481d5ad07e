"""`--model_args "k=v,k=v"` and `--model_config_path` (YAML) -> a backend's model config: the
parsing every backend shares, for any `BackendConfig` subclass (the transformers backend's when
no class is named, as for `accelerate` and `distributed`)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

from lighteval_like.api.errors import ModelArgsError
from lighteval_like.api.typed_config import Vocabulary, build, keys_of, read_yaml, short
from lighteval_like.models.config import BackendConfig
from lighteval_like.models.transformers.config import TransformersModelConfig

MODEL_ARGS = Vocabulary(ModelArgsError, "model arg", text_values=True)
ModelConfig = TypeVar("ModelConfig", bound=BackendConfig)


def _valid_keys(cls: type = TransformersModelConfig) -> list[str]:
    return keys_of(cls)


def _bool_keys(cls: type) -> list[str]:
    """Args that may be given bare (`trust_remote_code` = `trust_remote_code=True`)."""
    hints = typing.get_type_hints(cls)
    return [k for k in _valid_keys(cls) if hints[k] is bool or bool in typing.get_args(hints[k])]


def build_config(values: dict[str, Any], cls: type[ModelConfig] = TransformersModelConfig) -> ModelConfig:
    needs_pretrained = cls.__dataclass_fields__["pretrained"].default is dataclasses.MISSING
    if needs_pretrained and "pretrained" not in values and not [k for k in values if k not in _valid_keys(cls)]:
        raise ModelArgsError("model args must include pretrained=<hub id or local model directory>")
    return build(cls, values, MODEL_ARGS)


def parse_model_args(text: str, cls: type[ModelConfig] = TransformersModelConfig) -> ModelConfig:
    """Parse `k=v,k=v`; a bare key means True. Errors name the bad part and the valid keys."""
    values: dict[str, Any] = {}
    for part in top_level_parts(str(text)):
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


def top_level_parts(text: str) -> list[str]:
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
