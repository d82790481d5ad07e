"""Persistent per-request response cache, so a run that dies is resumed instead of restarted.

One SQLite database (standard library) per model fingerprint, in `response_cache_dir()`:

    <fingerprint>.sqlite            written by the main process; shards are merged into it
    <fingerprint>.rank<N>.sqlite    written by rank N > 0 of a data-parallel run

A row maps a request key (request type and fields) to its response (JSON; floats are
written by `repr`, so they read back bit for bit). Responses are committed as the backend
reports each finished batch (`LanguageModel.on_batch`), so a run killed at any point, even by
SIGKILL, keeps every committed batch: WAL journaling makes a commit durable against a process
crash. The main process reads every file of its fingerprint (shards of a killed run included)
and tells the other ranks what is done (execution.py); it merges the shards once every rank has
closed its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict

from lighteval_like.api.errors import CacheError
from lighteval_like.api.folders import cache_root
from lighteval_like.api.requests import GenerationResponse, LoglikelihoodResponse, Request, Response, request_identity
from lighteval_like.models.base import LanguageModel, ModelIdentity

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # part of the fingerprint: a new format never reads old files
# Model args that say where the model runs, not what it computes (and the generation parameters,
# which every generation request carries: its key has them), and an endpoint's concurrency,
# patience and the name of its key's variable.
PLACEMENT_ARGS = frozenset({"device", "model_parallel", "generation_parameters", "concurrent_requests",
                            "prompts_per_request", "timeout_s", "max_retries", "api_key_env"})
RESPONSE_TYPES: dict[str, type] = {t.__name__: t for t in (LoglikelihoodResponse, GenerationResponse)}
LOOKUP_CHUNK = 500  # keys per SELECT ... IN (...), below SQLite's variable limit

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, kind TEXT NOT NULL, response TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def response_cache_dir(cache_dir: str | None = None) -> str:
    """`<cache_dir>/responses`; the root defaults to $LIGHTEVAL_LIKE_CACHE, else ~/.cache/lighteval_like."""
    return os.path.join(cache_root(cache_dir), "responses")


def _folder_stamp(path: object, subfolder: object = None) -> list | None:
    """(name, size, mtime) of a local model folder's files: a model re-saved in place is a new model."""
    if not isinstance(path, str) or not os.path.isdir(os.path.expanduser(path)):
        return None
    root = os.path.expanduser(path)
    folders = [root] + ([os.path.join(root, str(subfolder))] if subfolder else [])
    stamp = []
    for folder in folders:
        if not os.path.isdir(folder):
            continue
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if entry.is_file():
                st = entry.stat()
                stamp.append([entry.name, st.st_size, st.st_mtime_ns])
    return stamp


def model_fingerprint(model_args: dict, identity: ModelIdentity) -> tuple[str, dict]:
    """Hash of what decides a model's answers: its args (placement aside), identity facts of the
    loaded model (hub commit, dtype, max length) and the files of a local model folder.
    Returns (hex digest, the description hashed), the description being stored for inspection."""
    description = {
        "format": FORMAT_VERSION,
        "model_args": {k: v for k, v in sorted(model_args.items()) if k not in PLACEMENT_ARGS},
        "model": asdict(identity),
        "files": {
            "pretrained": _folder_stamp(model_args.get("pretrained"), model_args.get("subfolder")),
            "tokenizer": _folder_stamp(model_args.get("tokenizer")),
        },
    }
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32], description


def request_key(request: Request) -> str:
    """A request's row key: the digest of its identity (`api.requests.request_identity`)."""
    return hashlib.sha256(request_identity(request).encode("utf-8", "surrogatepass")).hexdigest()


def encode_response(response: Response) -> str:
    return json.dumps([type(response).__name__, asdict(response)])


def decode_response(text: str) -> Response:
    name, fields = json.loads(text)
    return RESPONSE_TYPES[name](**fields)


