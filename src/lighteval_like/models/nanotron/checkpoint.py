"""Checkpoints written by nanotron (0.4, checkpoint format 1.2), read without nanotron.

A nanotron checkpoint is a step folder:

    config.yaml               nanotron's whole training config (general, model, parallelism, tokenizer, ...)
    checkpoint_metadata.json  {"version": "1.2", "tp": 2, "dp": 1, "metas": {"last_train_step": 10, ...}}
    model_config.json         model.model_config again
    model/model/...           one folder per parameter, one safetensors file per tp (and pp) rank

and a trainer's run folder holds step folders plus `latest.txt` naming the newest one.

Reading it (`load_state_dict`):
- each parameter folder holds `model_weight.safetensors` (replicated parameters) or
  `model_weight_pp-rank-P-of-NP_tp-rank-T-of-NT.safetensors` (one per tp rank), tensor key `data`;
  a sharded file's metadata records `unsharded_shape` and `local_global_slices_pairs`
  ("local#global" slice lists per pair, pairs joined by ';', dims by '|', slices as
  'start,stop,step'), and the full tensor is rebuilt from those slices: a tp shard of a fused
  `qkv_proj` holds its own rows of q, k and v, so shards are never concatenated;
- `qkv_proj` rows are [q | k | v], `gate_up_proj` rows [gate | up];
- nanotron's rotary embedding rotates interleaved pairs (dims 2i, 2i+1) where transformers'
  Llama rotates (i, i + d/2): the rows of every q and k head are reordered accordingly;
- `model_config.vocab_size` is already padded (to a multiple of tp x make_vocab_size_divisible_by);
  the padding rows are dropped when the real vocabulary size is known (the tokenizer's);
- a tied lm_head has no file: transformers ties it to the embeddings.

The result is a transformers `LlamaForCausalLM`, so the rest of the harness (tasks, cache,
tensor / pipeline parallel placement) runs it as any other model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lighteval_like.api.errors import ConfigError, ModelLoadError, UsageError
from lighteval_like.api.typed_config import read_yaml

logger = logging.getLogger(__name__)

READ_VERSION = (1, 2)  # newest checkpoint format this reader knows (nanotron's CHECKPOINT_VERSION)
CONFIG_FILE = "config.yaml"
METADATA_FILE = "checkpoint_metadata.json"
LATEST_FILE = "latest.txt"
# Sections nanotron's `Config.save_as_yaml` always writes; our own model config has none of them.
NANOTRON_SECTIONS = ("general", "parallelism", "model")
DEFAULT_ROPE_THETA = 10000.0  # nanotron 0.4's Llama has no rope_theta field
LLAMA_KEYS = (
    "hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "vocab_size",
    "rms_norm_eps", "max_position_embeddings",
)
_SHARD_NAME = re.compile(r"^model_weight_pp-rank-(\d+)-of-(\d+)_tp-rank-(\d+)-of-(\d+)\.safetensors$")


# ------------------------------------------------------------------------ resolving
def _looks_nanotron(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and all(section in data for section in NANOTRON_SECTIONS)
        and isinstance(data.get("model"), dict)
        and "model_config" in data["model"]
    )


def is_nanotron_config(path: str | os.PathLike) -> bool:
    """True when `path` is a nanotron checkpoint: its config.yaml (recognised by nanotron's
    sections general / parallelism / model.model_config), its step folder, or a run folder
    with latest.txt. False for anything else, our own model config YAML included."""
    p = Path(path)
    if p.is_dir():
        if (p / LATEST_FILE).is_file():
            return True
        p = p / CONFIG_FILE
    if not p.is_file():
        return False
    try:
        return _looks_nanotron(read_yaml(str(p), "nanotron config", ConfigError))
    except UsageError:
        return False


def _parse_version(text: Any, where: Path) -> tuple[int, ...]:
    if not re.fullmatch(r"\d+(\.\d+)*", str(text).strip()):
        raise ModelLoadError(f"{where}: checkpoint version {text!r} is not a version number")
    return tuple(int(x) for x in str(text).strip().split("."))


def _check_version(text: Any, where: Path) -> str:
    version = _parse_version(text, where)
    if version > READ_VERSION:
        readable = ".".join(map(str, READ_VERSION))
        raise ModelLoadError(
            f"{where}: checkpoint version {text} is newer than this reader supports ({readable}, nanotron 0.4)"
        )
    return str(text)


def _dtype_name(value: Any) -> str:
    name = str(value or "bfloat16").replace("torch.", "")  # nanotron's default is bfloat16
    aliases = {"float": "float32", "half": "float16", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
    return aliases.get(name, name)


@dataclass(frozen=True)
class NanotronCheckpoint:
    """What a nanotron step folder says about itself (nothing here reads weights)."""

    root: Path  # the step folder: config.yaml, checkpoint_metadata.json, model/
    step: int | None  # checkpoint_metadata's metas.last_train_step, else general.step
    dtype: str  # model.dtype ("float32", "bfloat16", ...)
    model_config: dict  # model.model_config (vocab_size padded)
    tokenizer: str | None  # tokenizer.tokenizer_name_or_path
    tp: int  # tensor parallel size it was saved with
    pp: int  # pipeline parallel size it was saved with
    dp: int
    version: str | None  # checkpoint format version (None: no checkpoint_metadata.json)
    make_vocab_size_divisible_by: int = 1
    project: str | None = None
    run: str | None = None
    config: dict = field(default_factory=dict, repr=False)  # the whole config.yaml

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def weights_dir(self) -> Path:
        return self.root / "model"

    @property
    def padded_vocab_size(self) -> int:
        return int(self.model_config["vocab_size"])

    @property
    def tied(self) -> bool:
        return bool(self.model_config.get("tie_word_embeddings", False))

    @property
    def name(self) -> str:
        """A name for results: the run and step (`tiny-step10`), else the folder's name."""
        if self.run and self.step is not None:
            return f"{self.run}-step{self.step}"
        return self.root.name

    def unpadded_vocab_size(self, tokenizer_size: int | None) -> int:
        """The vocabulary before nanotron padded it, when `tokenizer_size` explains the padding
        (nanotron pads to a multiple of tp x make_vocab_size_divisible_by); else the padded size."""
        padded = self.padded_vocab_size
        if not tokenizer_size or tokenizer_size >= padded:
            return padded
        multiple = self.tp * self.make_vocab_size_divisible_by
        if math.ceil(tokenizer_size / multiple) * multiple == padded:
            return tokenizer_size
        logger.warning(
            "%s: vocab_size %d is not the tokenizer's %d padded to a multiple of %d: keeping all %d rows",
            self.config_path, padded, tokenizer_size, multiple, padded,
        )
        return padded

    def fingerprint(self) -> str:
        """Hash of the weight files' names, sizes and modification times (the response cache's
        identity of this checkpoint; the top-level folder stamp does not see model/)."""
        h = hashlib.sha256()
        for path in sorted(self.weights_dir.rglob("*.safetensors")):
            st = path.stat()
            h.update(f"{path.relative_to(self.root)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        h.update(self.config_path.read_bytes())
        return h.hexdigest()[:16]


def _step_folder(path: Path) -> Path:
    """The step folder `path` means: itself, the folder of a config.yaml, or a run's latest."""
    if path.is_file():
        return path.parent
    if not path.exists():
        raise UsageError(f"checkpoint path '{path}' does not exist")
    if (path / CONFIG_FILE).is_file():
        return path
    latest = path / LATEST_FILE
    if latest.is_file():
        name = latest.read_text(encoding="utf-8").strip()
        if not name:
            raise ModelLoadError(f"{latest}: empty (it should name the latest step folder)")
        step_dir = path / name
        if not (step_dir / CONFIG_FILE).is_file():
            raise ModelLoadError(f"{latest}: names step folder '{name}', but {step_dir / CONFIG_FILE} does not exist")
        return step_dir
    raise UsageError(f"'{path}' is not a nanotron checkpoint: it holds neither {CONFIG_FILE} nor {LATEST_FILE}")


def _check_llama(model_config: Any, config_path: Path) -> dict:
    if not isinstance(model_config, dict):
        raise ModelLoadError(f"{config_path}: model.model_config must be a mapping")
    flags = sorted(k for k, v in model_config.items() if re.fullmatch(r"is_\w+_config", k) and v)
    if flags and flags != ["is_llama_config"]:
        kind = next(f for f in flags if f != "is_llama_config")[len("is_") : -len("_config")]
        raise ModelLoadError(
            f"{config_path}: model.model_config is a {kind} config ({', '.join(flags)}); "
            "only nanotron's Llama can be read"
        )
    missing = [k for k in LLAMA_KEYS if k not in model_config]
    if not flags and missing:
        raise ModelLoadError(
            f"{config_path}: model.model_config is not a Llama config (no is_llama_config, missing {', '.join(missing)}); "
            "only nanotron's Llama can be read"
        )
    if missing:
        raise ModelLoadError(f"{config_path}: model.model_config lacks {', '.join(missing)}")
    if model_config.get("rope_scaling"):
        raise ModelLoadError(f"{config_path}: model.model_config.rope_scaling is not supported (only plain rotary)")
    act = model_config.get("hidden_act", "silu")
    if act != "silu":
        raise ModelLoadError(f"{config_path}: model.model_config.hidden_act '{act}' is not supported (silu only)")
    return model_config


def resolve_checkpoint(path: str | os.PathLike) -> NanotronCheckpoint:
    """Read a checkpoint's config.yaml and checkpoint_metadata.json (not its weights).

    `path`: the config.yaml, its step folder, or a trainer run folder with latest.txt."""
    root = _step_folder(Path(path).expanduser())
    config_path = root / CONFIG_FILE
    data = read_yaml(str(config_path), "nanotron config", ConfigError)
    if not _looks_nanotron(data):
        raise UsageError(
            f"{config_path}: not a nanotron config.yaml (it needs the sections "
            f"{', '.join(NANOTRON_SECTIONS)} with model.model_config)"
        )
    model_section = data["model"]
    model_config = _check_llama(model_section.get("model_config"), config_path)
    general = data.get("general") or {}
    parallelism = data.get("parallelism") or {}
    tokenizer_section = data.get("tokenizer") or {}

    meta_path = root / METADATA_FILE
    version = None
    meta: dict = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"{meta_path}: cannot be read as JSON ({str(e).splitlines()[0]})") from e
        if not isinstance(meta, dict):
            raise ModelLoadError(f"{meta_path}: must be a JSON object")
        if "version" in meta:
            version = _check_version(meta["version"], meta_path)
    metas = meta.get("metas") or {}
    step = metas.get("last_train_step", general.get("step"))
    tp = int(meta.get("tp", parallelism.get("tp", 1)) or 1)
    return NanotronCheckpoint(
        root=root,
        step=int(step) if step is not None else None,
        dtype=_dtype_name(model_section.get("dtype")),
        model_config=model_config,
        tokenizer=tokenizer_section.get("tokenizer_name_or_path"),
        tp=tp,
        pp=int(parallelism.get("pp", 1) or 1),
        dp=int(meta.get("dp", parallelism.get("dp", 1)) or 1),
        version=version,
        make_vocab_size_divisible_by=int(model_section.get("make_vocab_size_divisible_by", 1) or 1),
        project=general.get("project"),
        run=general.get("run"),
        config=data,
    )


