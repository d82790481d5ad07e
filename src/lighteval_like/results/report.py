"""`lighteval-like report RUN... -o report.html`: one self-contained HTML file for one or several
runs. Everything is inline (CSS, script, data, plots as SVG): opening it makes no network request.

Sections: the runs; the scores with 95% confidence intervals (value +- 1.96 * the stderr each run
recorded); a bar chart per task with error bars across runs; when the runs are checkpoints of one
model, each task's scores over the checkpoints (line plots); and a per-sample browser of the
details (search, filter to wrong answers or to samples where runs disagree).

Plots are drawn by matplotlib as SVG (text kept as text): static, vector, a few KiB each, with no
script library to inline (plotly's bundle alone is ~3.5 MiB per file) and nothing to run when
the page opens.

Which value is best, the arrows and "(lower is better)" follow each metric's direction as the
results files describe it (`config_tasks.<task>.metric_info`), else as built in (older files).

Runs are checkpoints of one model when `--checkpoints` says so (command-line order), or, without
it, when every run has the same model name, model arguments, tasks and evaluation settings (the
same evaluation repeated on a changing model), ordered by `config_general.checkpoint_step` when
every run records one, else by time.
"""

from __future__ import annotations

import html
import io
import json
import math
import os
import re
from datetime import datetime

from lighteval_like.results.runs import Run, builtin_metric_info, group_members, group_of

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
Z95 = 1.959963984540054
SAME_EVALUATION = ("max_samples", "num_fewshot_seeds", "seed", "use_chat_template", "system_prompt")


# ---------------------------------------------------------------- data


def _metrics_of(scores: dict) -> list[str]:
    return [m for m, v in scores.items() if not m.endswith("_stderr") and isinstance(v, (int, float))]


def task_order(runs: list[Run]) -> list[str]:
    """Every task key of the runs, first-seen order, each group average after its subtasks."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.scores if k not in keys]
    plain = [k for k in keys if group_of(k) is None]
    groups = [k for k in keys if group_of(k) is not None]
    for group in groups:
        in_group = set(group_members(group, plain))
        members = [i for i, k in enumerate(plain) if k in in_group]
        plain.insert(members[-1] + 1 if members else len(plain), group)
    return plain


def _higher_is_better(runs: list[Run], task_key: str, metric: str) -> bool:
    """The metric's direction as the first run whose results file describes it says, else as built in."""
    for run in runs:
        described = run.described_metric(task_key, metric)
        if described:
            return described[1]
    return builtin_metric_info(task_key, metric)[1]


def checkpoint_order(runs: list[Run], forced: bool | None) -> list[Run] | None:
    """The runs as checkpoints of one model, in order, or None when they are not."""
    if len(runs) < 2 or forced is False:
        return None
    steps = [r.data.get("config_general", {}).get("checkpoint_step") for r in runs]
    if forced:
        return list(runs)

    def setup(run: Run):
        cfg = run.data.get("config_general", {})
        return (run.model_name, json.dumps(cfg.get("model_args"), sort_keys=True, default=str),
                tuple(cfg.get(k) for k in SAME_EVALUATION), tuple(sorted(run.scores)))

    if len({setup(r) for r in runs}) != 1:
        return None
    if all(isinstance(s, (int, float)) for s in steps):
        return [r for _, r in sorted(zip(steps, runs), key=lambda x: x[0])]
    return sorted(runs, key=lambda r: r.timestamp)


def _checkpoint_labels(runs: list[Run]) -> list[str]:
    steps = [r.data.get("config_general", {}).get("checkpoint_step") for r in runs]
    if all(isinstance(s, (int, float)) for s in steps):
        return [str(s) for s in steps]
    return [r.label for r in runs]


# ---------------------------------------------------------------- plots


