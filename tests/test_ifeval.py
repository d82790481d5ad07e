"""IFEval: the checkers against the authors' scorer on the published GPT-4 responses (verdict by
verdict, through `tasks score`), the behaviours of single checkers, bad dataset rows, and the task
run by a model (batch size, resume, reasoning tags)."""

from __future__ import annotations

import glob
import json
import os
import signal

import pyarrow.parquet as pq
import pytest
from conftest import run_cli, write_rows
from fakes import MarkerChatEncoder, WordEncoder
from hooks import cache_rows, run_and_kill

from lighteval_like.api.requests import GenerationResponse
from lighteval_like.evaluation.pipeline import Pipeline, PipelineParameters
from lighteval_like.evaluation.reasoning import DEFAULT_TAGS
from lighteval_like.evaluation.response_scoring import score_responses
from lighteval_like.models.base import LanguageModel, ModelIdentity, ModelInfo
from lighteval_like.tasks import ifeval_text
from lighteval_like.tasks.data import DATA_DIR_ENV
from lighteval_like.tasks.ifeval import ifeval, loose_variants, verdicts

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


# ------------------------------------------------------------------ single checkers


def _doc(ids: list[str], kwargs: list[dict], prompt: str = "p") -> object:
    return ifeval({"key": 1, "prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs}, "ifeval")


def _verdict(instruction: str, kwargs: dict, response: str) -> tuple[bool, bool]:
    [v] = verdicts(_doc([instruction], [kwargs]), response)
    return v["strict"], v["loose"]


@pytest.mark.parametrize("instruction, kwargs, response, expected", [
    # loose: the first line dropped (a preamble), the last line dropped, '*' removed
    ("startend:quotation", {}, 'Sure, here it is:\n"Quoted."', (False, True)),
    ("startend:end_checker", {"end_phrase": "Peace!"}, "Done. Peace!\nLet me know!", (False, True)),
    ("punctuation:no_comma", {}, "a, b", (False, False)),
    ("detectable_format:title", {}, "**<<My title>>**", (True, True)),
    ("change_case:english_lowercase", {}, "**all lowercase english words here**", (True, True)),
    ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', (True, True)),
    ("detectable_format:json_format", {}, 'Here:\n{"a": 1}', (False, True)),
    # blank responses never follow, even an instruction an empty text would satisfy
    ("punctuation:no_comma", {}, "  \n ", (False, False)),
    # punkt: "Dr." and "U.S." end no sentence (two here), "e.g." does (three)
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"},
     "Dr. Smith went to the U.S. in May. He stayed.", (True, True)),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"},
     "Dr. Smith went to the U.S. in May. He stayed, e.g. in Boston.", (True, True)),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "NASA, the ESA and ESA-run labs.", (True, True)),  # word_tokenize keeps 'ESA-run' whole (not upper)
    ("change_case:capital_word_frequency", {"capital_frequency": 3, "capital_relation": "at least"},
     "NASA, the ESA and ESA-run labs.", (False, False)),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
     'First.\n\n"Then, second.', (True, True)),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "a\n***\n\n***\nb", (False, False)),
    ("combination:two_responses", {}, "one\n******\ntwo", (True, True)),
    # a symbol, not a letter, is counted as asked (lm-eval's port checks a random letter instead)
    ("keywords:letter_frequency", {"letter": "#", "let_frequency": 4, "let_relation": "at least"},
     "#ice #cream #gentle #stomach", (True, True)),
    ("keywords:letter_frequency", {"letter": "#", "let_frequency": 4, "let_relation": "at least"},
     "#ice #cream #gentle", (False, False)),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*a* and **b**", (True, True)),
])
def test_checker_behaviour(instruction, kwargs, response, expected):
    assert _verdict(instruction, kwargs, response) == expected


def test_loose_variants_are_the_eight_of_the_paper():
    assert loose_variants("*a*\nb\n*c*") == ["*a*\nb\n*c*", "b\n*c*", "*a*\nb", "b", "a\nb\nc", "b\nc", "a\nb", "b"]


