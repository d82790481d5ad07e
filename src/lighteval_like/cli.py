"""Command line: `lighteval-like accelerate|distributed|tasks ...` (thin shells over the pipeline)."""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback

import click

from lighteval_like.errors import LightevalLikeError, UsageError


def _close_progress_bars() -> None:
    """A bar left open by the failed stage would share its line with the error (and be
    redrawn after it): close them all first, so the message stands on its own line."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def reports_errors(fn):
    """Our errors become one line on stderr and their exit code; `--debug` shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = kwargs.get("debug") or os.environ.get("LIGHTEVAL_LIKE_DEBUG")
        try:
            return fn(*args, **kwargs)
        except LightevalLikeError as e:
            _close_progress_bars()
            if debug:
                traceback.print_exc()
            click.echo(f"lighteval-like: error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            _close_progress_bars()
            click.echo("lighteval-like: interrupted", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lighteval-like")
def main() -> None:
    """Evaluate language models on standard benchmarks."""
    logging.basicConfig(level=os.environ.get("LIGHTEVAL_LIKE_LOGLEVEL", "WARNING"))


def _print_summary(result) -> None:
    from lighteval_like.outputs import format_table

    report = result.report
    click.echo(format_table(report.results, report.versions))
    click.echo(f"\nResults written to {result.results_path}")
    for path in result.details_paths:
        click.echo(f"Details written to {path}")
    cache = report.summary_general.response_cache
    if cache.enabled:
        click.echo(f"Response cache: {cache.hits} reused, {cache.computed} computed")


@main.command("accelerate")
@click.option("--model_args", help="Model arguments 'k=v,k=v' (pretrained=..., dtype=..., ...).")
@click.option("--model_config_path", type=click.Path(), help="YAML file of model arguments (instead of --model_args).")
@click.option("--tasks", required=True, help="Task specs 'suite|task|fewshot|truncate,...' or a task-list file.")
@click.option("--output_dir", default="results", show_default=True, help="Where results and details are written.")
@click.option("--override_batch_size", type=int, default=-1, show_default=True,
              help="Sequences per forward pass per process; -1 = automatic (token budget, halves on OOM).")
@click.option("--max_samples", type=click.IntRange(min=1), help="Evaluate only the first N docs of each task.")
@click.option("--save_details", is_flag=True, help="Write per-sample details as parquet.")
@click.option("--custom_tasks", type=click.Path(), help="Python file defining TASKS_TABLE.")
@click.option("--use_chat_template", is_flag=True, help="Render prompts with the tokenizer's chat template.")
@click.option("--system_prompt", help="System prompt placed before every context.")
@click.option("--num_fewshot_seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Evaluate each doc with this many few-shot draws.")
@click.option("--job_id", help="Free-form id recorded in the results.")
@click.option("--cache_dir", type=click.Path(),
              help="Cache folder for models, datasets and the response cache (<dir>/responses; "
                   "default $LIGHTEVAL_LIKE_CACHE, else ~/.cache/lighteval_like).")
@click.option("--no_cache", is_flag=True,
              help="Neither reuse nor save responses (by default a rerun of a killed run resumes).")
@click.option("--dataset_dir", type=click.Path(), help="Local hub mirror (else $LIGHTEVAL_LIKE_DATA_DIR, else the hub).")
@click.option("--dataset_loading_processes", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seed", type=int, default=1234, show_default=True, help="Seed of the few-shot draws.")
@click.option("--skip_bad_samples", is_flag=True, help="Skip (and count) dataset rows that break a prompt function.")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@reports_errors
def accelerate_command(**kwargs) -> None:
    """Evaluate a transformers model (single process, or data parallel under `accelerate launch`)."""
    from lighteval_like.entrypoints import run_accelerate

    kwargs.pop("debug")  # read by reports_errors
    result = run_accelerate(**kwargs)
    if result is not None:
        _print_summary(result)


@main.command("distributed")
@click.option("--checkpoint_config_path", required=True, type=click.Path(),
              help="YAML of the model: pretrained (path or hub id), dtype, revision, tokenizer, ...")
@click.option("--lighteval_config_path", required=True, type=click.Path(),
              help="YAML of the run: tasks, batch_size, generation, logging, parallelism (dp, tp, pp).")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@reports_errors
def distributed_command(**kwargs) -> None:
    """Evaluate under torchrun with data, tensor and pipeline parallelism (WORLD_SIZE = dp*tp*pp)."""
    from lighteval_like.entrypoints import run_distributed

    result = run_distributed(**kwargs)
    if result is not None:
        _print_summary(result)


main.add_command(distributed_command, "nanotron")


@main.group("tasks")
def tasks_group() -> None:
    """List and inspect the available tasks."""


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
    from lighteval_like.entrypoints import inspect_task

    click.echo(inspect_task(name, num_fewshot, custom_tasks, dataset_dir))


if __name__ == "__main__":
    main()
