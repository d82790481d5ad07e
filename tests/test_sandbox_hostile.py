"""Hostile programs against the execution sandbox (`lighteval_like.metrics.sandbox`), at every isolation
level that works here (`available_isolations()`; LIGHTEVAL_LIKE_TEST_ISOLATION=bwrap,unshare
narrows it; level none runs with the system python where this one is closed to others).

Pass semantics: a program passes only when it runs to its end. So every hostile program ends
normally only when its harm worked (`assert harm` as its last statement), or the harm is observed
from outside (files, modes, listeners, processes). Each sandbox test fails if the harm happened.
Helper processes carry a unique marker in their command line (started with
`subprocess.Popen([sys.executable, '-c', body, marker])`), so leftovers are found in /proc.

`test_control_*` run the same hostile programs WITHOUT the sandbox (plain subprocess in a temp
folder) and assert the harm does happen, so the sandbox tests are not vacuous. Controls that would
harm the machine (/etc, /etc/shadow) are left out.
LIGHTEVAL_LIKE_CLEANUP_TRIES (default 20) sets how many clean-up redirection tries run.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import shutil
import signal
import site
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from test_sandbox import procs_with

import lighteval_like
from lighteval_like.metrics import sandbox
from lighteval_like.metrics.sandbox import FAILED, PASSED, Isolation, Limits, run_programs

REPO_ROOT = Path(__file__).resolve().parents[1]
MiB = 1024**2
CLEANUP_TRIES = int(os.environ.get("LIGHTEVAL_LIKE_CLEANUP_TRIES") or 20)
NONE_REASON = "isolation 'none' (README): limits only; the filesystem is shared with the host"


SHARED_DIRS = [d for d in (tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm") if os.path.isdir(d)]


@pytest.fixture(autouse=True)
def shared_dirs_keep_their_modes():
    """A broken sandbox's clean-up may chmod the folder its work folders live in (/tmp): put the
    mode back at once (other users of the machine need it) and fail the test that did it."""
    before = {d: os.stat(d).st_mode for d in SHARED_DIRS}
    yield
    changed = {d: oct(os.stat(d).st_mode) for d in SHARED_DIRS if os.stat(d).st_mode != before[d]}
    for d in changed:
        os.chmod(d, stat.S_IMODE(before[d]))
    assert not changed, f"shared folders changed mode (restored): {changed}"


def only(level: Isolation, *levels: Isolation, reason: str = "") -> None:
    if level not in levels:
        pytest.skip(reason or f"guarantee applies at {'/'.join(lv.value for lv in levels)} only")


def new_marker() -> str:
    return f"hostile-{uuid.uuid4().hex}"


def reap_marked(marker: str) -> list[int]:
    """Leftover processes of `marker` (returned), then killed: the test never leaves them behind."""
    found = procs_with(marker)
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return found


def run(programs: list[str], level: Isolation, timeout_s: float = 5.0, workers: int = 2, **kw):
    return run_programs(programs, timeout_s=timeout_s, workers=workers, isolation=level, **kw)


def run_plain(program: str, cwd: str | Path, timeout_s: float = 30.0) -> subprocess.CompletedProcess:
    """The control: the program without any sandbox, as this test's user, in `cwd`."""
    path = Path(cwd) / "program.py"
    path.write_text(program)
    with tempfile.TemporaryFile() as out:  # not a pipe: a detached child keeps a pipe open
        proc = subprocess.run([sys.executable, str(path)], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=timeout_s)
        out.seek(0)
        proc.stdout = out.read().decode(errors="replace")
    return proc


def spawn(body: str, marker: str, *args: str) -> str:
    """Program source that starts `body` as a marked helper process and keeps its Popen in `helper`."""
    return (f"import subprocess, sys\nhelper = subprocess.Popen([sys.executable, '-c', {body!r}, {marker!r}"
            f"{''.join(', ' + repr(a) for a in args)}])\n")


DAEMONIZE = (
    "import os, signal, sys, time\n"
    "for _s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):\n    signal.signal(_s, signal.SIG_IGN)\n"
    "if os.fork():\n    os._exit(0)\nos.setsid()\nif os.fork():\n    os._exit(0)\n"
)


# --------------------------------------------------------------------------- 1. uids, work folder

def test_fresh_non_root_uid_per_concurrent_program(level):
    probe = ("import os, time\nt0 = time.time()\nprint('ids', os.getuid(), os.geteuid())\n"
             "print('home', os.getcwd() == os.environ['HOME'] == os.environ['TMPDIR'])\n"
             "print('files', 'program.py' in os.listdir('.'))\ntime.sleep(1.5)\nprint('span', t0, time.time())\n")
    a, b = run([probe, probe], level)
    assert a.outcome == b.outcome == PASSED, (a, b)
    spans = [tuple(map(float, re.search(r"span (\S+) (\S+)", r.output_tail).groups())) for r in (a, b)]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], f"did not run concurrently: {spans}"
    ids = [tuple(map(int, re.search(r"ids (\d+) (\d+)", r.output_tail).groups())) for r in (a, b)]
    assert all(0 not in pair for pair in ids), ids
    assert ids[0][0] != ids[1][0], f"two concurrent programs share uid {ids[0][0]}"
    for r in (a, b):
        assert "home True" in r.output_tail and "files True" in r.output_tail, r.output_tail


