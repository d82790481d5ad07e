"""Single-image benchmarks of the `lmms` suite with lmms-eval 0.7.3's default prompts, generation
settings and metrics: MMStar, RealWorldQA, ScienceQA-IMG and AI2D (option letters) and ChartQA
(relaxed accuracy). Data from the hub ids, configs and splits lmms-eval reads, in their columns.

lmms-eval's default Qwen2.5-VL (its chat class) ignores stop sequences and generates at most 128
new tokens unless the task sets `max_new_tokens` (MMStar does not; the others set 16).
"""

from __future__ import annotations

from lighteval_like.api.doc import Doc
from lighteval_like.api.requests import GenerationResponse
from lighteval_like.metrics.library import Metric
from lighteval_like.metrics.lmms_answers import ai2d_correct, option_letter, relaxed_correct, scienceqa_correct
from lighteval_like.metrics.vision import MMSTAR_CATEGORIES, slug
from lighteval_like.tasks.lmms import generative, image_bytes, name_key

LETTER_ANSWER = "\nAnswer with the option's letter from the given choices directly"
MMSTAR_YES_NO = " Please answer yes or no."


def lettered(options: list[str]) -> str:
    """Options one per line as "A. text"."""
    return "\n".join(f"{chr(ord('A') + i)}. {option}" for i, option in enumerate(options))


def mmstar(row: dict, task_name: str) -> Doc:
    if row["category"] not in MMSTAR_CATEGORIES:
        raise ValueError(f"MMStar category {row['category']!r} is not one of the 6 MMStar categories")
    question = row["question"].strip().replace(MMSTAR_YES_NO, "") + LETTER_ANSWER
    specific = {"category": MMSTAR_CATEGORIES.index(row["category"]), "subcategory": name_key(row["l2_category"])}
    return Doc(question, [row["answer"]], 0, images=[image_bytes(row["image"])], specific=specific)


def mmstar_value(doc: Doc, responses: list[GenerationResponse]) -> tuple[float, float, float]:
    correct = float(option_letter(responses[0].text) == doc.choices[0].strip().upper())
    return correct, float(doc.specific["category"]), doc.specific["subcategory"]


def realworldqa(row: dict, task_name: str) -> Doc:
    return Doc(row["question"].strip(), [row["answer"]], 0, images=[image_bytes(row["image"])])


def realworldqa_match(doc: Doc, responses: list[GenerationResponse]) -> float:
    """An option letter for letter questions, else the answer without a final period, any case."""
    gold, answer = doc.choices[0].strip(), responses[0].text
    if gold.upper() in ("A", "B", "C", "D"):
        return float(option_letter(answer) == gold.upper())
    return float(answer.lower().strip().rstrip(".") == gold.lower())


def scienceqa_img(row: dict, task_name: str) -> Doc:
    context = f"Context: {row['hint']}\n" if row.get("hint") else ""
    question = f"{context}{row['question']}\n{lettered(row['choices'])}{LETTER_ANSWER}."
    return Doc(question, [chr(ord("A") + int(row["answer"]))], 0, images=[image_bytes(row["image"])])


def ai2d(row: dict, task_name: str) -> Doc:
    question = f"{row['question']}\n{lettered(row['options'])}{LETTER_ANSWER}."
    return Doc(question, [chr(ord("A") + int(row["answer"]))], 0, images=[image_bytes(row["image"])])


def chartqa(row: dict, task_name: str) -> Doc:
    question = f"{row['question']}\nAnswer the question with a single word."
    return Doc(question, [row["answer"]], 0, images=[image_bytes(row["image"])],
               specific={"human": float(row["type"] == "human_test")})


def chartqa_value(doc: Doc, responses: list[GenerationResponse]) -> tuple[float, float]:
    return chartqa_relaxed(doc, responses), doc.specific["human"]


def chartqa_relaxed(doc: Doc, responses: list[GenerationResponse]) -> float:
    return float(relaxed_correct(responses[0].text, doc.choices[0]))


def scienceqa_match(doc: Doc, responses: list[GenerationResponse]) -> float:
    return float(scienceqa_correct(responses[0].text, doc.choices[0]))


def ai2d_match(doc: Doc, responses: list[GenerationResponse]) -> float:
    return float(ai2d_correct(responses[0].text, doc.choices[0]))


MMSTAR_METRICS = (*(Metric(slug(name), mmstar_value, aggregation=f"mmstar_{slug(name)}") for name in MMSTAR_CATEGORIES),
                  Metric("average", mmstar_value, aggregation="mmstar_average"))
CHARTQA_METRICS = (Metric("relaxed_overall", chartqa_relaxed),
                   Metric("relaxed_human_split", chartqa_value, aggregation="chartqa_human_split"),
                   Metric("relaxed_augmented_split", chartqa_value, aggregation="chartqa_augmented_split"))


TASKS = [
    generative("mmstar", mmstar, "Lin-Chen/MMStar", None, "val", MMSTAR_METRICS, 128,
               columns=("image", "question", "answer", "category", "l2_category")),
    generative("realworldqa", realworldqa, "lmms-lab-encoder/RealWorldQA", None, "test",
               (Metric("exact_match", realworldqa_match),), 16, columns=("image", "question", "answer")),
    generative("scienceqa_img", scienceqa_img, "lmms-lab-encoder/ScienceQA", "ScienceQA-IMG", "test",
               (Metric("exact_match", scienceqa_match),), 16, columns=("image", "question", "choices", "answer")),
    generative("ai2d", ai2d, "lmms-lab-encoder/ai2d", None, "test", (Metric("exact_match", ai2d_match),), 16,
               columns=("image", "question", "options", "answer")),
    generative("chartqa", chartqa, "lmms-lab-encoder/ChartQA", None, "test", CHARTQA_METRICS, 16,
               columns=("image", "question", "answer", "type")),
]
