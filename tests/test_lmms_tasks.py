"""The `lmms` suite's MMStar, MMMU, RealWorldQA, ScienceQA-IMG, AI2D and ChartQA: prompts, answer
parsing and aggregations equal to lmms-eval 0.7.3's. Every expected string and score below was
computed once by lmms-eval 0.7.3 itself (its task utils' doc_to_text / doc_to_messages,
process_results, filters and aggregations, with the tasks' `default` kwargs) on the same rows."""

from __future__ import annotations

from types import SimpleNamespace

import easy_vqa
import numpy as np
import pytest
from conftest import run_cli

from lighteval_like.api.doc import Doc
from lighteval_like.api.prompt import MediaStore
from lighteval_like.api.requests import GenerationResponse
from lighteval_like.evaluation.samples import PromptOptions, _image_prompt
from lighteval_like.metrics.library import aggregate
from lighteval_like.metrics.lmms_answers import ai2d_correct, option_letter, relaxed_correct, scienceqa_correct
from lighteval_like.metrics.mmmu import choice_answer, open_answers, open_correct
from lighteval_like.tasks import lmms_mc, mmmu
from lighteval_like.tasks.lmms_suite import GROUPS, TASKS

PATHS = easy_vqa.get_test_image_paths()
LETTERS = "\nAnswer with the option's letter from the given choices directly."


def _image(i: int = 0) -> dict:
    with open(PATHS[i], "rb") as f:
        return {"bytes": f.read(), "path": PATHS[i]}


def _task(name: str):
    return next(t for t in TASKS if t.name == name)


def _score(metric_name: str, task: str, doc: Doc, answer: str):
    metric = next(m for m in _task(task).metrics if m.name == metric_name)
    return metric.sample_fn(doc, [GenerationResponse(answer, 1)])


MMSTAR_QUESTION = ("Which option describes the object relationship in the image correctly?\nOptions: A: The suitcase "
                   "is on the book., B: The suitcase is beneath the cat., C: The suitcase is beneath the bed., D: The "
                   "suitcase is beneath the book.")


def _mmstar_row(question: str = MMSTAR_QUESTION, answer: str = "B", l2: str = "localization") -> dict:
    return {"image": _image(), "question": question, "answer": answer,
            "category": "fine-grained perception", "l2_category": l2}


def test_mmstar_prompt_and_letter_extraction():
    doc = lmms_mc.mmstar(_mmstar_row(), "lmms|mmstar")
    assert doc.query == MMSTAR_QUESTION + "\nAnswer with the option's letter from the given choices directly"
    assert doc.images == [_image()["bytes"]] and doc.texts_before_images == []
    yes_no = lmms_mc.mmstar(_mmstar_row(" Is the shape a circle? Please answer yes or no. "), "t")
    assert yes_no.query == "Is the shape a circle?\nAnswer with the option's letter from the given choices directly"
    expected = {"B": "B", "(C)": "C", "The answer is D.": "D", "A. The suitcase": "A", "I think it's b": "", "": "",
                "Option C is right, not A": "A", "D:": "D", "none": "", "A and B": "A"}
    assert {answer: option_letter(answer) for answer in expected} == expected
    assert _score("average", "mmstar", doc, "(B)")[0] == 1.0 and _score("average", "mmstar", doc, "C")[0] == 0.0
    assert _score("average", "mmstar", doc, "no idea")[0] == 0.0
    assert _task("mmstar").generation_size == 128 and _task("mmstar").hf_repo == "Lin-Chen/MMStar"


def test_mmstar_aggregation_is_the_mean_over_subcategories():
    rows = [(1, "a"), (0, "a"), (1, "b"), (1, "c"), (0, "c"), (0, "c")]  # lmms-eval: 0.611111111111111
    docs = [lmms_mc.mmstar(_mmstar_row(answer="A", l2=l2), "t") for _, l2 in rows]
    values = [_score("average", "mmstar", doc, "A" if right else "B") for doc, (right, _) in zip(docs, rows)]
    for name in ("average", "fine_grained_perception"):
        metric = next(m for m in _task("mmstar").metrics if m.name == name)
        assert aggregate(metric, values)[0] == pytest.approx(0.611111111111111)
    math = next(m for m in _task("mmstar").metrics if m.name == "math")
    assert np.isnan(aggregate(math, values)[0])  # no math questions: lmms-eval reports nothing


