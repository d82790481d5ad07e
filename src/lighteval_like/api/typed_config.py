"""Typed configs from mappings (YAML files, `k=v` flags): the one YAML reader and the one
coercer that turns a mapping into a (nested) dataclass, with errors naming the key."""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from lighteval_like.api.errors import ConfigError


def short(raw: Any, limit: int = 60) -> str:
    """A user value as shown in an error: one line, at most `limit` characters."""
    text = repr(raw) if not isinstance(raw, str) else raw
    text = " ".join(text.splitlines())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation))


@dataclass(frozen=True)
class Vocabulary:
    """How errors name keys: `model arg 'x'` for model arguments, `key 'a.b'` for the override."""

    error: type[ConfigError]
    noun: str  # "model arg", "key"
    text_values: bool  # values may be strings to parse ("true", "12"), as on a command line

    def unknown(self, keys: list[str], valid: list[str]) -> str:
        if self.text_values:
            close = [m for k in keys for m in difflib.get_close_matches(k, valid, n=1)]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            return f"unknown {self.noun}(s) {', '.join(keys)}{hint}: valid ones are {', '.join(valid)}"
        return f"unknown {self.noun} '{keys[0]}' (valid: {', '.join(valid)})"

    def wrong_type(self, key: str, value: Any, wanted: str) -> str:
        if self.text_values:
            return f"{self.noun} '{key}={short(value)}' has the wrong type: expected {wanted}"
        return f"{self.noun} '{key}' must be {wanted}, got {type(value).__name__} {value!r}"

    def null(self, key: str) -> str:
        return f"{self.noun} '{key}' cannot be None" if self.text_values else f"{self.noun} '{key}' must not be null"


def _is_null(value: Any, vocabulary: Vocabulary) -> bool:
    return value is None or (vocabulary.text_values and isinstance(value, str) and value in ("None", "none", "null"))


def _accept(value: Any, option: Any, vocabulary: Vocabulary) -> tuple[bool, Any]:
    """(True, value as `option`) when `value` is of type `option` (or, for text, parses as it)."""
    text = vocabulary.text_values and isinstance(value, str)
    if typing.get_origin(option) is Literal:
        return value in typing.get_args(option), value
    if option is bool:
        if isinstance(value, bool):
            return True, value
        if text and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return True, value.lower() in ("true", "1", "yes")
    elif option is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value
        if text and re.fullmatch(r"\s*-?[0-9]{1,18}\s*", value):  # not '²', '--5', 10**5000
            return True, int(value)
    elif option is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if text and re.fullmatch(r"\s*-?([0-9]{1,18}(\.[0-9]*)?|\.[0-9]+)([eE]-?[0-9]{1,3})?\s*", value):
            return True, float(value)
    elif option is str:
        if isinstance(value, str):
            return True, value
        if vocabulary.text_values and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, str(value)
    elif option is dict:
        return isinstance(value, dict), value
    return False, None


def coerce(value: Any, annotation: Any, key: str, vocabulary: Vocabulary) -> Any:
    """`value` checked against `annotation` (scalars, Optional, Literal, dict, nested dataclasses)."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if _is_null(value, vocabulary):
        if type(None) in options:
            return None
        raise vocabulary.error(vocabulary.null(key))
    for option in options:
        if dataclasses.is_dataclass(option):
            if isinstance(value, dict):
                return build(option, value, vocabulary, f"{key}.")
            continue
        ok, converted = _accept(value, option, vocabulary)
        if ok:
            return converted
    wanted = " or ".join(_type_name(o) for o in options if o is not type(None))
    if any(dataclasses.is_dataclass(o) for o in options):
        wanted = "a mapping"
    raise vocabulary.error(vocabulary.wrong_type(key, value, wanted))


def keys_of(cls: type) -> list[str]:
    """The keys a user may set (fields marked `metadata={"cli": False}` are internal), in the
    order of the class's `KEY_ORDER` where it names one (a subclass placing inherited keys among
    its own; keys it does not name follow), else in the order of its fields."""
    keys = [f.name for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]
    order = getattr(cls, "KEY_ORDER", ())
    return sorted(keys, key=lambda k: order.index(k) if k in order else len(order))


def build(cls: type, data: dict, vocabulary: Vocabulary, prefix: str = "") -> Any:
    """`cls(**data)` with every key known and every value of its field's type."""
    valid = keys_of(cls)
    unknown = [short(prefix + str(k), 40) for k in data if k not in valid]
    if unknown:
        raise vocabulary.error(vocabulary.unknown(unknown, [prefix + n for n in valid]))
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = coerce(data[f.name], hints[f.name], prefix + f.name, vocabulary)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise vocabulary.error(f"missing required {vocabulary.noun} '{prefix}{f.name}'")
    return cls(**kwargs)


def read_yaml(path: str, what: str, error: type[ConfigError]) -> Any:
    """The parsed file; unreadable or invalid YAML is one `error` line naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except OSError as e:
        raise error(f"cannot read {what} '{path}': {e.strerror}") from e
    except (yaml.YAMLError, ValueError) as e:  # ValueError: a bad date or non-UTF-8 bytes
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise error(f"{what} '{path}' is not valid YAML: {first}") from e
