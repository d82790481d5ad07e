"""--remove_reasoning_tags: reasoning cut out before answer extraction, details keeping raw and
stripped text and reasoning tokens, unclosed reasoning scored as no answer and counted."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from conftest import run_cli
from fakes import WordEncoder

from lighteval_like.api.requests import GenerationResponse
from lighteval_like.evaluation.pipeline import Pipeline, PipelineParameters
from lighteval_like.evaluation.reasoning import DEFAULT_TAGS, Reasoning, parse_reasoning_tags, split_reasoning
from lighteval_like.models.base import LanguageModel, ModelIdentity, ModelInfo


@pytest.mark.parametrize("text, answer, reasoning, closed", [
    ("<think>12 - 2 = 10</think> #### 10", " #### 10", "12 - 2 = 10", True),
    ("<think>so #### 12 maybe", "", "so #### 12 maybe", False),  # never closed: no answer
    ("#### 14", "#### 14", "", True),  # no reasoning
    ("opened by the prompt</think>#### 3", "#### 3", "opened by the prompt", True),
    ("<think>a</think>x<think>b</think>y", "xy", "ab", True),
])
def test_split_reasoning(text, answer, reasoning, closed):
    assert split_reasoning(text, DEFAULT_TAGS) == Reasoning(answer, reasoning, closed)


def test_other_tag_pairs():
    tags = parse_reasoning_tags("<reason>,</reason>;<think>,</think>")
    assert tags == (("<reason>", "</reason>"), ("<think>", "</think>"))
    assert split_reasoning("<reason>r</reason><think>t</think>ok", tags).answer == "ok"
    with pytest.raises(Exception, match="is not 'open,close'"):
        parse_reasoning_tags("<think>")


class ThinkingModel(LanguageModel):
    """A model whose generations hold think blocks: closed, unclosed and none, one per gsm8k doc
    of the test mirror (golds 10, 12, 14)."""

    max_length = 4096
    encoder = WordEncoder(4096)
    SCRIPT = {"sold 10 clips": "<think>10 + 0 = 10, so</think> #### 10", "sold 11 clips": "<think>11 + 1 is #### 12",
              "sold 12 clips": "#### 14"}

    def loglikelihood(self, requests, plan=None):
        raise AssertionError("gsm8k asks for generations only")

    loglikelihood_rolling = loglikelihood

    def greedy_until(self, requests, plan=None):
        return [GenerationResponse(self.SCRIPT[next(k for k in self.SCRIPT if k in r.prompt.text)], 9)
                for r in requests]

    def info(self):
        return ModelInfo(ModelIdentity("thinking-model"))


def test_pipeline_removes_reasoning_before_scoring(mirror, tmp_path):
    params = PipelineParameters(tasks="leaderboard|gsm8k|0|0", output_dir=str(tmp_path), dataset_dir=mirror,
                                save_details=True, no_cache=True, reasoning_tags=DEFAULT_TAGS)
    result = Pipeline(params, ThinkingModel).evaluate()
    scores = result.results["results"]["leaderboard|gsm8k|0"]
    assert scores["exact_match"] == pytest.approx(2 / 3)  # the unclosed one has no answer, though '#### 12' is there
    assert result.results["summary_tasks"]["leaderboard|gsm8k|0"]["unclosed_reasoning"] == 1
    assert result.results["config_general"]["reasoning_tags"] == [["<think>", "</think>"]]
    (details,) = result.details_paths
    rows = sorted(pq.read_table(details).to_pylist(), key=lambda r: r["doc_index"])
    records = [json.loads(r["extras"])["reasoning"][0] for r in rows]
    assert records == [
        {"raw": ThinkingModel.SCRIPT["sold 10 clips"], "stripped": " #### 10", "closed": True, "reasoning_tokens": 6},
        {"raw": ThinkingModel.SCRIPT["sold 11 clips"], "stripped": "", "closed": False, "reasoning_tokens": 6},
        {"raw": ThinkingModel.SCRIPT["sold 12 clips"], "stripped": "#### 14", "closed": True, "reasoning_tokens": 0},
    ]


def test_without_the_flag_generations_are_scored_as_they_are(mirror, tmp_path):
    params = PipelineParameters(tasks="leaderboard|gsm8k|0|0", output_dir=str(tmp_path), dataset_dir=mirror,
                                no_cache=True)
    result = Pipeline(params, ThinkingModel).evaluate()
    assert result.results["results"]["leaderboard|gsm8k|0"]["exact_match"] == 1.0  # '#### 12' counts
    assert result.results["summary_tasks"]["leaderboard|gsm8k|0"]["unclosed_reasoning"] is None


def test_reasoning_tags_without_the_flag_is_one_line(tmp_path):
    run = run_cli(["accelerate", "--model_args", "pretrained=x", "--tasks", "leaderboard|gsm8k|0|0",
                   "--reasoning_tags", "<r>,</r>", "--output_dir", str(tmp_path)])
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "lighteval-like: error: --reasoning_tags names the tags --remove_reasoning_tags cuts out: pass both"]
