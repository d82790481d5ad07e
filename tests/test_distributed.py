"""`distributed` under real torchrun (gloo on CPU) against `accelerate` on the same tiny model.

Every run launches torchrun in a subprocess; its workers carry a tag in their environment so
the tests can check that none outlives a run and kill (by pid) any that would.
"""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import free_port, run_cli
from hooks import FAULT_ENV

from lighteval_like.api.errors import ConfigError, ModelArgsError, UsageError
from lighteval_like.cli.override_config import load_checkpoint_config, load_override_config
from lighteval_like.runtime.faults import PEER_FAILURE_GRACE_S
from lighteval_like.runtime.placement import stage_layers, tensor_parallel_plan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAG_VAR = "LIGHTEVAL_LIKE_TEST_RUN_TAG"
TASKS = (
    "leaderboard|truthfulqa:mc|0|0,leaderboard|arc:challenge|1|0,"
    "lighteval|arithmetic_generated:2da|0|0,custom|arithmetic_gen|0|0"
)
MAX_SAMPLES = 5
CUSTOM_TASKS = '''
from lighteval_like.tasks import RequestType, TaskConfig, arithmetic, prompts

TASKS_TABLE = [
    TaskConfig(
        name="arithmetic_gen", suite="custom", prompt_function=prompts.arithmetic,
        hf_repo="generated/arithmetic", hf_subset="2da", evaluation_split="validation",
        few_shots_split=None, request_type=RequestType.GENERATIVE, metrics=("em", "qem"),
        generation_size=6, stop_sequences=("\\n",), data_builder=arithmetic.builder("2da"),
    )
]
'''


@dataclass
class Run:
    returncode: int
    output: str
    seconds: float
    ended_at: float
    leftover: list[int]


def _tagged_pids(tag: str) -> list[int]:
    """Live processes whose environment carries this run's tag (torchrun and its workers)."""
    needle = f"{TAG_VAR}={tag}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _env(extra: dict | None, tag: str, tmp_path) -> dict:
    env = {
        **os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", TAG_VAR: tag,
        # A fresh response cache per run: every score is computed, none reused from another run.
        "LIGHTEVAL_LIKE_CACHE": str(tmp_path / f"cache-{tag}"),
    }
    env.pop(FAULT_ENV, None)
    return {**env, **(extra or {})}


def launch(launchers: list[list[str]], env: dict, timeout: float = 300) -> list[Run]:
    """Start one or more torchrun launchers (same tag), wait for all, then reap stragglers."""
    tag = env[TAG_VAR]
    start = time.time()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", *args], cwd=REPO, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        for args in launchers
    ]
    runs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=max(1, timeout - (time.time() - start)))
            runs.append(Run(proc.returncode, out, time.time() - start, time.time(), []))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        time.sleep(0.5)
        leftover = _tagged_pids(tag)
        _kill(leftover)
    for run in runs:
        run.leftover = leftover
    return runs


def distributed_args(ckpt: str, override: str) -> list[str]:
    return ["-m", "lighteval_like", "distributed", "--checkpoint_config_path", ckpt, "--lighteval_config_path", override]


def write_configs(
    tmp_path, model: str, name: str, parallelism: dict, batch_size=None, shared_prefix=True,
    tasks: str = TASKS, max_samples: int = MAX_SAMPLES, use_chat_template: bool = False, model_args: dict | None = None,
):
    """Checkpoint and override YAMLs for one run; returns (ckpt path, override path, output dir)."""
    folder = tmp_path / name
    folder.mkdir()
    custom = folder / "custom_tasks.py"
    custom.write_text(CUSTOM_TASKS)
    ckpt = folder / "checkpoint.yaml"
    ckpt.write_text(yaml.safe_dump({"model_parameters": {
        "pretrained": model, "dtype": "float32", "shared_prefix": shared_prefix, **(model_args or {}),
    }}))
    out = folder / "out"
    override = folder / "override.yaml"
    override.write_text(yaml.safe_dump({
        "batch_size": batch_size,
        "logging": {"output_dir": str(out), "save_details": True},
        "parallelism": parallelism,
        "tasks": {"tasks": tasks, "max_samples": max_samples, "custom_tasks": str(custom),
                  "use_chat_template": use_chat_template},
    }))
    return str(ckpt), str(override), str(out)


def load_output(out: str) -> tuple[dict, dict, list[str]]:
    """(results json, {(task, doc, seed): details row}, every results file written)."""
    paths = glob.glob(os.path.join(out, "results", "*", "*.json"))
    results = json.load(open(paths[0], encoding="utf-8")) if paths else {}
    details = {}
    for path in glob.glob(os.path.join(out, "details", "*", "*", "*.parquet")):
        task = os.path.basename(path)[len("details_"):].rsplit("_", 1)[0]
        for row in pq.read_table(path).to_pylist():
            details[(task, row["doc_index"], row["fewshot_seed"])] = row
    return results, details, paths


