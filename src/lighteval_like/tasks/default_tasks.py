"""The built-in task table.

Few-shot split: lm-eval 0.4.13's (`train` where the dataset has one); None means the
evaluation split itself, the evaluated doc excluded. A mirror without the few-shot split
falls back to the evaluation split with a warning (see `DataSource.load_fewshot_rows`).
"""

from __future__ import annotations

from lighteval_like.metrics.library import GSM8K_FLEXIBLE, GSM8K_STRICT
from lighteval_like.tasks import arithmetic, bigbench, gsm8k_cot, humaneval, ifeval, lmms_suite, mt_bench, prompts
from lighteval_like.tasks.config import RequestType, TaskConfig, TaskGroup

MMLU_SUBJECTS = (
    "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology "
    "college_chemistry college_computer_science college_mathematics college_medicine college_physics "
    "computer_security conceptual_physics econometrics electrical_engineering elementary_mathematics "
    "formal_logic global_facts high_school_biology high_school_chemistry high_school_computer_science "
    "high_school_european_history high_school_geography high_school_government_and_politics "
    "high_school_macroeconomics high_school_mathematics high_school_microeconomics high_school_physics "
    "high_school_psychology high_school_statistics high_school_us_history high_school_world_history "
    "human_aging human_sexuality international_law jurisprudence logical_fallacies machine_learning "
    "management marketing medical_genetics miscellaneous moral_disputes moral_scenarios nutrition "
    "philosophy prehistory professional_accounting professional_law professional_medicine "
    "professional_psychology public_relations security_studies sociology us_foreign_policy virology "
    "world_religions"
).split()

