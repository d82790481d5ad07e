"""Speed of our `endpoint` backend against lm-eval's `local-completions`, one vLLM OpenAI server.

    python benchmarks/compare_endpoint.py --model_dir SMOLLM2_DIR --data_dir HUB_MIRROR \\
        --vllm_python VLLM_VENV/bin/python [--base_url http://127.0.0.1:8011/v1] \\
        [--pairs 3] [--mc_limit 100] [--gen_limit 16] [--out DIR]

Both harnesses send the same rows (multiple choice with multi-token choices, `mc`: our
`leaderboard|arc:challenge|0|0` and lm-eval's `arc_challenge`; with one-letter choices, `mmlu`:
three MMLU subjects 5-shot, `--mc_limit` rows each; generation, `gen`: our `lighteval|gsm8k_cot|8|0`
and lm-eval's `gsm8k_cot`; the pairs `compare_harnesses.py` uses) to the same server, without a response cache, alternating who
goes first in each pair. Each run's wall time (process start to exit, model loading and task
building included) is recorded; the table gives the medians, lm-eval / ours, and each side's scores.

Without `--base_url` the script starts vLLM's server (`--vllm_python -m
vllm.entrypoints.openai.api_server`, fp32, eager; `VLLM_CPU_KVCACHE_SPACE` defaults to 1) on
`--port`, waits until it answers, warms it up with one request and stops it at the end. lm-eval
runs from `--lm_eval_python` (default: `--vllm_python`; `make vllm-bench-env` installs lm-eval
0.4.13 there) through `_lm_eval_offline.py`, which reads the datasets from the mirror.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
MMLU_SUBJECTS = ("anatomy", "astronomy", "college_biology")
# name: (our task, lm-eval task, lm-eval few-shot, {our metric: the same metric in lm-eval's results})
TASKS = {
    "mc": ("leaderboard|arc:challenge|0|0", "arc_challenge", 0, {"acc": "acc,none", "acc_norm": "acc_norm,none"}),
    "mmlu": (",".join(f"leaderboard|mmlu:{s}|5|0" for s in MMLU_SUBJECTS), ",".join(f"mmlu_{s}" for s in MMLU_SUBJECTS),
             5, {"acc": "acc,none"}),
    "gen": ("lighteval|gsm8k_cot|8|0", "gsm8k_cot", 8,
            {"exact_match": "exact_match,strict-match", "qem": "exact_match,flexible-extract"}),
}


def start_server(args, log_path: str) -> tuple[subprocess.Popen, str]:
    """vLLM's OpenAI server on `args.model_dir`, healthy and warmed up; (process, base_url)."""
    url = f"http://127.0.0.1:{args.port}/v1"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
           "VLLM_SERVER_DEV_MODE": "1"}  # for /reset_prefix_cache between runs
    cmd = [args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", args.model_dir,
           "--served-model-name", args.served_name, "--host", "127.0.0.1", "--port", str(args.port),
           "--dtype", "float32", "--enforce-eager", "--max-model-len", str(args.max_model_len)]
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_healthy(url, args.served_name, proc)
    except BaseException:
        stop_server(proc)
        raise
    return proc, url


