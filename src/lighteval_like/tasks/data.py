"""Load a task's split: from a local hub mirror when configured (read by Arrow), else the hub (by `datasets`).

Mirror layout (see the project README): `<root>/<hf_repo>/<hf_subset or default>/<split>.jsonl`, or
`<split>.parquet` with the hub's columns (image datasets: an image is a struct of `bytes` and `path`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlparse

from lighteval_like.api.errors import DatasetUnavailableError, one_line
from lighteval_like.tasks.config import TaskConfig

DATA_DIR_ENV = "LIGHTEVAL_LIKE_DATA_DIR"
logger = logging.getLogger(__name__)
# Where few-shot examples come from when a task's own few-shot split is missing, in order.
FALLBACK_FEWSHOT_SPLITS = ("train", "validation", "test")
OFFLINE_ENVS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
HUB_PROBE_TIMEOUT_S = 3.0


def hub_unreachable() -> bool:
    """True when the hub surely cannot answer: offline not asked for, no proxy, and no TCP
    connection to it within a few seconds. `datasets` would otherwise spend half a minute on
    retries (with a warning each) before failing."""
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in OFFLINE_ENVS):
        return False  # `datasets` then fails fast (or serves its cache) by itself
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return False  # the proxy, not a direct connection, decides
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError:
        return True
    return False


def damaged_line(path: str) -> str | None:
    """'line N: <problem>' for the first line of a JSON-lines file that is not one JSON object."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                if not isinstance(json.loads(line), dict):
                    return f"line {lineno}: not a JSON object"
            except ValueError as e:
                return f"line {lineno}: {e}"
    return None


def _read_json_lines(path: str) -> list[dict] | None:
    """A mirror file's rows as `datasets` gives them (the same Arrow reader, the schema inferred
    from the whole file), without importing `datasets` (over a second of every run's start);
    None where Arrow cannot read it (a damaged line, a column whose type changes) or where an
    object lacks a key that others have (`datasets` then leaves the key out), for `datasets`."""
    import pyarrow as pa
    import pyarrow.json as pa_json

    options = pa_json.ReadOptions(block_size=max(os.path.getsize(path), 1 << 20))
    try:
        table = pa_json.read_json(path, read_options=options)
    except pa.ArrowException:
        return None
    if any(_has_partial_objects(chunk) for column in table.columns for chunk in column.chunks):
        return None
    return table.to_pylist()


def _has_partial_objects(array) -> bool:
    """Whether some object in `array` (nested in objects and lists too) lacks one of its keys."""
    import pyarrow as pa

    if pa.types.is_struct(array.type):
        children = [array.field(i) for i in range(array.type.num_fields)]
        return any(c.null_count > array.null_count or _has_partial_objects(c) for c in children)
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        return _has_partial_objects(array.flatten())
    return False


def _read_parquet(path: str, name: str) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as e:
        raise DatasetUnavailableError(f"{name}: mirror file {path} is not readable Parquet ({one_line(e)}); "
                                      "repair or re-download that file") from e


def _undecoded_images(dataset):
    """A hub dataset whose image columns stay as stored (a struct of `bytes` and `path`), so a
    doc's image is the dataset's own bytes, decoded once by the model that reads it."""
    import datasets

    for column, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
    return dataset


