"""The `distributed` entry point's two YAML configs: `--lighteval_config_path` (the run,
named as lighteval's nanotron override) and `--checkpoint_config_path` (the model)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from lighteval_like.api.errors import ConfigError
from lighteval_like.api.generation import GenerationParameters
from lighteval_like.api.typed_config import Vocabulary, build, read_yaml
from lighteval_like.evaluation.parameters import PipelineParameters
from lighteval_like.models.model_args import load_model_config
from lighteval_like.models.transformers.config import TransformersModelConfig
from lighteval_like.runtime.parallelism import ParallelismArgs

OVERRIDE_KEYS = Vocabulary(ConfigError, "key", text_values=False)


@dataclass
class LoggingArgs:
    """Where results go (named as lighteval's nanotron override)."""

    output_dir: str = "results"
    save_details: bool = False
    cache_dir: str | None = None  # response cache (resume); None = $LIGHTEVAL_LIKE_CACHE or ~/.cache
    no_cache: bool = False
    push_to_tensorboard: bool = False  # scores as TensorBoard scalars under <output_dir>/tensorboard/
    checkpoint_step: int | None = None  # their step; a nanotron checkpoint's own step when not given


@dataclass
class TasksArgs:
    """What to evaluate; `tasks` takes the same specs or task-list file as `accelerate --tasks`."""

    tasks: str
    custom_tasks: str | None = None
    max_samples: int | None = None
    num_fewshot_seeds: int = 1
    dataset_loading_processes: int = 1
    multichoice_continuations_start_space: bool | None = None  # a model arg: see `apply_to_model`
    use_chat_template: bool = False  # as the `accelerate` flag: prompts rendered by the tokenizer's chat template
    allow_code_execution: bool = False  # as the `accelerate` flag: code tasks run model-written programs
    allow_weaker_isolation: bool = False
    remove_reasoning_tags: bool = False  # as the `accelerate` flags: reasoning cut out before scoring
    reasoning_tags: str | None = None  # 'open,close;open,close' (default '<think>,</think>')

    def __post_init__(self):
        for name in ("max_samples", "num_fewshot_seeds", "dataset_loading_processes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"key 'tasks.{name}' must be >= 1, got {value}")


@dataclass
class LightevalOverrideConfig:
    """`--lighteval_config_path`: everything but the model."""

    tasks: TasksArgs
    batch_size: int | None = None  # rows per forward on every rank; None = automatic token budget
    tokenizer: str | None = None  # overrides the checkpoint's tokenizer (a local folder or a hub id)
    # The model argument `generation_parameters` (sampling, seed, num_samples); its
    # max_new_tokens caps the tasks that set no generation size, as max_gen_toks does.
    generation: GenerationParameters | None = None
    logging: LoggingArgs = field(default_factory=LoggingArgs)
    parallelism: ParallelismArgs = field(default_factory=ParallelismArgs)

    def __post_init__(self):
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"key 'batch_size' must be >= 1 or null, got {self.batch_size}")

    def pipeline_parameters(self) -> PipelineParameters:
        """The run options: the `tasks` and `logging` sections and `batch_size`, by field name
        (the reasoning tags are parsed with the generation options, `entrypoints.generation_options`)."""
        names = {f.name for f in dataclasses.fields(PipelineParameters)} - {"reasoning_tags"}
        values = {**dataclasses.asdict(self.tasks), **dataclasses.asdict(self.logging), "batch_size": self.batch_size}
        return PipelineParameters(**{k: v for k, v in values.items() if k in names})

    def apply_to_model(self, config: TransformersModelConfig) -> None:
        """The override's model settings win over the checkpoint config's."""
        if self.tasks.multichoice_continuations_start_space is not None:
            config.multichoice_continuations_start_space = self.tasks.multichoice_continuations_start_space
        if self.generation is None:
            return
        if self.generation.max_new_tokens is not None:
            config.max_gen_toks = self.generation.max_new_tokens
        sampling = dataclasses.replace(self.generation, max_new_tokens=None)
        config.generation_parameters = sampling.over(config.generation_parameters)


def load_override_config(path: str) -> LightevalOverrideConfig:
    """Parse and validate `--lighteval_config_path`; errors name the key and the file."""
    data = read_yaml(path, "lighteval config", ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping with at least 'tasks: {{tasks: ...}}'")
    try:
        return build(LightevalOverrideConfig, data, OVERRIDE_KEYS)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def load_checkpoint_config(path: str) -> TransformersModelConfig:
    """`--checkpoint_config_path`: the model args of `accelerate --model_config_path`
    (at top level or under `model_parameters`), validated by the same code."""
    return load_model_config(path)
