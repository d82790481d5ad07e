"""User-facing errors: one clear line, a fix, and the exit code the CLI returns."""

from __future__ import annotations

ONE_LINE_CHARS = 300


def one_line(error: BaseException) -> str:
    """A library's message joined onto one line (its first line alone may stop mid-sentence, as
    transformers' '... from one of:' does), shortened past ONE_LINE_CHARS."""
    text = " ".join(str(error).split())
    return text if len(text) <= ONE_LINE_CHARS else text[:ONE_LINE_CHARS] + " ..."


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


class OutputError(LightevalLikeError):
    """The output folder cannot be written. `report`, when set, is the finished run's report,
    so the CLI prints the scores before the error line."""

    def __init__(self, message: str, report: object | None = None):
        super().__init__(message)
        self.report = report