# --------------------------------------------------------------------- the files
def _safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file (shapes, dtypes, metadata) without its tensors."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > 100_000_000:
                raise ValueError("header too large")
            return json.loads(f.read(size))
    except (OSError, ValueError, struct.error) as e:
        raise ModelLoadError(f"{path}: not a readable safetensors file ({e})") from e


def _parse_slice(text: str) -> slice:
    parts = [None if x == "None" else int(x) for x in text.split(",")]
    return slice(*parts)


def _parse_slices_pairs(text: str) -> list[tuple[tuple[slice, ...], tuple[slice, ...]]]:
    """nanotron's `SlicesPair.tuple_to_str` format: pairs joined by ';', each 'local#global',
    dimensions joined by '|', each 'start,stop,step'."""
    pairs = []
    for pair in text.split(";"):
        local, global_ = pair.split("#")
        pairs.append(
            (tuple(_parse_slice(s) for s in local.split("|")), tuple(_parse_slice(s) for s in global_.split("|")))
        )
    return pairs


def _parse_shape(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.strip("()[] ").split(",") if x.strip())


@dataclass
class _ParamFiles:
    folder: Path
    unsharded: Path | None  # model_weight.safetensors
    shards: list[tuple[int, int, int, int, Path]]  # (pp_rank, pp, tp_rank, tp, path)


