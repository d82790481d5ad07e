"""The execution sandbox against hostile programs: each is contained, the harness is unharmed, the
program is scored as not passed, and no process of it is left when `run_programs` returns.

Every hostile program re-executes itself with a unique marker in its command line, inherited by
every process it forks, so leftovers are found by scanning /proc for the marker. Each program
exits 0 only when its harm worked, so a sandbox that fails to contain it scores it as passed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from lighteval_like import sandbox
from lighteval_like.errors import UsageError
from lighteval_like.sandbox import (
    FAILED,
    LIMIT,
    PASSED,
    TIMEOUT,
    Isolation,
    Limits,
    detect_isolation,
    require_isolation,
    run_programs,
)

# The strongest level here; LIGHTEVAL_LIKE_TEST_ISOLATION runs the suite at a weaker one.
LEVEL = Isolation(os.environ.get("LIGHTEVAL_LIKE_TEST_ISOLATION") or detect_isolation())
needs_bwrap = pytest.mark.skipif(LEVEL is not Isolation.BWRAP, reason=f"needs bubblewrap isolation (level here: {LEVEL.value}); apt-get install bubblewrap")
needs_namespaces = pytest.mark.skipif(LEVEL is Isolation.NONE, reason="needs bwrap or unshare namespaces (none work here)")
needs_process_limit = pytest.mark.skipif(
    os.geteuid() == 0 and not sandbox._drop_uid(LEVEL),
    reason="root ignores the process limit and the interpreter is not reachable by nobody at this level",
)


def hostile(body: str) -> tuple[str, str]:
    """A program that re-executes `body` with a unique marker in argv (so every process it forks
    carries the marker in its command line), and that marker."""
    marker = f"hostile-{uuid.uuid4().hex}"
    program = f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', {body!r}, {marker!r}])\n"
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


def run_one(program: str, timeout_s: float = 3.0, **kw):
    (result,) = run_programs([program], timeout_s=timeout_s, isolation=LEVEL, **kw)
    return result


def assert_contained(result, marker: str) -> None:
    assert result.outcome != PASSED, result
    assert procs_with(marker) == [], f"processes of the program left: {procs_with(marker)}"
    # The harness still runs programs normally afterwards.
    assert run_one("print('ok')").outcome == PASSED


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


def test_outcomes_order_and_fresh_directory():
    programs = [
        "import time; time.sleep(0.3); print('slow')",
        "import os; print(sorted(os.listdir('.'))); print(os.getcwd())",
        "import sys; print('bad', file=sys.stderr); sys.exit(3)",
        "raise ValueError('boom')",
        "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)",
    ]
    results = run_programs(programs, timeout_s=5, workers=2, isolation=LEVEL)
    assert [r.outcome for r in results] == [PASSED, PASSED, FAILED, FAILED, "crashed"]
    assert results[0].output_tail == "slow"
    listing, cwd = results[1].output_tail.splitlines()
    assert listing == "['program.py']"
    assert not os.path.exists(cwd), "the work directory is removed afterwards"
    assert results[2].output_tail == "bad" and results[2].returncode == 3
    assert results[3].output_tail.endswith("ValueError: boom")
    assert results[4].detail == "signal SIGSEGV"
    assert {r.isolation for r in results} == {LEVEL.value}


def test_infinite_loop_times_out():
    program, marker = hostile("while True:\n    pass\n")
    start = time.monotonic()
    result = run_one(program, timeout_s=2)
    assert time.monotonic() - start < 10
    assert result.outcome == TIMEOUT and result.returncode is None
    assert_contained(result, marker)


@needs_process_limit
def test_fork_bomb_is_capped_and_killed():
    program, marker = hostile("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")
    peak, stop = [0], threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], len(procs_with(marker)))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = run_one(program, timeout_s=3)
    finally:
        stop.set()
        watcher.join()
    assert result.outcome == TIMEOUT
    assert 1 <= peak[0] <= Limits().max_processes + 2, f"peak {peak[0]} processes"
    assert_contained(result, marker)


def test_allocating_8gb_hits_the_memory_limit():
    program, marker = hostile("x = bytearray(8 * 1024**3)\nx[::4096] = b'x' * len(x[::4096])\nprint('allocated')\n")
    result = run_one(program, timeout_s=10)
    assert result.outcome == LIMIT and result.detail == "memory", result
    assert "allocated" not in result.output_tail
    assert_contained(result, marker)


@needs_bwrap
def test_writing_outside_its_directory_fails(tmp_path):
    # /var/tmp is writable by every user: only a read-only view of the filesystem stops this.
    targets = [str(tmp_path / "pwned.txt"), f"/var/tmp/pwned-{uuid.uuid4().hex}", os.path.expanduser("~/pwned.txt")]
    body = (
        "import sys\nwrote = []\n"
        f"for path in {targets!r}:\n"
        "    try:\n        open(path, 'w').write('pwned')\n        wrote.append(path)\n"
        "    except OSError as e:\n        print(path, e)\n"
        "sys.exit(0 if wrote else 1)\n"
    )
    program, marker = hostile(body)
    try:
        result = run_one(program)
        assert result.outcome == FAILED, result
        for path in targets:
            assert not os.path.exists(path), path
        assert_contained(result, marker)
    finally:
        for path in targets:
            if os.path.exists(path):
                os.remove(path)


def test_harness_environment_is_not_visible(monkeypatch):
    secret = f"sk-{uuid.uuid4().hex}"
    monkeypatch.setenv("LIGHTEVAL_LIKE_TEST_SECRET", secret)
    monkeypatch.setenv("HF_TOKEN", secret)
    body = (
        "import os, sys\nfound = []\n"
        "for key in ('LIGHTEVAL_LIKE_TEST_SECRET', 'HF_TOKEN'):\n"
        "    if os.environ.get(key):\n        found.append(os.environ[key])\n"
        f"for pid in ({os.getpid()}, os.getppid()):\n"
        "    try:\n        found.append(open(f'/proc/{pid}/environ', 'rb').read().decode(errors='replace'))\n"
        "    except OSError as e:\n        print(pid, e)\n"
        "print(found)\nsys.exit(0 if any('sk-' in f for f in found) else 1)\n"
    )
    program, marker = hostile(body)
    result = run_one(program)
    assert secret not in result.output_tail
    assert result.outcome == FAILED, result
    assert os.environ["LIGHTEVAL_LIKE_TEST_SECRET"] == secret  # the harness's own is untouched
    assert_contained(result, marker)


@needs_namespaces
def test_no_network_to_a_local_listener():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    body = (
        "import socket, sys\n"
        f"s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        "s.sendall(b'pwned')\ns.close()\nsys.exit(0)\n"
    )
    program, marker = hostile(body)
    try:
        result = run_one(program)
        assert result.outcome == FAILED, result
        listener.settimeout(0.5)
        with pytest.raises(socket.timeout):
            conn, _ = listener.accept()
            conn.close()
    finally:
        listener.close()
    assert_contained(result, marker)


@pytest.mark.skipif(
    LEVEL is Isolation.NONE and not sandbox._drop_uid(LEVEL),
    reason="at isolation 'none' the program runs as the harness's user and may signal it",
)
def test_killing_the_harness_fails():
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        body = (
            "import os, signal, sys\nkilled = 0\n"
            f"for pid in ({os.getpid()}, {bystander.pid}, os.getppid(), -1):\n"
            "    try:\n        os.kill(pid, signal.SIGKILL)\n        killed += pid > 1\n"
            "    except OSError as e:\n        print(pid, e)\n"
            "sys.exit(0 if killed else 1)\n"
        )
        program, marker = hostile(body)
        result = run_one(program)
        assert result.outcome != PASSED, result
        assert bystander.poll() is None, "a process of the test was killed"
        assert_contained(result, marker)
    finally:
        bystander.kill()
        bystander.wait()


@needs_namespaces
def test_detached_child_does_not_outlive_the_run():
    body_template = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        signal = __import__('signal'); signal.signal(signal.SIGTERM, signal.SIG_IGN); signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
        "        time.sleep(60)\n"
        "    os._exit(0)\n"
        "time.sleep(0.5)\n"
        "{tail}\n"
    )
    stays, marker_stays = hostile(body_template.format(tail="while True:\n    time.sleep(0.1)"))
    leaves, marker_leaves = hostile(body_template.format(tail="sys.exit(0)"))
    results = run_programs([stays, leaves], timeout_s=3, isolation=LEVEL)
    assert results[0].outcome == TIMEOUT
    assert results[1].outcome == PASSED  # exits 0 itself; its detached grandchild must still be gone
    assert procs_with(marker_leaves) == []
    assert_contained(results[0], marker_stays)


@needs_bwrap
def test_deleting_files_of_the_test_fails(tmp_path):
    # A world-writable directory outside /tmp, so only the read-only view protects it.
    owned = Path(tempfile.mkdtemp(prefix="lighteval_like_owned_", dir="/var/tmp"))
    try:
        owned.chmod(0o777)
        for folder in (owned, tmp_path):
            for i in range(3):
                (folder / f"keep{i}.txt").write_text(f"data {i}")
        before = {p: p.read_text() for folder in (owned, tmp_path) for p in folder.iterdir()}
        body = (
            "import os, shutil, sys\ndeleted = 0\n"
            f"for folder in ({str(owned)!r}, {str(tmp_path)!r}):\n"
            "    for name in ('keep0.txt', 'keep1.txt'):\n"
            "        try:\n            os.remove(os.path.join(folder, name))\n            deleted += 1\n"
            "        except OSError as e:\n            print(e)\n"
            "    existed = os.path.isdir(folder)\n"
            "    shutil.rmtree(folder, ignore_errors=True)\n"
            "    deleted += existed and not os.path.exists(folder)\n"
            "sys.exit(0 if deleted else 1)\n"
        )
        program, marker = hostile(body)
        result = run_one(program)
        assert result.outcome == FAILED, result
        after = {p: p.read_text() for folder in (owned, tmp_path) for p in folder.iterdir()}
        assert after == before
        assert_contained(result, marker)
    finally:
        shutil.rmtree(owned, ignore_errors=True)


def test_printing_1gb_is_cut_at_the_output_limit():
    body = "import sys\nchunk = 'x' * (1 << 20) + '\\n'\nfor _ in range(1024):\n    sys.stdout.write(chunk)\nsys.stdout.flush()\n"
    program, marker = hostile(body)
    start = time.monotonic()
    result = run_one(program, timeout_s=20)
    assert time.monotonic() - start < 15
    assert result.outcome == LIMIT and result.detail == "output size", result
    assert len(result.output_tail) <= sandbox.TAIL_CHARS
    assert_contained(result, marker)


def test_weaker_isolation_is_refused_unless_allowed(monkeypatch):
    monkeypatch.setattr(sandbox, "_probe", lambda level: None if level is Isolation.NONE else "not here")
    with pytest.raises(UsageError) as err:
        require_isolation(allow_weaker=False)
    assert "\n" not in str(err.value) and "bwrap" in str(err.value)
    assert require_isolation(allow_weaker=True) is Isolation.NONE
    with pytest.raises(UsageError):
        run_programs(["print(1)"], isolation=Isolation.BWRAP)


def test_default_isolation_is_the_strongest_available():
    best = detect_isolation()
    assert sandbox.available_isolations()[0] is best
    if best is Isolation.BWRAP:
        assert require_isolation() is Isolation.BWRAP


@pytest.mark.skipif(not os.path.isdir("/var/tmp") or os.geteuid() != 0, reason="control needs root and /var/tmp")
def test_control_isolation_none_does_not_protect_world_writable_dirs():
    """Control: without bwrap's read-only view, the same write outside the work dir succeeds
    (so the bwrap tests above are not vacuous)."""
    if Isolation.NONE not in sandbox.available_isolations():
        pytest.skip("isolation 'none' does not run here")
    target = f"/var/tmp/pwned-{uuid.uuid4().hex}"
    try:
        (result,) = run_programs([f"open({target!r}, 'w').write('x')"], isolation=Isolation.NONE)
        assert result.outcome == PASSED and os.path.exists(target)
    finally:
        if os.path.exists(target):
            os.remove(target)


def test_cpu_time_limit():
    program, marker = hostile("while True:\n    pass\n")
    result = run_one(program, timeout_s=8, limits=Limits(cpu_s=1))
    assert result.outcome == LIMIT and result.detail == "cpu time", result
    assert result.duration_s < 6
    assert_contained(result, marker)
