"""Flags -> configs -> `Pipeline`, for each entry point; plus `tasks inspect`."""

from __future__ import annotations

import dataclasses

from lighteval_like.errors import UsageError
from lighteval_like.models.model_args import TransformersModelConfig, load_model_config, parse_model_args
from lighteval_like.pipeline import EvaluationResult, Pipeline, PipelineParameters


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

    model_args_record = {k: v for k, v in dataclasses.asdict(config).items() if k != "cache_dir"}
    return Pipeline(params, load_model, process, model_args_record).evaluate()


def inspect_task(name: str, num_fewshot: int, custom_tasks: str | None, dataset_dir: str | None) -> str:
    """Config, dataset and one rendered prompt (when the data can be loaded)."""
    from lighteval_like.data import DataSource
    from lighteval_like.errors import DatasetUnavailableError
    from lighteval_like.samples import PromptOptions, build_samples, make_docs
    from lighteval_like.tasks.registry import Registry

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
    source = DataSource.from_env(dataset_dir)
    try:
        rows = source.load_rows(cfg, cfg.evaluation_split, limit=1)
        pool = []
        if num_fewshot:
            pool, _ = make_docs(cfg, source.load_rows(cfg, cfg.few_shots_split or cfg.evaluation_split), True)
        docs, _ = make_docs(cfg, rows, skip_bad=False)
    except DatasetUnavailableError as e:
        lines.append(f"example:       unavailable ({e})")
        return "\n".join(lines)
    same = (cfg.few_shots_split or cfg.evaluation_split) == cfg.evaluation_split
    sample = build_samples(cfg.full_name, cfg, docs, pool, same, num_fewshot, False, PromptOptions())[0]
    lines.append(f"\n--- example (doc 0, {num_fewshot}-shot) ---")
    for i, request in enumerate(sample.requests):
        lines.append(f"[request {i}] {request!r}")
    lines.append(f"gold: {sample.doc.gold_indices}")
    return "\n".join(lines)
