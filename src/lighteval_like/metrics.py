"""Per-sample metrics, their aggregation over a task, and standard errors.

Conventions follow lm-evaluation-harness so numbers are comparable: acc is argmax of the
choice loglikelihoods, acc_norm divides by the choice's length in characters, mc2 is the
normalised probability mass on true answers, perplexity is exp(-mean loglikelihood).

A task names its metrics (`TaskConfig.metrics`): names of `METRICS`, or `Metric` objects of its
own (gsm8k's two answer extractions report as `exact_match` and `qem`, as lm-eval names them).
"""

from __future__ import annotations

import difflib
import math
import re
import string
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lighteval_like.errors import TaskSpecError
from lighteval_like.models.base import GenerationResponse, LoglikelihoodResponse
from lighteval_like.tasks.config import Doc, TaskConfig

SampleValue = float | tuple[float, float]
BOOTSTRAP_ITERS = 1000


@dataclass(frozen=True)
class Metric:
    """A metric of one sample (`sample_fn`), or of all a task's samples at once (`batch_fn`, for
    work that runs in parallel, such as executing programs); `executes_code` metrics need the
    user's consent (`--allow_code_execution`) and get the sandbox's isolation level."""

    name: str  # the key in the results
    sample_fn: Callable[[Doc, list], SampleValue] | None = None
    aggregation: str = "mean"  # mean | perplexity | weighted_perplexity | bits_per_byte
    higher_is_better: bool = True  # read by `compare` to say which run is better
    batch_fn: Callable[..., list[SampleValue]] | None = None  # (samples, isolation) -> one value each
    executes_code: bool = False


def _logprobs(responses: list[LoglikelihoodResponse]) -> np.ndarray:
    return np.array([r.logprob for r in responses], dtype=np.float64)


def acc(doc: Doc, responses: list[LoglikelihoodResponse]) -> float:
    return float(int(np.argmax(_logprobs(responses))) in doc.gold_indices)


def acc_norm(doc: Doc, responses: list[LoglikelihoodResponse]) -> float:
    lengths = np.array([float(len(c)) for c in doc.choices])
    return float(int(np.argmax(_logprobs(responses) / lengths)) in doc.gold_indices)


def mc1(doc: Doc, responses: list[LoglikelihoodResponse]) -> float:
    n = doc.specific["mc1_count"]
    return float(int(np.argmax(_logprobs(responses)[:n])) == 0)


def mc2(doc: Doc, responses: list[LoglikelihoodResponse]) -> float:
    probs = np.exp(_logprobs(responses)[doc.specific["mc1_count"] :])
    probs = probs / probs.sum()
    return float(probs[np.array(doc.specific["mc2_labels"]) == 1].sum())


def acc_greedy(doc: Doc, responses: list[LoglikelihoodResponse]) -> float:
    """The gold continuation is what greedy decoding would produce (lambada's acc)."""
    return float(all(r.is_greedy for r in responses))


def loglikelihood(doc: Doc, responses: list[LoglikelihoodResponse]) -> float:
    return float(sum(r.logprob for r in responses))


def per_word(doc: Doc, responses: list[LoglikelihoodResponse]) -> tuple[float, float]:
    return loglikelihood(doc, responses), float(doc.specific["words"])


def per_byte(doc: Doc, responses: list[LoglikelihoodResponse]) -> tuple[float, float]:
    return loglikelihood(doc, responses), float(doc.specific["bytes"])


def _gsm8k_gold(doc: Doc) -> str:
    return doc.choices[0].split("####")[-1].strip()


_GSM8K_IGNORE = [",", r"\$", r"(?s).*#### ", r"\.$"]


def _gsm8k_normalise(text: str) -> str:
    for pattern in _GSM8K_IGNORE:
        text = re.sub(pattern, "", text)
    return text.lower().strip()


def gsm8k_strict(doc: Doc, responses: list[GenerationResponse]) -> float:
    """lm-eval's strict-match: the answer after '#### ' in the generation."""
    match = re.search(r"#### (\-?[0-9\.\,]+)", responses[0].text)
    prediction = match.group(1) if match else "[invalid]"
    return float(_gsm8k_normalise(prediction) == _gsm8k_normalise(_gsm8k_gold(doc)))


