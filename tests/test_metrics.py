"""Metrics against hand-computed values (lm-evaluation-harness conventions)."""

from __future__ import annotations

import math

import pytest

from lighteval_like.api.doc import Doc
from lighteval_like.api.requests import GenerationResponse, LoglikelihoodResponse
from lighteval_like.metrics.library import METRICS, aggregate
from lighteval_like.tasks.registry import Registry, resolve_metrics


def lls(*values, greedy=None):
    greedy = greedy or [False] * len(values)
    return [LoglikelihoodResponse(v, g, 1) for v, g in zip(values, greedy)]


def gen(text: str):
    return [GenerationResponse(text, 5)]


def score(name: str, doc: Doc, responses, task: str | None = None) -> float:
    """The metric `name` as the built-in task `task` declares it (else the shared metric of that name)."""
    declared = {m.name: m for m in resolve_metrics(Registry().get(task))} if task else METRICS
    return declared[name].sample_fn(doc, responses)


def test_acc_is_argmax_in_gold():
    """acc: 1 when the highest loglikelihood is a gold choice."""
    doc = Doc("q", ["a", "b", "c"], 1)
    assert score("acc", doc, lls(-1.0, -0.5, -3.0)) == 1.0
    assert score("acc", doc, lls(-0.1, -0.5, -3.0)) == 0.0
    assert score("acc", Doc("q", ["a", "b", "c"], [0, 2]), lls(-2.0, -1.0, -0.5)) == 1.0


def test_acc_norm_divides_by_character_length():
    """acc_norm normalises by characters (not bytes or tokens)."""
    doc = Doc("q", ["a", "bbbb"], 1)
    responses = lls(-1.0, -2.0)  # per char: -1.0 vs -0.5
    assert score("acc", doc, responses) == 0.0
    assert score("acc_norm", doc, responses) == 1.0
    # "éé" is 2 characters but 4 bytes: per char -1.0 vs -0.9 -> "abc"; per byte would pick "éé".
    doc = Doc("q", ["éé", "abc"], 1)
    assert score("acc_norm", doc, lls(-2.0, -2.7)) == 1.0


def test_mc1_only_looks_at_mc1_choices():
    """mc1: the best of the first mc1_count choices must be the first (true) one."""
    doc = Doc("q", ["t", "f1", "f2", "t2a", "t2b", "f2a"], 0, specific={"mc1_count": 3, "mc2_labels": [1, 1, 0]})
    assert score("mc1", doc, lls(-0.2, -0.5, -2.0, -0.01, -0.01, -0.01)) == 1.0
    assert score("mc1", doc, lls(-1.0, -0.5, -2.0, -5.0, -5.0, -5.0)) == 0.0


def test_mc2_normalised_true_mass():
    """mc2: probability mass on the true mc2 answers over all mc2 answers."""
    doc = Doc("q", ["t", "f", "a", "b", "c"], 0, specific={"mc1_count": 2, "mc2_labels": [1, 1, 0]})
    responses = lls(-9.0, -9.0, math.log(0.2), math.log(0.3), math.log(0.1))
    assert score("mc2", doc, responses) == pytest.approx(0.5 / 0.6)


def test_acc_greedy_needs_every_response_greedy():
    """acc_greedy: 1 only when all continuations are the greedy ones."""
    doc = Doc("q", [" x"], 0)
    assert score("acc_greedy", doc, lls(-1.0, -2.0, greedy=[True, True])) == 1.0
    assert score("acc_greedy", doc, lls(-1.0, -2.0, greedy=[True, False])) == 0.0


def test_perplexity_aggregates_exp_negative_mean():
    """perplexity = exp(-mean of per-sample loglikelihoods)."""
    metric = METRICS["perplexity"]
    doc = Doc("q", [" x"], 0)
    values = [metric.sample_fn(doc, lls(-1.0, -0.5)), metric.sample_fn(doc, lls(-3.0))]
    assert values == [-1.5, -3.0]
    value, _ = aggregate(metric, values)
    assert value == pytest.approx(math.exp(2.25))
    assert metric.higher_is_better is False