def test_realworldqa_prompt_and_answers():
    question = ("In which direction is the front wheel of the car on the right side facing?\n\nA. Left\nB. Straight\n"
                "C. Right\n\nPlease answer directly with only the letter of the correct option and nothing else.")
    doc = lmms_mc.realworldqa({"image": _image(), "question": question + " ", "answer": "B"}, "t")
    assert doc.query == question and _task("realworldqa").generation_size == 16
    cases = [("B", "B", 1.0), ("b.", "B", 0.0), ("Left.", "Left", 1.0), ("left", "Left", 1.0), ("2", "3", 0.0),
             ("The answer is C", "C", 1.0)]
    for answer, gold, expected in cases:
        gold_doc = lmms_mc.realworldqa({"image": _image(), "question": question, "answer": gold}, "t")
        assert _score("exact_match", "realworldqa", gold_doc, answer) == expected, answer


def test_scienceqa_img_prompt_and_answers():
    row = {"image": _image(), "hint": "Figure: Arctic Ocean.", "question": "Which ocean is highlighted?",
           "choices": ["the Indian Ocean", "the Atlantic Ocean", "the Arctic Ocean"], "answer": 2}
    doc = lmms_mc.scienceqa_img(row, "t")
    assert doc.query == ("Context: Figure: Arctic Ocean.\nWhich ocean is highlighted?\nA. the Indian Ocean\n"
                         "B. the Atlantic Ocean\nC. the Arctic Ocean" + LETTERS)
    assert doc.choices == ["C"]
    no_hint = lmms_mc.scienceqa_img({**row, "hint": "", "question": "What shape is it?", "choices": ["circle", "square"]},
                                    "t")
    assert no_hint.query == "What shape is it?\nA. circle\nB. square" + LETTERS
    expected = {"C": 1.0, " c ": 1.0, "C. the Arctic": 1.0, "c. the": 0.0, "(C)": 0.0, "B": 0.0}
    assert {a: _score("exact_match", "scienceqa_img", doc, a) for a in expected} == expected
    task = _task("scienceqa_img")
    assert (task.hf_repo, task.hf_subset, task.evaluation_split) == ("lmms-lab-encoder/ScienceQA", "ScienceQA-IMG", "test")


def test_ai2d_prompt_and_answers():
    doc = lmms_mc.ai2d({"image": _image(), "question": "which of these define dairy item",
                        "options": ["c", "D", "b", "a"], "answer": "1"}, "t")
    assert doc.query == "which of these define dairy item\nA. c\nB. D\nC. b\nD. a" + LETTERS and doc.choices == ["B"]
    expected = {"B": 1.0, "B.": 1.0, "b": 1.0, "(B)": 1.0, " B": 0.0, "B is right": 0.0, "  B. two": 1.0, "A": 0.0}
    assert {a: _score("exact_match", "ai2d", doc, a) for a in expected} == expected
    assert ai2d_correct("B.", "B") and scienceqa_correct("C. x", "C")


def test_chartqa_prompt_relaxed_accuracy_and_splits():
    row = {"image": _image(), "question": "How many food item is shown in the bar graph?", "answer": "10",
           "type": "human_test"}
    doc = lmms_mc.chartqa(row, "t")
    assert doc.query == "How many food item is shown in the bar graph?\nAnswer the question with a single word."
    expected = {("10.4", "10"): True, ("10.6", "10"): False, ("51%", "0.5"): True, ("Yes", "yes"): True,
                ("0", "0"): True, (" 10", "10"): True, ("1e1", "10"): True, ("ten", "10"): False}
    assert {pair: relaxed_correct(*pair) for pair in expected} == expected
    augmented = lmms_mc.chartqa({**row, "type": "augmented_test"}, "t")
    samples = [(doc, "10.2"), (doc, "12"), (augmented, "ten"), (augmented, "9.6")]
    results = {}
    for metric in _task("chartqa").metrics:
        values = [metric.sample_fn(d, [GenerationResponse(a, 1)]) for d, a in samples]
        results[metric.name] = aggregate(metric, values)[0]
    assert results == {"relaxed_overall": 0.5, "relaxed_human_split": 0.5, "relaxed_augmented_split": 0.5}


def _mmmu_row(**fields) -> dict:
    return {"id": "validation_Art_Theory_12", "question": "<image 1> Compare it with <image 2>. Which is older?",
            "options": "['The first <image 2>', 'The second', 'Both']", "question_type": "multiple-choice",
            "answer": "A", "image_1": _image(0), "image_2": _image(1), "image_3": None, **fields}


def _messages(doc: Doc) -> list:
    encoder = SimpleNamespace(reads_images=True, media=MediaStore())
    prompt = _image_prompt(_task("mmmu_val"), doc, doc.query, [], PromptOptions(encoder=encoder))
    return [[part["type"], part.get("text")] for part in prompt.messages()[0]["content"]]


