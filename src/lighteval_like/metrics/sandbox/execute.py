"""Running programs: each in its level's isolation, under a uid and a cgroup of its own, in
parallel; every process of a program is killed, and what it left removed, before its result is made.

A program passes only when the runner's pass signal (a token made for that program and given
through a descriptor it reads and closes before the program starts) comes back on a pipe.
Nothing here raises because of what a program did: a clean-up that failed is written on the
program's result (`cleanup`), and the uid of a program with a process left is never reused.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import lighteval_like.metrics.sandbox.cgroups as cgroups
import lighteval_like.metrics.sandbox.launch as launch
import lighteval_like.metrics.sandbox.removal as removal
import lighteval_like.metrics.sandbox.uids as uids
from lighteval_like.metrics.sandbox.outcomes import CRASHED, ExecutionResult, classify
from lighteval_like.metrics.sandbox.policy import Isolation, Limits

logger = logging.getLogger(__name__)

GRACE_S = 1.0  # after the pass signal, time left for the program's exit (its exit hooks, output)
TAIL_LINES, TAIL_CHARS = 20, 2000
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")  # swept of a uid's files at level none


@dataclass(frozen=True)
class Run:
    """What the programs of one `run_all` share; `root` is a private (0700) folder of the harness."""

    level: Isolation
    limits: Limits
    timeout_s: float
    root: str


@dataclass
class Program:
    """One program's uid, cgroup, work folder on disk (level none only), token and output file."""

    uid: int | None
    group: cgroups.ProgramGroup | None
    workdir: str | None
    token: bytes
    out_path: str


def _rlimits(run: Run, uid: int | None) -> dict:
    cpu = run.limits.cpu_s or math.ceil(run.timeout_s) + 1
    # Without a uid of its own, the process limit counts what the harness's user already runs.
    nproc = run.limits.max_processes + (0 if uid is not None else uids.count_tasks(os.getuid()))
    lim = run.limits
    return {"cpu": [cpu, cpu + 1], "as": [lim.memory_bytes] * 2, "fsize": [lim.file_size_bytes] * 2,
            "nofile": [lim.open_files] * 2, "nproc": [nproc] * 2, "core": [0, 0]}


def _prepare(run: Run, index: int) -> Program:
    uid = uids.allocate() if launch.is_root() else None
    prog = Program(uid, None, None, secrets.token_hex(16).encode(), os.path.join(run.root, f"{index}.out"))
    prog.group = cgroups.create(run.limits.memory_bytes, run.limits.max_processes)
    if run.level is Isolation.NONE:  # a name no other program can guess, in a folder none can list
        prog.workdir = os.path.join(run.root, secrets.token_hex(16))
        os.mkdir(prog.workdir, 0o700)
        os.chown(prog.workdir, uid, uid)
    return prog


def _env(work: str) -> dict:
    return {"PATH": launch.SAFE_PATH, "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def _launch(source: str, prog: Program, run: Run, index: int) -> tuple[subprocess.Popen, int]:
    """Start the runner; the program and its token go through a file descriptor already unlinked."""
    path = os.path.join(run.root, f"{index}.src")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), "wb") as f:
        f.write(prog.token + b"\n" + source.encode("utf-8", errors="replace"))
    src_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    os.unlink(path)
    result_r, result_w = os.pipe()
    try:
        cfg = launch.settings(run.level, prog.uid, prog.workdir, run.limits, _rlimits(run, prog.uid), (src_fd, result_w))
        cmd = launch.command(run.level, cfg, prog.group.procs_files() if prog.group else [])
        with open(os.open(prog.out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), "wb") as out:
            proc = subprocess.Popen(cmd, cwd=prog.workdir or "/", env=_env(cfg["work"]), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    pass_fds=(src_fd, result_w))
    except BaseException:
        os.close(result_r)
        raise
    finally:
        os.close(src_fd)
        os.close(result_w)
    return proc, result_r


