"""What a program can reach at each isolation level that works here, as figures.

For every level of `available_isolations()` this runs one probing program per question and prints
what it managed: the memory its processes held together (4 children of 300 MB each under a
512 MiB limit), the files and bytes it could put in its work folder (caps 8 MiB, 500 files), the
processes it could start (cap 64), whether it reached a TCP listener on 127.0.0.1 and a pathname
unix socket under /run made by this script, which host paths it could see, its uid, and whether
/etc/shadow was readable. tests/test_sandbox_hostile.py asserts each of these; this prints them.

    python benchmarks/sandbox_containment.py
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import uuid

from lighteval_like.metrics.sandbox import Limits, available_isolations, describe, run_programs

MiB = 1024**2
LIMITS = Limits(memory_bytes=512 * MiB, work_bytes=8 * MiB, work_files=500)

MEMORY = """
import os, time
kids = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        x = bytearray(300 * 1024 * 1024)
        x[::4096] = b'x' * len(x[::4096])
        time.sleep(1)
        os._exit(0)
    kids.append(pid)
codes = [os.waitpid(k, 0)[1] for k in kids]
print(json.dumps({"children_that_held_300MB": sum(c == 0 for c in codes), "killed": sum(c != 0 for c in codes)}))
"""
FILES = """
made = 0
try:
    while made < 100000:
        open(f"f{made}", "w").close()
        made += 1
except OSError:
    pass
for i in range(made):
    os.unlink(f"f{i}")
wrote = 0
try:
    with open("big", "wb") as f:
        while wrote < 200 * 1024 * 1024:
            f.write(b"x" * 1048576)
            f.flush()
            wrote += 1048576
except OSError:
    pass
print(json.dumps({"files": made, "bytes_written": wrote}))
"""
PROCESSES = """
import time
n = 0
try:
    while n < 1000:
        if os.fork() == 0:
            time.sleep(3)
            os._exit(0)
        n += 1
except OSError:
    pass
print(json.dumps({"processes_started": n}))
"""


def _reach(port: int, unix_path: str, paths: list[str]) -> str:
    return f"""
import socket
out = {{"uid": os.getuid()}}
for name, family, addr in (("tcp_127.0.0.1", socket.AF_INET, ("127.0.0.1", {port})), ("unix_/run", socket.AF_UNIX, {unix_path!r})):
    try:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(1)
        s.connect(addr)
        s.sendall(b"x")
        out[name] = "reached"
    except OSError as e:
        out[name] = type(e).__name__
out["visible"] = [p for p in {paths!r} if os.path.exists(p)]
try:
    open("/etc/shadow").read()
    out["etc_shadow"] = "read"
except OSError as e:
    out["etc_shadow"] = type(e).__name__
print(json.dumps(out))
"""


def main() -> None:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [repo, os.path.join(os.path.dirname(repo), "shared", "data"), os.path.expanduser("~"), "/run",
             os.path.dirname(sys.modules["lighteval_like"].__file__), sys.prefix]
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(8)
    unix_path = f"/run/lighteval-like-probe-{uuid.uuid4().hex[:8]}.sock"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(unix_path)
    os.chmod(unix_path, 0o777)
    unix.listen(8)
    try:
        probes = [MEMORY, FILES, PROCESSES, _reach(tcp.getsockname()[1], unix_path, paths)]
        for level in available_isolations():
            results = run_programs(["import json, os\n" + p for p in probes], timeout_s=20, isolation=level,
                                   limits=LIMITS, workers=1)
            print(f"== {level.value}: {json.dumps(describe(level, LIMITS))}")
            for r in results:
                print("  ", r.output_tail.splitlines()[-1] if r.output_tail else f"{r.outcome} {r.detail}")
    finally:
        os.unlink(unix_path)
    print("work folder of the host's temp dir left:", [n for n in os.listdir(tempfile.gettempdir())
                                                      if n.startswith("lighteval_like")])


if __name__ == "__main__":
    main()
