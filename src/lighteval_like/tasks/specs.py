"""Parse task specs `suite|task|fewshot|truncate`, comma lists and task-list files.

Both entry points (`accelerate`, `distributed`) go through `parse_task_specs`, so the
accepted syntax and the error messages are the same everywhere.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from lighteval_like.api.errors import TaskSpecError

SPEC_FORMAT = "suite|task|fewshot|truncate, e.g. 'leaderboard|arc:challenge|25|0'"


@dataclass(frozen=True)
class TaskSpec:
    suite: str
    task: str
    num_fewshot: int
    truncate_fewshot: bool

    @property
    def full_name(self) -> str:
        """`suite|task`: the key of the task in the registry."""
        return f"{self.suite}|{self.task}"

    @property
    def key(self) -> str:
        """`suite|task|fewshot`: how results are named, as lighteval does."""
        return f"{self.suite}|{self.task}|{self.num_fewshot}"


def visible(text: str) -> str:
    """`text` with invisible characters (a BOM, zero-width spaces, controls) shown escaped,
    so a message never names two strings that print the same."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def parse_one_spec(text: str, where: str = "") -> TaskSpec:
    """Parse a single `suite|task|fewshot|truncate` string; `where` locates it for errors."""
    at = f" ({where})" if where else ""
    spec = text.strip()
    if not spec:
        raise TaskSpecError(f"empty task spec{at}: expected {SPEC_FORMAT}")
    shown = visible(spec)
    parts = [p.strip() for p in spec.split("|")]
    if len(parts) != 4:
        raise TaskSpecError(
            f"task spec '{shown}'{at} has {len(parts)} field(s), expected 4: {SPEC_FORMAT}"
        )
    suite, task, fewshot, truncate = parts
    if not suite or not task:
        raise TaskSpecError(f"task spec '{shown}'{at} has an empty suite or task name: expected {SPEC_FORMAT}")
    if not (fewshot.isascii() and fewshot.isdigit()):  # ASCII digits only: isdigit() alone passes '²'
        raise TaskSpecError(
            f"task spec '{shown}'{at}: fewshot '{visible(fewshot)}' must be a non-negative integer: "
            f"expected {SPEC_FORMAT}"
        )
    if truncate not in ("0", "1"):
        raise TaskSpecError(
            f"task spec '{shown}'{at}: truncate '{visible(truncate)}' must be 0 or 1: expected {SPEC_FORMAT}"
        )
    return TaskSpec(suite, task, int(fewshot), truncate == "1")


def _read_task_file(path: str) -> list[tuple[str, str]]:
    try:
        with open(path, encoding="utf-8-sig") as f:  # a BOM (Windows editors) is no part of the first spec
            lines = f.read().splitlines()
    except OSError as e:
        raise TaskSpecError(f"cannot read task-list file '{path}': {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise TaskSpecError(
            f"cannot read task-list file '{path}': byte {e.start} is not UTF-8; write one {SPEC_FORMAT} per line"
        ) from e
    entries = []
    for lineno, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        stripped = re.split(r"\s#", stripped, maxsplit=1)[0].strip()  # trailing comment (after a space or tab)
        for item in stripped.split(","):
            if not item.strip():
                raise TaskSpecError(
                    f"empty task spec in '{path}' line {lineno} (stray comma?): expected {SPEC_FORMAT}"
                )
            entries.append((item, f"{path} line {lineno}"))
    if not entries:
        raise TaskSpecError(f"task-list file '{path}' contains no task specs: write one {SPEC_FORMAT} per line")
    return entries


def parse_task_specs(tasks: str) -> list[TaskSpec]:
    """Parse `--tasks`: a path to a task-list file (if it exists) or comma-separated specs.

    Duplicates (same suite, task and fewshot) are dropped; the same task with different
    fewshot values is kept. Supersets are expanded later by the registry.
    """
    if tasks is None or not str(tasks).strip():
        raise TaskSpecError(f"no tasks given: pass --tasks with {SPEC_FORMAT}, or a task-list file")
    tasks = str(tasks).strip()
    if os.path.isfile(tasks):
        entries = _read_task_file(tasks)
    else:
        if os.path.isdir(tasks):
            raise TaskSpecError(f"--tasks '{tasks}' is a directory: pass a task-list file, or {SPEC_FORMAT}")
        if os.sep in tasks and "|" not in tasks:
            raise TaskSpecError(f"task-list file '{tasks}' does not exist (nor is it a task spec {SPEC_FORMAT})")
        if "|" not in tasks and "," not in tasks:  # lighteval#606: a file name read as a spec
            raise TaskSpecError(
                f"task spec '{tasks}' has 1 field(s), expected 4: {SPEC_FORMAT}; "
                f"no task-list file '{tasks}' exists either"
            )
        entries = []
        for i, item in enumerate(tasks.split(","), start=1):
            if not item.strip():
                raise TaskSpecError(
                    f"empty task spec at position {i} of '{tasks}' (stray comma?): expected {SPEC_FORMAT}"
                )
            entries.append((item, f"item {i} of --tasks"))
    specs: list[TaskSpec] = []
    seen: set[str] = set()
    for text, where in entries:
        spec = parse_one_spec(text, where)
        if spec.key not in seen:  # suite|task|fewshot
            seen.add(spec.key)
            specs.append(spec)
    return specs
