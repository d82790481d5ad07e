"""Flags -> configs -> `Pipeline`, for each entry point; plus `tasks inspect`."""

from __future__ import annotations

import dataclasses

from lighteval_like.errors import UsageError
from lighteval_like.models.model_args import TransformersModelConfig, load_model_config, parse_model_args
from lighteval_like.pipeline import EvaluationResult, Pipeline, PipelineParameters, load_task_data


def model_config_from_flags(model_args: str | None, model_config_path: str | None) -> TransformersModelConfig:
    if bool(model_args) == bool(model_config_path):
        raise UsageError("pass exactly one of --model_args 'pretrained=...,dtype=...' or --model_config_path <yaml>")
    return parse_model_args(model_args) if model_args else load_model_config(model_config_path)


def run_accelerate(
    model_args: str | None,
    model_config_path: str | None,
    override_batch_size: int,
    cache_dir: str | None,
    debug: bool = False,
    **pipeline_flags,
) -> EvaluationResult | None:
    """Evaluate under Accelerate: one process, or data parallel under `accelerate launch`."""
    from lighteval_like.models.transformers_model import TransformersModel
    from lighteval_like.parallel import accelerate_context

    config = model_config_from_flags(model_args, model_config_path)
    if cache_dir:
        config.cache_dir = cache_dir
    batch_size = override_batch_size if override_batch_size and override_batch_size > 0 else None
    params = PipelineParameters(**pipeline_flags, cache_dir=cache_dir, batch_size=batch_size)
    process, device = accelerate_context()

    def load_model() -> TransformersModel:
        return TransformersModel(config, batch_size=batch_size, device=device, show_progress=process.is_main)

    return Pipeline(params, load_model, process, model_args_record(config)).evaluate()


def model_args_record(config: TransformersModelConfig) -> dict:
    """The model args as recorded in the results (where files are cached is not one)."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k != "cache_dir"}


def run_distributed(
    checkpoint_config_path: str, lighteval_config_path: str, debug: bool = False
) -> EvaluationResult | None:
    """Evaluate under torchrun over a (dp, pp, tp) mesh: the same pipeline as `accelerate`,
    with the model split by models/parallel_model.py. Returns the results on global rank 0."""
    from lighteval_like import distributed

    config = distributed.load_checkpoint_config(checkpoint_config_path)
    override = distributed.load_override_config(lighteval_config_path)
    env = distributed.torchrun_env(override.parallelism, checkpoint_config_path, lighteval_config_path)
    tasks = override.tasks
    if tasks.multichoice_continuations_start_space is not None:
        config.multichoice_continuations_start_space = tasks.multichoice_continuations_start_space
    if override.generation is not None and override.generation.max_new_tokens is not None:
        config.max_gen_toks = override.generation.max_new_tokens
    params = PipelineParameters(
        tasks=tasks.tasks, output_dir=override.logging.output_dir, max_samples=tasks.max_samples,
        save_details=override.logging.save_details, custom_tasks=tasks.custom_tasks,
        num_fewshot_seeds=tasks.num_fewshot_seeds or 1, dataset_loading_processes=tasks.dataset_loading_processes,
        batch_size=override.batch_size, cache_dir=override.logging.cache_dir, no_cache=override.logging.no_cache,
    )
    session = None
    try:
        session = distributed.DistributedSession.start(override.parallelism, env, config.device)
        from lighteval_like.models.parallel_model import DistributedTransformersModel

        def load_model() -> DistributedTransformersModel:
            return DistributedTransformersModel(
                config, session.layout(), batch_size=override.batch_size, show_progress=session.process.is_main
            )

        result = Pipeline(params, load_model, session.process, model_args_record(config)).evaluate()
    except BaseException as error:  # any rank's failure ends every rank (see fail_rank)
        distributed.fail_rank(error, env, debug)
    session.close()
    return result


def inspect_task(name: str, num_fewshot: int, custom_tasks: str | None, dataset_dir: str | None) -> str:
    """Config, dataset and one rendered prompt (when the data can be loaded)."""
    from lighteval_like.data import DataSource
    from lighteval_like.errors import DatasetUnavailableError
    from lighteval_like.samples import PromptOptions, build_samples
    from lighteval_like.task_specs import TaskSpec
    from lighteval_like.tasks.registry import Registry, ResolvedTask

    registry = Registry(custom_tasks)
    full = name if "|" in name else next((n for n in registry.names() if n.split("|", 1)[1] == name), name)
    cfg = registry.get(full)
    lines = [
        f"task:          {cfg.full_name}",
        f"dataset:       {cfg.hf_repo} (subset {cfg.hf_subset or 'default'})"
        + (" [generated locally, no download]" if cfg.data_builder else ""),
        f"splits:        evaluation={cfg.evaluation_split} few-shot={cfg.few_shots_split or cfg.evaluation_split + ' (doc excluded)'}"
        f" sampler={cfg.few_shots_select}",
        f"request type:  {cfg.request_type.value}",
        f"metrics:       {', '.join(cfg.metrics)}",
        f"prompt:        {cfg.prompt_function.__module__}.{cfg.prompt_function.__name__}",
    ]
    if cfg.generation_size:
        lines.append(f"generation:    max {cfg.generation_size} tokens, stop at {list(cfg.stop_sequences)}")
    task = ResolvedTask(TaskSpec(cfg.suite, cfg.name, num_fewshot, False), cfg)
    try:
        data = load_task_data(DataSource.from_env(dataset_dir), task, max_samples=1, skip_bad=False)
    except DatasetUnavailableError as e:
        lines.append(f"example:       unavailable ({e})")
        return "\n".join(lines)
    sample = build_samples(
        cfg.full_name, cfg, data.docs, data.fewshot_pool, data.same_split, num_fewshot, False, PromptOptions()
    )[0]
    lines.append(f"\n--- example prompt (doc 0, {num_fewshot}-shot) ---")
    for context in dict.fromkeys(sample.contexts):
        lines.append(context)
        lines.append("---")
    for i, request in enumerate(sample.requests):
        target = getattr(request, "continuation", None) or getattr(request, "text", None)
        if target is None:
            target = f"<greedy generation, stop at {list(request.stop_sequences)}>"
        gold = " (gold)" if i in sample.doc.gold_indices else ""
        lines.append(f"choice {i}{gold}: {target!r}")
    return "\n".join(lines)
