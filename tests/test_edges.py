"""Nothing wrong, nothing lost at the edges: damaged data, bad output folders, full disks,
signals. Each test reproduces one finding of the probe and fails on the code before its fix."""

from __future__ import annotations

import dataclasses
import errno
import glob
import os
import signal
import stat
import time

import pytest
from click.testing import CliRunner
from conftest import run_cli, write_rows
from hypothesis import given, settings
from hypothesis import strategies as st

from lighteval_like.api.errors import BadSampleError, DatasetUnavailableError, ModelArgsError, ModelLoadError
from lighteval_like.cli.commands import main
from lighteval_like.models.model_args import parse_model_args
from lighteval_like.results import outputs
from lighteval_like.tasks import data
from lighteval_like.tasks.data import DATA_DIR_ENV, DataSource
from lighteval_like.tasks.docs import load_task_data, make_docs
from lighteval_like.tasks.registry import Registry
from lighteval_like.tasks.specs import parse_task_specs

PREFIX = "lighteval-like: error: "
GENERATED_TASK = "lighteval|arithmetic_generated:2da|0|0"  # needs no dataset
ARC = "leaderboard|arc:challenge"
ARC_ROW = {"id": "q", "question": "Which is a liquid?",
           "choices": {"text": ["water", "rock"], "label": ["A", "B"]}, "answerKey": "A"}


def arc_task():
    [task] = Registry().resolve(parse_task_specs(f"{ARC}|0|0"))
    return task


def one_line(stderr: str) -> str:
    """The single error line of a run (no traceback; progress bars, drawn with '\r', aside)."""
    shown = [line.split("\r")[-1].strip() for line in stderr.split("\n")]
    lines = [line for line in shown if line and not line.endswith("it/s]")]
    assert len(lines) == 1 and lines[0].startswith(PREFIX), stderr[-3000:]
    return lines[0]


# ------------------------------------------------------------------ 1. rows missing a column
def test_row_missing_a_column_is_a_named_bad_sample(tmp_path):
    """Before: `Question: None\\nAnswer:` was scored silently. After: task, split, row and column
    are named; --skip_bad_samples skips and counts the row."""
    rows = [dict(ARC_ROW, id=f"q{i}") for i in range(4)]
    del rows[2]["question"]
    write_rows(str(tmp_path), "allenai/ai2_arc", "ARC-Challenge", "test", rows)
    source = DataSource(data_dir=str(tmp_path), cache_dir=str(tmp_path / "hf"))
    with pytest.raises(BadSampleError) as info:
        load_task_data(source, arc_task(), None, skip_bad=False)
    message = str(info.value)
    assert all(f in message for f in (ARC, "row 2", "split 'test'", "column 'question'", "--skip_bad_samples"))
    data = load_task_data(source, arc_task(), None, skip_bad=True)
    assert data.skipped == 1 and [i for i, _ in data.docs] == [0, 1, 3]
    assert not any("None" in doc.query for _, doc in data.docs)


def test_undeclared_columns_are_those_the_prompt_reads():
    """A custom task declaring no columns: a None in a column its prompt reads as row[key] is
    a bad sample; one it reads with row.get (optional) is not."""
    task = arc_task().config
    undeclared = dataclasses.replace(task, columns=())
    rows = [ARC_ROW, dict(ARC_ROW, id=None), dict(ARC_ROW, question=None)]
    with pytest.raises(BadSampleError, match="row 2 .*column 'question'"):
        make_docs(undeclared, rows, skip_bad=False)

    def optional_hint(row: dict, name: str):
        return dataclasses.replace(task.prompt_function(row, name), instruction=row.get("hint") or "")

    docs, skipped = make_docs(dataclasses.replace(undeclared, prompt_function=optional_hint), rows[:2], skip_bad=False)
    assert skipped == 0 and len(docs) == 2


