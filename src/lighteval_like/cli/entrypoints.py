"""Flags -> a backend, its config and the run options -> `run`, for each entry point; plus `tasks inspect`.

`run` is the one path from a config to results: the entry points differ only in the backend
they choose (models/registry.py), the flags they read and the launch they run under."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

from lighteval_like.api.errors import ModelArgsError, UsageError
from lighteval_like.api.generation import parse_gen_kwargs
from lighteval_like.api.typed_config import keys_of
from lighteval_like.evaluation.pipeline import Pipeline, PipelineParameters
from lighteval_like.evaluation.reasoning import parse_reasoning_tags
from lighteval_like.metrics.judge import JudgeModel
from lighteval_like.models.config import BackendConfig
from lighteval_like.models.model_args import ModelConfig, load_model_config, parse_model_args, top_level_parts
from lighteval_like.models.prompt_encoder import PreviewEncoder
from lighteval_like.models.registry import Backend, LoadContext, get_backend
from lighteval_like.models.transformers.config import TransformersModelConfig
from lighteval_like.results.outputs import EvaluationResult
from lighteval_like.tasks.config import RequestType, TaskConfig
from lighteval_like.tasks.docs import load_task_data
from lighteval_like.tasks.registry import Registry
from lighteval_like.tasks.specs import parse_task_specs

if TYPE_CHECKING:
    from lighteval_like.cli.override_config import ParallelismArgs
    from lighteval_like.runtime.launch import TorchrunEnv

Launch = AbstractContextManager[LoadContext]


def _refuse_without_tokens(backend: Backend, config: BackendConfig, params: PipelineParameters) -> None:
    """Model args that give the backend no tokenizer (`BackendConfig.counts_tokens`): truncation and
    loglikelihood tasks (their token boundaries are the tokenizer's) are refused before anything loads."""
    if config.counts_tokens:
        return
    specs = parse_task_specs(params.tasks)
    cut = [s for s in specs if s.truncate_fewshot]
    if cut:
        raise UsageError(f"task {cut[0].key} asks for truncate=1, but backend '{backend.name}' counts no tokens: "
                         "use truncate=0 (suite|task|fewshot|0), or give the backend a tokenizer")
    tasks = Registry(params.custom_tasks).resolve(specs)
    scored = [t for t in tasks if t.config.request_type != RequestType.GENERATIVE]
    if scored:
        raise UsageError(f"task {scored[0].spec.key} scores loglikelihoods, but backend '{backend.name}' has no "
                         "tokenizer to decide token boundaries: pass tokenizer=<the served model's tokenizer folder>")


CHAT_FLAG = "pass --use_chat_template"


def _refuse_bare_prompts(config: BackendConfig, params: PipelineParameters, fix: str) -> None:
    """A task that asks a chat model (`TaskConfig.needs_chat_template`) in a run whose prompts are
    bare text is refused before anything loads, with `fix` (how the entry point asks for the chat
    template). An endpoint's `chat` alone does not do: its prompts stay text, the second turn of a
    conversation one user message; a backend without a tokenizer needs one to render the turns."""
    if params.use_chat_template:
        return
    tasks = Registry(params.custom_tasks).resolve(parse_task_specs(params.tasks))
    chat = next((t for t in tasks if t.config.needs_chat_template), None)
    if chat is not None:
        tokenizer = ("" if config.counts_tokens
                     else ", with tokenizer=<the served model's folder> in the model args to render its turns")
        raise UsageError(f"task {chat.spec.key} asks a chat model the turns of a conversation: {fix}{tokenizer}")


def run(backend_name: str, config: BackendConfig, params: PipelineParameters, launch: Launch,
        gen_kwargs: str | None = None, remove_reasoning_tags: bool = False,
        reasoning_tags: str | None = None, judge: tuple[str, BackendConfig] | None = None,
        chat_fix: str = CHAT_FLAG) -> EvaluationResult | None:
    """Evaluate `config` with the named backend under `launch` (which starts the processes and
    says where the model loads); returns the results on the main process. The run options the
    model args set (`BackendConfig.run_defaults`) fill those the flags left unset. `judge` (a
    backend's name and its config) answers judge metrics once the evaluated model is closed: the
    pipeline closes it, and nothing here keeps a reference to it. `chat_fix` says how to ask for
    the chat template a task may need (`_refuse_bare_prompts`)."""
    backend = get_backend(backend_name)
    backend.check()  # before the data loads
    judge_backend = get_backend(judge[0]) if judge else None
    if judge_backend is not None:
        judge_backend.check()
    _refuse_without_tokens(backend, config, params)
    defaults = {k: getattr(params, k) or v for k, v in config.run_defaults().items()}
    params = dataclasses.replace(params, **defaults)
    _refuse_bare_prompts(config, params, chat_fix)
    params = dataclasses.replace(params, **generation_options(params.generation, gen_kwargs, remove_reasoning_tags,
                                                              reasoning_tags))
    with launch as context:
        judge_model = _judge_model(judge_backend, judge[1], context) if judge_backend is not None else None
        context = dataclasses.replace(context, batch_size=params.batch_size)
        return Pipeline(params, functools.partial(backend.load, config, context), context.process,
                        model_args_record(config), judge_model, backend.close).evaluate()


def _judge_model(backend: Backend, config: BackendConfig, context: LoadContext) -> JudgeModel:
    """The judge, loaded where the launch put the evaluated model's ranks: data parallel over them
    (accelerate, one process); under torchrun, whose mesh places the evaluated model alone, on the
    main process by itself (its device, no placement) while the other ranks wait."""
    process = context.process.by_itself() if context.placement is not None else None
    if process is not None:
        context = LoadContext(process, context.device)
    return JudgeModel(functools.partial(backend.load, config, context), model_args_record(config), backend.close,
                      backend.name, process)


JUDGE_BACKEND_KEY = "judge_backend"
JUDGE_BACKENDS = ("endpoint", "vllm", "transformers")


def judge_from_flags(judge_model_args: str | None, cache_dir: str | None) -> tuple[str, BackendConfig] | None:
    """`--judge_model_args "k=v,..."`: the judge's backend (its `judge_backend=` entry: `endpoint`,
    the default with base_url=, `vllm` or `transformers`, the default otherwise) and its config,
    parsed as `--model_args` are. Its prompts are chat prompts, so an endpoint judge needs `chat`
    (the server's template) or a tokenizer (whose template renders them)."""
    if not judge_model_args:
        return None
    parts = [p for p in top_level_parts(judge_model_args) if p.strip()]
    named = [p.partition("=")[2].strip() for p in parts if p.partition("=")[0].strip() == JUDGE_BACKEND_KEY]
    rest = ",".join(p for p in parts if p.partition("=")[0].strip() != JUDGE_BACKEND_KEY)
    default = "endpoint" if any(p.partition("=")[0].strip() == "base_url" for p in parts) else "transformers"
    name = named[0] if named else default
    if name not in JUDGE_BACKENDS or len(named) > 1:
        raise UsageError(f"--judge_model_args: {JUDGE_BACKEND_KEY}={','.join(named)} is not one judge backend: "
                         f"give one of {', '.join(JUDGE_BACKENDS)}")
    try:
        config = parse_model_args(rest, get_backend(name).config_class)
    except ModelArgsError as e:
        raise ModelArgsError(f"--judge_model_args ({name} judge): {e}") from None
    if name == "endpoint" and not (config.chat or config.tokenizer):
        raise UsageError("--judge_model_args: the judge is asked chat prompts (a system and a user message): add chat "
                         "(the server applies its chat template) or tokenizer=<the served model's folder>")
    if cache_dir:
        config.cache_dir = cache_dir
    return name, config


def model_config_from_flags(model_args: str | None, model_config_path: str | None,
                            cls: type[ModelConfig] = TransformersModelConfig) -> ModelConfig:
    if bool(model_args) == bool(model_config_path):
        raise UsageError("pass exactly one of --model_args 'pretrained=...,dtype=...' or --model_config_path <yaml>")
    return parse_model_args(model_args, cls) if model_args else load_model_config(model_config_path, cls)


def run_from_flags(backend_name: str, launch: Launch, model_args: str | None, model_config_path: str | None,
              cache_dir: str | None, gen_kwargs: str | None = None, remove_reasoning_tags: bool = False,
              reasoning_tags: str | None = None, judge_model_args: str | None = None,
              **pipeline_flags) -> EvaluationResult | None:
    """`run` from the flags `accelerate`, `vllm` and `endpoint` share (`commands._run_options`)."""
    config = model_config_from_flags(model_args, model_config_path, get_backend(backend_name).config_class)
    if cache_dir:
        config.cache_dir = cache_dir
    judge = judge_from_flags(judge_model_args, cache_dir)
    params = PipelineParameters(**pipeline_flags, cache_dir=cache_dir)
    return run(backend_name, config, params, launch, gen_kwargs, remove_reasoning_tags, reasoning_tags, judge)


def run_accelerate(model_args: str | None, model_config_path: str | None, override_batch_size: int,
                   cache_dir: str | None, **flags) -> EvaluationResult | None:
    """Evaluate a transformers model under Accelerate: one process, or data parallel under `accelerate launch`."""
    if override_batch_size == 0 or override_batch_size < -1:
        raise UsageError(f"--override_batch_size {override_batch_size} is not valid: pass a positive number of "
                         f"sequences per forward pass, or -1 (the default) for automatic")
    batch_size = override_batch_size if override_batch_size > 0 else None
    return run_from_flags("transformers", accelerate_launch(), model_args, model_config_path, cache_dir,
                     batch_size=batch_size, **flags)


def run_vllm(model_args: str | None, model_config_path: str | None, cache_dir: str | None,
             **flags) -> EvaluationResult:
    """Evaluate with vLLM in this process: the engine replicas are the backend's worker processes."""
    return run_from_flags("vllm", one_process(), model_args, model_config_path, cache_dir, **flags)


def run_endpoint(model_args: str | None, model_config_path: str | None, cache_dir: str | None,
                 **flags) -> EvaluationResult:
    """Evaluate a model behind an OpenAI-compatible server: this process sends the requests."""
    return run_from_flags("endpoint", one_process(), model_args, model_config_path, cache_dir, **flags)


@contextmanager
def one_process() -> Iterator[LoadContext]:
    """This process alone (vLLM's: its engine replicas are processes of the backend's own)."""
    from lighteval_like.runtime import ProcessContext

    yield LoadContext(ProcessContext())


@contextmanager
def accelerate_launch() -> Iterator[LoadContext]:
    """The ranks of `accelerate launch` (or one plain process), each on its device."""
    from lighteval_like.runtime.launch import accelerate_context

    process, device = accelerate_context()
    yield LoadContext(process, device)


def generation_options(defaults, gen_kwargs: str | None, remove_reasoning_tags: bool,
                       reasoning_tags: str | None) -> dict:
    """`PipelineParameters.generation` (`--gen_kwargs` over the model's generation_parameters)
    and `.reasoning_tags`, from the flags every entry point shares."""
    if reasoning_tags and not remove_reasoning_tags:
        raise UsageError("--reasoning_tags names the tags --remove_reasoning_tags cuts out: pass both")
    return {
        "generation": parse_gen_kwargs(gen_kwargs).over(defaults),
        "reasoning_tags": parse_reasoning_tags(reasoning_tags) if remove_reasoning_tags else None,
    }


def model_args_record(config: BackendConfig) -> dict:
    """The model args as recorded in the results and fingerprinted by the response cache
    (internal fields, such as where files are cached, are not model args)."""
    values = {k: getattr(config, k) for k in keys_of(type(config))}
    return {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in values.items()}


def run_distributed(
    checkpoint_config_path: str, lighteval_config_path: str, debug: bool = False, judge_model_args: str | None = None
) -> EvaluationResult | None:
    """Evaluate under torchrun over a (dp, pp, tp) mesh: the same run as `accelerate`, with the
    model placed on the mesh by the runtime (a judge runs on global rank 0 by itself: `_judge_model`).
    Returns the results on global rank 0."""
    from lighteval_like.cli.override_config import load_override_config
    from lighteval_like.runtime.launch import torchrun_env

    override = load_override_config(lighteval_config_path)
    judge = judge_from_flags(judge_model_args, override.logging.cache_dir)
    backend_name, config, step = checkpoint_model(checkpoint_config_path, override.tokenizer)
    env = torchrun_env(override.parallelism, checkpoint_config_path, lighteval_config_path)
    override.apply_to_model(config)
    params = override.pipeline_parameters()
    if params.checkpoint_step is None:
        params.checkpoint_step = step
    launch = torchrun_launch(override.parallelism, env, config.device, debug)
    chat_fix = f"set use_chat_template: true under tasks: in {lighteval_config_path}"
    return run(backend_name, config, params, launch, None, override.tasks.remove_reasoning_tags,
               override.tasks.reasoning_tags, judge, chat_fix)


@contextmanager
def torchrun_launch(parallelism: ParallelismArgs, env: TorchrunEnv, device: str | None,
                    debug: bool) -> Iterator[LoadContext]:
    """The torchrun ranks on their (dp, pp, tp) mesh; any rank's failure ends every rank (see fail_rank)."""
    from lighteval_like.runtime.faults import fail_rank
    from lighteval_like.runtime.launch import DistributedSession

    try:
        session = DistributedSession.start(parallelism, env, device)
        yield LoadContext(session.process, placement=session.placement())
    except BaseException as error:
        fail_rank(error, env, debug)
    session.close()


def checkpoint_model(path: str, tokenizer: str | None) -> tuple[str, TransformersModelConfig, int | None]:
    """`--checkpoint_config_path`: a nanotron checkpoint's config.yaml (or its step or run folder),
    read as it is, or our own model YAML; returns the backend that loads it, its model args and
    the training step (None for our own format)."""
    from lighteval_like.cli.override_config import load_checkpoint_config
    from lighteval_like.models.nanotron.checkpoint import is_nanotron_config, resolve_checkpoint

    if is_nanotron_config(path):
        from lighteval_like.models.nanotron.model import model_config_for

        checkpoint = resolve_checkpoint(path)
        return "nanotron", model_config_for(checkpoint, tokenizer=tokenizer), checkpoint.step
    config = load_checkpoint_config(path)
    if tokenizer:
        config.tokenizer = tokenizer
    return "transformers", config, None


def _fewshot_source(cfg: TaskConfig) -> str:
    if cfg.fewshot_rows:
        return f"the task's {len(cfg.fewshot_rows)} fixed examples"
    return cfg.few_shots_split or cfg.evaluation_split + " (doc excluded)"


def inspect_task(name: str, num_fewshot: int, custom_tasks: str | None, dataset_dir: str | None) -> str:
    """Config, dataset and one rendered prompt (when the data can be loaded)."""
    from lighteval_like.api.errors import DatasetUnavailableError
    from lighteval_like.evaluation.samples import PromptOptions, build_samples
    from lighteval_like.tasks.data import DataSource
    from lighteval_like.tasks.registry import Registry, ResolvedTask, resolve_metrics
    from lighteval_like.tasks.specs import TaskSpec

    registry = Registry(custom_tasks)
    full = name if "|" in name else next((n for n in registry.names() if n.split("|", 1)[1] == name), name)
    cfg = registry.get(full)
    lines = [
        f"task:          {cfg.full_name}",
        f"dataset:       {cfg.hf_repo} (subset {cfg.hf_subset or 'default'})"
        + (" [generated locally, no download]" if cfg.data_builder else ""),
        f"splits:        evaluation={cfg.evaluation_split} few-shot={_fewshot_source(cfg)} sampler={cfg.few_shots_select}",
        f"request type:  {cfg.request_type.value}",
        f"metrics:       {', '.join(m.name for m in resolve_metrics(cfg))}",
        f"prompt:        {cfg.prompt_function.__module__}.{cfg.prompt_function.__name__}",
    ]
    if cfg.generation_size:
        lines.append(f"generation:    max {cfg.generation_size} tokens, stop at {list(cfg.stop_sequences)}")
    if cfg.generation_parameters:
        lines.append(f"parameters:    {cfg.generation_parameters.record()}")
    task = ResolvedTask(TaskSpec(cfg.suite, cfg.name, num_fewshot, False), cfg)
    try:
        data = load_task_data(DataSource.from_env(dataset_dir), task, max_samples=1, skip_bad=False)
    except DatasetUnavailableError as e:
        lines.append(f"example:       unavailable ({e})")
        return "\n".join(lines)
    sample = build_samples(data, PromptOptions(encoder=PreviewEncoder()))[0]
    lines.append(f"\n--- example prompt (doc 0, {num_fewshot}-shot) ---")
    for context in dict.fromkeys(sample.contexts):
        lines.append(context)
        lines.append("---")
    lines += [f"turn {i + 2}, after the model's answer: {q!r}" for i, q in enumerate(sample.doc.next_turns)]
    for i, request in enumerate(sample.requests):
        target = getattr(request, "continuation", None) or getattr(request, "text", None)
        if target is None:
            target = f"<greedy generation, stop at {list(request.stop_sequences)}>"
        gold = " (gold)" if i in sample.doc.gold_indices else ""
        lines.append(f"choice {i}{gold}: {target!r}")
    return "\n".join(lines)
