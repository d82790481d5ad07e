"""Misbehaving servers and faults, side by side, as figures (the endpoint issue's must-show 2 and 3):

    python benchmarks/endpoint_faults.py --model_dir SMOLLM2_DIR --data_dir HUB_MIRROR \\
        --lm_eval_python VLLM_VENV/bin/python [--limit 20] [--parts misbehaving,faults] [--out DIR]

misbehaving: `tests/endpoint_server.py` (the model in fp32 under transformers, over HTTP on 127.0.0.1)
    served well, then in each of its misbehaving modes (shifted log-probabilities, no echo, a BOS
    added to token prompts, a BOS added to text prompts, the seed ignored). Our `lighteval-like
    endpoint` runs against each: refused at start-up with one line and a non-zero exit, no results
    written. lm-eval's `local-completions` runs the same rows against the well-behaved and the
    shifted server: its score on the shifted one is printed next to the correct one.
faults: a clean run; the same run through `tests/fault_proxy.py` (its own process: 429 with
    Retry-After, 500, resets and truncated bodies on 20% of requests, seeded) with the same numbers;
    a run killed with SIGKILL midway (once a faultless proxy has answered half its requests),
    then rerun: the finished requests come from the response cache (its hits).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from compare_endpoint import lm_eval_command, lm_eval_scores, ours_command, ours_scores

TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
MC = ("leaderboard|arc:challenge|0|0", "arc_challenge", {"acc": "acc,none", "acc_norm": "acc_norm,none"})
SAMPLED = ("leaderboard|gsm8k|0|0", ["--gen_kwargs", "temperature=0.8"])  # for the seed check
MODES = ("shift", "no_echo", "bos", "text_bos", "seed_ignored")


def start(script: str, *args: str) -> tuple[subprocess.Popen, str]:
    """`tests/<script>` in its own process; (process, the base URL it prints first)."""
    proc = subprocess.Popen([sys.executable, os.path.join(TESTS, script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        proc.kill()
        raise RuntimeError(f"tests/{script} did not start (exit {proc.wait()})")
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def serve(args, faults: str = "") -> tuple[subprocess.Popen, str]:
    return start("endpoint_server.py", args.model_dir, "--model_id", args.served_name, "--faults", faults)


def results_of(out: str) -> dict:
    files = sorted(glob.glob(os.path.join(out, "results", "**", "results_*.json"), recursive=True))
    return json.load(open(files[-1])) if files else {}


def ours(args, url: str, out: str, task: str = MC[0], flags: tuple = (), cache: bool = False) -> dict:
    """Our CLI on `task`: exit code, seconds, its last stderr line, scores and results."""
    cmd = [c for c in ours_command(args, url, task, args.limit, out) if not cache or c != "--no_cache"]
    start_s = time.perf_counter()
    done = subprocess.run([*cmd, *flags], env=args.env, capture_output=True, text=True)
    lines = done.stderr.strip().splitlines()
    return {"exit": done.returncode, "seconds": round(time.perf_counter() - start_s, 1),
            "line": lines[-1] if done.returncode and lines else "", "scores": ours_scores(out, MC[2]),
            "results": results_of(out)}


def lm_eval(args, url: str, out: str) -> dict:
    done = subprocess.run(lm_eval_command(args, url, MC[1], 0, args.limit, out), env=args.env, capture_output=True,
                          text=True)
    return lm_eval_scores(out, MC[1], MC[2].values()) if done.returncode == 0 else {"exit": done.returncode}


def misbehaving(args) -> list[dict]:
    """Each mode: our run (refused, or the well-behaved scores) and lm-eval's on the plain and shifted servers."""
    rows = []
    for mode in ("", *MODES):
        proc, url = serve(args, mode)
        try:
            task, flags = SAMPLED if mode == "seed_ignored" else (MC[0], ())
            row = {"mode": mode or "well-behaved", **ours(args, url, os.path.join(args.out, f"ours-{mode}"), task,
                                                            flags)}
            row["results written"] = bool(row.pop("results"))
            if mode in ("", "shift"):
                row["lm-eval"] = lm_eval(args, url, os.path.join(args.out, f"lm-eval-{mode}"))
        finally:
            stop(proc)
        print(f"{row['mode']:13s} ours exit {row['exit']} {row['scores'] or row['line']}"
              + (f"  | lm-eval {row['lm-eval']}" if "lm-eval" in row else ""), flush=True)
        rows.append(row)
    return rows


def proxy_stats(url: str) -> dict:
    with urllib.request.urlopen(url.rsplit("/v1", 1)[0] + "/fault_proxy/stats", timeout=10) as answer:
        return json.load(answer)


