"""The room for judge metrics (metrics/judge.py): a judge metric defined here (the judge is asked
"Is this answer correct? yes or no", a verdict starting with "yes" is 1) runs through the pipeline
with a tiny model built at test time as the judge. Its requests are computed once, in one pass,
cached under the judge's own fingerprint (not the evaluated model's); a rerun takes them all from
the cache and a killed judge pass resumes; the metric's values are the parsed verdicts. A run whose
task needs a judge and has none stops before anything loads."""

from __future__ import annotations

import json
import runpy
import weakref

import pyarrow.parquet as pq
import pytest
from fakes import WordEncoder

from lighteval_like.api.errors import UsageError
from lighteval_like.api.requests import GenerationResponse
from lighteval_like.cli.entrypoints import model_args_record
from lighteval_like.evaluation.pipeline import Pipeline, PipelineParameters
from lighteval_like.evaluation.response_scoring import score_responses
from lighteval_like.metrics.judge import JudgeModel
from lighteval_like.models.base import LanguageModel, ModelIdentity, ModelInfo
from lighteval_like.models.model_args import TransformersModelConfig
from lighteval_like.models.transformers.model import TransformersModel

JUDGED_TASKS = '''
from lighteval_like.metrics.judge import judge_metric
from lighteval_like.api.requests import GenerationRequest
from lighteval_like.tasks import RequestType, TaskConfig
from lighteval_like.tasks.prompts import gsm8k


def judge_prompt(query: str, answer: str) -> str:
    return f"{query}{answer}\\nIs this answer correct? yes or no:"


class YesNoJudge:
    """One question a sample; a verdict that starts with "yes" is 1, anything else 0."""

    def build_judge_requests(self, samples):
        return [GenerationRequest(judge_prompt(s.doc.query, s.responses[0].text), ("\\n",), 4) for s in samples]

    def parse_verdicts(self, samples, responses):
        return [float(r.text.strip().lower().startswith("yes")) for r in responses]


JUDGE = YesNoJudge()
TASKS_TABLE = [TaskConfig(
    name="judged", suite="custom", prompt_function=gsm8k, columns=("question", "answer"), hf_repo="openai/gsm8k",
    hf_subset="main", evaluation_split="test", few_shots_split=None, request_type=RequestType.GENERATIVE,
    metrics=(judge_metric("judge_yes", JUDGE),), generation_size=6, stop_sequences=("\\n",),
)]
'''
TASK, KEY = "custom|judged", "custom|judged|0"


@pytest.fixture
def judged_tasks(tmp_path) -> tuple[str, dict]:
    """The custom tasks file, and its namespace (the judge's prompt and parser)."""
    path = tmp_path / "judged_tasks.py"
    path.write_text(JUDGED_TASKS, encoding="utf-8")
    return str(path), runpy.run_path(str(path))


class TinyJudge(TransformersModel):
    """The tiny model as judge, keeping what it was asked and answered; with `die_after` it stops
    (as a killed process would) once it has answered that many requests."""

    def __init__(self, folder: str, asked: dict, die_after: int | None = None):
        super().__init__(TransformersModelConfig(pretrained=folder, dtype="float32"), device="cpu", show_progress=False)
        self.asked, self.die_after = asked, die_after

    def greedy_until(self, requests, plan=None):
        out = []
        for request in requests:  # one at a time: each answer is committed to the cache as it comes
            if len(self.asked) == self.die_after:
                raise RuntimeError("the judge was killed")
            (response,) = super().greedy_until([request])
            self.asked[request] = response
            out.append(response)
        return out


def _pipeline(tmp_path, name: str, model: str, tasks_file: str, mirror: str, judge: JudgeModel | None,
              loaded: list | None = None) -> Pipeline:
    """A run of the judged task on `model`; `loaded` gets a weak reference to the evaluated model."""
    config = TransformersModelConfig(pretrained=model, dtype="float32")
    params = PipelineParameters(tasks=f"{TASK}|0|0", custom_tasks=tasks_file, dataset_dir=mirror, save_details=True,
                                output_dir=str(tmp_path / name), cache_dir=str(tmp_path / "cache"))

    def load() -> TransformersModel:
        evaluated = TransformersModel(config, device="cpu", show_progress=False)
        (loaded if loaded is not None else []).append(weakref.ref(evaluated))
        return evaluated

    return Pipeline(params, load, model_args=model_args_record(config), judge=judge)


def _tiny_judge(folder: str, asked: dict, die_after: int | None = None) -> JudgeModel:
    return JudgeModel(lambda: TinyJudge(folder, asked, die_after),
                      model_args_record(TransformersModelConfig(pretrained=folder, dtype="float32")))


def _values(result) -> list[tuple[str, str, float]]:
    """(query + generation, generation, judge_yes) of each details row."""
    (path,) = result.details_paths
    return [(r["prompt"], r["generation"], json.loads(r["metrics"])["judge_yes"]) for r in pq.read_table(path).to_pylist()]