def test_language_detection_is_seeded():
    text = "Ceci est une phrase en français, assez longue pour que la détection soit sûre."
    assert {ifeval_text.detect_language(text) for _ in range(5)} == {"fr"}
    assert ifeval_text.detect_language("1234 !!") is None  # no features: the reference then passes
    assert _verdict("language:response_language", {"language": "fr"}, text) == (True, True)


def test_punkt_model_is_written_to_the_cache_folder_and_reused(tmp_path):
    ifeval_text.sentence_tokenizer.cache_clear()
    folder = os.path.join(ifeval_text.nltk_data_dir(str(tmp_path)), "tokenizers", "punkt_tab", "english")
    tokenizer = ifeval_text.sentence_tokenizer(str(tmp_path))
    assert sorted(os.listdir(folder)) == sorted(ifeval_text.MODEL_FILES)
    assert tokenizer.tokenize("Mr. Brown left. Mrs. Green stayed.") == ["Mr. Brown left.", "Mrs. Green stayed."]
    written = {n: os.stat(os.path.join(folder, n)).st_mtime_ns for n in ifeval_text.MODEL_FILES}
    ifeval_text.sentence_tokenizer.cache_clear()
    ifeval_text.sentence_tokenizer(str(tmp_path))  # a new process: the files are read, not written again
    assert {n: os.stat(os.path.join(folder, n)).st_mtime_ns for n in ifeval_text.MODEL_FILES} == written
    ifeval_text.sentence_tokenizer.cache_clear()


# ------------------------------------------------------------------ bad dataset rows

