"""A uid of its own for each program (when the harness is root), and the processes of a uid.

Uids are drawn at random from 2^20 ids starting at 2^30 (or from the top of the largest range this
user namespace maps), skipping any with a process, so concurrent programs, and concurrent runs,
never share one: one program's process count cannot starve another, nor can it signal or read
another's processes or files. A uid goes back to the pool only once no process of it is left.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

SPAN = 1 << 20
PREFERRED_START = 1 << 30
_taken: set[int] = set()
_lock = threading.Lock()


def _mapped_extents() -> list[tuple[int, int]]:
    try:
        with open("/proc/self/uid_map") as f:
            return [(int(a), int(c)) for a, _, c in (line.split() for line in f if line.strip())]
    except OSError:
        return [(0, 1 << 32)]


def uid_range() -> range:
    """The ids programs are given: 2^30 .. 2^30 + 2^20 when mapped here, else the top of the
    largest mapped range (above the usual system and user ids where it can)."""
    start, count = max(_mapped_extents(), key=lambda e: e[1])
    if start <= PREFERRED_START and PREFERRED_START + SPAN <= start + count:
        return range(PREFERRED_START, PREFERRED_START + SPAN)
    low = max(start, 65536) if start + count - max(start, 65536) > 16 else start
    return range(max(low, start + count - SPAN - 2), start + count - 2)


def processes_of(uid: int) -> list[int]:
    """Pids whose real, effective, saved or filesystem uid is `uid` (read from /proc/PID/status:
    the owner of /proc/PID is root for processes that are not dumpable)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Uid:"):
                        if uid in map(int, line.split()[1:]):
                            found.append(int(entry))
                        break
        except (OSError, ValueError):
            pass
    return found


def allocate() -> int:
    """A uid no process has and no other program of this harness holds."""
    ids = uid_range()
    with _lock:
        for _ in range(1000):
            uid = random.choice(ids)
            if uid not in _taken and not processes_of(uid):
                _taken.add(uid)
                return uid
    raise RuntimeError(f"no free uid for a program in {ids.start}..{ids.stop - 1}")


def release(uid: int) -> None:
    with _lock:
        _taken.discard(uid)


def kill_all(pids_of, deadline_s: float = 5.0) -> list[int]:
    """SIGKILL every pid that `pids_of()` lists until it lists none; the survivors at the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        pids = pids_of()
        if not pids or time.monotonic() > end:
            return pids
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.005)


def count_tasks(uid: int) -> int:
    """Processes and threads of `uid` (what RLIMIT_NPROC counts)."""
    total = 0
    for pid in processes_of(uid):
        try:
            total += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            pass
    return total