# One valid row in the mirror schema of every built-in prompt function.
SCHEMA_ROWS = {
    "leaderboard|truthfulqa:mc": {"question": "Q?", "mc1_targets": {"choices": ["a", "b"], "labels": [1, 0]},
                                  "mc2_targets": {"choices": ["a", "b"], "labels": [1, 0]}},
    ARC: ARC_ROW,
    "leaderboard|hellaswag": {"activity_label": "Cooking", "ctx_a": "A man", "ctx_b": "cuts bread",
                              "endings": ["slowly.", "fast."], "label": "0"},
    "leaderboard|mmlu:anatomy": {"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 1, "subject": "anatomy"},
    "leaderboard|gsm8k": {"question": "1+1?", "answer": "1+1=2\n#### 2"},
    "leaderboard|winogrande": {"sentence": "The cup is _ full.", "option1": "very", "option2": "not", "answer": "1"},
    "lighteval|piqa": {"goal": "Boil water", "sol1": "Heat it.", "sol2": "Cool it.", "label": 0},
    "lighteval|boolq": {"passage": "Water is wet.", "question": "is water wet", "label": 1, "idx": 0},
    "lighteval|openbookqa": {"id": "o", "question_stem": "Sun is", "choices": {"text": ["hot", "cold"], "label": ["A", "B"]},
                             "answerKey": "A"},
    "lighteval|copa": {"premise": "The man fell.", "choice1": "He slipped.", "choice2": "He sang.",
                       "question": "cause", "label": 0, "idx": 0},
    "lighteval|lambada:openai": {"text": "She walked to the store"},
    "lighteval|wikitext:2": {"page": " = Title = \n Some text . \n"},
    "lighteval|arithmetic_generated:2da": {"context": "Question: What is 1 plus 1?\nAnswer:", "completion": " 2"},
}


def _rendered(doc) -> list[str]:
    return [doc.query, doc.instruction, doc.fewshot_answer, *doc.choices, *(doc.query_per_choice or [])]


@settings(max_examples=200, deadline=None)
@given(task=st.sampled_from(sorted(SCHEMA_ROWS)), data=st.data())
def test_damaged_rows_never_render_none(task, data):
    """Any one column of a built-in task's row deleted or None (what `datasets` makes of a
    missing key): a named bad sample, never a prompt containing 'None', never another error."""
    config = Registry().get(task)
    row = dict(SCHEMA_ROWS[task])
    assert "None" not in "".join(_rendered(make_docs(config, [row], skip_bad=False)[0][0][1]))
    column = data.draw(st.sampled_from(sorted(row)))
    if data.draw(st.booleans()):
        del row[column]
    else:
        row[column] = None
    try:
        docs, _ = make_docs(config, [row], skip_bad=False)
    except BadSampleError as e:
        assert "row 0" in str(e)
        return
    assert not any("None" in text for text in _rendered(docs[0][1]))


# ------------------------------------------------------------------ 2, 4, 5. output folder
def test_unwritable_output_dir_fails_before_anything_loads(tmp_path):
    """Before: a 45-55 line traceback after all the scoring. After: one line at start-up, before
    the (here missing) model is even looked at."""
    (tmp_path / "file").write_text("x")
    proc = run_cli(["accelerate", "--model_args", f"pretrained={tmp_path / 'no-model'}", "--tasks", GENERATED_TASK,
                    "--output_dir", str(tmp_path / "file" / "out")])
    line = one_line(proc.stderr)
    assert proc.returncode == 1
    assert f"output folder '{tmp_path / 'file' / 'out'}' is not writable" in line and "--output_dir" in line


def _half_json(data: dict):
    """`outputs._write_json` on a disk that fills up mid-file."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("{ half")
        raise OSError(errno.ENOSPC, "No space left on device", tmp)
    return write


def _half_parquet(table, path: str, *args, **kwargs) -> None:
    """`pq.write_table` on a disk that fills up mid-file."""
    with open(path, "w") as f:
        f.write("PAR1 half")
    raise OSError(errno.ENOSPC, "No space left on device", path)


@pytest.mark.parametrize("what", ["json", "parquet"])
def test_full_disk_at_save_prints_scores_leaves_nothing_and_rerun_computes_nothing(tmp_path, tiny_model, monkeypatch,
                                                                                 what):
    """Before: details written without the results file (json) or empty timestamp folders
    (parquet), a traceback and no score table. After: the table, one line naming the problem
    and the cache, an empty output folder, and a rerun that computes 0 requests."""
    out, good, cache = tmp_path / "out", tmp_path / "good", tmp_path / "cache"
    args = ["accelerate", "--model_args", f"pretrained={tiny_model}", "--tasks", GENERATED_TASK, "--max_samples", "3",
            "--save_details", "--cache_dir", str(cache)]
    if what == "json":
        monkeypatch.setattr(outputs, "_write_json", _half_json)
    else:
        monkeypatch.setattr(outputs.pq, "write_table", _half_parquet)
    failed = CliRunner().invoke(main, [*args, "--output_dir", str(out)])
    assert failed.exit_code == 1, failed.output
    assert "acc_greedy" in failed.stdout  # the score table came first
    line = one_line(failed.stderr)
    assert "No space left on device" in line and "response cache" in line
    assert [(root, dirs, files) for root, dirs, files in os.walk(out)] == [(str(out), [], [])]
    monkeypatch.undo()
    old = os.umask(0o027)
    try:
        rerun = CliRunner().invoke(main, [*args, "--output_dir", str(good)])
    finally:
        os.umask(old)
    assert rerun.exit_code == 0, rerun.output
    assert "Response cache: 3 reused, 0 computed" in rerun.stdout
    written = [os.path.join(r, f) for r, _, files in os.walk(good) for f in files]
    assert sorted(os.path.splitext(p)[1] for p in written) == [".json", ".parquet"]
    assert {stat.S_IMODE(os.stat(p).st_mode) for p in written} == {0o640}  # 5: the umask's mode, not 0600


def test_atomic_write_gives_the_umask_mode(tmp_path):
    """Before: 0600 whatever the umask (mkstemp's mode kept through the rename)."""
    old = os.umask(0o022)
    try:
        outputs.save_results(str(tmp_path / "r.json"), {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "r.json").st_mode) == 0o644


# ------------------------------------------------------------------ 3. damaged mirror, full cache
def test_damaged_mirror_file_names_file_and_line(tmp_path):
    """Before: a 106-line traceback ending in DatasetGenerationError. After: file and line."""
    write_rows(str(tmp_path), "allenai/ai2_arc", "ARC-Challenge", "test", [ARC_ROW] * 4)
    path = tmp_path / "allenai/ai2_arc/ARC-Challenge/test.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:25]  # cut mid-JSON
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetUnavailableError) as info:
        DataSource(data_dir=str(tmp_path), cache_dir=str(tmp_path / "hf")).load_rows(arc_task().config, "test")
    assert f"mirror file {path} is damaged at line 3:" in str(info.value)


def test_full_datasets_cache_is_one_line(tmp_path, monkeypatch):
    """Before: `datasets`' own error (a traceback). After: the folder, the problem and --cache_dir."""
    import datasets

    arrow = str(tmp_path / "hf" / "x.arrow")

    def full_disk(*args, **kwargs):
        try:
            raise OSError(errno.ENOSPC, "No space left on device", arrow)
        except OSError as e:
            raise datasets.exceptions.DatasetGenerationError("An error occurred while generating the dataset") from e

    monkeypatch.setattr(datasets, "load_dataset", full_disk)
    monkeypatch.setattr(data, "hub_unreachable", lambda: False)  # a hub download: the mirror holds no such file
    with pytest.raises(DatasetUnavailableError) as info:
        DataSource(data_dir=str(tmp_path / "empty"), cache_dir=str(tmp_path / "hf")).load_rows(arc_task().config, "test")
    assert f"writing '{arrow}' failed: No space left on device" in str(info.value)
    assert "--cache_dir" in str(info.value)


def test_mirror_rows_are_those_datasets_reads(tmp_path):
    """The mirror is read by Arrow without `datasets` (a second less at every start): rows that
    lack keys, mix ints and floats or nest objects come out as `datasets` gives them."""
    import datasets

    rows = [{"a": 1, "b": {"x": "s", "y": [1, 2]}}, {"a": 2.5, "c": None}, {"b": {"x": "t"}, "c": "u"}, {"a": 3}]
    write_rows(str(tmp_path), "org/name", None, "test", rows)
    path = str(tmp_path / "org/name/default/test.jsonl")
    expected = datasets.load_dataset("json", data_files={"test": path}, split="test", cache_dir=str(tmp_path / "hf"))
    assert data._read_json_lines(path) is None  # an object without "y": left to `datasets`
    task = dataclasses.replace(arc_task().config, hf_repo="org/name", hf_subset=None)
    assert DataSource(str(tmp_path), cache_dir=str(tmp_path / "hf")).load_rows(task, "test") == expected.to_list()
    rows[2]["b"]["y"] = [3]
    write_rows(str(tmp_path), "org/name", None, "test", rows)
    expected = datasets.load_dataset("json", data_files={"test": path}, split="test", cache_dir=str(tmp_path / "hf2"))
    assert data._read_json_lines(path) == expected.to_list()
    assert data._read_json_lines(path)[1] == {"a": 2.5, "b": None, "c": None}


def test_real_mirror_rows_are_those_datasets_reads():
    """Every dataset of the shared mirror (one file each) reads the same without `datasets`, or is
    left to it (objects whose keys differ)."""
    root = os.environ.get(DATA_DIR_ENV) or os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "hub")
    files = {}
    for path in sorted(glob.glob(os.path.join(root, "**", "*.jsonl"), recursive=True)):
        files.setdefault(tuple(os.path.relpath(path, root).split(os.sep)[:2]), path)  # its repository
    if not files:
        pytest.skip(f"no dataset mirror at {root}")
    read = 0
    for path in files.values():
        rows = data._read_json_lines(path)
        if rows is None:  # objects with differing keys (google/IFEval's kwargs): left to `datasets`
            continue
        read += 1
        assert rows == expected_rows(path), path
    assert read >= len(files) - 2, f"only {read} of {len(files)} mirror files read without `datasets`"