def _param_files(ckpt: NanotronCheckpoint, folder: Path, what: str) -> _ParamFiles:
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: missing (the checkpoint has no {what})")
    unsharded = folder / "model_weight.safetensors"
    shards = []
    for entry in sorted(folder.iterdir()):
        m = _SHARD_NAME.match(entry.name)
        if m:
            shards.append((*map(int, m.groups()), entry))
    if shards:
        sizes = {(pp, tp) for _, pp, _, tp, _ in shards}
        if len(sizes) > 1:
            raise ModelLoadError(f"{folder}: shard files of different layouts {sorted(sizes)}")
        _, pp, _, tp, _ = shards[0]
        if ckpt.version is not None and tp != ckpt.tp:
            raise ModelLoadError(
                f"{ckpt.root / METADATA_FILE}: says tp={ckpt.tp} but {shards[0][4]} was saved at tp={tp}"
            )
        pp_ranks = {r for r, _, _, _, _ in shards}
        if len(pp_ranks) > 1:
            raise ModelLoadError(f"{folder}: shards of one parameter on several pp ranks {sorted(pp_ranks)}")
        pp_rank = pp_ranks.pop()
        present = {t for _, _, t, _, _ in shards}
        for t in range(tp):
            if t not in present:
                name = f"model_weight_pp-rank-{pp_rank}-of-{pp}_tp-rank-{t}-of-{tp}.safetensors"
                raise ModelLoadError(f"{folder / name}: missing shard file (tp rank {t} of {tp})")
        return _ParamFiles(folder, None, shards)
    if unsharded.is_file():
        return _ParamFiles(folder, unsharded, [])
    raise ModelLoadError(f"{unsharded}: missing (no model_weight*.safetensors for the {what})")