def _svg(fig) -> str:
    """The figure as inline SVG: no XML prolog, no metadata, ids unique in the page."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    _svg.count = getattr(_svg, "count", 0) + 1
    prefix = f"f{_svg.count}-"
    for ident in set(re.findall(r'id="([^"]+)"', svg)):
        svg = svg.replace(f'id="{ident}"', f'id="{prefix}{ident}"').replace(f"#{ident})", f"#{prefix}{ident})")
        svg = svg.replace(f'href="#{ident}"', f'href="#{prefix}{ident}"')
    return svg


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "lighteval-like", "font.size": 9,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def bar_chart(task: str, runs: list[Run], colors: list[str]) -> str | None:
    plt = _matplotlib()
    present = [(i, r) for i, r in enumerate(runs) if task in r.scores]
    metrics: list[str] = []
    for _, r in present:
        metrics += [m for m in _metrics_of(r.scores[task]) if m not in metrics]
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(1.2 + 0.45 * len(present) * len(metrics) + 0.9 * len(metrics), 2.6),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        xs, ys, errs, cs, names = [], [], [], [], []
        for x, (i, r) in enumerate(present):
            value = r.scores[task].get(metric)
            if value is None:
                continue
            stderr = r.scores[task].get(f"{metric}_stderr") or 0.0
            xs.append(x)
            ys.append(value)
            errs.append(Z95 * stderr)
            cs.append(colors[i])
            names.append(str(i + 1))
        ax.bar(xs, ys, color=cs, width=0.7, yerr=errs, capsize=3, error_kw={"elinewidth": 1, "ecolor": "#333"})
        ax.set_title(metric + ("" if _higher_is_better(runs, task, metric) else " (lower is better)"), fontsize=9)
        ax.set_xticks(xs)
        ax.set_xticklabels(names, fontsize=8)
        ax.set_xlabel("run", fontsize=8)
        if all(0 <= y <= 1 for y in ys):
            ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(task, fontsize=9, y=1.02)
    return _svg(fig)


def line_chart(task: str, checkpoints: list[Run], labels: list[str]) -> str | None:
    plt = _matplotlib()
    metrics: list[str] = []
    for r in checkpoints:
        if task in r.scores:
            metrics += [m for m in _metrics_of(r.scores[task]) if m not in metrics]
    if not metrics:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 2.8))
    for k, metric in enumerate(metrics):
        xs = [i for i, r in enumerate(checkpoints) if metric in r.scores.get(task, {})]
        ys = [checkpoints[i].scores[task][metric] for i in xs]
        err = [Z95 * (checkpoints[i].scores[task].get(f"{metric}_stderr") or 0.0) for i in xs]
        color = PALETTE[k % len(PALETTE)]
        ax.plot(xs, ys, marker="o", color=color, label=metric)
        ax.fill_between(xs, [y - e for y, e in zip(ys, err)], [y + e for y, e in zip(ys, err)], color=color, alpha=0.15)
    ax.set_xticks(range(len(checkpoints)))
    ax.set_xticklabels(labels, rotation=30 if max(len(x) for x in labels) > 8 else 0, ha="right", fontsize=8)
    ax.set_xlabel("checkpoint")
    ax.set_title(task, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return _svg(fig)


# ---------------------------------------------------------------- per-sample data


def _browser_keys(runs: list[Run]) -> dict[str, dict[int, str]]:
    """{browser task: {run index: task key}}: one task across runs whatever its few-shot count,
    unless a run holds it twice (then each key on its own)."""
    by_name: dict[str, dict[int, list[str]]] = {}
    for i, run in enumerate(runs):
        for key in run.scores:
            if group_of(key) is not None or not run.has_details(key):
                continue
            name = key.rsplit("|", 1)[0] if key.count("|") >= 2 else key
            by_name.setdefault(name, {}).setdefault(i, []).append(key)
    out: dict[str, dict[int, str]] = {}
    for name, per_run in by_name.items():
        if all(len(keys) == 1 for keys in per_run.values()):
            out[name] = {i: keys[0] for i, keys in per_run.items()}
        else:
            for i, keys in per_run.items():
                for key in keys:
                    out.setdefault(key, {})[i] = key
    return out


def _json_safe(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def _first_seed(rows: list[dict]) -> dict[int, dict]:
    """{doc_index: row} keeping each doc's first few-shot seed (the browser shows one draw)."""
    out: dict[int, dict] = {}
    for row in rows:
        out.setdefault(int(row["doc_index"]), row)
    return out