def test_judge_pass_is_computed_once_cached_apart_and_read_back(tiny_model, tiny_gpt2, mirror, judged_tasks, tmp_path):
    tasks_file, namespace = judged_tasks
    asked, loaded = {}, []
    judge = _tiny_judge(tiny_gpt2, asked)

    def load_judge() -> TinyJudge:
        assert loaded and loaded[0]() is None, "the evaluated model is still held when the judge loads"
        return judge.load()

    first = _pipeline(tmp_path, "first", tiny_model, tasks_file, mirror, JudgeModel(load_judge, judge.model_args),
                      loaded).evaluate()
    general = first.results["summary_general"]
    rows = _values(first)
    assert len(rows) == 3 and len(asked) == 3  # one question a sample, each computed once
    assert general["judge"]["num_requests"] == 3
    assert general["judge"]["response_cache"] | {"fingerprint": None} == {
        "enabled": True, "fingerprint": None, "hits": 0, "computed": 3}
    assert general["judge"]["response_cache"]["fingerprint"] != general["response_cache"]["fingerprint"]
    assert general["judge"]["model_args"]["pretrained"] == tiny_gpt2

    answers = {request.prompt.text: response for request, response in asked.items()}
    for prompt, generation, value in rows:  # the values are the parsed verdicts
        verdict = answers[namespace["judge_prompt"](prompt, generation)]
        assert value == namespace["JUDGE"].parse_verdicts(None, [verdict])[0]
    mean = sum(v for _, _, v in rows) / 3
    assert first.results["results"][KEY]["judge_yes"] == pytest.approx(mean)

    again: dict = {}
    second = _pipeline(tmp_path, "second", tiny_model, tasks_file, mirror, _tiny_judge(tiny_gpt2, again)).evaluate()
    general = second.results["summary_general"]
    assert again == {}  # nothing asked of the judge: every verdict read from the cache
    assert general["judge"]["response_cache"]["hits"] == 3 and general["judge"]["response_cache"]["computed"] == 0
    assert general["response_cache"]["computed"] == 0
    assert _values(second) == rows


def test_a_killed_judge_pass_resumes_from_the_cache(tiny_model, tiny_gpt2, mirror, judged_tasks, tmp_path):
    tasks_file, _ = judged_tasks
    killed: dict = {}
    with pytest.raises(RuntimeError, match="the judge was killed"):
        _pipeline(tmp_path, "killed", tiny_model, tasks_file, mirror, _tiny_judge(tiny_gpt2, killed, 1)).evaluate()
    assert len(killed) == 1
    rest: dict = {}
    result = _pipeline(tmp_path, "resumed", tiny_model, tasks_file, mirror, _tiny_judge(tiny_gpt2, rest)).evaluate()
    general = result.results["summary_general"]
    assert general["response_cache"]["computed"] == 0
    assert general["judge"]["response_cache"]["hits"] == 1 and general["judge"]["response_cache"]["computed"] == 2
    assert not set(rest) & set(killed)


class ScriptedJudge(LanguageModel):
    """Says "yes" to the questions about the doc with 11 clips, "no" to the others."""

    max_length = 4096
    encoder = WordEncoder(4096)

    def loglikelihood(self, requests, plan=None):
        raise AssertionError("a judge is asked for generations")

    loglikelihood_rolling = loglikelihood

    def greedy_until(self, requests, plan=None):
        return [GenerationResponse(" yes" if "sold 11 clips" in r.prompt.text else " no", 1) for r in requests]

    def info(self):
        return ModelInfo(ModelIdentity("scripted-judge"))


def test_values_follow_the_verdicts(tiny_model, mirror, judged_tasks, tmp_path):
    tasks_file, _ = judged_tasks
    judge = JudgeModel(ScriptedJudge, {"judge": "scripted"})
    result = _pipeline(tmp_path, "scripted", tiny_model, tasks_file, mirror, judge).evaluate()
    values = {prompt.split(" clips")[0].rsplit(" ", 1)[1]: value for prompt, _, value in _values(result)}
    assert values == {"10": 0.0, "11": 1.0, "12": 0.0}
    assert result.results["results"][KEY]["judge_yes"] == pytest.approx(1 / 3)


def test_a_judge_metric_without_a_judge_stops_before_anything_loads(tiny_model, mirror, judged_tasks, tmp_path):
    tasks_file, _ = judged_tasks
    pipeline = _pipeline(tmp_path, "refused", tiny_model, tasks_file, mirror, None)
    pipeline.model_factory = lambda: pytest.fail("the model loaded")
    with pytest.raises(UsageError) as refused:
        pipeline.evaluate()
    assert str(refused.value).startswith(f"task {TASK} metric judge_yes needs a judge model and this run has none: "
                                         "pass --judge_model_args 'base_url=...,model=...,chat' (or judge_backend="
                                         "transformers,pretrained=...), or give the pipeline one")
    assert "\n" not in str(refused.value) and not (tmp_path / "refused").exists()
    responses = tmp_path / "responses.jsonl"
    responses.write_text(json.dumps({"prompt": "Question: x\nAnswer:", "response": " 1"}) + "\n", encoding="utf-8")
    with pytest.raises(UsageError, match=f"task {TASK} metric judge_yes needs a judge model .*: tasks score asks no judge"):
        score_responses(f"{TASK}|0|0", str(responses), mirror, tasks_file)