def _shape_of(files: _ParamFiles) -> tuple[tuple[int, ...], str]:
    """(full shape, safetensors dtype) from the headers alone."""
    path = files.unsharded or files.shards[0][4]
    header = _safetensors_header(path)
    if "data" not in header:
        raise ModelLoadError(f"{path}: no tensor 'data' in the file")
    if files.unsharded is not None:
        return tuple(header["data"]["shape"]), header["data"]["dtype"]
    meta = header.get("__metadata__") or {}
    if "unsharded_shape" not in meta:
        raise ModelLoadError(f"{path}: shard without 'unsharded_shape' metadata")
    return _parse_shape(meta["unsharded_shape"]), header["data"]["dtype"]


def _read_param(files: _ParamFiles, expected: tuple[int, ...], ckpt: NanotronCheckpoint):
    """The full tensor, rebuilt from every shard's recorded slices."""
    import torch
    from safetensors import safe_open

    def read(path: Path):
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                return f.get_tensor("data"), f.metadata() or {}
        except Exception as e:  # safetensors raises several types on a damaged file
            raise ModelLoadError(f"{path}: cannot be read ({type(e).__name__}: {str(e).splitlines()[0]})") from e

    if files.unsharded is not None:
        tensor, _ = read(files.unsharded)
        if tuple(tensor.shape) != tuple(expected):
            raise ModelLoadError(
                f"{files.unsharded}: shape {tuple(tensor.shape)}, but config.yaml implies {tuple(expected)}"
            )
        return tensor
    full = None
    covered = None
    for _, _, _, _, path in files.shards:
        local, meta = read(path)
        if "version" in meta:
            _check_version(meta["version"], path)
        if "unsharded_shape" not in meta or "local_global_slices_pairs" not in meta:
            raise ModelLoadError(f"{path}: shard without unsharded_shape / local_global_slices_pairs metadata")
        shape = _parse_shape(meta["unsharded_shape"])
        if shape != tuple(expected):
            raise ModelLoadError(f"{path}: unsharded shape {shape}, but config.yaml implies {tuple(expected)}")
        if full is None:
            full = torch.empty(shape, dtype=local.dtype)
            covered = torch.zeros(shape, dtype=torch.bool)
        try:
            for local_slices, global_slices in _parse_slices_pairs(meta["local_global_slices_pairs"]):
                full[global_slices] = local[local_slices]
                covered[global_slices] = True
        except (ValueError, RuntimeError, IndexError) as e:
            raise ModelLoadError(f"{path}: its slices do not fit the tensor ({str(e).splitlines()[0]})") from e
    if not bool(covered.all()):
        missing = int((~covered).sum())
        raise ModelLoadError(f"{files.folder}: the shards leave {missing} of {covered.numel()} values unset")
    return full


