"""`--push_to_tensorboard`: scalars read back with TensorBoard's own event reader."""

from __future__ import annotations

import glob
import json
import os

import pytest
from conftest import run_cli

from lighteval_like.results.tensorboard import scalars, tensorboard_dir, write_tensorboard

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

RESULTS = {
    "config_general": {"model_name": "org/tiny"},
    "results": {
        "leaderboard|arc:challenge|25": {"acc": 0.25, "acc_stderr": 0.04, "acc_norm": 0.3, "acc_norm_stderr": 0.05},
        "lighteval|wikitext:2|0": {"word_perplexity": 31.5, "word_perplexity_stderr": 1.5},
        "all": {"acc": 0.25, "acc_stderr": 0.04},
    },
}


def read_scalars(folder: str) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(folder)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_scalars_read_back_with_steps_given_and_by_job_order(tmp_path):
    out = str(tmp_path)
    first = write_tensorboard(RESULTS, out, "org/tiny", step=1000)
    assert os.path.dirname(first) == tensorboard_dir(out, "org/tiny") == str(tmp_path / "tensorboard" / "org" / "tiny")
    later = {**RESULTS, "results": {k: {m: v + 0.125 for m, v in ms.items()} for k, ms in RESULTS["results"].items()}}
    write_tensorboard(later, out, "org/tiny", step=2000)
    write_tensorboard(later, out, "org/tiny")  # no step: the job's order (two jobs before it)
    got = read_scalars(tensorboard_dir(out, "org/tiny"))
    assert set(got) == set(scalars(RESULTS)) == {
        "leaderboard|arc:challenge|25/acc", "leaderboard|arc:challenge|25/acc_stderr",
        "leaderboard|arc:challenge|25/acc_norm", "leaderboard|arc:challenge|25/acc_norm_stderr",
        "lighteval|wikitext:2|0/word_perplexity", "lighteval|wikitext:2|0/word_perplexity_stderr",
        "all/acc", "all/acc_stderr",
    }
    assert got["leaderboard|arc:challenge|25/acc_norm"] == [(1000, pytest.approx(0.3)), (2000, pytest.approx(0.425)),
                                                            (2, pytest.approx(0.425))]
    assert got["lighteval|wikitext:2|0/word_perplexity"][0] == (1000, pytest.approx(31.5))


def test_accelerate_push_to_tensorboard_on_the_tiny_model(tiny_model, mirror, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(["accelerate", "--model_args", f"pretrained={tiny_model}", "--tasks", "leaderboard|arc:challenge|0|0",
                    "--dataset_dir", mirror, "--output_dir", str(out), "--max_samples", "3", "--no_cache",
                    "--push_to_tensorboard", "--checkpoint_step", "500"],
                   env={"HF_DATASETS_CACHE": str(tmp_path / "hf")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    (results_file,) = glob.glob(str(out / "results" / "*" / "results_*.json"))
    with open(results_file, encoding="utf-8") as f:
        results = json.load(f)
    model_name = results["config_general"]["model_name"]
    assert "TensorBoard scalars written to" in proc.stdout
    got = read_scalars(tensorboard_dir(str(out), model_name))
    for task, metrics in results["results"].items():
        for metric, value in metrics.items():
            assert got[f"{task}/{metric}"] == [(500, pytest.approx(value, rel=1e-6))]
