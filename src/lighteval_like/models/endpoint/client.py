"""HTTP to the server: JSON posts spread over the base URLs (or their servers' roots, where vLLM's
`/tokenize` sits), with bounded retries.

429 (its Retry-After honoured), 5xx, connection resets, timeouts and truncated bodies are retried
up to `max_retries` times with exponential backoff and jitter; a URL that fails is left out of
the rotation for a while. Any other HTTP error, or retries exhausted, is one `EndpointError`.
The API key is read from the environment when sent and never kept anywhere else."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import random
import threading
import time
import urllib.error
import urllib.request

from lighteval_like.api.errors import LightevalLikeError

BACKOFF_S = 1.0  # the first retry's wait; doubled at each retry, with up to 50% jitter
MAX_WAIT_S = 60.0
BENCH_S = 30.0  # how long a failing URL is left out of the rotation
RETRIED = (ConnectionError, TimeoutError, http.client.HTTPException, urllib.error.URLError, json.JSONDecodeError)


class EndpointError(LightevalLikeError):
    """The server refused, failed or answered what cannot be scored; `status` is the HTTP code
    of a refusal (None for any other failure)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def server_root(base_url: str) -> str:
    """The server's own root (vLLM's /tokenize, /detokenize): the base URL less its trailing /v1."""
    return base_url.removesuffix("/v1")


class Retry(Exception):
    """A failure worth retrying; `wait` is what the server asked for (Retry-After), if anything."""

    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.wait = wait


class Client:
    def __init__(self, base_urls: list[str], api_key_env: str | None, timeout_s: float, max_retries: int):
        self.base_urls = base_urls
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._turn = itertools.count()
        self._benched: dict[str, float] = {}  # URL -> when it may serve again
        self._lock = threading.Lock()
        self.retries = 0

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise EndpointError(f"api_key_env={self.api_key_env} names an unset environment variable: "
                                    f"export {self.api_key_env}=<key>")
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _pick(self) -> str:
        with self._lock:
            now = time.monotonic()
            healthy = [u for u in self.base_urls if self._benched.get(u, 0.0) <= now] or self.base_urls
            return healthy[next(self._turn) % len(healthy)]

    def _bench(self, url: str) -> None:
        if len(self.base_urls) > 1:
            with self._lock:
                self._benched[url] = time.monotonic() + BENCH_S

    def _once(self, target: str, body: dict | None) -> dict:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(target, data=data, headers=self._headers(), method="GET" if body is None else "POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")[:300].replace("\n", " ")
            if e.code == 429 or e.code >= 500:
                retry_after = e.headers.get("Retry-After")
                raise Retry(f"HTTP {e.code}", float(retry_after) if retry_after and retry_after.isdigit() else None) from e
            raise EndpointError(f"{target} answered HTTP {e.code}: {text}", e.code) from e
        except RETRIED as e:
            raise Retry(f"{type(e).__name__}: {e}") from e

    def request(self, path: str, body: dict | None = None, root: bool = False) -> dict:
        """The JSON answer of `path` (a GET without a body) under a base URL, or under its server's
        root with `root`, retried as the module says."""
        attempt = 0
        while True:
            url = self._pick()
            target = (server_root(url) if root else url) + path
            try:
                return self._once(target, body)
            except Retry as e:
                if e.wait is None:
                    self._bench(url)
                if attempt == self.max_retries:
                    raise EndpointError(
                        f"{target} still failing after {self.max_retries} retries ({e}): check the server, or "
                        "raise max_retries/timeout_s; finished requests are cached, so a rerun resumes") from e
                self.retries += 1
                backoff = min(MAX_WAIT_S, BACKOFF_S * 2 ** attempt) * (1 + random.random() / 2)
                time.sleep(e.wait if e.wait is not None else backoff)
                attempt += 1