# ------------------------------------------------------------------ conversion
@dataclass(frozen=True)
class _Dims:
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    layers: int
    vocab: int


def _dims(ckpt: NanotronCheckpoint) -> _Dims:
    mc = ckpt.model_config
    heads = int(mc["num_attention_heads"])
    hidden = int(mc["hidden_size"])
    return _Dims(
        hidden=hidden, intermediate=int(mc["intermediate_size"]), heads=heads,
        kv_heads=int(mc.get("num_key_value_heads") or heads), head_dim=hidden // heads,
        layers=int(mc["num_hidden_layers"]), vocab=ckpt.padded_vocab_size,
    )


def _layout(ckpt: NanotronCheckpoint) -> list[tuple[str, Path, tuple[int, ...]]]:
    """(nanotron parameter, its folder, full shape implied by config.yaml) for every file-backed parameter."""
    d = _dims(ckpt)
    base = ckpt.weights_dir / "model"
    qkv_rows = (d.heads + 2 * d.kv_heads) * d.head_dim
    params = [("token_embedding", base / "token_position_embeddings" / "pp_block" / "token_embedding", (d.vocab, d.hidden))]
    for i in range(d.layers):
        block = base / "decoder" / str(i) / "pp_block"
        params += [
            (f"{i}.input_layernorm", block / "input_layernorm", (d.hidden,)),
            (f"{i}.qkv_proj", block / "attn" / "qkv_proj", (qkv_rows, d.hidden)),
            (f"{i}.o_proj", block / "attn" / "o_proj", (d.hidden, d.heads * d.head_dim)),
            (f"{i}.post_attention_layernorm", block / "post_attention_layernorm", (d.hidden,)),
            (f"{i}.gate_up_proj", block / "mlp" / "gate_up_proj", (2 * d.intermediate, d.hidden)),
            (f"{i}.down_proj", block / "mlp" / "down_proj", (d.hidden, d.intermediate)),
        ]
    params.append(("final_layer_norm", base / "final_layer_norm" / "pp_block", (d.hidden,)))
    if not ckpt.tied:
        params.append(("lm_head", base / "lm_head" / "pp_block", (d.vocab, d.hidden)))
    return params


def _check_weights_dir(ckpt: NanotronCheckpoint) -> None:
    if not (ckpt.weights_dir / "model").is_dir():
        raise ModelLoadError(f"{ckpt.weights_dir / 'model'}: missing (no weights beside {ckpt.config_path})")


