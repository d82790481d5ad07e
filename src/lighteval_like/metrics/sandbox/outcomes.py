"""What happened to one program: its outcome, told from the pass signal, the exit status and the limits."""

from __future__ import annotations

import signal
from dataclasses import dataclass

from lighteval_like.metrics.sandbox.policy import Isolation, Limits

PASSED, FAILED, TIMEOUT, CRASHED, LIMIT = "passed", "failed", "timeout", "crashed", "limit"
OUTCOMES = (PASSED, FAILED, TIMEOUT, CRASHED, LIMIT)


@dataclass
class ExecutionResult:
    """One program's result. `outcome` is one of OUTCOMES:

    passed (its code ran to the end: the runner's pass signal came back), failed (it ended before:
    an exception, or an exit of any status), timeout (wall clock reached, everything killed),
    crashed (killed by a signal other than a limit's), limit (CPU time, memory, file or output
    size); `detail` says which limit, signal or exit. `returncode` is the exit status (negative:
    killed by that signal), None when killed at the timeout. `cleanup` is '' when everything of the
    program was gone and removed afterwards, else what was left and why.
    """

    outcome: str
    returncode: int | None
    duration_s: float
    output_tail: str
    detail: str = ""
    isolation: str = ""
    cleanup: str = ""

    @property
    def passed(self) -> bool:
        return self.outcome == PASSED


def _signal_of(returncode: int, level: Isolation) -> int | None:
    if returncode < 0:
        return -returncode
    if level is not Isolation.NONE and 128 < returncode < 128 + signal.NSIG:
        return returncode - 128  # bwrap and sh report a signal death as 128 + signal
    return None


def _signal_outcome(sig: int) -> tuple[str, str]:
    if sig == signal.SIGXCPU:
        return LIMIT, "cpu time"
    if sig == signal.SIGXFSZ:
        return LIMIT, "file size"
    if sig == signal.SIGKILL:
        return LIMIT, "killed (SIGKILL: cpu time hard limit or out of memory)"
    return CRASHED, f"signal {signal.Signals(sig).name}" if sig in signal.valid_signals() else f"signal {sig}"


def classify(passed: bool, timed_out: bool, returncode: int | None, out_of_memory: bool, output_bytes: int,
             tail: str, level: Isolation, limits: Limits) -> tuple[str, str]:
    """(outcome, detail). Only the pass signal passes: an exit status of 0 is an early end."""
    if passed:
        return PASSED, ""
    if timed_out or returncode is None:
        return TIMEOUT, "wall-clock timeout"
    if out_of_memory:
        return LIMIT, "memory (the program's processes together)"
    sig = _signal_of(returncode, level)
    if sig is not None:
        return _signal_outcome(sig)
    if output_bytes >= limits.file_size_bytes:
        return LIMIT, "output size"
    if tail.rstrip().rsplit("\n", 1)[-1].startswith("MemoryError"):
        return LIMIT, "memory"
    if returncode == 0:
        return FAILED, "ended before its last line (exit status 0, no pass signal)"
    return FAILED, f"exit status {returncode}"