def assert_same_scores(reference: tuple, got: tuple) -> None:
    ref_results, ref_details, _ = reference
    results, details, paths = got
    assert len(paths) == 1, f"exactly one results file (global rank 0 writes), got {paths}"
    assert results["results"].keys() == ref_results["results"].keys()
    for task, metrics in ref_results["results"].items():
        assert results["results"][task].keys() == metrics.keys()
        for name, value in metrics.items():
            assert results["results"][task][name] == pytest.approx(value, rel=1e-4, abs=1e-9), (task, name)
    for task, summary in ref_results["summary_tasks"].items():
        assert results["summary_tasks"][task]["hashes"] == summary["hashes"], task
        assert results["summary_tasks"][task]["num_samples"] == summary["num_samples"] > 0
    assert details.keys() == ref_details.keys()
    for key, ref in ref_details.items():
        row = details[key]
        assert len(row["loglikelihoods"]) == len(ref["loglikelihoods"]), key
        for got_ll, ref_ll in zip(row["loglikelihoods"], ref["loglikelihoods"]):
            assert abs(got_ll - ref_ll) <= 1e-4, (key, got_ll, ref_ll)
        assert row["generation"] == ref["generation"], key
        assert row["continuation_tokens"] == ref["continuation_tokens"], key


@pytest.fixture(scope="module")
def reference(tiny_model, mirror, tmp_path_factory) -> tuple:
    """The accelerate entry point's scores on the same model, tasks and data."""
    tmp = tmp_path_factory.mktemp("reference")
    custom = tmp / "custom_tasks.py"
    custom.write_text(CUSTOM_TASKS)
    out = tmp / "out"
    result = run_cli(
        ["accelerate", "--model_args", f"pretrained={tiny_model},dtype=float32", "--tasks", TASKS,
         "--custom_tasks", str(custom), "--max_samples", str(MAX_SAMPLES), "--save_details",
         "--output_dir", str(out)],
        env={"LIGHTEVAL_LIKE_DATA_DIR": mirror, "LIGHTEVAL_LIKE_CACHE": str(tmp / "cache")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = load_output(str(out))
    generated = [r["generation"] for k, r in loaded[1].items() if k[0].startswith("custom|")]
    assert len(generated) == MAX_SAMPLES and all(g is not None for g in generated)
    return loaded


LAYOUTS = [
    # (dp, tp, pp), batch_size, shared_prefix, pp_engine: vary the paths the scores go through
    ((1, 1, 1), None, True, "afab"),
    ((2, 1, 1), 3, True, "afab"),
    ((1, 2, 1), None, True, "afab"),
    ((1, 1, 2), 5, False, "afab"),  # one row per request: 5 rows -> 4 micro-batches (3 padding rows)
    ((2, 2, 1), None, True, "afab"),
    ((2, 1, 2), 5, False, "1f1b"),
]


@pytest.mark.parametrize("layout,batch_size,shared_prefix,engine", LAYOUTS, ids=[str(x[0]) for x in LAYOUTS])
def test_same_scores_as_accelerate(layout, batch_size, shared_prefix, engine, tiny_model, mirror, reference, tmp_path):
    dp, tp, pp = layout
    ckpt, override, out = write_configs(
        tmp_path, tiny_model, "run", {"dp": dp, "tp": tp, "pp": pp, "pp_engine": engine}, batch_size, shared_prefix
    )
    env = _env({"LIGHTEVAL_LIKE_DATA_DIR": mirror}, uuid.uuid4().hex, tmp_path)
    (run,) = launch([["--standalone", "--nnodes=1", f"--nproc-per-node={dp * tp * pp}", *distributed_args(ckpt, override)]], env)
    assert run.returncode == 0, run.output[-4000:]
    assert not run.leftover
    got = load_output(out)
    assert_same_scores(reference, got)
    config = got[0]["config_general"]
    assert config["parallelism"]["dp"] == dp and config["parallelism"]["tp"] == tp and config["parallelism"]["pp"] == pp
    assert config["num_processes"] == dp
    assert config["model_size"] == reference[0]["config_general"]["model_size"]


def test_two_launchers_on_two_nodes_are_one_job(tiny_model, mirror, reference, tmp_path):
    """--nnodes=2 with c10d rendezvous on 127.0.0.1: global ranks, one results file."""
    ckpt, override, out = write_configs(tmp_path, tiny_model, "nodes", {"dp": 2, "tp": 1, "pp": 1})
    port = free_port()
    env = _env({"LIGHTEVAL_LIKE_DATA_DIR": mirror}, uuid.uuid4().hex, tmp_path)
    node = ["--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
            f"--rdzv-id={uuid.uuid4().hex}", *distributed_args(ckpt, override)]
    runs = launch([node, node], env)
    for run in runs:
        assert run.returncode == 0, run.output[-4000:]
    assert not runs[0].leftover
    assert sum("Results written to" in run.output for run in runs) == 1
    assert_same_scores(reference, load_output(out))


@pytest.mark.parametrize("action", ["raise", "kill"])
def test_a_failing_rank_stops_every_rank(action, tiny_model, mirror, tmp_path):
    ckpt, override, out = write_configs(tmp_path, tiny_model, "fault", {"dp": 1, "tp": 2, "pp": 1})
    env = _env({"LIGHTEVAL_LIKE_DATA_DIR": mirror, FAULT_ENV: f"1:{action}"}, uuid.uuid4().hex, tmp_path)
    hooked = [os.path.join(REPO, "tests", "hooks.py"), *distributed_args(ckpt, override)[2:]]  # the CLI with the fault hook
    (run,) = launch([["--standalone", "--nnodes=1", "--nproc-per-node=2", *hooked]], env)
    assert run.returncode != 0
    assert not run.leftover, "a rank outlived the failure"
    fault_at = float(re.search(r"test fault on rank 1 at t=([0-9.]+)", run.output).group(1))
    assert run.ended_at - fault_at < 60
    if action == "raise":  # the failing rank's own error reaches the user, and torchrun's summary
        assert "lighteval-like: error (rank 1/2): RuntimeError: injected fault on rank 1" in run.output
        root_cause = run.output.split("Root Cause")[-1]  # not rank 0's echo of the lost peer
        assert "injected fault on rank 1" in root_cause and re.search(r"rank\s*:\s*1 ", root_cause)
        assert run.ended_at - fault_at < PEER_FAILURE_GRACE_S  # the agent stopped rank 0
    else:
        assert "Signal 9 (SIGKILL)" in run.output
    assert not glob.glob(os.path.join(out, "results", "*", "*.json"))


def test_world_size_mismatch_exits_2_before_loading(tiny_model, tmp_path):
    ckpt, override, _ = write_configs(tmp_path, tiny_model, "mismatch", {"dp": 2, "tp": 1, "pp": 1})
    env = _env({}, uuid.uuid4().hex, tmp_path)
    (run,) = launch([["--standalone", "--nnodes=1", "--nproc-per-node=3", *distributed_args(ckpt, override)]], env)
    assert run.returncode != 0 and not run.leftover
    # Every rank that gets there says it; torchrun stops the others once the first one exits.
    assert run.output.count("WORLD_SIZE=3 but") >= 1
    assert "dp*tp*pp = 2*1*1 = 2 processes: launch torchrun with --nproc-per-node=2" in run.output
    # The workers exit 2 (torchrun itself then exits 1 and names the first failing worker).
    assert re.search(r"Root Cause.*?exitcode\s*: 2 ", run.output, re.S)
    assert "Loading weights" not in run.output


def test_outside_torchrun_exits_2_with_the_command(tiny_model, tmp_path):
    ckpt, override, _ = write_configs(tmp_path, tiny_model, "plain", {"dp": 2, "tp": 2, "pp": 1})
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    result = subprocess.run(
        [sys.executable, "-m", "lighteval_like", "nanotron", "--checkpoint_config_path", ckpt,
         "--lighteval_config_path", override], capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 2
    assert "runs under torchrun" in result.stderr
    assert (f"torchrun --standalone --nnodes=1 --nproc-per-node=4 -m lighteval_like distributed "
            f"--checkpoint_config_path {ckpt} --lighteval_config_path {override}") in result.stderr


@pytest.mark.slow
def test_smollm2_tp2_matches_accelerate_on_truthfulqa(tmp_path):
    """The demo model at tp=2 (its 9 heads stay whole, its MLPs are split) scores as accelerate."""
    from lighteval_like.api.errors import ModelLoadError
    from lighteval_like.demo import export, gguf_folder

    data_dir = os.environ.get("LIGHTEVAL_LIKE_DATA_DIR") or os.path.join(REPO, "..", "shared", "data", "hub")
    if not os.path.isdir(os.path.join(data_dir, "truthfulqa")):
        pytest.skip("no dataset mirror with truthfulqa (set LIGHTEVAL_LIKE_DATA_DIR)")
    try:
        gguf_folder()
    except ModelLoadError as e:
        pytest.skip(str(e))
    model = export(str(tmp_path / "smollm2"))
    task = "leaderboard|truthfulqa:mc|0|0"
    out = tmp_path / "accelerate"
    result = run_cli(
        ["accelerate", "--model_args", f"pretrained={model},dtype=float32", "--tasks", task,
         "--max_samples", "20", "--save_details", "--output_dir", str(out)],
        env={"LIGHTEVAL_LIKE_DATA_DIR": data_dir, "LIGHTEVAL_LIKE_CACHE": str(tmp_path / "cache")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt, override, dist_out = write_configs(
        tmp_path, model, "tp2", {"dp": 1, "tp": 2, "pp": 1}, tasks=task, max_samples=20
    )
    env = _env({"LIGHTEVAL_LIKE_DATA_DIR": data_dir}, uuid.uuid4().hex, tmp_path)
    (run,) = launch([["--standalone", "--nnodes=1", "--nproc-per-node=2", *distributed_args(ckpt, override)]], env)
    assert run.returncode == 0, run.output[-4000:]
    assert "layers.*.self_attn (9 attention heads / 3 key-value heads do not split into tp=2)" in run.output
    assert_same_scores(load_output(str(out)), load_output(dist_out))


# ----------------------------------------------------------------- configs (no torchrun)
def _override(tmp_path, data) -> str:
    path = tmp_path / "override.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize("data,message", [
    ({"tasks": {"tasks": "x|y|0|0"}, "parallelism": {"dq": 2}}, "unknown key 'parallelism.dq'"),
    ({"tasks": {"tasks": "x|y|0|0"}, "parallelism": {"dp": "two"}}, "key 'parallelism.dp' must be int, got str 'two'"),
    ({"tasks": {"tasks": "x|y|0|0"}, "parallelism": {"tp_mode": "REDUCE_SCATTER"}},
     "key 'parallelism.tp_mode' must be one of 'ALL_REDUCE'"),
    ({"tasks": {"max_samples": 3}}, "missing required key 'tasks.tasks'"),
    ({"parallelism": {"dp": 1}}, "missing required key 'tasks'"),
    ({"tasks": {"tasks": "x|y|0|0"}, "logging": {"save_details": "yes"}}, "key 'logging.save_details' must be bool"),
    ({"tasks": {"tasks": "x|y|0|0"}, "parallelism": {"pp": 0}}, "key 'parallelism.pp' must be >= 1"),
    ({"tasks": "x|y|0|0"}, "key 'tasks' must be a mapping"),
])
def test_override_config_errors_name_the_key_and_file(data, message, tmp_path):
    path = _override(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_override_config(path)
    text = str(info.value)
    assert message in text and path in text and "\n" not in text
    assert info.value.exit_code == 2


def test_checkpoint_config_errors_name_the_key_and_file(tmp_path):
    path = tmp_path / "ckpt.yaml"
    path.write_text(yaml.safe_dump({"model_parameters": {"pretrained": "m", "dtyp": "float32"}}))
    with pytest.raises(ModelArgsError, match=r"ckpt.yaml: unknown model arg\(s\) dtyp"):
        load_checkpoint_config(str(path))


def test_example_configs_are_valid_and_fit_the_documented_command():
    folder = os.path.join(REPO, "examples", "nanotron")
    override = load_override_config(os.path.join(folder, "lighteval_config_override_template.yaml"))
    ckpt = load_checkpoint_config(os.path.join(folder, "checkpoint_config.yaml"))
    assert override.parallelism.world_size == 4  # the issue's --nproc-per-node=4
    assert "arithmetic_generated" in override.tasks.tasks  # runs without any download
    assert ckpt.pretrained == ".cache/smollm2"  # what `python -m lighteval_like.demo export` writes


# ------------------------------------------------------------ plans (no process group)
def _llama(heads: int, kv_heads: int, intermediate: int, hidden: int = 72):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(
        vocab_size=32, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=2,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=hidden // heads,
    ))


def test_tp_plan_shards_whole_heads_only():
    plan, replicated = tensor_parallel_plan(_llama(4, 2, 128, hidden=64), 2)
    assert len(plan) == 2 * 7 and not replicated  # q k v o gate up down, both layers
    # SmolLM2's shape: 9 heads / 3 kv heads cannot split in 2, its MLP can.
    plan, replicated = tensor_parallel_plan(_llama(9, 3, 1536), 2)
    assert sorted(plan) == sorted(f"model.layers.{i}.mlp.{p}" for i in range(2) for p in ("gate_proj", "up_proj", "down_proj"))
    assert "9 attention heads / 3 key-value heads" in replicated["layers.*.self_attn"]
    with pytest.raises(UsageError, match="tp=2 cannot shard any layer"):
        tensor_parallel_plan(_llama(9, 3, 1535), 2)


@pytest.mark.parametrize("layers,pp", [(2, 2), (30, 4), (7, 3), (5, 5)])
def test_stage_layers_cover_every_layer_once(layers, pp):
    stages = [stage_layers(layers, pp, s) for s in range(pp)]
    assert [i for r in stages for i in r] == list(range(layers))
    assert all(len(r) >= 1 for r in stages) and max(map(len, stages)) - min(map(len, stages)) <= 1