def _deinterleave_rows(weight, heads: int, head_dim: int):
    """Rows of each head from nanotron's interleaved rotary pairs (2i, 2i+1) to transformers'
    half-split pairs (i, i + d/2)."""
    import torch

    order = torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])
    return weight.view(heads, head_dim, -1)[:, order].reshape(heads * head_dim, -1).contiguous()


def transformers_config(ckpt: NanotronCheckpoint, vocab_size: int | None = None, dtype: str | None = None):
    """The transformers `LlamaConfig` equivalent to the checkpoint's model_config."""
    from transformers import LlamaConfig

    mc = ckpt.model_config
    d = _dims(ckpt)
    config = LlamaConfig(
        vocab_size=vocab_size or d.vocab,
        hidden_size=d.hidden,
        intermediate_size=d.intermediate,
        num_hidden_layers=d.layers,
        num_attention_heads=d.heads,
        num_key_value_heads=d.kv_heads,
        head_dim=d.head_dim,
        hidden_act=mc.get("hidden_act", "silu"),
        max_position_embeddings=int(mc["max_position_embeddings"]),
        rms_norm_eps=float(mc["rms_norm_eps"]),
        rope_theta=float(mc.get("rope_theta") or DEFAULT_ROPE_THETA),
        tie_word_embeddings=ckpt.tied,
        bos_token_id=mc.get("bos_token_id"),
        eos_token_id=mc.get("eos_token_id"),
        pad_token_id=mc.get("pad_token_id"),
        attention_bias=False,
        mlp_bias=False,
    )
    config.dtype = dtype or ckpt.dtype
    return config


def load_state_dict(ckpt: NanotronCheckpoint, vocab_size: int | None = None, dtype: str | None = None):
    """(transformers LlamaConfig, LlamaForCausalLM state dict) from the checkpoint's files.

    `vocab_size`: keep this many rows of the (padded) embeddings and head; None keeps them all.
    `dtype`: cast to it ("float32", "bfloat16", ...); None = the checkpoint's model.dtype."""
    import torch

    _check_weights_dir(ckpt)
    d = _dims(ckpt)
    vocab = d.vocab if vocab_size is None else int(vocab_size)
    if not 0 < vocab <= d.vocab:
        raise UsageError(f"vocab_size {vocab} must be between 1 and the checkpoint's {d.vocab}")
    target = getattr(torch, dtype or ckpt.dtype, None)
    if not isinstance(target, torch.dtype):
        raise ModelLoadError(f"{ckpt.config_path}: model.dtype '{dtype or ckpt.dtype}' is not a torch dtype")
    rope_interleaved = ckpt.model_config.get("rope_interleaved", True)
    q_rows, kv_rows = d.heads * d.head_dim, d.kv_heads * d.head_dim

    sd = {}
    for name, folder, shape in _layout(ckpt):
        tensor = _read_param(_param_files(ckpt, folder, name), shape, ckpt)
        layer, _, part = name.partition(".")
        prefix = f"model.layers.{layer}."
        if name == "token_embedding":
            sd["model.embed_tokens.weight"] = tensor[:vocab]
        elif name == "lm_head":
            sd["lm_head.weight"] = tensor[:vocab]
        elif name == "final_layer_norm":
            sd["model.norm.weight"] = tensor
        elif part == "qkv_proj":
            q, k, v = tensor[:q_rows], tensor[q_rows : q_rows + kv_rows], tensor[q_rows + kv_rows :]
            if rope_interleaved:
                q = _deinterleave_rows(q, d.heads, d.head_dim)
                k = _deinterleave_rows(k, d.kv_heads, d.head_dim)
            sd[prefix + "self_attn.q_proj.weight"] = q
            sd[prefix + "self_attn.k_proj.weight"] = k
            sd[prefix + "self_attn.v_proj.weight"] = v
        elif part == "o_proj":
            sd[prefix + "self_attn.o_proj.weight"] = tensor
        elif part == "gate_up_proj":
            sd[prefix + "mlp.gate_proj.weight"] = tensor[: d.intermediate]
            sd[prefix + "mlp.up_proj.weight"] = tensor[d.intermediate :]
        elif part == "down_proj":
            sd[prefix + "mlp.down_proj.weight"] = tensor
        else:  # input_layernorm, post_attention_layernorm
            sd[prefix + part + ".weight"] = tensor
    sd = {k: v.to(target).contiguous() for k, v in sd.items()}
    return transformers_config(ckpt, vocab, dtype or ckpt.dtype), sd


