"""A cgroup for each program: memory of all its processes together, and their number.

cgroup v2 is used where this process may make child groups with the memory and pids
controllers; else cgroup v1's memory and pids hierarchies (both writable, as root); else none,
and only the per-process limits apply (`describe` says which). Each program's group sits below
the harness's own group, so the harness's limits still bound it.
"""

from __future__ import annotations

import functools
import itertools
import os
from dataclasses import dataclass

_names = itertools.count()


def _mounts() -> dict[str, str]:
    """{'v2': mount point, 'memory': v1 mount point, 'pids': v1 mount point} as found here."""
    found: dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, options = fields[sep + 1], fields[sep + 3].split(",")
            if fstype == "cgroup2":
                found.setdefault("v2", fields[4])
            elif fstype == "cgroup":
                for controller in ("memory", "pids"):
                    if controller in options:
                        found.setdefault(controller, fields[4])
    return found


def _own_paths() -> dict[str, str]:
    """This process's group in each hierarchy: {'v2': path, 'memory': path, 'pids': path}."""
    paths = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
            if hierarchy == "0" and not controllers:
                paths["v2"] = path
            for controller in controllers.split(","):
                if controller in ("memory", "pids"):
                    paths[controller] = path
    return paths


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


@dataclass
class ProgramGroup:
    """One program's group(s): one folder under v2, or one under each v1 hierarchy."""

    folders: list[str]
    version: int

    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.folders]

    def pids(self) -> list[int]:
        found: set[int] = set()
        for path in self.procs_files():
            try:
                with open(path) as f:
                    found.update(int(x) for x in f.read().split())
            except OSError:
                pass
        return sorted(found)

    def out_of_memory(self) -> bool:
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            with open(os.path.join(self.folders[0], name)) as f:
                counts = dict(line.split() for line in f if len(line.split()) == 2)
        except OSError:
            return False
        return int(counts.get("oom_kill", 0)) > 0

    def remove(self) -> str:
        """'' once every folder is gone, else why not."""
        errors = []
        for folder in self.folders:
            try:
                os.rmdir(folder)
            except OSError as e:
                errors.append(f"cgroup {folder}: {e.strerror}")
        return "; ".join(errors)


def _make(parent: str, name: str, settings: dict[str, str]) -> str:
    folder = os.path.join(parent, name)
    os.mkdir(folder)
    try:
        for file, value in settings.items():
            path = os.path.join(folder, file.rstrip("?"))
            if not file.endswith("?") or os.path.exists(path):  # "?": only where the kernel has it
                _write(path, value)
    except OSError:
        os.rmdir(folder)
        raise
    return folder


def _create(version: int, memory_bytes: int, max_processes: int) -> ProgramGroup:
    mounts, own = _mounts(), _own_paths()
    name = f"lighteval_like_{os.getpid()}_{next(_names)}"
    if version == 2:
        parent = mounts["v2"] + own["v2"].rstrip("/")
        settings = {"memory.max": str(memory_bytes), "memory.swap.max?": "0", "pids.max": str(max_processes)}
        return ProgramGroup([_make(parent, name, settings)], 2)
    memory = _make(mounts["memory"] + own["memory"].rstrip("/"), name,
                   {"memory.limit_in_bytes": str(memory_bytes), "memory.memsw.limit_in_bytes?": str(memory_bytes)})
    try:
        pids = _make(mounts["pids"] + own["pids"].rstrip("/"), name, {"pids.max": str(max_processes)})
    except OSError:
        os.rmdir(memory)
        raise
    return ProgramGroup([memory, pids], 1)


@functools.cache
def version() -> int | None:
    """2 or 1: the cgroup version whose groups this process can make and limit here; None: neither."""
    for candidate in (2, 1):
        try:
            _create(candidate, 1 << 30, 64).remove()
            return candidate
        except (OSError, KeyError, ValueError, StopIteration):
            continue
    return None


def create(memory_bytes: int, max_processes: int) -> ProgramGroup | None:
    """A new group with these limits, or None where no cgroup can be made here."""
    v = version()
    return None if v is None else _create(v, memory_bytes, max_processes)
