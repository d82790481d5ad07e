"""MT-Bench (Zheng et al. 2023, FastChat's `llm_judge`): 80 two-turn questions in 8 categories. The
model answers the first question, then the second after its own first answer (a second generation
round: `Doc.next_turns`); a judge model rates each answer 1-10 with FastChat's single-answer grading
prompts (`single-v1`, and `single-math-v1` with GPT-4's reference answers for math, reasoning and
coding; their `-multi-turn` forms for the second turn, which show the whole conversation).

Data: FastChat's files, in a folder `mt_bench/` of the data dir (`--dataset_dir`,
`$LIGHTEVAL_LIKE_DATA_DIR`) or beside it (the shared layout keeps the hub mirror in `data/hub` and
MT-Bench in `data/mt_bench`): `question.jsonl`, `judge_prompts.jsonl`, `reference_answer/gpt-4.jsonl`.

Verdicts are read as FastChat reads them (`[[rating]]`, else `[rating]`), a rating from 1 to 10; a
verdict without one is no value (left out of the means, as FastChat drops its -1) and is counted
(`summary_tasks[task].judge_unparsed`). Where the judge offers structured output (the `vllm`
backend, an endpoint's server), the verdict is constrained to an explanation followed by
`[[rating]]` (`VERDICT_REGEX`). Metrics: the
mean rating over both turns (`score`, FastChat's overall), each turn's (`score_turn_1`,
`score_turn_2`), and the same per category (`writing`, `writing_turn_1`, ...). Generation is greedy
(FastChat samples writing and roleplay at 0.7, stem and humanities at 0.1), up to 1,024 new tokens.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from lighteval_like.api.doc import Doc
from lighteval_like.api.errors import DatasetUnavailableError
from lighteval_like.api.prompt import Prompt
from lighteval_like.api.requests import GenerationRequest, GenerationResponse
from lighteval_like.metrics.judge import judge_metric
from lighteval_like.tasks.config import RequestType, TaskConfig

FOLDER = "mt_bench"
CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
NEED_REFERENCE = ("math", "reasoning", "coding")  # FastChat's NEED_REF_CATS
REFERENCES = "reference_answer/gpt-4.jsonl"
GENERATION_SIZE = 1024  # FastChat's max_new_token
JUDGE_TOKENS = 320  # room for the explanation VERDICT_REGEX allows and the rating
RATING, RATING_BACKUP = re.compile(r"\[\[(\d+\.?\d*)\]\]"), re.compile(r"\[(\d+\.?\d*)\]")
VERDICT_REGEX = r"[^\[\]]{0,300}\[\[([1-9]|10)\]\]"


def _json_lines(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def data_folder(data_dir: str | None) -> str:
    """The `mt_bench/` folder in the data dir or beside it; one line saying where to put it when absent."""
    candidates = [os.path.join(d, FOLDER) for d in (data_dir, os.path.join(data_dir, os.pardir))] if data_dir else []
    found = next((c for c in candidates if os.path.isfile(os.path.join(c, "question.jsonl"))), None)
    if found is None:
        where = f"no {FOLDER}/question.jsonl in {data_dir} or beside it" if data_dir else "no data dir is set"
        raise DatasetUnavailableError(
            f"task lighteval|mt_bench needs FastChat's MT-Bench files and {where}: pass --dataset_dir (or set "
            f"LIGHTEVAL_LIKE_DATA_DIR to) a folder holding {FOLDER}/ (question.jsonl, judge_prompts.jsonl, {REFERENCES})")
    return os.path.normpath(found)


def mt_bench_rows(data_dir: str | None, split: str) -> list[dict]:
    """The 80 questions, each with its two judge prompts and, where it needs them, its reference answers."""
    folder = data_folder(data_dir)
    prompts = {p["name"]: p for p in _json_lines(os.path.join(folder, "judge_prompts.jsonl"))}
    references = {r["question_id"]: r["choices"][0]["turns"] for r in _json_lines(os.path.join(folder, REFERENCES))}
    rows = []
    for question in _json_lines(os.path.join(folder, "question.jsonl")):
        math = question["category"] in NEED_REFERENCE
        if math and question["question_id"] not in references:
            raise DatasetUnavailableError(f"{folder}/{REFERENCES} has no reference answer for question "
                                          f"{question['question_id']}: restore FastChat's file")
        names = ("single-math-v1", "single-math-v1-multi-turn") if math else ("single-v1", "single-v1-multi-turn")
        rows.append({**question, "references": references.get(question["question_id"]) if math else None,
                     "judge_prompts": [{k: prompts[n][k] for k in ("system_prompt", "prompt_template")} for n in names]})
    return rows


def mt_bench(row: dict, task_name: str) -> Doc:
    """The first question as the query, the second as the next turn; the judge's needs in `specific`."""
    first, *rest = row["turns"]
    return Doc(query=first, choices=[""], gold_index=0, target_delimiter="", next_turns=list(rest),
               specific={"question_id": row["question_id"], "category": row["category"],
                         "references": row.get("references"), "judge_prompts": row["judge_prompts"]})


