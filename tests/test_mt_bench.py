"""MT-Bench and the judge from the command line, on a tiny model with a chat template built at test
time and a small MT-Bench folder written here (FastChat's layout and placeholders): the second
turn's prompt holds the model's own first answer and a rerun computes nothing; verdicts without a
rating are counted and left out of the means; `--judge_model_args` runs a judge through
`transformers` and through `endpoint` (the regex constraint sent where the server offers structured
output, and only there); a bad `--judge_model_args` is one line and a non-zero exit; `run` closes the
evaluated model before the judge loads; a run without a chat template is refused in one line before
anything loads (other tasks are not); under torchrun (dp=2) rank 0 alone runs the judge and the run
equals `accelerate`'s."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
import weakref

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import run_cli
from endpoint_server import TinyServer
from fakes import WordEncoder
from test_distributed import _env, assert_same_scores, distributed_args, launch, load_output, write_configs

from lighteval_like.api.errors import DatasetUnavailableError
from lighteval_like.api.generation import parse_gen_kwargs
from lighteval_like.api.requests import GenerationRequest, GenerationResponse, request_identity
from lighteval_like.cli.commands import main
from lighteval_like.cli.entrypoints import model_args_record, one_process, run
from lighteval_like.evaluation.pipeline import Pipeline, PipelineParameters
from lighteval_like.metrics.judge import JudgeModel
from lighteval_like.models import registry
from lighteval_like.models.base import LanguageModel, ModelIdentity, ModelInfo
from lighteval_like.models.endpoint.check import STRUCTURED_PROBE
from lighteval_like.models.endpoint.config import EndpointModelConfig
from lighteval_like.models.endpoint.model import EndpointModel
from lighteval_like.models.model_args import parse_model_args
from lighteval_like.models.transformers.config import TransformersModelConfig
from lighteval_like.models.transformers.model import TransformersModel
from lighteval_like.tasks.mt_bench import VERDICT_REGEX, data_folder
from lighteval_like.tasks.registry import Registry

TASK, KEY = "lighteval|mt_bench|0|0", "lighteval|mt_bench|0"
QUESTIONS = [
    {"question_id": 81, "category": "writing", "turns": ["Write about cats.", "Now as a poem."]},
    {"question_id": 111, "category": "math", "turns": ["What is 2 plus 2?", "And times 3?"]},
    {"question_id": 101, "category": "reasoning", "turns": ["Who overtook whom?", "And the last one?"]},
]
SINGLE, MULTI = "[Question]\n{question}\n[Answer]\n{answer}", "### User:\n{question_1}\n{answer_1}\n{question_2}\n{answer_2}"
JUDGE_PROMPTS = [
    {"name": "single-v1", "system_prompt": "Judge.", "prompt_template": SINGLE},
    {"name": "single-math-v1", "system_prompt": "Judge.", "prompt_template": SINGLE + "\n[Ref]\n{ref_answer_1}"},
    {"name": "single-v1-multi-turn", "system_prompt": "Judge two.", "prompt_template": MULTI},
    {"name": "single-math-v1-multi-turn", "system_prompt": "Judge two.",
     "prompt_template": MULTI + "\n[Ref]\n{ref_answer_1}\n{ref_answer_2}"},
]
REFERENCES = [{"question_id": q, "choices": [{"index": 0, "turns": [f"ref {q} a", f"ref {q} b"]}]} for q in (101, 111)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """A hub mirror folder with `mt_bench/` beside it (the shared layout), as FastChat lays it out."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "mt_bench"
    (folder / "reference_answer").mkdir(parents=True)
    for name, rows in (("question.jsonl", QUESTIONS), ("judge_prompts.jsonl", JUDGE_PROMPTS),
                       ("reference_answer/gpt-4.jsonl", REFERENCES)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (root / "hub").mkdir()
    return str(root / "hub")


class Recording(TransformersModel):
    """The tiny chat model, keeping each generation request with its response."""

    def __init__(self, folder: str, asked: dict):
        super().__init__(TransformersModelConfig(pretrained=folder, dtype="float32"), device="cpu", show_progress=False)
        self.asked = asked

    def greedy_until(self, requests, plan=None):
        responses = super().greedy_until(requests, plan)
        self.asked.update(zip(requests, responses))
        return responses


class ScriptedJudge(LanguageModel):
    """Verdicts by question and turn: some with a rating, some without one or out of range."""

    max_length = 4096
    encoder = WordEncoder(4096)
    VERDICTS = {("cats", 1): "Fine. Rating: [[8]]", ("cats", 2): "no rating here",
                ("2 plus 2", 1): "Correct [9]", ("2 plus 2", 2): "Rating: [[11]]",
                ("overtook", 1): "[[2]]", ("overtook", 2): "Rating: [[4]]"}

    def loglikelihood(self, requests, plan=None):
        raise AssertionError("a judge is asked for generations")

    loglikelihood_rolling = loglikelihood

    def greedy_until(self, requests, plan=None):
        out = []
        for r in requests:
            user = r.prompt.messages()[1]["content"]
            turn = 2 if user.startswith("### User:") else 1
            out.append(GenerationResponse(next(v for (q, t), v in self.VERDICTS.items() if q in user and t == turn), 3))
        return out

    def info(self):
        return ModelInfo(ModelIdentity("scripted-judge"))


def _pipeline(tmp_path, name: str, model, judge: JudgeModel, data_dir: str) -> Pipeline:
    params = PipelineParameters(tasks=TASK, dataset_dir=data_dir, use_chat_template=True, save_details=True,
                                generation=parse_gen_kwargs("max_new_tokens=5"), output_dir=str(tmp_path / name),
                                cache_dir=str(tmp_path / "cache"))
    return Pipeline(params, model, model_args={"pretrained": "recording"}, judge=judge)


def _details(result) -> list[dict]:
    (path,) = result.details_paths
    return pq.read_table(path).to_pylist()


def test_the_second_turn_holds_the_models_own_first_answer_and_a_rerun_computes_nothing(tiny_chat_model, data_dir, tmp_path):
    asked: dict = {}
    judge = JudgeModel(ScriptedJudge, {"judge": "scripted"})
    first = _pipeline(tmp_path, "first", lambda: Recording(tiny_chat_model, asked), judge, data_dir).evaluate()
    firsts = {r.prompt.messages()[0]["content"]: answer.text for r, answer in asked.items() if len(r.prompt.turns) == 1}
    seconds = [r.prompt.messages() for r in asked if len(r.prompt.turns) == 3]
    assert sorted(firsts) == sorted(q["turns"][0] for q in QUESTIONS) and len(seconds) == 3
    for q in QUESTIONS:  # user q1, the model's own answer to it, user q2
        assert [m for m in seconds if m[0]["content"] == q["turns"][0]] == [[
            {"role": "user", "content": q["turns"][0]}, {"role": "assistant", "content": firsts[q["turns"][0]]},
            {"role": "user", "content": q["turns"][1]}]]
    rows = _details(first)
    assert all(len(r["generations"]) == 2 and r["generations"][0] == firsts[r["prompt"].split("\n")[0][6:]]
               for r in rows)
    assert first.results["summary_general"]["response_cache"]["computed"] == 6

    again: dict = {}
    second = _pipeline(tmp_path, "second", lambda: Recording(tiny_chat_model, again), judge, data_dir).evaluate()
    assert again == {}  # both rounds read from the response cache
    general = second.results["summary_general"]
    assert general["response_cache"]["hits"] == 6 and general["response_cache"]["computed"] == 0
    assert [r["generations"] for r in _details(second)] == [r["generations"] for r in rows]


def test_verdicts_without_a_rating_are_counted_and_left_out_of_the_means(tiny_chat_model, data_dir, tmp_path):
    asked: dict = {}
    result = _pipeline(tmp_path, "scored", lambda: Recording(tiny_chat_model, asked),
                       JudgeModel(ScriptedJudge, {"judge": "scripted"}), data_dir).evaluate()
    scores = result.results["results"][KEY]
    assert scores["score_turn_1"] == pytest.approx((8 + 9 + 2) / 3)
    assert scores["score_turn_2"] == pytest.approx(4.0)  # "no rating here" and [[11]] are no value, not 0
    assert scores["score"] == pytest.approx((8 + 9 + 2 + 4) / 4)
    assert scores["writing_turn_1"] == 8.0 and scores["math"] == 9.0 and scores["reasoning"] == pytest.approx(3.0)
    assert "writing_turn_2" not in scores and "math_turn_2" not in scores and "coding" not in scores
    assert result.results["summary_tasks"][KEY]["judge_unparsed"] == 2
    ratings = {r["doc_index"]: [v["rating"] for v in json.loads(r["extras"])["verdicts"]] for r in _details(result)}
    assert ratings == {0: [8.0, None], 1: [9.0, None], 2: [2.0, 4.0]}


def test_the_judge_runs_from_the_command_line_through_transformers(tiny_chat_model, data_dir, tmp_path):
    out = tmp_path / "out"
    done = run_cli(["accelerate", "--model_args", f"pretrained={tiny_chat_model},dtype=float32", "--tasks", TASK,
                    "--dataset_dir", data_dir, "--use_chat_template", "--gen_kwargs", "max_new_tokens=4",
                    "--judge_model_args", f"judge_backend=transformers,pretrained={tiny_chat_model},dtype=float32",
                    "--output_dir", str(out), "--save_details"])
    assert done.returncode == 0, done.stderr
    (path,) = glob.glob(str(out / "results" / "*" / "results_*.json"))
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    judge = results["summary_general"]["judge"]
    assert judge["backend"] == "transformers" and judge["model_args"]["pretrained"] == tiny_chat_model
    assert judge["num_requests"] == 6 and judge["response_cache"]["computed"] == 6
    (details,) = glob.glob(str(out / "details" / "*" / "*" / "*.parquet"))
    verdicts = [v for r in pq.read_table(details).to_pylist() for v in json.loads(r["extras"])["verdicts"]]
    unparsed = sum(v["rating"] is None for v in verdicts)
    assert len(verdicts) == 6 and results["summary_tasks"][KEY]["judge_unparsed"] == unparsed
    assert (f"{KEY}: {unparsed} judge verdict(s) without a rating" in done.stdout) == (unparsed > 0)
    assert "Judge response cache: 0 reused, 6 computed" in done.stdout


def test_the_judge_runs_through_an_endpoint_with_its_structured_output(tiny_chat_model, data_dir, tmp_path):
    server = TinyServer(tiny_chat_model, key="sekrit-key")
    server.structured = True
    try:
        args = f"base_url={server.url},model=tiny,chat,api_key_env=JUDGE_KEY"
        out = tmp_path / "out"
        done = run_cli(["endpoint", "--model_args", f"{args},tokenizer={tiny_chat_model}", "--use_chat_template", "--tasks",
                        TASK, "--dataset_dir", data_dir, "--gen_kwargs", "max_new_tokens=4", "--judge_model_args", args,
                        "--output_dir", str(out)], env={"JUDGE_KEY": "sekrit-key"})
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    assert server.regexes == [STRUCTURED_PROBE] + [VERDICT_REGEX] * 6  # the probe, then every verdict constrained
    (path,) = glob.glob(str(out / "results" / "*" / "results_*.json"))
    with open(path, encoding="utf-8") as f:
        text = f.read()
    results = json.loads(text)
    assert results["results"][KEY]["score"] == 5.0 and results["summary_tasks"][KEY]["judge_unparsed"] == 0
    judge = results["summary_general"]["judge"]
    assert judge["backend"] == "endpoint" and judge["model_args"]["api_key_env"] == "JUDGE_KEY"
    assert judge["model"]["endpoint"]["structured_outputs"] is True and "sekrit-key" not in text


def _rows(cache: str) -> int:
    """Responses committed to the response cache so far (a file whose table is not made yet has none)."""
    count = 0
    for path in glob.glob(os.path.join(cache, "responses", "*.sqlite")):
        with contextlib.closing(sqlite3.connect(path)) as db:
            try:
                count += db.execute("SELECT count(*) FROM responses").fetchone()[0]
            except sqlite3.OperationalError:
                pass
    return count


def test_a_judge_pass_killed_from_the_command_line_resumes(tiny_chat_model, data_dir, tmp_path):
    server = TinyServer(tiny_chat_model)
    server.structured, server.structured_delay_s = True, 0.4  # verdicts one at a time, 0.4 s each
    args, cache = f"base_url={server.url},model=tiny,chat", str(tmp_path / "cache")
    command = ["endpoint", "--model_args", f"{args},tokenizer={tiny_chat_model}", "--use_chat_template", "--tasks", TASK,
               "--dataset_dir", data_dir, "--gen_kwargs", "max_new_tokens=4", "--judge_model_args",
               f"{args},concurrent_requests=1", "--output_dir", str(tmp_path / "out"), "--cache_dir", cache]
    try:
        killed = subprocess.Popen([sys.executable, "-m", "lighteval_like", *command], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while _rows(cache) < 8 and time.time() < deadline:  # the 6 answers and 2 verdicts committed
            time.sleep(0.05)
        os.kill(killed.pid, signal.SIGKILL)
        assert killed.wait() == -signal.SIGKILL
        kept = _rows(cache)
        done = run_cli(command)
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    (path,) = glob.glob(str(tmp_path / "out" / "results" / "*" / "results_*.json"))
    with open(path, encoding="utf-8") as f:
        general = json.load(f)["summary_general"]
    assert general["response_cache"] == {**general["response_cache"], "hits": 6, "computed": 0}
    judged = general["judge"]["response_cache"]
    assert judged["hits"] == kept - 6 >= 2 and judged["computed"] == 6 - judged["hits"] >= 1


def test_a_server_without_structured_output_gets_no_constraint(tiny_chat_model):
    server = TinyServer(tiny_chat_model)  # it ignores structured_outputs, as vLLM ignores guided_regex
    try:
        model = EndpointModel(parse_model_args(f"base_url={server.url},model=tiny,chat", EndpointModelConfig), False)
        (answer,) = model.greedy_until([GenerationRequest("Rate it.", (), 4, regex=VERDICT_REGEX)])
    finally:
        server.close()
    assert server.regexes == [STRUCTURED_PROBE]  # the probe alone: the verdict is generated freely, then parsed
    assert model.info().extra["endpoint"]["structured_outputs"] is False and answer.text != "zqqq7"


def test_a_regex_is_part_of_the_request_identity_only_when_set():
    free, constrained = GenerationRequest("Rate it.", (), 4), GenerationRequest("Rate it.", (), 4, regex="[0-9]")
    assert "regex" not in request_identity(free)  # response caches written before the field are still read
    assert request_identity(free) != request_identity(constrained) and free != constrained


@pytest.mark.parametrize("judge_args, message", [
    ("judge_backend=sglang,pretrained=x", "--judge_model_args: judge_backend=sglang is not one judge backend: give one "
                                          "of endpoint, vllm, transformers"),
    ("base_url=http://127.0.0.1:9/v1,model=m", "--judge_model_args: the judge is asked chat prompts"),
    ("judge_backend=transformers,pretrained=x,bogus=1", "--judge_model_args (transformers judge): unknown model arg"),
    ("judge_backend=transformers,dtype=float32", "--judge_model_args (transformers judge): model args must include"),
])
def test_a_bad_judge_model_args_is_one_line_and_a_non_zero_exit(judge_args, message, tiny_chat_model, data_dir, tmp_path):
    done = CliRunner().invoke(main, ["accelerate", "--model_args", f"pretrained={tiny_chat_model}", "--tasks", TASK,
                                     "--dataset_dir", data_dir, "--judge_model_args", judge_args,
                                     "--output_dir", str(tmp_path / "out")])
    assert done.exit_code != 0 and done.stdout == ""
    assert done.stderr.startswith(f"lighteval-like: error: {message}") and done.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_mt_bench_files_are_found_in_or_beside_the_data_dir_else_one_line(data_dir, tmp_path):
    folder = os.path.join(os.path.dirname(data_dir), "mt_bench")
    assert data_folder(data_dir) == folder and data_folder(os.path.dirname(data_dir)) == folder
    with pytest.raises(DatasetUnavailableError) as refused:
        data_folder(str(tmp_path))
    assert "no mt_bench/question.jsonl in" in str(refused.value) and "\n" not in str(refused.value)


def test_run_closes_the_evaluated_model_before_the_judge_loads(tiny_chat_model, data_dir, tmp_path, monkeypatch):
    events, held = [], []

    def load(config, context):
        assert not held or held[-1]() is None, "the evaluated model is still referenced when the judge loads"
        model = TransformersModel(config, device="cpu", show_progress=False)
        events.append(("load", config.max_gen_toks))
        held.append(weakref.ref(model))
        return model

    monkeypatch.setitem(registry.BACKENDS, "tracked", registry.Backend(
        "tracked", TransformersModelConfig, load, close=lambda model: events.append(("close", model.config.max_gen_toks))))
    model = parse_model_args(f"pretrained={tiny_chat_model},dtype=float32,max_gen_toks=11")
    judge = parse_model_args(f"pretrained={tiny_chat_model},dtype=float32,max_gen_toks=22")
    params = PipelineParameters(tasks=TASK, dataset_dir=data_dir, use_chat_template=True, max_samples=1,
                                generation=parse_gen_kwargs("max_new_tokens=2"), output_dir=str(tmp_path / "out"))
    result = run("tracked", model, params, one_process(), judge=("tracked", judge))
    assert events == [("load", 11), ("close", 11), ("load", 22), ("close", 22)]
    assert result.results["summary_general"]["judge"]["model_args"] == model_args_record(judge)


def test_tasks_inspect_shows_the_second_turn(data_dir):
    shown = CliRunner().invoke(main, ["tasks", "inspect", "lighteval|mt_bench", "--dataset_dir", data_dir])
    assert shown.exit_code == 0, shown.output
    assert "Write about cats.\n---\nturn 2, after the model's answer: 'Now as a poem.'\n" in shown.stdout


ALONGSIDE = f"lighteval|arithmetic_generated:2da|0|0,{TASK}"


@pytest.mark.parametrize("backend, model_args, tasks, fix", [
    ("accelerate", "pretrained={model},dtype=float32", ALONGSIDE, "pass --use_chat_template"),
    # an endpoint's `chat` alone leaves the prompts text: the second turn would be one user message
    ("endpoint", "base_url=http://127.0.0.1:9/v1,model=m,chat,tokenizer={model}", ALONGSIDE,
     "pass --use_chat_template"),
    ("endpoint", "base_url=http://127.0.0.1:9/v1,model=m,chat", TASK,
     "pass --use_chat_template, with tokenizer=<the served model's folder> in the model args to render its turns"),
])
def test_mt_bench_without_a_chat_template_is_one_line_before_anything_loads(backend, model_args, tasks, fix,
                                                                            tiny_chat_model, data_dir, tmp_path):
    done = CliRunner().invoke(main, [backend, "--model_args", model_args.format(model=tiny_chat_model), "--tasks", tasks,
                                     "--dataset_dir", data_dir, "--output_dir", str(tmp_path / "out")])
    assert done.exit_code == 2 and done.stdout == ""
    assert done.stderr == f"lighteval-like: error: task {KEY} asks a chat model the turns of a conversation: {fix}\n"
    assert not (tmp_path / "out").exists()


def test_a_task_that_asks_no_chat_model_runs_without_a_chat_template(tiny_chat_model, tmp_path):
    needing = [n for n in Registry().names() if Registry().get(n).needs_chat_template]
    assert needing == ["lighteval|mt_bench"]
    done = CliRunner().invoke(main, ["accelerate", "--model_args", f"pretrained={tiny_chat_model},dtype=float32", "--tasks",
                                     "lighteval|arithmetic_generated:2da|0|0", "--max_samples", "2",
                                     "--output_dir", str(tmp_path / "out")])
    assert done.exit_code == 0, done.output
    assert glob.glob(str(tmp_path / "out" / "results" / "*" / "results_*.json"))


def _judged(out: str) -> tuple[tuple, dict, list]:
    """A judged run's output, its judge record and every verdict of its details, in doc order."""
    loaded = load_output(out)
    verdicts = [json.loads(row["extras"])["verdicts"] for _, row in sorted(loaded[1].items())]
    return loaded, loaded[0]["summary_general"]["judge"], verdicts


def test_a_judge_runs_on_rank_0_by_itself_as_under_accelerate(tiny_chat_model, data_dir, tmp_path):
    """mt_bench with a transformers judge at dp=2: the answers gathered, rank 0 alone asks the judge
    (rank 1 waits at the barrier and exits 0), and the scores, verdicts and judge record are those of
    a single-process `accelerate` run with the same judge."""
    judge = f"judge_backend=transformers,pretrained={tiny_chat_model},dtype=float32"
    reference = tmp_path / "accelerate"
    short = f"pretrained={tiny_chat_model},dtype=float32,generation_parameters={{max_new_tokens:8}}"  # answers of 8 tokens
    done = run_cli(["accelerate", "--model_args", short, "--tasks", TASK,
                    "--dataset_dir", data_dir, "--use_chat_template", "--max_samples", "2", "--save_details",
                    "--judge_model_args", judge, "--output_dir", str(reference)])
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt, override, out = write_configs(tmp_path, tiny_chat_model, "judged", {"dp": 2, "tp": 1, "pp": 1},
                                        tasks=TASK, max_samples=2, use_chat_template=True,
                                        model_args={"generation_parameters": {"max_new_tokens": 8}})
    env = _env({"LIGHTEVAL_LIKE_DATA_DIR": data_dir}, uuid.uuid4().hex, tmp_path)
    (run,) = launch([["--standalone", "--nnodes=1", "--nproc-per-node=2", *distributed_args(ckpt, override),
                      "--judge_model_args", judge]], env)
    assert run.returncode == 0, run.output[-4000:]
    assert not run.leftover
    (ref, ref_judge, ref_verdicts), (got, got_judge, got_verdicts) = _judged(str(reference)), _judged(out)
    assert_same_scores(ref, got)  # answers of both turns, and every score the verdicts gave
    assert got_verdicts == ref_verdicts and len(got_verdicts) == 2
    assert got[0]["summary_tasks"][KEY]["judge_unparsed"] == ref[0]["summary_tasks"][KEY]["judge_unparsed"]
    assert got_judge == ref_judge and got_judge["backend"] == "transformers"
    assert got_judge["num_requests"] == 4 and got_judge["response_cache"]["computed"] == 4
    assert run.output.count("Judge response cache: 0 reused, 4 computed") == 1
    assert run.output.count("Loading weights: 100%") == 3  # transformers' bar: the model on both ranks, the judge once


def test_mt_bench_without_a_chat_template_exits_2_before_loading(tiny_chat_model, data_dir, tmp_path):
    ckpt, override, out = write_configs(tmp_path, tiny_chat_model, "bare", {"dp": 1, "tp": 1, "pp": 1},
                                        tasks=TASK, max_samples=1)
    env = _env({"LIGHTEVAL_LIKE_DATA_DIR": data_dir}, uuid.uuid4().hex, tmp_path)
    (run,) = launch([["--standalone", "--nnodes=1", "--nproc-per-node=1", *distributed_args(ckpt, override)]], env)
    assert run.returncode != 0 and not run.leftover
    assert (f"lighteval-like: error: task {KEY} asks a chat model the turns of a conversation: "
            f"set use_chat_template: true under tasks: in {override}\n") in run.output
    assert re.search(r"Root Cause.*?exitcode\s*: 2 ", run.output, re.S)
    assert "Traceback" not in run.output.split("lighteval-like: error")[0]  # nothing ran before the line
    assert "Loading weights" not in run.output and not os.path.exists(out)