def test_mmmu_interleaves_images_and_text_as_lmms_eval_messages():
    doc = mmmu.mmmu(_mmmu_row(), "t")
    # lmms-eval: the pieces between a repeated image's placeholders are dropped, as here
    assert _messages(doc) == [["image", None], ["text", "Compare it with"], ["image", None],
                              ["text", "B. The second\nC. Both\n\nAnswer with the option's letter from the given "
                                       "choices directly."]]
    assert doc.images == [_image(0)["bytes"], _image(1)["bytes"]]
    open_doc = mmmu.mmmu(_mmmu_row(id="validation_Math_3", question="What is x in <image 1>?", options="[]",
                                   question_type="open", answer="1,000"), "t")
    assert _messages(open_doc) == [["text", "What is x in"], ["image", None],
                                   ["text", "?\n\nAnswer the question using a single word or phrase."]]
    repeated = mmmu.mmmu(_mmmu_row(question="See <image 1> and again <image 1> then", options="['1', '2']"), "t")
    assert _messages(repeated) == [["text", "See"], ["image", None],
                                   ["text", "then\nA. 1\nB. 2\n\nAnswer with the option's letter from the given "
                                            "choices directly."]]
    assert mmmu.mmmu_text(_mmmu_row()).endswith("C. Both\n\nAnswer with the option's letter from the given choices "
                                                "directly.")


def test_mmmu_multiple_choice_parsing():
    options = ["The first", "The second", "Both"]
    expected = {"(B)": "B", "B": "B", "B.": "B", "The answer is (A) not (C)": "C",
                "It is the second one, clearly shown here": "B", "A B": "B", "A. or C.": "C"}
    assert {a: choice_answer(a, options, seed="q1") for a in expected} == expected
    # nothing parseable: a letter drawn from random.Random(question id), the same on every call
    drawn = {choice_answer("nothing", options, seed=f"q{i}") for i in range(20)}
    assert drawn <= {"A", "B", "C"} and len(drawn) > 1
    assert choice_answer("nothing", options, seed="q1") == choice_answer("nothing", options, seed="q1")


def test_mmmu_open_parsing():
    expected = {"1000": (["1000.0"], True), "So the answer is 1,000.": (["0.0", "1000.0"], True),
                "x = 999.999": (["1000.0"], True), "I don't know": (["i don't know"], False),
                "the value is 12\nthus it is 1000 apples": (["1000 apples", "1000.0", "12.0"], True),
                "The result is 2e3": (["2000.0", "3.0"], False)}
    for answer, (candidates, correct) in expected.items():
        parsed = open_answers(answer)
        assert sorted(map(str, parsed)) == candidates, answer
        assert open_correct("1,000", parsed) is correct, answer
    texts = {"It is Paris.": True, "paris": True, "London": False, "The capital is parisian": True}
    assert {a: open_correct("Paris", open_answers(a)) for a in texts} == texts


def test_mmmu_accuracy_overall_and_per_domain():
    art = [mmmu.mmmu(_mmmu_row(id=f"validation_Art_{i}", answer=gold), "t") for i, gold in ((1, "A"), (2, "B"))]
    math = [mmmu.mmmu(_mmmu_row(id="validation_Math_1", question="x in <image 1>?", options="[]",
                                question_type="open", answer="3"), "t"),
            mmmu.mmmu(_mmmu_row(id="validation_Math_2", answer="C"), "t")]
    samples = [(art[0], "A"), (art[1], "A"), (math[0], "3.0"), (math[1], "C")]  # lmms-eval: 0.75
    results = {}
    for metric in _task("mmmu_val").metrics:
        values = [metric.sample_fn(d, [GenerationResponse(a, 1)]) for d, a in samples]
        results[metric.name] = aggregate(metric, values)[0]
    assert results["mmmu_acc"] == 0.75 and results["mmmu_acc_art_and_design"] == 0.5
    assert results["mmmu_acc_science"] == 1.0 and np.isnan(results["mmmu_acc_business"])
    task = _task("mmmu_val")
    assert (task.hf_repo, task.evaluation_split, task.generation_size) == ("lmms-lab-encoder/MMMU", "validation", 128)
    with pytest.raises(ValueError, match="subject"):
        mmmu.mmmu(_mmmu_row(id="validation_Cooking_1"), "t")


def test_tasks_are_listed_and_in_the_all_group():
    names = ("mmstar", "mmmu_val", "realworldqa", "scienceqa_img", "ai2d", "chartqa")
    proc = run_cli(["tasks", "list", "--suite", "lmms"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert all(f"lmms|{name}" in lines for name in names)
    group = next(g for g in GROUPS if g.name == "all")
    assert set(f"lmms|{name}" for name in names) <= set(group.members)
    assert all(_task(name).zero_shot_only and not _task(name).stop_sequences for name in names)