def sample_data(runs: list[Run], max_per_task: int) -> list[dict]:
    tasks = []
    for name, keys in _browser_keys(runs).items():
        details = {i: _first_seed(runs[i].details(k)) for i, k in keys.items()}
        doc_ids = sorted(set().union(*details.values()))
        primary = None
        for i, k in keys.items():
            for metric in _metrics_of(runs[i].scores[k]):
                values = [r["metrics"].get(metric) for r in details[i].values()]
                if values and all(v in (0, 1, 0.0, 1.0) for v in values):
                    primary = metric
                    break
            if primary:
                break
        docs = []
        for d in doc_ids[:max_per_task] if max_per_task else []:
            first = next(details[i][d] for i in keys if d in details[i])
            per_run = {}
            for i in keys:
                row = details[i].get(d)
                if row is None:
                    continue
                prompts = list(dict.fromkeys(row.get("prompts") or [row.get("prompt")]))
                ok = row["metrics"].get(primary) if primary else None
                per_run[str(i)] = {
                    "prompts": prompts, "ll": row.get("loglikelihoods") or [], "gen": row.get("generation"),
                    "pred": row.get("prediction"), "m": row["metrics"], "ok": None if ok is None else int(ok == 1),
                    "shots": row.get("num_fewshot"),
                }
            # A prompt shared by every run is stored once.
            shared = {json.dumps(v["prompts"]) for v in per_run.values()}
            doc = {"i": d, "c": first.get("choices") or [], "g": first.get("gold_index") or [], "r": per_run}
            if first.get("images"):
                doc["img"] = [image["thumbnail"] for image in json.loads(first["images"])]
            if len(shared) == 1:
                doc["p"] = next(iter(per_run.values()))["prompts"]
                for v in per_run.values():
                    del v["prompts"]
            docs.append(doc)
        tasks.append({"name": name, "keys": {str(i): k for i, k in keys.items()}, "primary": primary,
                      "total": len(doc_ids), "docs": docs})
    return _json_safe(tasks)


# ---------------------------------------------------------------- page


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.2f}"


