"""Task families: many tasks that differ only in name and dataset config, written as one table.

A family is a few `TaskConfig` templates (one per variant: multiple choice, generation, ...) and a
member table saying which variants each member has. Expanding it yields ordinary `TaskConfig`
rows, so a family of hundreds of tasks is one line per task instead of one config each.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lighteval_like.tasks.config import TaskConfig, TaskGroup


def parse_members(table: str) -> dict[str, tuple[str, ...]]:
    """`task: variant variant ...` lines -> {task: variants}; blank lines and `#` comments skipped."""
    members: dict[str, tuple[str, ...]] = {}
    for number, line in enumerate(table.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        task, sep, variants = line.partition(":")
        if not sep or not task.strip() or not variants.split():
            raise ValueError(f"member table line {number} {line!r}: expected 'task: variant [variant ...]'")
        if task.strip() in members:
            raise ValueError(f"member table line {number}: task {task.strip()!r} listed twice")
        members[task.strip()] = tuple(variants.split())
    return members


@dataclass(frozen=True)
class TaskFamily:
    """Templates x members. In a template, `name` and `hf_subset` may hold `{task}`, replaced by
    each member's name (e.g. name "{task}_gen", hf_subset "{task}_zero_shot")."""

    templates: dict[str, TaskConfig]
    members: dict[str, tuple[str, ...]]

    def __post_init__(self) -> None:
        for task, variants in self.members.items():
            unknown = [v for v in variants if v not in self.templates]
            if unknown:
                raise ValueError(
                    f"family member {task!r}: unknown variant(s) {', '.join(unknown)}; "
                    f"variants are {', '.join(self.templates)}"
                )

    def configs(self) -> list[TaskConfig]:
        """One `TaskConfig` per (member, variant), in table order."""
        out = []
        for task, variants in self.members.items():
            for variant in variants:
                template = self.templates[variant]
                subset = template.hf_subset.format(task=task) if template.hf_subset else None
                out.append(replace(template, name=template.name.format(task=task), hf_subset=subset))
        return out

    def group(self, name: str = "", only: tuple[str, ...] | None = None) -> TaskGroup:
        """A group of the family's tasks: all of them, or per member of `only` its first variant
        (the variant listed first in the table)."""
        configs = self.configs()
        if only is not None:
            unknown = [t for t in only if t not in self.members]
            if unknown:
                raise ValueError(f"group {name!r}: {', '.join(unknown)} not in the family")
            first = {task: self.templates[self.members[task][0]].name.format(task=task) for task in only}
            configs = [c for c in configs if c.name in set(first.values())]
        suites = {c.suite for c in configs}
        if len(suites) != 1:
            raise ValueError(f"group {name!r}: a group's tasks share one suite, not {', '.join(sorted(suites))}")
        return TaskGroup(suites.pop(), name, tuple(c.full_name for c in configs))
