"""`lighteval-like compare A B`: is run B better than run A, task by task, honestly?

Both runs are paired over the docs they both scored (the per-sample details). For every task
and metric both runs have:

- difference  d = mean_B - mean_A over the paired docs, with the 95% CI of the paired mean
  difference: mean(d_i) +- t_{0.975, n-1} * sd(d_i) / sqrt(n)  (d_i = B_i - A_i per doc);
- p-value: for 0/1 metrics McNemar's exact test, i.e. a two-sided binomial test of the
  discordant pairs: c = #(A wrong, B right), b = #(A right, B wrong),
  p = min(1, 2 * P[Binom(b + c, 1/2) <= min(b, c)]); for continuous metrics the paired t-test
  t = mean(d_i) / (sd(d_i) / sqrt(n)), n - 1 degrees of freedom;
- Holm's step-down adjustment across all rows of the table: with p_(1) <= ... <= p_(m),
  p_adj_(i) = max_{j <= i} min(1, (m - j + 1) * p_(j));
- verdict: "B better" / "B worse" (taking the metric's direction into account) when the Holm
  p-value is below alpha, else "no detectable difference". A metric's direction and aggregation
  are read from the results files (`config_tasks.<task>.metric_info`; files written before it: the
  built-in task's or metric's); a metric A's and B's files describe differently is refused;
- MDE80: the smallest |difference| the task could detect with 80% power at two-sided alpha,
  given its n: (z_{1-alpha/2} + z_{0.8}) * s / sqrt(n), with s the observed sd of the paired
  differences for continuous metrics, and s = sqrt((b + c) / n) (the discordance rate, the
  variance of d_i under no difference) for 0/1 metrics (the normal approximation to McNemar's
  power).

A doc scored under several few-shot seeds counts once: its metric is averaged over the seeds
(the docs are the independent units). Group averages (`mmlu:_average`) are the mean of the
subtask means, so their difference is sum_k mean_k(d) / K with standard error
sqrt(sum_k sd_k^2 / n_k) / K over all their docs, paired within each subtask (a stratified
paired t, Welch-Satterthwaite degrees of freedom); MDE80 = (z + z) * that standard error.

Perplexity-type metrics (perplexity, word/byte_perplexity, bits_per_byte) are not means of
per-doc values, so they get no per-doc mean test: since both runs score the same docs (same
word/byte counts), which run has the lower perplexity is decided by the total loglikelihood, so
the p-value is a paired t-test on the per-doc loglikelihood, and the CI of the metric's own
difference is a paired bootstrap over docs (2000 resamples, seeded). No MDE is given for them.
Corpus metrics of the image benchmarks (MME's scores, POPE's precision, recall, F1 and yes-ratio:
`metrics/vision.py`) get the same bootstrap for their CI and its two-sided p ("paired bootstrap").

Runs that scored different docs, or the same docs with different prompts (per-sample prompt
hashes, see `runs.prompt_hash`), are refused for that task unless `allow_different_prompts`,
in which case they are paired over the docs both scored.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from lighteval_like.api.errors import UsageError
from lighteval_like.metrics.vision import AGGREGATIONS as CORPUS_AGGREGATIONS
from lighteval_like.results.runs import Run, builtin_metric_info, group_members, group_of, prompt_hash

ALPHA = 0.05
POWER = 0.8
BOOTSTRAP_ITERS = 2000
VERDICT_BETTER, VERDICT_WORSE, VERDICT_NONE = "B better", "B worse", "no detectable difference"


class NothingToCompareError(UsageError):
    """The two runs share no task that can be compared."""


# ---------------------------------------------------------------- statistics


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (binomial test, p = 1/2)."""
    from scipy.stats import binom

    n = b + c
    if n == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(b, c), n, 0.5)))


@dataclass
class PairedT:
    mean: float
    sd: float
    n: int
    ci_low: float | None
    ci_high: float | None
    p: float | None


def paired_t(d: np.ndarray, alpha: float = ALPHA) -> PairedT:
    """Paired t-test and (1 - alpha) CI of the mean of the differences d_i = B_i - A_i."""
    from scipy.stats import t as student_t

    d = np.asarray(d, dtype=np.float64)
    n = len(d)
    mean = float(d.mean()) if n else float("nan")
    if n < 2:
        return PairedT(mean, float("nan"), n, None, None, None)
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    if se == 0.0:  # every doc moved by the same amount (typically: identical runs)
        return PairedT(mean, sd, n, mean, mean, 1.0 if mean == 0.0 else 0.0)
    half = float(student_t.ppf(1 - alpha / 2, n - 1)) * se
    p = float(2 * student_t.sf(abs(mean / se), n - 1))
    return PairedT(mean, sd, n, mean - half, mean + half, p)