def build_model(ckpt: NanotronCheckpoint, dtype: str | None = None, vocab_size: int | None = None):
    """A transformers `LlamaForCausalLM` (eval mode, on CPU) holding the checkpoint's weights."""
    import torch
    from transformers import LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config, sd = load_state_dict(ckpt, vocab_size=vocab_size, dtype=dtype)
    target = next(iter(sd.values())).dtype
    with torch.device("meta"):  # no random initialisation of weights about to be replaced
        model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:  # a bug of this reader, not of the checkpoint
        raise ModelLoadError(f"{ckpt.root}: converted weights do not fit LlamaForCausalLM ({missing}, {unexpected})")
    if config.tie_word_embeddings:
        model.tie_weights()
    model.model.rotary_emb = LlamaRotaryEmbedding(config=config)  # its buffers were made on meta
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise ModelLoadError(f"{ckpt.root}: converted model still lacks {', '.join(leftover)}")
    model.to(target)
    model.eval()
    return model


# ------------------------------------------------------------------ inspect
def parameter_count(ckpt: NanotronCheckpoint) -> int:
    """Parameters as saved (padded vocabulary, a tied head counted once), from the files'
    headers: no weight is read."""
    _check_weights_dir(ckpt)
    total = 0
    for name, folder, expected in _layout(ckpt):
        shape, _ = _shape_of(_param_files(ckpt, folder, name))
        if tuple(shape) != tuple(expected):
            raise ModelLoadError(f"{folder}: shape {tuple(shape)}, but config.yaml implies {tuple(expected)}")
        total += math.prod(shape)
    return total


def describe(ckpt: NanotronCheckpoint) -> str:
    """What the checkpoint is, for `nanotron inspect` (reads headers, not weights)."""
    d = _dims(ckpt)
    mc = ckpt.model_config
    params = parameter_count(ckpt)
    theta = float(mc.get("rope_theta") or DEFAULT_ROPE_THETA)
    multiple = ckpt.tp * ckpt.make_vocab_size_divisible_by
    vocab = f"vocab {d.vocab}" + (f" (padded to a multiple of {multiple})" if multiple > 1 else "")
    lines = [
        f"checkpoint:    {ckpt.root}",
        f"format:        nanotron checkpoint {ckpt.version or '(no checkpoint_metadata.json)'}",
        "architecture:  Llama -> transformers LlamaForCausalLM",
        f"               {d.layers} layers, hidden {d.hidden}, intermediate {d.intermediate}, "
        f"{d.heads} heads / {d.kv_heads} kv heads (head dim {d.head_dim})",
        f"               {vocab}, {'tied' if ckpt.tied else 'separate'} embeddings, "
        f"max positions {mc['max_position_embeddings']}, rope theta {theta:g}",
        f"parameters:    {params:,} ({params / 1e6:.1f}M)",
        f"saved with:    tp={ckpt.tp} pp={ckpt.pp} dp={ckpt.dp}",
        f"dtype:         {ckpt.dtype}",
        f"step:          {ckpt.step if ckpt.step is not None else 'unknown'}",
        f"tokenizer:     {ckpt.tokenizer or 'none named in config.yaml (name one to evaluate)'}",
    ]
    if ckpt.project or ckpt.run:
        lines.append(f"run:           {ckpt.project or '?'}/{ckpt.run or '?'}")
    return "\n".join(lines)


def inspect_checkpoint(path: str | os.PathLike) -> str:
    """`lighteval-like nanotron inspect PATH`."""
    return describe(resolve_checkpoint(path))
