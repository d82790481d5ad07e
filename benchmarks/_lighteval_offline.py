"""Run lighteval offline against a local hub mirror (run with lighteval's own python).

    python _lighteval_offline.py --mirror ROOT -- accelerate "model_name=DIR,..." "leaderboard|truthfulqa:mc|0"

Reuses `_lm_eval_offline.install`, which replaces `datasets.load_dataset` before lighteval
imports it. lighteval 0.13 downloads `tinyBenchmarks.pkl` when its task table is built;
offline an empty file in its tasks folder is enough (created here when missing).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _lm_eval_offline import install  # noqa: E402


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", required=True, help="root of the hub mirror")
    parser.add_argument("lighteval_args", nargs=argparse.REMAINDER, help="arguments for lighteval (after --)")
    args = parser.parse_args(argv)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    install(os.path.abspath(args.mirror))
    import importlib.util

    tasks_dir = os.path.join(os.path.dirname(importlib.util.find_spec("lighteval").origin), "tasks", "tasks")
    pkl = os.path.join(tasks_dir, "tinyBenchmarks.pkl")
    if not os.path.exists(pkl):
        open(pkl, "wb").close()
    from lighteval.__main__ import app

    rest = args.lighteval_args[1:] if args.lighteval_args[:1] == ["--"] else args.lighteval_args
    sys.argv = ["lighteval", *rest]
    app()


if __name__ == "__main__":
    main(sys.argv[1:])
