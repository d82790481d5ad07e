"""Image benchmarks with lmms-eval 0.7.3's prompts, generation settings and metrics (suite
`lmms`, gathered in `lmms_suite`): MME, POPE and an offline easy-VQA task over the `easy-vqa`
wheel's real images, and the helpers the suite's other modules share.

A doc's images are the bytes the dataset stores (`image_bytes`: a hub image column is a struct
of `bytes` and `path`); the question follows them in one user turn, rendered by the model's chat
template. Answers are parsed as lmms-eval parses them (`mme_answer`, POPE's exact yes/no).
"""

from __future__ import annotations

import hashlib
import io
import os

from lighteval_like.api.doc import Doc
from lighteval_like.api.errors import TaskSpecError
from lighteval_like.api.requests import GenerationResponse
from lighteval_like.metrics.library import Metric
from lighteval_like.metrics.vision import MME_CATEGORIES, POPE_NO, POPE_OTHER, POPE_YES
from lighteval_like.tasks.config import RequestType, TaskConfig

SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
MME_YES_NO = " Please answer yes or no."


def _encoded(value) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        if value.get("path") and os.path.isfile(value["path"]):
            with open(value["path"], "rb") as f:
                return f.read()
    if hasattr(value, "save"):
        out = io.BytesIO()
        value.save(out, format="PNG")
        return out.getvalue()
    raise ValueError(f"not an image: {type(value).__name__} (expected a struct of bytes and path, bytes or an image)")


def image_bytes(value) -> bytes:
    """An image column's value as encoded bytes (the hub's struct of `bytes`, else `path`; raw
    bytes; a PIL image, saved as PNG), checked to be a readable image: a damaged one is a bad
    sample, named before any model runs."""
    from PIL import Image

    data = _encoded(value)
    try:
        Image.open(io.BytesIO(data)).verify()
    except Exception as e:  # PIL reports damage as several types
        raise ValueError(f"its image is not readable ({type(e).__name__}: {e})") from e
    return data


def name_key(name: str) -> float:
    """A number naming a string, such as the image of an MME question (exact in a float: 48 bits)."""
    return float(int(hashlib.sha256(name.encode()).hexdigest()[:12], 16))


def mme(row: dict, task_name: str) -> Doc:
    question = row["question"].strip().replace(MME_YES_NO, "") + SHORT_ANSWER
    if row["category"] not in MME_CATEGORIES:
        raise ValueError(f"MME category {row['category']!r} is not one of the 14 MME categories")
    specific = {"category": MME_CATEGORIES.index(row["category"]), "image_key": name_key(str(row["question_id"]))}
    return Doc(question, [row["answer"]], 0, images=[image_bytes(row["image"])], specific=specific)


def pope(row: dict, task_name: str) -> Doc:
    return Doc(row["question"].strip() + SHORT_ANSWER, [row["answer"]], 0, images=[image_bytes(row["image"])])


def mme_answer(text: str) -> str:
    """yes, no or other, from the answer's first characters (lmms-eval's MME parsing)."""
    answer = text.lower().strip().replace(".", "")
    if answer in ("yes", "no"):
        return answer
    if len(answer) == 1:
        return {"y": "yes", "n": "no"}.get(answer, "other")
    head = answer[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def mme_value(doc: Doc, responses: list[GenerationResponse]) -> tuple[float, float, float]:
    gold = doc.choices[0].lower().strip().replace(".", "")
    correct = float(mme_answer(responses[0].text) == gold)
    return correct, float(doc.specific["category"]), doc.specific["image_key"]


def pope_value(doc: Doc, responses: list[GenerationResponse]) -> tuple[float, float]:
    answer = responses[0].text.lower().strip()
    code = POPE_YES if answer == "yes" else POPE_NO if answer == "no" else POPE_OTHER
    return float(doc.choices[0].lower().strip() == "yes"), code


def pope_accuracy(doc: Doc, responses: list[GenerationResponse]) -> float:
    return float(responses[0].text.lower().strip() == doc.choices[0].lower().strip())


def easy_vqa_accuracy(doc: Doc, responses: list[GenerationResponse]) -> float:
    return float(responses[0].text.lower().strip().rstrip(".") == doc.choices[0])


MME_METRICS = (Metric("mme_perception_score", mme_value, aggregation="mme_perception"),
               Metric("mme_cognition_score", mme_value, aggregation="mme_cognition"))
POPE_METRICS = (Metric("pope_accuracy", pope_accuracy),
                *(Metric(f"pope_{name}", pope_value, aggregation=f"pope_{agg}")
                  for name, agg in (("precision", "precision"), ("recall", "recall"), ("f1_score", "f1"),
                                    ("yes_ratio", "yes_ratio"))))


def _easy_vqa_rows(split: str) -> list[dict]:
    """The wheel's questions of `split` (train or test) with their images, in its order."""
    try:
        import easy_vqa
    except ImportError as e:
        raise TaskSpecError("task lmms|easy_vqa needs the easy-vqa package: pip install easy-vqa==1.0") from e
    texts, answers, image_ids = easy_vqa.get_test_questions() if split == "test" else easy_vqa.get_train_questions()
    paths = easy_vqa.get_test_image_paths() if split == "test" else easy_vqa.get_train_image_paths()
    return [{"question": q, "answer": a, "image": {"bytes": None, "path": paths[i]}, "image_id": i}
            for q, a, i in zip(texts, answers, image_ids)]


def easy_vqa(row: dict, task_name: str) -> Doc:
    question = row["question"][0].upper() + row["question"][1:] + SHORT_ANSWER
    return Doc(question, [row["answer"]], 0, images=[image_bytes(row["image"])])


def generative(name: str, prompt, repo: str, subset: str | None, split: str, metrics: tuple, size: int,
                **kwargs) -> TaskConfig:
    """A zero-shot generative task of the `lmms` suite."""
    return TaskConfig(name=name, suite="lmms", prompt_function=prompt, hf_repo=repo, hf_subset=subset,
                      evaluation_split=split, few_shots_split=None, metrics=metrics, generation_size=size,
                      request_type=RequestType.GENERATIVE, zero_shot_only=True, **kwargs)


POPE_SPLITS = {"pope_adv": "adversarial", "pope_pop": "popular", "pope_random": "random"}
TASKS = [
    generative("mme", mme, "lmms-lab-encoder/MME", None, "test", MME_METRICS, 16,
                columns=("question_id", "image", "question", "answer", "category")),
    generative("pope", pope, "lmms-lab-encoder/POPE", None, "test", POPE_METRICS, 128,
                columns=("question_id", "image", "question", "answer")),
    *[generative(name, pope, "lmms-lab-encoder/POPE", "Full", split, POPE_METRICS, 128,
                  columns=("question_id", "image", "question", "answer")) for name, split in POPE_SPLITS.items()],
    generative("easy_vqa", easy_vqa, "easy-vqa/easy-vqa", None, "test", (Metric("exact_match", easy_vqa_accuracy),), 16,
                data_builder=_easy_vqa_rows),
]
