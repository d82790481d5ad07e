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


def _install_fault(spec: str) -> None:
    from lighteval_like.models.transformers_model import TransformersModel

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
    from lighteval_like.cache import ResponseCache

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
    from lighteval_like.cli import main

    sys.argv = ["lighteval-like", *sys.argv[1:]]
    main()
