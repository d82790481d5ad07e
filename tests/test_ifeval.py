"""IFEval: the checkers against the authors' scorer on the published GPT-4 responses (verdict by
verdict, through `tasks score`), the behaviours of single checkers, bad dataset rows, and the task
run by a model (batch size, resume, reasoning tags)."""

from __future__ import annotations

import json
import os

import pytest
from conftest import run_cli

from lighteval_like.data import DATA_DIR_ENV
from lighteval_like.response_scoring import score_responses

TASK = "leaderboard|ifeval|0|0"
SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
HUB = os.environ.get(DATA_DIR_ENV) or os.path.join(SHARED, "hub")
PUBLISHED = os.path.join(SHARED, "ifeval")


def _published(name: str) -> str:
    path = os.path.join(PUBLISHED, name)
    if not os.path.isfile(path) or not os.path.isfile(os.path.join(HUB, "google", "IFEval", "default", "train.jsonl")):
        pytest.skip(f"no IFEval reference data at {PUBLISHED} and google/IFEval mirror at {HUB}")
    return path


def _jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ------------------------------------------------------- the authors' scorer, verdict by verdict


def test_every_verdict_equals_the_authors_scorer():
    """Strict and loose, every instruction of the 270 published GPT-4 responses (826 verdicts)."""
    official = {v["prompt"]: v for v in _jsonl(_published("official_verdicts_part1.jsonl"))}
    scored = score_responses(TASK, _published("gpt4_responses_part1.jsonl"), HUB)
    assert len(scored.samples) == len(official) == 270
    differ, compared = [], 0
    for sample in scored.samples:
        reference = official[sample.doc.query]
        ours = sample.extras["instructions"]
        assert [v["instruction"] for v in ours] == reference["instruction_id_list"]
        for mode in ("strict", "loose"):
            compared += len(ours)
            differ += [(sample.doc.specific["key"], mode, v["instruction"])
                       for v, ref in zip(ours, reference[mode]["follow_instruction_list"]) if v[mode] != ref]
    assert compared == 826 and differ == []


def test_tasks_score_gives_the_published_figures(tmp_path):
    official = json.load(open(_published("official_scores_part1.json"), encoding="utf-8"))
    out = tmp_path / "scores.json"
    run = run_cli(["tasks", "score", TASK, "--responses", _published("gpt4_responses_part1.jsonl"),
                   "--json", str(out), "--dataset_dir", HUB])
    assert run.returncode == 0, run.stderr[-2000:]
    assert "inst_level_loose_acc" in run.stdout
    scores = json.loads(out.read_text())["results"]["leaderboard|ifeval|0"]
    assert {k: round(100 * v, 4) for k, v in scores.items()} == {k: official[k] for k in scores}
    assert len(scores) == 4


def test_a_response_to_an_unknown_prompt_is_one_line(tmp_path):
    responses = tmp_path / "r.jsonl"
    responses.write_text(json.dumps({"prompt": "Say hi.", "response": "hi"}) + "\n")
    _published("gpt4_responses_part1.jsonl")
    run = run_cli(["tasks", "score", TASK, "--responses", str(responses), "--dataset_dir", HUB])
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"lighteval-like: error: {responses}: the response to prompt 'Say hi.' matches no doc of task "
        "leaderboard|ifeval|0; score it against the task its prompt came from"
    ]
