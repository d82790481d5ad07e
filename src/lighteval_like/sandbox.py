"""Run untrusted programs (model-written code) contained, in parallel, off the harness's process.

Each program runs as its own subprocess tree:

- in a fresh empty temporary directory, removed afterwards, with a scrubbed environment
  (no variable of the harness's: no tokens, no keys);
- under resource limits set with util-linux `prlimit` (CPU time, address space, file size,
  which also caps its output, processes, open files), in its own session and process group,
  with `setpriv --no-new-privs` and, when the harness runs as root, no capabilities and, where
  `nobody` can reach the interpreter (always under bwrap), as `nobody` (root ignores the
  process limit);
- behind a wall-clock timeout after which the whole tree is killed;
- in the strongest isolation the machine allows (`detect_isolation`):

  `bwrap`   bubblewrap: the filesystem read-only except the work directory (home directories and
            /tmp replaced by empty read-only tmpfs, the interpreter bound back), its own network
            (loopback only, nothing listening), pid, ipc and uts namespaces. A pid namespace dies
            with its init, so no process of the program outlives the run (setsid, double fork).
  `unshare` util-linux unshare: own network, pid (with its own /proc), ipc, uts and mount
            namespaces; the filesystem stays writable wherever the program's user may write.
  `none`    limits, scrubbed environment, process group and temporary directory only: a program
            that calls setsid can outlive the run, and it can write where its user can.

The harness only reads back the exit status and the tail of the output file; nothing of the
program runs in the harness's process.
"""

from __future__ import annotations

import enum
import functools
import math
import os
import resource
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from lighteval_like.errors import UsageError

PASSED, FAILED, TIMEOUT, CRASHED, LIMIT = "passed", "failed", "timeout", "crashed", "limit"
OUTCOMES = (PASSED, FAILED, TIMEOUT, CRASHED, LIMIT)

SANDBOX_UID = SANDBOX_GID = 65534  # nobody / nogroup: used when the harness runs as root
PROGRAM_FILE = "program.py"
TAIL_LINES, TAIL_CHARS = 20, 2000
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


class Isolation(str, enum.Enum):
    """Isolation levels, strongest first (see the module docstring)."""

    BWRAP = "bwrap"
    UNSHARE = "unshare"
    NONE = "none"

    @property
    def rank(self) -> int:
        """0 for the strongest level; larger is weaker."""
        return list(Isolation).index(self)


@dataclass(frozen=True)
class Limits:
    """Per-program resource limits. `cpu_s` defaults to the wall-clock timeout rounded up, plus 1."""

    memory_bytes: int = 2 * 1024**3  # address space
    file_size_bytes: int = 16 * 1024**2  # any file it writes, its stdout/stderr included
    max_processes: int = 64  # processes and threads, above what the sandbox user runs at the start
    open_files: int = 128
    cpu_s: int | None = None


@dataclass
class ExecutionResult:
    """What happened to one program. `outcome` is one of OUTCOMES:

    passed (exit 0), failed (non-zero exit), timeout (wall clock reached, tree killed),
    crashed (killed by a signal other than a limit's), limit (CPU time, memory, file or
    output size); `detail` says which limit or signal. `returncode` is the exit status
    (negative: killed by that signal), None when killed at the timeout.
    """

    outcome: str
    returncode: int | None
    duration_s: float
    output_tail: str
    detail: str = ""
    isolation: str = ""

    @property
    def passed(self) -> bool:
        return self.outcome == PASSED


# --------------------------------------------------------------------------- isolation