def judge_prompt(doc: Doc, answers: list[str], turn: int) -> Prompt:
    """FastChat's single-answer grading prompt of `turn` (1 or 2) as a system and a user message."""
    template = doc.specific["judge_prompts"][turn - 1]
    questions, references = [doc.query, *doc.next_turns], doc.specific["references"] or []
    if turn == 1:
        fields = {"question": questions[0], "answer": answers[0]}
    else:
        fields = {"question_1": questions[0], "question_2": questions[1], "answer_1": answers[0], "answer_2": answers[1]}
    fields.update({f"ref_answer_{i + 1}": ref for i, ref in enumerate(references)})
    user = template["prompt_template"].format(**fields)
    return Prompt.from_messages([("system", template["system_prompt"]), ("user", user)])


def parse_rating(verdict: str) -> float | None:
    """FastChat's reading: the first `[[x]]`, else the first `[x]`; None unless it is a rating from 1 to 10."""
    match = RATING.search(verdict) or RATING_BACKUP.search(verdict)
    rating = float(match.group(1)) if match else None
    return rating if rating is not None and 1 <= rating <= 10 else None


def answers(sample) -> list[str]:
    """The model's answer to each turn (the first sample of each, stripped as FastChat strips it)."""
    per_turn = len(sample.responses) // (1 + len(sample.doc.next_turns))
    return [r.text.strip() for r in sample.responses[::per_turn]]


def judge_requests(samples: list) -> list[GenerationRequest]:
    """Two verdicts a sample: its first answer, then its conversation."""
    return [GenerationRequest(judge_prompt(s.doc, answers(s), turn), (), JUDGE_TOKENS, regex=VERDICT_REGEX)
            for s in samples for turn in (1, 2)]


def recorded_verdicts(samples: list, responses: list[GenerationResponse]) -> list[list[dict]]:
    """Each sample's verdicts with their ratings, read once and kept in its details (`extras["verdicts"]`)."""
    for k, sample in enumerate(samples):
        if "verdicts" not in sample.extras:
            texts = [r.text for r in responses[2 * k: 2 * k + 2]]
            sample.extras["verdicts"] = [{"turn": turn, "verdict": text, "rating": parse_rating(text)}
                                         for turn, text in zip((1, 2), texts)]
    return [s.extras["verdicts"] for s in samples]


@dataclass(frozen=True)
class MTBenchScore:
    """The judge half of one MT-Bench metric: the ratings of `turns`, over the docs of `category`
    (None: all); a doc with no such rating has no value."""

    turns: tuple[int, ...]
    category: str | None = None

    def build_judge_requests(self, samples: list) -> list[GenerationRequest]:
        return judge_requests(samples)

    def parse_verdicts(self, samples: list, responses: list[GenerationResponse]):
        values = []
        for sample, verdicts in zip(samples, recorded_verdicts(samples, responses)):
            ratings = [v["rating"] for v in verdicts if v["turn"] in self.turns and v["rating"] is not None]
            if not ratings or self.category not in (None, sample.doc.specific["category"]):
                values.append(None)
            else:
                values.append((sum(ratings), float(len(ratings))) if len(self.turns) > 1 else ratings[0])
        return values


def _metrics(name: str, category: str | None) -> tuple:
    return (judge_metric(name, MTBenchScore((1, 2), category), aggregation="pooled_mean"),
            *(judge_metric(f"{name}_turn_{t}", MTBenchScore((t,), category)) for t in (1, 2)))


METRICS = tuple(m for name, category in (("score", None), *((c, c) for c in CATEGORIES)) for m in _metrics(name, category))

TASK = TaskConfig(
    name="mt_bench", suite="lighteval", prompt_function=mt_bench, columns=("question_id", "category", "turns"),
    hf_repo=FOLDER, hf_subset=None, evaluation_split="question", few_shots_split=None,
    request_type=RequestType.GENERATIVE, metrics=METRICS, generation_size=GENERATION_SIZE, zero_shot_only=True,
    data_files=mt_bench_rows, needs_chat_template=True,
)
