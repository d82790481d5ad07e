"""Docs -> samples: few-shot context, truncation, and the model requests each sample needs."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice

from lighteval_like.api.errors import TaskSpecError
from lighteval_like.api.generation import GenerationParameters, sample_seed
from lighteval_like.metrics.library import SampleValue
from lighteval_like.models.base import GenerationRequest, LoglikelihoodRequest, Request, Response, RollingRequest
from lighteval_like.tasks.config import Doc, RequestType, TaskConfig
from lighteval_like.tasks.docs import TaskData

FEWSHOT_SEPARATOR = "\n\n"
ChatFormatter = Callable[[list[dict]], str]


@dataclass
class PromptOptions:
    """How contexts are rendered; the same for every task of a run."""

    seed: int = 1234
    num_fewshot_seeds: int = 1
    system_prompt: str | None = None
    chat_formatter: ChatFormatter | None = None  # set by --use_chat_template
    count_tokens: Callable[[str], int] | None = None  # needed for truncate=1
    max_length: int | None = None
    generation: GenerationParameters = field(default_factory=GenerationParameters)  # the user's


@dataclass
class Sample:
    """One doc under one few-shot seed, with its rendered contexts and requests."""

    task_key: str
    doc_index: int
    fewshot_seed: int
    doc: Doc
    contexts: list[str]
    requests: list[Request]
    num_fewshot: int
    fewshot_truncated: bool = False
    responses: list[Response] = field(default_factory=list)
    metrics: dict[str, SampleValue] = field(default_factory=dict)
    extras: dict = field(default_factory=dict)  # what a metric recorded for the details (e.g. a program run)
    generation: GenerationParameters | None = None  # the values a generative task ran with


def fewshot_examples(
    pool: list[tuple[int, Doc]], n: int, docs: list[tuple[int, Doc]], same_split: bool, task: TaskConfig, seed: int
) -> dict[int, list[Doc]]:
    """Few-shot examples for each doc (by row index), drawn as lm-eval 0.4.13 draws them.

    One `random.Random(seed)` makes one draw per row of the evaluation split, in row order, so
    a doc's examples depend on (seed, row) alone: not on batch size, ranks or `max_samples`, and
    equal to lm-eval's for the same rows. A draw takes n examples, or n + 1 with the evaluated doc
    then dropped where lm-eval's task does so (`few_shots_draw_extra`). The doc is never its own
    example: from its own split it is left out, and a draw left short is redrawn without it.
    """
    if n == 0 or not docs:
        return {row: [] for row, _ in docs}
    wanted = dict(docs)
    if task.few_shots_select == "first_n":
        return {row: list(islice((d for r, d in pool if not (same_split and r == row)), n)) for row in wanted}

    def is_doc(i: int, row: int, doc: Doc | None) -> bool:
        return (same_split and pool[i][0] == row) or (task.few_shots_draw_extra and pool[i][1] == doc)

    rng = random.Random(seed)
    draw = n + 1 if task.few_shots_draw_extra else n
    chosen: dict[int, list[Doc]] = {}
    for row in range(max(wanted) + 1):
        doc = wanted.get(row)
        picked = [i for i in rng.sample(range(len(pool)), min(draw, len(pool))) if not is_doc(i, row, doc)][:n]
        if len(picked) < n:
            rest = [i for i in range(len(pool)) if not is_doc(i, row, doc)]
            picked = rng.sample(rest, min(n, len(rest)))
        if doc is not None:
            chosen[row] = [pool[i][1] for i in picked]
    return chosen


def _join_blank(first: str | None, second: str) -> str:
    """`first`, a blank line, `second` (as lm-eval joins a system prompt and a task instruction);
    no blank line where either side already brings whitespace there."""
    if not first or not second:
        return first or second
    blank = not (first[-1].isspace() or second[0].isspace())
    return first + (FEWSHOT_SEPARATOR if blank else "") + second


def _render(doc: Doc, query: str, examples: list[Doc], options: PromptOptions) -> str:
    if options.chat_formatter is not None:  # the instruction goes with the system prompt
        system = _join_blank(options.system_prompt, doc.instruction)
        messages = [{"role": "system", "content": system}] if system else []
        for ex in examples:
            messages += [
                {"role": "user", "content": ex.fewshot_query},
                {"role": "assistant", "content": ex.fewshot_answer},
            ]
        messages.append({"role": "user", "content": query})
        return options.chat_formatter(messages)
    shots = "".join(ex.as_fewshot_example() + FEWSHOT_SEPARATOR for ex in examples)
    return _join_blank(options.system_prompt, f"{doc.instruction}{shots}{query}")


def _requests(task: TaskConfig, doc: Doc, contexts: list[str], chat: bool) -> list[Request]:
    """The scoring requests of a doc (generative tasks: `generation_requests`)."""
    # Under a chat template the answer starts the assistant turn: no delimiter (as lm-eval).
    delimiter = "" if chat else doc.target_delimiter
    kind = task.request_type
    if kind in (RequestType.MULTIPLE_CHOICE, RequestType.SINGLE_TOKEN):
        single = kind == RequestType.SINGLE_TOKEN
        return [
            LoglikelihoodRequest(contexts[i if len(contexts) > 1 else 0], delimiter + choice, single)
            for i, choice in enumerate(doc.choices)
        ]
    if kind == RequestType.LOGLIKELIHOOD:  # the target as it is (lm-eval): no delimiter before it
        return [LoglikelihoodRequest(contexts[0], doc.choices[doc.gold_indices[0]])]
    return [RollingRequest(doc.choices[0])]


def samples_per_doc(task: TaskConfig, generation: GenerationParameters) -> int:
    """Generations per doc of a generative task (the user's `num_samples` over the task's; one
    by default), 1 for the other tasks: the n its metrics are resolved for."""
    if task.request_type != RequestType.GENERATIVE:
        return 1
    return generation.over(task.generation_parameters).num_samples or 1


def generation_settings(task: TaskConfig, options: PromptOptions) -> GenerationParameters:
    """What a generative task runs with: the user's values over the task's defaults, every
    field filled (sampling defaults, the task's token limit, one sample, the run seed)."""
    chosen = options.generation.over(task.generation_parameters)
    sampling = chosen.sampling()
    samples = samples_per_doc(task, options.generation)
    if sampling.greedy and samples > 1:
        raise TaskSpecError(
            f"task {task.full_name}: num_samples={samples} needs temperature > 0 (greedy samples are all the same)"
        )
    return GenerationParameters(
        **dataclasses.asdict(sampling), max_new_tokens=chosen.max_new_tokens or task.generation_size,
        seed=None if sampling.greedy else (chosen.seed if chosen.seed is not None else options.seed),
        num_samples=samples,
    )


def generation_requests(task: TaskConfig, settings: GenerationParameters, context: str, task_key: str,
                        doc_index: int) -> list[GenerationRequest]:
    """One request per sample; sampled ones carry their own seed (so the cache keys it)."""
    sampling, stops = settings.sampling(), tuple(task.stop_sequences)
    if settings.seed is None:
        return [GenerationRequest(context, stops, settings.max_new_tokens, sampling)]
    return [
        GenerationRequest(context, stops, settings.max_new_tokens, sampling, sample_seed(settings.seed, task_key, doc_index, i))
        for i in range(settings.num_samples)
    ]


def build_samples(data: TaskData, options: PromptOptions) -> list[Sample]:
    """Render every doc (under each few-shot seed when there are shots) into a `Sample`."""
    task, task_key, docs = data.task.config, data.task.key, data.docs
    num_fewshot, truncate = data.task.spec.num_fewshot, data.task.spec.truncate_fewshot
    seeds = [options.seed + i for i in range(options.num_fewshot_seeds)] if num_fewshot > 0 else [options.seed]
    settings = generation_settings(task, options) if task.request_type == RequestType.GENERATIVE else None
    samples = []
    for seed in seeds:
        drawn = fewshot_examples(data.fewshot_pool, num_fewshot, docs, data.same_split, task, seed)
        for doc_index, doc in docs:
            examples = drawn[doc_index]
            queries = doc.query_per_choice or [doc.query]
            contexts = [_render(doc, q, examples, options) for q in queries]
            truncated = False
            if truncate and options.count_tokens and options.max_length:
                answer_room = task.generation_size or max(options.count_tokens(c) for c in doc.choices)
                while examples and max(map(options.count_tokens, contexts)) + answer_room > options.max_length:
                    examples = examples[:-1]
                    contexts = [_render(doc, q, examples, options) for q in queries]
                    truncated = True
            if settings is not None:
                requests = generation_requests(task, settings, contexts[0], task_key, doc_index)
            else:
                requests = _requests(task, doc, contexts, options.chat_formatter is not None)
            samples.append(Sample(task_key, doc_index, seed, doc, contexts, requests, len(examples), truncated,
                                  generation=settings))
    return samples
