"""The results document's layout, pinned key for key (the typed results are serialised at the
last moment: this catches a field renamed, dropped or moved), and a misspelt metric found at start-up."""

from __future__ import annotations

import json

from conftest import run_cli

from lighteval_like.cli.entrypoints import run_accelerate

TASKS = "leaderboard|arc:challenge|0|0,leaderboard|mmlu:anatomy|0|0,leaderboard|mmlu:abstract_algebra|0|0"

CONFIG_GENERAL = [
    "lighteval_like_version", "transformers_version", "torch_version", "python_version", "start_time", "end_time",
    "total_evaluation_time_secondes", "job_id", "num_processes", "override_batch_size", "max_samples",
    "num_fewshot_seeds", "seed", "use_chat_template", "system_prompt", "model_name", "model_sha", "model_dtype",
    "model_size", "max_length", "device", "add_special_tokens", "model_args",
]
SUMMARY_TASK = [
    "hashes", "num_samples", "num_docs", "skipped_bad_samples", "truncated", "non_truncated",
    "effective_few_shots", "requested_few_shots", "fewshot_split",
    "generation_parameters",  # None here; the values a generative task ran with (test_sampling.py)
    "unclosed_reasoning",  # None unless --remove_reasoning_tags (test_reasoning.py)
    "judge_unparsed",  # None unless a judge metric records ratings (test_mt_bench.py)
]
SUMMARY_GENERAL = [
    "hashes", "num_samples", "num_requests", "truncated", "non_truncated", "timings_seconds",
    "requests_per_second", "response_cache", "scoring",
]


def test_results_file_layout_is_pinned(tiny_model, mirror, tmp_path):
    result = run_accelerate(
        model_args=f"pretrained={tiny_model}", model_config_path=None, override_batch_size=-1,
        cache_dir=str(tmp_path / "cache"), tasks=TASKS, output_dir=str(tmp_path / "out"), dataset_dir=mirror,
    )
    with open(result.results_path, encoding="utf-8") as f:
        written = json.load(f)
    assert written == json.loads(json.dumps(result.results, default=str))
    assert list(written) == ["config_general", "results", "versions", "config_tasks", "summary_tasks", "summary_general"]
    assert list(written["config_general"]) == CONFIG_GENERAL
    assert list(written["results"]) == [
        "leaderboard|arc:challenge|0", "leaderboard|mmlu:anatomy|0", "leaderboard|mmlu:abstract_algebra|0",
        "leaderboard|mmlu:_average|0", "all",
    ]
    assert list(written["results"]["leaderboard|arc:challenge|0"]) == ["acc", "acc_stderr", "acc_norm", "acc_norm_stderr"]
    assert list(written["results"]["all"]) == ["acc", "acc_stderr", "acc_norm", "acc_norm_stderr"]
    assert list(written["summary_tasks"]["leaderboard|mmlu:anatomy|0"]) == SUMMARY_TASK
    assert list(written["summary_tasks"]["leaderboard|mmlu:anatomy|0"]["hashes"]) == ["examples", "full_prompts", "requests"]
    assert list(written["summary_general"]) == SUMMARY_GENERAL
    assert list(written["summary_general"]["response_cache"]) == ["enabled", "fingerprint", "hits", "computed"]
    assert written["config_tasks"]["leaderboard|arc:challenge"]["metrics"] == ["acc", "acc_norm"]
    assert written["config_tasks"]["leaderboard|arc:challenge"]["metric_info"] == {
        m: {"aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")}
    assert written["config_general"]["model_args"]["pretrained"] == tiny_model
    assert "cache_dir" not in written["config_general"]["model_args"]


MISSPELT = '''
from lighteval_like.tasks import TaskConfig
from lighteval_like.tasks.prompts import arc

TASKS_TABLE = [TaskConfig(name="my_arc", suite="custom", prompt_function=arc, hf_repo="allenai/ai2_arc",
                          hf_subset="ARC-Challenge", evaluation_split="test", few_shots_split=None,
                          metrics=("acc", "acc_nrom"))]
'''


def test_misspelt_metric_stops_the_run_at_start_up(tmp_path):
    """One line and exit 2 before the model loads (its path does not exist: loading would fail otherwise)."""
    custom = tmp_path / "tasks.py"
    custom.write_text(MISSPELT, encoding="utf-8")
    proc = run_cli(["accelerate", "--model_args", "pretrained=does/not-matter", "--tasks", "custom|my_arc|0|0",
                    "--custom_tasks", str(custom), "--output_dir", str(tmp_path / "out")])
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [
        "lighteval-like: error: task custom|my_arc: unknown metric 'acc_nrom' (did you mean acc_norm?); valid metrics are acc, acc_norm, "
        "acc_token_mean, mc1, mc2, acc_greedy, perplexity, word_perplexity, byte_perplexity, bits_per_byte, em, qem "
        "(or a lighteval_like.metrics.library.Metric object)"
    ]
    assert not (tmp_path / "out").exists()
