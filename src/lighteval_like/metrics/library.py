"""Per-sample metrics, their aggregation over a task, and standard errors.

Conventions follow lm-evaluation-harness so numbers are comparable: acc is argmax of the
choice loglikelihoods, acc_norm divides by the choice's length in characters, mc2 is the
normalised probability mass on true answers, perplexity is exp(-mean loglikelihood).

A task names its metrics (`TaskConfig.metrics`): names of `METRICS`, or `Metric` objects of its
own (gsm8k's two answer extractions report as `exact_match` and `qem`, as lm-eval names them).
"""

from __future__ import annotations

import functools
import math
import re
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from lighteval_like.api.doc import Doc
from lighteval_like.api.errors import TaskSpecError
from lighteval_like.api.requests import GenerationRequest, GenerationResponse, LoglikelihoodResponse
from lighteval_like.api.sample import SampleValue
from lighteval_like.metrics.vision import AGGREGATIONS

BOOTSTRAP_ITERS = 1000


CODE_EXECUTION = "code_execution"  # runs model-written programs: the user's consent and a sandbox level
JUDGE = "judge"  # asks a judge model (metrics/judge.py): the run must have one


@dataclass(frozen=True)
class Metric:
    """A metric of one sample (`sample_fn`), or of all a task's samples at once (`batch_fn`, for
    work that runs in parallel, such as executing programs, or reads a judge's answers). `needs`
    names what scoring must provide beyond the responses (`CODE_EXECUTION`, `JUDGE`): the pipeline
    refuses a run that lacks it before anything loads; `batch_fn` finds it in its scoring context."""

    name: str  # the key in the results
    sample_fn: Callable[[Doc, list], SampleValue] | None = None
    # mean | perplexity | weighted_perplexity | bits_per_byte | pooled_mean | a name of vision.AGGREGATIONS
    aggregation: str = "mean"
    higher_is_better: bool = True  # recorded in the results' metric_info: `compare` and `report` read it
    batch_fn: Callable[..., list[SampleValue]] | None = None  # (samples, scoring context) -> one value each
    needs: frozenset[str] = frozenset()
    judge_requests: Callable[[list], list[GenerationRequest]] | None = None  # what it asks the judge (judge.py)


def _logprobs(responses: list[LoglikelihoodResponse]) -> np.ndarray:
    return np.array([r.logprob for r in responses], dtype=np.float64)


def acc(doc: Doc, responses: list[LoglikelihoodResponse]) -> float:
    return float(int(np.argmax(_logprobs(responses))) in doc.gold_indices)


def acc_norm(doc: Doc, responses: list[LoglikelihoodResponse]) -> float:
    lengths = np.array([float(len(c)) for c in doc.choices])
    return float(int(np.argmax(_logprobs(responses) / lengths)) in doc.gold_indices)


def acc_token_mean(doc: Doc, responses: list[LoglikelihoodResponse]) -> float:
    """The choice of highest mean log-probability per token: lmms-eval's convention for image
    models that score choices (it returns the mean token loss and takes the lowest)."""
    means = _logprobs(responses) / np.array([max(r.num_tokens, 1) for r in responses], dtype=np.float64)
    return float(int(np.argmax(means)) in doc.gold_indices)


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


_GSM8K_IGNORE = [",", r"\$", r"(?s).*#### ", r"\.$"]


def _gsm8k_normalise(text: str) -> str:
    for pattern in _GSM8K_IGNORE:
        text = re.sub(pattern, "", text)
    return text.lower().strip()


def _first_match(pattern: str, text: str, last: bool = False) -> str:
    """lm-eval's regex filter: the first (or last) match, its first non-empty group, stripped;
    "[invalid]" when nothing matches."""
    matches = re.findall(pattern, text)
    if not matches:
        return "[invalid]"
    match = matches[-1 if last else 0]
    if isinstance(match, tuple):
        match = next((g for g in match if g), "[invalid]")
    return match.strip()


def gsm8k_answer(text: str) -> str:
    """The normalised answer after '#### ' (gsm8k's strict-match extraction)."""
    return _gsm8k_normalise(_first_match(r"#### (\-?[0-9\.\,]+)", text))


def gsm8k_last_number(text: str) -> str:
    """The normalised last number (gsm8k's flexible-extract)."""
    return _gsm8k_normalise(_first_match(r"(-?[$0-9.,]{2,})|(-?[0-9]+)", text, last=True))


def gsm8k_cot_answer(text: str) -> str:
    """The normalised number after 'The answer is' (gsm8k_cot's strict-match)."""
    return _gsm8k_normalise(_first_match(r"The answer is (\-?[0-9\.\,]+).", text))


def gsm8k_cot_vote(text: str) -> str:
    """The answer the self-consistency variant votes on ('The answer is N', N ending in a digit)."""
    return _gsm8k_normalise(_first_match(r"The answer is (\-?[0-9\.\,]*[0-9]+)", text))


