"""`--push_to_tensorboard`: a run's scores as TensorBoard scalars, so that a training dashboard
shows evaluation curves next to the loss.

One event file per evaluation job under `<output_dir>/tensorboard/<model_name>/`; tags are
`<task_key>/<metric>` (e.g. `leaderboard|arc:challenge|25/acc_norm`, `all/acc`), with the
standard errors as `<task_key>/<metric>_stderr`. The step is the checkpoint's training step
(`--checkpoint_step`) or, without one, the job's order: the number of evaluation jobs already
written to that folder (0, 1, 2, ...).
"""

from __future__ import annotations

import glob
import os
import time

from lighteval_like.api.errors import UsageError

EVENTS_GLOB = "events.out.tfevents.*"


class TensorBoardUnavailableError(UsageError):
    """`--push_to_tensorboard` needs the tensorboard package."""


def tensorboard_dir(output_dir: str, model_name: str) -> str:
    return os.path.join(output_dir, "tensorboard", model_name)


def scalars(results: dict) -> dict[str, float]:
    """{tag: value} of every numeric score in a results file's `results` section."""
    section = results.get("results", results)
    out = {}
    for task, metrics in section.items():
        for metric, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{task}/{metric}"] = float(value)
    return out


def check_available() -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise TensorBoardUnavailableError(
            "--push_to_tensorboard needs the tensorboard package: pip install tensorboard"
        ) from None


def write_tensorboard(results: dict, output_dir: str, model_name: str, step: int | None = None) -> str:
    """Write the scores of `results` (a results file's content, or its `results` section) as
    scalars at `step` (None: the job's order). Returns the event file's path."""
    check_available()
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    folder = tensorboard_dir(output_dir, model_name)
    os.makedirs(folder, exist_ok=True)
    before = set(glob.glob(os.path.join(glob.escape(folder), EVENTS_GLOB)))
    if step is None:
        step = len(before)
    writer = EventFileWriter(folder, filename_suffix=f".step{step}")
    try:
        values = [summary_pb2.Summary.Value(tag=tag, simple_value=value) for tag, value in scalars(results).items()]
        writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=values)))
    finally:
        writer.close()
    (path,) = set(glob.glob(os.path.join(glob.escape(folder), EVENTS_GLOB))) - before
    return path
