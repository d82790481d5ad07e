"""The `--tasks` parser: specs, comma lists, task-list files, and its error messages."""

from __future__ import annotations

import pytest

from lighteval_like.api.errors import TaskSpecError, UsageError
from lighteval_like.tasks.specs import SPEC_FORMAT, TaskSpec, parse_one_spec, parse_task_specs


def _keys(specs: list[TaskSpec]) -> list[str]:
    return [f"{s.key}|{int(s.truncate_fewshot)}" for s in specs]


def test_single_spec_fields():
    """All four fields are parsed, typed, and exposed as full_name/key."""
    spec = parse_one_spec(" leaderboard|arc:challenge|25|1 ")
    assert spec == TaskSpec("leaderboard", "arc:challenge", 25, True)
    assert spec.full_name == "leaderboard|arc:challenge"
    assert spec.key == "leaderboard|arc:challenge|25"
    assert parse_one_spec("lighteval|piqa|0|0").truncate_fewshot is False


def test_comma_list_keeps_order_and_strips_spaces():
    """A comma list yields the specs in the given order, spaces around items ignored."""
    specs = parse_task_specs("leaderboard|hellaswag|10|0, lighteval|piqa|0|1 ,leaderboard|gsm8k|5|0")
    assert _keys(specs) == ["leaderboard|hellaswag|10|0", "lighteval|piqa|0|1", "leaderboard|gsm8k|5|0"]


def test_same_task_several_fewshot_values_kept_duplicates_dropped():
    """Same task with other fewshot values is kept; exact (suite, task, fewshot) repeats are dropped."""
    specs = parse_task_specs(
        "leaderboard|arc:challenge|0|0,leaderboard|arc:challenge|25|0,leaderboard|arc:challenge|0|0,"
        "leaderboard|arc:challenge|25|1"
    )
    assert _keys(specs) == ["leaderboard|arc:challenge|0|0", "leaderboard|arc:challenge|25|0"]


@pytest.mark.parametrize("name", ["tasks.txt", "tasks"])
def test_task_list_file_with_and_without_extension(tmp_path, name):
    """A task-list file is read whatever its name; comments, blank lines and comma lines are handled."""
    path = tmp_path / name
    path.write_text(
        "# leaderboard tasks\n"
        "\n"
        "leaderboard|arc:challenge|25|0\n"
        "    # an indented comment\n"
        "   \n"
        "leaderboard|hellaswag|10|0   # trailing comment\n"
        "lighteval|piqa|0|0,lighteval|boolq|0|1\n"
        "leaderboard|arc:challenge|0|0\n"
        "leaderboard|arc:challenge|25|0\n",
        encoding="utf-8",
    )
    specs = parse_task_specs(str(path))
    assert _keys(specs) == [
        "leaderboard|arc:challenge|25|0",
        "leaderboard|hellaswag|10|0",
        "lighteval|piqa|0|0",
        "lighteval|boolq|0|1",
        "leaderboard|arc:challenge|0|0",
    ]


def test_task_list_file_relative_path(tmp_path, monkeypatch):
    """A bare file name in the working directory is a task-list file, not a spec."""
    (tmp_path / "my_tasks").write_text("lighteval|copa|0|0\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert _keys(parse_task_specs("my_tasks")) == ["lighteval|copa|0|0"]


def test_trailing_comment_after_tab(tmp_path):
    """A trailing comment separated by a tab is stripped like one separated by a space."""
    path = tmp_path / "tasks.txt"
    path.write_text("lighteval|copa|0|0\t# tab-separated comment\n", encoding="utf-8")
    assert _keys(parse_task_specs(str(path))) == ["lighteval|copa|0|0"]


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("leaderboard|arc:challenge|25", ["'leaderboard|arc:challenge|25'", "3 field(s)", "expected 4"]),
        ("leaderboard|arc|1|0|extra", ["'leaderboard|arc|1|0|extra'", "5 field(s)"]),
        ("arc:challenge", ["'arc:challenge'", "1 field(s)"]),
        ("leaderboard|arc:challenge|five|0", ["fewshot 'five'", "non-negative integer"]),
        ("leaderboard|arc:challenge|-1|0", ["fewshot '-1'", "non-negative integer"]),
        ("leaderboard|arc:challenge|2.5|0", ["fewshot '2.5'"]),
        ("leaderboard|arc:challenge|5|2", ["truncate '2'", "must be 0 or 1"]),
        ("leaderboard|arc:challenge|5|true", ["truncate 'true'", "must be 0 or 1"]),
        ("|arc:challenge|5|0", ["empty suite or task"]),
    ],
)
def test_bad_spec_messages_name_spec_position_and_format(text, fragments):
    """Every malformed spec is a usage error naming the spec, its position and the expected format."""
    with pytest.raises(TaskSpecError) as info:
        parse_task_specs(f"lighteval|piqa|0|0,{text}")
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message
    assert "item 2 of --tasks" in message
    assert SPEC_FORMAT in message
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


