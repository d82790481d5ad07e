"""Running model-written programs contained (opt-in: `--allow_code_execution`)."""

from lighteval_like.execution.sandbox import (
    CRASHED,
    FAILED,
    LIMIT,
    OUTCOMES,
    PASSED,
    TIMEOUT,
    ExecutionResult,
    Isolation,
    Limits,
    available_isolations,
    detect_isolation,
    require_isolation,
    run_programs,
)

__all__ = [
    "CRASHED", "FAILED", "LIMIT", "OUTCOMES", "PASSED", "TIMEOUT", "ExecutionResult", "Isolation", "Limits",
    "available_isolations", "detect_isolation", "require_isolation", "run_programs",
]
