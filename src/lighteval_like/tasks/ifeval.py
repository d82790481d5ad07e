"""IFEval (Zhou et al. 2023): prompts with verifiable instructions ("answer in fewer than 300 words",
"wrap your answer in JSON", ...), 541 rows of `google/IFEval`.

Conventions as lm-eval 0.4.13's `ifeval` and lighteval's `leaderboard|ifeval`: zero-shot, the prompt
as is (`--use_chat_template` renders it as the user's turn, as the leaderboard runs it), greedy
generation of up to 1,280 new tokens with no stop sequence. Each instruction of a row is checked
(`ifeval_instructions`) strictly, on the response, and loosely, where any of eight variants may
follow it: the response, without its first line, its last line or both, each also with every `*`
removed. Metrics: `prompt_level_{strict,loose}_acc`, the share of prompts whose instructions are all
followed, and `inst_level_{strict,loose}_acc`, the share of instructions followed, pooled over all
the prompts' instructions (a prompt with three instructions weighs three times one with one).
The details' `extras["instructions"]` list each instruction with its strict and loose verdicts.
"""

from __future__ import annotations

import functools

from lighteval_like.api.doc import Doc
from lighteval_like.metrics.library import Metric
from lighteval_like.tasks.config import RequestType, TaskConfig
from lighteval_like.tasks.ifeval_instructions import follows, validate

HF_REPO, EVALUATION_SPLIT = "google/IFEval", "train"
GENERATION_SIZE = 1280


def ifeval(row: dict, task_name: str) -> Doc:
    """The prompt as the query; the instructions and their validated arguments in `specific`. A row
    with an unknown instruction id or malformed arguments is refused (ValueError naming the id)."""
    ids, kwargs = row["instruction_id_list"], row["kwargs"]
    if not isinstance(ids, list) or not isinstance(kwargs, list) or len(ids) != len(kwargs):
        raise ValueError(f"key {row.get('key')}: instruction_id_list and kwargs must be lists of equal length")
    try:
        arguments = [validate(i, k) for i, k in zip(ids, kwargs)]
    except ValueError as e:
        raise ValueError(f"key {row.get('key')}: {e}") from None
    return Doc(query=row["prompt"], choices=[""], gold_index=0, target_delimiter="",
               specific={"key": row.get("key"), "instruction_id_list": ids, "kwargs": arguments})


def loose_variants(response: str) -> list[str]:
    """The response, without its first line, its last line and both (stripped), and each of these
    with every '*' removed."""
    lines = response.split("\n")
    cut = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return cut + [text.replace("*", "") for text in cut]


def verdicts(doc: Doc, response: str) -> list[dict]:
    """Each instruction of the doc with whether the response follows it, strictly and loosely."""
    variants = loose_variants(response)
    out = []
    for instruction, arguments in zip(doc.specific["instruction_id_list"], doc.specific["kwargs"]):
        strict = follows(instruction, arguments, response)
        loose = strict or any(follows(instruction, arguments, v) for v in variants[1:])
        out.append({"instruction": instruction, "strict": strict, "loose": loose})
    return out


def sample_verdicts(samples: list) -> list[list[dict]]:
    """Every sample's verdicts on its first generation, computed once and kept in its details
    (`extras["instructions"]`)."""
    for sample in samples:
        if "instructions" not in sample.extras:
            sample.extras["instructions"] = verdicts(sample.doc, sample.responses[0].text)
    return [s.extras["instructions"] for s in samples]


def _prompt_level(mode: str, samples: list, context: object) -> list[float]:
    return [float(all(v[mode] for v in found)) for found in sample_verdicts(samples)]


def _instruction_level(mode: str, samples: list, context: object) -> list[tuple[float, float]]:
    return [(float(sum(v[mode] for v in found)), float(len(found))) for found in sample_verdicts(samples)]


METRICS = tuple(
    metric
    for mode in ("strict", "loose")
    for metric in (
        Metric(f"prompt_level_{mode}_acc", batch_fn=functools.partial(_prompt_level, mode)),
        Metric(f"inst_level_{mode}_acc", batch_fn=functools.partial(_instruction_level, mode), aggregation="pooled_mean"),
    )
)

TASKS = [
    TaskConfig(
        name="ifeval", suite=suite, prompt_function=ifeval, columns=("prompt", "instruction_id_list", "kwargs"),
        hf_repo=HF_REPO, hf_subset=None, evaluation_split=EVALUATION_SPLIT, few_shots_split=None,
        request_type=RequestType.GENERATIVE, metrics=METRICS, generation_size=GENERATION_SIZE, zero_shot_only=True,
    )
    for suite in ("leaderboard", "lighteval")
]
