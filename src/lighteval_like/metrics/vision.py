"""Corpus aggregations of the image benchmarks, as lmms-eval 0.7.3 computes them.

Each sample's value is a tuple of numbers (so `compare` can resample them like any other):
MME's `(correct, category index, image key)` and POPE's `(gold is yes, prediction code)`.

- MME: per category, per image (its two questions), accuracy x 100 plus 100 when both are
  right ("acc+"); a category's score is the mean over its images; perception is the sum over
  the 10 perception categories (at most 2000), cognition over the 4 cognition ones (at most 800).
- POPE: precision and recall count only answers that are exactly "yes" or "no" (anything else is
  neither a positive nor a negative); the yes-ratio is the share of gold "yes" answers.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork",
                  "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
MME_CATEGORIES = MME_PERCEPTION + MME_COGNITION
POPE_YES, POPE_NO, POPE_OTHER = 1.0, 0.0, 2.0


def _mme_score(values: np.ndarray, categories: range) -> float:
    """Sum over `categories` (indices of `MME_CATEGORIES`) of the mean acc + acc+ of their images."""
    per_image: dict[tuple[int, float], list[float]] = defaultdict(list)
    for correct, category, image in values:
        if int(category) in categories:
            per_image[int(category), image].append(correct)
    per_category: dict[int, list[float]] = defaultdict(list)
    for (category, _), scores in per_image.items():
        per_category[category].append(100.0 * sum(scores) / len(scores) + 100.0 * all(scores))
    return float(sum(sum(s) / len(s) for s in per_category.values()))


def _pope_counts(values: np.ndarray) -> tuple[int, int, int]:
    gold_yes, predicted = values[:, 0] == 1.0, values[:, 1]
    true_pos = int((gold_yes & (predicted == POPE_YES)).sum())
    false_pos = int((~gold_yes & (predicted == POPE_YES)).sum())
    false_neg = int((gold_yes & (predicted == POPE_NO)).sum())
    return true_pos, false_pos, false_neg


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def pope_precision(values: np.ndarray) -> float:
    tp, fp, _ = _pope_counts(values)
    return _ratio(tp, tp + fp)


def pope_recall(values: np.ndarray) -> float:
    tp, _, fn = _pope_counts(values)
    return _ratio(tp, tp + fn)


def pope_f1(values: np.ndarray) -> float:
    precision, recall = pope_precision(values), pope_recall(values)
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


AGGREGATIONS = {
    "mme_perception": lambda values: _mme_score(values, range(len(MME_PERCEPTION))),
    "mme_cognition": lambda values: _mme_score(values, range(len(MME_PERCEPTION), len(MME_CATEGORIES))),
    "pope_precision": pope_precision,
    "pope_recall": pope_recall,
    "pope_f1": pope_f1,
    "pope_yes_ratio": lambda values: float((values[:, 0] == 1.0).mean()),
}