def test_word_byte_perplexity_and_bits_per_byte():
    """Weighted perplexities pool loglikelihoods over words/bytes; bits_per_byte is -ll/bytes/ln 2."""
    docs = [
        Doc("", ["t1"], 0, specific={"words": 5, "bytes": 20}),
        Doc("", ["t2"], 0, specific={"words": 5, "bytes": 20}),
    ]
    responses = [lls(-10.0), lls(-20.0)]
    word = [METRICS["word_perplexity"].sample_fn(d, r) for d, r in zip(docs, responses)]
    byte = [METRICS["byte_perplexity"].sample_fn(d, r) for d, r in zip(docs, responses)]
    assert word == [(-10.0, 5.0), (-20.0, 5.0)]
    assert aggregate(METRICS["word_perplexity"], word)[0] == pytest.approx(math.exp(3.0))
    assert aggregate(METRICS["byte_perplexity"], byte)[0] == pytest.approx(math.exp(0.75))
    assert aggregate(METRICS["bits_per_byte"], byte)[0] == pytest.approx(0.75 / math.log(2))
    # Pooled, not averaged per doc: unequal weights give a different number than the mean.
    uneven = [(-10.0, 10.0), (-20.0, 5.0)]
    assert aggregate(METRICS["word_perplexity"], uneven)[0] == pytest.approx(math.exp(2.0))


GSM8K_DOC = Doc("Question: ...", ["She sold 48 + 24 = 72 clips.\n#### 1234"], 0)


@pytest.mark.parametrize(
    "text, strict, flexible",
    [
        ("48 + 24 = 1234.\n#### 1234", 1.0, 1.0),
        ("so #### 1,234.", 1.0, 1.0),  # commas and the final period are ignored
        ("The answer is 1234", 0.0, 1.0),  # no '#### ': strict fails, flexible takes the last number
        ("#### 1234 but wait, maybe 99", 1.0, 0.0),
        ("It costs $1,234", 0.0, 1.0),
        ("#### 12345", 0.0, 0.0),
        ("no number at all", 0.0, 0.0),
    ],
)
def test_gsm8k_strict_and_flexible(text, strict, flexible):
    """gsm8k exact_match is strict-match ('#### N'); qem is flexible-extract (last number)."""
    assert score("exact_match", GSM8K_DOC, gen(text), task="leaderboard|gsm8k") == strict
    assert score("qem", GSM8K_DOC, gen(text), task="leaderboard|gsm8k") == flexible


def test_gsm8k_names_only_for_gsm8k():
    """Outside gsm8k, qem is the generic quasi-exact match."""
    gsm8k = {m.name: m for m in resolve_metrics(Registry().get("leaderboard|gsm8k"))}
    assert gsm8k["qem"].sample_fn.__name__ == "gsm8k_flexible"
    assert gsm8k["exact_match"].sample_fn.__name__ == "gsm8k_strict"
    assert METRICS["qem"].sample_fn.__name__ == "quasi_exact_match"


def test_em_and_qem():
    """em compares stripped strings exactly; qem ignores case, punctuation and articles."""
    doc = Doc("q", ["Paris", "Lyon", "The Eiffel Tower"], [0, 2])
    assert score("em", doc, gen("  Paris \n")) == 1.0
    assert score("em", doc, gen("paris")) == 0.0
    assert score("em", doc, gen("Lyon")) == 0.0  # not gold
    assert score("qem", doc, gen("paris!")) == 1.0
    assert score("qem", doc, gen("an eiffel   tower.")) == 1.0
    assert score("qem", doc, gen("Lyon")) == 0.0


def test_mean_stderr_is_sample_std_over_sqrt_n():
    """Means report std(ddof=1)/sqrt(n)."""
    value, stderr = aggregate(METRICS["acc"], [1.0, 0.0, 1.0, 1.0])
    assert value == 0.75
    assert stderr == pytest.approx(0.25)  # sample std 0.5 / sqrt(4)
    assert aggregate(METRICS["acc"], [1.0]) == (1.0, 0.0)


def test_bootstrap_stderr_deterministic_and_sensible():
    """Non-mean aggregations get a seeded bootstrap stderr: repeatable, positive, zero when constant."""
    metric = METRICS["perplexity"]
    values = [-1.0, -2.0, -0.5, -3.0, -1.5, -2.5]
    first = aggregate(metric, values)
    assert first == aggregate(metric, values)
    assert first[0] == pytest.approx(math.exp(1.75))
    assert 0.0 < first[1] < first[0]
    assert aggregate(metric, [-1.0] * 5)[1] == pytest.approx(0.0)
    pooled = [(-10.0, 5.0), (-20.0, 4.0), (-3.0, 6.0)]
    a, b = aggregate(METRICS["bits_per_byte"], pooled), aggregate(METRICS["bits_per_byte"], pooled)
    assert a == b and a[1] > 0
