"""Docs -> samples: few-shot selection, truncation, rendering (plain and chat) and requests."""

from __future__ import annotations

import dataclasses

import pytest

from lighteval_like.api.errors import BadSampleError
from lighteval_like.api.requests import GenerationRequest, LoglikelihoodRequest, RollingRequest
from lighteval_like.evaluation.samples import FEWSHOT_SEPARATOR, PromptOptions, build_samples, fewshot_examples
from lighteval_like.tasks import prompts
from lighteval_like.tasks.config import RequestType
from lighteval_like.tasks.docs import TaskData, make_docs
from lighteval_like.tasks.registry import Registry, ResolvedTask
from lighteval_like.tasks.specs import TaskSpec


def build(task, docs, pool, same_split: bool, num_fewshot: int, truncate: bool, options: PromptOptions):
    """`build_samples` on the docs and few-shot pool of one task asked with `num_fewshot` shots."""
    spec = TaskSpec(task.suite, task.name, num_fewshot, truncate)
    split = task.evaluation_split if same_split else f"not-{task.evaluation_split}"
    return build_samples(TaskData(ResolvedTask(spec, task), docs, pool, split, 0), options)

REGISTRY = Registry()
GSM8K = REGISTRY.get("leaderboard|gsm8k")  # few-shot from the evaluation split itself, random
ARC = REGISTRY.get("leaderboard|arc:challenge")
MMLU = REGISTRY.get("leaderboard|mmlu:anatomy")  # first_n from the dev split
ARC_ROW = {"id": "q0", "question": "Which is wet?", "choices": {"text": ["water", "rock"], "label": ["A", "B"]},
           "answerKey": "A"}

