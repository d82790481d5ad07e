"""BIG-bench as a task family: the table's expansion, prompts and gold rules on rows copied from the
`hails/bigbench` mirror, choice filtering, the generation metric, group averages and the CLI."""

from __future__ import annotations

import pytest
from conftest import run_cli, write_rows

from lighteval_like.api.requests import GenerationResponse
from lighteval_like.evaluation.samples import fewshot_examples
from lighteval_like.evaluation.scoring import group_averages, overall
from lighteval_like.metrics.library import EXACT_MATCH_IGNORE_PUNCTUATION
from lighteval_like.results.record import MetricScore
from lighteval_like.tasks import TaskConfig, TaskFamily, parse_members, prompts
from lighteval_like.tasks.bigbench import BBH
from lighteval_like.tasks.data import DataSource
from lighteval_like.tasks.docs import TaskData, load_task_data
from lighteval_like.tasks.registry import Registry
from lighteval_like.tasks.specs import parse_one_spec

REPO = "hails/bigbench"
SNARKS = {
    "idx": 0,
    "inputs": "Q: Which statement is sarcastic? (a) Protein supplements are way more expensive than $1 breakfast "
              "gruel. (b) Protein supplements are way more expensive than $1 breakfast burritos.\nA:",
    "targets": ["(b)"], "multiple_choice_targets": ["(a)", "(b)"], "multiple_choice_scores": [0, 1],
}
SNARKS_TRAIN = {
    "idx": 0,
    "inputs": "Q: Which statement is sarcastic? (a) He's a generous person, trying to promote a charity stream that "
              "has raised millions to help kids in need. (b) He's a terrible person, trying to promote a charity "
              "stream that has raised millions to help kids in need.\nA:",
    "targets": ["(b)"], "multiple_choice_targets": ["(a)", "(b)"], "multiple_choice_scores": [0, 1],
}
STRATEGYQA = {
    "idx": 0, "inputs": "Q: Is it common to see frost during some college commencements?\nA:",
    "targets": ["Yes. College commencement ceremonies often happen during the months of December, May, and "
                "sometimes June.  Frost isn't uncommon to see during the month of December, as it is the winter."],
    "multiple_choice_targets": ["Yes", "No"], "multiple_choice_scores": [1, 0],
}
WORD_SORTING = {
    "idx": 0, "inputs": "Sort the following words alphabetically:\nList: stick gelatine\nSorted:",
    "targets": ["gelatine stick"], "multiple_choice_targets": [], "multiple_choice_scores": [],
}


@pytest.fixture(scope="module")
def bb_mirror(tmp_path_factory) -> str:
    """Real rows of snarks, strategyqa and word_sorting; kanji_ascii mixes free-form and choice rows,
    as the real config does (the free-form row first)."""
    root = str(tmp_path_factory.mktemp("bb-mirror"))
    write_rows(root, REPO, "snarks_zero_shot", "default", [SNARKS, {**SNARKS_TRAIN, "idx": 1}])
    write_rows(root, REPO, "snarks_zero_shot", "train", [SNARKS_TRAIN])
    write_rows(root, REPO, "strategyqa_zero_shot", "default", [STRATEGYQA])
    write_rows(root, REPO, "word_sorting_zero_shot", "default", [WORD_SORTING])
    write_rows(root, REPO, "kanji_ascii_zero_shot", "default", [WORD_SORTING, SNARKS, WORD_SORTING, SNARKS_TRAIN])
    return root


def _data(root: str, spec: str, max_samples: int | None = None):
    spec_ = parse_one_spec(spec)
    (task,) = Registry().resolve([spec_])
    return load_task_data(DataSource(data_dir=root), task, max_samples, skip_bad=False)


def test_table_expands_to_lm_eval_task_list():
    """119 multiple-choice and 167 generation tasks, as lm-eval 0.4.13; strategyqa's gold from scores."""
    registry = Registry()
    names = registry.names("bigbench")
    assert len([n for n in names if n.endswith("_gen")]) == 167
    assert len([n for n in names if not n.endswith("_gen")]) == 119
    assert "bigbench|word_sorting_gen" in names and "bigbench|word_sorting" not in names
    snarks, strategyqa = registry.get("bigbench|snarks"), registry.get("bigbench|strategyqa")
    assert (snarks.hf_repo, snarks.hf_subset, snarks.evaluation_split, snarks.few_shots_split) == (
        REPO, "snarks_zero_shot", "default", "train")
    assert strategyqa.prompt_function is prompts.bigbench_mc_scores
    gen = registry.get("bigbench|snarks_gen")
    assert (gen.generation_size, gen.stop_sequences, gen.hf_subset) == (128, ("\n\n",), "snarks_zero_shot")


