"""Tasks -> docs: dataset rows through a task's prompt function, and the few-shot pool."""

from __future__ import annotations

from dataclasses import dataclass

from lighteval_like.api.doc import Doc
from lighteval_like.api.errors import BadSampleError
from lighteval_like.tasks.config import TaskConfig
from lighteval_like.tasks.data import DataSource
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


class _ReadColumns(dict):
    """A row that records the columns read as `row[key]` (a prompt's `row.get(key)` marks the
    column optional, and is not recorded)."""

    def __init__(self, row: dict):
        super().__init__(row)
        self.read: list[str] = []

    def __getitem__(self, key: str):
        self.read.append(key)
        return super().__getitem__(key)


class _MissingColumn(ValueError):
    """A required column of a row is missing or None."""


def _render(task: TaskConfig, row: dict) -> Doc:
    """The row's doc, unless a required column is missing or None (`datasets` fills a missing
    key with None, which a prompt would render as the text 'None'). Required: the task's
    declared `columns`, else the columns its prompt function reads by subscript."""
    missing = next((c for c in task.columns if row.get(c) is None), None)
    if missing is None:
        seen = _ReadColumns(row)
        doc = task.prompt_function(seen, task.name)
        missing = next((c for c in seen.read if row.get(c) is None), None)
    if missing is not None:
        raise _MissingColumn(f"has no value in column '{missing}' (missing or null)")
    return doc


def make_docs(task: TaskConfig, rows: list[dict], skip_bad: bool,
              split: str | None = None) -> tuple[list[tuple[int, Doc]], int]:
    """Apply the prompt function to every row of `split` (default: the evaluation split);
    returns (row index, doc) pairs and the skip count. A row missing a required column is a
    bad sample, as a row breaking the prompt function is."""
    docs, skipped = [], 0
    for index, row in enumerate(rows):
        try:
            docs.append((index, _render(task, row)))
        except Exception as e:  # user data or a custom prompt function may fail in any way
            if skip_bad:
                skipped += 1
                continue
            problem = str(e) if isinstance(e, _MissingColumn) else (
                f"breaks prompt function {task.prompt_function.__name__} ({type(e).__name__}: {e})")
            raise BadSampleError(
                f"task {task.full_name}: row {index} of split '{split or task.evaluation_split}' {problem}; "
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
        rows, split = (list(cfg.fewshot_rows), "task") if cfg.fewshot_rows else source.load_fewshot_rows(cfg)
        pool, _ = make_docs(cfg, rows, skip_bad=True, split=split)
    return TaskData(task, docs, pool, split, skipped)