def stratified_paired_t(diffs: list[np.ndarray], alpha: float = ALPHA) -> tuple[float, float, float | None, float | None, float | None]:
    """Difference of a macro average over K strata (mean of the K paired mean differences):
    (estimate, standard error, CI low, CI high, p) with Welch-Satterthwaite degrees of freedom."""
    from scipy.stats import t as student_t

    k = len(diffs)
    est = float(sum(d.mean() for d in diffs) / k)
    if any(len(d) < 2 for d in diffs):
        return est, float("nan"), None, None, None
    v = [float(d.var(ddof=1)) / len(d) for d in diffs]
    se = math.sqrt(sum(v)) / k
    if se == 0.0:
        return est, 0.0, est, est, 1.0 if est == 0.0 else 0.0
    df = sum(v) ** 2 / sum(vk**2 / (len(d) - 1) for vk, d in zip(v, diffs) if vk > 0)
    half = float(student_t.ppf(1 - alpha / 2, df)) * se
    return est, se, est - half, est + half, float(2 * student_t.sf(abs(est / se), df))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def mde_from_se(se: float, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """Smallest |difference| detectable with `power` at two-sided `alpha` given the estimate's
    standard error (normal approximation): (z_{1-alpha/2} + z_power) * se."""
    from scipy.stats import norm

    if not se > 0:
        return None
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * se)


def mde(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """MDE of a paired mean difference over n docs whose differences have spread sd."""
    return mde_from_se(sd / math.sqrt(n), alpha, power) if n >= 2 else None


def _aggregate(aggregation: str, values: np.ndarray) -> float:
    from lighteval_like.metrics.library import _aggregate_once

    return _aggregate_once(aggregation, values)


def _bootstrap_differences(a: np.ndarray, b: np.ndarray, aggregation: str, iters: int) -> np.ndarray:
    """agg(B) - agg(A) over `iters` resamplings of the docs (the same docs for both runs)."""
    rng = np.random.default_rng(1234)
    n = len(a)
    boots = np.empty(iters)
    for i in range(iters):
        idx = rng.integers(0, n, n)
        boots[i] = _aggregate(aggregation, b[idx]) - _aggregate(aggregation, a[idx])
    return boots


def paired_bootstrap_ci(
    a: np.ndarray, b: np.ndarray, aggregation: str, alpha: float = ALPHA, iters: int = BOOTSTRAP_ITERS
) -> tuple[float, float]:
    """Percentile CI of agg(B) - agg(A), resampling docs (the same docs for both runs)."""
    boots = _bootstrap_differences(a, b, aggregation, iters)
    return float(np.quantile(boots, alpha / 2)), float(np.quantile(boots, 1 - alpha / 2))


def paired_bootstrap_test(a: np.ndarray, b: np.ndarray, aggregation: str, alpha: float = ALPHA,
                          iters: int = BOOTSTRAP_ITERS) -> tuple[float, float, float]:
    """(CI low, CI high, two-sided p) of agg(B) - agg(A) by a paired bootstrap over docs: for
    corpus metrics (MME's scores, POPE's F1), which no per-doc mean stands for."""
    boots = _bootstrap_differences(a, b, aggregation, iters)
    p = min(1.0, 2 * min(float(np.mean(boots <= 0)), float(np.mean(boots >= 0))))
    return float(np.quantile(boots, alpha / 2)), float(np.quantile(boots, 1 - alpha / 2)), p


# ---------------------------------------------------------------- pairing runs


@dataclass
class Row:
    task: str
    metric: str
    n: int
    a: float
    b: float
    diff: float
    ci_low: float | None
    ci_high: float | None
    test: str
    p: float | None
    p_holm: float | None = None
    mde: float | None = None
    verdict: str = ""
    higher_is_better: bool = True
    discordant: list[int] | None = None  # [b, c]: A right & B wrong, A wrong & B right
    task_b: str | None = None  # B's task key where it differs (e.g. another few-shot count)


@dataclass
class Comparison:
    a: dict
    b: dict
    rows: list[Row] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    alpha: float = ALPHA

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "alpha": self.alpha, "rows": [asdict(r) for r in self.rows],
                "refused": self.refused, "notes": self.notes}


