"""`compare`: the paired statistics against scipy, pairing and refusals, and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import run_cli
from scipy import stats
from synthetic_runs import binary_pairs, write_run

from lighteval_like.results import compare
from lighteval_like.results.runs import MissingDetailsError, load_one

ARC = "leaderboard|arc:challenge|0"


@pytest.mark.parametrize("b,c", [(0, 0), (0, 7), (5, 15), (30, 12), (40, 41), (3, 3), (1, 60)])
def test_mcnemar_exact_is_scipy_binomtest_on_discordant_pairs(b, c):
    expected = 1.0 if b + c == 0 else stats.binomtest(c, b + c, 0.5, alternative="two-sided").pvalue
    assert compare.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_paired_t_is_scipy_ttest_rel_with_its_interval():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, 137)
    b = np.clip(a + rng.normal(0.03, 0.1, 137), 0, 1)
    ref = stats.ttest_rel(b, a)
    ci = ref.confidence_interval(0.95)
    got = compare.paired_t(b - a)
    assert got.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert (got.ci_low, got.ci_high) == (pytest.approx(ci.low, rel=1e-10), pytest.approx(ci.high, rel=1e-10))


def test_paired_t_of_identical_runs_is_no_difference():
    got = compare.paired_t(np.zeros(50))
    assert (got.p, got.ci_low, got.ci_high) == (1.0, 0.0, 0.0)


def test_holm_adjustment_textbook_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(1*0.04, 0.06)
    assert compare.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert compare.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert compare.holm([]) == []


def test_mde_formula():
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert compare.mde(0.3, 100) == pytest.approx(z * 0.3 / 10)
    assert z == pytest.approx(2.8016, abs=1e-4)
    assert compare.mde(0.0, 100) is None and compare.mde(0.3, 1) is None


def _two_runs(tmp_path, tasks_a, tasks_b, **kw_b):
    write_run(str(tmp_path / "a"), tasks_a, timestamp="2025-01-01T00-00-00.000000")
    write_run(str(tmp_path / "b"), tasks_b, timestamp="2025-01-02T00-00-00.000000", **kw_b)
    return load_one(str(tmp_path / "a")), load_one(str(tmp_path / "b"))


def test_binary_metric_row_matches_scipy_on_the_same_counts(tmp_path):
    """150 docs, 9 right only in A, 25 right only in B: McNemar's exact p is binomtest(25, 34),
    the interval is the paired t interval of the 0/1 differences."""
    a_acc, b_acc = binary_pairs(40, 9, 25, 76)
    run_a, run_b = _two_runs(tmp_path, {ARC: {"acc": a_acc}}, {ARC: {"acc": b_acc}})
    (row,) = compare.compare_runs(run_a, run_b).rows
    assert (row.n, row.discordant, row.test) == (150, [9, 25], "McNemar exact")
    assert row.a == pytest.approx(49 / 150) and row.b == pytest.approx(65 / 150)
    assert row.diff == pytest.approx(16 / 150)
    assert row.p == pytest.approx(stats.binomtest(25, 34, 0.5).pvalue, rel=1e-12)
    ci = stats.ttest_rel(b_acc, a_acc).confidence_interval(0.95)
    assert (row.ci_low, row.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert row.p_holm == row.p  # one row: Holm changes nothing
    assert row.verdict == "B better"
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert row.mde == pytest.approx(z * math.sqrt(34 / 150) / math.sqrt(150))


def test_continuous_metric_paired_t_and_holm_across_rows(tmp_path):
    rng = np.random.default_rng(3)
    mc2_a = rng.uniform(0, 1, 120)
    mc2_b = np.clip(mc2_a + rng.normal(0.01, 0.05, 120), 0, 1)
    a_acc, b_acc = binary_pairs(30, 10, 12, 68)
    tq = "leaderboard|truthfulqa:mc|0"
    run_a, run_b = _two_runs(tmp_path, {tq: {"mc1": a_acc, "mc2": list(mc2_a)}},
                             {tq: {"mc1": b_acc, "mc2": list(mc2_b)}})
    result = compare.compare_runs(run_a, run_b)
    rows = {r.metric: r for r in result.rows}
    ref = stats.ttest_rel(mc2_b, mc2_a)
    assert rows["mc2"].test == "paired t"
    assert rows["mc2"].p == pytest.approx(ref.pvalue, rel=1e-10)
    assert rows["mc2"].mde == pytest.approx(2.8015852 * np.std(mc2_b - mc2_a, ddof=1) / math.sqrt(120), rel=1e-6)
    assert rows["mc1"].p == pytest.approx(stats.binomtest(12, 22).pvalue)
    expected = compare.holm([rows["mc1"].p, rows["mc2"].p])
    assert [rows["mc1"].p_holm, rows["mc2"].p_holm] == pytest.approx(expected)


def test_lower_is_better_metric_verdict_and_perplexity_handling(tmp_path):
    """word_perplexity: p from the paired t-test on per-doc loglikelihood, CI by paired bootstrap."""
    rng = np.random.default_rng(5)
    words = rng.integers(20, 60, 110).astype(float)
    ll_a = -words * rng.uniform(2.0, 3.0, 110)
    ll_b = ll_a + words * 0.2  # B assigns more likelihood: lower perplexity, better
    key = "lighteval|wikitext:2|0"
    run_a, run_b = _two_runs(tmp_path, {key: {"word_perplexity": [[x, w] for x, w in zip(ll_a, words)]}},
                             {key: {"word_perplexity": [[x, w] for x, w in zip(ll_b, words)]}})
    result = compare.compare_runs(run_a, run_b)
    (row,) = result.rows
    assert row.a == pytest.approx(math.exp(-ll_a.sum() / words.sum()))
    assert row.b == pytest.approx(math.exp(-ll_b.sum() / words.sum()))
    assert row.p == pytest.approx(stats.ttest_rel(ll_b, ll_a).pvalue)
    assert row.ci_low < row.diff < row.ci_high < 0
    assert row.mde is None and row.verdict == "B better"
    assert any("perplexity-type" in n for n in result.notes)


def test_whole_suite_average_is_compared_as_a_group(tmp_path):
    """`bigbench|_average|0` (a suite's average, no colon) is a group of its suite's tasks, not a
    task without details: compare pairs it over all its tasks' docs, report orders it after them."""
    from lighteval_like.results.report import task_order

    counts = {"navigate": (20, 3, 12, 65), "snarks": (30, 4, 9, 57)}
    tasks_a, tasks_b = {}, {}
    for name, c in counts.items():
        tasks_a[f"bigbench|{name}|0"], tasks_b[f"bigbench|{name}|0"] = ({"acc": v} for v in binary_pairs(*c))
    write_run(str(tmp_path / "a"), tasks_a, timestamp="2025-01-01T00-00-00.000000", suite_average=True)
    write_run(str(tmp_path / "b"), tasks_b, timestamp="2025-01-02T00-00-00.000000", suite_average=True)
    run_a, run_b = load_one(str(tmp_path / "a")), load_one(str(tmp_path / "b"))
    rows = {r.task: r for r in compare.compare_runs(run_a, run_b).rows}
    group = rows["bigbench|_average|0"]
    assert group.n == sum(sum(c) for c in counts.values()) and group.test == "stratified paired t (2 tasks)"
    assert group.a == pytest.approx(run_a.scores["bigbench|_average|0"]["acc"])
    assert task_order([run_a, run_b]) == ["bigbench|navigate|0", "bigbench|snarks|0", "bigbench|_average|0"]


def test_group_average_uses_all_docs_paired(tmp_path):
    subjects = {"anatomy": (20, 3, 12, 65), "astronomy": (30, 4, 9, 57), "virology": (10, 6, 5, 79)}
    tasks_a, tasks_b, diffs = {}, {}, []
    for subject, counts in subjects.items():
        a_acc, b_acc = binary_pairs(*counts)
        tasks_a[f"leaderboard|mmlu:{subject}|0"] = {"acc": a_acc}
        tasks_b[f"leaderboard|mmlu:{subject}|0"] = {"acc": b_acc}
        diffs.append(np.array(b_acc) - np.array(a_acc))
    run_a, run_b = _two_runs(tmp_path, tasks_a, tasks_b)
    rows = {r.task: r for r in compare.compare_runs(run_a, run_b).rows}
    group = rows["leaderboard|mmlu:_average|0"]
    assert group.n == sum(len(d) for d in diffs)
    assert group.a == pytest.approx(run_a.scores["leaderboard|mmlu:_average|0"]["acc"])
    assert group.b == pytest.approx(run_b.scores["leaderboard|mmlu:_average|0"]["acc"])
    assert group.diff == pytest.approx(np.mean([d.mean() for d in diffs]))
    v = [d.var(ddof=1) / len(d) for d in diffs]
    se = math.sqrt(sum(v)) / 3
    df = sum(v) ** 2 / sum(x**2 / (len(d) - 1) for x, d in zip(v, diffs))
    assert group.p == pytest.approx(2 * stats.t.sf(abs(group.diff) / se, df))
    assert group.ci_high - group.diff == pytest.approx(stats.t.ppf(0.975, df) * se)
    assert group.mde == pytest.approx(2.8015852 * se, rel=1e-6)
    assert len(rows) == 4  # three subjects + the group, all in the Holm family


def test_different_prompts_refused_unless_allowed(tmp_path):
    a_acc, b_acc = binary_pairs(20, 5, 6, 69)
    run_a, run_b = _two_runs(tmp_path, {ARC: {"acc": a_acc}}, {ARC: {"acc": b_acc}}, prompt_suffix=" Answer:")
    refused = compare.compare_runs(run_a, run_b)
    assert refused.rows == []
    assert refused.refused == [f"{ARC}: refused, the runs scored different prompts for 100 of 100 docs; "
                               "pass --allow_different_prompts to compare anyway"]
    allowed = compare.compare_runs(run_a, run_b, allow_different_prompts=True)
    assert [r.n for r in allowed.rows] == [100]


def test_different_docs_refused_and_common_docs_paired_when_allowed(tmp_path):
    a_acc, b_acc = binary_pairs(20, 5, 6, 69)
    run_a, run_b = _two_runs(tmp_path, {ARC: {"acc": a_acc}},
                             {ARC: {"acc": b_acc[:80], "_docs": list(range(80))}})
    assert "different docs (A 100, B 80, 80 in common)" in compare.compare_runs(run_a, run_b).refused[0]
    (row,) = compare.compare_runs(run_a, run_b, allow_different_prompts=True).rows
    assert row.n == 80 and row.a == pytest.approx(np.mean(a_acc[:80]))


def test_other_fewshot_count_is_matched_by_task_name_and_refused_for_its_prompts(tmp_path):
    a_acc, b_acc = binary_pairs(20, 5, 6, 69)
    k0, k5 = "leaderboard|mmlu:anatomy|0", "leaderboard|mmlu:anatomy|5"
    run_a, run_b = _two_runs(tmp_path, {k0: {"acc": a_acc}}, {k5: {"acc": b_acc}})
    assert compare.compare_runs(run_a, run_b).refused[0].startswith(f"{k0} vs {k5}: refused")
    (row,) = compare.compare_runs(run_a, run_b, allow_different_prompts=True).rows
    assert (row.task, row.task_b) == (k0, k5)


def test_missing_details_says_rerun_with_save_details(tmp_path):
    a_acc, b_acc = binary_pairs(20, 5, 6, 69)
    run_a, run_b = _two_runs(tmp_path, {ARC: {"acc": a_acc}}, {ARC: {"acc": b_acc}}, details=False)
    with pytest.raises(MissingDetailsError, match="rerun it with --save_details"):
        compare.compare_runs(run_a, run_b)


def test_cli_table_json_markdown_and_one_line_errors(tmp_path):
    a_acc, b_acc = binary_pairs(40, 9, 25, 76)
    _two_runs(tmp_path, {ARC: {"acc": a_acc, "acc_norm": a_acc}}, {ARC: {"acc": b_acc, "acc_norm": a_acc}})
    proc = run_cli(["compare", str(tmp_path / "a"), str(tmp_path / "b"),
                    "--json", str(tmp_path / "c.json"), "--markdown", str(tmp_path / "c.md")])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Task "))
    assert lines[header + 2].split()[:2] == [ARC, "acc"] and lines[header + 2].endswith("B better")
    assert lines[header + 3].split()[:2] == [ARC, "acc_norm"]
    assert lines[header + 3].endswith("no detectable difference")
    data = json.loads((tmp_path / "c.json").read_text())
    assert [r["metric"] for r in data["rows"]] == ["acc", "acc_norm"]
    assert data["rows"][0]["p_holm"] == pytest.approx(min(1, 2 * stats.binomtest(25, 34).pvalue))
    md = (tmp_path / "c.md").read_text()
    assert "| leaderboard\\|arc:challenge\\|0 | acc |" in md

    missing = run_cli(["compare", str(tmp_path / "a"), str(tmp_path / "nope")])
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"lighteval-like: error: {tmp_path / 'nope'}: no such results file or output directory"]
    write_run(str(tmp_path / "nodetails"), {ARC: {"acc": b_acc}}, details=False)
    no_details = run_cli(["compare", str(tmp_path / "a"), str(tmp_path / "nodetails")])
    assert no_details.returncode == 2 and len(no_details.stderr.strip().splitlines()) == 1
    assert "rerun it with --save_details" in no_details.stderr


