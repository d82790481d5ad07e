"""Tasks -> docs: dataset rows through a task's prompt function, and the few-shot pool."""

from __future__ import annotations

from dataclasses import dataclass

from lighteval_like.data import DataSource
from lighteval_like.errors import BadSampleError
from lighteval_like.tasks.config import Doc, TaskConfig
from lighteval_like.tasks.registry import ResolvedTask


@dataclass
class TaskData:
    task: ResolvedTask
    docs: list[tuple[int, Doc]]
    fewshot_pool: list[tuple[int, Doc]]
    fewshot_split: str | None  # the split the pool came from; None when no shots are asked for
    skipped: int

    @property
    def same_split(self) -> bool:
        """Shots drawn from the evaluated split: each doc's own row is never its own example."""
        return self.fewshot_split == self.task.config.evaluation_split


def make_docs(task: TaskConfig, rows: list[dict], skip_bad: bool) -> tuple[list[tuple[int, Doc]], int]:
    """Apply the prompt function to every row; returns (row index, doc) pairs and the skip count."""
    docs, skipped = [], 0
    for index, row in enumerate(rows):
        try:
            docs.append((index, task.prompt_function(row, task.name)))
        except Exception as e:  # user data or a custom prompt function may fail in any way
            if skip_bad:
                skipped += 1
                continue
            raise BadSampleError(
                f"task {task.full_name}: row {index} of split '{task.evaluation_split}' breaks prompt "
                f"function {task.prompt_function.__name__} ({type(e).__name__}: {e}); "
                f"pass --skip_bad_samples to skip and count such rows"
            ) from e
    return docs, skipped



def load_task_data(source: DataSource, task: ResolvedTask, max_samples: int | None, skip_bad: bool) -> TaskData:
    """The docs to evaluate (the first `max_samples`) and, when shots are asked for, the few-shot pool."""
    cfg = task.config
    docs, skipped = make_docs(cfg, source.load_rows(cfg, cfg.evaluation_split, max_samples), skip_bad)
    pool: list[tuple[int, Doc]] = []
    split = None
    if task.spec.num_fewshot > 0:
        rows, split = source.load_fewshot_rows(cfg)
        pool, _ = make_docs(cfg, rows, skip_bad=True)
    return TaskData(task, docs, pool, split, skipped)
