"""BIG-bench's JSON tasks (`hails/bigbench`) as one family: lm-eval 0.4.13's two templates x its task list.

Every task's rows are the `<task>_zero_shot` config: `inputs` (the prompt, ending in "A:"),
`targets`, `multiple_choice_targets`, `multiple_choice_scores`. Variants, as lm-eval's templates:

* `mc` (`bigbench|<task>`): loglikelihood of each of `multiple_choice_targets` after `inputs`, gold
  `targets[0]`, rows without choices dropped; acc.
* `mc_scores`: the same with the gold the first choice scored 1 (strategyqa, whose `targets` are
  explanations rather than one of the choices).
* `gen` (`bigbench|<task>_gen`): greedy generation after `inputs`, 128 new tokens, stopped at a blank
  line; exact match with `targets[0]` ignoring punctuation.

Few-shot examples come from `train`, drawn as lm-eval draws (lm-eval's templates name no few-shot
split, so it would draw from the evaluated split `default` itself, the doc not excluded).
"""

from __future__ import annotations

from dataclasses import replace

from lighteval_like.metrics.library import EXACT_MATCH_IGNORE_PUNCTUATION
from lighteval_like.tasks import prompts
from lighteval_like.tasks.config import RequestType, TaskConfig
from lighteval_like.tasks.family import TaskFamily, parse_members


def has_choices(row: dict) -> bool:
    """Multiple-choice variants skip free-form rows, which some tasks mix in (kanji_ascii)."""
    return len(row["multiple_choice_targets"]) > 0


_COMMON = dict(suite="bigbench", hf_repo="hails/bigbench", hf_subset="{task}_zero_shot",
               evaluation_split="default", few_shots_split="train")
_MC = TaskConfig(name="{task}", prompt_function=prompts.bigbench_mc, metrics=("acc",), row_filter=has_choices,
                 **_COMMON)

TEMPLATES: dict[str, TaskConfig] = {
    "mc": _MC,
    "mc_scores": replace(_MC, prompt_function=prompts.bigbench_mc_scores),
    "gen": TaskConfig(
        name="{task}_gen", prompt_function=prompts.bigbench_gen, request_type=RequestType.GENERATIVE,
        metrics=(EXACT_MATCH_IGNORE_PUNCTUATION,), generation_size=128, stop_sequences=("\n\n",), **_COMMON,
    ),
}

