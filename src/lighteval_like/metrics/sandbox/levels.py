"""Which isolation levels work on this machine (each probed once by running a program), the one
to use, and what a level contains here (recorded in the results' `config_general`)."""

from __future__ import annotations

import functools
import os
import sys

import lighteval_like.metrics.sandbox.cgroups as cgroups
import lighteval_like.metrics.sandbox.execute as execute
import lighteval_like.metrics.sandbox.launch as launch
import lighteval_like.metrics.sandbox.runner as runner
from lighteval_like.api.errors import UsageError
from lighteval_like.metrics.sandbox.policy import Isolation, Limits

PROBE = "import os, socket\nassert os.path.samefile(os.getcwd(), os.environ['HOME'])\n"


def _precondition(level: Isolation) -> str | None:
    if not sys.platform.startswith("linux"):
        return "needs Linux"
    missing = launch.missing_tools(level)
    if missing:
        return "missing " + ", ".join(missing)
    if level is Isolation.NONE and not launch.is_root():
        return "needs the harness to run as root, to give each program a uid of its own"
    if level is Isolation.NONE and any(runner.closed_ancestor(p) for p in launch.interpreter_prefixes()):
        return f"the interpreter ({launch.interpreter()}) is in a folder other users cannot reach"
    return None


def probe(level: Isolation) -> str | None:
    """Run a trivial program at `level` and check what it sees; None when it works, else why not
    (once per level and interpreter)."""
    return _probe(level, launch.interpreter())


@functools.cache
def _probe(level: Isolation, interpreter: str) -> str | None:
    why = _precondition(level)
    if why is not None:
        return why
    check = PROBE + ("assert os.getuid() != 0\n" if launch.is_root() else "")
    if level is not Isolation.NONE:  # a network namespace of its own: loopback only
        check += "assert [n for _, n in socket.if_nameindex()] == ['lo']\n"
    (res,) = execute.run_all([check], 30.0, 1, level, Limits())
    if not res.passed:
        return f"probe {res.outcome}: {res.output_tail.strip()[-300:] or res.detail}"
    return None


def available_isolations() -> list[Isolation]:
    """The levels that work on this machine, strongest first (probed once, then cached)."""
    return [level for level in Isolation if probe(level) is None]


def detect_isolation() -> Isolation:
    """The strongest isolation level that works here (Isolation.NONE at worst)."""
    levels = available_isolations()
    return levels[0] if levels else Isolation.NONE


def require_isolation(allow_weaker: bool = False, minimum: Isolation = Isolation.BWRAP) -> Isolation:
    """The level to run programs at, or a UsageError when the best one here is weaker than
    `minimum` (full isolation by default) and the user did not allow weaker isolation."""
    levels = available_isolations()
    if not levels:
        raise UsageError("no isolation level for running generated code works here ("
                         + "; ".join(f"{lv.value}: {probe(lv)}" for lv in Isolation)
                         + "); install bubblewrap (apt-get install bubblewrap)")
    best = levels[0]
    if best.rank > minimum.rank and not allow_weaker:
        raise UsageError(
            f"running generated code needs '{minimum.value}' isolation, which is not available here "
            f"({probe(minimum)}); the best available is '{best.value}'. Install bubblewrap (apt-get install "
            f"bubblewrap) or pass the weaker-isolation flag to accept '{best.value}'."
        )
    return best


def _seen(level: Isolation) -> str:
    if level is Isolation.BWRAP:
        return "the interpreter, its standard library and the work folder (no home, project, data folder or /run)"
    if level is Isolation.UNSHARE:
        return ("the host's files as an unprivileged user sees them; private empty /tmp, /var/tmp, /dev/shm, "
                "/run and /proc; hidden: " + ", ".join(launch.hidden_dirs()))
    return "the host's files as an unprivileged user sees them, /proc included"


def _user(level: Isolation) -> str:
    if launch.is_root():
        return "a uid of its own per program (never root)"
    if level is Isolation.UNSHARE:
        return "root of its own user namespace, without capabilities (the harness's user outside it)"
    return "the harness's user"


def describe(level: Isolation, limits: Limits | None = None) -> dict:
    """What programs run at `level` get on this machine: who they run as, their limits, what they see."""
    lim, version = limits or Limits(), cgroups.version()
    namespaced = level is not Isolation.NONE
    memory = (f"{lim.memory_bytes} bytes for the program's processes together (cgroup v{version})" if version
              else f"{lim.memory_bytes} bytes of address space per process (no cgroup can be made here)")
    return {
        "isolation": level.value,
        "interpreter": launch.interpreter(),
        "user": _user(level),
        "memory": memory,
        "processes": f"{lim.max_processes} per program" + (" (own uid)" if launch.is_root() else ""),
        "work_folder": (f"tmpfs of {lim.work_bytes} bytes and {lim.work_files} files" if launch.runner_mounts_work(level)
                        else f"tmpfs of {lim.work_bytes} bytes" if namespaced else "on disk, in a private folder, not capped"),
        "visible": _seen(level),
        "network": "none (own namespace)" if namespaced else "the host's",
        "proc": ("not mounted" if level is Isolation.BWRAP else "an empty folder" if namespaced else "the host's")
        + ("; no file below it readable (Landlock)" if runner.landlock_abi() else ""),
        "seccomp": ("no user namespace, keyring, ptrace or bpf" if runner.seccomp_filter(os.uname().machine)
                    else "none (unknown architecture)"),
        "cpu_s": lim.cpu_s, "file_size_bytes": lim.file_size_bytes, "open_files": lim.open_files,
    }
