"""Task registry: superset expansion, unknown-name hints, custom task files."""

from __future__ import annotations

import textwrap

import pytest

from lighteval_like.api.errors import TaskSpecError, UsageError
from lighteval_like.tasks.registry import Registry, load_custom_tasks
from lighteval_like.tasks.specs import parse_task_specs


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry()


def test_mmlu_superset_expands_to_57_subtasks(registry):
    """`leaderboard|mmlu|5|0` becomes the 57 MMLU subjects, each keeping fewshot and truncate."""
    resolved = registry.resolve(parse_task_specs("leaderboard|mmlu|5|1"))
    assert len(resolved) == 57
    keys = [r.key for r in resolved]
    assert len(set(keys)) == 57
    assert keys[0] == "leaderboard|mmlu:abstract_algebra|5"
    assert "leaderboard|mmlu:world_religions|5" in keys
    assert all(r.spec.num_fewshot == 5 and r.spec.truncate_fewshot for r in resolved)
    assert all(r.config.hf_repo == "cais/mmlu" and r.config.hf_subset == r.config.name.split(":")[1] for r in resolved)


def test_superset_and_explicit_subtask_not_duplicated(registry):
    """A subtask named both alone and through its superset is evaluated once (order kept)."""
    resolved = registry.resolve(parse_task_specs("leaderboard|mmlu:anatomy|0|0,leaderboard|mmlu|0|0"))
    keys = [r.key for r in resolved]
    assert len(keys) == 57
    assert keys[0] == "leaderboard|mmlu:anatomy|0"
    assert keys.count("leaderboard|mmlu:anatomy|0") == 1


def test_same_task_two_fewshot_values_resolved_separately(registry):
    """Two fewshot values of one task stay two evaluations with distinct keys."""
    resolved = registry.resolve(parse_task_specs("leaderboard|arc:challenge|0|0,leaderboard|arc:challenge|25|0"))
    assert [r.key for r in resolved] == ["leaderboard|arc:challenge|0", "leaderboard|arc:challenge|25"]
    assert resolved[0].config is resolved[1].config


def test_unknown_task_suggests_close_names(registry):
    """A misspelt task name gets 'did you mean' with the close real names."""
    with pytest.raises(TaskSpecError) as info:
        registry.resolve(parse_task_specs("leaderboard|arc:chalenge|0|0"))
    message = str(info.value)
    assert "unknown task 'leaderboard|arc:chalenge'" in message
    assert "did you mean" in message and "leaderboard|arc:challenge" in message


def test_unknown_task_without_close_name_points_to_list(registry):
    """An unknown task with no close match tells how to list the tasks."""
    with pytest.raises(TaskSpecError, match="tasks list"):
        registry.get("leaderboard|zzzzzzzzzzzz")


def test_task_in_other_suite_is_suggested(registry):
    """A real task asked under the wrong (existing) suite suggests the right suite|task."""
    with pytest.raises(TaskSpecError, match=r"did you mean leaderboard\|arc:challenge"):
        registry.get("lighteval|arc:challenge")


def test_unknown_suite_lists_suites(registry):
    """An unknown suite names the known suites."""
    with pytest.raises(TaskSpecError) as info:
        registry.get("helm|arc:challenge")
    message = str(info.value)
    assert "unknown suite 'helm'" in message
    assert "leaderboard" in message and "lighteval" in message


def test_names_filtered_by_suite(registry):
    """`names(suite)` returns only that suite's tasks, sorted."""
    names = registry.names("leaderboard")
    assert names == sorted(names)
    assert "leaderboard|arc:challenge" in names and "leaderboard|gsm8k" in names
    assert not any(n.startswith("lighteval|") for n in names)
    assert "lighteval|piqa" in registry.names()


CUSTOM = """
from lighteval_like.tasks import Doc, TaskConfig


def yes_no(row, task_name):
    return Doc(query=row["q"], choices=["no", "yes"], gold_index=int(row["label"]))


TASKS_TABLE = [
    TaskConfig(name="yesno", suite="custom", prompt_function=yes_no, hf_repo="me/yesno", hf_subset=None,
               evaluation_split="test", few_shots_split=None, metrics=("acc",)),
    TaskConfig(name="piqa", suite="lighteval", prompt_function=yes_no, hf_repo="me/piqa2", hf_subset=None,
               evaluation_split="test", few_shots_split=None, metrics=("acc",)),
]
"""


def test_custom_tasks_file_loads_and_overrides(tmp_path):
    """A custom file's TASKS_TABLE adds a new suite and may override a built-in task."""
    path = tmp_path / "my_tasks.py"
    path.write_text(CUSTOM, encoding="utf-8")
    registry = Registry(str(path))
    config = registry.get("custom|yesno")
    assert config.hf_repo == "me/yesno" and config.prompt_function({"q": "ok?", "label": 1}, "yesno").gold_index == 1
    assert registry.get("lighteval|piqa").hf_repo == "me/piqa2"
    assert "leaderboard|arc:challenge" in registry.names()
    assert [r.key for r in registry.resolve(parse_task_specs("custom|yesno|0|0"))] == ["custom|yesno|0"]


@pytest.mark.parametrize(
    "source, fragment",
    [
        ("x = 1\n", "must define TASKS_TABLE"),
        ("TASKS_TABLE = ['not a task']\n", "must define TASKS_TABLE"),
        ("import not_a_real_module_xyz\n", "failed to import: ModuleNotFoundError"),
        ("def broken(:\n", "failed to import: SyntaxError"),
    ],
)
def test_bad_custom_tasks_file(tmp_path, source, fragment):
    """A custom tasks file that is broken or lacks a proper TASKS_TABLE is a usage error naming it."""
    path = tmp_path / "bad_tasks.py"
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    with pytest.raises(UsageError) as info:
        load_custom_tasks(str(path))
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_missing_custom_tasks_file(tmp_path):
    """A custom tasks path that does not exist is reported as such."""
    with pytest.raises(UsageError, match="does not exist"):
        Registry(str(tmp_path / "missing.py"))
