"""MMMU (validation) in the `lmms` suite, as lmms-eval 0.7.3's `mmmu_val` runs it with its default
prompts: the question, the options as "A. text" lines and an instruction; 128 new tokens; the
official MMMU answer parsing (`metrics/mmmu.py`); accuracy overall and per domain.

A question shows up to 7 images, named in its text (question and options) by `<image N>`: the
images so named, in the order of their numbers. lmms-eval's Qwen2.5-VL chat class (its default)
renders the task's own messages, which interleave them: the text is cut at each placeholder and
the i-th image follows the i-th piece (stripped; an empty piece shows nothing), the last piece
ending the turn. When a question names fewer distinct images than it has placeholders, the pieces
between the last image and the last piece are dropped, as there. The same here, through
`Doc.texts_before_images`. (Its simple class, `--force_simple`, differs: all images first, then
the text with the placeholders left in.)
"""

from __future__ import annotations

import ast
import re

from lighteval_like.api.doc import Doc
from lighteval_like.api.requests import GenerationResponse
from lighteval_like.metrics.library import Metric
from lighteval_like.metrics.mmmu import choice_answer, open_answers, open_correct
from lighteval_like.metrics.vision import MMMU_DOMAINS, slug
from lighteval_like.tasks.lmms import SHORT_ANSWER, generative, image_bytes
from lighteval_like.tasks.lmms_mc import LETTER_ANSWER, lettered

PLACEHOLDER = re.compile(r"<image (\d+)>")
DOMAIN_OF = {subject: i for i, subjects in enumerate(MMMU_DOMAINS.values()) for subject in subjects}


def mmmu_text(row: dict) -> str:
    """The question with its lettered options (multiple choice) and the answer instruction."""
    if row["question_type"] == "multiple-choice":
        return f"{row['question']}\n{lettered(ast.literal_eval(row['options']))}\n{LETTER_ANSWER}."
    return f"{row['question']}\n{SHORT_ANSWER}"


def subject(question_id: str) -> str:
    """The subject in an MMMU id such as validation_Art_Theory_12."""
    split = question_id.split("_")[0]
    match = re.match(rf"^{re.escape(split)}_(.+?)_\d+$", question_id)
    if not match:
        raise ValueError(f"MMMU id {question_id!r} does not name a subject")
    return match.group(1)


def mmmu(row: dict, task_name: str) -> Doc:
    text = mmmu_text(row)
    numbers = sorted({f"image_{n}" for n in PLACEHOLDER.findall(text)})
    pieces = re.split(r"<image [1-7]>", text)
    if subject(row["id"]) not in DOMAIN_OF:
        raise ValueError(f"MMMU subject {subject(row['id'])!r} is not one of MMMU's 30 subjects")
    options = ast.literal_eval(row["options"]) if row["question_type"] == "multiple-choice" else []
    specific = {"id": row["id"], "options": options, "domain": DOMAIN_OF[subject(row["id"])]}
    return Doc(pieces[-1].strip(), [row["answer"]], 0, images=[image_bytes(row[name]) for name in numbers],
               texts_before_images=[piece.strip() for piece in pieces[: len(numbers)]], specific=specific)


def mmmu_value(doc: Doc, responses: list[GenerationResponse]) -> tuple[float, float]:
    """(correct, domain index): a multiple-choice letter equal to the gold one, or an open answer
    matching the gold (`metrics.mmmu`)."""
    text, gold = responses[0].text, doc.choices[0]
    if doc.specific["options"]:
        correct = choice_answer(text, doc.specific["options"], seed=doc.specific["id"]) == gold
    else:
        correct = open_correct(gold, open_answers(text))
    return float(correct), float(doc.specific["domain"])


MMMU_METRICS = (Metric("mmmu_acc", mmmu_value, aggregation="mmmu_acc"),
                *(Metric(f"mmmu_acc_{slug(name)}", mmmu_value, aggregation=f"mmmu_acc_{slug(name)}")
                  for name in MMMU_DOMAINS))
TASKS = [generative("mmmu_val", mmmu, "lmms-lab-encoder/MMMU", None, "validation", MMMU_METRICS, 128,
                    columns=("id", "question", "options", "answer", "question_type"))]