def _await(proc: subprocess.Popen, result_r: int, token: bytes, timeout_s: float) -> tuple[bool, bytes]:
    """Wait for the launcher's exit (not reaping it) while reading the pass signal; (timed out, signal read)."""
    deadline, data = time.monotonic() + timeout_s, b""
    pidfd = os.pidfd_open(proc.pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(result_r, select.POLLIN)
    try:
        while (left := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(left * 1000):
                if fd == pidfd:
                    return False, data
                chunk = os.read(result_r, 256)
                if not chunk:
                    poller.unregister(result_r)
                data = (data + chunk)[:1024]
                if data == token:  # ended: a little time for its exit, then it is stopped
                    deadline = min(deadline, time.monotonic() + GRACE_S)
        return True, data
    finally:
        os.close(pidfd)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _stop(proc: subprocess.Popen, prog: Program, level: Isolation) -> list[int]:
    """Kill every process of the program and reap the launcher; the pids still alive after 5 s.
    Killing a pid namespace's init (the launcher's child) kills the whole namespace."""
    if level is not Isolation.NONE:
        for child in _children(proc.pid):
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()

    def alive() -> list[int]:  # no process leaves its cgroup; without one, its uid says
        if prog.group is not None:
            return prog.group.pids()
        return uids.processes_of(prog.uid) if prog.uid is not None else []

    return uids.kill_all(alive)


def _drain(fd: int, data: bytes) -> bytes:
    os.set_blocking(fd, False)
    try:
        while chunk := os.read(fd, 256):
            data = (data + chunk)[:1024]
    except BlockingIOError:
        pass
    os.close(fd)
    return data


def _tail(path: str) -> tuple[int, str]:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(max(0, size - 4 * TAIL_CHARS))
        text = f.read().decode("utf-8", errors="replace")
    return size, "\n".join(text.splitlines()[-TAIL_LINES:])[-TAIL_CHARS:]


def _clean(prog: Program, survivors: list[int]) -> str:
    """Remove the program's cgroup and files; '' when all went, else what was left."""
    notes = []
    if survivors:
        notes.append(f"{len(survivors)} process(es) still running after being killed; uid {prog.uid} kept out of use")
    if prog.group is not None:
        notes.append(prog.group.remove())
    if prog.workdir is not None:
        notes.append(removal.remove_tree(prog.workdir))
        notes.append(removal.remove_owned([d for d in WORLD_WRITABLE if os.path.isdir(d)], prog.uid))
    if prog.uid is not None and not survivors:
        uids.release(prog.uid)
    return "; ".join(n for n in notes if n)


def _execute(source: str, prog: Program, run: Run, index: int) -> ExecutionResult:
    start = time.monotonic()
    proc, result_r = _launch(source, prog, run, index)
    timed_out, data = _await(proc, result_r, prog.token, run.timeout_s)
    survivors = _stop(proc, prog, run.level)
    passed = _drain(result_r, data) == prog.token
    oom = prog.group is not None and prog.group.out_of_memory()
    size, tail = _tail(prog.out_path)
    outcome, detail = classify(passed, timed_out, proc.returncode, oom, size, tail, run.level, run.limits)
    result = ExecutionResult(outcome, None if timed_out and not passed else proc.returncode,
                             round(time.monotonic() - start, 4), tail, detail, run.level.value)
    result.cleanup = _clean(prog, survivors)
    return result


def run_one(source: str, run: Run, index: int) -> ExecutionResult:
    """Run one program; a failure of the sandbox itself is this program's result, never raised."""
    prog = None
    try:
        prog = _prepare(run, index)
        return _execute(source, prog, run, index)
    except Exception as e:  # the harness's side failed (no room for a cgroup, a uid, a file)
        logger.warning("sandbox: program %d could not be run: %s", index, e)
        cleanup = _clean(prog, []) if prog is not None else ""
        return ExecutionResult(CRASHED, None, 0.0, "", f"sandbox error: {e}", run.level.value, cleanup)
    finally:
        if prog is not None and os.path.exists(prog.out_path):
            os.remove(prog.out_path)


def run_all(programs: Sequence[str], timeout_s: float, workers: int, level: Isolation,
            limits: Limits) -> list[ExecutionResult]:
    """Run `programs`, `workers` at a time; results in order."""
    root = tempfile.mkdtemp(prefix="lighteval_like_sandbox_")  # 0700, the harness's alone
    if level is Isolation.NONE:  # searchable, not listable: a program reaches its own folder (0700, its uid)
        os.chmod(root, 0o711)
    run = Run(level, limits, timeout_s, root)
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return list(pool.map(lambda item: run_one(item[1], run, item[0]), enumerate(programs)))
    finally:
        left = removal.remove_tree(root)
        if left:
            logger.warning("sandbox: could not remove its folder: %s", left)
