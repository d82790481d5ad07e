"""Corpus aggregations of the image benchmarks, as lmms-eval 0.7.3 computes them.

Each sample's value is a tuple of numbers (so `compare` can resample them like any other):
MME's `(correct, category index, image key)`, POPE's `(gold is yes, prediction code)`, MMStar's
`(correct, category index, subcategory key)`, MMMU's `(correct, domain index)` and ChartQA's
`(correct, is a human-written question)`.

- MME: per category, per image (its two questions), accuracy x 100 plus 100 when both are
  right ("acc+"); a category's score is the mean over its images; perception is the sum over
  the 10 perception categories (at most 2000), cognition over the 4 cognition ones (at most 800).
- POPE: precision and recall count only answers that are exactly "yes" or "no" (anything else is
  neither a positive nor a negative); the yes-ratio is the share of gold "yes" answers.
- MMStar: a category's score is the mean over its subcategories (`l2_category`) of their
  accuracy; "average" the mean over all subcategories.
- MMMU: accuracy over the questions (all, or a domain's), rounded to 5 places as lmms-eval
  reports it.
- ChartQA: relaxed accuracy over the human-written or the augmented questions.

An aggregation over a subset with no samples is NaN (lmms-eval reports nothing there).
"""

from __future__ import annotations

import numpy as np

MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork",
                  "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
MME_CATEGORIES = MME_PERCEPTION + MME_COGNITION
POPE_YES, POPE_NO, POPE_OTHER = 1.0, 0.0, 2.0


def _mme_score(values: np.ndarray, categories: range) -> float:
    """Sum over `categories` (indices of `MME_CATEGORIES`) of the mean acc + acc+ of their images."""
    values = values[(values[:, 1] >= categories.start) & (values[:, 1] < categories.stop)]
    if not len(values):
        return 0.0
    keys, image = np.unique(values[:, 1:], axis=0, return_inverse=True)
    image = image.reshape(-1)
    asked, right = np.bincount(image), np.bincount(image, weights=values[:, 0])
    per_image = 100.0 * right / asked + 100.0 * (right == asked)
    category = np.unique(keys[:, 0], return_inverse=True)[1].reshape(-1)
    return float((np.bincount(category, weights=per_image) / np.bincount(category)).sum())


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


MMSTAR_CATEGORIES = ("coarse perception", "fine-grained perception", "instance reasoning", "logical reasoning",
                     "science & technology", "math")
MMMU_DOMAINS = {
    "Art and Design": ("Art", "Art_Theory", "Design", "Music"),
    "Business": ("Accounting", "Economics", "Finance", "Manage", "Marketing"),
    "Science": ("Biology", "Chemistry", "Geography", "Math", "Physics"),
    "Health and Medicine": ("Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine",
                            "Pharmacy", "Public_Health"),
    "Humanities and Social Science": ("History", "Literature", "Sociology", "Psychology"),
    "Tech and Engineering": ("Agriculture", "Architecture_and_Engineering", "Computer_Science", "Electronics",
                             "Energy_and_Power", "Materials", "Mechanical_Engineering"),
}


def slug(name: str) -> str:
    """A category name as a metric name: lower case, runs of other characters as one underscore."""
    return "_".join("".join(c if c.isalnum() else " " for c in name.lower()).split())


def _mean_of_subcategories(values: np.ndarray, category: int | None) -> float:
    """Mean over subcategories (column 2) of their accuracy, within `category` (column 1) or all."""
    rows = values if category is None else values[values[:, 1] == category]
    means = [rows[rows[:, 2] == key, 0].mean() for key in np.unique(rows[:, 2])]
    return float(np.mean(means)) if means else float("nan")


def _mean_where(values: np.ndarray, column: int, equals: float) -> float:
    """Mean of column 0 over the rows whose `column` equals `equals` (NaN where there are none)."""
    rows = values[values[:, column] == equals, 0]
    return float(rows.mean()) if len(rows) else float("nan")


AGGREGATIONS = {
    "mme_perception": lambda values: _mme_score(values, range(len(MME_PERCEPTION))),
    "mme_cognition": lambda values: _mme_score(values, range(len(MME_PERCEPTION), len(MME_CATEGORIES))),
    "pope_precision": pope_precision,
    "pope_recall": pope_recall,
    "pope_f1": pope_f1,
    "pope_yes_ratio": lambda values: float((values[:, 0] == 1.0).mean()),
    "mmstar_average": lambda values: _mean_of_subcategories(values, None),
    **{f"mmstar_{slug(name)}": (lambda values, i=i: _mean_of_subcategories(values, i))
       for i, name in enumerate(MMSTAR_CATEGORIES)},
    "mmmu_acc": lambda values: round(float(values[:, 0].mean()), 5),
    **{f"mmmu_acc_{slug(name)}": (lambda values, i=i: round(_mean_where(values, 1, i), 5))
       for i, name in enumerate(MMMU_DOMAINS)},
    "chartqa_human_split": lambda values: _mean_where(values, 1, 1.0),
    "chartqa_augmented_split": lambda values: _mean_where(values, 1, 0.0),
}
