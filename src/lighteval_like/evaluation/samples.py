"""Docs -> samples: few-shot context, truncation, and the model requests each sample needs."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from itertools import islice

from lighteval_like.api.doc import Doc
from lighteval_like.api.errors import TaskSpecError
from lighteval_like.api.generation import GenerationParameters, sample_seed
from lighteval_like.api.prompt import Prompt, TextPart, Turn
from lighteval_like.api.requests import GenerationRequest, LoglikelihoodRequest, Request, RollingRequest
from lighteval_like.api.sample import Sample
from lighteval_like.models.prompt_encoder import PromptEncoder
from lighteval_like.tasks.config import RequestType, TaskConfig
from lighteval_like.tasks.docs import TaskData

FEWSHOT_SEPARATOR = "\n\n"


@dataclass
class PromptOptions:
    """How prompts are built and rendered; the same for every task of a run."""

    seed: int = 1234
    num_fewshot_seeds: int = 1
    system_prompt: str | None = None
    chat: bool = False  # --use_chat_template: prompts are turns the encoder's template renders
    encoder: PromptEncoder | None = None  # renders prompts into contexts; counts tokens for truncate=1
    generation: GenerationParameters = field(default_factory=GenerationParameters)  # the user's


def prompt_texts(samples: list[Sample]):
    """What the prompt hash of a run or task reads: each sample's rendered contexts, then the
    digests of its images, if any (the same text around two images is two prompts)."""
    for sample in samples:
        yield from sample.contexts
        images = dict.fromkeys(d for r in sample.requests if hasattr(r, "prompt") for d in r.prompt.images)
        if images:
            yield "images: " + " ".join(images)


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


def _image_prompt(task: TaskConfig, doc: Doc, query: str, examples: list[Doc], options: PromptOptions) -> Prompt:
    """A doc with images: one user turn of its images (into the encoder's media store, by digest),
    each after its text if the doc interleaves them, then its query, rendered by the model's chat
    template (as lmms-eval renders it)."""
    encoder = options.encoder
    if encoder is None or not encoder.reads_images:
        reason = encoder.no_images if encoder is not None else PromptEncoder.no_images
        raise TaskSpecError(f"task {task.full_name} shows images and {reason}, or leave the task out")
    if examples:
        raise TaskSpecError(f"task {task.full_name}: few-shot examples with images are not supported: use 0 shots")
    before = doc.texts_before_images or [""] * len(doc.images)
    parts = (*(part for text, data in zip(before, doc.images, strict=True)
               for part in ((TextPart(text),) if text else ()) + (encoder.media.put(data),)), TextPart(query))
    system = (Turn("system", (TextPart(options.system_prompt),)),) if options.system_prompt else ()
    return Prompt((*system, Turn("user", parts)), chat=True)


def _prompt(task: TaskConfig, doc: Doc, query: str, examples: list[Doc], options: PromptOptions) -> Prompt:
    if doc.images:
        return _image_prompt(task, doc, query, examples, options)
    if options.chat:  # the instruction goes with the system prompt; each shot is a user/assistant pair
        system = _join_blank(options.system_prompt, doc.instruction)
        turns = [("system", system)] if system else []
        for ex in examples:
            turns += [("user", ex.fewshot_query), ("assistant", ex.fewshot_answer)]
        return Prompt.from_messages([*turns, ("user", query)])
    shots = "".join(ex.as_fewshot_example() + FEWSHOT_SEPARATOR for ex in examples)
    return Prompt.plain(_join_blank(options.system_prompt, f"{doc.instruction}{shots}{query}"))


def _render(prompts: list[Prompt], options: PromptOptions) -> list[str]:
    if options.encoder is None:
        if options.chat:
            raise TaskSpecError("--use_chat_template needs a prompt encoder with a chat template")
        return [p.text for p in prompts]
    return [options.encoder.render(p) for p in prompts]


def _requests(task: TaskConfig, doc: Doc, prompts: list[Prompt], chat: bool) -> list[Request]:
    """The scoring requests of a doc (generative tasks: `generation_requests`)."""
    # Under a chat template the answer starts the assistant turn: no delimiter (as lm-eval).
    delimiter = "" if chat else doc.target_delimiter
    kind = task.request_type
    if kind in (RequestType.MULTIPLE_CHOICE, RequestType.SINGLE_TOKEN):
        single = kind == RequestType.SINGLE_TOKEN
        return [
            LoglikelihoodRequest(prompts[i if len(prompts) > 1 else 0], delimiter + choice, single)
            for i, choice in enumerate(doc.choices)
        ]
    if kind == RequestType.LOGLIKELIHOOD:  # the target as it is (lm-eval): no delimiter before it
        return [LoglikelihoodRequest(prompts[0], doc.choices[doc.gold_indices[0]])]
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


def generation_requests(task: TaskConfig, settings: GenerationParameters, prompt: Prompt, task_key: str,
                        doc_index: int) -> list[GenerationRequest]:
    """One request per sample; sampled ones carry their own seed (so the cache keys it)."""
    sampling, stops = settings.sampling(), tuple(task.stop_sequences)
    if settings.seed is None:
        return [GenerationRequest(prompt, stops, settings.max_new_tokens, sampling)]
    return [
        GenerationRequest(prompt, stops, settings.max_new_tokens, sampling, sample_seed(settings.seed, task_key, doc_index, i))
        for i in range(settings.num_samples)
    ]


def followup_requests(sample: Sample) -> list[Request]:
    """The requests of a multi-turn sample's next turn (none when it has no turn left): each of its
    last turn's requests again, its prompt followed by the model's own answer and the next query."""
    per_turn = sample.generation.num_samples if sample.generation else 1
    done = len(sample.requests) // per_turn
    if done > len(sample.doc.next_turns):
        return []
    query = sample.doc.next_turns[done - 1]
    last = zip(sample.requests[-per_turn:], sample.responses[-per_turn:])
    return [dataclasses.replace(r, prompt=r.prompt.followed_by(answer.text, query, FEWSHOT_SEPARATOR))
            for r, answer in last]


def _fitting_examples(task: TaskConfig, doc: Doc, examples: list[Doc], options: PromptOptions,
                      truncate: bool) -> tuple[list[Doc], bool]:
    """With truncate=1, the first few-shot examples with which every context and the answer fit
    `max_length`; True when some were dropped."""
    encoder = options.encoder
    if not truncate:
        return examples, False
    if encoder is None or not encoder.counts_tokens:
        raise TaskSpecError(f"task {task.full_name}: truncate=1 needs token counts, which this backend cannot give: "
                            "use truncate=0, or give the backend a tokenizer")
    if not encoder.max_length:
        return examples, False
    queries = doc.query_per_choice or [doc.query]
    answer_room = task.generation_size or max(encoder.count_tokens(c) for c in doc.choices)

    def too_long(shots: list[Doc]) -> bool:
        contexts = _render([_prompt(task, doc, q, shots, options) for q in queries], options)
        return max(map(encoder.count_tokens, contexts)) + answer_room > encoder.max_length

    kept = examples
    while kept and too_long(kept):
        kept = kept[:-1]
    return kept, len(kept) < len(examples)


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
            examples, truncated = _fitting_examples(task, doc, drawn[doc_index], options, truncate)
            prompts = [_prompt(task, doc, q, examples, options) for q in doc.query_per_choice or [doc.query]]
            if settings is not None:
                requests = generation_requests(task, settings, prompts[0], task_key, doc_index)
            else:
                requests = _requests(task, doc, prompts, options.chat)
            samples.append(Sample(task_key, doc_index, seed, doc, _render(prompts, options), requests, len(examples),
                                  truncated, generation=settings))
    return samples