def expected_rows(path: str) -> list[dict]:
    import datasets

    return datasets.load_dataset("json", data_files={"x": path}, split="x").to_list()


def test_unreachable_hub_fails_fast(tmp_path, monkeypatch):
    """Before: 26 s and 22 retry lines with no offline variable set. After: one line at once."""
    import socket

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)

    def no_network(*args, **kwargs):
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    start = time.monotonic()
    with pytest.raises(DatasetUnavailableError, match="the hub is unreachable"):
        DataSource(data_dir=str(tmp_path), cache_dir=str(tmp_path / "hf")).load_rows(arc_task().config, "test")
    assert time.monotonic() - start < 5


# ------------------------------------------------------------------ 6. task-list files
def test_task_list_file_with_a_bom(tmp_path):
    """Before: unknown suite '\\ufefflighteval'. After: the BOM is no part of the spec."""
    path = tmp_path / "tasks.txt"
    path.write_text("lighteval|arc:easy|0|0\n", encoding="utf-8-sig")
    assert [s.full_name for s in parse_task_specs(str(path))] == ["lighteval|arc:easy"]


def test_invisible_characters_are_shown_escaped():
    """Before: the message printed 'light\u200beval' as 'lighteval', next to the known 'lighteval'."""
    with pytest.raises(Exception) as info:
        Registry().resolve(parse_task_specs("light\u200beval|arc:easy|0|0"))
    assert "unknown suite 'light\\u200beval'" in str(info.value) and "\u200b" not in str(info.value)