def _tool(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", SAFE_PATH) + ":/usr/sbin:/sbin:" + SAFE_PATH)


def _is_root() -> bool:
    return os.geteuid() == 0


def _interpreter_paths() -> list[str]:
    """Directories the interpreter needs: its real location and its (venv and base) prefixes."""
    paths = {os.path.dirname(os.path.realpath(sys.executable))}
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        paths.add(os.path.realpath(p))
    # Outermost only: a path inside another one comes with it.
    return sorted(p for p in paths if not any(p.startswith(q + "/") for q in paths))


def _hidden_dirs() -> list[str]:
    """Home directories replaced by an empty tmpfs under bwrap (tokens, caches, ssh keys)."""
    out = []
    for d in {"/root", os.path.realpath(os.path.expanduser("~"))}:
        if d not in ("/", "/tmp") and os.path.isdir(d):
            out.append(d)
    return sorted(out)


def _world_reachable(path: str) -> bool:
    """True when every directory on the way to `path` lets others traverse it."""
    path = os.path.realpath(path)
    while True:
        try:
            st = os.stat(path)
        except OSError:
            return False
        if stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _drop_uid(level: Isolation) -> bool:
    """Run as `nobody`: when the harness is root and `nobody` can reach the interpreter
    (bwrap binds it back into view, so there it always can)."""
    if not _is_root():
        return False
    if level is Isolation.BWRAP:
        return True
    return all(_world_reachable(p) for p in [os.path.realpath(sys.executable), *_interpreter_paths()])


def _wrapper(level: Isolation, workdir: str) -> list[str]:
    """The command prefix that puts a program into `level`'s namespaces."""
    if level is Isolation.BWRAP:
        cmd = [_tool("bwrap") or "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
        hidden = _hidden_dirs()
        for d in hidden:
            cmd += ["--tmpfs", d]
        tmpfs = {"/tmp", *hidden}  # empty in the sandbox: bind points below them are made there

        def bind(flag: str, path: str) -> None:
            if any(path.startswith(d + "/") for d in tmpfs):
                parents, parent = [], os.path.dirname(path)
                while parent not in tmpfs and parent != "/":
                    parents.append(parent)
                    parent = os.path.dirname(parent)
                for parent in reversed(parents):  # traversable by the sandbox user (bwrap makes 0700)
                    cmd.extend(["--perms", "0755", "--dir", parent])
                    tmpfs.add(parent)
            cmd.extend([flag, path, path])

        for p in _interpreter_paths():
            if any(p == d or p.startswith(d + "/") for d in hidden):
                bind("--ro-bind", p)
        bind("--bind", workdir)
        for d in ["/dev", "/tmp", *hidden]:  # not recursive: binds below them keep their mode
            cmd += ["--remount-ro", d]
        cmd += ["--chdir", workdir, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--die-with-parent", "--new-session"]
        if _is_root():
            # For setpriv, which drops them (and the bounding set) with the uid.
            cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
        else:
            cmd += ["--unshare-user"]
        return [*cmd, "--"]
    if level is Isolation.UNSHARE:
        cmd = [_tool("unshare") or "unshare", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child",
               "--mount-proc"]
        if not _is_root():
            cmd.append("--map-root-user")
        # A shell as the namespace's init, so the program is not pid 1 (which ignores signals).
        return [*cmd, "--", "/bin/sh", "-c", '"$@"; exit $?', "sh"]
    return []


def _count_tasks(uid: int) -> int:
    n = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    n += len(os.listdir(f"/proc/{entry}/task"))
            except OSError:
                pass
    return n


def _rlimit_args(limits: Limits, timeout_s: float, drop_uid: bool) -> list[str]:
    cpu = limits.cpu_s or math.ceil(timeout_s) + 1
    if drop_uid or not _is_root():
        # The process limit counts every task (thread) of the real uid on the machine: the
        # program may start `max_processes` more than that uid runs when it starts (other
        # programs running as `nobody` included). Root ignores the limit.
        nproc = limits.max_processes + _count_tasks(SANDBOX_UID if drop_uid else os.getuid())
    else:
        nproc = None
    wanted = {
        "cpu": (resource.RLIMIT_CPU, cpu, cpu + 1),
        "as": (resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
        "fsize": (resource.RLIMIT_FSIZE, limits.file_size_bytes, limits.file_size_bytes),
        "nofile": (resource.RLIMIT_NOFILE, limits.open_files, limits.open_files),
    }
    if nproc is not None:
        wanted["nproc"] = (resource.RLIMIT_NPROC, nproc, nproc)
    args = []
    for name, (res, soft, hard) in wanted.items():
        cur_hard = resource.getrlimit(res)[1]
        if cur_hard != resource.RLIM_INFINITY:  # can only lower a hard limit
            soft, hard = min(soft, cur_hard), min(hard, cur_hard)
        args.append(f"--{name}={soft}:{hard}")
    return args


def build_command(level: Isolation, workdir: str, argv: Sequence[str], limits: Limits, timeout_s: float) -> list[str]:
    """The full command line: isolation wrapper, then limits, then privilege drop, then `argv`."""
    drop = _drop_uid(level)
    priv = [_tool("setpriv") or "setpriv", "--no-new-privs"]
    if drop:
        priv += [f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_GID}", "--clear-groups"]
    if _is_root():  # no capability survives into the program, even where it stays uid 0
        priv += ["--inh-caps=-all", "--bounding-set=-all"]
    prlimit = [_tool("prlimit") or "prlimit", *_rlimit_args(limits, timeout_s, drop), "--"]
    return [*_wrapper(level, workdir), *prlimit, *priv, "--", *argv]


def _missing_tools(level: Isolation) -> list[str]:
    need = ["prlimit", "setpriv"] + {Isolation.BWRAP: ["bwrap"], Isolation.UNSHARE: ["unshare"]}.get(level, [])
    return [t for t in need if _tool(t) is None]


@functools.cache
def _probe(level: Isolation) -> str | None:
    """Run a trivial program at `level` and check what it sees; None when it works, else why not."""
    if not sys.platform.startswith("linux"):
        return "needs Linux"
    missing = _missing_tools(level)
    if missing:
        return "missing " + ", ".join(missing)
    check = "import os; assert os.path.samefile(os.getcwd(), os.environ['HOME'])"
    if level is not Isolation.NONE:  # a network namespace of its own: loopback only
        check += "; import socket; assert [n for _, n in socket.if_nameindex()] == ['lo']"
    results = _run_all([f"{check}\n"], 30.0, 1, level, Limits(), as_argv=True)
    res = results[0]
    if res.outcome != PASSED:
        return f"probe {res.outcome}: {res.output_tail.strip()[-300:] or res.detail}"
    return None


def available_isolations() -> list[Isolation]:
    """The levels that work on this machine, strongest first (probed once, then cached)."""
    return [level for level in Isolation if _probe(level) is None]


def detect_isolation() -> Isolation:
    """The strongest isolation level that works here (Isolation.NONE at worst)."""
    levels = available_isolations()
    return levels[0] if levels else Isolation.NONE


def require_isolation(allow_weaker: bool = False, minimum: Isolation = Isolation.BWRAP) -> Isolation:
    """The level to run programs at, or a UsageError when the best one here is weaker than
    `minimum` (full isolation by default) and the user did not allow weaker isolation."""
    best = detect_isolation()
    if best.rank > minimum.rank and not allow_weaker:
        why = _probe(minimum) or "unavailable"
        raise UsageError(
            f"running generated code needs '{minimum.value}' isolation, which is not available here ({why}); "
            f"the best available is '{best.value}'. Install bubblewrap (apt-get install bubblewrap) or "
            f"pass the weaker-isolation flag to accept '{best.value}'."
        )
    return best


# --------------------------------------------------------------------------- running


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        pass
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _wait_unreaped(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait until the process exits without reaping it (its pid, and so its process group id,
    stay ours until `proc.wait()`); True when it exited within `timeout_s`."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # Linux < 5.3: reap, the group id is then a best effort
        try:
            proc.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(0, int(timeout_s * 1000))))
    finally:
        os.close(fd)


def _kill_tree(proc: subprocess.Popen, level: Isolation, exited: bool) -> None:
    """Kill everything the program started, then reap the launcher. Under a pid namespace,
    killing the namespace's init (the launcher's child) makes the kernel kill every process in
    it, and the launcher exits only once they are all gone (after a normal exit they already
    are); the launcher's process group is killed in every case (all of it at level none)."""
    if not exited and level is not Isolation.NONE:
        for _ in range(20):
            for child in _children(proc.pid):
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if _wait_unreaped(proc, 0.5):
                break
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _signal_of(returncode: int, level: Isolation) -> int | None:
    if returncode < 0:
        return -returncode
    if level is not Isolation.NONE and 128 < returncode < 128 + signal.NSIG:
        return returncode - 128  # bwrap and sh report a signal death as 128 + signal
    return None


def _classify(returncode: int | None, timed_out: bool, output_bytes: int, tail: str, level: Isolation,
              limits: Limits) -> tuple[str, str]:
    if timed_out:
        return TIMEOUT, "wall-clock timeout"
    if returncode == 0:
        return PASSED, ""
    sig = _signal_of(returncode, level)
    if sig == signal.SIGXCPU:
        return LIMIT, "cpu time"
    if sig == signal.SIGXFSZ:
        return LIMIT, "file size"
    if sig == signal.SIGKILL:
        return LIMIT, "killed (SIGKILL: cpu time hard limit or out of memory)"
    if sig is not None:
        return CRASHED, f"signal {signal.Signals(sig).name}" if sig in signal.valid_signals() else f"signal {sig}"
    if output_bytes >= limits.file_size_bytes:
        return LIMIT, "output size"
    last = tail.rstrip().rsplit("\n", 1)[-1]
    if last.startswith("MemoryError"):
        return LIMIT, "memory"
    return FAILED, f"exit status {returncode}"


def _tail(path: str) -> tuple[int, str]:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(max(0, size - 4 * TAIL_CHARS))
        text = f.read().decode("utf-8", errors="replace")
    lines = text.splitlines()[-TAIL_LINES:]
    return size, "\n".join(lines)[-TAIL_CHARS:]


def _remove(path: str) -> None:
    def fix(func, p, _exc):  # a program may have made a directory unreadable
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)


def _run_one(program: str, timeout_s: float, level: Isolation, limits: Limits, out_dir: str, index: int,
             as_argv: bool = False) -> ExecutionResult:
    workdir = tempfile.mkdtemp(prefix="lighteval_like_prog_")
    out_path = os.path.join(out_dir, f"{index}.out")
    try:
        if _drop_uid(level):
            os.chown(workdir, SANDBOX_UID, SANDBOX_GID)
        if as_argv:
            argv = [sys.executable, "-c", program]
        else:
            with open(os.path.join(workdir, PROGRAM_FILE), "w", encoding="utf-8") as f:
                f.write(program)
            argv = [sys.executable, PROGRAM_FILE]
        env = {"PATH": SAFE_PATH, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
        cmd = build_command(level, workdir, argv, limits, timeout_s)
        start = time.monotonic()
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        timed_out = not _wait_unreaped(proc, timeout_s)
        _kill_tree(proc, level, exited=not timed_out)
        duration = time.monotonic() - start
        size, tail = _tail(out_path)
        outcome, detail = _classify(proc.returncode, timed_out, size, tail, level, limits)
        return ExecutionResult(outcome, None if timed_out else proc.returncode, round(duration, 4), tail, detail,
                               level.value)
    finally:
        _remove(workdir)
        try:
            os.remove(out_path)
        except OSError:
            pass


def _run_all(programs: Sequence[str], timeout_s: float, workers: int, level: Isolation, limits: Limits,
             as_argv: bool = False) -> list[ExecutionResult]:
    out_dir = tempfile.mkdtemp(prefix="lighteval_like_exec_")  # harness-only: outputs land here
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [pool.submit(_run_one, p, timeout_s, level, limits, out_dir, i, as_argv)
                       for i, p in enumerate(programs)]
            return [f.result() for f in futures]
    finally:
        _remove(out_dir)


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_programs(programs: Sequence[str], timeout_s: float = 10.0, workers: int | None = None,
                 isolation: Isolation | str | None = None, limits: Limits | None = None) -> list[ExecutionResult]:
    """Run each Python program (source text) contained, `workers` at a time (default: the
    number of usable cores); results in the order of `programs`.

    `isolation` None takes `require_isolation()` (full isolation, or a UsageError); a level
    weaker than what is available is honoured, one that does not work here is a UsageError.
    """
    level = require_isolation() if isolation is None else Isolation(isolation)
    why = _probe(level)
    if why is not None:
        raise UsageError(f"isolation '{level.value}' does not work here: {why}")
    if not programs:
        return []
    return _run_all(list(programs), timeout_s, workers or default_workers(), level, limits or Limits())


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