def _metric_info(comparison: Comparison, a: Run, b: Run, ka: str, kb: str, metric: str) -> tuple[str, bool] | None:
    """(aggregation, higher_is_better) of a metric, as the runs' results files describe it (files
    written before `metric_info`: as built in); None, and the metric refused, where A and B disagree."""
    info_a, info_b = a.described_metric(ka, metric), b.described_metric(kb, metric)
    if info_a and info_b and info_a != info_b:
        comparison.refused.append(
            f"{_fmt_key(ka, kb)} {metric}: A's and B's results files describe it differently "
            f"(A: {info_a[0]}, higher is better {info_a[1]}; B: {info_b[0]}, higher is better {info_b[1]}), not compared"
        )
        return None
    return info_a or info_b or builtin_metric_info(ka, metric)


def _by_doc(rows: list[dict]) -> dict[int, list[dict]]:
    docs: dict[int, list[dict]] = {}
    for row in rows:
        docs.setdefault(int(row["doc_index"]), []).append(row)
    for samples in docs.values():
        samples.sort(key=lambda r: (r.get("fewshot_seed") is None, r.get("fewshot_seed")))
    return docs


def _doc_hash(samples: list[dict]) -> str:
    return "/".join(prompt_hash(s) for s in samples)


def _doc_values(samples: list[dict], metric: str, aggregation: str):
    values = [s["metrics"].get(metric) for s in samples]
    if any(v is None for v in values):
        return None
    if aggregation == "mean":
        return float(np.mean(values))
    return np.mean(np.asarray(values, dtype=np.float64), axis=0)  # ll, or [ll, units]


def _match_tasks(a: Run, b: Run) -> list[tuple[str, str]]:
    """Pairs of task keys: identical keys, then keys equal up to the few-shot count."""
    keys_a = [k for k in a.scores if group_of(k) is None]
    keys_b = [k for k in b.scores if group_of(k) is None]
    pairs = [(k, k) for k in keys_a if k in keys_b]
    left_a = [k for k in keys_a if k not in keys_b]
    left_b = [k for k in keys_b if k not in keys_a]
    for ka in left_a:
        same = [kb for kb in left_b if kb.rsplit("|", 1)[0] == ka.rsplit("|", 1)[0]]
        if len(same) == 1:
            pairs.append((ka, same[0]))
            left_b.remove(same[0])
    return pairs


def _fmt_key(ka: str, kb: str) -> str:
    return ka if ka == kb else f"{ka} vs {kb}"


def compare_runs(a: Run, b: Run, allow_different_prompts: bool = False, alpha: float = ALPHA) -> Comparison:
    comparison = Comparison(
        a={"label": a.label, "results": a.results_path, "model_name": a.model_name},
        b={"label": b.label, "results": b.results_path, "model_name": b.model_name},
        alpha=alpha,
    )
    pairs = _match_tasks(a, b)
    if not pairs:
        raise NothingToCompareError(
            f"runs share no task: A has {', '.join(a.scores) or 'none'}; B has {', '.join(b.scores) or 'none'}"
        )
    # Per-task paired differences, kept for the group averages.
    task_diffs: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    task_means: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
    refused_tasks: set[str] = set()
    for ka, kb in pairs:
        paired = _paired_docs(comparison, a, b, ka, kb, allow_different_prompts)
        if paired is None:
            refused_tasks.add(ka)
            continue
        for metric, xa, xb, aggregation, higher in _metric_values(comparison, a, b, ka, kb, *paired):
            row = _compare_metric(_fmt_key(ka, kb), metric, xa, xb, aggregation, higher, alpha)
            row.task, row.task_b = ka, (kb if kb != ka else None)
            comparison.rows.append(row)
            if aggregation == "mean":
                task_diffs.setdefault((ka, kb), {})[metric] = xb - xa
                task_means.setdefault((ka, kb), {})[metric] = (float(xa.mean()), float(xb.mean()))
    comparison.rows.extend(_group_rows(a, b, pairs, task_diffs, task_means, refused_tasks, comparison, alpha))
    _adjust(comparison, alpha)
    return comparison


def _paired_docs(comparison: Comparison, a: Run, b: Run, ka: str, kb: str, allow_different_prompts: bool):
    """(docs of A, docs of B, the doc indices both scored), or None when the task is refused
    (different docs or prompts without --allow_different_prompts, or no doc in common)."""
    docs_a, docs_b = _by_doc(a.details(ka)), _by_doc(b.details(kb))
    common = sorted(set(docs_a) & set(docs_b))
    same_docs = set(docs_a) == set(docs_b)
    differing = [d for d in common if _doc_hash(docs_a[d]) != _doc_hash(docs_b[d])]
    label = _fmt_key(ka, kb)
    if not same_docs or differing:
        why = (f"different docs (A {len(docs_a)}, B {len(docs_b)}, {len(common)} in common)" if not same_docs
               else f"different prompts for {len(differing)} of {len(common)} docs")
        if not allow_different_prompts:
            comparison.refused.append(
                f"{label}: refused, the runs scored {why}; pass --allow_different_prompts to compare anyway"
            )
            return None
        comparison.notes.append(f"{label}: runs scored {why}; paired over the {len(common)} docs both scored")
    if not common:
        comparison.refused.append(f"{label}: no doc in common")
        return None
    return docs_a, docs_b, common