def scores_table(runs: list[Run], colors: list[str]) -> str:
    head = "".join(f'<th><span class="chip" style="background:{colors[i]}"></span>{i + 1}. {html.escape(r.label)}</th>'
                   for i, r in enumerate(runs))
    rows = []
    for task in task_order(runs):
        metrics: list[str] = []
        for r in runs:
            metrics += [m for m in _metrics_of(r.scores.get(task, {})) if m not in metrics]
        for j, metric in enumerate(metrics):
            values = [r.scores.get(task, {}).get(metric) for r in runs]
            present = [v for v in values if v is not None]
            higher = _higher_is_better(runs, task, metric)
            best = (max if higher else min)(present) if len(present) > 1 else None
            cells = []
            for r, v in zip(runs, values):
                if v is None:
                    cells.append("<td class=na>–</td>")
                    continue
                stderr = r.scores[task].get(f"{metric}_stderr")
                ci = f' <span class="ci">± {_fmt(Z95 * stderr)}</span>' if isinstance(stderr, (int, float)) else ""
                cls = ' class="best"' if best is not None and v == best and present.count(best) == 1 else ""
                cells.append(f"<td{cls}>{_fmt(v)}{ci}</td>")
            task_cell = f'<td rowspan="{len(metrics)}" class="task">{html.escape(task)}</td>' if j == 0 else ""
            arrow = "↑" if higher else "↓"
            rows.append(f'<tr class="score-row" data-task="{html.escape(task)}" data-metric="{html.escape(metric)}">'
                        f'{task_cell}<td>{html.escape(metric)} <span class="dir">{arrow}</span></td>{"".join(cells)}</tr>')
    return (f'<table id="scores"><thead><tr><th>Task</th><th>Metric</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def runs_table(runs: list[Run], colors: list[str]) -> str:
    rows = []
    for i, r in enumerate(runs):
        cfg = r.data.get("config_general", {})
        args = cfg.get("model_args") or {}
        dtype = args.get("dtype") or cfg.get("model_dtype") or ""
        details = sum(r.has_details(k) for k in r.scores if group_of(k) is None)
        tasks = [k for k in r.scores if group_of(k) is None]
        step = cfg.get("checkpoint_step")
        rows.append(
            f'<tr class="run-row"><td><span class="chip" style="background:{colors[i]}"></span>{i + 1}</td>'
            f"<td>{html.escape(r.label)}</td><td>{html.escape(r.model_name)}</td><td>{html.escape(str(dtype))}</td>"
            f"<td>{'' if step is None else html.escape(str(step))}</td>"
            f"<td>{html.escape(cfg.get('start_time', r.timestamp) or '')}</td>"
            f"<td>{len(tasks)} ({details} with details)</td><td class=path>{html.escape(r.results_path)}</td></tr>"
        )
    return ('<table id="runs"><thead><tr><th>#</th><th>Run</th><th>Model</th><th>dtype</th><th>Step</th>'
            f'<th>Started</th><th>Tasks</th><th>Results file</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def build_html(runs: list[Run], title: str = "Evaluation report", checkpoints: bool | None = None,
               max_samples_per_task: int = 500) -> str:
    from lighteval_like import __version__

    colors = [PALETTE[i % len(PALETTE)] for i in range(len(runs))]
    bars = []
    for task in task_order(runs):
        svg = bar_chart(task, runs, colors)
        if svg:
            bars.append(f'<figure class="plot bar-plot" data-task="{html.escape(task)}">{svg}</figure>')
    curves_html = _curves_section(checkpoint_order(runs, checkpoints))
    samples = sample_data(runs, max_samples_per_task)
    legend = "".join(f'<span class="legend"><span class="chip" style="background:{c}"></span>{i + 1}. '
                     f"{html.escape(r.label)}</span>" for i, (r, c) in enumerate(zip(runs, colors)))
    payload = json.dumps({"runs": [{"label": r.label, "color": c} for r, c in zip(runs, colors)], "tasks": samples},
                         ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    generated = datetime.now().isoformat(timespec="seconds")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>{html.escape(title)}</title>
<style>{CSS}</style></head>
<body>
<header><h1>{html.escape(title)}</h1>
<p class=note>{len(runs)} run(s) · generated {generated} by lighteval-like {html.escape(__version__)} · self-contained: no network access needed.</p></header>
<section id="runs-section"><h2>Runs</h2>{runs_table(runs, colors)}</section>
<section id="scores-section"><h2>Scores</h2>
<p class=note>Value ± half-width of its 95% confidence interval (1.96 × the run's standard error, unpaired).
Best value of a row in bold when several runs have it. For a paired test of two runs use <code>lighteval-like compare A B</code>.</p>
{scores_table(runs, colors)}</section>
<section id="bars"><h2>Per task</h2><p class=note>{legend}<br>Bars numbered by run; error bars: 95% CI.</p>
<div class="grid">{"".join(bars)}</div></section>
{curves_html}
<section id="samples"><h2>Samples</h2>
<div class="controls">
<label>Task <select id="task-select"></select></label>
<label>Search <input id="search" type="search" placeholder="text in prompt, choices or generation"></label>
<label>Show <select id="filter"></select></label>
<span id="count"></span></div>
<table id="sample-table"><thead id="sample-head"></thead><tbody id="sample-body"></tbody></table>
<button id="more" type="button">Show more</button>
</section>
<script type="application/json" id="report-data">{payload}</script>
<script>{SCRIPT}</script>
</body></html>
"""


def _curves_section(ordered: list[Run] | None) -> str:
    """The line plots of each task over checkpoints (empty when the runs are no checkpoint series)."""
    if not ordered:
        return ""
    labels = _checkpoint_labels(ordered)
    curves = []
    for task in task_order(ordered):
        svg = line_chart(task, ordered, labels)
        if svg:
            curves.append(f'<figure class="plot line-plot" data-task="{html.escape(task)}">{svg}</figure>')
    order = " → ".join(html.escape(r.label) for r in ordered)
    return (f'<section id="curves"><h2>Over checkpoints</h2><p class=note>Order: {order}. '
            f'Bands: 95% CI.</p><div class="grid">{"".join(curves)}</div></section>')


def write_report(runs: list[Run], output: str, title: str = "Evaluation report", checkpoints: bool | None = None,
                 max_samples_per_task: int = 500) -> int:
    """Write the report; returns its size in bytes."""
    from lighteval_like.results.outputs import atomic_write

    page = build_html(runs, title, checkpoints, max_samples_per_task)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)

    atomic_write(output, write)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(output, 0o666 & ~umask)  # a page to share: readable as any new file (not the temp file's 0600)
    return len(page.encode("utf-8"))


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1280px;padding:0 20px 40px;color:#1d1d1f}
h1{font-size:22px;margin:18px 0 4px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.note{color:#555;font-size:12.5px}code{background:#f2f2f2;padding:0 3px;border-radius:3px}
table{border-collapse:collapse;font-size:13px}th,td{border-bottom:1px solid #e4e4e4;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f6f6;position:sticky;top:0}#scores td:nth-child(n+3){font-variant-numeric:tabular-nums;white-space:nowrap}
td.best{font-weight:700}.ci{color:#777;font-size:12px}.dir{color:#999}.na{color:#bbb}td.task{font-weight:600}
td.path{font-size:11.5px;color:#666;word-break:break-all}
.chip{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:baseline}
.legend{margin-right:14px;white-space:nowrap}
.grid{display:flex;flex-wrap:wrap;gap:10px}.plot{margin:0;border:1px solid #eee;border-radius:6px;padding:4px;background:#fff}
.plot svg{max-width:100%;height:auto}
.controls{display:flex;gap:14px;flex-wrap:wrap;align-items:center;margin-bottom:8px}
.controls input{width:260px}#count{color:#555}
#sample-table{width:100%}#sample-table tr.sample{cursor:pointer}#sample-table tr.sample:hover{background:#f7f9ff}
.ok{color:#1a7f37;font-weight:700}.bad{color:#c62828;font-weight:700}
.snippet{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;color:#333;max-width:520px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.thumb{width:64px;height:auto;margin:0 6px 6px 0;border:1px solid #ccc;image-rendering:pixelated}
tr.detail td{background:#fafafa}pre{white-space:pre-wrap;word-break:break-word;font-size:12px;background:#f4f4f4;padding:8px;border-radius:4px;max-height:320px;overflow:auto;margin:4px 0}
.choices td,.choices th{font-size:12px;padding:2px 8px}.gold{background:#e8f5e9}.argmax{font-weight:700;text-decoration:underline}
button{margin-top:8px}
"""

SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var runs = data.runs, tasks = data.tasks;
  var taskSelect = document.getElementById("task-select"), search = document.getElementById("search");
  var filter = document.getElementById("filter"), head = document.getElementById("sample-head");
  var body = document.getElementById("sample-body"), count = document.getElementById("count");
  var more = document.getElementById("more");
  var shown = 100, PAGE = 100;

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k]; else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { node.appendChild(c); });
    return node;
  }
  function fmt(x) { return (x === null || x === undefined) ? "" : (typeof x === "number" ? x.toFixed(3) : String(x)); }
  function runIds(task) { return Object.keys(task.keys); }

  if (!tasks.length) {
    count.textContent = "No per-sample details in these runs (run with --save_details).";
    [taskSelect, search, filter, more].forEach(function (node) {
      (node.parentNode.tagName === "LABEL" ? node.parentNode : node).style.display = "none";
    });
    return;
  }
  tasks.forEach(function (t, i) {
    taskSelect.appendChild(el("option", {value: String(i), text: t.name + " (" + t.total + " docs)"}));
  });

  function setFilters(task) {
    filter.textContent = "";
    filter.appendChild(el("option", {value: "all", text: "all samples"}));
    if (task.primary) {
      runIds(task).forEach(function (r) {
        filter.appendChild(el("option", {value: "wrong:" + r, text: "wrong in run " + (+r + 1) + " (" + task.primary + " = 0)"}));
      });
    }
    if (runIds(task).length > 1) filter.appendChild(el("option", {value: "disagree", text: "runs disagree"}));
  }

  function text(doc) {
    var parts = [(doc.p || []).join(" "), doc.c.join(" ")];
    Object.keys(doc.r).forEach(function (r) {
      var x = doc.r[r];
      parts.push(x.gen || "", x.pred || "", (x.prompts || []).join(" "));
    });
    return parts.join(" ").toLowerCase();
  }

  function disagree(doc, task) {
    var seen = runIds(task).map(function (r) { var x = doc.r[r]; return x ? JSON.stringify([x.ok, x.pred]) : null; })
      .filter(function (s) { return s !== null; });
    return seen.length > 1 && seen.some(function (s) { return s !== seen[0]; });
  }

  function matches(doc, task) {
    var f = filter.value, q = search.value.trim().toLowerCase();
    if (f.indexOf("wrong:") === 0) { var x = doc.r[f.slice(6)]; if (!x || x.ok !== 0) return false; }
    if (f === "disagree" && !disagree(doc, task)) return false;
    if (q && text(doc).indexOf(q) < 0) return false;
    return true;
  }

  function detail(doc, task, ncols) {
    var cell = el("td", {colspan: String(ncols)});
    var ids = runIds(task).filter(function (r) { return doc.r[r]; });
    (doc.img || []).forEach(function (src) { cell.appendChild(el("img", {src: src, class: "thumb", alt: "image of doc " + doc.i})); });
    if (doc.p) { cell.appendChild(el("div", {text: "Prompt"})); cell.appendChild(el("pre", {class: "prompt", text: doc.p.join("\n---\n")})); }
    ids.forEach(function (r) {
      if (doc.r[r].prompts) {
        cell.appendChild(el("div", {text: "Prompt of run " + (+r + 1) + " (" + doc.r[r].shots + "-shot)"}));
        cell.appendChild(el("pre", {class: "prompt", text: doc.r[r].prompts.join("\n---\n")}));
      }
    });
    if (doc.c.length) {
      var hrow = el("tr", {}, [el("th", {text: "#"}), el("th", {text: "choice"})]);
      ids.forEach(function (r) { hrow.appendChild(el("th", {text: "loglik run " + (+r + 1)})); });
      var table = el("table", {class: "choices"}, [el("thead", {}, [hrow])]);
      var tb = el("tbody");
      doc.c.forEach(function (choice, j) {
        var row = el("tr", {class: doc.g.indexOf(j) >= 0 ? "gold" : ""}, [el("td", {text: String(j) + (doc.g.indexOf(j) >= 0 ? " ✓ gold" : "")}), el("td", {text: JSON.stringify(choice)})]);
        ids.forEach(function (r) {
          var ll = doc.r[r].ll, best = ll.length ? Math.max.apply(null, ll) : null;
          row.appendChild(el("td", {class: ll[j] === best && ll.length ? "argmax" : "", text: ll.length > j ? fmt(ll[j]) : ""}));
        });
        tb.appendChild(row);
      });
      table.appendChild(tb);
      cell.appendChild(table);
    }
    ids.forEach(function (r) {
      var x = doc.r[r];
      if (x.gen !== null && x.gen !== undefined) {
        cell.appendChild(el("div", {text: "Generation of run " + (+r + 1)}));
        cell.appendChild(el("pre", {text: x.gen}));
      }
      cell.appendChild(el("div", {class: "metrics", text: "Metrics of run " + (+r + 1) + ": " + JSON.stringify(x.m)}));
    });
    return el("tr", {class: "detail"}, [cell]);
  }

  function render() {
    var task = tasks[+taskSelect.value], ids = runIds(task);
    head.textContent = "";
    var hrow = el("tr", {}, [el("th", {text: "doc"}), el("th", {text: "prompt (end)"})]);
    ids.forEach(function (r) {
      var chip = el("span", {class: "chip", style: "background:" + runs[+r].color});
      hrow.appendChild(el("th", {}, [chip, document.createTextNode("run " + (+r + 1) + " prediction")]));
    });
    head.appendChild(hrow);
    body.textContent = "";
    var hits = task.docs.filter(function (d) { return matches(d, task); });
    hits.slice(0, shown).forEach(function (doc) {
      var prompt = doc.p ? doc.p[0] : (doc.r[ids[0]] && doc.r[ids[0]].prompts ? doc.r[ids[0]].prompts[0] : "");
      var row = el("tr", {class: "sample", "data-doc": String(doc.i)},
                   [el("td", {text: String(doc.i)}), el("td", {class: "snippet", text: (prompt || "").length > 110 ? "…" + prompt.slice(-110) : (prompt || "")})]);
      ids.forEach(function (r) {
        var x = doc.r[r], td = el("td");
        if (x) {
          if (x.ok !== null) td.appendChild(el("span", {class: x.ok ? "ok" : "bad", text: x.ok ? "✓ " : "✗ "}));
          td.appendChild(document.createTextNode(x.pred === null ? "" : JSON.stringify(x.pred)));
        }
        row.appendChild(td);
      });
      row.addEventListener("click", function () {
        var next = row.nextSibling;
        if (next && next.className === "detail") { body.removeChild(next); return; }
        body.insertBefore(detail(doc, task, ids.length + 2), row.nextSibling);
      });
      body.appendChild(row);
    });
    count.textContent = "showing " + Math.min(shown, hits.length) + " of " + hits.length + " matching (" +
      task.docs.length + " docs in this report" + (task.total > task.docs.length ? ", of " + task.total : "") + ")";
    more.style.display = hits.length > shown ? "" : "none";
  }

  taskSelect.addEventListener("change", function () { shown = PAGE; setFilters(tasks[+taskSelect.value]); render(); });
  filter.addEventListener("change", function () { shown = PAGE; render(); });
  search.addEventListener("input", function () { shown = PAGE; render(); });
  more.addEventListener("click", function () { shown += PAGE; render(); });
  setFilters(tasks[0]);
  render();
})();
"""