VICTIM = (
    "import os, time\nopen('secret.txt', 'w').write({mark!r})\ntime.sleep(2.5)\n"
    "assert helper.poll() is None, 'my helper was killed'\nassert 'pwned' not in os.listdir('.'), 'folder written'\n"
    "helper.kill()\n"
)
ATTACKER = (
    "import os, signal, time\nMARK = {mark!r}\nkilled, read, wrote = set(), set(), set()\nend = time.time() + 2.0\n"
    "def folders():\n    out = {{os.path.dirname(os.getcwd())}}\n"
    "    for pid in filter(str.isdigit, os.listdir('/proc')):\n"
    "        try:\n            if MARK.encode() in open(f'/proc/{{pid}}/cmdline', 'rb').read():\n"
    "                out.add(os.path.dirname(os.readlink(f'/proc/{{pid}}/cwd')))\n"
    "                os.kill(int(pid), signal.SIGKILL); killed.add(pid)\n"
    "        except OSError:\n            pass\n    return out\n"
    "while time.time() < end and not (killed and read and wrote):\n"
    "    for base in folders():\n        for name in (os.listdir(base) if os.access(base, os.R_OK) else []):\n"
    "            d = os.path.join(base, name)\n"
    "            try:\n                if open(os.path.join(d, 'secret.txt')).read() == MARK:\n"
    "                    read.add(d); open(os.path.join(d, 'pwned'), 'w').write('x'); wrote.add(d)\n"
    "            except OSError:\n                pass\n    time.sleep(0.05)\n"
    "print('killed', killed, 'read', read, 'wrote', wrote)\nassert killed or read or wrote\n"
)


def cross_programs() -> tuple[str, str, str]:
    mark = new_marker()
    victim = spawn("import time; time.sleep(30)", mark) + VICTIM.format(mark=mark)
    return victim, ATTACKER.format(mark=mark), mark


def test_program_cannot_signal_or_read_another_running_program(level):
    victim, attacker, mark = cross_programs()
    try:
        rv, ra = run([victim, attacker], level, timeout_s=8)
    finally:
        left = reap_marked(mark)
    assert ra.outcome != PASSED, f"the attacker harmed the other program: {ra.output_tail}"
    assert rv.outcome == PASSED, f"the victim was harmed: {rv}"
    assert left == [], f"helpers left: {left}"


def test_control_programs_without_sandbox_harm_each_other(tmp_path):
    victim, attacker, mark = cross_programs()
    (tmp_path / "v").mkdir(), (tmp_path / "a").mkdir()
    try:
        with ThreadResult(run_plain, victim, tmp_path / "v") as v:
            time.sleep(0.3)
            a = run_plain(attacker, tmp_path / "a")
    finally:
        reap_marked(mark)
    assert a.returncode == 0, a.stdout
    assert v.value.returncode != 0


class ThreadResult:
    """Run fn(*args) in a thread; `.value` after the with block."""

    def __init__(self, fn, *args):
        self.value, self._t = None, threading.Thread(target=lambda: setattr(self, "value", fn(*args)))

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._t.join()


# --------------------------------------------------------------------------- 2. detached daemons

TAMPER_DAEMON = DAEMONIZE + (
    "base = os.path.dirname(os.getcwd())\nend = time.time() + 30\n"
    "while time.time() < end:\n"
    "    for name in (os.listdir(base) if os.access(base, os.R_OK) else []):\n"
    "        p = os.path.join(base, name, 'program.py')\n"
    "        try:\n            if 'TAMPER-ME' in open(p).read():\n                open(p, 'w').write('pass\\n')\n"
    "        except OSError:\n            pass\n    time.sleep(0.005)\n"
)
FAILING = "import time\ntime.sleep(0.3)\n# TAMPER-ME\nassert False, 'this program must fail'\n"


def test_detached_daemon_is_dead_when_run_programs_returns(level):
    mark = new_marker()
    starter = spawn(TAMPER_DAEMON, mark) + "helper.wait()\nimport time\ntime.sleep(0.3)\n"
    try:
        first = run([starter, FAILING, FAILING, FAILING], level, workers=1)
        left_first = procs_with(mark)
        (later,) = run([FAILING], level)
    finally:
        left = reap_marked(mark)
    assert left_first == [] and left == [], f"daemon processes outlived run_programs: {left_first or left}"
    assert [r.outcome for r in first[1:]] == [FAILED] * 3, first
    assert later.outcome == FAILED, later


def test_control_detached_daemon_outlives_a_plain_run(tmp_path):
    mark = new_marker()
    try:
        assert run_plain(spawn(TAMPER_DAEMON, mark) + "helper.wait()\n", tmp_path).returncode == 0
        time.sleep(0.2)
        assert procs_with(mark), "the daemon should still run after the plain program ended"
    finally:
        reap_marked(mark)


# --------------------------------------------------------------------------- 3. clean-up redirection