def wait_healthy(url: str, served: str, proc: subprocess.Popen | None = None, limit_s: float = 300) -> None:
    """Poll `/models`, then send one warm-up completion; raise if not answered within `limit_s`."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the vLLM server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url + "/models", timeout=5).read()
            body = json.dumps({"model": served, "prompt": "warm up", "max_tokens": 4}).encode()
            request = urllib.request.Request(url + "/completions", body, {"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=120).read()
            return
        except OSError:
            time.sleep(2)
    raise RuntimeError(f"the server at {url} was not healthy in {limit_s:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ours_command(args, url: str, task: str, limit: int, out: str) -> list[str]:
    model_args = f"base_url={url},model={args.served_name},tokenizer={args.model_dir}"
    if args.ours_args:
        model_args += "," + args.ours_args
    return [args.ours_python, "-m", "lighteval_like", "endpoint", "--model_args", model_args, "--tasks", task,
            "--max_samples", str(limit), "--no_cache", "--dataset_dir", args.data_dir, "--output_dir", out]


def lm_eval_command(args, url: str, task: str, fewshot: int, limit: int, out: str) -> list[str]:
    model_args = (f"model={args.served_name},base_url={url}/completions,tokenizer={args.model_dir},"
                  f"tokenizer_backend=huggingface,tokenized_requests=True,max_retries=3,"
                  f"max_length={args.max_model_len},{args.lm_eval_args}")
    return [args.lm_eval_python, os.path.join(HERE, "_lm_eval_offline.py"), "--mirror", args.data_dir, "--",
            "--model", "local-completions", "--model_args", model_args, "--tasks", task,
            "--num_fewshot", str(fewshot), "--limit", str(limit), "--batch_size", str(args.lm_eval_batch_size),
            "--output_path", out]


# the server's counters (vLLM's /metrics) that say how much work a run asked of it
WORK = {"prompt tokens computed": 'vllm:prompt_tokens_by_source_total{engine="0",model_name="%s",source="local_compute"}',
        "prompt tokens from cache": 'vllm:prompt_tokens_by_source_total{engine="0",model_name="%s",source="local_cache_hit"}',
        "generated tokens": 'vllm:generation_tokens_total{engine="0",model_name="%s"}'}


FLOOR_TOKENS = 256  # gsm8k_cot's token budget


def decode_floor(url: str, served: str) -> float:
    """Seconds the server takes for one greedy generation of FLOOR_TOKENS tokens with nothing else
    to do (median of 3): its tokens come one decoding step after another, so a run in which a row
    generates that many tokens cannot finish sooner, however its requests are sent."""
    body = json.dumps({"model": served, "prompt": "Question: Natalia sold clips to 48 of her friends.\nAnswer:",
                       "max_tokens": FLOOR_TOKENS, "temperature": 0.0, "ignore_eos": True}).encode()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        request = urllib.request.Request(url + "/completions", body, {"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=600).read()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def server_work(url: str, served: str, pid: int | None) -> dict:
    """The server's work counters so far and, when its process is known, its CPU seconds (all its processes)."""
    text = urllib.request.urlopen(url.rsplit("/v1", 1)[0] + "/metrics", timeout=10).read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    work = {name: float(values.get(key % served, "nan")) for name, key in WORK.items()}
    if pid is not None:
        import psutil  # the main venv has it; only needed for the CPU figure

        root = psutil.Process(pid)
        work["server cpu s"] = sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])
    return work


def reset_prefix_cache(url: str) -> bool:
    """Empty the server's prefix cache (vLLM's /reset_prefix_cache, served with VLLM_SERVER_DEV_MODE=1),
    so that no run reads keys and values an earlier run computed; False where the server has no such
    endpoint (then the table's runs may reuse each other's prefixes)."""
    request = urllib.request.Request(url.rsplit("/v1", 1)[0] + "/reset_prefix_cache", b"", method="POST")
    try:
        urllib.request.urlopen(request, timeout=60).read()
        return True
    except OSError:
        return False