# Every BIG-bench JSON task lm-eval 0.4.13 carries (`bigbench_<task>_generate_until`, and
# `bigbench_<task>_multiple_choice` where its first row has choices), with the variants it has.
MEMBERS = parse_members("""
abstract_narrative_understanding: mc gen
anachronisms: mc gen
analogical_similarity: mc gen
analytic_entailment: mc gen
arithmetic: mc gen
ascii_word_recognition: gen
authorship_verification: mc gen
auto_categorization: gen
auto_debugging: gen
bbq_lite_json: mc gen
bridging_anaphora_resolution_barqa: gen
causal_judgment: mc gen
cause_and_effect: mc gen
checkmate_in_one: mc gen
chess_state_tracking: gen
chinese_remainder_theorem: gen
cifar10_classification: mc gen
code_line_description: mc gen
codenames: gen
color: mc gen
common_morpheme: mc gen
conceptual_combinations: mc gen
conlang_translation: gen
contextual_parametric_knowledge_conflicts: mc gen
crash_blossom: mc gen
crass_ai: mc gen
cryobiology_spanish: mc gen
cryptonite: gen
cs_algorithms: mc gen
dark_humor_detection: mc gen
date_understanding: mc gen
disambiguation_qa: mc gen
discourse_marker_prediction: mc gen
disfl_qa: gen
dyck_languages: mc gen
elementary_math_qa: mc gen
emoji_movie: mc gen
emojis_emotion_prediction: mc gen
empirical_judgments: mc gen
english_proverbs: mc gen
english_russian_proverbs: mc gen
entailed_polarity: mc gen
entailed_polarity_hindi: mc gen
epistemic_reasoning: mc gen
evaluating_information_essentiality: mc gen
fact_checker: mc gen
fantasy_reasoning: mc gen
few_shot_nlg: gen
figure_of_speech_detection: mc gen
formal_fallacies_syllogisms_negation: mc gen
gem: gen
gender_inclusive_sentences_german: gen
general_knowledge: mc gen
geometric_shapes: mc gen
goal_step_wikihow: mc gen
gre_reading_comprehension: mc gen
hhh_alignment: mc gen
hindi_question_answering: gen
hindu_knowledge: mc gen
hinglish_toxicity: mc gen
human_organs_senses: mc gen
hyperbaton: mc gen
identify_math_theorems: mc gen
identify_odd_metaphor: mc gen
implicatures: mc gen
implicit_relations: mc gen
intent_recognition: mc gen
international_phonetic_alphabet_nli: mc gen
international_phonetic_alphabet_transliterate: gen
intersect_geometry: mc gen
irony_identification: mc gen
kanji_ascii: mc gen
kannada: mc gen
key_value_maps: mc gen
known_unknowns: mc gen
language_games: gen
language_identification: mc gen
linguistic_mappings: gen
linguistics_puzzles: gen
list_functions: gen
logic_grid_puzzle: mc gen
logical_args: mc gen
logical_deduction: mc gen
logical_fallacy_detection: mc gen
logical_sequence: mc gen
mathematical_induction: mc gen
matrixshapes: gen
metaphor_boolean: mc gen
metaphor_understanding: mc gen
minute_mysteries_qa: gen
misconceptions: mc gen
misconceptions_russian: mc gen
mnist_ascii: mc gen
modified_arithmetic: gen
moral_permissibility: mc gen
movie_dialog_same_or_different: mc gen
movie_recommendation: mc gen
mult_data_wrangling: gen
multiemo: mc gen
natural_instructions: gen
navigate: mc gen
nonsense_words_grammar: mc gen
novel_concepts: mc gen
object_counting: gen
odd_one_out: mc gen
operators: gen
paragraph_segmentation: gen
parsinlu_qa: mc gen
parsinlu_reading_comprehension: gen
penguins_in_a_table: mc gen
periodic_elements: mc gen
persian_idioms: mc gen
phrase_relatedness: mc gen
physical_intuition: mc gen
physics: mc gen
physics_questions: gen
play_dialog_same_or_different: mc gen
polish_sequence_labeling: gen
presuppositions_as_nli: mc gen
qa_wikidata: gen
question_selection: mc gen
real_or_fake_text: mc gen
reasoning_about_colored_objects: mc gen
repeat_copy_logic: gen
rephrase: gen
riddle_sense: mc gen
ruin_names: mc gen
salient_translation_error_detection: mc gen
scientific_press_release: gen
semantic_parsing_in_context_sparc: gen
semantic_parsing_spider: gen
sentence_ambiguity: mc gen
similarities_abstraction: mc gen
simp_turing_concept: gen
simple_arithmetic_json: gen
simple_arithmetic_json_multiple_choice: gen
simple_arithmetic_json_subtasks: gen
simple_arithmetic_multiple_targets_json: gen
simple_ethical_questions: mc gen
simple_text_editing: gen
snarks: mc gen
social_iqa: mc gen
social_support: mc gen
sports_understanding: mc gen
strange_stories: mc gen
strategyqa: mc_scores gen
sufficient_information: gen
suicide_risk: mc gen
swahili_english_proverbs: mc gen
swedish_to_german_proverbs: mc gen
symbol_interpretation: mc gen
temporal_sequences: mc gen
tense: gen
timedial: mc gen
topical_chat: gen
tracking_shuffled_objects: mc gen
understanding_fables: mc gen
undo_permutation: mc gen
unit_conversion: mc gen
unit_interpretation: mc gen
unnatural_in_context_learning: gen
vitaminc_fact_verification: mc gen
what_is_the_tao: mc gen
which_wiki_edit: mc gen
winowhy: mc gen
word_sorting: gen
word_unscrambling: gen
""")

FAMILY = TaskFamily(TEMPLATES, MEMBERS)

# BIG-Bench-Hard's tasks that are JSON tasks (boolean_expressions, multistep_arithmetic and
# web_of_lies are programmatic, so hails/bigbench has none of them).
BBH = (
    "causal_judgment date_understanding disambiguation_qa dyck_languages formal_fallacies_syllogisms_negation "
    "geometric_shapes hyperbaton logical_deduction movie_recommendation navigate object_counting "
    "penguins_in_a_table reasoning_about_colored_objects ruin_names salient_translation_error_detection snarks "
    "sports_understanding temporal_sequences tracking_shuffled_objects word_sorting"
).split()

GROUPS = [FAMILY.group(), FAMILY.group("bbh", only=tuple(BBH))]
