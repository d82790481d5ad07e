"""User-facing errors: one clear line, a fix, and the exit code the CLI returns."""

from __future__ import annotations


class LightevalLikeError(Exception):
    """Base of every error the CLI reports as one line instead of a traceback."""

    exit_code = 1


class UsageError(LightevalLikeError):
    """The user asked for something malformed (bad flag, spec, model arg): exit 2."""

    exit_code = 2


class TaskSpecError(UsageError):
    """A task spec or task-list file is malformed or names an unknown task."""


class ConfigError(UsageError):
    """A config (YAML file or `k=v` flags) does not match its dataclass."""


class ModelArgsError(ConfigError):
    """`--model_args` or the model config file is malformed."""


class DatasetUnavailableError(LightevalLikeError):
    """A dataset cannot be loaded from the hub or the local mirror."""


class BadSampleError(LightevalLikeError):
    """A dataset row breaks a task's prompt function."""


class ModelLoadError(LightevalLikeError):
    """The model or tokenizer cannot be loaded."""


class CacheError(LightevalLikeError):
    """The response cache cannot be read or written (fix: delete the file or pass --no_cache)."""