@pytest.mark.parametrize(
    "text, position",
    [("lighteval|piqa|0|0,", 2), (",lighteval|piqa|0|0", 1), ("lighteval|piqa|0|0,,lighteval|copa|0|0", 2)],
)
def test_empty_entries_and_trailing_commas(text, position):
    """Stray commas are reported with the position of the empty entry, not silently skipped."""
    with pytest.raises(TaskSpecError) as info:
        parse_task_specs(text)
    message = str(info.value)
    assert f"empty task spec at position {position}" in message
    assert "stray comma" in message and SPEC_FORMAT in message


@pytest.mark.parametrize("text", ["", "   ", None])
def test_no_tasks(text):
    """An empty --tasks is refused with the format shown."""
    with pytest.raises(TaskSpecError, match="no tasks given") as info:
        parse_task_specs(text)
    assert SPEC_FORMAT in str(info.value)


def test_file_errors_name_file_and_line(tmp_path):
    """A bad line of a task-list file is reported with the file and its line number."""
    path = tmp_path / "tasks.txt"
    path.write_text("# header\nlighteval|piqa|0|0\n\nleaderboard|arc:challenge|x|0\n", encoding="utf-8")
    with pytest.raises(TaskSpecError) as info:
        parse_task_specs(str(path))
    message = str(info.value)
    assert f"{path} line 4" in message
    assert "'leaderboard|arc:challenge|x|0'" in message and SPEC_FORMAT in message


def test_file_stray_comma_names_line(tmp_path):
    """A trailing comma on a task-list line names that line."""
    path = tmp_path / "tasks.txt"
    path.write_text("lighteval|piqa|0|0\nlighteval|copa|0|0,\n", encoding="utf-8")
    with pytest.raises(TaskSpecError) as info:
        parse_task_specs(str(path))
    assert f"'{path}' line 2" in str(info.value)
    assert "stray comma" in str(info.value) and SPEC_FORMAT in str(info.value)


def test_file_with_only_comments(tmp_path):
    """A task-list file with no specs is an error that shows the format."""
    path = tmp_path / "tasks.txt"
    path.write_text("# nothing here\n\n   # still nothing\n", encoding="utf-8")
    with pytest.raises(TaskSpecError, match="contains no task specs") as info:
        parse_task_specs(str(path))
    assert SPEC_FORMAT in str(info.value)


def test_unreadable_file(tmp_path):
    """A task-list file that is not UTF-8 text gives a 'cannot read' error naming it."""
    path = tmp_path / "tasks.txt"
    path.write_bytes(b"lighteval|piqa|0|0\n\xff\xfe\xfa\n")
    with pytest.raises(TaskSpecError) as info:
        parse_task_specs(str(path))
    assert f"cannot read task-list file '{path}'" in str(info.value)


def test_missing_file_path(tmp_path):
    """A path (with a separator, no '|') that does not exist is reported as a missing file."""
    missing = tmp_path / "nope" / "tasks.txt"
    with pytest.raises(TaskSpecError, match="does not exist") as info:
        parse_task_specs(str(missing))
    assert str(missing) in str(info.value)