def test_family_table_errors_name_the_line():
    template = TaskConfig(name="{task}", suite="s", prompt_function=prompts.bigbench_gen, hf_repo="r",
                          hf_subset="{task}_cfg", evaluation_split="test", few_shots_split=None, metrics=("em",))
    family = TaskFamily({"gen": template}, parse_members("# comment\na: gen\n\nb: gen  # trailing\n"))
    assert [(c.name, c.hf_subset) for c in family.configs()] == [("a", "a_cfg"), ("b", "b_cfg")]
    with pytest.raises(ValueError, match="unknown variant.*mc"):
        TaskFamily({"gen": template}, {"a": ("mc",)})
    with pytest.raises(ValueError, match="line 2 'b'"):
        parse_members("a: gen\nb")
    with pytest.raises(ValueError, match="'a' listed twice"):
        parse_members("a: gen\na: gen")


def test_mc_prompt_gold_and_fewshot_from_train(bb_mirror):
    data = _data(bb_mirror, "bigbench|snarks|1|0")
    (_, doc), (_, second) = data.docs
    assert (doc.query, doc.choices, doc.gold_index, doc.target_delimiter) == (SNARKS["inputs"], ["(a)", "(b)"], 1, " ")
    assert second.query == SNARKS_TRAIN["inputs"]
    assert data.fewshot_split == "train" and [d.query for _, d in data.fewshot_pool] == [SNARKS_TRAIN["inputs"]]


# The train rows lm-eval 0.4.13 chose for bigbench_snarks_* (3 shots, seed 1234, the first docs),
# read from its logged samples by benchmarks/compare_lm_eval.py, which gives lm-eval's task
# `fewshot_split: train` (its template names none). Pool: the 145 train rows; n draws per doc (the
# pool is not the evaluated split, so no extra draw and nothing removed), as ours.
LM_EVAL_SNARKS_SHOTS = [[112, 29, 1], [23, 8, 21], [25, 90, 60]]


@pytest.mark.parametrize("name", ["bigbench|snarks", "bigbench|snarks_gen"])
def test_fewshot_draws_equal_lm_eval_from_train(name):
    task = Registry().get(name)
    assert task.few_shots_split == "train" and not task.few_shots_draw_extra
    pool = [(i, prompts.bigbench_gen({"inputs": f"row {i}", "targets": ["x"]}, name)) for i in range(145)]
    docs = [(i, prompts.bigbench_gen({"inputs": f"doc {i}", "targets": ["x"]}, name)) for i in range(3)]
    drawn = fewshot_examples(pool, 3, docs, False, task, seed=1234)
    assert [[int(d.query.split()[1]) for d in drawn[i]] for i in range(3)] == LM_EVAL_SNARKS_SHOTS


def test_gold_rules_a_and_b(bb_mirror):
    """strategyqa's targets are explanations: gold is the first choice scored 1 (template b)."""
    ((_, doc),) = _data(bb_mirror, "bigbench|strategyqa|0|0").docs
    assert (doc.choices, doc.gold_index) == (["Yes", "No"], 0)
    ((_, gen),) = _data(bb_mirror, "bigbench|word_sorting_gen|0|0").docs
    assert (gen.query, gen.choices, gen.gold_index) == (WORD_SORTING["inputs"], ["gelatine stick"], 0)


def test_mc_drops_rows_without_choices_before_max_samples(bb_mirror):
    mc = _data(bb_mirror, "bigbench|kanji_ascii|0|0", max_samples=1)
    assert [d.choices for _, d in mc.docs] == [["(a)", "(b)"]]  # row 1, not the free-form row 0
    assert [d.query for _, d in _data(bb_mirror, "bigbench|kanji_ascii|0|0").docs] == [
        SNARKS["inputs"], SNARKS_TRAIN["inputs"]]
    gen = _data(bb_mirror, "bigbench|kanji_ascii_gen|0|0")
    assert len(gen.docs) == 4  # generation keeps every row


@pytest.mark.parametrize("generation, gold, expected", [
    ("gelatine stick", "gelatine stick", 1.0),
    ("(b)", "b", 1.0),  # punctuation dropped on both sides
    ("gelatine, stick.", "gelatine stick", 1.0),
    (" gelatine stick", "gelatine stick", 0.0),  # whitespace counts, as in lm-eval
    ("Gelatine stick", "gelatine stick", 0.0),  # so does case
    ("gelatine", "gelatine stick", 0.0),
])
def test_exact_match_ignoring_punctuation(generation, gold, expected):
    doc = prompts.bigbench_gen({"inputs": "q", "targets": [gold]}, "t")
    assert EXACT_MATCH_IGNORE_PUNCTUATION.sample_fn(doc, [GenerationResponse(generation, 1)]) == expected
    assert EXACT_MATCH_IGNORE_PUNCTUATION.name == "exact_match"


