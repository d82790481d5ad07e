"""The user's consent to run the code a model writes, asked before anything loads."""

from __future__ import annotations

from lighteval_like.errors import UsageError
from lighteval_like.sandbox.levels import require_isolation
from lighteval_like.sandbox.policy import Isolation


def permit_code_execution(tasks: list, allowed: bool, allow_weaker: bool) -> Isolation | None:
    """Before anything loads: the isolation level for the given tasks' programs (None when no
    task runs code), or one line saying what to pass when the user has not opted in."""
    from lighteval_like.metrics import resolve_metrics

    running = [t.config.full_name for t in tasks if any(m.executes_code for m in resolve_metrics(t.config))]
    if not running:
        return None
    if not allowed:
        raise UsageError(
            f"{', '.join(running)} run{'s' if len(running) == 1 else ''} the code the model writes: pass "
            "--allow_code_execution to allow it (each program runs sandboxed; see the README)"
        )
    return require_isolation(allow_weaker)