def test_a_directory_of_several_runs_must_be_narrowed_to_one(tmp_path):
    a_acc, b_acc = binary_pairs(20, 5, 6, 69)
    write_run(str(tmp_path / "two"), {ARC: {"acc": a_acc}}, timestamp="2025-01-01T00-00-00.000000")
    write_run(str(tmp_path / "two"), {ARC: {"acc": b_acc}}, timestamp="2025-01-02T00-00-00.000000")
    proc = run_cli(["compare", str(tmp_path / "two"), str(tmp_path / "two")])
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert f"{tmp_path / 'two'} holds 2 runs (" in line and line.endswith(": name one results file")


def test_a_metric_without_a_value_for_some_docs_is_paired_over_the_docs_with_both(tmp_path):
    """A judge's unread verdict is no value (None): the pairs are the docs both runs have a value for."""
    key = "custom|judged|0"
    run_a, run_b = _two_runs(tmp_path, {key: {"rating": [8.0, None, 3.0, 5.0, 6.0]}},
                             {key: {"rating": [6.0, 7.0, None, 4.0, 6.0]}})
    result = compare.compare_runs(run_a, run_b)
    (row,) = result.rows
    assert (row.n, row.a, row.b, row.test) == (3, pytest.approx(19 / 3), pytest.approx(16 / 3), "paired t")
    assert f"{key}: paired over the docs with a value in both runs' details (of 5): rating (3)" in result.notes