def _os_error(error: BaseException) -> OSError | None:
    """The OSError behind `error` (`datasets` wraps a full disk in its own error types)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno is not None:
            return error
        error = error.__cause__ or error.__context__
    return None


@dataclass(frozen=True)
class DataSource:
    """Where datasets come from: `data_dir` (a mirror) first, then the hub."""

    data_dir: str | None = None
    cache_dir: str | None = None
    num_proc: int | None = None

    @classmethod
    def from_env(cls, data_dir: str | None = None, **kwargs) -> DataSource:
        return cls(data_dir=data_dir or os.environ.get(DATA_DIR_ENV) or None, **kwargs)

    def mirror_path(self, hf_repo: str, hf_subset: str | None, split: str) -> str | None:
        """The split's mirror file: its `.jsonl`, else its `.parquet` where only that exists."""
        if not self.data_dir:
            return None
        stem = os.path.join(self.data_dir, hf_repo, hf_subset or "default", split)
        return stem + ".parquet" if os.path.isfile(stem + ".parquet") and not os.path.isfile(stem + ".jsonl") \
            else stem + ".jsonl"

    def load_rows(self, task: TaskConfig, split: str, limit: int | None = None) -> list[dict]:
        """Rows of one split that pass the task's `row_filter`, the first `limit` only when given
        (as lm-eval's --limit, which counts docs after its process_docs filter)."""
        if task.data_builder is not None:
            rows = task.data_builder(split)
        else:
            rows = task.data_files(self.data_dir, split) if task.data_files is not None else self._load(task, split)
        rows = [r for r in rows if task.row_filter is None or task.row_filter(r)]
        return rows[:limit] if limit is not None else rows

    def load_fewshot_rows(self, task: TaskConfig) -> tuple[list[dict], str]:
        """The few-shot pool's rows and the split they came from.

        A mirror that holds the task's evaluation split but not its few-shot split (a mirror of
        evaluation splits only) serves its first split of train, validation, test instead, as
        lm-eval and lighteval choose when a task names none, with a warning. The hub is not
        asked then, so an offline run does not wait on its retries.
        """
        split = task.fewshot_split
        if task.data_builder is None and split != task.evaluation_split:
            if self._mirror_has(task, task.evaluation_split) and not self._mirror_has(task, split):
                candidates = (*FALLBACK_FEWSHOT_SPLITS, task.evaluation_split)
                fallback = next(s for s in candidates if self._mirror_has(task, s))
                logger.warning(
                    "%s: the mirror has no few-shot split '%s' (%s); few-shot examples come from '%s'%s, "
                    "so scores differ from runs that draw them from '%s'",
                    task.full_name, split, self.mirror_path(task.hf_repo, task.hf_subset, split), fallback,
                    " (each doc's own row excluded)" if fallback == task.evaluation_split else "", split,
                )
                split = fallback
        return self.load_rows(task, split), split

    def _mirror_has(self, task: TaskConfig, split: str) -> bool:
        path = self.mirror_path(task.hf_repo, task.hf_subset, split)
        return path is not None and os.path.isfile(path)

    def _load(self, task: TaskConfig, split: str) -> list[dict]:
        path = self.mirror_path(task.hf_repo, task.hf_subset, split)
        name = f"dataset {task.hf_repo}/{task.hf_subset or 'default'} split '{split}' for task {task.full_name}"
        mirrored = self._mirror_has(task, split)
        if mirrored and path.endswith(".parquet"):
            return _read_parquet(path, name)
        rows = _read_json_lines(path) if mirrored else None
        if rows is not None:
            return rows
        import datasets

        if mirrored:
            try:
                return datasets.load_dataset(
                    "json", data_files={split: path}, split=split, cache_dir=self.cache_dir, num_proc=self.num_proc
                ).to_list()
            except Exception as e:  # `datasets` reports bad JSON and IO as several types
                raise self._unreadable(name, e, f"mirror file {path}", damaged_line(path)) from e
        where = f"no file {path} in the mirror, and " if path else ""
        fix = (f"Offline, set {DATA_DIR_ENV} (or --dataset_dir) to a mirror laid out as "
               f"<root>/<hf_repo>/<subset or default>/<split>.jsonl (or .parquet)")
        if hub_unreachable():
            raise DatasetUnavailableError(f"{name} is unavailable: {where}the hub is unreachable. {fix}")
        try:
            return _undecoded_images(datasets.load_dataset(
                task.hf_repo, task.hf_subset, split=split, revision=task.hf_revision,
                cache_dir=self.cache_dir, num_proc=self.num_proc,
            )).to_list()
        except Exception as e:  # hub errors come in many types (connection, missing split, auth)
            if _os_error(e) is not None:
                raise self._unreadable(name, e, "the hub", None) from e
            raise DatasetUnavailableError(
                f"{name} is unavailable: {where}the hub failed ({type(e).__name__}). {fix}"
            ) from e

    def _unreadable(self, name: str, error: Exception, source: str, damage: str | None) -> DatasetUnavailableError:
        """One line for a load that failed on damaged data or on the disk (a full cache folder)."""
        if damage:
            return DatasetUnavailableError(
                f"{name}: {source} is damaged at {damage}; repair or re-download that file")
        os_error = _os_error(error)
        if os_error is not None:
            where = os_error.filename or self.cache_dir or "the datasets cache"
            return DatasetUnavailableError(
                f"{name}: cannot load from {source}: writing '{where}' failed: {os_error.strerror or os_error}; "
                f"free space there or pass --cache_dir <folder with room>")
        return DatasetUnavailableError(f"{name}: cannot load {source}: {type(error).__name__}: {one_line(error)}")
