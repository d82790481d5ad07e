"""The evaluation pipeline shared by every entry point: it runs the stages in order.

task specs -> tasks and docs (docs.py) -> samples and requests (samples.py) -> execution
(execution.py) -> [judge requests, executed by the judge model (metrics/judge.py)] -> scores
(scoring.py) -> the run report (results/record.py) -> files (results/outputs.py).
Each process runs the same pipeline; its `ProcessContext` decides which requests it computes,
and the main process alone scores and writes results.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from tqdm.auto import tqdm

from lighteval_like.api.generation import GenerationParameters
from lighteval_like.api.requests import Request
from lighteval_like.api.sample import Sample
from lighteval_like.evaluation.execution import CacheSettings, Execution, combined, execute
from lighteval_like.evaluation.parameters import PipelineParameters
from lighteval_like.evaluation.reasoning import remove_reasoning
from lighteval_like.evaluation.samples import PromptOptions, build_samples, followup_requests, prompt_texts
from lighteval_like.evaluation.scoring import (
    ScoringContext,
    TaskMetrics,
    by_task,
    cleanup_failures,
    metric_info,
    permit_code_execution,
    require_judge,
    score_run,
    task_metrics,
)
from lighteval_like.metrics.judge import JudgeAnswers, JudgeModel, collect_judge_requests
from lighteval_like.metrics.library import JUDGE
from lighteval_like.models.base import LanguageModel, ModelInfo
from lighteval_like.models.prompt_encoder import PromptEncoder
from lighteval_like.results import outputs
from lighteval_like.results.outputs import EvaluationResult
from lighteval_like.results.record import GeneralSummary, RunReport, general_config, text_hash
from lighteval_like.results.tensorboard import check_available
from lighteval_like.runtime import ProcessContext
from lighteval_like.tasks.config import TaskGroup
from lighteval_like.tasks.data import DataSource
from lighteval_like.tasks.docs import TaskData, load_task_data
from lighteval_like.tasks.registry import Registry, ResolvedTask
from lighteval_like.tasks.specs import parse_task_specs


@dataclass
class Answered:
    """What the models produced: the samples with their responses, the evaluated model's execution
    and facts (taken before it was released; the main process's alone), and the judge pass's
    execution (None: no judge metric in the run)."""

    samples: list[Sample]
    execution: Execution
    model_info: ModelInfo | None
    model_stats: dict
    judge: Execution | None = None
    judge_info: ModelInfo | None = None  # the judge's facts (main process)


def _judge_summary(judge: JudgeModel | None, execution: Execution | None, info: ModelInfo | None) -> dict | None:
    """`summary_general.judge`: who judged (backend, model args, the loaded judge's facts), its
    requests and response cache (None: no judge pass)."""
    if execution is None:
        return None
    return {"backend": judge.backend, "model_args": judge.model_args, "model": info.as_record() if info else None,
            "num_requests": execution.num_requests, "response_cache": dataclasses.asdict(execution.cache)}


class Pipeline:
    def __init__(self, params: PipelineParameters, model_factory: Callable[[], LanguageModel],
                 process: ProcessContext | None = None, model_args: dict | None = None,
                 judge: JudgeModel | None = None, close_model: Callable[[LanguageModel], None] | None = None):
        self.params = params
        self.model_factory = model_factory
        self.close_model = close_model  # run on the evaluated model once it has answered (its backend's close)
        self.process = process or ProcessContext()
        self.model_args = model_args or {}
        self.judge = judge  # the model judge metrics ask (None: a run with one is refused)
        self.timings: dict[str, float] = {}
        self.metrics: TaskMetrics = {}  # each task's, resolved once by the preflight
        self.scoring = ScoringContext()  # what metrics get beyond the responses (the judge's answers added later)
        self.start_time = time.time()
        self.timestamp = datetime.now().isoformat().replace(":", "-")
        self.groups: list[TaskGroup] = []  # the registry's, set with the tasks, averaged at scoring

    def _timed(self, stage: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self.timings[stage] = round(self.timings.get(stage, 0.0) + time.perf_counter() - t0, 4)
        return out

    def _progress(self, items: list, desc: str):
        return tqdm(items, desc=desc, disable=not self.process.is_main or len(items) < 2)

    def resolve_tasks(self) -> list[ResolvedTask]:
        registry = Registry(self.params.custom_tasks)
        self.groups = list(registry.groups.values())
        return registry.resolve(parse_task_specs(self.params.tasks))

    def preflight(self, tasks: list[ResolvedTask]) -> None:
        """What can be refused is refused before any data or model loads: a metric that is unknown
        or that the samples cannot give, code execution without consent, a judge metric without a
        judge, a missing tensorboard package, an output folder that cannot be written."""
        p = self.params
        self.metrics = task_metrics(tasks, p.generation or GenerationParameters())
        isolation = permit_code_execution(tasks, self.metrics, p.allow_code_execution, p.allow_weaker_isolation)
        require_judge(tasks, self.metrics, self.judge is not None)
        self.scoring = ScoringContext(isolation)
        if p.push_to_tensorboard:
            check_available()
        if self.process.is_main:
            outputs.check_output_dir(p.output_dir)

    def load_data(self, tasks: list[ResolvedTask]) -> list[TaskData]:
        p = self.params
        source = DataSource.from_env(
            p.dataset_dir, cache_dir=p.cache_dir,
            num_proc=p.dataset_loading_processes if p.dataset_loading_processes > 1 else None,
        )
        return [load_task_data(source, t, p.max_samples, p.skip_bad_samples) for t in self._progress(tasks, "loading data")]

    def build_samples(self, data: list[TaskData], encoder: PromptEncoder) -> list[Sample]:
        options = PromptOptions(
            seed=self.params.seed, num_fewshot_seeds=self.params.num_fewshot_seeds,
            system_prompt=self.params.system_prompt, chat=self.params.use_chat_template, encoder=encoder,
            generation=self.params.generation or GenerationParameters(),
        )
        return [s for td in self._progress(data, "building requests") for s in build_samples(td, options)]

    def answer(self, data: list[TaskData]) -> Answered:
        """The evaluated model loaded, its responses to every sample's requests (on the main
        process), its facts taken; then it is closed and released (the pipeline keeps no reference)."""
        model = self._timed("load_model", self.model_factory)
        try:
            samples = self._timed("build_requests", self.build_samples, data, model.encoder)
            settings = CacheSettings(self.model_args, self.params.cache_dir, not self.params.no_cache)
            execution = self._rounds(samples, model, settings)
            self.timings.update(execution.timings)
            if execution.answers is None:  # not the main process: it neither scores nor reports
                return Answered(samples, execution, None, {})
            if self.params.reasoning_tags:
                remove_reasoning(samples, self.params.reasoning_tags, model.encoder)
            return Answered(samples, execution, model.info(), model.stats())
        finally:
            if self.close_model is not None:
                self.close_model(model)

    def _rounds(self, samples: list[Sample], model: LanguageModel, settings: CacheSettings) -> Execution:
        """The samples' requests through the executor and the response cache, then, while a
        multi-turn sample has a turn left, its next turn's in a round of their own."""
        execution = execute([r for s in samples for r in s.requests], model, self.process, settings)
        followups = self._next_turn(samples, execution)
        while followups:
            execution = combined(execution, execute(followups, model, self.process, settings))
            followups = self._next_turn(samples, execution)
        return execution

    def _next_turn(self, samples: list[Sample], execution: Execution) -> list[Request]:
        """The samples' responses so far set (main process), and the requests of their next turn,
        built there from the responses to the last and sent to every rank."""
        mine: list[Request] | None = None
        if execution.answers is not None:
            mine = []
            for sample in samples:
                sample.responses = [execution.answers[r] for r in sample.requests]
                followups = followup_requests(sample) if sample.doc.next_turns else []
                sample.requests = sample.requests + followups
                mine += followups
        return self.process.broadcast_from_main(mine)

    def ask_judge(self, data: list[TaskData], answered: Answered) -> None:
        """Every judge request of the run, built on the main process from the responses, answered
        in one pass by the judge model through the executor and the response cache (under the
        judge's fingerprint), once the evaluated model is released: on the run's ranks, or on the
        main process by itself while the others wait (`JudgeModel.process`). Nothing without
        judge metrics."""
        if not any(JUDGE in m.needs for task in self.metrics.values() for m in task):
            return
        if self.judge.process is None:
            self._judge_pass(data, answered, self.process)
            return
        if self.process.is_main:
            self._judge_pass(data, answered, self.judge.process)
        self.process.barrier()  # the other ranks wait out the main process's pass

    def _judge_pass(self, data: list[TaskData], answered: Answered, process: ProcessContext) -> None:
        """The judge loaded and asked every judge request, its shares computed by `process`'s ranks."""
        mine = collect_judge_requests(self.metrics, by_task(data, answered.samples)) if process.is_main else None
        requests = process.broadcast_from_main(mine)
        gc.collect()  # the evaluated model's memory is free before the judge loads
        judge = self._timed("load_judge", self.judge.load)
        try:
            settings = CacheSettings(self.judge.model_args, self.params.cache_dir, not self.params.no_cache)
            answered.judge = execute(requests, judge, process, settings)
            answered.judge_info = judge.info() if process.is_main else None
        finally:
            if self.judge.close is not None:
                self.judge.close(judge)
        self.timings.update({k.replace("scoring_", "judge_", 1): v for k, v in answered.judge.timings.items()})
        if answered.judge.answers is not None:
            self.scoring = dataclasses.replace(self.scoring, judge=JudgeAnswers(answered.judge.answers))

    def evaluate(self) -> EvaluationResult | None:
        """Run every stage; returns the results on the main process, None elsewhere."""
        tasks = self._timed("resolve_tasks", self.resolve_tasks)
        self.preflight(tasks)
        data = self._timed("load_data", self.load_data, tasks)
        answered = self.answer(data)
        self.ask_judge(data, answered)
        if not self.process.is_main:
            return None
        report = self._timed("metrics", self.report, data, answered)
        details = [td.task.key for td in data] if self.params.save_details else []
        return self._timed("save", outputs.save_run, self.params.output_dir, self.timestamp, report, answered.samples,
                           details, not self.params.no_cache, self.params.push_to_tensorboard)

    def report(self, data: list[TaskData], answered: Answered) -> RunReport:
        samples, execution = answered.samples, answered.execution
        results, summaries = score_run(data, samples, self.groups, self.metrics, self.scoring)
        scoring = sum(v for k, v in self.timings.items() if k.startswith("scoring_"))
        general = GeneralSummary(
            text_hash(prompt_texts(samples)), len(samples), execution.num_requests,
            sum(s.fewshot_truncated for s in samples), dict(self.timings),
            round(execution.cache.computed / scoring, 3) if scoring else None, execution.cache, answered.model_stats,
            _judge_summary(self.judge, answered.judge, answered.judge_info),
        )
        config = general_config(self.params, self.process.dp_size, self.start_time, answered.model_info,
                                self.model_args, self.scoring.isolation, cleanup_failures(samples))
        config_tasks = {td.task.config.full_name: td.task.config.to_dict() for td in data}
        for name, info in metric_info(data, self.metrics, results).items():
            config_tasks[name]["metric_info"] = info  # how compare and report read each metric
        return RunReport(
            config, results, {td.task.key: td.task.config.version for td in data}, config_tasks, summaries, general,
        )
