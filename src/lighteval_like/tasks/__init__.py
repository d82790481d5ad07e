"""Tasks are data: `TaskConfig` rows in a table plus the prompt functions they name."""

from lighteval_like.api.doc import Doc
from lighteval_like.tasks.config import RequestType, TaskConfig, TaskGroup
from lighteval_like.tasks.family import TaskFamily, parse_members

__all__ = ["Doc", "RequestType", "TaskConfig", "TaskFamily", "TaskGroup", "parse_members"]
