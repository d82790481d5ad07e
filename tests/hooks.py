"""Test-only fault injection: runs the CLI (`python tests/hooks.py accelerate ...`, also as
torchrun's script) with hooks the environment asks for, patched in from outside the package.

- LIGHTEVAL_LIKE_TEST_FAULT="<global rank>:raise|kill": that rank raises (or SIGKILLs itself)
  at its first scoring forward, to check that the whole job then stops.
- LIGHTEVAL_LIKE_TEST_SLEEP_PER_BATCH=<seconds>: sleep after each committed cache batch, so a
  test can SIGKILL a run mid-way.
"""

from __future__ import annotations

import os
import signal
import sys
import time

FAULT_ENV = "LIGHTEVAL_LIKE_TEST_FAULT"
SLEEP_ENV = "LIGHTEVAL_LIKE_TEST_SLEEP_PER_BATCH"


def cache_rows(cache_dir: str) -> int:
    """Committed responses in every cache file under `cache_dir` (0 while none is readable yet)."""
    import glob
    import sqlite3

    from lighteval_like.evaluation.cache import response_cache_dir

    total = 0
    for path in glob.glob(os.path.join(response_cache_dir(cache_dir), "*.sqlite")):
        try:
            conn = sqlite3.connect(path, timeout=30)
            try:
                total += conn.execute("SELECT count(*) FROM responses").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.OperationalError:  # created, schema not committed yet
            pass
    return total


def run_and_kill(args: list[str], cache_dir: str, rows: int, sleep_s: float, timeout_s: float) -> int:
    """Run the CLI with `args` (sleeping `sleep_s` after each committed batch), SIGKILL it once
    `rows` responses are in the cache; its return code (an error if it ended or stalled first)."""
    import subprocess

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", SLEEP_ENV: str(sleep_s)}
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + timeout_s
        while cache_rows(cache_dir) < rows:
            if proc.poll() is not None:
                raise AssertionError(f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            if time.time() > deadline:
                raise AssertionError(f"fewer than {rows} responses committed within {timeout_s} s")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()
    return proc.returncode


def _install_fault(spec: str) -> None:
    from lighteval_like.models.transformers.model import TransformersModel

    rank, _, action = spec.partition(":")
    original = TransformersModel._forward_rows

    def forward_rows(self, *args, **kwargs):
        if os.environ.get("RANK") == rank.strip():
            print(f"lighteval-like: test fault on rank {rank} at t={time.time():.3f}: {action}", file=sys.stderr, flush=True)
            if action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"injected fault on rank {rank} ({FAULT_ENV}={spec})")
        return original(self, *args, **kwargs)

    TransformersModel._forward_rows = forward_rows


def _install_sleep(seconds: float) -> None:
    from lighteval_like.evaluation.cache import ResponseCache

    original = ResponseCache.store

    def store(self, requests, responses):
        original(self, requests, responses)
        time.sleep(seconds)

    ResponseCache.store = store


if __name__ == "__main__":
    if os.environ.get(FAULT_ENV):
        _install_fault(os.environ[FAULT_ENV])
    if os.environ.get(SLEEP_ENV):
        _install_sleep(float(os.environ[SLEEP_ENV]))
    from lighteval_like.cli.commands import main

    sys.argv = ["lighteval-like", *sys.argv[1:]]
    main()