def gsm8k_flexible(doc: Doc, responses: list[GenerationResponse]) -> float:
    """lm-eval's flexible-extract: the last number in the generation."""
    matches = re.findall(r"(-?[$0-9.,]{2,})|(-?[0-9]+)", responses[0].text)
    prediction = next((g for g in matches[-1] if g), "[invalid]") if matches else "[invalid]"
    return float(_gsm8k_normalise(prediction) == _gsm8k_normalise(_gsm8k_gold(doc)))


def _normalise_answer(text: str) -> str:
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(doc: Doc, responses: list[GenerationResponse]) -> float:
    return float(responses[0].text.strip() in {c.strip() for c in _golds(doc)})


def quasi_exact_match(doc: Doc, responses: list[GenerationResponse]) -> float:
    return float(_normalise_answer(responses[0].text) in {_normalise_answer(c) for c in _golds(doc)})


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def exact_match_ignore_punctuation(doc: Doc, responses: list[GenerationResponse]) -> float:
    """lm-eval's exact_match with ignore_punctuation: ASCII punctuation dropped from both sides and
    nothing else; case and whitespace count, so a generation " 42" does not match "42" there either."""
    return float(responses[0].text.translate(_PUNCTUATION) == doc.choices[doc.gold_indices[0]].translate(_PUNCTUATION))


def _golds(doc: Doc) -> list[str]:
    return [doc.choices[i] for i in doc.gold_indices]


METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("acc", acc),
        Metric("acc_norm", acc_norm),
        Metric("mc1", mc1),
        Metric("mc2", mc2),
        Metric("acc_greedy", acc_greedy),
        Metric("perplexity", loglikelihood, "perplexity", higher_is_better=False),
        Metric("word_perplexity", per_word, "weighted_perplexity", higher_is_better=False),
        Metric("byte_perplexity", per_byte, "weighted_perplexity", higher_is_better=False),
        Metric("bits_per_byte", per_byte, "bits_per_byte", higher_is_better=False),
        Metric("em", exact_match),
        Metric("qem", quasi_exact_match),
    ]
}
# gsm8k's two answer extractions, named as lm-eval's two filters.
GSM8K_STRICT = Metric("exact_match", gsm8k_strict)
GSM8K_FLEXIBLE = Metric("qem", gsm8k_flexible)
# BIG-bench generation's metric, named as lm-eval reports it.
EXACT_MATCH_IGNORE_PUNCTUATION = Metric("exact_match", exact_match_ignore_punctuation)


def resolve_metrics(task: TaskConfig) -> list[Metric]:
    """The task's metrics as objects; an unknown name is a usage error naming the task."""
    out = []
    for metric in task.metrics:
        if isinstance(metric, Metric):
            out.append(metric)
        elif metric in METRICS:
            out.append(METRICS[metric])
        else:
            close = difflib.get_close_matches(str(metric), list(METRICS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise TaskSpecError(
                f"task {task.full_name}: unknown metric {metric!r}{hint}; valid metrics are {', '.join(METRICS)} "
                "(or a lighteval_like.metrics.Metric object)"
            )
    return out


def _aggregate_once(aggregation: str, values: np.ndarray) -> float:
    if aggregation == "mean":
        return float(values.mean())
    if aggregation == "perplexity":
        return float(math.exp(-values.mean()))
    total_ll, total_units = values[:, 0].sum(), values[:, 1].sum()
    if aggregation == "weighted_perplexity":
        return float(math.exp(-total_ll / total_units))
    if aggregation == "bits_per_byte":
        return float(-total_ll / total_units / math.log(2))
    raise ValueError(f"unknown aggregation {aggregation}")


def aggregate(metric: Metric, values: list[SampleValue]) -> tuple[float, float]:
    """(value, stderr): the sample standard error of the mean for means, a seeded bootstrap
    for the other aggregations (which are not means)."""
    array = np.array(values, dtype=np.float64)
    value = _aggregate_once(metric.aggregation, array)
    n = len(array)
    if n < 2:
        return value, 0.0
    if metric.aggregation == "mean":
        return value, float(array.std(ddof=1) / math.sqrt(n))
    rng = np.random.default_rng(1234)
    boots = [_aggregate_once(metric.aggregation, array[rng.integers(0, n, n)]) for _ in range(BOOTSTRAP_ITERS)]
    return value, float(np.std(boots, ddof=1))
