"""The model args every backend takes (`BackendConfig`); each backend's config subclasses it
in its own subpackage (`models/<backend>/config.py`) with the args of its own."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from lighteval_like.api.errors import ModelArgsError

DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}


@dataclass
class BackendConfig:
    """Model arguments of every backend, named as in lighteval. A subclass names the dtypes it
    takes (`DTYPES`), checks its own args (`check_args`) and names the run options they set
    (`run_defaults`); its `KEY_ORDER` keeps the order that errors and results files list its
    args in, where that order came before this base."""

    pretrained: str
    tokenizer: str | None = None
    subfolder: str | None = None
    revision: str = "main"
    dtype: str = "auto"
    trust_remote_code: bool = False
    # lm-eval encodes without special tokens by default; so do we, to match its numbers.
    add_special_tokens: bool = False
    multichoice_continuations_start_space: bool | None = None
    max_gen_toks: int = 256
    cache_dir: str | None = field(default=None, metadata={"cli": False})

    DTYPES: ClassVar[tuple[str, ...]] = ("auto", "float32", "float16", "bfloat16")
    KEY_ORDER: ClassVar[tuple[str, ...]] = ()  # empty: the fields' order (see `keys_of`)
    DTYPE_REFUSED_BY: ClassVar[str] = ""  # " by vllm": who a dtype error says refuses the dtype

    def __post_init__(self):
        self.dtype = DTYPE_ALIASES.get(str(self.dtype), str(self.dtype))
        if self.dtype not in self.DTYPES:
            raise ModelArgsError(
                f"dtype '{self.dtype}' is not supported{self.DTYPE_REFUSED_BY}: use one of {', '.join(self.DTYPES)}"
            )
        self.check_args()
        self._check_source()

    def check_args(self) -> None:
        """The backend's own args, checked (and normalised) after the dtype, before the source."""

    def run_defaults(self) -> dict[str, Any]:
        """Run options (`PipelineParameters` fields) these model args set: each one the flags
        leave unset (None, False) takes its value here."""
        return {}

    def _check_source(self) -> None:
        if not self.pretrained:
            raise ModelArgsError("pretrained must name a hub id or a local model directory")
        if self.revision != "main" and os.path.isdir(os.path.expanduser(self.pretrained)):
            raise ModelArgsError(
                f"revision={self.revision} cannot apply to the local folder '{self.pretrained}' (a revision is "
                f"a hub repository's): check it out into the folder and drop revision=, or pass the hub id"
            )

    @property
    def counts_tokens(self) -> bool:
        """False: these args give the backend no tokenizer (it counts no tokens, scores no loglikelihoods)."""
        return True

    @property
    def model_name(self) -> str:
        """Name used for the results folder: hub ids as given, local paths by their last part."""
        path = self.pretrained.rstrip("/")
        return os.path.basename(path) if os.path.isdir(path) else path

