"""The run options every entry point fills (flags, or the distributed override config)."""

from __future__ import annotations

from dataclasses import dataclass

from lighteval_like.api.generation import GenerationParameters


@dataclass
class PipelineParameters:
    """Run options shared by `accelerate` and `distributed` (named as lighteval's flags)."""

    tasks: str
    output_dir: str = "results"
    max_samples: int | None = None
    save_details: bool = False
    custom_tasks: str | None = None
    use_chat_template: bool = False
    system_prompt: str | None = None
    num_fewshot_seeds: int = 1
    job_id: str | None = None
    dataset_dir: str | None = None
    cache_dir: str | None = None
    dataset_loading_processes: int = 1
    seed: int = 1234
    skip_bad_samples: bool = False
    batch_size: int | None = None  # reported in config_general; the model applies it
    no_cache: bool = False  # True: neither read nor write the response cache (cache.py)
    allow_code_execution: bool = False  # consent to run model-written programs (sandbox.py)
    allow_weaker_isolation: bool = False  # ... below full (bubblewrap) isolation
    push_to_tensorboard: bool = False  # the scores as TensorBoard scalars (tensorboard.py)
    checkpoint_step: int | None = None  # the step of those scalars (a training checkpoint's)
    generation: GenerationParameters | None = None  # the user's; a task's defaults fill the rest
    reasoning_tags: tuple[tuple[str, str], ...] | None = None  # --remove_reasoning_tags: cut out before scoring
