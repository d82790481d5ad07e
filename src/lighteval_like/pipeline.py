"""The evaluation pipeline shared by both entry points.

task specs -> tasks and docs -> samples and requests -> model -> responses -> metrics -> files.
Each process runs the same pipeline; the `ProcessContext` decides which requests it scores
and the main process alone computes metrics and writes results.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime

from tqdm.auto import tqdm

from lighteval_like import __version__, outputs
from lighteval_like.cache import CacheSummary, ResponseCache, model_fingerprint, response_cache_dir
from lighteval_like.data import DataSource
from lighteval_like.metrics import aggregate, metric_for
from lighteval_like.models.base import (
    GenerationRequest,
    LanguageModel,
    LoglikelihoodRequest,
    Request,
    RollingRequest,
)
from lighteval_like.parallel import ProcessContext
from lighteval_like.samples import PromptOptions, Sample, build_samples, make_docs
from lighteval_like.task_specs import parse_task_specs
from lighteval_like.tasks.config import Doc
from lighteval_like.tasks.registry import Registry, ResolvedTask

logger = logging.getLogger(__name__)


@dataclass
class PipelineParameters:
    """Run options shared by `accelerate` and `distributed` (named as lighteval's flags)."""

    tasks: str
    output_dir: str = "results"
    max_samples: int | None = None
    save_details: bool = False
    custom_tasks: str | None = None
    use_chat_template: bool = False
    system_prompt: str | None = None
    num_fewshot_seeds: int = 1
    job_id: str | None = None
    dataset_dir: str | None = None
    cache_dir: str | None = None
    dataset_loading_processes: int = 1
    seed: int = 1234
    skip_bad_samples: bool = False
    batch_size: int | None = None  # reported in config_general; the model applies it
    no_cache: bool = False  # True: neither read nor write the response cache (cache.py)


@dataclass
class TaskData:
    task: ResolvedTask
    docs: list[tuple[int, Doc]]
    fewshot_pool: list[tuple[int, Doc]]
    fewshot_split: str | None  # the split the pool came from; None when no shots are asked for
    skipped: int

    @property
    def same_split(self) -> bool:
        """Shots drawn from the evaluated split: each doc's own row is never its own example."""
        return self.fewshot_split == self.task.config.evaluation_split


def load_task_data(source: DataSource, task: ResolvedTask, max_samples: int | None, skip_bad: bool) -> TaskData:
    """The docs to evaluate (the first `max_samples`) and, when shots are asked for, the few-shot pool."""
    cfg = task.config
    docs, skipped = make_docs(cfg, source.load_rows(cfg, cfg.evaluation_split, max_samples), skip_bad)
    pool: list[tuple[int, Doc]] = []
    split = None
    if task.spec.num_fewshot > 0:
        rows, split = source.load_fewshot_rows(cfg)
        pool, _ = make_docs(cfg, rows, skip_bad=True)
    return TaskData(task, docs, pool, split, skipped)


@dataclass
class EvaluationResult:
    results: dict
    results_path: str | None
    details_paths: list[str] = field(default_factory=list)


class Pipeline:
    def __init__(
        self,
        params: PipelineParameters,
        model_factory: Callable[[], LanguageModel],
        process: ProcessContext | None = None,
        model_args: dict | None = None,
    ):
        self.params = params
        self.model_factory = model_factory
        self.process = process or ProcessContext()
        self.model_args = model_args or {}
        self.timings: dict[str, float] = {}
        self.start_time = time.time()
        self.timestamp = datetime.now().isoformat().replace(":", "-")

    # ---------------------------------------------------------------- stages
    def _timed(self, stage: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self.timings[stage] = round(self.timings.get(stage, 0.0) + time.perf_counter() - t0, 4)
        return out

    def resolve_tasks(self) -> list[ResolvedTask]:
        registry = Registry(self.params.custom_tasks)
        return registry.resolve(parse_task_specs(self.params.tasks))

    def load_data(self, tasks: list[ResolvedTask]) -> list[TaskData]:
        source = DataSource.from_env(
            self.params.dataset_dir, cache_dir=self.params.cache_dir,
            num_proc=self.params.dataset_loading_processes if self.params.dataset_loading_processes > 1 else None,
        )
        return [
            load_task_data(source, task, self.params.max_samples, self.params.skip_bad_samples)
            for task in tqdm(tasks, desc="loading data", disable=not self.process.is_main or len(tasks) < 2)
        ]

    def build_samples(self, data: list[TaskData], model: LanguageModel) -> list[Sample]:
        chat = getattr(model, "apply_chat_template", None) if self.params.use_chat_template else None
        options = PromptOptions(
            seed=self.params.seed, num_fewshot_seeds=self.params.num_fewshot_seeds,
            system_prompt=self.params.system_prompt, chat_formatter=chat,
            count_tokens=model.count_tokens, max_length=model.max_length,
        )
        samples = []
        for td in tqdm(data, desc="building requests", disable=not self.process.is_main or len(data) < 2):
            spec = td.task.spec
            samples += build_samples(
                spec.key, td.task.config, td.docs, td.fewshot_pool, td.same_split,
                spec.num_fewshot, spec.truncate_fewshot, options,
            )
        return samples

    def _open_cache(self, model: LanguageModel, unique: list[Request]) -> tuple[ResponseCache | None, dict]:
        """This rank's response cache and the requests it already answers.

        The main process alone reads the cache files, then sends every rank the fingerprint and
        which requests are done: all ranks skip the same ones (the shards of the rest must
        line up), and no rank writes before the main process has read."""
        if self.params.no_cache:
            return None, {}
        if not self.model_args:
            logger.warning("response cache off: the pipeline was given no model args to fingerprint the model")
            return None, {}
        import torch.distributed as dist

        folder = response_cache_dir(self.params.cache_dir)
        found: dict[Request, object] = {}
        shared = None
        if self.process.is_main:
            fingerprint, description = model_fingerprint(self.model_args, model.info())
            found = ResponseCache(folder, fingerprint, description=description).lookup(unique)
            position = {r: i for i, r in enumerate(unique)}
            shared = (fingerprint, description, sorted(position[r] for r in found))
        if dist.is_initialized() and dist.get_world_size() > 1:
            box = [shared]
            dist.broadcast_object_list(box, src=0)  # the main process is global rank 0
            shared = box[0]
        fingerprint, description, done = shared
        rank = dist.get_rank() if dist.is_initialized() else self.process.dp_rank
        cache = ResponseCache(folder, fingerprint, rank, self.process.is_main, description)
        return cache, found if self.process.is_main else {unique[i]: None for i in done}

    def run_requests(self, samples: list[Sample], model: LanguageModel) -> dict[Request, object] | None:
        """Score every distinct request once; returns request -> response on the main process.

        Responses found in the response cache are reused; the others are committed to it batch
        by batch, so the same command run again after a crash computes only what was left."""
        methods = [
            (LoglikelihoodRequest, model.loglikelihood, lambda r: len(r.context) + len(r.continuation)),
            (RollingRequest, model.loglikelihood_rolling, lambda r: len(r.text)),
            (GenerationRequest, model.greedy_until, lambda r: len(r.context) + 4 * (r.max_new_tokens or 256)),
        ]
        unique = list(dict.fromkeys(r for s in samples for r in s.requests))
        cache, cached = self._open_cache(model, unique)
        answers: dict[Request, object] = dict(cached)
        try:
            for kind, method, weight in methods:
                todo = sorted(
                    (r for r in unique if isinstance(r, kind) and r not in cached), key=lambda r: json.dumps(asdict(r))
                )
                if not todo:
                    continue
                mine = self._my_share(model, todo, weight)
                run = (lambda batch, m=method: cache.compute(model, m, batch)) if cache else method
                responses = self._timed(f"scoring_{kind.__name__}", run, [todo[i] for i in mine])
                gathered = self.process.gather(list(zip(mine, responses)))
                if gathered is not None:
                    for part in gathered:
                        for index, response in part:
                            answers[todo[index]] = response
        finally:
            if cache:
                cache.close()
        if cache:
            self.process.barrier()  # every shard is closed before the main process merges them
            if self.process.is_main:
                cache.merge_shards()
        self.num_requests = len(unique)
        self.cache_summary = CacheSummary(
            cache is not None, cache.fingerprint if cache else None, len(cached), len(unique) - len(cached)
        )
        return answers if self.process.is_main else None

    def _my_share(self, model: LanguageModel, todo: list[Request], weight) -> list[int]:
        """Indices of `todo` this replica scores: whole units as the model plans them, so the
        rows (hence the numbers) are those a single process would compute."""
        if self.process.dp_size == 1:
            return list(range(len(todo)))
        units = model.shard_units(todo)
        chosen = self.process.shard(units, [sum(weight(todo[i]) for i in unit) for unit in units])
        return sorted(i for u in chosen for i in units[u])

    # ------------------------------------------------------------------ run
    def evaluate(self) -> EvaluationResult | None:
        """Run every stage; returns the results on the main process, None elsewhere."""
        tasks = self._timed("resolve_tasks", self.resolve_tasks)
        data = self._timed("load_data", self.load_data, tasks)
        model = self._timed("load_model", self.model_factory)
        samples = self._timed("build_requests", self.build_samples, data, model)
        answers = self.run_requests(samples, model)
        if answers is None:
            return None
        for sample in samples:
            sample.responses = [answers[r] for r in sample.requests]
        results = self._timed("metrics", self.compute_results, data, samples, model)
        return self._timed("save", self.save, results, data, samples)

    # -------------------------------------------------------------- metrics
    def compute_results(self, data: list[TaskData], samples: list[Sample], model: LanguageModel) -> dict:
        by_task: dict[str, list[Sample]] = {}
        for s in samples:
            by_task.setdefault(s.task_key, []).append(s)
        results: dict[str, dict[str, float]] = {}
        summary_tasks: dict[str, dict] = {}
        for td in data:
            key, cfg = td.task.key, td.task.config
            task_samples = by_task.get(key, [])
            values: dict[str, list] = {m: [] for m in cfg.metrics}
            for s in task_samples:
                s.metrics = {}
                for name in cfg.metrics:
                    value = metric_for(cfg.name, name).sample_fn(s.doc, s.responses)
                    s.metrics[name] = value
                    values[name].append(value)
            results[key] = {}
            for name, vals in values.items():
                if vals:
                    value, stderr = aggregate(metric_for(cfg.name, name), vals)
                    results[key][name], results[key][f"{name}_stderr"] = value, stderr
            summary_tasks[key] = self._task_summary(td, task_samples)
        results.update(self._group_averages(data, results))
        results["all"] = self._overall(results)
        return {
            "config_general": self._config_general(model),
            "results": results,
            "versions": {td.task.key: td.task.config.version for td in data},
            "config_tasks": {td.task.config.full_name: td.task.config.to_dict() for td in data},
            "summary_tasks": summary_tasks,
            "summary_general": self._summary_general(samples, model),
        }

    @staticmethod
    def _group_averages(data: list[TaskData], results: dict) -> dict:
        """`suite|prefix:_average|fewshot` over subtasks sharing a prefix (e.g. mmlu:*)."""
        groups: dict[str, list[str]] = {}
        for td in data:
            cfg = td.task.config
            if ":" in cfg.name:
                prefix = cfg.name.split(":", 1)[0]
                groups.setdefault(f"{cfg.suite}|{prefix}:_average|{td.task.spec.num_fewshot}", []).append(td.task.key)
        out = {}
        for name, keys in groups.items():
            if len(keys) < 2:
                continue
            metrics = {m for k in keys for m in results[k] if not m.endswith("_stderr")}
            out[name] = {}
            for m in sorted(metrics):
                present = [results[k] for k in keys if m in results[k]]
                out[name][m] = sum(r[m] for r in present) / len(present)
                out[name][f"{m}_stderr"] = sum(r[f"{m}_stderr"] for r in present) / len(present)
        return out

    @staticmethod
    def _overall(results: dict) -> dict:
        """Mean of each metric over the evaluated tasks (group averages not counted twice)."""
        sums: dict[str, list[float]] = {}
        for key, metrics in results.items():
            if ":_average|" in key:
                continue
            for m, v in metrics.items():
                sums.setdefault(m, []).append(v)
        return {m: sum(v) / len(v) for m, v in sums.items()}

    @staticmethod
    def _hash(texts) -> str:
        h = hashlib.sha256()
        for t in texts:
            h.update(str(t).encode("utf-8"))
            h.update(b"\x00")
        return h.hexdigest()[:16]

    def _task_summary(self, td: TaskData, samples: list[Sample]) -> dict:
        truncated = sum(
            s.fewshot_truncated or any(getattr(r, "input_truncated", False) for r in s.responses) for s in samples
        )
        return {
            "hashes": {
                "examples": self._hash(json.dumps(asdict(s.doc), sort_keys=True, default=str) for s in samples),
                "full_prompts": self._hash(c for s in samples for c in s.contexts),
                "requests": self._hash(repr(r) for s in samples for r in s.requests),
            },
            "num_samples": len(samples),
            "num_docs": len(td.docs),
            "skipped_bad_samples": td.skipped,
            "truncated": truncated,
            "non_truncated": len(samples) - truncated,
            "effective_few_shots": (sum(s.num_fewshot for s in samples) / len(samples)) if samples else 0.0,
            "requested_few_shots": td.task.spec.num_fewshot,
            "fewshot_split": td.fewshot_split,
        }

    def _config_general(self, model: LanguageModel) -> dict:
        import torch
        import transformers

        end = time.time()
        info = model.info()
        return {
            "lighteval_like_version": __version__,
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "start_time": datetime.fromtimestamp(self.start_time).isoformat(),
            "end_time": datetime.fromtimestamp(end).isoformat(),
            "total_evaluation_time_secondes": round(end - self.start_time, 3),
            "job_id": self.params.job_id,
            "num_processes": self.process.dp_size,
            "override_batch_size": self.params.batch_size,
            "max_samples": self.params.max_samples,
            "num_fewshot_seeds": self.params.num_fewshot_seeds,
            "seed": self.params.seed,
            "use_chat_template": self.params.use_chat_template,
            "system_prompt": self.params.system_prompt,
            **info,
            "model_args": self.model_args,
        }

    def _summary_general(self, samples: list[Sample], model: LanguageModel) -> dict:
        scoring = sum(v for k, v in self.timings.items() if k.startswith("scoring_"))
        truncated = sum(s.fewshot_truncated for s in samples)
        return {
            "hashes": {"full_prompts": self._hash(c for s in samples for c in s.contexts)},
            "num_samples": len(samples),
            "num_requests": self.num_requests,
            "truncated": truncated,
            "non_truncated": len(samples) - truncated,
            "timings_seconds": dict(self.timings),
            "requests_per_second": round(self.cache_summary.computed / scoring, 3) if scoring else None,
            # Requests answered from the response cache (hits) and computed by this run (all ranks).
            "response_cache": asdict(self.cache_summary),
            # Counters of the main process's model (its shard, under data parallelism).
            "scoring": model.stats(),
        }

    # -------------------------------------------------------------- outputs
    def _details_rows(self, samples: list[Sample]) -> list[dict]:
        rows = []
        for s in samples:
            lls = [getattr(r, "logprob", None) for r in s.responses]
            generated = [getattr(r, "text", None) for r in s.responses]
            if generated and generated[0] is not None:
                prediction = generated[0]
            elif len(lls) == len(s.doc.choices) and lls:
                prediction = s.doc.choices[max(range(len(lls)), key=lambda i: lls[i])]
            else:
                prediction = None
            rows.append({
                "doc_index": s.doc_index,
                "fewshot_seed": s.fewshot_seed,
                "prompt": s.contexts[0],
                "prompts": s.contexts,
                "choices": s.doc.choices,
                "gold_index": s.doc.gold_indices,
                "loglikelihoods": [x for x in lls if x is not None],
                "greedy": [getattr(r, "is_greedy", None) for r in s.responses if hasattr(r, "is_greedy")],
                "continuation_tokens": [r.num_tokens for r in s.responses],
                "generation": generated[0] if generated and generated[0] is not None else None,
                "prediction": prediction,
                "metrics": json.dumps(s.metrics, default=str),
                "num_fewshot": s.num_fewshot,
                "fewshot_truncated": s.fewshot_truncated,
                "input_truncated": any(r.input_truncated for r in s.responses),
            })
        return rows

    def save(self, results: dict, data: list[TaskData], samples: list[Sample]) -> EvaluationResult:
        model_name = results["config_general"]["model_name"]
        path = outputs.results_path(self.params.output_dir, model_name, self.timestamp)
        detail_paths = []
        if self.params.save_details:
            folder = outputs.details_dir(self.params.output_dir, model_name, self.timestamp)
            for td in data:
                task_samples = [s for s in samples if s.task_key == td.task.key]
                detail_paths.append(
                    outputs.save_details(folder, td.task.key, self.timestamp, self._details_rows(task_samples))
                )
        outputs.save_results(path, results)
        return EvaluationResult(results, path, detail_paths)