class ResponseCache:
    """The response files of one model fingerprint, seen from one rank."""

    def __init__(self, folder: str, fingerprint: str, rank: int = 0, is_main: bool = True,
                 description: dict | None = None):
        self.folder = folder
        self.fingerprint = fingerprint
        self.main_path = os.path.join(folder, f"{fingerprint}.sqlite")
        self.path = self.main_path if is_main else os.path.join(folder, f"{fingerprint}.rank{rank}.sqlite")
        self.is_main = is_main
        self.description = description or {}
        self._conn: sqlite3.Connection | None = None

    # ------------------------------------------------------------- files
    def files(self) -> list[str]:
        """Every file of this fingerprint: the main one and any rank shards (merged or not)."""
        if not os.path.isdir(self.folder):
            return []
        names = sorted(
            n for n in os.listdir(self.folder)
            if n == f"{self.fingerprint}.sqlite"
            or (n.startswith(f"{self.fingerprint}.rank") and n.endswith(".sqlite"))
        )
        return [os.path.join(self.folder, n) for n in names]

    @staticmethod
    def _connect(path: str) -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=60)
        conn.execute("PRAGMA journal_mode=WAL")  # a commit survives a killed process
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _writer(self) -> sqlite3.Connection:
        """Own file, opened on first write (after the main process has read: see execution.py)."""
        if self._conn is None:
            try:
                os.makedirs(self.folder, exist_ok=True)
                self._conn = self._connect(self.path)
                with self._conn:
                    self._conn.executescript(SCHEMA)
                    self._conn.execute(
                        "INSERT OR REPLACE INTO meta VALUES ('model', ?)", (json.dumps(self.description, default=str),)
                    )
            except (OSError, sqlite3.Error) as e:
                self._conn = None
                raise CacheError(
                    f"cannot write the response cache '{self.path}' ({type(e).__name__}: {e}): "
                    "pass another --cache_dir, or --no_cache"
                ) from e
        return self._conn

    # ------------------------------------------------------------ reading
    def lookup(self, requests: Iterable[Request]) -> dict[Request, Response]:
        """Cached responses of the given requests, from every file of this fingerprint."""
        by_key = {request_key(r): r for r in requests}
        found: dict[Request, Response] = {}
        keys = list(by_key)
        for path in self.files():
            try:
                conn = self._connect(path)
                try:
                    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'responses'").fetchone():
                        continue  # created, killed before its schema was committed
                    for start in range(0, len(keys), LOOKUP_CHUNK):
                        chunk = keys[start : start + LOOKUP_CHUNK]
                        rows = conn.execute(
                            f"SELECT key, response FROM responses WHERE key IN ({','.join('?' * len(chunk))})", chunk
                        )
                        for key, text in rows:
                            found.setdefault(by_key[key], decode_response(text))
                finally:
                    conn.close()
            except (sqlite3.Error, ValueError, KeyError, TypeError) as e:
                raise CacheError(
                    f"response cache file '{path}' is unreadable ({type(e).__name__}: {e}): "
                    "delete it, or pass --no_cache"
                ) from e
        return found

    # ------------------------------------------------------------ writing
    def store(self, requests: Sequence[Request], responses: Sequence[Response]) -> None:
        """Commit one batch of responses (one transaction)."""
        rows = [(request_key(q), type(q).__name__, encode_response(a)) for q, a in zip(requests, responses)]
        if rows:
            conn = self._writer()
            try:
                with conn:
                    conn.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", rows)
            except sqlite3.Error as e:
                raise CacheError(
                    f"cannot write the response cache '{self.path}' ({type(e).__name__}: {e}): "
                    "pass another --cache_dir, or --no_cache"
                ) from e

    def compute(self, model: LanguageModel, method: Callable[[list], list], requests: list[Request]) -> list:
        """`method(requests)` with each batch committed as the backend reports it; a backend that
        does not report batches has its responses committed when the call returns."""
        reported = 0

        def on_batch(batch_requests: list, batch_responses: list) -> None:
            nonlocal reported
            self.store(batch_requests, batch_responses)
            reported += len(batch_requests)

        previous = model.on_batch
        model.on_batch = on_batch
        try:
            responses = method(requests)
        finally:
            model.on_batch = previous
        if reported < len(requests):
            self.store(requests, responses)
        return responses

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def merge_shards(self) -> int:
        """Main process, once every rank has closed its shard: fold the shards into the main
        file and delete them. Returns the number of shards merged."""
        shards = [p for p in self.files() if p != self.main_path]
        if not shards:
            return 0
        try:
            self._merge(self._writer(), shards)
        finally:
            self.close()
        logger.info("merged %d response cache shard(s) into %s", len(shards), self.main_path)
        return len(shards)

    @staticmethod
    def _merge(conn: sqlite3.Connection, shards: list[str]) -> None:
        for shard in shards:
            try:
                conn.execute("ATTACH DATABASE ? AS shard", (shard,))
                try:
                    has_table = conn.execute(
                        "SELECT 1 FROM shard.sqlite_master WHERE name = 'responses'"
                    ).fetchone()
                    if has_table:
                        with conn:
                            conn.execute("INSERT OR IGNORE INTO main.responses SELECT * FROM shard.responses")
                finally:
                    conn.execute("DETACH DATABASE shard")
            except sqlite3.Error as e:
                raise CacheError(
                    f"cannot merge response cache shard '{shard}' ({type(e).__name__}: {e}): "
                    "delete it, or pass --no_cache"
                ) from e
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(shard + suffix):
                    os.remove(shard + suffix)
