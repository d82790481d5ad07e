"""`lighteval-like tasks score`: a file of responses written elsewhere (another harness, an API,
a paper's published outputs) scored by a generative task's metrics, without a model.

The file holds one JSON object a line, `{"prompt": ..., "response": ...}`; each response is paired
with the task's doc whose query is that prompt. Only the docs with a response are scored. A line
that is not such an object, a prompt that matches no doc, or a prompt given twice stops the run
with one line naming it (with `--skip_bad_samples`, the responses to the rows skipped as bad are
left out and counted).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from lighteval_like.api.errors import UsageError
from lighteval_like.api.generation import GenerationParameters
from lighteval_like.api.requests import GenerationResponse
from lighteval_like.api.sample import Sample
from lighteval_like.evaluation.samples import PromptOptions, build_samples
from lighteval_like.evaluation.scoring import ScoringContext, needing, require_judge, score_task, task_metrics
from lighteval_like.metrics.library import CODE_EXECUTION
from lighteval_like.results.record import TaskScores
from lighteval_like.tasks.config import RequestType
from lighteval_like.tasks.data import DataSource
from lighteval_like.tasks.docs import TaskData, load_task_data
from lighteval_like.tasks.registry import Registry
from lighteval_like.tasks.specs import parse_task_specs

logger = logging.getLogger(__name__)


@dataclass
class ScoredResponses:
    """Each task's scores (by task key, as in results files), its version, the bad rows it skipped
    (`--skip_bad_samples`) and the scored samples."""

    results: dict[str, TaskScores]
    versions: dict[str, int]
    skipped: dict[str, int]
    samples: list[Sample]

    def as_json(self) -> dict:
        """`{"results": {task: {metric: value}}}`."""
        return {"results": {task: {m: s.value for m, s in scores.items()} for task, scores in self.results.items()}}


def read_responses(path: str) -> dict[str, str]:
    """{prompt: response} from a JSON-lines file (blank lines ignored)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UsageError(f"cannot read responses file '{path}': {e.strerror}; pass a JSON-lines file") from e
    out: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}:{number}: not JSON ({e.msg}); each line must be {{\"prompt\": ..., \"response\": ...}}") from e
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("prompt", "response")):
            raise UsageError(f"{path}:{number}: needs string fields 'prompt' and 'response'")
        if row["prompt"] in out:
            raise UsageError(f"{path}:{number}: prompt {_short(row['prompt'])} appears twice; keep one response per prompt")
        out[row["prompt"]] = row["response"]
    return out


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _pair(data: TaskData, responses: dict[str, str], path: str) -> list[Sample]:
    """The task's samples that have a response, the response set as their generation. Responses
    whose prompt matches no doc are refused, except as many as the bad rows the task skipped
    (`--skip_bad_samples`: their prompts have no doc), which are left out with a warning."""
    samples = {s.doc.query: s for s in build_samples(data, PromptOptions())}
    unmatched = [p for p in responses if p not in samples]
    if len(unmatched) > data.skipped:
        raise UsageError(f"{path}: the response to prompt {_short(unmatched[0])} matches no doc of task "
                         f"{data.task.key}; score it against the task its prompt came from")
    if unmatched:
        logger.warning("%s: %d response(s) left out: their rows were skipped as bad samples", path, len(unmatched))
    paired = []
    for prompt, response in responses.items():
        if prompt in samples:
            samples[prompt].responses = [GenerationResponse(response, num_tokens=0)]
            paired.append(samples[prompt])
    return sorted(paired, key=lambda s: s.doc_index)


def score_responses(tasks: str, path: str, dataset_dir: str | None = None, custom_tasks: str | None = None,
                    skip_bad_samples: bool = False) -> ScoredResponses:
    """Score the responses of `path` for every (generative) task of the `tasks` specs."""
    responses = read_responses(path)
    resolved = Registry(custom_tasks).resolve(parse_task_specs(tasks))
    not_generative = [t.key for t in resolved if t.config.request_type != RequestType.GENERATIVE]
    if not_generative:
        raise UsageError(f"tasks score takes generative tasks only; {', '.join(not_generative)} score loglikelihoods")
    metrics = task_metrics(resolved, GenerationParameters())
    running_code = list(dict.fromkeys(t.key for t, _ in needing(resolved, metrics, CODE_EXECUTION)))
    if running_code:
        raise UsageError(f"tasks score runs no model-written code; score {', '.join(running_code)} with "
                         "`accelerate ... --allow_code_execution`, which runs it sandboxed")
    require_judge(resolved, metrics, False, "tasks score asks no judge; score it with `accelerate` and a judge model")
    source = DataSource.from_env(dataset_dir)
    scored = ScoredResponses({}, {t.key: t.config.version for t in resolved}, {}, [])
    for task in resolved:
        data = load_task_data(source, task, None, skip_bad_samples)
        paired = _pair(data, responses, path)
        scored.results[task.key] = score_task(paired, metrics[task.key], ScoringContext())
        scored.skipped[task.key] = data.skipped
        scored.samples += paired
    return scored
