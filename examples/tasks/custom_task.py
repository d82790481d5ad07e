"""An example custom task file: `--custom_tasks examples/tasks/custom_task.py`.

A task is one `TaskConfig` row plus a prompt function turning a dataset row into a `Doc`.
This one scores BoolQ (google/boolq, whose `answer` column is a bool) as yes/no questions:

    lighteval-like accelerate --model_args pretrained=... --custom_tasks examples/tasks/custom_task.py \
        --tasks "custom|boolq_yesno|0|0"
"""

from lighteval_like.tasks import Doc, TaskConfig


def boolq_yesno(row: dict, task_name: str) -> Doc:
    return Doc(
        query=f"Passage: {row['passage']}\nQuestion: {row['question']}?\nAnswer:",
        choices=["no", "yes"],
        gold_index=int(row["answer"]),
    )


TASKS_TABLE = [
    TaskConfig(
        name="boolq_yesno",
        suite="custom",
        prompt_function=boolq_yesno,
        hf_repo="google/boolq",
        hf_subset=None,
        evaluation_split="validation",
        few_shots_split=None,
        metrics=("acc",),
    )
]
