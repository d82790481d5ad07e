"""SmolLM2-135M-Instruct still scores exactly what lm-evaluation-harness 0.4.13 scored.

tests/data/reference_smollm2.json holds our per-choice loglikelihoods and metrics on the first
30 docs of truthfulqa:mc, hellaswag and arc:challenge. It was written by
`benchmarks/compare_lm_eval.py --write_reference` in a run that found every one of them within
1e-4 of lm-eval's and every metric equal, so matching the file means matching lm-eval without
needing lm-eval installed. Regenerate it only with that script.
"""

from __future__ import annotations

import glob
import json
import os

import pyarrow.parquet as pq
import pytest
from conftest import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "reference_smollm2.json")
# mc2 is a mean of probabilities, so loglikelihood noise within tolerance moves it a little;
# the other metrics are means of 0/1 decisions and must be identical.
CONTINUOUS_METRICS = {"mc2": 1e-4}


def load_reference() -> dict:
    with open(REFERENCE, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> str:
    """The demo model exported once as a plain fp32 transformers folder (skip if not installed)."""
    from lighteval_like.demo import export, gguf_folder
    from lighteval_like.errors import ModelLoadError

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


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [None, 1], ids=["auto-batch", "batch-1"])
def test_smollm2_matches_lm_eval_reference(smollm2, hub_mirror, tmp_path, batch_size):
    reference = load_reference()
    tolerance = reference["loglikelihood_tolerance"]
    out = tmp_path / "out"
    args = [
        "accelerate", "--model_args", f"pretrained={smollm2},dtype=float32",
        "--tasks", ",".join(f"{key}|0" for key in reference["tasks"]),
        "--max_samples", str(reference["max_samples"]), "--save_details", "--output_dir", str(out),
        "--dataset_dir", hub_mirror, "--no_cache",
    ]
    if batch_size:
        args += ["--override_batch_size", str(batch_size)]
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
            tol = CONTINUOUS_METRICS.get(name, 1e-6)
            assert results[key][name] == pytest.approx(value, abs=tol), (key, name)