GOOD_ROWS = [
    {"key": 10, "prompt": "Write a short poem about rain. Do not use any commas.",
     "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
    {"key": 11, "prompt": "Answer in JSON: what is 2 + 2? Use fewer than 10 words.",
     "instruction_id_list": ["detectable_format:json_format", "length_constraints:number_words"],
     "kwargs": [{}, {"relation": "less than", "num_words": 10}]},
    {"key": 12, "prompt": "Describe a cat in English, all in lowercase letters.",
     "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]},
    {"key": 13, "prompt": "Tell me about dogs and end with 'Woof!'.",
     "instruction_id_list": ["startend:end_checker"], "kwargs": [{"end_phrase": "Woof!"}]},
]
UNKNOWN_ID = {"key": 20, "prompt": "Write without semicolons.", "instruction_id_list": ["punctuation:no_comas"],
              "kwargs": [{}]}
BAD_RELATION = {"key": 21, "prompt": "Write at most 50 words.", "instruction_id_list": ["length_constraints:number_words"],
                "kwargs": [{"relation": "at most", "num_words": 50}]}
MISSING_ARGUMENT = {"key": 22, "prompt": "Use the word 'sun' twice.", "instruction_id_list": ["keywords:frequency"],
                    "kwargs": [{"keyword": "sun", "relation": "at least"}]}


QUIET_DATASETS = {"HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}  # the mirror's rows differ in keys: `datasets` reads it


def _mirror(root, rows: list[dict]) -> str:
    write_rows(str(root), "google/IFEval", None, "train", rows)
    return str(root)


def _responses(path, rows: list[dict], text: str = "a plain answer") -> str:
    path.write_text("".join(json.dumps({"prompt": r["prompt"], "response": text}) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("bad, problem", [
    (UNKNOWN_ID, "unknown instruction id 'punctuation:no_comas' (did you mean 'punctuation:no_comma'? "
                 "IFEval has 25: see lighteval_like.tasks.ifeval_instructions.INSTRUCTIONS)"),
    (BAD_RELATION, "instruction 'length_constraints:number_words': kwargs relation='at most' is not "
                   "one of 'less than', 'at least'"),
    (MISSING_ARGUMENT, "instruction 'keywords:frequency': kwargs lack 'frequency' (a whole number >= 0)"),
])
def test_a_bad_row_is_one_line_naming_the_row_and_the_id(tmp_path, bad, problem):
    rows = [*GOOD_ROWS[:2], bad, *GOOD_ROWS[2:]]
    mirror = _mirror(tmp_path / "hub", rows)
    run = run_cli(["tasks", "score", TASK, "--responses", _responses(tmp_path / "r.jsonl", rows), "--dataset_dir", mirror],
                  env=QUIET_DATASETS)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        f"lighteval-like: error: task leaderboard|ifeval: row 2 of split 'train' breaks prompt function ifeval "
        f"(ValueError: key {bad['key']}: {problem}); pass --skip_bad_samples to skip and count such rows"
    ]


def test_skip_bad_samples_counts_them_and_scores_the_rest(tmp_path):
    rows = [GOOD_ROWS[0], UNKNOWN_ID, GOOD_ROWS[1], BAD_RELATION, MISSING_ARGUMENT, *GOOD_ROWS[2:]]
    mirror = _mirror(tmp_path / "hub", rows)
    out = tmp_path / "scores.json"
    run = run_cli(["tasks", "score", TASK, "--responses", _responses(tmp_path / "r.jsonl", rows), "--dataset_dir",
                   mirror, "--skip_bad_samples", "--json", str(out)])
    assert run.returncode == 0, run.stderr[-2000:]
    assert "leaderboard|ifeval|0: 3 bad row(s) skipped (--skip_bad_samples)" in run.stdout
    # 'a plain answer': no comma (followed), not JSON (not), not 10+ words (followed), lowercase English
    # (followed, or langdetect cannot tell), does not end with 'Woof!' (not)
    scores = json.loads(out.read_text())["results"]["leaderboard|ifeval|0"]
    assert scores["inst_level_strict_acc"] == pytest.approx(3 / 5)
    assert scores["prompt_level_strict_acc"] == pytest.approx(2 / 4)


# ------------------------------------------------------------------ the task run by a model

THOUGHT = "<think>Let me think, for many words, about it: {not json yet, and more words than ten</think>"
ANSWERS = {GOOD_ROWS[1]["prompt"]: THOUGHT + '{"answer": 4}'}


class ScriptedModel(LanguageModel):
    """Answers the JSON prompt of `GOOD_ROWS` with a think block before its JSON, any other with
    'a plain answer'."""

    max_length = 4096
    encoder = WordEncoder(4096)

    def loglikelihood(self, requests, plan=None):
        raise AssertionError("ifeval asks for generations only")

    loglikelihood_rolling = loglikelihood

    def greedy_until(self, requests, plan=None):
        return [GenerationResponse(next((a for p, a in ANSWERS.items() if p in r.prompt.text), "a plain answer"), 9)
                for r in requests]

    def info(self):
        return ModelInfo(ModelIdentity("scripted-model"))


class ChatModel(ScriptedModel):
    """The scripted model with a chat template of visible role markers."""

    encoder = MarkerChatEncoder(4096)


def _pipeline_run(tmp_path, rows: list[dict], model=ScriptedModel, **params):
    params = PipelineParameters(tasks=TASK, output_dir=str(tmp_path / "out"), dataset_dir=_mirror(tmp_path / "hub", rows),
                                save_details=True, no_cache=True, **params)
    result = Pipeline(params, model).evaluate()
    (details,) = result.details_paths
    return result.results, {r["prompt"]: r for r in pq.read_table(details).to_pylist()}


def test_checkers_see_the_answer_without_its_reasoning(tmp_path):
    """With --remove_reasoning_tags the think block neither breaks the JSON nor counts words."""
    results, rows = _pipeline_run(tmp_path, GOOD_ROWS[:2], reasoning_tags=DEFAULT_TAGS)
    verdicts_ = json.loads(rows[GOOD_ROWS[1]["prompt"]]["extras"])["instructions"]
    assert verdicts_ == [
        {"instruction": "detectable_format:json_format", "strict": True, "loose": True},
        {"instruction": "length_constraints:number_words", "strict": True, "loose": True},
    ]
    assert results["results"]["leaderboard|ifeval|0"]["prompt_level_strict_acc"] == 1.0
    assert results["config_tasks"]["leaderboard|ifeval"]["metric_info"]["inst_level_strict_acc"] == {
        "aggregation": "pooled_mean", "higher_is_better": True}


def test_without_the_flag_the_reasoning_is_checked_too(tmp_path):
    _, rows = _pipeline_run(tmp_path, GOOD_ROWS[:2])
    verdicts_ = json.loads(rows[GOOD_ROWS[1]["prompt"]]["extras"])["instructions"]
    assert [(v["strict"], v["loose"]) for v in verdicts_] == [(False, False), (False, False)]


def test_a_run_skips_and_counts_bad_rows_with_lm_evals_settings(tmp_path):
    results, rows = _pipeline_run(tmp_path, [GOOD_ROWS[0], UNKNOWN_ID, GOOD_ROWS[1]], skip_bad_samples=True)
    summary = results["summary_tasks"]["leaderboard|ifeval|0"]
    assert summary["skipped_bad_samples"] == 1 and summary["num_samples"] == 2
    assert summary["generation_parameters"]["max_new_tokens"] == 1280
    assert summary["generation_parameters"]["temperature"] == 0
    assert results["config_tasks"]["leaderboard|ifeval"]["stop_sequences"] == []
    assert set(rows) == {GOOD_ROWS[0]["prompt"], GOOD_ROWS[1]["prompt"]}  # zero-shot: the prompt as is


def test_chat_template_makes_the_prompt_the_users_only_turn(tmp_path):
    """As the leaderboard runs it: no system message, the prompt as is in the user's turn."""
    results, rows = _pipeline_run(tmp_path, GOOD_ROWS[:2], model=ChatModel, use_chat_template=True,
                                  reasoning_tags=DEFAULT_TAGS)
    assert set(rows) == {f"<|user|>{r['prompt']}<|end|>\n<|assistant|>" for r in GOOD_ROWS[:2]}
    assert results["results"]["leaderboard|ifeval|0"]["inst_level_strict_acc"] == 1.0


def _details(output_dir: str) -> dict[str, tuple]:
    [path] = glob.glob(os.path.join(output_dir, "details", "*", "*", "*.parquet"))
    return {r["prompt"]: (r["generation"], r["metrics"], r["extras"]) for r in pq.read_table(path).to_pylist()}


def _results(output_dir: str) -> dict:
    [path] = glob.glob(os.path.join(output_dir, "results", "*", "results_*.json"))
    return json.load(open(path, encoding="utf-8"))["results"]


def _run_args(tiny_model: str, mirror: str, out: str, batch: int, *more: str) -> list[str]:
    return ["accelerate", "--model_args", f"pretrained={tiny_model}", "--tasks", TASK, "--dataset_dir", mirror,
            "--override_batch_size", str(batch), "--save_details", "--output_dir", out, *more]


def test_batch_size_changes_no_generation_or_score(tiny_model, tmp_path):
    mirror = _mirror(tmp_path / "hub", GOOD_ROWS)
    for batch in (1, 8):
        run = run_cli(_run_args(tiny_model, mirror, str(tmp_path / f"b{batch}"), batch, "--no_cache"), env=QUIET_DATASETS)
        assert run.returncode == 0, run.stderr[-3000:]
    assert _details(str(tmp_path / "b1")) == _details(str(tmp_path / "b8"))
    assert _results(str(tmp_path / "b1")) == _results(str(tmp_path / "b8"))
    assert len(_details(str(tmp_path / "b1"))) == len(GOOD_ROWS)


def test_killed_run_resumes_to_the_uninterrupted_scores(tiny_model, tmp_path):
    mirror = _mirror(tmp_path / "hub", GOOD_ROWS)
    cache_dir, out = str(tmp_path / "cache"), str(tmp_path / "out")
    args = _run_args(tiny_model, mirror, out, 1, "--cache_dir", cache_dir)
    assert run_and_kill(args, cache_dir, rows=2, sleep_s=1.0, timeout_s=300) == -signal.SIGKILL
    finished = cache_rows(cache_dir)
    assert 0 < finished < len(GOOD_ROWS)
    resumed = run_cli(args, env=QUIET_DATASETS)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Response cache: {finished} reused, {len(GOOD_ROWS) - finished} computed" in resumed.stdout
    fresh = run_cli(_run_args(tiny_model, mirror, str(tmp_path / "fresh"), 1, "--no_cache"), env=QUIET_DATASETS)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert _results(out) == _results(str(tmp_path / "fresh"))
    assert _details(out) == _details(str(tmp_path / "fresh"))


@pytest.mark.slow
def test_smollm2_chat_run_scores_as_tasks_score_does(tmp_path):
    """SmolLM2 (the demo gguf) on the first 8 prompts as the leaderboard runs them (chat template,
    batch 8; 200 new tokens, not 1,280, to keep it short): the run's scores equal those of its
    generations scored again by `tasks score`."""
    from lighteval_like.api.errors import ModelLoadError
    from lighteval_like.demo import gguf_folder

    try:
        model = gguf_folder()
    except ModelLoadError as e:
        pytest.skip(str(e))
    _published("gpt4_responses_part1.jsonl")  # skips without the shared data
    rows = _jsonl(os.path.join(HUB, "google", "IFEval", "default", "train.jsonl"))
    out = str(tmp_path / "out")
    run = run_cli(["accelerate", "--model_args", f"pretrained={model},gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf,dtype=float32",
                   "--tasks", TASK, "--dataset_dir", HUB, "--max_samples", "8", "--use_chat_template",
                   "--override_batch_size", "8", "--gen_kwargs", "max_gen_toks=200", "--save_details", "--output_dir", out,
                   "--no_cache"], env=QUIET_DATASETS)
    assert run.returncode == 0, run.stderr[-3000:]
    [path] = glob.glob(os.path.join(out, "details", "*", "*", "*.parquet"))
    details = sorted(pq.read_table(path).to_pylist(), key=lambda r: r["doc_index"])
    assert all(r["prompt"].startswith("<|im_start|>") and rows[r["doc_index"]]["prompt"] in r["prompt"] for r in details)
    assert all(0 < n <= 200 for r in details for n in r["continuation_tokens"])
    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(json.dumps({"prompt": rows[r["doc_index"]]["prompt"], "response": r["generation"]}) + "\n"
                                 for r in details))
    scores = tmp_path / "scores.json"
    rescored = run_cli(["tasks", "score", TASK, "--responses", str(responses), "--dataset_dir", HUB, "--json", str(scores)])
    assert rescored.returncode == 0, rescored.stderr[-2000:]
    ran = {k: v for k, v in _results(out)["leaderboard|ifeval|0"].items() if not k.endswith("_stderr")}
    assert json.loads(scores.read_text())["results"]["leaderboard|ifeval|0"] == ran


# ------------------------------------------------------------------ tasks score refusals


@pytest.mark.parametrize("lines, tasks, message", [
    (['{"prompt": "a", "response": "b"}', "not json"], TASK,
     "{path}:2: not JSON (Expecting value); each line must be {{\"prompt\": ..., \"response\": ...}}"),
    (['{"prompt": "a", "answer": "b"}'], TASK, "{path}:1: needs string fields 'prompt' and 'response'"),
    (['{"prompt": "a", "response": "b"}', '{"prompt": "a", "response": "c"}'], TASK,
     "{path}:2: prompt 'a' appears twice; keep one response per prompt"),
    (['{"prompt": "a", "response": "b"}'], "lighteval|humaneval|0|0",
     "tasks score runs no model-written code; score lighteval|humaneval|0 with `accelerate ... "
     "--allow_code_execution`, which runs it sandboxed"),
    (['{"prompt": "a", "response": "b"}'], "leaderboard|ifeval|3|0",
     "task leaderboard|ifeval is zero-shot only (its docs have no answers to show as examples); "
     "ask for leaderboard|ifeval|0|0"),
    (['{"prompt": "a", "response": "b"}'], "leaderboard|arc:challenge|0|0",
     "tasks score takes generative tasks only; leaderboard|arc:challenge|0 score loglikelihoods"),
])
def test_tasks_score_refuses_with_one_line(tmp_path, lines, tasks, message):
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(lines) + "\n")
    run = run_cli(["tasks", "score", tasks, "--responses", str(path)])
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [f"lighteval-like: error: {message.format(path=path)}"]
