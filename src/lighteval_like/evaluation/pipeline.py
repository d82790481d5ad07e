"""The evaluation pipeline shared by every entry point: it runs the stages in order.

task specs -> tasks and docs (docs.py) -> samples and requests (samples.py) -> execution
(execution.py) -> scores (scoring.py) -> the run report (results.py) -> files (outputs.py).
Each process runs the same pipeline; its `ProcessContext` decides which requests it computes,
and the main process alone scores and writes results.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from tqdm.auto import tqdm

from lighteval_like.api.generation import GenerationParameters
from lighteval_like.api.sample import Sample
from lighteval_like.evaluation.execution import CacheSettings, Execution, execute
from lighteval_like.evaluation.parameters import PipelineParameters
from lighteval_like.evaluation.reasoning import remove_reasoning
from lighteval_like.evaluation.samples import PromptOptions, build_samples, prompt_texts
from lighteval_like.evaluation.scoring import cleanup_failures, metric_info, permit_code_execution, score_run
from lighteval_like.metrics.sandbox import Isolation
from lighteval_like.models.base import LanguageModel
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


class Pipeline:
    def __init__(self, params: PipelineParameters, model_factory: Callable[[], LanguageModel],
                 process: ProcessContext | None = None, model_args: dict | None = None):
        self.params = params
        self.model_factory = model_factory
        self.process = process or ProcessContext()
        self.model_args = model_args or {}
        self.timings: dict[str, float] = {}
        self.isolation: Isolation | None = None  # how model-written programs run (None: no code task)
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
        """What can be refused is refused before any data or model loads: code execution without
        consent, a missing tensorboard package, an output folder that cannot be written."""
        p = self.params
        self.isolation = permit_code_execution(tasks, p.allow_code_execution, p.allow_weaker_isolation)
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

    def evaluate(self) -> EvaluationResult | None:
        """Run every stage; returns the results on the main process, None elsewhere."""
        tasks = self._timed("resolve_tasks", self.resolve_tasks)
        self.preflight(tasks)
        data = self._timed("load_data", self.load_data, tasks)
        model = self._timed("load_model", self.model_factory)
        samples = self._timed("build_requests", self.build_samples, data, model.encoder)
        settings = CacheSettings(self.model_args, self.params.cache_dir, not self.params.no_cache)
        execution = execute([r for s in samples for r in s.requests], model, self.process, settings)
        self.timings.update(execution.timings)
        if execution.answers is None:
            return None
        for sample in samples:
            sample.responses = [execution.answers[r] for r in sample.requests]
        if self.params.reasoning_tags:
            remove_reasoning(samples, self.params.reasoning_tags, model.encoder)
        report = self._timed("metrics", self.report, data, samples, model, execution)
        details = [td.task.key for td in data] if self.params.save_details else []
        return self._timed("save", outputs.save_run, self.params.output_dir, self.timestamp, report, samples, details,
                           not self.params.no_cache, self.params.push_to_tensorboard)

    def report(self, data: list[TaskData], samples: list[Sample], model: LanguageModel, execution: Execution) -> RunReport:
        results, summaries = score_run(data, samples, self.groups, self.isolation)
        scoring = sum(v for k, v in self.timings.items() if k.startswith("scoring_"))
        general = GeneralSummary(
            text_hash(prompt_texts(samples)), len(samples), execution.num_requests,
            sum(s.fewshot_truncated for s in samples), dict(self.timings),
            round(execution.cache.computed / scoring, 3) if scoring else None, execution.cache, model.stats(),
        )
        config = general_config(self.params, self.process.dp_size, self.start_time, model.info(), self.model_args,
                                self.isolation, cleanup_failures(samples))
        config_tasks = {td.task.config.full_name: td.task.config.to_dict() for td in data}
        for name, info in metric_info(data, samples, results).items():
            config_tasks[name]["metric_info"] = info  # how compare and report read each metric
        return RunReport(
            config, results, {td.task.key: td.task.config.version for td in data}, config_tasks, summaries, general,
        )