def test_group_averages_for_bbh_and_the_suite():
    """bbh averages its members that ran; the suite average all bigbench tasks; `all` skips both."""
    registry = Registry()
    scores = {
        "bigbench|snarks|0": {"acc": MetricScore(0.2, 0.1)},
        "bigbench|navigate|0": {"acc": MetricScore(0.6, 0.3)},
        "bigbench|anachronisms|0": {"acc": MetricScore(1.0, 0.2)},  # not BIG-Bench-Hard
        "bigbench|word_sorting_gen|0": {"exact_match": MetricScore(0.5, 0.1)},
        "bigbench|emoji_movie|3": {"acc": MetricScore(0.0, 0.0)},  # alone at 3-shot: no average
    }
    data = [_no_docs(registry, key) for key in scores]
    groups = group_averages(list(registry.groups.values()), data, scores)
    assert set(groups) == {"bigbench|bbh:_average|0", "bigbench|_average|0"}
    bbh, suite = groups["bigbench|bbh:_average|0"], groups["bigbench|_average|0"]
    assert bbh["acc"].value == pytest.approx(0.4) and bbh["acc"].stderr == pytest.approx(0.2)
    assert bbh["exact_match"].value == pytest.approx(0.5)
    assert suite["acc"].value == pytest.approx(0.6)
    assert overall(scores)["acc"].value == pytest.approx(1.8 / 4)
    assert len(registry.groups["bigbench|bbh"].members) == len(BBH) == 20


def _no_docs(registry: Registry, key: str) -> TaskData:
    """TaskData without docs, enough for group averaging."""
    (task,) = registry.resolve([parse_one_spec(key + "|0")])
    return TaskData(task, [], [], None, 0)


def test_group_spec_runs_its_members():
    (first, *rest) = Registry().resolve([parse_one_spec("bigbench|bbh|3|0")])
    assert first.key == "bigbench|causal_judgment|3" and len(rest) == 19
    assert "bigbench|object_counting_gen|3" in [t.key for t in rest]


CUSTOM_FAMILY = '''
from dataclasses import replace
from lighteval_like.tasks import TaskFamily, parse_members
from lighteval_like.tasks.bigbench import TEMPLATES

VALIDATION = {k: replace(t, suite="bb_val", evaluation_split="validation") for k, t in TEMPLATES.items()}
FAMILY = TaskFamily(VALIDATION, parse_members("snarks: mc gen\\nword_sorting: gen"))
TASKS_TABLE = FAMILY.configs()
TASK_GROUPS = [FAMILY.group(), FAMILY.group("hard", only=("snarks", "word_sorting"))]
'''


def test_custom_family_and_groups(tmp_path):
    """The README's recipe: a custom file adds a family and its groups."""
    path = tmp_path / "family.py"
    path.write_text(CUSTOM_FAMILY, encoding="utf-8")
    registry = Registry(str(path))
    assert registry.names("bb_val") == ["bb_val|snarks", "bb_val|snarks_gen", "bb_val|word_sorting_gen"]
    assert registry.get("bb_val|snarks").evaluation_split == "validation"
    assert [t.key for t in registry.resolve([parse_one_spec("bb_val|hard|0|0")])] == [
        "bb_val|snarks|0", "bb_val|word_sorting_gen|0"]  # the first variant of each member
    assert registry.groups["bb_val|"].average_key(2) == "bb_val|_average|2"


def test_tasks_list_and_inspect(bb_mirror):
    listed = run_cli(["tasks", "list", "--suite", "bigbench"])
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert "bigbench|snarks" in lines and "bigbench|snarks_gen" in lines
    assert any(line.startswith("bigbench|bbh  (group of 20 tasks") for line in lines)
    assert any(line.startswith("bigbench|_average") for line in lines)
    shown = run_cli(["tasks", "inspect", "bigbench|snarks", "--dataset_dir", bb_mirror, "--num_fewshot", "1"])
    assert shown.returncode == 0, shown.stderr
    assert f"{SNARKS_TRAIN['inputs']} (b)\n\n{SNARKS['inputs']}" in shown.stdout
    assert "choice 1 (gold): ' (b)'" in shown.stdout


def test_missing_config_offline_is_named(bb_mirror):
    """A config the mirror lacks, offline: one line naming it and how to provide it."""
    proc = run_cli(["tasks", "inspect", "bigbench|hyperbaton", "--dataset_dir", bb_mirror])
    (line,) = [x for x in proc.stdout.splitlines() if "unavailable" in x]
    assert "dataset hails/bigbench/hyperbaton_zero_shot split 'default' for task bigbench|hyperbaton" in line
    assert "hyperbaton_zero_shot/default.jsonl in the mirror" in line