TASKS_TABLE: list[TaskConfig] = [
    TaskConfig(
        name="truthfulqa:mc", suite="leaderboard", prompt_function=prompts.truthfulqa_mc,
        columns=("question", "mc1_targets", "mc2_targets"),
        hf_repo="truthfulqa/truthful_qa", hf_subset="multiple_choice",
        evaluation_split="validation", few_shots_split=None, few_shots_draw_extra=True, metrics=("mc1", "mc2"),
    ),
    TaskConfig(
        name="arc:challenge", suite="leaderboard", prompt_function=prompts.arc,
        columns=("question", "choices", "answerKey"),
        hf_repo="allenai/ai2_arc", hf_subset="ARC-Challenge",
        evaluation_split="test", few_shots_split="train", metrics=("acc", "acc_norm"),
    ),
    TaskConfig(
        name="arc:easy", suite="lighteval", prompt_function=prompts.arc, columns=("question", "choices", "answerKey"),
        hf_repo="allenai/ai2_arc", hf_subset="ARC-Easy",
        evaluation_split="test", few_shots_split="train", metrics=("acc", "acc_norm"),
    ),
    TaskConfig(
        name="hellaswag", suite="leaderboard", prompt_function=prompts.hellaswag,
        columns=("activity_label", "ctx_a", "ctx_b", "endings", "label"),
        hf_repo="Rowan/hellaswag", hf_subset=None,
        evaluation_split="validation", few_shots_split="train", few_shots_draw_extra=True, metrics=("acc", "acc_norm"),
    ),
    *[
        TaskConfig(
            name=f"mmlu:{subject}", suite="leaderboard", prompt_function=prompts.mmlu,
            columns=("question", "choices", "answer"),
            hf_repo="cais/mmlu", hf_subset=subject, evaluation_split="test",
            few_shots_split="dev", few_shots_select="first_n", metrics=("acc",),
        )
        for subject in MMLU_SUBJECTS
    ],
    TaskConfig(
        name="gsm8k", suite="leaderboard", prompt_function=prompts.gsm8k, columns=("question", "answer"),
        hf_repo="openai/gsm8k", hf_subset="main", evaluation_split="test", few_shots_split="train",
        request_type=RequestType.GENERATIVE, metrics=(GSM8K_STRICT, GSM8K_FLEXIBLE),
        generation_size=256, stop_sequences=("Question:", "</s>", "<|im_end|>"),
    ),
    TaskConfig(
        name="winogrande", suite="leaderboard", prompt_function=prompts.winogrande,
        columns=("sentence", "option1", "option2", "answer"),
        hf_repo="allenai/winogrande", hf_subset="winogrande_xl",
        evaluation_split="validation", few_shots_split="train", few_shots_draw_extra=True, metrics=("acc",),
    ),
    TaskConfig(
        name="piqa", suite="lighteval", prompt_function=prompts.piqa, columns=("goal", "sol1", "sol2", "label"),
        hf_repo="ybisk/piqa", hf_subset=None,
        evaluation_split="validation", few_shots_split="train", few_shots_draw_extra=True, metrics=("acc", "acc_norm"),
    ),
    TaskConfig(
        name="boolq", suite="lighteval", prompt_function=prompts.boolq, columns=("passage", "question", "label"),
        hf_repo="aps/super_glue", hf_subset="boolq",
        evaluation_split="validation", few_shots_split="train", few_shots_draw_extra=True, metrics=("acc",),
    ),
    TaskConfig(
        name="openbookqa", suite="lighteval", prompt_function=prompts.openbookqa,
        columns=("question_stem", "choices", "answerKey"),
        hf_repo="allenai/openbookqa", hf_subset="main",
        evaluation_split="test", few_shots_split="train", metrics=("acc", "acc_norm"),
    ),
    TaskConfig(
        name="copa", suite="lighteval", prompt_function=prompts.copa,
        columns=("premise", "question", "choice1", "choice2", "label"),
        hf_repo="aps/super_glue", hf_subset="copa",
        evaluation_split="validation", few_shots_split="train", few_shots_draw_extra=True, metrics=("acc",),
    ),
    TaskConfig(
        name="lambada:openai", suite="lighteval", prompt_function=prompts.lambada, columns=("text",),
        hf_repo="EleutherAI/lambada_openai", hf_subset="default", evaluation_split="test",
        few_shots_split=None, request_type=RequestType.LOGLIKELIHOOD, metrics=("acc_greedy", "perplexity"),
    ),
    TaskConfig(
        name="wikitext:2", suite="lighteval", prompt_function=prompts.wikitext, columns=("page",),
        hf_repo="EleutherAI/wikitext_document_level", hf_subset="wikitext-2-raw-v1",
        evaluation_split="test", few_shots_split=None, request_type=RequestType.ROLLING,
        metrics=("word_perplexity", "byte_perplexity", "bits_per_byte"),
    ),
    TaskConfig(
        name="humaneval", suite="lighteval", prompt_function=humaneval.humaneval,
        hf_repo=humaneval.HF_REPO, hf_subset=humaneval.HF_SUBSET, evaluation_split=humaneval.EVALUATION_SPLIT,
        few_shots_split=None, request_type=RequestType.GENERATIVE, metrics=(humaneval.PASS_AT_K,),
        generation_size=humaneval.GENERATION_SIZE, stop_sequences=humaneval.STOP_SEQUENCES,
    ),
    gsm8k_cot.GSM8K_COT,
    gsm8k_cot.GSM8K_COT_MAJ,
    *ifeval.TASKS,
    mt_bench.TASK,
    *[
        TaskConfig(
            name=f"arithmetic_generated:{kind}", suite="lighteval", prompt_function=prompts.arithmetic,
            columns=("context", "completion"),
            hf_repo="generated/arithmetic", hf_subset=kind, evaluation_split="validation",
            few_shots_split=None, request_type=RequestType.LOGLIKELIHOOD,
            metrics=("acc_greedy",), data_builder=arithmetic.builder(kind),
        )
        for kind in (*arithmetic.OPERATIONS, "1dc")
    ],
    *bigbench.FAMILY.configs(),
    *lmms_suite.TASKS,
]

GROUPS: list[TaskGroup] = [
    TaskGroup("leaderboard", "mmlu", tuple(f"leaderboard|mmlu:{s}" for s in MMLU_SUBJECTS)),
    TaskGroup(
        "lighteval", "arithmetic_generated",
        tuple(f"lighteval|arithmetic_generated:{k}" for k in (*arithmetic.OPERATIONS, "1dc")),
    ),
    *bigbench.GROUPS,
    *lmms_suite.GROUPS,
]