def gsm8k_gold(doc: Doc) -> str:
    """The normalised number after '####' in the reference solution (the whole target without one)."""
    return _gsm8k_normalise(doc.choices[0].split("####")[-1].strip())


def answer_match(extract: Callable[[str], str], gold: Callable[[Doc], str], doc: Doc,
                 responses: list[GenerationResponse]) -> float:
    """The first generation's extracted answer equals the gold one."""
    return float(extract(responses[0].text) == gold(doc))


def gsm8k_strict(doc: Doc, responses: list[GenerationResponse]) -> float:
    """lm-eval's strict-match: the answer after '#### ' in the generation."""
    return answer_match(gsm8k_answer, gsm8k_gold, doc, responses)


def gsm8k_flexible(doc: Doc, responses: list[GenerationResponse]) -> float:
    """lm-eval's flexible-extract: the last number in the generation."""
    return answer_match(gsm8k_last_number, gsm8k_gold, doc, responses)


def gsm8k_cot_strict(doc: Doc, responses: list[GenerationResponse]) -> float:
    """gsm8k_cot's strict-match: the number after 'The answer is'."""
    return answer_match(gsm8k_cot_answer, gsm8k_gold, doc, responses)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from n samples of which c passed (Chen et al. 2021):
    1 - C(n-c, k) / C(n, k), the probability that k samples drawn without replacement include a
    passing one. With fewer samples than k no k-subset exists: ValueError."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n < k:
        raise ValueError(f"pass@{k} is undefined with n={n} samples (< k); draw at least k samples")
    if n - c < k:  # every k-subset holds a passing sample
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority(answers: list[str]) -> str:
    """The most frequent answer; a tie goes to the answer given first (as lm-eval's vote)."""
    return Counter(answers).most_common(1)[0][0]


@dataclass(frozen=True)
class OverSamples:
    """A metric over a doc's n sampled generations, reported as `<kind>@<k>` with its stderr
    over docs: `avg` (mean correctness of the first k), `maj` (the majority answer of the first
    k is right; with n < k, of all n), `pass` (unbiased pass@k from all n; needs n >= k).
    k defaults to n, the run's number of samples."""

    kind: str  # avg | maj | pass
    extract: Callable[[str], str]  # a generation's (normalised) answer
    gold: Callable[[Doc], str]
    k: int | None = None

    @property
    def name(self) -> str:
        """As in a task's config (`maj@k`: k is the run's number of samples)."""
        return f"{self.kind}@{self.k or 'k'}"

    def check(self, task_name: str, n: int) -> None:
        if self.kind == "pass" and (self.k or n) > n:
            raise TaskSpecError(f"task {task_name}: pass@{self.k} needs num_samples >= {self.k}, got {n}")

    def metrics(self, n: int) -> list[Metric]:
        return [Metric(f"{self.kind}@{self.k or n}", functools.partial(_over_samples, self, self.k or n))]


@runtime_checkable
class SampledMetrics(Protocol):
    """Metrics a task names once and that become concrete for the run's number of samples per
    doc (`OverSamples`; HumanEval's `PassAtK`)."""

    name: str

    def check(self, task_name: str, n: int) -> None: ...

    def metrics(self, n: int) -> list[Metric]: ...


def _over_samples(spec: OverSamples, k: int, doc: Doc, responses: list[GenerationResponse]) -> float:
    answers = [spec.extract(r.text) for r in responses]
    gold = spec.gold(doc)
    if spec.kind == "pass":
        return pass_at_k(len(answers), sum(a == gold for a in answers), k)
    first = answers[:k]
    if spec.kind == "maj":
        return float(majority(first) == gold)
    return sum(a == gold for a in first) / len(first)


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
        Metric("acc_token_mean", acc_token_mean),
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
# gsm8k_cot's: 'The answer is N', and the same flexible extraction.
GSM8K_COT_STRICT = Metric("exact_match", gsm8k_cot_strict)
# BIG-bench generation's metric, named as lm-eval reports it.
EXACT_MATCH_IGNORE_PUNCTUATION = Metric("exact_match", exact_match_ignore_punctuation)


def _aggregate_once(aggregation: str, values: np.ndarray) -> float:
    if aggregation in AGGREGATIONS:
        return AGGREGATIONS[aggregation](values)
    if aggregation == "mean":
        return float(values.mean())
    if aggregation == "perplexity":
        return float(math.exp(-values.mean()))
    total, total_units = values[:, 0].sum(), values[:, 1].sum()  # (loglikelihood or successes, units) per sample
    if aggregation == "weighted_perplexity":
        return float(math.exp(-total / total_units))
    if aggregation == "bits_per_byte":
        return float(-total / total_units / math.log(2))
    if aggregation == "pooled_mean":  # (successes, trials) per sample: the share over all trials
        return float(total / total_units)
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
