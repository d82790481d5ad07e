"""`NanotronModelConfig`: the transformers model args, for a nanotron checkpoint read as it is."""

from __future__ import annotations

from dataclasses import dataclass, field

from lighteval_like.models.nanotron.checkpoint import NanotronCheckpoint
from lighteval_like.models.transformers.config import TransformersModelConfig


@dataclass
class NanotronModelConfig(TransformersModelConfig):
    """`pretrained` is the checkpoint's step folder; `checkpoint` its facts, once read (else the
    model reads them from `pretrained`). Recorded and fingerprinted as the transformers args."""

    checkpoint: NanotronCheckpoint | None = field(default=None, metadata={"cli": False}, repr=False)
