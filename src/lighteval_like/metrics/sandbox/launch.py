"""The command line that puts the runner into a level's isolation, and the runner's settings.

`bwrap`: a new root holding only the system libraries, the dynamic loader's cache, the
interpreter with its standard library (its site-packages hidden) and an empty /tmp where the
runner mounts the work folder; a minimal /dev, no /proc, no /run, no home, project or data
folder; own network (loopback only), pid, ipc, uts and cgroup namespaces. `unshare`: own network,
pid, ipc, uts and mount namespaces on the host's filesystem, where the runner hides the
world-writable folders, /run, /proc, home folders, the harness's folders and the data. `none`: no namespace (root only: a uid per program).
Every level starts the runner under a cgroup of its own when the machine has them.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lighteval_like.metrics.sandbox.runner as runner
from lighteval_like.api.errors import UsageError
from lighteval_like.metrics.sandbox.policy import Isolation

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
PYTHON_ENV = "LIGHTEVAL_LIKE_SANDBOX_PYTHON"  # another interpreter for the programs
WORK = "/tmp/work"  # the work folder's path inside the namespace levels
SYSTEM_LIBS = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/lib", "/lib64", "/lib32")
SHARED_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run")  # private at level unshare
HIDDEN_DIRS = ("/home", "/root", "/mnt", "/media", "/srv")  # hidden at level unshare, with hidden_dirs()
JOIN_CGROUPS = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


def tool(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", SAFE_PATH) + ":/usr/sbin:/sbin:" + SAFE_PATH)


def is_root() -> bool:
    return os.geteuid() == 0


LAYOUT = ("import json, os, sys, sysconfig\n"
          "base = {'base': sys.base_prefix, 'platbase': sys.base_exec_prefix, 'installed_base': sys.base_prefix}\n"
          "print(json.dumps({'executable': os.path.realpath(sys.executable), 'prefixes': [sys.base_prefix, "
          "sys.base_exec_prefix], 'stdlib': [sysconfig.get_path(k, vars=base) for k in ('stdlib', 'platstdlib')], "
          "'libdir': sysconfig.get_config_var('LIBDIR'), 'soname': sysconfig.get_config_var('INSTSONAME')}))")


def interpreter() -> str:
    """The interpreter programs run with: $LIGHTEVAL_LIKE_SANDBOX_PYTHON, else this one's base
    interpreter (a virtual environment's python resolves to it): only a standard library."""
    return os.path.realpath(os.environ.get(PYTHON_ENV) or sys.executable)


@functools.cache
def _layout(python: str) -> dict:
    """Where `python` keeps its binary, prefixes, standard library and libpython (asked of it once)."""
    try:
        out = subprocess.run([python, "-I", "-c", LAYOUT], capture_output=True, text=True, timeout=30, check=True)
        return json.loads(out.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        raise UsageError(f"{python} cannot run as the sandbox's interpreter ({e}); set {PYTHON_ENV} to a "
                         "working python3, or unset it") from e


def interpreter_paths() -> list[str]:
    """What the interpreter needs besides system libraries: its binary, standard library and libpython."""
    layout = _layout(interpreter())
    paths = {layout["executable"], *map(os.path.realpath, layout["stdlib"])}
    if layout["libdir"] and layout["soname"] and os.path.exists(os.path.join(layout["libdir"], layout["soname"])):
        paths.add(os.path.realpath(os.path.join(layout["libdir"], layout["soname"])))
    paths = {p for p in paths if not any(p == d or p.startswith(d + "/") for d in SYSTEM_LIBS)}
    return sorted(p for p in paths if not any(p.startswith(q + "/") for q in paths))


def interpreter_prefixes() -> list[str]:
    """The interpreter's installation folders (kept reachable at level unshare)."""
    layout = _layout(interpreter())
    paths = {*map(os.path.realpath, layout["prefixes"]), os.path.dirname(layout["executable"])}
    return sorted(p for p in paths if not any(p.startswith(q + "/") for q in paths))


def hidden_dirs() -> list[str]:
    """What level unshare hides behind empty folders: home folders, the current folder, the folder
    holding this package, the data mirror and Hugging Face caches named in the environment (never
    a system folder or one that holds one)."""
    env = os.environ
    candidates = [*HIDDEN_DIRS, os.getcwd(), os.path.expanduser("~"), str(Path(__file__).resolve().parents[3]),
                  *(env.get(k) for k in ("LIGHTEVAL_LIKE_DATA_DIR", "HF_HOME", "HF_DATASETS_CACHE", "XDG_CACHE_HOME"))]
    system = [*SYSTEM_LIBS, "/", "/usr", "/etc", "/bin", "/sbin", "/dev", "/proc", "/sys", "/tmp", "/var", "/run"]
    found = {os.path.realpath(c) for c in candidates if c and os.path.isdir(c)}
    return sorted(c for c in found if not any(s == c or s.startswith(c.rstrip("/") + "/") for s in system))


def _hidden_packages(paths: list[str]) -> list[str]:
    """Installed packages in what bwrap shows: the interpreter's and the system's Pythons'."""
    folders = [p for p in map(Path, paths) if p.is_dir()] + sorted(Path("/usr/lib").glob("python3*"))
    return [str(p / name) for p in folders for name in ("site-packages", "dist-packages") if (p / name).is_dir()]


def _with_parents(cmd: list[str], made: set[str], path: str) -> list[str]:
    """Make `path`'s missing parents searchable by the program (bwrap would make them 0700)."""
    for parent in map(str, reversed(Path(path).parents[:-1])):
        if parent not in made:
            made.add(parent)
            cmd += ["--perms", "0755", "--dir", parent]
    return cmd


def _bwrap(work_bytes: int) -> list[str]:
    cmd, made = [tool("bwrap") or "bwrap"], set()
    for lib in SYSTEM_LIBS:
        if os.path.islink(lib):
            _with_parents(cmd, made, lib).extend(["--symlink", os.readlink(lib), lib])
        elif os.path.isdir(lib):
            _with_parents(cmd, made, lib).extend(["--ro-bind", lib, lib])
    for path in ["/etc/ld.so.cache", *interpreter_paths()]:
        if os.path.exists(path):
            _with_parents(cmd, made, path).extend(["--ro-bind", path, path])
    for path in _hidden_packages(interpreter_paths()):
        cmd += ["--tmpfs", path, "--remount-ro", path]
    cmd += ["--dev", "/dev", "--perms", "0755", "--tmpfs", "/tmp"]
    if not is_root():  # no mount in the runner: bwrap makes the capped work folder
        cmd += ["--perms", "0700", "--size", str(work_bytes), "--tmpfs", WORK]
    cmd += ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--chdir", "/"]
    if is_root():  # for the runner's mount and uid change; it drops them all before the program
        for cap in ("CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"):
            cmd += ["--cap-add", cap]
    else:
        cmd += ["--unshare-user", "--disable-userns"]
    return [*cmd, "--"]


def _unshare() -> list[str]:
    cmd = [tool("unshare") or "unshare", "--net", "--pid", "--ipc", "--uts", "--mount", "--fork", "--kill-child",
           "--mount-proc", "--propagation", "private"]
    if not is_root():
        cmd.append("--map-root-user")
    # A shell as the namespace's init, so the program is not pid 1 (which ignores signals).
    return [*cmd, "--", "/bin/sh", "-c", '"$@"; exit $?', "sh"]


def runner_mounts_work(level: Isolation) -> bool:
    """Whether the runner mounts the work tmpfs (capped in files too): where it starts as root of
    the namespace; bwrap without root makes it itself (capped in bytes only)."""
    return level is Isolation.UNSHARE or (level is Isolation.BWRAP and is_root())


def settings(level: Isolation, uid: int | None, workdir: str | None, limits, rlimits: dict, fds: tuple[int, int]) -> dict:
    """The runner's settings (see runner.py)."""
    namespaced = level is not Isolation.NONE
    return {
        "uid": uid, "work": WORK if namespaced else workdir, "mount_work": runner_mounts_work(level),
        "work_bytes": limits.work_bytes, "work_files": limits.work_files,
        "private_dirs": [d for d in SHARED_DIRS if os.path.isdir(d)] if level is Isolation.UNSHARE else [],
        "hide": hidden_dirs() if level is Isolation.UNSHARE else [],
        "keep": interpreter_prefixes() if level is Isolation.UNSHARE else [],
        "hide_proc": level is Isolation.UNSHARE, "rlimits": rlimits,
        "program_fd": fds[0], "result_fd": fds[1],
    }


def command(level: Isolation, cfg: dict, procs_files: list[str]) -> list[str]:
    """Join the cgroups (if any), enter the level's namespaces, start the runner."""
    join = ["/bin/sh", "-c", JOIN_CGROUPS, "sh", *procs_files, "--"] if procs_files else []
    wrapper = {Isolation.BWRAP: lambda: _bwrap(cfg["work_bytes"]), Isolation.UNSHARE: _unshare}.get(level, list)()
    source = Path(runner.__file__).read_text(encoding="utf-8")
    return [*join, *wrapper, interpreter(), "-I", "-u", "-B", "-c", source, json.dumps(cfg)]


def missing_tools(level: Isolation) -> list[str]:
    need = {Isolation.BWRAP: ["bwrap"], Isolation.UNSHARE: ["unshare"]}.get(level, [])
    return [t for t in need if tool(t) is None]
