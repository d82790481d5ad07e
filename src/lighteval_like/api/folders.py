"""Where the harness keeps what it downloads and computes: one root folder, `--cache_dir`, else
$LIGHTEVAL_LIKE_CACHE, else ~/.cache/lighteval_like."""

from __future__ import annotations

import os

CACHE_ENV = "LIGHTEVAL_LIKE_CACHE"
DEFAULT_CACHE_ROOT = os.path.join("~", ".cache", "lighteval_like")


def cache_root(cache_dir: str | None = None) -> str:
    return os.path.expanduser(cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE_ROOT)