SWAP_DAEMON = DAEMONIZE + r"""
host_dir, host_file, parent = sys.argv[2:5]
links, K, end = [host_dir, parent, host_file], 4, time.time() + float(sys.argv[5])
victim = os.path.basename(host_file)
def make(n):  # a real folder: many files (slow to remove), the host file's name, nested mode-000 folders
    d = f'd{n}'
    try:
        if not os.path.islink(d) and len(os.listdir(d) if os.path.isdir(d) else []) < 50:
            os.makedirs(d + '/x/x', exist_ok=True)
            for k in range(200):
                open(f'{d}/p{k}', 'w').close()
            open(f'{d}/{victim}', 'w').close()
            os.chmod(d + '/x/x', 0); os.chmod(d + '/x', 0)
    except OSError:
        pass
def quiet(fn, *args):
    try:
        fn(*args)
    except OSError:
        pass
i = 0
while time.time() < end:
    i += 1
    for n in range(K):
        make(n)
        quiet(os.unlink, f'f{n}')
        quiet(os.symlink, host_file, f'f{n}') if (n + i) % 2 else quiet(lambda: open(f'f{n}', 'w').close())
    for n in range(K):  # the folder steps aside, a link to the host takes its place
        quiet(os.rename, f'd{n}', f'g{n}')
        quiet(os.symlink, links[(n + i) % len(links)], f'd{n}')
    time.sleep(0.002)
    for n in range(K):
        if os.path.islink(f'd{n}'):
            quiet(os.unlink, f'd{n}')
        quiet(os.rename, f'g{n}', f'd{n}')
    time.sleep(0.001)
"""


def swap_program(host: dict, mark: str, run_forever: bool, seconds: float = 20.0) -> str:
    """Start the swapping daemon (its links point at the test's host folder, file and the folder's
    parent), then end normally or run until the timeout."""
    args = (host["dir"], host["file"], host["parent"], str(seconds))
    tail = "while True:\n    time.sleep(0.1)\n" if run_forever else (
        "seen = False\nfor _ in range(150):  # evidence that the daemon swaps\n"
        "    seen = seen or any(os.path.lexists(f'g{n}') or os.path.islink(f'd{n}') for n in range(4))\n"
        "    time.sleep(0.002)\nprint('swapping', seen)\n")
    return spawn(SWAP_DAEMON, mark, *args) + "helper.wait()\nimport os, time\n" + tail


def make_host(root: Path) -> dict:
    """A root-owned host folder (0o755) with a file (0o644), inside `root` (0o755, its parent)."""
    root.chmod(0o755)
    (root / "host").mkdir(mode=0o755)
    (root / "host").chmod(0o755)
    victim = root / "host" / "victim.txt"
    victim.write_text("host data\n")
    victim.chmod(0o644)
    return {"dir": str(root / "host"), "file": str(victim), "parent": str(root)}


def host_state(host: dict) -> dict:
    def mode(p):
        try:
            return stat.S_IMODE(os.lstat(p).st_mode)
        except OSError:
            return None

    try:
        content = Path(host["file"]).read_text()
    except OSError as e:
        content = repr(e)
    return {"dir": mode(host["dir"]), "file": mode(host["file"]), "parent": mode(host["parent"]),
            "tmp": mode(tempfile.gettempdir()), "content": content, "entries": sorted(os.listdir(host["dir"]))}


def test_cleanup_cannot_be_redirected_at_the_host(level, tmp_path):
    check_cleanup_redirection(level, tmp_path, tries=2)


def test_cleanup_redirection_repeated(level, tmp_path):
    check_cleanup_redirection(level, tmp_path, tries=CLEANUP_TRIES)


def check_cleanup_redirection(level: Isolation, tmp_path: Path, tries: int) -> None:
    host, mark = make_host(tmp_path), new_marker()
    before = host_state(host)
    programs = [swap_program(host, mark, run_forever=i % 2 == 1) for i in range(tries)]
    try:
        results = run(programs, level, timeout_s=1.5)
    finally:
        left = reap_marked(mark)
    assert host_state(host) == before, "clean-up went through a link to the host"
    assert left == [], f"swapping daemons outlived run_programs: {left}"
    assert all(isinstance(r.cleanup, str) for r in results)
    assert any("swapping True" in r.output_tail for r in results[::2]), f"the attack did not run: {results[0]}"


def naive_remove(path: str) -> None:
    """The clean-up the sandbox must not do: rmtree whose error handler chmods and retries."""
    def fix(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)


def test_control_naive_cleanup_is_redirected_at_the_host(tmp_path):
    (tmp_path / "root").mkdir()
    host = make_host(tmp_path / "root")
    before = host_state(host)
    harmed = False
    for attempt in range(10):
        mark, work = new_marker(), tmp_path / f"work{attempt}"
        work.mkdir()
        try:
            run_plain(swap_program(host, mark, run_forever=False, seconds=3), work)
            end = time.monotonic() + 2
            while not harmed and work.exists() and time.monotonic() < end:
                naive_remove(str(work))
                harmed = host_state(host) != before
        finally:
            reap_marked(mark)
            subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=True)  # follows no link
        if harmed:
            break
    assert harmed, f"the naive clean-up was not redirected in {attempt + 1} tries: {host_state(host)}"


