"""GSM8K with chain-of-thought exemplars, as lm-eval 0.4.13's `gsm8k_cot` and its
self-consistency variant.

Prompt: the 8 fixed exemplars of Wei et al. 2022 ("Chain-of-Thought Prompting Elicits
Reasoning in Large Language Models", appendix), each `Q: <question>\\nA: <reasoning> The answer
is N.`, separated by blank lines, then `Q: <question>\\nA:`. Greedy generation of up to 256
tokens stopped at `Q:` (and `</s>`, `<|im_end|>`); strict-match takes the number after "The
answer is", flexible-extract the last number. The `_maj` variant samples at temperature 0.2,
stops also at a blank line, and reports the majority answer of k samples (k = num_samples,
a task parameter: default 8, `--gen_kwargs num_samples=K` changes it), the first sample's
strict match and the mean correctness over the samples.
"""

from __future__ import annotations

from lighteval_like.api.doc import Doc
from lighteval_like.api.generation import GenerationParameters
from lighteval_like.metrics.library import GSM8K_COT_STRICT, GSM8K_FLEXIBLE, OverSamples, gsm8k_cot_vote, gsm8k_gold
from lighteval_like.tasks.config import RequestType, TaskConfig

# (question, answer) of the exemplars, the answers ending "The answer is N."
EXEMPLARS = (
    ("There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, "
     "there will be 21 trees. How many trees did the grove workers plant today?",
     "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have "
     "been 21 - 15 = 6. The answer is 6."),
    ("If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
     "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5."),
    ("Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
     "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, "
     "they had 74 - 35 = 39. The answer is 39."),
    ("Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did "
     "Jason give to Denny?",
     "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. "
     "The answer is 8."),
    ("Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have now?",
     "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. 5 + 4 = 9. "
     "The answer is 9."),
    ("There were nine computers in the server room. Five more computers were installed each day, from monday to "
     "thursday. How many computers are now in the server room?",
     "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 computers "
     "were added. 9 + 20 is 29. The answer is 29."),
    ("Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf "
     "balls did he have at the end of wednesday?",
     "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 more, he "
     "had 35 - 2 = 33 golf balls. The answer is 33."),
    ("Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
     "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 dollars "
     "left. 23 - 15 is 8. The answer is 8."),
)
STOP_SEQUENCES = ("Q:", "</s>", "<|im_end|>")
MAJ_STOP_SEQUENCES = ("Q:", "\n\n")
DEFAULT_SAMPLES = 8


def gsm8k_cot(row: dict, task_name: str) -> Doc:
    """`Q: ...\\nA:`; a dataset row's answer is its solution (gold after '####'), an exemplar's
    its reasoning (shown after `A: ` when it is a few-shot example)."""
    return Doc(query=f"Q: {row['question']}\nA:", choices=[row.get("answer") or row["target"]], gold_index=0)


_COMMON = dict(
    suite="lighteval", prompt_function=gsm8k_cot, columns=("question",), hf_repo="openai/gsm8k", hf_subset="main",
    evaluation_split="test", few_shots_split=None, few_shots_select="first_n", request_type=RequestType.GENERATIVE,
    generation_size=256, fewshot_rows=tuple({"question": q, "target": a} for q, a in EXEMPLARS),
)
GSM8K_COT = TaskConfig(name="gsm8k_cot", metrics=(GSM8K_COT_STRICT, GSM8K_FLEXIBLE), stop_sequences=STOP_SEQUENCES,
                       **_COMMON)
GSM8K_COT_MAJ = TaskConfig(
    name="gsm8k_cot_maj", stop_sequences=MAJ_STOP_SEQUENCES,
    metrics=(GSM8K_COT_STRICT, OverSamples("maj", gsm8k_cot_vote, gsm8k_gold), OverSamples("avg", gsm8k_cot_vote, gsm8k_gold)),
    generation_parameters=GenerationParameters(temperature=0.2, num_samples=DEFAULT_SAMPLES), **_COMMON,
)
