"""Command line: `lighteval-like accelerate|vllm|endpoint|distributed|tasks ...` (thin shells over the pipeline)."""

from __future__ import annotations

import atexit
import functools
import gc
import logging
import os
import signal
import sys
import traceback

import click

from lighteval_like.api.errors import LightevalLikeError, UsageError


def _close_progress_bars() -> None:
    """A bar left open by the failed stage would share its line with the error (and be
    redrawn after it): close them all first, so the message stands on its own line."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so it ends as an interrupt does (bars closed, a line)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


KEPT = "responses scored so far are kept in the response cache (unless --no_cache): rerun to resume"


def _leave_objects_to_the_exit() -> None:
    """The interpreter's last collection at exit walks every object torch and transformers made
    (about a second on 2 cores); frozen, they are left to the end of the process. Not for vLLM:
    its nanobind extensions report uncollected objects as leaks at exit."""
    atexit.register(gc.freeze)


def reports_errors(fn):
    """Our errors become one line on stderr and their exit code; `--debug` shows the traceback.
    An error carrying a finished run's report (results not saved) prints the score table first."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = kwargs.get("debug") or os.environ.get("LIGHTEVAL_LIKE_DEBUG")
        signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            return fn(*args, **kwargs)
        except LightevalLikeError as e:
            _close_progress_bars()
            if debug:
                traceback.print_exc()
            report = getattr(e, "report", None)
            if report is not None:
                _print_table(report)
            click.echo(f"lighteval-like: error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            _close_progress_bars()
            click.echo(f"lighteval-like: interrupted; {KEPT}", err=True)
            sys.exit(130)
        except Terminated:
            _close_progress_bars()
            click.echo(f"lighteval-like: terminated (SIGTERM); {KEPT}", err=True)
            sys.exit(143)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lighteval-like")
def main() -> None:
    """Evaluate language models on standard benchmarks."""
    logging.basicConfig(level=os.environ.get("LIGHTEVAL_LIKE_LOGLEVEL", "WARNING"))


def _print_table(report) -> None:
    from lighteval_like.results.outputs import format_table

    click.echo(format_table(report.results, report.versions))


def _print_summary(result) -> None:
    report = result.report
    _print_table(report)
    click.echo(f"\nResults written to {result.results_path}")
    for path in result.details_paths:
        click.echo(f"Details written to {path}")
    if result.tensorboard_path:
        click.echo(f"TensorBoard scalars written to {result.tensorboard_path}")
    for task, summary in report.summary_tasks.items():
        if summary.judge_unparsed:
            click.echo(f"{task}: {summary.judge_unparsed} judge verdict(s) without a rating, left out of the scores")
    cache = report.summary_general.response_cache
    if cache.enabled:
        click.echo(f"Response cache: {cache.hits} reused, {cache.computed} computed")
    judge = report.summary_general.judge
    if judge and judge["response_cache"]["enabled"]:
        click.echo(f"Judge response cache: {judge['response_cache']['hits']} reused, "
                   f"{judge['response_cache']['computed']} computed")


JUDGE_OPTION = click.option(
    "--judge_model_args",
    help="The judge model of judge metrics (mt_bench) 'k=v,...', as --model_args, with judge_backend="
         "endpoint (the default with base_url=), vllm or transformers (the default otherwise).")


def _run_options(fn):
    """The options `accelerate` and `vllm` share: the model, the tasks, the outputs and the run."""
    options = [
        click.option("--model_args", help="Model arguments 'k=v,k=v' (pretrained=..., dtype=..., ...)."),
        click.option("--model_config_path", type=click.Path(),
                     help="YAML file of model arguments (instead of --model_args)."),
        click.option("--tasks", required=True, help="Task specs 'suite|task|fewshot|truncate,...' or a task-list file."),
        click.option("--output_dir", default="results", show_default=True, help="Where results and details are written."),
        click.option("--max_samples", type=click.IntRange(min=1), help="Evaluate only the first N docs of each task."),
        click.option("--save_details", is_flag=True, help="Write per-sample details as parquet."),
        click.option("--custom_tasks", type=click.Path(), help="Python file defining TASKS_TABLE."),
        click.option("--use_chat_template", is_flag=True, help="Render prompts with the tokenizer's chat template."),
        click.option("--system_prompt", help="System prompt placed before every context."),
        click.option("--num_fewshot_seeds", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Evaluate each doc with this many few-shot draws."),
        click.option("--job_id", help="Free-form id recorded in the results."),
        click.option("--cache_dir", type=click.Path(),
                     help="Cache folder for models, datasets and the response cache (<dir>/responses; "
                          "default $LIGHTEVAL_LIKE_CACHE, else ~/.cache/lighteval_like)."),
        click.option("--no_cache", is_flag=True,
                     help="Neither reuse nor save responses (by default a rerun of a killed run resumes)."),
        click.option("--dataset_dir", type=click.Path(),
                     help="Local hub mirror (else $LIGHTEVAL_LIKE_DATA_DIR, else the hub)."),
        click.option("--dataset_loading_processes", type=click.IntRange(min=1), default=1, show_default=True),
        click.option("--seed", type=int, default=1234, show_default=True,
                     help="Seed of the few-shot draws, and of sampled generations unless generation_parameters sets one."),
        click.option("--remove_reasoning_tags", is_flag=True,
                     help="Cut reasoning blocks (<think>...</think>) out of generations before answers are extracted."),
        click.option("--reasoning_tags", help="The reasoning tag pairs 'open,close;open,close' (default '<think>,</think>')."),
        click.option("--gen_kwargs", help="Generation parameters 'temperature=0.2,top_p=0.95,num_samples=4,...' (lm-eval's "
                     "syntax); they win over generation_parameters= and the tasks' defaults."),
        click.option("--skip_bad_samples", is_flag=True, help="Skip (and count) dataset rows that break a prompt function."),
        click.option("--allow_code_execution", is_flag=True,
                     help="Let code tasks (humaneval) run the programs the model writes, sandboxed."),
        click.option("--allow_weaker_isolation", is_flag=True,
                     help="With --allow_code_execution: accept weaker isolation than bubblewrap where it is missing."),
        click.option("--push_to_tensorboard", is_flag=True,
                     help="Also write the scores as TensorBoard scalars under <output_dir>/tensorboard/<model_name>/."),
        click.option("--checkpoint_step", type=click.IntRange(min=0),
                     help="TensorBoard step of this evaluation (the checkpoint's training step; default: the job's order)."),
        JUDGE_OPTION,
        click.option("--debug", is_flag=True, help="Show tracebacks of errors."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@main.command("accelerate")
@_run_options
@click.option("--override_batch_size", type=int, default=-1, show_default=True,
              help="Sequences per forward pass per process (a positive integer); -1 = automatic (token budget, halves on OOM).")
@reports_errors
def accelerate_command(**kwargs) -> None:
    """Evaluate a transformers model (single process, or data parallel under `accelerate launch`)."""
    from lighteval_like.cli.entrypoints import run_accelerate

    kwargs.pop("debug")  # read by reports_errors
    _leave_objects_to_the_exit()
    result = run_accelerate(**kwargs)
    if result is not None:
        _print_summary(result)


@main.command("vllm")
@_run_options
@reports_errors
def vllm_command(**kwargs) -> None:
    """Evaluate with vLLM: tensor/pipeline parallel in the engine, data parallel over engine replicas
    (model args tensor_parallel_size, pipeline_parallel_size, data_parallel_size)."""
    from lighteval_like.cli.entrypoints import run_vllm

    kwargs.pop("debug")  # read by reports_errors
    _print_summary(run_vllm(**kwargs))


@main.command("endpoint")
@_run_options
@reports_errors
def endpoint_command(**kwargs) -> None:
    """Evaluate a model behind an OpenAI-compatible server (vLLM, SGLang, ...): model args base_url
    (several separated by ';'), model, tokenizer (needed for loglikelihood tasks), api_key_env, ..."""
    from lighteval_like.cli.entrypoints import run_endpoint

    kwargs.pop("debug")  # read by reports_errors
    _print_summary(run_endpoint(**kwargs))


def _distributed_options(fn):
    fn = click.option("--debug", is_flag=True, help="Show tracebacks of errors.")(fn)
    fn = JUDGE_OPTION(fn)
    fn = click.option("--lighteval_config_path", type=click.Path(),
                      help="YAML of the run: tasks, batch_size, generation, logging, parallelism (dp, tp, pp).")(fn)
    return click.option("--checkpoint_config_path", type=click.Path(),
                        help="The model: a nanotron checkpoint's config.yaml (or its step or run folder), "
                             "or a YAML of model args (pretrained, dtype, revision, tokenizer, ...).")(fn)


@main.command("distributed")
@_distributed_options
@reports_errors
def distributed_command(checkpoint_config_path: str | None, lighteval_config_path: str | None,
                        judge_model_args: str | None, debug: bool) -> None:
    """Evaluate under torchrun with data, tensor and pipeline parallelism (WORLD_SIZE = dp*tp*pp);
    a judge model (--judge_model_args) runs on global rank 0 by itself."""
    from lighteval_like.cli.entrypoints import run_distributed

    if not checkpoint_config_path or not lighteval_config_path:
        raise UsageError("pass --checkpoint_config_path and --lighteval_config_path (see examples/nanotron/)")
    _leave_objects_to_the_exit()
    result = run_distributed(checkpoint_config_path, lighteval_config_path, debug, judge_model_args)
    if result is not None:
        _print_summary(result)


@main.group("nanotron", invoke_without_command=True)
@_distributed_options
@click.pass_context
def nanotron_group(ctx: click.Context, **kwargs) -> None:
    """`distributed` for nanotron checkpoints (as lighteval's entry point), and `inspect`."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(distributed_command, **kwargs)


@nanotron_group.command("inspect")
@click.argument("path", type=click.Path())
@reports_errors
def nanotron_inspect(path: str) -> None:
    """What a nanotron checkpoint is (architecture, parameters, saved tp/pp, dtype, step, tokenizer),
    read without loading its weights."""
    from lighteval_like.models.nanotron.checkpoint import inspect_checkpoint

    click.echo(inspect_checkpoint(path))


@main.group("tasks")
def tasks_group() -> None:
    """List and inspect the available tasks; score responses written elsewhere."""


@tasks_group.command("list")
@click.option("--suite", help="Only tasks of this suite.")
@click.option("--custom_tasks", type=click.Path(), help="Python file defining TASKS_TABLE.")
@reports_errors
def tasks_list(suite: str | None, custom_tasks: str | None) -> None:
    """Print every task as suite|name."""
    from lighteval_like.tasks.registry import Registry

    registry = Registry(custom_tasks)
    names = registry.names(suite)
    if not names:
        raise UsageError(f"no tasks in suite '{suite}': suites are {', '.join(sorted({n.split('|')[0] for n in registry.names()}))}")
    for name in names:
        click.echo(name)
    for group in sorted(registry.groups.values(), key=lambda g: g.full_name):
        if suite is not None and group.suite != suite:
            continue
        if group.name:
            click.echo(f"{group.full_name}  (group of {len(group.members)} tasks, average {group.average_key('K')})")
        else:
            click.echo(f"{group.suite}|_average  (average of the suite's tasks that ran: {group.average_key('K')})")


@tasks_group.command("inspect")
@click.argument("name")
@click.option("--num_fewshot", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--custom_tasks", type=click.Path(), help="Python file defining TASKS_TABLE.")
@click.option("--dataset_dir", type=click.Path(), help="Local hub mirror (else $LIGHTEVAL_LIKE_DATA_DIR).")
@reports_errors
def tasks_inspect(name: str, num_fewshot: int, custom_tasks: str | None, dataset_dir: str | None) -> None:
    """Show a task's dataset, metrics and a rendered example prompt."""
    from lighteval_like.cli.entrypoints import inspect_task

    click.echo(inspect_task(name, num_fewshot, custom_tasks, dataset_dir))


@tasks_group.command("score")
@click.argument("tasks")
@click.option("--responses", "responses_path", required=True, type=click.Path(),
              help='JSON-lines file of {"prompt": ..., "response": ...}, paired with the docs by prompt.')
@click.option("--json", "json_path", type=click.Path(), help='Also write {"results": {task: {metric: value}}} here.')
@click.option("--custom_tasks", type=click.Path(), help="Python file defining TASKS_TABLE.")
@click.option("--dataset_dir", type=click.Path(), help="Local hub mirror (else $LIGHTEVAL_LIKE_DATA_DIR).")
@click.option("--skip_bad_samples", is_flag=True, help="Skip (and count) dataset rows that break a prompt function.")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@reports_errors
def tasks_score(tasks: str, responses_path: str, json_path: str | None, custom_tasks: str | None,
                dataset_dir: str | None, skip_bad_samples: bool, debug: bool) -> None:
    """Score responses written elsewhere with generative TASKS' metrics, without a model."""
    import json

    from lighteval_like.evaluation.response_scoring import score_responses
    from lighteval_like.results.outputs import atomic_write, format_table

    scored = score_responses(tasks, responses_path, dataset_dir, custom_tasks, skip_bad_samples)
    click.echo(format_table(scored.results, scored.versions))
    for task, skipped in scored.skipped.items():
        if skipped:
            click.echo(f"{task}: {skipped} bad row(s) skipped (--skip_bad_samples)")
    if json_path:
        atomic_write(json_path, _text_writer(json.dumps(scored.as_json(), indent=2)))
        click.echo(f"Written to {json_path}")


@main.command("compare")
@click.argument("run_a", type=click.Path())
@click.argument("run_b", type=click.Path())
@click.option("--allow_different_prompts", is_flag=True,
              help="Compare tasks whose runs scored different docs or prompts (paired over the common docs).")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05, show_default=True,
              help="Significance level of the verdicts (after Holm's adjustment) and of the intervals.")
@click.option("--json", "json_path", type=click.Path(), help="Also write the comparison as JSON to this file.")
@click.option("--markdown", "markdown_path", type=click.Path(), help="Also write the table as Markdown to this file.")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@reports_errors
def compare_command(run_a: str, run_b: str, allow_different_prompts: bool, alpha: float,
                    json_path: str | None, markdown_path: str | None, debug: bool) -> None:
    """Is run B better than run A? Paired tests per task and metric (RUN: results file or output dir)."""
    from lighteval_like.results import compare
    from lighteval_like.results.outputs import atomic_write
    from lighteval_like.results.runs import load_one

    result = compare.compare_runs(load_one(run_a), load_one(run_b), allow_different_prompts, alpha)
    click.echo(compare.format_text(result))
    for path, render in ((json_path, compare.format_json), (markdown_path, compare.format_markdown)):
        if path:
            atomic_write(path, _text_writer(render(result)))
            click.echo(f"Written to {path}")


def _text_writer(text: str):
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return write


@main.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", default="report.html", show_default=True, type=click.Path(),
              help="The HTML file to write.")
@click.option("--checkpoints", is_flag=True,
              help="The runs are checkpoints of one model in command-line order: plot each task over them.")
@click.option("--label", "labels", multiple=True, help="Name of each run in order (repeat; default: its folder).")
@click.option("--max_samples_per_task", type=click.IntRange(min=0), default=500, show_default=True,
              help="Docs per task kept in the per-sample browser (0: none).")
@click.option("--title", default="Evaluation report", show_default=True)
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@reports_errors
def report_command(runs: tuple[str, ...], output: str, checkpoints: bool, labels: tuple[str, ...],
                   max_samples_per_task: int, title: str, debug: bool) -> None:
    """One self-contained HTML report of one or several runs (RUN: results file or output dir)."""
    from lighteval_like.results.report import write_report
    from lighteval_like.results.runs import load_many

    loaded = load_many(list(runs))
    if labels:
        if len(labels) != len(loaded):
            raise UsageError(f"{len(labels)} --label given for {len(loaded)} runs: give one per run")
        for run, label in zip(loaded, labels):
            run.label = label
    size = write_report(loaded, output, title=title, checkpoints=checkpoints or None,
                        max_samples_per_task=max_samples_per_task)
    click.echo(f"Report of {len(loaded)} run(s) written to {output} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
