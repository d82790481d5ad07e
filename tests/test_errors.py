"""Nothing cryptic: each bad input exits non-zero (2 usage, 1 runtime) with one line naming the
problem and the fix, no traceback unless --debug, and no results file (whole or half) left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from click.testing import CliRunner
from conftest import run_cli, write_rows

from lighteval_like.api.folders import CACHE_ENV
from lighteval_like.cli.commands import main
from lighteval_like.tasks.specs import SPEC_FORMAT

PREFIX = "lighteval-like: error: "
GOOD_TASK = "leaderboard|arc:challenge|0|0"
GENERATED_TASK = "lighteval|arithmetic_generated:2da|0|0"  # needs no dataset


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Keep response caches of these runs out of the user's cache folder."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


def assert_no_results(output_dir: str) -> None:
    """No results or details file, whole or half-written (temp files included)."""
    left = [os.path.join(root, name) for root, _, names in os.walk(output_dir) for name in names
            if name.endswith((".json", ".parquet")) or name.startswith(".tmp-")]
    assert left == []


def assert_one_line_error(code: int, stderr: str, expected_code: int, fragments: list[str]) -> None:
    """Exit code as expected; stderr ends with exactly one error line holding every fragment."""
    assert code == expected_code, stderr[-2000:]
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(PREFIX)]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0]
    assert "Traceback" not in stderr


# ------------------------------------------------------------- usage errors: exit 2
@dataclass
class Case:
    args: Callable[[str], list[str]]  # tmp folder -> CLI arguments after `accelerate`
    fragments: list[str]
    files: dict[str, bytes | str] | None = None  # written into the tmp folder first


def _tasks(spec: str) -> Callable[[str], list[str]]:
    return lambda tmp: ["--model_args", "pretrained=m", "--tasks", spec.replace("{tmp}", tmp)]


def _model(args: str) -> Callable[[str], list[str]]:
    return lambda tmp: ["--model_args", args, "--tasks", GOOD_TASK]


USAGE_CASES = {
    "spec-field-count": Case(_tasks("leaderboard|arc:challenge|25"),
                             ["'leaderboard|arc:challenge|25'", "3 field(s), expected 4", SPEC_FORMAT]),
    "spec-fewshot-not-integer": Case(_tasks("leaderboard|arc:challenge|five|0"),
                                     ["fewshot 'five' must be a non-negative integer", SPEC_FORMAT]),
    "spec-fewshot-superscript": Case(_tasks("leaderboard|arc:challenge|²|0"), ["fewshot '²'"]),
    "spec-truncate-not-0-1": Case(_tasks("leaderboard|arc:challenge|0|2"), ["truncate '2' must be 0 or 1"]),
    "spec-empty-entry": Case(_tasks(f"{GOOD_TASK},,lighteval|copa|0|0"),
                             ["empty task spec at position 2", "stray comma", SPEC_FORMAT]),
    "spec-trailing-comma": Case(_tasks(f"{GOOD_TASK},"), ["empty task spec at position 2", "stray comma"]),
    "unknown-suite": Case(_tasks("nosuch|arc:challenge|0|0"),
                          ["unknown suite 'nosuch'", "known suites are", "leaderboard"]),
    "unknown-task": Case(_tasks("leaderboard|arc:chalenge|0|0"),
                         ["unknown task 'leaderboard|arc:chalenge'", "did you mean leaderboard|arc:challenge"]),
    "task-file-not-text": Case(_tasks("{tmp}/tasks.txt"), ["cannot read task-list file", "is not UTF-8", SPEC_FORMAT],
                               {"tasks.txt": b"\xff\xfe\x00leaderboard"}),
    "task-file-missing": Case(_tasks("{tmp}/nowhere/tasks.txt"), ["task-list file", "does not exist"]),
    "task-file-is-a-directory": Case(_tasks("{tmp}"), ["is a directory", "pass a task-list file"]),
    "task-file-without-extension-missing": Case(_tasks("my_tasks"),
                                                ["'my_tasks'", "no task-list file 'my_tasks' exists"]),
    "model-args-missing-value": Case(_model("pretrained"),
                                     ["model arg 'pretrained' needs a value", "pretrained=<value>"]),
    "model-args-empty-value": Case(_model("pretrained=m,dtype="), ["model arg 'dtype' has an empty value"]),
    "model-args-unknown-key": Case(_model("pretrained=m,dtpye=float16"),
                                   ["unknown model arg(s) dtpye", "did you mean dtype?", "valid ones are"]),
    "model-args-bad-dtype": Case(_model("pretrained=m,dtype=float17"),
                                 ["dtype 'float17' is not supported", "use one of", "bfloat16"]),
    "model-args-attn-implementation": Case(_model("pretrained=m,attn_implementation=flash"),
                                           ["attn_implementation 'flash' is not allowed",
                                            "None, flash_attention_2, sdpa, eager"]),
    "model-args-bad-integer": Case(_model("pretrained=m,max_length=²"),
                                   ["model arg 'max_length=²' has the wrong type: expected int"]),
    "model-args-and-config-both": Case(lambda tmp: ["--model_args", "pretrained=m", "--model_config_path",
                                                    f"{tmp}/model.yaml", "--tasks", GOOD_TASK],
                                       ["pass exactly one of --model_args", "--model_config_path"],
                                       {"model.yaml": "pretrained: m\n"}),
    "model-args-and-config-neither": Case(lambda tmp: ["--tasks", GOOD_TASK], ["pass exactly one of --model_args"]),
    "model-config-unknown-key": Case(lambda tmp: ["--model_config_path", f"{tmp}/model.yaml", "--tasks", GOOD_TASK],
                                     ["model.yaml", "unknown model arg(s) dtpye", "did you mean dtype?"],
                                     {"model.yaml": "model_parameters:\n  pretrained: m\n  dtpye: float16\n"}),
    "model-config-not-yaml": Case(lambda tmp: ["--model_config_path", f"{tmp}/model.yaml", "--tasks", GOOD_TASK],
                                  ["model.yaml", "is not valid YAML"], {"model.yaml": "pretrained: [m\n"}),
    "custom-tasks-import-fails": Case(
        lambda tmp: ["--model_args", "pretrained=m", "--tasks", GOOD_TASK, "--custom_tasks", f"{tmp}/custom.py"],
        ["custom tasks file", "failed to import: ModuleNotFoundError", "no_such_module_xyz"],
        {"custom.py": "import no_such_module_xyz\n"}),
    "custom-tasks-without-table": Case(
        lambda tmp: ["--model_args", "pretrained=m", "--tasks", GOOD_TASK, "--custom_tasks", f"{tmp}/custom.py"],
        ["must define TASKS_TABLE, a list of lighteval_like.tasks.TaskConfig"], {"custom.py": "TASKS = []\n"}),
    "custom-tasks-missing": Case(
        lambda tmp: ["--model_args", "pretrained=m", "--tasks", GOOD_TASK, "--custom_tasks", f"{tmp}/none.py"],
        ["custom tasks file", "does not exist"]),
}


@pytest.mark.parametrize("name", list(USAGE_CASES))
def test_usage_error_is_one_line_with_exit_code_2(name, tmp_path, monkeypatch):
    case = USAGE_CASES[name]
    for file_name, content in (case.files or {}).items():
        mode = "wb" if isinstance(content, bytes) else "w"
        with open(tmp_path / file_name, mode) as f:
            f.write(content)
    monkeypatch.chdir(tmp_path)  # 'my_tasks' is looked up here, and is not there
    output_dir = str(tmp_path / "out")
    result = CliRunner().invoke(main, ["accelerate", *case.args(str(tmp_path)), "--output_dir", output_dir])
    assert_one_line_error(result.exit_code, result.stderr, 2, case.fragments)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert_no_results(output_dir)


def test_usage_error_in_a_real_process_and_debug_shows_the_traceback(tmp_path):
    """Through the interpreter: exit status 2 and one line; with --debug, the traceback too."""
    args = ["accelerate", "--model_args", "pretrained=m,dtpye=float16", "--tasks", GOOD_TASK,
            "--output_dir", str(tmp_path / "out")]
    plain = run_cli(args)
    assert_one_line_error(plain.returncode, plain.stderr, 2, ["unknown model arg(s) dtpye"])
    debug = run_cli([*args, "--debug"])
    assert debug.returncode == 2
    assert "Traceback" in debug.stderr and "ModelArgsError" in debug.stderr
    assert debug.stderr.rstrip().splitlines()[-1].startswith(f"{PREFIX}unknown model arg(s) dtpye")
    assert_no_results(str(tmp_path / "out"))


# ----------------------------------------------------------- runtime errors: exit 1
def test_model_path_that_does_not_exist(tmp_path):
    missing = str(tmp_path / "missing_model")
    out = str(tmp_path / "out")
    proc = run_cli(["accelerate", "--model_args", f"pretrained={missing}", "--tasks", GENERATED_TASK,
                    "--max_samples", "2", "--output_dir", out])
    assert_one_line_error(proc.returncode, proc.stderr, 1,
                          [f"model path '{missing}' does not exist", "pass pretrained=<existing directory or hub id>"])
    assert_no_results(out)


def test_hub_model_unavailable_offline(tmp_path):
    out = str(tmp_path / "out")
    proc = run_cli(["accelerate", "--model_args", "pretrained=some-org/missing-model", "--tasks", GENERATED_TASK,
                    "--max_samples", "2", "--output_dir", out])
    assert_one_line_error(proc.returncode, proc.stderr, 1, [
        "cannot load the tokenizer of 'some-org/missing-model'", "looked up on the hub with HF_HUB_OFFLINE set",
        "pass pretrained=<model directory>, or a hub id that is cached or reachable",
    ])
    assert_no_results(out)


def test_dataset_unavailable_offline(tiny_model, mirror, tmp_path):
    out = str(tmp_path / "out")
    proc = run_cli(["accelerate", "--model_args", f"pretrained={tiny_model}", "--tasks", "leaderboard|hellaswag|0|0",
                    "--dataset_dir", mirror, "--output_dir", out])
    assert_one_line_error(proc.returncode, proc.stderr, 1, [
        "dataset Rowan/hellaswag/default split 'validation' for task leaderboard|hellaswag is unavailable",
        "set LIGHTEVAL_LIKE_DATA_DIR (or --dataset_dir) to a mirror",
    ])
    assert_no_results(out)


@pytest.fixture
def broken_mirror(tmp_path) -> str:
    """ARC rows where row 1's answer key is not among its labels: the prompt function fails on it."""
    root = str(tmp_path / "broken_mirror")
    rows = [{"id": f"q{i}", "question": f"Which is a liquid, case {i}?",
             "choices": {"text": ["water", "rock"], "label": ["A", "B"]}, "answerKey": "A"} for i in range(4)]
    rows[1]["answerKey"] = "Z"
    write_rows(root, "allenai/ai2_arc", "ARC-Challenge", "test", rows)
    return root


