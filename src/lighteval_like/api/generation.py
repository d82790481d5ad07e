"""Generation parameters: the model argument `generation_parameters={temperature:...,...}`
(lighteval's spelling, also in the YAML configs), `--gen_kwargs k=v,k=v` (lm-eval's syntax) and
a task's own defaults. Every field is optional: a task's default applies where the user set
nothing, the user's value wins where set."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

from lighteval_like.api.errors import ConfigError
from lighteval_like.api.requests import SamplingParams
from lighteval_like.api.typed_config import Vocabulary, build, short


@dataclass(frozen=True)
class GenerationParameters:
    """How tasks generate; None = not set (the task's default, else greedy with the task's
    token limit). `num_samples` generations per doc are drawn, each from its own random stream
    seeded by (`seed`, task, doc, sample index)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    max_new_tokens: int | None = None
    seed: int | None = None
    num_samples: int | None = None

    def __post_init__(self):
        checks = [
            ("temperature", self.temperature is None or self.temperature >= 0, ">= 0"),
            ("top_p", self.top_p is None or 0 < self.top_p <= 1, "in (0, 1]"),
            ("top_k", self.top_k is None or self.top_k >= 0, ">= 0 (0: no top-k)"),
            ("min_p", self.min_p is None or 0 <= self.min_p <= 1, "in [0, 1]"),
            ("repetition_penalty", self.repetition_penalty is None or self.repetition_penalty > 0, "> 0"),
            ("max_new_tokens", self.max_new_tokens is None or self.max_new_tokens >= 1, ">= 1"),
            ("num_samples", self.num_samples is None or self.num_samples >= 1, ">= 1"),
        ]
        for name, ok, wanted in checks:
            if not ok:
                raise ConfigError(f"generation parameter {name}={getattr(self, name)} is not valid: it must be {wanted}")

    def over(self, defaults: GenerationParameters | None) -> GenerationParameters:
        """These values where set, else `defaults`' (a task's)."""
        if defaults is None:
            return self
        mine = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return dataclasses.replace(defaults, **mine)

    def sampling(self) -> SamplingParams:
        defaults = SamplingParams()
        return SamplingParams(**{
            f.name: getattr(self, f.name) if getattr(self, f.name) is not None else getattr(defaults, f.name)
            for f in dataclasses.fields(SamplingParams)
        })

    def record(self) -> dict:
        """The values set, for the results."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


GEN_KWARGS = Vocabulary(ConfigError, "--gen_kwargs key", text_values=True)
# lm-eval's names for the same settings.
GEN_KWARGS_ALIASES = {"max_gen_toks": "max_new_tokens"}


def parse_gen_kwargs(text: str | None) -> GenerationParameters:
    """`--gen_kwargs "temperature=0.2,top_p=0.95,num_samples=4"` (lm-eval's k=v,k=v); lm-eval's
    `do_sample=false` means temperature 0, and `max_gen_toks` is `max_new_tokens`."""
    if not text:
        return GenerationParameters()
    values: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = (p.strip() for p in part.partition("="))
        if not sep or not key or not value:
            raise ConfigError(f"--gen_kwargs entry '{short(part)}' is not k=v (expected e.g. temperature=0.2,top_p=0.9)")
        values[GEN_KWARGS_ALIASES.get(key, key)] = value
    do_sample = values.pop("do_sample", None)
    if do_sample is not None and do_sample.lower() in ("false", "0", "no"):
        values.setdefault("temperature", "0")
    return build(GenerationParameters, values, GEN_KWARGS)


def sample_seed(run_seed: int, task_key: str, doc_index: int, sample_index: int) -> int:
    """The seed of one sample's random stream: a stable hash of where it belongs, so the same
    sample draws the same text whatever the batch, the processes or the resume point."""
    text = f"{run_seed}|{task_key}|{doc_index}|{sample_index}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)
