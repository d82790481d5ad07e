"""Tasks are data: `TaskConfig` rows in a table plus the prompt functions they name."""

from lighteval_like.tasks.config import Doc, RequestType, TaskConfig

__all__ = ["Doc", "RequestType", "TaskConfig"]