def test_row_that_breaks_the_prompt_function_is_named(tiny_model, broken_mirror, tmp_path):
    out = str(tmp_path / "out")
    proc = run_cli(["accelerate", "--model_args", f"pretrained={tiny_model}", "--tasks", GOOD_TASK,
                    "--dataset_dir", broken_mirror, "--output_dir", out])
    assert_one_line_error(proc.returncode, proc.stderr, 1, [
        "task leaderboard|arc:challenge: row 1 of split 'test' breaks prompt function arc (ValueError",
        "pass --skip_bad_samples to skip and count such rows",
    ])
    assert_no_results(out)


def test_skip_bad_samples_skips_and_counts_them(tiny_model, broken_mirror, tmp_path):
    out = str(tmp_path / "out")
    proc = run_cli(["accelerate", "--model_args", f"pretrained={tiny_model}", "--tasks", GOOD_TASK,
                    "--dataset_dir", broken_mirror, "--output_dir", out, "--skip_bad_samples"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    [path] = [os.path.join(r, n) for r, _, names in os.walk(out) for n in names if n.endswith(".json")]
    summary = json.load(open(path, encoding="utf-8"))["summary_tasks"]["leaderboard|arc:challenge|0"]
    assert summary["skipped_bad_samples"] == 1
    assert summary["num_docs"] == 3 and summary["num_samples"] == 3


OOM_DRIVER = textwrap.dedent('''
    """Run the CLI with every forward of the model failing as a GPU out-of-memory would."""
    import sys

    import torch
    from transformers import LlamaForCausalLM

    def out_of_memory(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    LlamaForCausalLM.forward = out_of_memory
    from lighteval_like.cli.commands import main

    sys.argv = ["lighteval-like", *sys.argv[1:]]
    main()
''')


def test_out_of_memory_with_fixed_batch_size_suggests_a_smaller_one(tiny_model, mirror, tmp_path):
    driver = tmp_path / "oom_driver.py"
    driver.write_text(OOM_DRIVER, encoding="utf-8")
    out = str(tmp_path / "out")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(driver), "accelerate", "--model_args", f"pretrained={tiny_model}", "--tasks", GOOD_TASK,
         "--dataset_dir", mirror, "--override_batch_size", "4", "--output_dir", out],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert_one_line_error(proc.returncode, proc.stderr, 1, [
        "out of memory at --override_batch_size 4: pass a smaller one (e.g. 2)",
    ])
    assert_no_results(out)
