"""The transformers backend fed from a nanotron checkpoint, in memory (no converted folder).

`NanotronCheckpointModel` is `TransformersModel` with two loading steps replaced: the weights
come from `nanotron_checkpoint.build_model` and the tokenizer must be named (config.yaml's
`tokenizer.tokenizer_name_or_path`, or what the user passed). Scoring, batching, caching and
details are the base class's. Under `distributed` it takes the runtime's mesh placement like
any transformers model: the converted model is built on the host, then split over tp / pp.
"""

from __future__ import annotations

from dataclasses import replace

from lighteval_like.api.errors import ModelLoadError, UsageError
from lighteval_like.models.base import ModelInfo
from lighteval_like.models.nanotron.checkpoint import NanotronCheckpoint, build_model, resolve_checkpoint
from lighteval_like.models.nanotron.config import NanotronModelConfig
from lighteval_like.models.transformers.model import TransformersModel


def model_config_for(
    ckpt: NanotronCheckpoint, tokenizer: str | None = None, dtype: str | None = None, **model_args
) -> NanotronModelConfig:
    """The model args that evaluate `ckpt`: `pretrained` is its step folder, `tokenizer` the one
    given (override config / flag) else config.yaml's, `dtype` the one given else model.dtype."""
    name = tokenizer or ckpt.tokenizer
    if not name:
        raise UsageError(
            f"{ckpt.config_path}: tokenizer.tokenizer_name_or_path is null and no tokenizer was given: "
            "name one (a local tokenizer folder or a hub id)"
        )
    return NanotronModelConfig(pretrained=str(ckpt.root), tokenizer=name, dtype=dtype or ckpt.dtype, checkpoint=ckpt,
                               **model_args)


class NanotronCheckpointModel(TransformersModel):
    """`TransformersModel` whose `config.pretrained` is a nanotron checkpoint (step folder)."""

    def __init__(self, config: NanotronModelConfig, *args, **kwargs):
        self.checkpoint = config.checkpoint if config.checkpoint is not None else resolve_checkpoint(config.pretrained)
        if config.quantized or config.gguf_file or config.subfolder:
            raise UsageError("quantization, gguf_file and subfolder do not apply to a nanotron checkpoint")
        if config.model_parallel:
            raise UsageError("model_parallel=True does not apply to a nanotron checkpoint: use tp / pp")
        super().__init__(config, *args, **kwargs)

    def _load_tokenizer(self):
        if not self.config.tokenizer:
            raise ModelLoadError(
                f"{self.checkpoint.config_path}: tokenizer.tokenizer_name_or_path is null and no tokenizer was given"
            )
        return super()._load_tokenizer()

    def _load_model(self):
        cfg = self.config
        dtype = self.checkpoint.dtype if cfg.dtype == "auto" else cfg.dtype
        if len(self.tokenizer) > self.checkpoint.padded_vocab_size:
            raise ModelLoadError(
                f"{self.checkpoint.config_path}: the tokenizer '{cfg.tokenizer}' has {len(self.tokenizer)} tokens, "
                f"more than the model's vocab_size {self.checkpoint.padded_vocab_size}: name the tokenizer it was trained with"
            )
        vocab = self.checkpoint.unpadded_vocab_size(len(self.tokenizer))
        model = build_model(self.checkpoint, dtype=dtype, vocab_size=vocab)
        if cfg.attn_implementation:
            model.set_attn_implementation(cfg.attn_implementation)
        self.num_parameters = model.num_parameters()
        return self.placement.place(model, self.tokenizer.pad_token_id).eval()

    def info(self) -> ModelInfo:
        out = super().info()
        ckpt = self.checkpoint
        # The response cache keys a model on model_sha among others: the weight files' stamp.
        out.identity = replace(out.identity, model_name=ckpt.name, model_sha=f"nanotron-{ckpt.fingerprint()}")
        out.extra = {"step": ckpt.step, "nanotron_checkpoint": {
            "path": str(ckpt.root),
            "step": ckpt.step,
            "version": ckpt.version,
            "saved_tp": ckpt.tp,
            "saved_pp": ckpt.pp,
            "dtype": ckpt.dtype,
            "tokenizer": self.config.tokenizer,
            "vocab_size": self.model.config.vocab_size,
            "padded_vocab_size": ckpt.padded_vocab_size,
            "project": ckpt.project,
            "run": ckpt.run,
        }}
        return out