def timed(cmd: list[str], env: dict, log_path: str, server: tuple) -> tuple[float, int, dict]:
    """(wall seconds, exit code, the server's work meanwhile) of one command, its output written to
    `log_path`, the server's prefix cache emptied first."""
    reset = reset_prefix_cache(server[0])
    before = server_work(*server)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.call(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    after = server_work(*server)
    return seconds, code, {**{k: round(after[k] - before[k], 1) for k in after}, "prefix cache reset": reset}


def ours_scoring_seconds(out: str) -> float | None:
    """Our run's scoring time (the rest of its wall time is start-up: imports, tokenizer, self-check, data)."""
    files = sorted(glob.glob(os.path.join(out, "results", "**", "results_*.json"), recursive=True))
    timings = json.load(open(files[-1]))["summary_general"]["timings_seconds"] if files else {}
    return round(sum(v for k, v in timings.items() if k.startswith("scoring")), 2) if timings else None


def mean_scores(per_task: list[dict], metrics) -> dict:
    """Each metric's mean over the run's tasks (one task: its values), rounded."""
    return {m: round(statistics.mean(t[m] for t in per_task), 4) for m in metrics
            if per_task and all(m in t for t in per_task)}


def ours_scores(out: str, metrics) -> dict:
    files = sorted(glob.glob(os.path.join(out, "results", "**", "results_*.json"), recursive=True))
    if not files:
        return {}
    results = json.load(open(files[-1]))["results"]
    return mean_scores([v for k, v in results.items() if k != "all"], metrics)


def lm_eval_scores(out: str, tasks: str, metrics) -> dict:
    files = sorted(glob.glob(os.path.join(out, "**", "results_*.json"), recursive=True))
    if not files:
        return {}
    results = json.load(open(files[-1]))["results"]
    return mean_scores([results.get(t, {}) for t in tasks.split(",")], metrics)


def run_pair(args, server: tuple, name: str, index: int, env: dict) -> dict:
    """One run of each harness on task `name`, the order alternating with `index`."""
    ours_task, lm_task, fewshot, metrics = TASKS[name]
    limit = args.gen_limit if name == "gen" else args.mc_limit
    base, url = os.path.join(args.out, f"{name}-{index}"), server[0]
    runs = {
        "ours": (ours_command(args, url, ours_task, limit, base + "-ours"),
                 lambda: ours_scores(base + "-ours", metrics)),
        "lm-eval": (lm_eval_command(args, url, lm_task, fewshot, limit, base + "-lm-eval"),
                    lambda: lm_eval_scores(base + "-lm-eval", lm_task, metrics.values())),
    }
    order = ["ours", "lm-eval"] if index % 2 == 0 else ["lm-eval", "ours"]
    figures = {}
    for harness in order:
        cmd, scores = runs[harness]
        seconds, code, work = timed(cmd, env, f"{base}-{harness}.log", server)
        figures[harness] = {"seconds": round(seconds, 2), "ok": code == 0, "scores": scores() if code == 0 else {},
                            "server": work}
        if harness == "ours":
            work["ours scoring s"] = ours_scoring_seconds(base + "-ours")
        status = "ok" if code == 0 else f"FAILED (exit {code}, see {base}-{harness}.log)"
        print(f"[{name} #{index}] {harness:8s} {seconds:8.1f} s  {status}  {figures[harness]['scores']}  {work}",
              flush=True)
    return figures


def summarise(name: str, limit: int, pairs: list[dict]) -> dict:
    """Medians over the successful runs, lm-eval / ours, the last successful scores and whether they agree."""
    row = {"task": name, "limit": limit, "runs": pairs}
    for harness in ("ours", "lm-eval"):
        ok = [p[harness] for p in pairs if p[harness]["ok"]]
        row[harness] = statistics.median(r["seconds"] for r in ok) if ok else None
        row[harness + " scores"] = ok[-1]["scores"] if ok else {}
        row[harness + " server"] = {k: round(statistics.median(r["server"][k] for r in ok), 2) for k in ok[0]["server"]
                                    if all(isinstance(r["server"].get(k), float) for r in ok)} if ok else {}
    row["ratio"] = round(row["lm-eval"] / row["ours"], 2) if row["ours"] and row["lm-eval"] else None
    row["prefix cache reset before every run"] = all(p[h]["server"]["prefix cache reset"] for p in pairs for h in p)
    ours, theirs = row["ours scores"], row["lm-eval scores"]
    row["same scores"] = all(abs(ours[k] - theirs[v]) < 1e-4 for k, v in TASKS[name][3].items()
                             if k in ours and v in theirs) if ours and theirs else None
    return row


def print_table(rows: list[dict]) -> None:
    print(f"\n{'task (ours / lm-eval)':46s} {'n':>4s} {'ours s':>7s} {'lm-eval s':>9s} {'lm/ours':>7s} {'same':>5s}"
          "  scores (ours | lm-eval)")
    for row in rows:
        ours, lm, ratio = (f"{row[k]:.2f}" if row[k] is not None else "-" for k in ("ours", "lm-eval", "ratio"))
        task = f"{TASKS[row['task']][0]} / {TASKS[row['task']][1]}"
        print(f"{task:46s} {row['limit']:4d} {ours:>7s} {lm:>9s} {ratio:>7s} {str(row['same scores']):>5s}"
              f"  {row['ours scores']} | {row['lm-eval scores']}")
    print("\nwhere the time goes (medians; the server's work during each run, from its /metrics and CPU time; its prefix "
          f"cache emptied before every run: {all(r['prefix cache reset before every run'] for r in rows)}):")
    for row in rows:
        for harness in ("ours", "lm-eval"):
            print(f"  {row['task']:4s} {harness:8s} wall {row[harness] or 0:7.2f} s  {row[harness + ' server']}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base_url", help="a running server's /v1 URL; without it the script starts one")
    parser.add_argument("--model_dir", required=True, help="the served model's folder (its tokenizer too)")
    parser.add_argument("--served_name", default="smollm2")
    parser.add_argument("--data_dir", default=os.environ.get("LIGHTEVAL_LIKE_DATA_DIR"), help="the hub mirror")
    parser.add_argument("--vllm_python", default=os.environ.get("VLLM_PYTHON"))
    parser.add_argument("--lm_eval_python", default=os.environ.get("LM_EVAL_PYTHON"))
    parser.add_argument("--ours_python", default=sys.executable)
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--server_pid", type=int, help="with --base_url: the server's process, for its CPU seconds")
    parser.add_argument("--max_model_len", type=int, default=2048)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--mc_limit", type=int, default=100)
    parser.add_argument("--gen_limit", type=int, default=16)
    parser.add_argument("--tasks", default="mc,mmlu,gen", help="comma-separated: mc, mmlu, gen")
    parser.add_argument("--ours_args", default="concurrent_requests=8,prompts_per_request=8",
                        help="extra model args of our endpoint backend")
    parser.add_argument("--lm_eval_args", default="num_concurrent=8", help="extra local-completions model args")
    parser.add_argument("--lm_eval_batch_size", default="8")
    parser.add_argument("--out", default=None, help="run folders, logs and summary.json (default: a temp dir)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if not args.data_dir:
        sys.exit("give --data_dir or set LIGHTEVAL_LIKE_DATA_DIR")
    args.lm_eval_python = args.lm_eval_python or args.vllm_python
    if not args.lm_eval_python or (not args.base_url and not args.vllm_python):
        sys.exit("give --vllm_python (or VLLM_PYTHON) and/or --lm_eval_python (or LM_EVAL_PYTHON)")
    args.model_dir, args.data_dir = os.path.abspath(args.model_dir), os.path.abspath(args.data_dir)
    args.out = os.path.abspath(args.out or tempfile.mkdtemp(prefix="compare-endpoint-"))
    os.makedirs(args.out, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "LIGHTEVAL_LIKE_DATA_DIR": args.data_dir}
    server, url = (None, args.base_url.rstrip("/")) if args.base_url else start_server(
        args, os.path.join(args.out, "server.log"))
    watched = (url, args.served_name, server.pid if server is not None else args.server_pid)
    try:
        if server is None:
            wait_healthy(url, args.served_name, limit_s=60)
        rows = [summarise(name, args.gen_limit if name == "gen" else args.mc_limit,
                          [run_pair(args, watched, name, i, env) for i in range(args.pairs)])
                for name in args.tasks.split(",")]
        floor = decode_floor(url, args.served_name) if "gen" in args.tasks.split(",") else None
    finally:
        if server is not None:
            stop_server(server)
    print_table(rows)
    if floor is not None:
        print(f"\none greedy generation of {FLOOR_TOKENS} tokens, alone on the server: {floor:.2f} s (median of 3); a run "
              f"with a row that generates {FLOOR_TOKENS} tokens cannot take less, whatever the client")
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump({"args": vars(args), "rows": rows, "decode floor s": floor}, f, indent=1)
    print(f"\nruns, logs and summary.json in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