def _metric_values(comparison: Comparison, a: Run, b: Run, ka: str, kb: str, docs_a, docs_b, common):
    """(metric, A's per-doc values, B's, aggregation, higher_is_better) for every metric both runs
    have per sample (and describe alike), paired over the docs with a value in both runs (a judge's
    unread verdict has none, nor a metric of a subset such as one MT-Bench category)."""
    partial = []
    for metric in [m for m in a.scores[ka] if not m.endswith("_stderr") and m in b.scores[kb]]:
        info = _metric_info(comparison, a, b, ka, kb, metric)
        if info is None:
            continue
        aggregation, higher = info
        both = [(x, y) for x, y in ((_doc_values(docs_a[d], metric, aggregation),
                                     _doc_values(docs_b[d], metric, aggregation)) for d in common)
                if x is not None and y is not None]
        if not both:
            comparison.notes.append(f"{_fmt_key(ka, kb)} {metric}: missing from some samples' details, not compared")
            continue
        if len(both) < len(common):
            partial.append(f"{metric} ({len(both)})")
        va, vb = zip(*both)
        yield metric, np.asarray(va, dtype=np.float64), np.asarray(vb, dtype=np.float64), aggregation, higher
    if partial:
        comparison.notes.append(f"{_fmt_key(ka, kb)}: paired over the docs with a value in both runs' details "
                                f"(of {len(common)}): {', '.join(partial)}")


def _adjust(comparison: Comparison, alpha: float) -> None:
    """Holm-adjusted p-values over all rows, and each row's verdict."""
    if any(r.test == "paired-t on loglikelihood" for r in comparison.rows):
        comparison.notes.append(
            "perplexity-type metrics: p from a paired t-test on per-doc loglikelihood (which decides the "
            "ordering when both runs score the same docs), CI by paired bootstrap over docs, no MDE"
        )
    tested = [r for r in comparison.rows if r.p is not None]
    for row, adj in zip(tested, holm([r.p for r in tested])):
        row.p_holm = adj
    for row in comparison.rows:
        row.verdict = _verdict(row, alpha)
    if not comparison.rows and not comparison.refused:
        raise NothingToCompareError("the runs share tasks but no metric with per-sample values")


def _verdict(row: Row, alpha: float) -> str:
    if row.p_holm is None:
        return "too few docs"
    if row.p_holm >= alpha or row.diff == 0:
        return VERDICT_NONE
    return VERDICT_BETTER if (row.diff > 0) == row.higher_is_better else VERDICT_WORSE


def _compare_metric(label, metric, xa, xb, aggregation, higher, alpha) -> Row:
    n = len(xa)
    if aggregation in CORPUS_AGGREGATIONS:
        lo, hi, p = paired_bootstrap_test(xa, xb, aggregation, alpha) if n >= 2 else (None, None, None)
        a_val, b_val = _aggregate(aggregation, xa), _aggregate(aggregation, xb)
        return Row(label, metric, n, a_val, b_val, b_val - a_val, lo, hi, "paired bootstrap", p, higher_is_better=higher)
    if aggregation != "mean":
        a_val, b_val = _aggregate(aggregation, xa), _aggregate(aggregation, xb)
        ll = (lambda x: x[:, 0]) if xa.ndim == 2 else (lambda x: x)
        t = paired_t(ll(xb) - ll(xa), alpha)
        lo, hi = paired_bootstrap_ci(xa, xb, aggregation, alpha) if n >= 2 else (None, None)
        test = "paired-t on per-doc sums" if aggregation == "pooled_mean" else "paired-t on loglikelihood"
        return Row(label, metric, n, a_val, b_val, b_val - a_val, lo, hi, test, t.p, higher_is_better=higher)
    d = xb - xa
    t = paired_t(d, alpha)
    binary = bool(np.all((xa == 0) | (xa == 1)) and np.all((xb == 0) | (xb == 1)))
    if binary:
        nb, nc = int(np.sum((xa == 1) & (xb == 0))), int(np.sum((xa == 0) & (xb == 1)))
        p = mcnemar_exact(nb, nc) if n >= 2 else None
        return Row(label, metric, n, float(xa.mean()), float(xb.mean()), t.mean, t.ci_low, t.ci_high,
                   "McNemar exact", p, mde=mde(math.sqrt((nb + nc) / n), n, alpha), higher_is_better=higher,
                   discordant=[nb, nc])
    return Row(label, metric, n, float(xa.mean()), float(xb.mean()), t.mean, t.ci_low, t.ci_high, "paired t",
               t.p, mde=mde(t.sd, n, alpha), higher_is_better=higher)


