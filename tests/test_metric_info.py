"""Results files describe their own metrics (`config_tasks.<task>.metric_info`): `compare` and
`report` judge a custom task's lower-is-better metric from the files alone, and older files
without it fall back to the built-in tasks' and metrics' descriptions."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from synthetic_runs import write_run

from lighteval_like.cli.entrypoints import run_accelerate
from lighteval_like.results import compare
from lighteval_like.results.report import build_html
from lighteval_like.results.runs import load_one

# Two arc-based tasks in a group, each with a custom loss (lower is better) worth LOSS on every doc.
CUSTOM_TASKS = '''
from lighteval_like.metrics.library import Metric
from lighteval_like.tasks import TaskConfig, TaskGroup
from lighteval_like.tasks.prompts import arc

LOSS = {loss}
MY_LOSS = Metric("my_loss", lambda doc, responses: LOSS, higher_is_better=False)


def task(name):
    return TaskConfig(name=name, suite="custom", prompt_function=arc, hf_repo="allenai/ai2_arc",
                      hf_subset="ARC-Challenge", evaluation_split="test", few_shots_split=None,
                      metrics=("acc", MY_LOSS))


TASKS_TABLE = [task("lossy:one"), task("lossy:two")]
TASK_GROUPS = [TaskGroup(suite="custom", name="lossy", members=("custom|lossy:one", "custom|lossy:two"))]
'''
TASKS = "custom|lossy:one|0|0,custom|lossy:two|0|0"
ONE, TWO, GROUP = "custom|lossy:one|0", "custom|lossy:two|0", "custom|lossy:_average|0"
LOSS_INFO = {"aggregation": "mean", "higher_is_better": False}


@pytest.fixture(scope="module")
def loss_runs(tiny_model, mirror, tmp_path_factory) -> tuple[str, str]:
    """Runs A (my_loss 1.00 on every doc) and B (0.50), their results files' paths."""
    tmp = tmp_path_factory.mktemp("metric-info")
    paths = []
    for name, loss in (("a", 1.0), ("b", 0.5)):
        custom = tmp / f"tasks_{name}.py"
        custom.write_text(CUSTOM_TASKS.format(loss=loss), encoding="utf-8")
        result = run_accelerate(
            model_args=f"pretrained={tiny_model}", model_config_path=None, override_batch_size=-1,
            cache_dir=str(tmp / "cache"), tasks=TASKS, output_dir=str(tmp / name), dataset_dir=mirror,
            custom_tasks=str(custom), save_details=True,
        )
        paths.append(result.results_path)
    return paths[0], paths[1]


def _rows(comparison) -> dict[tuple[str, str], compare.Row]:
    return {(r.task, r.metric): r for r in comparison.rows}


def test_results_file_describes_every_metric_of_each_task(loss_runs):
    with open(loss_runs[0], encoding="utf-8") as f:
        config_tasks = json.load(f)["config_tasks"]
    for task in ("custom|lossy:one", "custom|lossy:two"):
        assert config_tasks[task]["metric_info"] == {
            "acc": {"aggregation": "mean", "higher_is_better": True}, "my_loss": LOSS_INFO}


def test_compare_reads_direction_from_the_results_files(loss_runs):
    """No custom tasks file given: my_loss A = 1.00, B = 0.50 is B better, for each task and the group."""
    comparison = compare.compare_runs(load_one(loss_runs[0]), load_one(loss_runs[1]))
    rows = _rows(comparison)
    for key in (ONE, TWO, GROUP):
        row = rows[(key, "my_loss")]
        assert (row.a, row.b, row.higher_is_better, row.verdict) == (1.0, 0.5, False, "B better")
        assert rows[(key, "acc")].verdict == "no detectable difference"
    assert "B worse" not in compare.format_text(comparison)


def test_report_direction_agrees_with_compare(loss_runs):
    page = build_html([load_one(p) for p in loss_runs])
    for key in (ONE, GROUP):
        row = re.search(rf'<tr class="score-row" data-task="{re.escape(key)}" data-metric="my_loss">(.*?)</tr>', page).group(1)
        assert '<span class="dir">↓</span>' in row
        assert re.findall(r"<td( class=\"best\")?>([0-9.]+)", row) == [("", "1.0000"), (' class="best"', "0.5000")]
    assert "my_loss (lower is better)" in page


def _without_metric_info(path: str, out: str) -> str:
    """A copy of the run (details included) as written before `metric_info` existed."""
    run = load_one(path)
    shutil.copytree(run.output_dir, out)
    copy = os.path.join(out, os.path.relpath(path, run.output_dir))
    with open(copy, encoding="utf-8") as f:
        data = json.load(f)
    for cfg in data["config_tasks"].values():
        cfg.pop("metric_info", None)
    with open(copy, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return copy


def test_older_files_fall_back_to_the_built_in_descriptions(loss_runs, tmp_path):
    """Without metric_info a custom metric is read as a higher-is-better mean, as before; built-in
    metrics keep their own direction (word_perplexity: lower is better)."""
    old = [_without_metric_info(p, str(tmp_path / f"old_{i}")) for i, p in enumerate(loss_runs)]
    row = _rows(compare.compare_runs(load_one(old[0]), load_one(old[1])))[(ONE, "my_loss")]
    assert (row.higher_is_better, row.verdict) == (True, "B worse")
    wiki = "lighteval|wikitext:2|0"
    write_run(str(tmp_path / "a"), {wiki: {"word_perplexity": [[-50.0 - i, 20.0] for i in range(12)]}})
    write_run(str(tmp_path / "b"), {wiki: {"word_perplexity": [[-40.0 - i, 20.0] for i in range(12)]}},
              timestamp="2025-01-02T00-00-00.000000")
    runs = [load_one(str(tmp_path / n)) for n in "ab"]
    (row,) = compare.compare_runs(*runs).rows
    assert (row.higher_is_better, row.verdict) == (False, "B better")
    assert "word_perplexity (lower is better)" in build_html(runs)


def test_runs_describing_a_metric_differently_are_not_compared_on_it(tmp_path):
    per_doc = {ONE: {"my_loss": [1.0, 0.0, 1.0, 0.0]}}
    for name, higher in (("a", False), ("b", True)):
        info = {"custom|lossy:one": {"metric_info": {"my_loss": {"aggregation": "mean", "higher_is_better": higher}}}}
        write_run(str(tmp_path / name), per_doc, timestamp=f"2025-01-0{1 + (name == 'b')}T00-00-00.000000",
                  config_tasks=info)
    comparison = compare.compare_runs(load_one(str(tmp_path / "a")), load_one(str(tmp_path / "b")))
    assert comparison.rows == []
    assert comparison.refused == [f"{ONE} my_loss: A's and B's results files describe it differently "
                                  "(A: mean, higher is better False; B: mean, higher is better True), not compared"]
