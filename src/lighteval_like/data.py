"""Load a task's split through `datasets`: from a local hub mirror when configured, else the hub.

Mirror layout (see the project README): `<root>/<hf_repo>/<hf_subset or default>/<split>.jsonl`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from lighteval_like.errors import DatasetUnavailableError
from lighteval_like.tasks.config import TaskConfig

DATA_DIR_ENV = "LIGHTEVAL_LIKE_DATA_DIR"
logger = logging.getLogger(__name__)
# Where few-shot examples come from when a task's own few-shot split is missing, in order.
FALLBACK_FEWSHOT_SPLITS = ("train", "validation", "test")


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
        if not self.data_dir:
            return None
        return os.path.join(self.data_dir, hf_repo, hf_subset or "default", f"{split}.jsonl")

    def load_rows(self, task: TaskConfig, split: str, limit: int | None = None) -> list[dict]:
        """Rows of one split that pass the task's `row_filter`, the first `limit` only when given
        (as lm-eval's --limit, which counts docs after its process_docs filter)."""
        if task.data_builder is not None:
            rows = [r for r in task.data_builder(split) if task.row_filter is None or task.row_filter(r)]
            return rows[:limit] if limit is not None else rows
        dataset = self._load(task, split)
        if task.row_filter is not None:
            dataset = dataset.filter(task.row_filter)
        if limit is not None:
            dataset = dataset.select(range(min(limit, len(dataset))))
        return dataset.to_list()

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

    def _load(self, task: TaskConfig, split: str):
        import datasets

        path = self.mirror_path(task.hf_repo, task.hf_subset, split)
        if self._mirror_has(task, split):
            return datasets.load_dataset(
                "json", data_files={split: path}, split=split, cache_dir=self.cache_dir, num_proc=self.num_proc
            )
        try:
            return datasets.load_dataset(
                task.hf_repo, task.hf_subset, split=split, revision=task.hf_revision,
                cache_dir=self.cache_dir, num_proc=self.num_proc,
            )
        except Exception as e:  # hub errors come in many types (connection, missing split, auth)
            where = f"no file {path} in the mirror, and " if path else ""
            raise DatasetUnavailableError(
                f"dataset {task.hf_repo}/{task.hf_subset or 'default'} split '{split}' for task "
                f"{task.full_name} is unavailable: {where}the hub failed ({type(e).__name__}). "
                f"Offline, set {DATA_DIR_ENV} (or --dataset_dir) to a mirror laid out as "
                f"<root>/<hf_repo>/<subset or default>/<split>.jsonl"
            ) from e
