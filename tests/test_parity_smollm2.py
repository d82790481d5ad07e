"""SmolLM2-135M-Instruct still scores exactly what lm-evaluation-harness 0.4.13 scored.

tests/data/reference_smollm2*.json hold our per-choice loglikelihoods and metrics on the first
docs of several tasks: 0-shot on the shared mirror (`reference_smollm2.json`), with few-shot
examples (`_fewshot`) and under the chat template (`_chat`). Each was written by
`benchmarks/compare_lm_eval.py --write_reference` in a run that found every value within 1e-4 of
lm-eval's and every metric equal, so matching the files means matching lm-eval without needing
lm-eval installed. The few-shot and chat files were written with `--stand_in_train` (a linked
mirror whose missing train splits stand in from validation/test), which the test rebuilds.
Regenerate them only with that script.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import sys

import pyarrow.parquet as pq
import pytest
from conftest import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
REFERENCE = "reference_smollm2.json"
REFERENCES = (REFERENCE, "reference_smollm2_fewshot.json", "reference_smollm2_chat.json")
# mc2 is a mean of probabilities, so loglikelihood noise within tolerance moves it a little;
# perplexity is exp(-mean loglikelihood), so that noise moves it by at most the same share
# (checked relatively); the other metrics are means of 0/1 decisions and must be identical.
CONTINUOUS_METRICS = {"mc2": 1e-4}
RELATIVE_METRICS = ("perplexity",)


def load_reference(name: str = REFERENCE) -> dict:
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        return json.load(f)


def reference_mirror(reference: dict, hub_mirror: str, folder: str) -> str:
    """The mirror the reference was written on: the shared one, or its `--stand_in_train` copy
    (built by the comparison script's own function)."""
    if not reference.get("stand_in_train"):
        return hub_mirror
    spec = importlib.util.spec_from_file_location("compare_lm_eval", os.path.join(REPO, "benchmarks", "compare_lm_eval.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.mirror_with_train(os.path.abspath(hub_mirror), folder)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> str:
    """The demo model exported once as a plain fp32 transformers folder (skip if not installed)."""
    from lighteval_like.api.errors import ModelLoadError
    from lighteval_like.demo import export, gguf_folder

    try:
        gguf_folder()
    except ModelLoadError as e:
        pytest.skip(str(e))
    return export(str(tmp_path_factory.mktemp("smollm2") / "model"))


@pytest.fixture(scope="module")
def hub_mirror() -> str:
    """The shared dataset mirror: $LIGHTEVAL_LIKE_DATA_DIR, else ../shared/data/hub beside the repo."""
    path = os.environ.get("LIGHTEVAL_LIKE_DATA_DIR") or os.path.join(REPO, "..", "shared", "data", "hub")
    if not os.path.isdir(os.path.join(path, "truthfulqa")):
        pytest.skip(f"no dataset mirror at {path} (set LIGHTEVAL_LIKE_DATA_DIR)")
    return path


def read_details(out_dir: str) -> tuple[dict, dict[str, dict[int, list[float]]]]:
    """(results section, {task key: {doc index: per-choice loglikelihoods}}) of one run."""
    (results_path,) = glob.glob(os.path.join(out_dir, "results", "*", "results_*.json"))
    with open(results_path, encoding="utf-8") as f:
        results = json.load(f)["results"]
    details: dict[str, dict[int, list[float]]] = {}
    for path in glob.glob(os.path.join(out_dir, "details", "*", "*", "details_*.parquet")):
        key = os.path.basename(path)[len("details_") :].rsplit("_", 1)[0]
        details[key] = {row["doc_index"]: row["loglikelihoods"] for row in pq.read_table(path).to_pylist()}
    return results, details


def test_reference_file_is_complete():
    """Cheap guard against a truncated or hand-edited reference: every doc, every choice."""
    reference = load_reference()
    tasks = reference["tasks"]
    assert set(tasks) == {"leaderboard|truthfulqa:mc|0", "leaderboard|hellaswag|0", "leaderboard|arc:challenge|0"}
    for key, task in tasks.items():
        assert sorted(map(int, task["loglikelihoods"])) == list(range(reference["max_samples"])), key
        assert all(len(lls) >= 2 and all(x < 0 for x in lls) for lls in task["loglikelihoods"].values()), key
    assert all(len(v) == 4 for v in tasks["leaderboard|hellaswag|0"]["loglikelihoods"].values())
    assert set(tasks["leaderboard|truthfulqa:mc|0"]["metrics"]) == {"mc1", "mc2"}


@pytest.mark.parametrize("name", REFERENCES)
def test_every_reference_file_is_complete(name):
    reference = load_reference(name)
    assert reference["lm_eval_version"] == "0.4.13" and reference["tasks"]
    for key, task in reference["tasks"].items():
        assert sorted(map(int, task["loglikelihoods"])) == list(range(reference["max_samples"])), key
        assert all(lls and all(x < 0 for x in lls) for lls in task["loglikelihoods"].values()), key
        assert task["lm_eval_max_abs_delta"] <= reference["loglikelihood_tolerance"], key


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, batch_size",
    [(REFERENCE, None), (REFERENCE, 1), (REFERENCES[1], None), (REFERENCES[2], None)],
    ids=["auto-batch", "batch-1", "fewshot", "chat"],
)
def test_smollm2_matches_lm_eval_reference(smollm2, hub_mirror, tmp_path, name, batch_size):
    reference = load_reference(name)
    tolerance = reference["loglikelihood_tolerance"]
    out = tmp_path / "out"
    args = [
        "accelerate", "--model_args", f"pretrained={smollm2},dtype=float32",
        "--tasks", ",".join(f"{key}|0" for key in reference["tasks"]),
        "--max_samples", str(reference["max_samples"]), "--save_details", "--output_dir", str(out),
        "--dataset_dir", reference_mirror(reference, hub_mirror, str(tmp_path / "mirror")), "--no_cache",
    ]
    if batch_size:
        args += ["--override_batch_size", str(batch_size)]
    if reference.get("chat"):
        args.append("--use_chat_template")
    result = run_cli(args)
    assert result.returncode == 0, result.stderr[-3000:]
    results, details = read_details(str(out))

    assert set(details) == set(reference["tasks"])
    for key, want in reference["tasks"].items():
        got = details[key]
        assert sorted(got) == sorted(map(int, want["loglikelihoods"])), key
        worst = 0.0
        for doc, lls in want["loglikelihoods"].items():
            assert len(got[int(doc)]) == len(lls), (key, doc)
            worst = max([worst] + [abs(a - b) for a, b in zip(got[int(doc)], lls)])
        assert worst <= tolerance, f"{key}: a per-choice loglikelihood moved by {worst:.3g} from the reference"
        for name, value in want["metrics"].items():
            if name in RELATIVE_METRICS:
                assert results[key][name] == pytest.approx(value, rel=tolerance), (key, name)
                continue
            tol = CONTINUOUS_METRICS.get(name, 1e-6)
            assert results[key][name] == pytest.approx(value, abs=tol), (key, name)
