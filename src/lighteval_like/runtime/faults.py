"""Fail-fast handling of a rank's error under torchrun."""

from __future__ import annotations

import os
import sys
import time
import traceback
import typing

import torch.distributed as dist

from lighteval_like.api.errors import LightevalLikeError
from lighteval_like.runtime.launch import TorchrunEnv

# How long a rank that only lost contact with a peer waits before leaving: long enough for
# torchrun's agent (polling every 0.1 s) to see the failing rank exit first and stop this one.
PEER_FAILURE_GRACE_S = 10.0


def _is_peer_failure(error: BaseException) -> bool:
    """A collective failed because another rank is gone (gloo reports it as a RuntimeError)."""
    text = str(error)
    return isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError) and "/gloo/transport/" in text and "peer" in text.lower()
    )


def _describe(error: BaseException, debug: bool, peer_failure: bool) -> tuple[int, str]:
    """(exit code, message) of a rank's error; unexpected errors print their traceback."""
    if isinstance(error, LightevalLikeError):
        return error.exit_code, str(error)
    if isinstance(error, KeyboardInterrupt):
        return 130, "interrupted"
    if peer_failure:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return 1, f"lost contact with another rank ({first}); the first failing rank's error is the cause"
    if not debug:
        traceback.print_exception(error)
    return 1, f"{type(error).__name__}: {error}"


def fail_rank(error: BaseException, env: TorchrunEnv, debug: bool = False) -> typing.NoReturn:
    """Report this rank's error and leave without waiting on any collective.

    os._exit skips interpreter teardown (which could block on the process group); torchrun's
    agent sees the exit and stops the other ranks, and a peer blocked in a collective with
    this rank fails as its connection closes. The error is also written to torchrun's error
    file, so its final summary names this rank and message. A rank failing only because a
    peer is gone writes no error file and waits a moment: torchrun names the failure with the
    earliest timestamp (whole seconds, ties to the lowest rank) as the root cause, and that
    must be the peer's own error, not this echo of it.
    """
    peer_failure = _is_peer_failure(error)
    if debug:
        traceback.print_exception(error)
    code, message = _describe(error, debug, peer_failure)
    print(f"lighteval-like: error (rank {env.rank}/{env.world_size}): {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    if peer_failure:
        time.sleep(PEER_FAILURE_GRACE_S)
        os._exit(code)
    try:
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        ErrorHandler().record_exception(error)
    except Exception:  # the report above is what matters; the error file is a courtesy
        pass
    os._exit(code)