def through_proxy(args, url: str, clean: dict) -> dict:
    """The clean run's rows through the fault proxy (20% faults): the same numbers."""
    proxy, proxied = start("fault_proxy.py", url, "--rate", str(args.fault_rate), "--seed", str(args.seed))
    try:
        run = ours(args, proxied, os.path.join(args.out, "faults-proxied"))
        injected = proxy_stats(proxied)["injected"]
    finally:
        stop(proxy)
    scoring = run["results"].get("summary_general", {}).get("scoring", {})
    return {"exit": run["exit"], "seconds": run["seconds"], "injected": injected, "retries": scoring.get("retries"),
            "scores": run["scores"], "same numbers": run["results"].get("results") == clean["results"].get("results")}


def killed_and_rerun(args, url: str, clean: dict) -> dict:
    """A cached run killed with SIGKILL once a faultless proxy answered half its requests,
    then rerun through it (the cache keys the base URL)."""
    requests = clean["results"]["summary_general"]["scoring"]["requests"]
    proxy, proxied = start("fault_proxy.py", url, "--rate", "0")
    try:
        out = os.path.join(args.out, "faults-killed")
        cmd = [c for c in ours_command(args, proxied, MC[0], args.limit, out) if c != "--no_cache"]
        run = subprocess.Popen(cmd, env=args.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while proxy_stats(proxied)["answered"] < 4 + requests // 2 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        run.send_signal(signal.SIGKILL)
        code = run.wait()
        answered = proxy_stats(proxied)["answered"]
        rerun = ours(args, proxied, os.path.join(args.out, "faults-rerun"), cache=True)
    finally:
        stop(proxy)
    summary = rerun["results"].get("summary_general", {})
    return {"killed exit": code, "answered before the kill": answered, "rerun exit": rerun["exit"],
            "cache": summary.get("response_cache"), "rerun requests": summary.get("scoring", {}).get("requests"),
            "same numbers": rerun["results"].get("results") == clean["results"].get("results")}


def faults(args) -> dict:
    """A clean run, the same through the fault proxy, a killed run and its rerun (one prompt a request,
    so that 20% of requests are many faults)."""
    args.ours_args = "prompts_per_request=1"
    proc, url = (None, args.base_url) if args.base_url else serve(args)
    try:
        clean = ours(args, url, os.path.join(args.out, "faults-clean"))
        figures = {"clean": {"exit": clean["exit"], "seconds": clean["seconds"], "scores": clean["scores"],
                             "requests": clean["results"]["summary_general"]["scoring"]["requests"]}}
        figures["through the proxy"] = through_proxy(args, url, clean)
        figures["killed, then rerun"] = killed_and_rerun(args, url, clean)
    finally:
        if proc is not None:
            stop(proc)
    for name, values in figures.items():
        print(f"{name:19s} {values}", flush=True)
    return figures


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True, help="the served model's folder (its tokenizer too)")
    parser.add_argument("--data_dir", default=os.environ.get("LIGHTEVAL_LIKE_DATA_DIR"), help="the hub mirror")
    parser.add_argument("--lm_eval_python", default=os.environ.get("LM_EVAL_PYTHON"), help="a python with lm-eval")
    parser.add_argument("--base_url", help="faults: a running server (e.g. vLLM) instead of tests/endpoint_server.py")
    parser.add_argument("--served_name", default="smollm2")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--parts", default="misbehaving,faults")
    parser.add_argument("--fault_rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="run folders and summary.json (default: a temp dir)")
    args = parser.parse_args()
    # what compare_endpoint's command builders read
    args.ours_python, args.ours_args, args.max_model_len = sys.executable, "", 2048
    args.lm_eval_args, args.lm_eval_batch_size = "num_concurrent=8", "8"
    return args


def main() -> int:
    args = parse_args()
    if not args.data_dir or ("misbehaving" in args.parts and not args.lm_eval_python):
        sys.exit("give --data_dir (or LIGHTEVAL_LIKE_DATA_DIR) and --lm_eval_python (or LM_EVAL_PYTHON)")
    args.model_dir, args.data_dir = os.path.abspath(args.model_dir), os.path.abspath(args.data_dir)
    args.out = os.path.abspath(args.out or tempfile.mkdtemp(prefix="endpoint-faults-"))
    args.env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "LIGHTEVAL_LIKE_DATA_DIR": args.data_dir,
                "LIGHTEVAL_LIKE_CACHE": os.path.join(args.out, "response-cache")}
    summary = {}
    if "misbehaving" in args.parts:
        summary["misbehaving"] = misbehaving(args)
    if "faults" in args.parts:
        summary["faults"] = faults(args)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"\nruns and summary.json in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