# ------------------------------------------------------------------ weaker items
def test_sigterm_says_the_work_is_kept(tmp_path):
    """Before: killed by the signal (exit -15 from Python's view), no message. After: exit 143 and
    one line saying the scored responses are kept."""
    custom = tmp_path / "custom.py"
    custom.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\nTASKS_TABLE = []\n")
    proc = run_cli(["accelerate", "--model_args", "pretrained=does/not-matter", "--tasks", GENERATED_TASK,
                    "--custom_tasks", str(custom), "--output_dir", str(tmp_path / "out")])
    assert proc.returncode == 128 + signal.SIGTERM
    assert proc.stderr.strip().splitlines()[-1].startswith("lighteval-like: terminated (SIGTERM); ")
    assert "response cache" in proc.stderr


def test_model_folder_without_tokenizer_says_the_fix(tmp_path, tiny_model):
    """Before: a message cut at '... from one of: '. After: the missing files and tokenizer=."""
    from lighteval_like.models.transformers.model import TransformersModel

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text((open(os.path.join(tiny_model, "config.json"))).read())
    with pytest.raises(ModelLoadError) as info:
        TransformersModel(parse_model_args(f"pretrained={folder}"), device="cpu")
    message = str(info.value)
    assert "tokenizer.json" in message and "pass tokenizer=" in message and not message.rstrip().endswith(":")


@pytest.mark.parametrize("value", ["0", "-5"])
def test_override_batch_size_zero_or_below_minus_one_is_an_error(tmp_path, value):
    """Before: 0 and -5 silently meant automatic. After: a usage error (exit 2)."""
    result = CliRunner().invoke(main, ["accelerate", "--model_args", "pretrained=does/not-matter", "--tasks",
                                       GENERATED_TASK, "--override_batch_size", value,
                                       "--output_dir", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert f"--override_batch_size {value} is not valid" in one_line(result.stderr)


def test_revision_of_a_local_folder_is_an_error(tmp_path):
    """Before: ignored, yet recorded in the results as if used. After: an error with the fix."""
    with pytest.raises(ModelArgsError, match="cannot apply to the local folder"):
        parse_model_args(f"pretrained={tmp_path},revision=v1")
    assert parse_model_args(f"pretrained={tmp_path}").revision == "main"  # the default stays accepted