# --------------------------------------------------------------------------- 4. deep nesting

DEEP = "import os\nfor _ in range(1500):\n    os.mkdir('d' * 12)\n    os.chdir('d' * 12)\nprint('nested 1500')\n"


def lighteval_temp_entries() -> set[str]:
    return {e for e in os.listdir(tempfile.gettempdir()) if e.startswith("lighteval_like")}


def test_deep_nesting_does_not_abort_the_run(level):
    before, mark = lighteval_temp_entries(), new_marker()
    where = "import os\nprint('cwd', os.getcwd())\n"
    deep_program = spawn("import time; time.sleep(60)", mark) + DEEP
    try:
        results = run(["print('ok')", deep_program, "print('ok')", where], level, timeout_s=20)
    finally:
        left_procs = reap_marked(mark)
    assert left_procs == [], f"processes left: {left_procs}"
    assert [r.outcome for r in (results[0], results[2], results[3])] == [PASSED] * 3, results
    deep = results[1]
    assert deep.outcome in sandbox.OUTCOMES and isinstance(deep.cleanup, str), deep
    assert "nested 1500" in deep.output_tail, f"the nesting did not happen: {deep}"
    if level is not Isolation.BWRAP:  # the work folder's path is the host's
        cwd = results[3].output_tail.split("cwd ", 1)[1].strip()
        assert not os.path.exists(cwd), cwd
    end = time.monotonic() + 3  # entries of other runs on this machine come and go
    while (left := lighteval_temp_entries() - before) and time.monotonic() < end:
        time.sleep(0.2)
    assert not left, f"left in {tempfile.gettempdir()}: {left}"


def test_control_deep_tree_breaks_a_naive_rmtree(tmp_path):
    assert run_plain(DEEP, tmp_path).returncode == 0
    try:
        with pytest.raises(RecursionError):
            naive_remove(str(tmp_path))
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(tmp_path)], check=True)


# --------------------------------------------------------------------------- 5. memory per program

MEM_CHILD = "import sys, time\nx = b'x' * int(sys.argv[2])\ntime.sleep(2)\n"
MEM_PARENT = ("kids = [subprocess.Popen([sys.executable, '-c', {child!r}, {mark!r}, str({size})]) for _ in range({n})]\n"
              "codes = [k.wait() for k in kids]\nprint('exit codes', codes)\nassert codes == [0] * {n}\n")


def memory_program(mark: str, n: int = 4, size: int = 200 * 10**6) -> str:
    return "import subprocess, sys\n" + MEM_PARENT.format(child=MEM_CHILD, mark=mark, size=size, n=n)