def _group_rows(a, b, pairs, task_diffs, task_means, refused_tasks, comparison, alpha) -> list[Row]:
    rows = []
    for group_a in [k for k in a.scores if group_of(k) is not None]:
        in_group = set(group_members(group_a, [ka for ka, _ in pairs]))
        members = [(ka, kb) for ka, kb in pairs if ka in in_group]
        group_b = f"{group_of(group_a)[0]}_average|{members[0][1].rsplit('|', 1)[1]}" if members else group_a
        if len(members) < 2 or group_b not in b.scores:
            continue
        label = _fmt_key(group_a, group_b)
        refused = [ka for ka, _ in members if ka in refused_tasks]
        if refused:
            comparison.refused.append(f"{label}: refused, as its subtask(s) {', '.join(refused)} were")
            continue
        metrics = [m for m in a.scores[group_a] if not m.endswith("_stderr") and m in b.scores[group_b]]
        for metric in metrics:
            if not all(metric in task_diffs.get(p, {}) for p in members):
                continue
            diffs = [task_diffs[p][metric] for p in members]
            est, se, lo, hi, p = stratified_paired_t(diffs, alpha)
            a_val = float(np.mean([task_means[m][metric][0] for m in members]))
            b_val = float(np.mean([task_means[m][metric][1] for m in members]))
            higher = next(r.higher_is_better for r in comparison.rows if r.task == members[0][0] and r.metric == metric)
            rows.append(Row(group_a, metric, int(sum(len(d) for d in diffs)), a_val, b_val, est, lo, hi,
                            f"stratified paired t ({len(members)} tasks)", p, mde=mde_from_se(se, alpha),
                            higher_is_better=higher, task_b=group_b if group_b != group_a else None))
    return rows


# ---------------------------------------------------------------- output


def _num(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"


def _signed(v: float | None) -> str:
    return "-" if v is None else ("+" if v > 0 else "") + _num(v)


def _pval(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


HEADER = ("Task", "Metric", "n", "A", "B", "B-A", "95% CI of B-A", "Test", "p", "p (Holm)", "MDE80", "Verdict")


def table_rows(comparison: Comparison) -> list[tuple[str, ...]]:
    out = []
    for r in comparison.rows:
        task = r.task if not r.task_b else f"{r.task} vs {r.task_b.rsplit('|', 1)[1]}-shot"
        ci = "-" if r.ci_low is None else f"[{_signed(r.ci_low)}, {_signed(r.ci_high)}]"
        test = r.test + (f" (b={r.discordant[0]}, c={r.discordant[1]})" if r.discordant else "")
        out.append((task, r.metric, str(r.n), _num(r.a), _num(r.b), _signed(r.diff), ci, test, _pval(r.p),
                    _pval(r.p_holm), _num(r.mde), r.verdict))
    return out


def _footer(comparison: Comparison) -> list[str]:
    lines = [f"refused: {line}" for line in comparison.refused] + [f"note: {line}" for line in comparison.notes]
    lines.append(
        f"Verdict: Holm-adjusted p < {comparison.alpha:g} over the {sum(r.p is not None for r in comparison.rows)} "
        "rows. b = docs A got right and B wrong, c = the reverse. MDE80: smallest |B-A| this n detects "
        f"with 80% power at alpha {comparison.alpha:g}"
        + (" ('-': the runs agree on every doc, so no spread to size it by)." if any(
            r.mde is None and r.discordant == [0, 0] for r in comparison.rows) else ".")
    )
    return lines


def format_text(comparison: Comparison) -> str:
    rows = [HEADER, *table_rows(comparison)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = [f"A: {comparison.a['label']}  ({comparison.a['results']})",
             f"B: {comparison.b['label']}  ({comparison.b['results']})", ""]
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    body.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + body + [""] + _footer(comparison))


def format_markdown(comparison: Comparison) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [f"**A**: `{comparison.a['label']}` ({comparison.a['results']})  ",
             f"**B**: `{comparison.b['label']}` ({comparison.b['results']})", "",
             "| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in table_rows(comparison)]
    return "\n".join(lines + [""] + [f"- {cell(line)}" for line in _footer(comparison)]) + "\n"


def format_json(comparison: Comparison) -> str:
    return json.dumps(comparison.to_dict(), indent=2)
