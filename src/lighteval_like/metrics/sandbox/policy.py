"""What a run of programs is given: the isolation level and the limits of each program."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Isolation(str, enum.Enum):
    """Isolation levels, strongest first (the package docstring and the README say what each contains)."""

    BWRAP = "bwrap"
    UNSHARE = "unshare"
    NONE = "none"

    @property
    def rank(self) -> int:
        """0 for the strongest level; larger is weaker."""
        return list(Isolation).index(self)


@dataclass(frozen=True)
class Limits:
    """Limits of one program. `memory_bytes` bounds the program's processes together where a cgroup
    applies (and each process's address space always); `max_processes` counts the processes and
    threads of the program's own uid; `work_bytes` and `work_files` cap its work folder (a tmpfs
    at the namespace levels); `cpu_s` defaults to the wall-clock timeout rounded up, plus 1."""

    memory_bytes: int = 2 * 1024**3
    file_size_bytes: int = 16 * 1024**2  # any file it writes, its stdout/stderr included
    max_processes: int = 64
    open_files: int = 128
    cpu_s: int | None = None
    work_bytes: int = 64 * 1024**2
    work_files: int = 4096