def rss_total(marker: str) -> int:
    total = 0
    for pid in procs_with(marker):
        try:
            with open(f"/proc/{pid}/status") as f:
                total += sum(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        except (OSError, ValueError):
            pass
    return total


def peak_rss(marker: str, fn, *args):
    """fn(*args) while sampling the summed RSS of the marked processes every 50 ms: (result, peak)."""
    peak, stop = [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_total(marker))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        return fn(*args), peak[0]
    finally:
        stop.set()
        sampler.join()


def whole_tree_memory_limited(level: Isolation, limits: Limits) -> bool:
    """From sandbox.describe(): is the memory limit applied to the whole tree through a cgroup?"""
    described = sandbox.describe(level, limits)
    for key, value in described.items():
        text = f"{key} {value}".lower()
        if "memory" in text and "cgroup" in text:
            return bool(value) and not re.search(r"\b(not|no|none|false|unavailable|off)\b", str(value).lower())
    return False


def test_memory_is_limited_per_program_not_per_process(level):
    limits = Limits(memory_bytes=512 * MiB)
    if not whole_tree_memory_limited(level, limits):
        pytest.skip(f"the whole-tree memory limit is not applied at {level.value}: {sandbox.describe(level, limits)}")
    mark = new_marker()
    try:
        (result,), peak = peak_rss(mark, lambda: run([memory_program(mark)], level, timeout_s=15, workers=1, limits=limits))
    finally:
        left = reap_marked(mark)
    assert peak <= limits.memory_bytes * 1.1, f"peak {peak / MiB:.0f} MiB over the {limits.memory_bytes / MiB:.0f} MiB cap"
    assert peak > 150 * MiB, f"the children did not allocate (peak {peak / MiB:.0f} MiB): {result}"
    assert result.outcome != PASSED, result
    assert left == [], left


def test_control_memory_total_exceeds_the_cap_without_sandbox(tmp_path):
    mark = new_marker()
    try:
        proc, peak = peak_rss(mark, run_plain, memory_program(mark), tmp_path)
    finally:
        reap_marked(mark)
    assert proc.returncode == 0, proc.stdout
    assert peak > 512 * MiB * 1.1, f"peak only {peak / MiB:.0f} MiB"


# --------------------------------------------------------------------------- 6. work folder caps

FILL_BYTES = ("import os\nchunk = b'x' * (1 << 20)\nfor i in range(64):\n    try:\n"
              "        with open(f'big{{i}}', 'wb') as f:\n            f.write(chunk)\n    except OSError:\n        pass\n"
              "total = sum(os.path.getsize(n) for n in os.listdir('.') if n.startswith('big'))\n"
              "print('total', total)\nassert total > {cap}\n")
FILL_FILES = ("import os\nmade = 0\nfor i in range(2000):\n    try:\n        open(f'e{{i}}', 'w').close()\n"
              "        made += 1\n    except OSError:\n        pass\nprint('total', made)\nassert made > {cap}\n")


def fill_count(result_text: str) -> int:
    return int(re.search(r"total (\d+)", result_text).group(1))


def test_work_folder_size_and_file_count_are_capped(level):
    only(level, Isolation.BWRAP, Isolation.UNSHARE)
    limits = Limits(work_bytes=8 * MiB, work_files=500)
    by_bytes, by_files = run([FILL_BYTES.format(cap=limits.work_bytes), FILL_FILES.format(cap=limits.work_files)],
                             level, timeout_s=20, limits=limits)
    assert by_bytes.outcome != PASSED and fill_count(by_bytes.output_tail) <= limits.work_bytes, by_bytes
    assert by_files.outcome != PASSED and fill_count(by_files.output_tail) <= limits.work_files, by_files
    assert fill_count(by_bytes.output_tail) > limits.work_bytes // 2 and fill_count(by_files.output_tail) > 100


def test_control_fill_exceeds_the_caps_without_sandbox(tmp_path):
    (tmp_path / "b").mkdir(), (tmp_path / "f").mkdir()
    by_bytes = run_plain(FILL_BYTES.format(cap=8 * MiB), tmp_path / "b")
    by_files = run_plain(FILL_FILES.format(cap=500), tmp_path / "f")
    assert by_bytes.returncode == 0 and fill_count(by_bytes.stdout) > 8 * MiB, by_bytes.stdout
    assert by_files.returncode == 0 and fill_count(by_files.stdout) > 500, by_files.stdout


# --------------------------------------------------------------------------- 7. what a program sees

SEE = ("import os\nseen = []\nfor p in {paths!r}:\n    try:\n"
       "        os.listdir(p) if os.path.isdir(p) else open(p, 'rb').close() if os.path.isfile(p) else os.lstat(p)\n"
       "        seen.append(p)\n    except OSError:\n        pass\nprint('visible', seen)\nassert seen\n")


def needed_paths() -> list[str]:
    """What the interpreter needs (these, and folders on the way to them, may be visible)."""
    paths = [sys.executable, os.path.realpath(sys.executable), sys.base_prefix]
    paths += [sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")]
    return [os.path.realpath(p) for p in paths] + paths


def secret_paths() -> list[str]:
    """Host paths a program must not see: the entries of the repository, the harness package, /root
    and the home folder, the dataset mirror, the venv's site-packages, /run; the test file itself."""
    roots = [REPO_ROOT, Path(lighteval_like.__file__).parent, Path("/root"), Path.home(), REPO_ROOT.parent / "shared",
             REPO_ROOT.parent / "shared" / "data", *map(Path, site.getsitepackages()), Path("/run")]
    needed = needed_paths()
    out = [str(Path(__file__).resolve())]
    for root in roots:
        if root.is_dir():
            out += [str(root / e) for e in sorted(os.listdir(root))[:30]]
    return [p for p in dict.fromkeys(out) if not any(n == p or n.startswith(p + "/") for n in needed)]


def test_only_the_interpreter_and_work_folder_are_visible(level):
    only(level, Isolation.BWRAP)
    paths = secret_paths()
    assert len(paths) > 20, paths
    (result,) = run([SEE.format(paths=paths)], level)
    assert result.outcome != PASSED and "visible []" in result.output_tail, result.output_tail


def test_control_secret_paths_are_visible_without_sandbox(tmp_path):
    proc = run_plain(SEE.format(paths=secret_paths()), tmp_path)
    assert proc.returncode == 0 and str(Path(__file__).resolve()) in proc.stdout, proc.stdout


CONNECT = ("import socket\nreached = []\nfor family, addr in {targets!r}:\n    try:\n"
           "        s = socket.socket(getattr(socket, family), socket.SOCK_STREAM)\n        s.settimeout(1)\n"
           "        s.connect(tuple(addr) if family == 'AF_INET' else addr)\n        s.sendall(b'pwned')\n"
           "        reached.append(addr)\n        s.close()\n    except OSError as e:\n        print(addr, e)\n"
           "print('reached', reached)\nassert reached\n")


class Listeners:
    """Listening sockets of the test (pathname ones 0o777, so file permissions do not stop a
    client): in a temp folder, under /run, abstract, TCP on 127.0.0.1. `received()` says which got bytes."""

    def __init__(self, pathname: bool):
        self.dir = tempfile.mkdtemp(prefix="hostile_sock_")
        os.chmod(self.dir, 0o755)
        names = [os.path.join(self.dir, "s.sock"), f"/run/lighteval-like-test-{uuid.uuid4().hex}.sock"] if pathname else []
        self.socks, self.targets = [], []
        for addr in [*names, f"\0lighteval-like-test-{uuid.uuid4().hex}"]:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(addr)
            if not addr.startswith("\0"):
                os.chmod(addr, 0o777)
            self.socks.append(s), self.targets.append(("AF_UNIX", addr))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind(("127.0.0.1", 0))
        self.socks.append(tcp), self.targets.append(("AF_INET", list(tcp.getsockname())))
        for s in self.socks:
            s.listen(8)

    def received(self) -> list:
        got = []
        for s, target in zip(self.socks, self.targets):
            s.settimeout(0.3)
            try:
                conn, _ = s.accept()
                conn.settimeout(1)
                got.append((target, conn.recv(16)))
                conn.close()
            except OSError:
                pass
        return got

    def close(self) -> None:
        for s, (family, addr) in zip(self.socks, self.targets):
            s.close()
            if family == "AF_UNIX" and not addr.startswith("\0") and os.path.exists(addr):
                os.remove(addr)
        shutil.rmtree(self.dir, ignore_errors=True)


def test_no_socket_or_network_reaches_the_host(level):
    only(level, Isolation.BWRAP, Isolation.UNSHARE, reason="needs a network namespace (not at none)")
    listeners = Listeners(pathname=level is Isolation.BWRAP)  # unshare shares the filesystem: abstract + TCP
    try:
        (result,) = run([CONNECT.format(targets=listeners.targets)], level)
        got = listeners.received()
    finally:
        listeners.close()
    assert got == [], f"the test's listeners received: {got}"
    assert result.outcome != PASSED and "reached []" in result.output_tail, result.output_tail


def test_control_sockets_are_reached_without_sandbox(tmp_path):
    listeners = Listeners(pathname=True)
    try:
        proc = run_plain(CONNECT.format(targets=listeners.targets), tmp_path)
        got = listeners.received()
    finally:
        listeners.close()
    assert proc.returncode == 0 and len(got) == 4 and all(data == b"pwned" for _, data in got), (got, proc.stdout)


# --------------------------------------------------------------------------- 8. shared temp folders

def shared_tmp_programs() -> tuple[str, str, list[str]]:
    name = f"lighteval-like-test-{uuid.uuid4().hex}"
    paths = [os.path.join(d, name) for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock") if os.path.isdir(d)]
    write = f"for p in {paths!r}:\n    try:\n        open(p, 'w').write('from an earlier sample')\n    except OSError as e:\n        print(e)\n"
    read = f"import os\nfound = [p for p in {paths!r} if os.path.exists(p)]\nprint('found', found)\nassert found\n"
    return write, read, paths


def test_world_writable_folders_are_not_shared_between_programs(level):
    only(level, Isolation.BWRAP, Isolation.UNSHARE, reason=NONE_REASON)
    write, read, paths = shared_tmp_programs()
    try:
        _, later = run([write, read], level, workers=1)
    finally:
        for p in paths:
            if os.path.lexists(p):
                os.remove(p)
    assert later.outcome != PASSED and "found []" in later.output_tail, later.output_tail


def test_control_world_writable_folders_are_shared_without_sandbox(tmp_path):
    write, read, paths = shared_tmp_programs()
    try:
        run_plain(write, tmp_path)
        proc = run_plain(read, tmp_path)
    finally:
        for p in paths:
            if os.path.lexists(p):
                os.remove(p)
    assert proc.returncode == 0, proc.stdout


# --------------------------------------------------------------------------- 9. root, /etc

def test_never_root_no_shadow_no_etc_write(level):
    target = f"/etc/lighteval-like-test-{uuid.uuid4().hex}"
    program = ("import os\nharm = []\nif 0 in (os.getuid(), os.geteuid(), os.getgid()):\n    harm.append('root')\n"
               "try:\n    open('/etc/shadow').read()\n    harm.append('shadow')\nexcept OSError as e:\n    print(e)\n"
               f"try:\n    open({target!r}, 'w').write('x')\n    harm.append('etc')\nexcept OSError as e:\n    print(e)\n"
               "print('harm', harm)\nassert harm\n")
    try:
        (result,) = run([program], level)
        wrote = os.path.exists(target)
    finally:
        if os.path.exists(target):
            os.remove(target)
    assert not wrote, f"{target} was written"
    assert result.outcome != PASSED and "harm []" in result.output_tail, result.output_tail


# --------------------------------------------------------------------------- 10. keyring, user namespaces

KEY_SYSCALLS = {"x86_64": (248, 250), "aarch64": (217, 219)}  # add_key, keyctl
KEYS = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nADD, CTL = {nums}\nharm = []\n"
        "buf = ctypes.create_string_buffer(256)\n"
        "n = libc.syscall(CTL, ctypes.c_long(11), ctypes.c_long({key_id}), buf, ctypes.c_long(256))\n"
        "if n > 0 and {payload!r} in buf.raw[:n]:\n    harm.append('read by id')\n"
        "kid = libc.syscall(CTL, ctypes.c_long(10), ctypes.c_long(-3), b'user', {desc!r}, ctypes.c_long(0))\n"
        "if kid > 0:\n    harm.append('found in the session keyring')\n"
        "r = libc.syscall(ADD, b'user', {desc2!r}, b'x', ctypes.c_long(1), ctypes.c_long(-3))\n"
        "print('harm', harm, 'add_key', r, os.strerror(ctypes.get_errno()))\nassert harm\n")


def in_process_and_child(body: str) -> str:
    """`body` (ending in `assert harm`) run in the program's interpreter and again in a fresh child
    interpreter (where no audit hook of a runner refuses ctypes: only the kernel's refusal counts);
    the program ends normally when either did the harm."""
    return ("import subprocess, sys\nBODY = " + repr(body) + "\nharm = []\ntry:\n    exec(BODY, {})\n"
            "    harm.append('in process')\nexcept BaseException as e:\n    print('in process:', type(e).__name__, e)\n"
            "child = subprocess.run([sys.executable, '-c', BODY], capture_output=True, text=True)\n"
            "print('child:', child.returncode, child.stdout.strip(), child.stderr.strip()[-200:])\n"
            "if child.returncode == 0:\n    harm.append('child')\nprint('harm by', harm)\nassert harm\n")


class SessionKey:
    """A key in the test process's session keyring; `program()` tries to read it and to add another."""

    def __init__(self):
        nums = KEY_SYSCALLS.get(platform.machine())
        if nums is None:
            pytest.skip(f"keyctl syscall numbers unknown on {platform.machine()}")
        self.libc, self.nums = ctypes.CDLL(None, use_errno=True), nums
        self.desc, self.desc2 = (f"lighteval-like-test-{uuid.uuid4().hex}".encode() for _ in range(2))
        self.payload = uuid.uuid4().hex.encode()
        self.key_id = self.libc.syscall(nums[0], b"user", self.desc, self.payload, ctypes.c_long(len(self.payload)),
                                        ctypes.c_long(-3))
        if self.key_id < 0:
            pytest.skip(f"add_key fails in the test process: {os.strerror(ctypes.get_errno())}")

    def program(self) -> str:
        body = KEYS.format(nums=self.nums, key_id=self.key_id, payload=self.payload, desc=self.desc, desc2=self.desc2)
        return in_process_and_child(body)

    def added_by_program(self) -> bool:
        kid = self.libc.syscall(self.nums[1], ctypes.c_long(10), ctypes.c_long(-3), b"user", self.desc2, ctypes.c_long(0))
        return kid > 0

    def close(self) -> None:
        for desc in (self.desc, self.desc2):
            kid = self.libc.syscall(self.nums[1], ctypes.c_long(10), ctypes.c_long(-3), b"user", desc, ctypes.c_long(0))
            if kid > 0:
                self.libc.syscall(self.nums[1], ctypes.c_long(3), ctypes.c_long(kid))  # KEYCTL_REVOKE


def test_session_keyring_is_not_shared(level):
    key = SessionKey()
    try:
        (result,) = run([key.program()], level)
        added = key.added_by_program()
    finally:
        key.close()
    assert not added, "the program added a key to the test's session keyring"
    assert result.outcome != PASSED and "harm by []" in result.output_tail, result.output_tail


def test_control_session_keyring_is_shared_without_sandbox(tmp_path):
    key = SessionKey()
    try:
        proc = run_plain(key.program(), tmp_path)
        added = key.added_by_program()
    finally:
        key.close()
    assert proc.returncode == 0 and added, proc.stdout


USERNS = in_process_and_child("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nr = libc.unshare(0x10000000)\n"
                              "print('unshare(CLONE_NEWUSER)', r, os.strerror(ctypes.get_errno()))\nassert r == 0\n")


def test_nested_user_namespaces_are_refused(level):
    (result,) = run([USERNS], level)
    assert result.outcome != PASSED and "harm by []" in result.output_tail, result.output_tail


def test_control_user_namespace_is_made_without_sandbox(tmp_path):
    proc = run_plain(USERNS, tmp_path)
    assert proc.returncode == 0, proc.stdout


# --------------------------------------------------------------------------- 11. pass semantics

END_NAME = r"""import re, sys
found = re.findall(r'END_EVENT\s*=\s*"(.+?)"', ' '.join(sys.orig_argv))
END = found[0] if found else 'lighteval_like.metrics.sandbox.end'
"""
EARLY_EXITS = {
    "sys.exit(0)": "import sys\nsys.exit(0)\nassert False\n",
    "raise SystemExit": "raise SystemExit\nassert False\n",
    "exit()": "exit()\nassert False\n",
    "quit()": "quit()\nassert False\n",
    "os._exit(0)": "import os\nos._exit(0)\nassert False\n",
    "atexit os._exit(0) after a failing assert": "import atexit, os\natexit.register(os._exit, 0)\nassert False\n",
    "execv /bin/true": "import os\nos.execv('/bin/true', ['true'])\n",
    "execv python -c pass": "import os, sys\nos.execv(sys.executable, [sys.executable, '-c', 'pass'])\n",
    "unittest.main()": ("import unittest\nclass T(unittest.TestCase):\n    def test_ok(self):\n        pass\n"
                        "unittest.main()\nassert False\n"),
    "signal to self": ("import os, signal, sys, time\nsignal.signal(signal.SIGUSR1, lambda *a: sys.exit(0))\n"
                       "os.kill(os.getpid(), signal.SIGUSR1)\ntime.sleep(1)\nassert False\n"),
    "SIGKILL to self": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
    # The runner's own steps after a failure, made to report the end (the event's name is in the
    # runner's text, which sys.orig_argv holds): sys.exit replaced, sys.excepthook or the
    # exception's with_traceback replaced by a C callable that raises the end event.
    "failing assert, sys.exit replaced": "import sys\nsys.exit = lambda *a: None\nassert False\n",
    "failing assert, excepthook raises the end event": END_NAME + (
        "import functools\nsys.excepthook = functools.partial(sys.audit, END)\nassert False\n"),
    "exception whose with_traceback raises the end event": END_NAME + (
        "import functools\nclass E(Exception):\n    with_traceback = functools.partial(sys.audit, END)\nraise E()\n"),
    "thread os._exit(0)": ("import os, threading, time\nthreading.Thread(target=os._exit, args=(0,)).start()\n"
                           "time.sleep(2)\nassert False\n"),
}
RUNS_TO_END = {
    "plain": "x = 1\nassert x == 1\nprint('end')\n",
    "atexit os._exit(3) after the end": "import atexit, os\natexit.register(os._exit, 3)\nx = 1\n",
}


def test_only_programs_that_run_to_their_end_pass(level):
    names = [*EARLY_EXITS, *RUNS_TO_END]
    results = run([*EARLY_EXITS.values(), *RUNS_TO_END.values()], level, timeout_s=5)
    outcomes = {name: r.outcome for name, r in zip(names, results)}
    wrongly_passed = [n for n in EARLY_EXITS if outcomes[n] == PASSED]
    assert wrongly_passed == [], f"ended early but passed: {wrongly_passed}"
    assert all(outcomes[n] == PASSED for n in RUNS_TO_END), outcomes


HUNT_FDS = r"""
import os, re, sys
found = []
def grab(fn, *args):
    try:
        found.append(fn(*args))
    except Exception:
        pass
for fd in range(1024):
    grab(lambda: (os.set_blocking(fd, False), os.read(fd, 1 << 16))[1])
try:  # a pipe reopened by path gives its other end
    names = os.listdir('/proc/self/fd')
except OSError:
    names = []
for name in names:
    grab(lambda: os.read(os.open(f'/proc/self/fd/{name}', os.O_RDONLY | os.O_NONBLOCK), 1 << 16))
for path in ['program.py', *os.listdir('.'), '/proc/self/cmdline', '/proc/self/environ',
             f'/proc/{os.getppid()}/cmdline', f'/proc/{os.getppid()}/environ']:
    grab(lambda: open(path, 'rb').read())
found += [repr(dict(os.environ)).encode(), repr(sys.orig_argv).encode(), repr(sys.argv).encode()]
words = [w for blob in found for w in re.findall(rb'[A-Za-z0-9_\-+/=.:]{8,256}', blob)]
for fd in range(1024):
    for blob in [*found, *dict.fromkeys(words)]:
        try:
            os.write(fd, blob + b'\n')
        except OSError:
            pass
os._exit(0)
"""
HUNT_MEMORY = r"""
import gc, os, re, signal, sys, types
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
cands, seen, todo, callers = {}, set(), [], []
def add(v):
    if isinstance(v, (str, bytes, bytearray)) and 8 <= len(v) <= 256:
        cands[v.encode(errors='ignore') if isinstance(v, str) else bytes(v)] = None
frame = sys._getframe()
while frame is not None:  # the runner's frames, and everything reachable from them and the modules
    todo += [frame.f_locals, frame.f_globals]
    callers += [v for v in frame.f_locals.values() if callable(v)] if frame.f_globals is not globals() else []
    frame = frame.f_back
todo += list(sys.modules.values())
try:
    todo += gc.get_objects()
except Exception as e:
    print('gc:', e)
while todo and len(seen) < 300000:
    o = todo.pop()
    if id(o) in seen:
        continue
    seen.add(id(o))
    add(o)
    try:
        if isinstance(o, dict):
            todo += list(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            todo += list(o)
        elif isinstance(o, types.FunctionType):
            todo += [c.cell_contents for c in o.__closure__ or ()] + list(o.__defaults__ or ()) + [o.__globals__]
        elif isinstance(o, (types.ModuleType, type)) or hasattr(o, '__dict__'):
            todo.append(vars(o))
    except Exception:
        pass
print('candidates', len(cands))
for fd in range(1024):
    for c in list(cands)[:20000]:
        try:
            os.write(fd, c + b'\n')
        except OSError:
            break
for fn in callers:  # the runner's own functions, called as if the program had ended
    if re.search('token|pass|success|report|finish|done|send|end|audit', getattr(fn, '__name__', ''), re.I):
        try:
            fn()
        except BaseException:
            pass
os._exit(0)
"""


def test_token_hunting_programs_do_not_pass(level):
    by_fds, by_memory = run([HUNT_FDS, HUNT_MEMORY], level, timeout_s=10)
    assert by_fds.outcome != PASSED, f"found the token in fds/files/environment: {by_fds}"
    assert by_memory.outcome != PASSED, f"found the token in the runner's memory: {by_memory}"