GSM8K_ROWS = [{"question": f"What is {i} plus {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(8)]
MMLU_TEST = [{"question": f"Test question {i}?", "subject": "anatomy", "choices": ["a", "b", "c", "d"], "answer": i % 4}
             for i in range(3)]
MMLU_DEV = [{"question": f"Dev question {i}?", "subject": "anatomy", "choices": ["w", "x", "y", "z"], "answer": i % 4}
            for i in range(5)]


def docs_of(task, rows):
    docs, skipped = make_docs(task, rows, skip_bad=False)
    assert skipped == 0
    return docs


def shots_in(context: str, rows) -> list[int]:
    """Indices of the rows whose question appears in `context`."""
    return [i for i, r in enumerate(rows) if r["question"] in context]


def test_fewshot_never_contains_the_doc_itself():
    """Drawing from the evaluation split excludes the doc being evaluated."""
    docs = docs_of(GSM8K, GSM8K_ROWS)
    samples = build(GSM8K, docs, docs, True, 7, False, PromptOptions(num_fewshot_seeds=3))
    assert len(samples) == 3 * len(docs)
    for s in samples:
        shots = [i for i in shots_in(s.contexts[0], GSM8K_ROWS) if i != s.doc_index]
        assert s.num_fewshot == 7
        assert sorted(shots) == [i for i in range(8) if i != s.doc_index]  # all the others, never itself
        assert s.contexts[0].count(GSM8K_ROWS[s.doc_index]["question"]) == 1  # only as the query
        assert s.contexts[0].endswith(docs[s.doc_index][1].query)


# The few-shot rows lm-eval 0.4.13 chose (seed 1234, --limit 8, 2 shots) for the first 8 docs, read
# from its logged samples by benchmarks/compare_lm_eval.py on a mirror whose `train` split was a copy
# of the validation split: arc_challenge (pool of 299, n draws) and copa (pool of 100, n + 1 draws).
LM_EVAL_SHOTS = {
    "leaderboard|arc:challenge": (299, [[225, 59], [3, 46], [298, 17], [42, 50], [181, 121], [8, 15], [8, 177], [247, 237]]),
    "lighteval|copa": (100, [[99, 56], [0, 11], [4, 85], [10, 12], [45, 30], [3, 2], [82, 79], [78, 59]]),
}


@pytest.mark.parametrize("name", sorted(LM_EVAL_SHOTS))
def test_fewshot_draws_equal_lm_eval(name):
    task = REGISTRY.get(name)
    size, expected = LM_EVAL_SHOTS[name]
    pool = [(i, dataclasses.replace(docs_of(GSM8K, GSM8K_ROWS)[0][1], query=f"row {i}")) for i in range(size)]
    docs = [(i, pool[i][1]) for i in range(8)]  # the same rows as the pool: copa's draws drop the doc itself
    drawn = fewshot_examples(pool, 2, docs, False, task, seed=1234)
    assert [[int(d.query.split()[1]) for d in drawn[i]] for i in range(8)] == expected
    later = fewshot_examples(pool, 2, docs[5:], False, task, seed=1234)  # --max_samples / DP shards: same draws
    assert all(later[i] == drawn[i] for i in range(5, 8))


def test_fewshot_independent_of_order_and_subset():
    """A doc's few-shot draw depends on (seed, its row), not on batching or other docs."""
    docs = docs_of(GSM8K, GSM8K_ROWS)
    options = PromptOptions(seed=7)
    full = {s.doc_index: s.contexts for s in build(GSM8K, docs, docs, True, 3, False, options)}
    reverse = {s.doc_index: s.contexts for s in build(GSM8K, docs[::-1], docs, True, 3, False, options)}
    alone = build(GSM8K, [docs[5]], docs, True, 3, False, options)
    assert full == reverse
    assert alone[0].contexts == full[5]
    assert len({tuple(shots_in(c[0], GSM8K_ROWS)) for c in full.values()}) > 1  # draws vary between docs
    other_seed = build(GSM8K, docs, docs, True, 3, False, PromptOptions(seed=8))
    assert any(s.contexts != full[s.doc_index] for s in other_seed)


def test_num_fewshot_seeds_give_distinct_draws():
    """Each few-shot seed yields its own sample per doc, recorded with the seed."""
    docs = docs_of(GSM8K, GSM8K_ROWS)
    samples = build(GSM8K, docs, docs, True, 2, False, PromptOptions(seed=10, num_fewshot_seeds=2))
    assert sorted({s.fewshot_seed for s in samples}) == [10, 11]
    by_doc = {}
    for s in samples:
        by_doc.setdefault(s.doc_index, []).append(s.contexts[0])
    assert any(a != b for a, b in by_doc.values())
    zero_shot = build(GSM8K, docs, docs, True, 0, False, PromptOptions(num_fewshot_seeds=3))
    assert len(zero_shot) == len(docs)  # seeds only matter with shots


def test_first_n_sampler_from_other_split():
    """first_n takes the first examples of the few-shot split in order, for every doc (no exclusion
    across different splits)."""
    docs, pool = docs_of(MMLU, MMLU_TEST), docs_of(MMLU, MMLU_DEV)
    samples = build(MMLU, docs, pool, False, 3, False, PromptOptions())
    for s in samples:
        context = s.contexts[0]
        positions = [context.index(MMLU_DEV[i]["question"]) for i in range(3)]
        assert positions == sorted(positions)
        assert MMLU_DEV[3]["question"] not in context and MMLU_DEV[4]["question"] not in context
    picked = fewshot_examples(pool, 2, docs[:1], False, MMLU, seed=1)[0]
    assert [d.query for d in picked] == [pool[0][1].query, pool[1][1].query]


def test_first_n_same_split_skips_the_doc():
    """first_n over the evaluation split skips the doc itself and takes the next ones."""
    task = dataclasses.replace(GSM8K, few_shots_select="first_n")
    docs = docs_of(task, GSM8K_ROWS)
    picked = fewshot_examples(docs, 2, docs[:1], True, task, seed=1)[0]
    assert [d.query for d in picked] == [docs[1][1].query, docs[2][1].query]


def test_plain_rendering_and_requests():
    """Plain prompt: system prompt, instruction once, shots joined by blank lines, then the query;
    multiple-choice requests carry the target delimiter."""
    docs, pool = docs_of(MMLU, MMLU_TEST), docs_of(MMLU, MMLU_DEV)
    sample = build(MMLU, docs[:1], pool, False, 1, False, PromptOptions(system_prompt="Be brief."))[0]
    doc, shot = docs[0][1], pool[0][1]
    shot_text = shot.query + " " + shot.choices[shot.gold_indices[0]]
    expected = "Be brief.\n\n" + doc.instruction + shot_text + FEWSHOT_SEPARATOR + doc.query
    assert sample.contexts == [expected]
    assert sample.contexts[0].count("The following are multiple choice questions") == 1
    assert sample.requests == [LoglikelihoodRequest(expected, f" {c}") for c in "ABCD"]
    arc_docs = docs_of(ARC, [ARC_ROW])
    for system, lead in (("Be brief.", "Be brief.\n\n"), ("Be brief.\n", "Be brief.\n"), ("", "")):
        arc = build(ARC, arc_docs, [], False, 0, False, PromptOptions(system_prompt=system or None))[0]
        assert arc.contexts == [lead + arc_docs[0][1].query]  # a blank line unless one side brings whitespace


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def chat_model(tiny_model):
    from lighteval_like.models.model_args import parse_model_args
    from lighteval_like.models.transformers.model import TransformersModel

    model = TransformersModel(parse_model_args(f"pretrained={tiny_model}"), device="cpu", show_progress=False)
    model.tokenizer.chat_template = CHAT_TEMPLATE
    return model


def test_chat_template_rendering(chat_model):
    """Under a chat template (as lm-eval renders it), the system prompt and the task instruction
    share the system message, shots are user/assistant turns, and continuations have no delimiter."""
    docs, pool = docs_of(MMLU, MMLU_TEST), docs_of(MMLU, MMLU_DEV)
    options = PromptOptions(system_prompt="Be brief.", chat=True, encoder=chat_model.encoder)
    sample = build(MMLU, docs[:1], pool, False, 2, False, options)[0]
    doc, s0, s1 = docs[0][1], pool[0][1], pool[1][1]
    expected = (
        f"<|system|>Be brief.\n\n{doc.instruction}<|end|>\n"
        f"<|user|>{s0.query}<|end|>\n<|assistant|>{s0.choices[s0.gold_indices[0]]}<|end|>\n"
        f"<|user|>{s1.query}<|end|>\n<|assistant|>{s1.choices[s1.gold_indices[0]]}<|end|>\n"
        f"<|user|>{doc.query}<|end|>\n<|assistant|>"
    )
    assert sample.contexts == [expected]
    assert [r.continuation for r in sample.requests] == ["A", "B", "C", "D"]
    chat_only = PromptOptions(chat=True, encoder=chat_model.encoder)
    zero = build(MMLU, docs[:1], pool, False, 0, False, chat_only)[0]
    assert zero.contexts == [f"<|system|>{doc.instruction}<|end|>\n<|user|>{doc.query}<|end|>\n<|assistant|>"]
    spaced = PromptOptions(system_prompt="Be brief.\n", chat=True, encoder=chat_model.encoder)
    assert build(MMLU, docs[:1], pool, False, 0, False, spaced)[0].contexts[0].startswith(
        f"<|system|>Be brief.\n{doc.instruction}<|end|>"
    )
    arc = build(ARC, docs_of(ARC, [ARC_ROW]), [], False, 0, False, chat_only)[0]
    assert arc.contexts[0].startswith("<|user|>")  # no instruction, no system prompt: no system message


def fitting(model, max_length: int):
    """The model's prompt encoder with another context length."""
    return dataclasses.replace(model.encoder, max_length=max_length)


def test_truncate_drops_shots_until_prompt_and_answer_fit(chat_model):
    """truncate=1 removes examples (last first) until context + longest answer <= max_length,
    and records the effective count; truncate=0 keeps them all."""
    count = chat_model.encoder.count_tokens
    docs = docs_of(GSM8K, GSM8K_ROWS)
    tight = PromptOptions(encoder=fitting(chat_model, 10))
    untruncated = build(GSM8K, docs[:1], docs, True, 5, False, tight)[0]
    assert untruncated.num_fewshot == 5 and untruncated.fewshot_truncated is False
    task = dataclasses.replace(GSM8K, generation_size=8)
    drawn = fewshot_examples(docs, 5, docs[:1], True, task, seed=1234)[0]
    lengths = {
        n: count("".join(ex.as_fewshot_example() + FEWSHOT_SEPARATOR for ex in drawn[:n]) + docs[0][1].query)
        for n in range(6)
    }
    assert lengths[2] < lengths[3]
    max_length = lengths[2] + 8  # room for 2 shots + the 8 generated tokens, not for 3
    options = PromptOptions(encoder=fitting(chat_model, max_length))
    sample = build(task, docs[:1], docs, True, 5, True, options)[0]
    assert sample.num_fewshot == 2 and sample.fewshot_truncated is True
    assert count(sample.contexts[0]) + 8 <= max_length
    kept = build(task, docs[:1], docs, True, 2, True, options)[0]
    assert kept.num_fewshot == 2 and kept.fewshot_truncated is False
    tiny = PromptOptions(encoder=fitting(chat_model, 5))
    nothing_fits = build(task, docs[:1], docs, True, 5, True, tiny)[0]
    assert nothing_fits.num_fewshot == 0 and nothing_fits.fewshot_truncated is True


def test_truncate_uses_longest_choice_as_answer_room(chat_model):
    """Without a generation size, the room kept for the answer is the longest choice in tokens."""
    count = chat_model.encoder.count_tokens
    rows = [{"id": f"q{i}", "question": f"Question {i} about the store?",
             "choices": {"text": ["short", "a much longer answer about the capital of France"], "label": ["A", "B"]},
             "answerKey": "A"} for i in range(4)]
    docs = docs_of(ARC, rows)
    room = max(count(c) for c in docs[0][1].choices)
    first = fewshot_examples(docs, 3, docs[:1], True, ARC, seed=1234)[0][0]
    one = count(first.as_fewshot_example() + FEWSHOT_SEPARATOR + docs[0][1].query)
    options = PromptOptions(encoder=fitting(chat_model, one + room))
    sample = build(ARC, docs[:1], docs, True, 3, True, options)[0]
    assert sample.num_fewshot == 1 and sample.fewshot_truncated is True


def test_loglikelihood_task_shots_join_as_lm_eval(chat_model):
    """lambada's target carries its own space: the request scores it as it is, a plain few-shot
    example joins it with the default delimiter (two spaces, as lm-eval), a chat shot answers it."""
    task = REGISTRY.get("lighteval|lambada:openai")
    docs = docs_of(task, [{"text": "she needed some milk"}, {"text": "the play was long"}])
    plain = build(task, docs[:1], docs, True, 1, False, PromptOptions())[0]
    assert plain.contexts == ["the play was  long\n\nshe needed some"]
    assert plain.requests == [LoglikelihoodRequest("the play was  long\n\nshe needed some", " milk")]
    options = PromptOptions(chat=True, encoder=chat_model.encoder)
    chat = build(task, docs[:1], docs, True, 1, False, options)[0]
    assert chat.contexts == ["<|user|>the play was<|end|>\n<|assistant|> long<|end|>\n<|user|>she needed some<|end|>\n<|assistant|>"]
    [request] = chat.requests
    assert request.prompt.chat and request.continuation == " milk"
    assert chat_model.encoder.render(request.prompt) == chat.contexts[0]


def test_request_types():
    """Each request type maps onto the right model request."""
    lambada_task = REGISTRY.get("lighteval|lambada:openai")
    docs = docs_of(lambada_task, [{"text": "she needed some milk"}])
    (sample,) = build(lambada_task, docs, [], True, 0, False, PromptOptions())
    assert sample.requests == [LoglikelihoodRequest("she needed some", " milk")]

    wiki = REGISTRY.get("lighteval|wikitext:2")
    docs = docs_of(wiki, [{"page": " = Title = \n Some text @-@ here . \n"}])
    (sample,) = build(wiki, docs, [], True, 0, False, PromptOptions())
    assert sample.requests == [RollingRequest(docs[0][1].choices[0])]
    assert "@-@" not in sample.requests[0].text

    docs = docs_of(GSM8K, GSM8K_ROWS[:1])
    (sample,) = build(GSM8K, docs, [], True, 0, False, PromptOptions())
    assert sample.requests == [GenerationRequest("Question: What is 0 plus 0?\nAnswer:", GSM8K.stop_sequences, 256)]

    single = dataclasses.replace(MMLU, request_type=RequestType.SINGLE_TOKEN)
    (sample,) = build(single, docs_of(single, MMLU_TEST[:1]), [], False, 0, False, PromptOptions())
    assert all(r.single_token for r in sample.requests) and len(sample.requests) == 4


def test_winogrande_context_per_choice():
    """Tasks with a context per choice score the same continuation after each context."""
    task = REGISTRY.get("leaderboard|winogrande")
    row = {"sentence": "The cup fell off the table because _ was wobbly.", "option1": "the cup", "option2": "the table",
           "answer": "2"}
    (sample,) = build(task, docs_of(task, [row]), [], True, 0, False, PromptOptions())
    prefix = "The cup fell off the table because "
    assert sample.contexts == [prefix + "the cup", prefix + "the table"]
    assert [r.prompt.text for r in sample.requests] == sample.contexts
    assert {r.continuation for r in sample.requests} == {" was wobbly."}
    assert sample.doc.gold_indices == [1]


def test_bad_rows():
    """A row breaking the prompt function is an error naming it, or skipped and counted on request."""
    rows = [GSM8K_ROWS[0], {"question": "no answer column"}, GSM8K_ROWS[1]]
    with pytest.raises(BadSampleError) as info:
        make_docs(GSM8K, rows, skip_bad=False)
    assert "row 1" in str(info.value) and "--skip_bad_samples" in str(info.value) and "column 'answer'" in str(info.value)
    docs, skipped = make_docs(GSM8K, rows, skip_bad=True)
    assert skipped == 1 and [i for i, _ in docs] == [0, 2]


def test_prompt_functions_match_lm_eval_text():
    """A few prompt functions produce lm-eval's exact query/choices."""
    row = {"question": "Why?", "choices": {"text": ["x", "y"], "label": ["A", "B"]}, "answerKey": "B"}
    arc = prompts.arc(row, "arc")
    assert (arc.query, arc.choices, arc.gold_index) == ("Question: Why?\nAnswer:", ["x", "y"], 1)
    mmlu = prompts.mmlu(MMLU_TEST[1], "mmlu:anatomy")
    assert mmlu.query == "Test question 1?\nA. a\nB. b\nC. c\nD. d\nAnswer:"
    assert mmlu.instruction == "The following are multiple choice questions (with answers) about anatomy.\n\n"
