"""The transformers backend: loads a causal LM and answers the three request types.

Tokenisation is `models/prompt_encoder.py`'s (lm-evaluation-harness's rules), scoring packs
requests as a prefix tree (`models/packing.py`), and where the model runs is the placement's
business: one device by default, or split over a mesh (`runtime/placement.py`). Generation is
`generation.py`'s engine, which sees the model through `TransformersStepRunner`.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from tqdm.auto import tqdm

from lighteval_like.api.errors import LightevalLikeError, ModelArgsError, ModelLoadError, one_line
from lighteval_like.api.requests import (
    GenerationRequest,
    GenerationResponse,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
    RollingRequest,
)
from lighteval_like.models.base import LanguageModel, ModelIdentity, ModelInfo, WorkPlan
from lighteval_like.models.packing import (
    PackedRow,
    PrefixGroup,
    RollingWindows,
    ScoreItem,
    Scores,
    batch_inputs,
    group_by_prefix,
    owner_map,
    pack_rows,
    unique_tokens,
)
from lighteval_like.models.prompt_encoder import TokenizerEncoder, load_tokenizer
from lighteval_like.models.transformers.config import TransformersModelConfig
from lighteval_like.models.transformers.generation import generate
from lighteval_like.models.transformers.row_cache import RowCache, supports_row_cache
from lighteval_like.models.transformers.vision import VisionEncoder, VisionFamily, load_image_processor, vision_family
from lighteval_like.runtime.single_device import SingleDevice

DEFAULT_MAX_LENGTH = 2048
CPU_TOKEN_BUDGET = 4096  # tokens per forward on CPU when the batch size is automatic
GPU_TOKEN_BUDGET = 65536  # first try on GPU; halved on out-of-memory
# Bytes of fp32 logits (predictions x vocabulary) per forward: with a 50k vocabulary, 256 MiB is
# about 1,300 predictions; the vocabulary-sized tensor is what dominates memory otherwise.
CPU_LOGITS_BUDGET = 2**28
GPU_LOGITS_BUDGET = 2**32
ROW_TOKENS = 1024  # tree nodes per packed row (longer single items get their own row)
FEATURES_KEPT = 8  # images whose embeddings a generation call keeps (the latest used)
T = TypeVar("T")


@dataclass
class ScoringStats:
    tokens_forwarded: int = 0
    padding_tokens: int = 0
    unique_prompt_tokens: int = 0
    forward_passes: int = 0
    generated_tokens: int = 0
    prefix_tokens_reused: int = 0  # prompt tokens of generation requests read from a shared prefix's cache
    draft_tokens_accepted: int = 0  # generated tokens confirmed in the step of the token before them
    images_encoded: int = 0  # vision forwards: one per distinct image of a generation call
    generation_seconds: float = 0.0

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        if self.unique_prompt_tokens:
            out["forwarded_over_unique"] = round(self.tokens_forwarded / self.unique_prompt_tokens, 4)
        out["generation_seconds"] = round(self.generation_seconds, 3)
        if self.generation_seconds:
            out["generated_tokens_per_second"] = round(self.generated_tokens / self.generation_seconds, 2)
        return out


@dataclass
class PackingPlan:
    """Loglikelihood requests tokenised once, and the rows their unique items are packed into."""

    items: dict[LoglikelihoodRequest, tuple[ScoreItem, bool]]  # request -> (item, context cut)
    unique: list[ScoreItem]
    groups: list[PrefixGroup]


def _predicting_nodes(row: PackedRow) -> list[int]:
    """The nodes of a row whose outputs predict a target (each once)."""
    return sorted({n for _, nodes in row.predictions for n in nodes})


def _torch_dtype(name: str):
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(name, "auto")


def _bitsandbytes_config(cfg: TransformersModelConfig):
    """`dtype=4bit/8bit` sets the bit width; `quantization_config` the rest (or everything)."""
    from transformers import BitsAndBytesConfig

    options = dict(cfg.quantization_config or {})
    if cfg.dtype in ("4bit", "8bit"):
        options[f"load_in_{cfg.dtype}"] = True
    try:
        return BitsAndBytesConfig(**options)
    except (TypeError, ValueError) as e:
        raise ModelArgsError(f"quantization_config {options} is not valid: {str(e).splitlines()[0]}") from e


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


class TransformersModel(LanguageModel):
    def __init__(
        self,
        config: TransformersModelConfig,
        batch_size: int | None = None,
        device: str | None = None,
        show_progress: bool = True,
        placement: SingleDevice | None = None,
    ):
        self.config = config
        self.batch_size = batch_size if batch_size and batch_size > 0 else None
        self.show_progress = show_progress
        self.counters = ScoringStats()
        wanted = device or config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.placement = placement or SingleDevice(torch.device(wanted))
        self.placement.check(config.quantized, config.model_parallel)
        self.device = self.placement.device
        self.vision = self._vision_family()
        self.tokenizer = self._load_tokenizer()
        self.model = self._load_model()
        self.max_length = self._max_length()
        self.encoder = self._encoder()
        self.token_budget = CPU_TOKEN_BUDGET if self.device.type == "cpu" else GPU_TOKEN_BUDGET
        logits_budget = CPU_LOGITS_BUDGET if self.device.type == "cpu" else GPU_LOGITS_BUDGET
        vocab = getattr(self.model.config, "vocab_size", None) or len(self.tokenizer)
        self.prediction_budget = max(1, logits_budget // (4 * vocab))

    # ---------------------------------------------------------------- loading
    def _source_kwargs(self) -> dict:
        cfg = self.config
        kwargs = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code, "cache_dir": cfg.cache_dir}
        if cfg.subfolder:
            kwargs["subfolder"] = cfg.subfolder
        if cfg.gguf_file:
            kwargs["gguf_file"] = cfg.gguf_file
        return kwargs

    def _vision_family(self) -> VisionFamily | None:
        """The model's image+text family (None: a text-only model), read from its config."""
        from transformers import AutoConfig

        if self.config.gguf_file:
            return None
        try:
            config = AutoConfig.from_pretrained(self.config.pretrained, **self._source_kwargs())
        except Exception:  # noqa: BLE001 - the model load reports a missing or bad config with its fix
            return None
        self.vision_config = config
        return vision_family(config)

    def _encoder(self) -> TokenizerEncoder:
        cfg = self.config
        args = (self.tokenizer, self.max_length, cfg.add_special_tokens, cfg.multichoice_continuations_start_space,
                cfg.pretrained)
        if self.vision is None:
            return TokenizerEncoder(*args)
        processor = load_image_processor(cfg.pretrained, self.vision, cfg.min_pixels, cfg.max_pixels,
                                         **self._source_kwargs())
        return VisionEncoder(*args, family=self.vision, processor=processor, image_pipeline=cfg.image_pipeline,
                             min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels,
                             image_tokens=self.vision.fixed_tokens(self.vision_config))

    def _load_tokenizer(self):
        return load_tokenizer(self.config.pretrained, self.config.tokenizer, self._source_kwargs())

    def _load_model(self):
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

        cfg = self.config
        kwargs = self._source_kwargs()
        if cfg.attn_implementation:
            kwargs["attn_implementation"] = cfg.attn_implementation
        if cfg.quantized:
            kwargs["quantization_config"] = _bitsandbytes_config(cfg)
            kwargs["device_map"] = {"": self.placement.load_device}
        if cfg.dtype not in ("4bit", "8bit"):
            kwargs["dtype"] = _torch_dtype(cfg.dtype)
        if cfg.model_parallel:
            kwargs["device_map"] = "auto"
        try:
            auto = AutoModelForCausalLM if self.vision is None else AutoModelForImageTextToText
            model = auto.from_pretrained(cfg.pretrained, **kwargs)
        except Exception as e:  # hub/IO/format errors have many types
            raise ModelLoadError(
                f"cannot load model '{cfg.pretrained}': {type(e).__name__}: {one_line(e)}"
            ) from e
        # Counted before a placement keeps only its part; bitsandbytes' packed 4-bit weights
        # count as the weights they stand for.
        self.num_parameters = model.num_parameters()
        if cfg.model_parallel:
            self.device = next(model.parameters()).device
        elif not cfg.quantized:
            model = self.placement.place(model, self.tokenizer.pad_token_id)
        model.eval()
        return model

    def _max_length(self) -> int:
        if self.config.max_length:
            return self.config.max_length
        configs = (self.model.config, getattr(self.model.config, "text_config", None))
        for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = next((getattr(c, attr) for c in configs if isinstance(getattr(c, attr, None), int)), None)
            if value is not None:
                return value
        model_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(model_max, int) and model_max < 1_000_000:
            return model_max
        return DEFAULT_MAX_LENGTH

    def info(self) -> ModelInfo:
        dtype = str(next(self.model.parameters()).dtype).replace("torch.", "")
        for bits in ("4bit", "8bit"):
            if getattr(self.model, f"is_loaded_in_{bits}", False):
                dtype = f"{bits} (bitsandbytes; other weights {dtype})"
        identity = ModelIdentity(
            model_name=self.config.model_name,
            model_sha=getattr(self.model.config, "_commit_hash", None),
            model_dtype=dtype,
            model_size=f"{self.num_parameters / 1e6:.1f}M parameters",
            max_length=self.max_length,
            add_special_tokens=self.config.add_special_tokens,
        )
        return ModelInfo(identity, str(self.device), self.placement.info())

    def stats(self) -> dict:
        return self.counters.as_dict()

    # ------------------------------------------------------------- planning
    def plan(self, requests: list) -> WorkPlan:
        """Requests that must be scored on the same rank: those packed in one row or sharing a
        cached prefix. Every rank plans the same rows from the same requests and scores its
        share of them as planned, so a request's numbers do not depend on how many ranks run.
        The plan carries the tokenised requests, so scoring does not tokenise them again."""
        if self._has_images(requests):  # scored one by one (`_image_loglikelihood`)
            return WorkPlan([[i] for i in range(len(requests))])
        units = [[i] for i, r in enumerate(requests) if not isinstance(r, LoglikelihoodRequest)]
        scored = [i for i, r in enumerate(requests) if isinstance(r, LoglikelihoodRequest)]
        if not scored:
            return WorkPlan(units)
        items = {requests[i]: self.encoder.request_item(requests[i]) for i in scored}
        unique = list(dict.fromkeys(item for item, _ in items.values()))
        groups = self._group(unique)
        owners = owner_map((items[requests[i]][0], i) for i in scored)

        def unit(rows: list[PackedRow]) -> list[int]:
            return [i for row in rows for index, _ in row.predictions for i in owners[unique[index]]]

        for group in groups:
            units += [unit(group.rows)] if group.prefix else [unit([row]) for row in group.rows]
        return WorkPlan(units, PackingPlan(items, unique, groups))

    def _group(self, unique: list[ScoreItem]) -> list[PrefixGroup]:
        """How `unique` is laid out in rows (and prefix groups) for the forward passes."""
        if not self.config.shared_prefix or self.config.attn_implementation == "flash_attention_2":
            # one row per item: the classic computation (flash attention has no 4D masks)
            rows = [pack_rows([it], len(it.tokens))[0] for it in unique]
            for index, row in enumerate(rows):
                row.predictions = [(index, row.predictions[0][1])]
            return [PrefixGroup((), rows)]
        row_tokens = max(ROW_TOKENS, max((len(it.tokens) for it in unique), default=0))
        if self.placement.reuses_prefix_cache:
            return group_by_prefix(unique, row_tokens)
        return [PrefixGroup((), pack_rows(unique, row_tokens))]

    @staticmethod
    def _planned_rows(plan: PackingPlan, unique: list[ScoreItem]) -> list[PrefixGroup]:
        """The planned rows that hold `unique`, re-indexed. Rows keep all their tokens (so their
        numbers do not change) but only predict what is asked."""
        wanted = {item: i for i, item in enumerate(unique)}
        out = []
        for group in plan.groups:
            rows = []
            for row in group.rows:
                predictions = [(wanted[plan.unique[i]], nodes) for i, nodes in row.predictions if plan.unique[i] in wanted]
                if predictions:
                    rows.append(PackedRow(row.tokens, row.parents, row.depths, predictions))
            if rows:
                out.append(PrefixGroup(group.prefix, rows))
        return out

    # -------------------------------------------------------------- scoring
    def _has_images(self, requests: list) -> bool:
        return self.vision is not None and any(isinstance(r, LoglikelihoodRequest) and r.prompt.images for r in requests)

    def _image_loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[LoglikelihoodResponse]:
        """Requests with images, each scored by one forward of its own (its image features
        computed once per distinct image)."""
        runner, out = TransformersStepRunner(self), []
        for request in requests:
            item = self.encoder.image_request_item(request)
            logprob, greedy = runner.score(item)
            out.append(LoglikelihoodResponse(logprob, greedy, len(item.targets)))
            self._batch_done([request], out[-1:])
        return out

    def loglikelihood(self, requests: list[LoglikelihoodRequest], plan: WorkPlan | None = None) -> list[LoglikelihoodResponse]:
        if self._has_images(requests):
            return self._image_loglikelihood(requests)
        packing = (plan.prepared if plan is not None else None) or self.plan(requests).prepared
        items = [packing.items[req][0] for req in requests]
        positions = owner_map((item, j) for j, item in enumerate(items))

        def respond(j: int, score: tuple[float, bool]) -> LoglikelihoodResponse:
            return LoglikelihoodResponse(score[0], score[1], len(items[j].targets), packing.items[requests[j]][1])

        def report(scored: Scores) -> None:
            done = [(j, score) for item, score in scored.items() for j in positions[item]]
            self._batch_done([requests[j] for j, _ in done], [respond(j, score) for j, score in done])

        unique = list(dict.fromkeys(items))
        scores = self._score(unique, self._planned_rows(packing, unique), "loglikelihood", report)
        return [respond(j, scores[item]) for j, item in enumerate(items)]

    def loglikelihood_rolling(self, requests: list[RollingRequest], plan: WorkPlan | None = None) -> list[LoglikelihoodResponse]:
        rolling = RollingWindows([self.encoder.rolling_windows(req.text) for req in requests])

        def report(batch_scores: Scores) -> None:
            ready = rolling.add(batch_scores)
            self._batch_done([requests[i] for i in ready], [LoglikelihoodResponse(*rolling.total(i)) for i in ready])

        items = rolling.items
        rolling.add(self._score(items, self._group(items), "rolling loglikelihood", report))
        return [LoglikelihoodResponse(*rolling.total(i)) for i in range(len(requests))]

    def _score(self, unique: list[ScoreItem], groups: list[PrefixGroup], label: str,
               on_done: Callable[[Scores], None]) -> Scores:
        """(sum logprob of targets, all targets greedy) of every item of `unique`, laid out in
        `groups`; `on_done` gets each batch's scores as it finishes (for the response cache)."""
        self.counters.unique_prompt_tokens += unique_tokens(unique)
        results: dict[int, tuple[float, bool]] = {}
        progress = tqdm(total=len(unique), desc=label, disable=not self.show_progress, leave=False)
        for group in groups:
            self._score_group(group, unique, results, on_done, progress)
        progress.close()
        return {item: results[i] for i, item in enumerate(unique)}

    def _score_group(self, group: PrefixGroup, unique: list[ScoreItem], results: dict, on_done, progress) -> None:
        rows = sorted(group.rows, key=lambda r: len(r.tokens), reverse=True)  # OOM shows up at once
        cache = None

        def forward(batch: list[PackedRow]) -> bool:
            nonlocal cache
            if group.prefix and cache is None:
                cache = self._forward_prefix(group.prefix)
            self._forward_rows(batch, unique, results, group.prefix, cache)
            return True

        start = 0
        while start < len(rows):
            batch = self._take_batch(rows, start)
            if not self._with_oom_backoff(functools.partial(forward, batch), len(batch)):
                continue
            start += len(batch)
            progress.update(sum(len(r.predictions) for r in batch))
            if self.on_batch is not None:
                on_done({unique[i]: results[i] for row in batch for i, _ in row.predictions})

    def _with_oom_backoff(self, run: Callable[[], T], batch_rows: int) -> T | None:
        """`run()`; None after an out-of-memory that shrank the batch budget (the caller retries
        with a smaller batch), an error when the batch cannot shrink."""
        try:
            return run()
        except RuntimeError as e:
            if not _is_oom(e):
                raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        refusal = self.placement.on_out_of_memory()
        if refusal is not None:
            raise refusal
        if self.batch_size:
            if self.batch_size == 1:
                raise LightevalLikeError("out of memory with batch size 1: use a smaller model, dtype or max_length")
            raise LightevalLikeError(
                f"out of memory at --override_batch_size {self.batch_size}: pass a smaller one "
                f"(e.g. {max(1, self.batch_size // 2)}) or omit it to let the batch size adapt"
            )
        if batch_rows <= 1 and self.token_budget <= 1:
            raise LightevalLikeError("out of memory on a single sequence: use a smaller model, dtype or max_length")
        self.token_budget = max(1, self.token_budget // 2)
        self.prediction_budget = max(1, self.prediction_budget // 2)
        return None

    def _take_batch(self, rows: list[PackedRow], start: int) -> list[PackedRow]:
        """The next rows to forward: at most the batch size (or the token budget), and no more
        predictions than the logits budget allows (one row at least)."""
        width = len(rows[start].tokens)  # rows are sorted longest first
        count = self.batch_size or max(1, self.token_budget // max(width, 1))
        batch, predictions = [], 0
        for row in rows[start : start + count]:
            n = len(_predicting_nodes(row))
            if batch and predictions + n > self.prediction_budget:
                break
            batch.append(row)
            predictions += n
        return batch

    @torch.no_grad()
    def _forward_prefix(self, prefix: tuple[int, ...]):
        """Forward a shared prefix once; its key/value cache serves every row of its group."""
        ids = torch.tensor([prefix], device=self.device)
        out = self.model(input_ids=ids, position_ids=torch.arange(len(prefix), device=self.device)[None], use_cache=True)
        self.counters.forward_passes += 1
        self.counters.tokens_forwarded += len(prefix)
        return out.past_key_values

    @torch.no_grad()
    def _forward_rows(
        self, rows: list[PackedRow], items: list[ScoreItem], results: dict, prefix: tuple[int, ...] = (), cache=None
    ) -> None:
        dtype = self.model.get_input_embeddings().weight.dtype
        if not dtype.is_floating_point:
            dtype = torch.float32
        input_ids, positions, mask = batch_inputs(rows, self.tokenizer.pad_token_id, dtype, len(prefix))
        if cache is not None:  # every row continues the same prefix: one copy of its cache per row
            cache = copy.deepcopy(cache)
            cache.batch_repeat_interleave(len(rows))
        # Only the positions that predict a target need logits (the vocabulary is large).
        wanted = [_predicting_nodes(row) for row in rows]
        device = self.device
        logits = self.placement.forward_logits(
            self.model, input_ids.to(device), positions.to(device), mask.to(device), wanted, cache
        )
        self.counters.forward_passes += 1
        real = sum(len(r.tokens) for r in rows)
        self.counters.tokens_forwarded += real
        self.counters.padding_tokens += input_ids.numel() - real
        scored = {} if logits is None else self._pick_scores(rows, items, wanted, logits)
        keys = [index for row in rows for index, _ in row.predictions]
        results.update(self.placement.share_scores(keys, scored))

    @staticmethod
    def _pick_scores(rows: list[PackedRow], items: list[ScoreItem], wanted: list[list[int]], logits) -> dict:
        """(sum of target logprobs, all targets argmax) of each row's predictions."""
        scored = {}
        offset = 0
        for row, cols in zip(rows, wanted):
            column = {n: offset + c for c, n in enumerate(cols)}
            offset += len(cols)
            for item_index, nodes in row.predictions:
                item = items[item_index]
                logprobs = torch.log_softmax(logits[[column[n] for n in nodes]].float(), dim=-1)
                targets = torch.tensor(item.targets, device=logprobs.device)
                picked = logprobs.gather(-1, targets[:, None]).squeeze(-1)
                greedy = bool((logprobs.argmax(-1) == targets).all())
                scored[item_index] = (float(picked.sum()), greedy)
        return scored

    # ------------------------------------------------------------ generation
    def greedy_until(self, requests: list[GenerationRequest], plan: WorkPlan | None = None) -> list[GenerationResponse]:
        return generate(TransformersStepRunner(self), requests)


class TransformersStepRunner:
    """A `TransformersModel` as the generation engine sees it (`step_runner.StepRunner`): its
    torch module's forward through the engine's row cache, its placement's padded `generate`,
    its out-of-memory backoff and its response-cache callback."""

    def __init__(self, model: TransformersModel):
        self._model = model
        self.tokenizer, self.device, self.counters = model.tokenizer, model.device, model.counters
        self.show_progress, self.batch_size = model.show_progress, model.batch_size
        self._image_features: dict[str, torch.Tensor] = {}
        self.supports_row_cache = model.placement.reuses_prefix_cache and supports_row_cache(model.model)
        # transformers 5.2x renamed the forward's `past_key_values` to `cache`
        parameters = inspect.signature(model.model.forward).parameters
        self._cache_keyword = "cache" if "cache" in parameters else "past_key_values"

    @property
    def token_budget(self) -> int:
        return self._model.token_budget  # an out-of-memory halves it

    def encode(self, request: GenerationRequest) -> tuple:
        max_new = request.max_new_tokens or self._model.config.max_gen_toks
        encoder, vision = self._model.encoder, self._model.vision
        if vision is None:
            return (*encoder.generation_prompt(request.prompt, max_new), max_new)
        ids, spans = encoder.image_prompt(request.prompt)
        room = self._model.max_length - max_new
        if len(ids) > room:
            raise LightevalLikeError(f"a prompt with images is {len(ids)} tokens, over max_length {self._model.max_length} "
                                     f"less {max_new} new tokens: lower max_pixels= or raise max_length=")
        rope = vision.rope(self._model.model, ids, [(a, b, encoder.image_shape(d)) for a, b, d in spans])
        return (ids, False, max_new, tuple(spans), *(rope or ()))

    def _features(self, digest: str) -> torch.Tensor:
        """An image's embeddings, computed once per distinct image of this call while the latest
        `FEATURES_KEPT` images' stay (prompts come grouped by image, so each is computed once)."""
        features = self._image_features.pop(digest, None)
        if features is None:
            with torch.no_grad():
                model = self._model
                features = model.vision.features(model.model, model.encoder.image(digest))
            self.counters.images_encoded += 1
        self._image_features[digest] = features
        if len(self._image_features) > FEATURES_KEPT:
            del self._image_features[next(iter(self._image_features))]
        return features

    def _embeddings(self, ids: torch.Tensor, images: list[tuple[int, str, int, int]]) -> torch.Tensor:
        """The inputs' embeddings, image tokens replaced by their image's features."""
        embeds = self._model.model.get_input_embeddings()(ids)
        for at, digest, first, count in images:
            embeds[0, at : at + count] = self._features(digest)[first : first + count].to(embeds.dtype)
        return embeds

    @torch.no_grad()
    def score(self, item: ScoreItem) -> tuple[float, bool]:
        """(sum of the targets' log-probabilities, all of them argmax) of one item with images."""
        model, tokens = self._model, list(item.tokens)
        images = [(start, digest, 0, end - start) for start, end, digest in item.media]
        rope = model.vision.rope(model.model, tokens, [(a, b, model.encoder.image_shape(d)) for a, b, d in item.media])
        positions = rope[0][:, None, :] if rope else torch.arange(len(tokens))[None]
        ids = torch.tensor([tokens], device=self.device)
        logits = model.model(inputs_embeds=self._embeddings(ids, images), position_ids=positions.to(self.device),
                             logits_to_keep=len(item.targets)).logits[0]
        model.counters.forward_passes += 1
        model.counters.tokens_forwarded += len(tokens)
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        targets = torch.tensor(item.targets, device=logprobs.device)
        picked = logprobs.gather(-1, targets[:, None]).squeeze(-1)
        return float(picked.sum()), bool((logprobs.argmax(-1) == targets).all())

    def forward(self, ids: list[int], positions: torch.Tensor, keep: int | torch.Tensor, cache: RowCache,
                images: list[tuple[int, str, int, int]] = ()) -> torch.Tensor:
        device, module = self.device, self._model.model
        if isinstance(keep, torch.Tensor):
            keep = keep.to(device)
        tokens = torch.tensor([ids], device=device)
        inputs = {"inputs_embeds": self._embeddings(tokens, images)} if images else {"input_ids": tokens}
        position_ids = positions.to(device)[..., None, :]  # [1, n], or [3, 1, n] for multimodal rotary positions
        with cache.attending(module):
            out = module(**inputs, position_ids=position_ids, use_cache=True, logits_to_keep=keep,
                         **{self._cache_keyword: cache})
        return out.logits[0]

    @torch.no_grad()
    def generate_padded(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, config,
                        stopping_criteria) -> torch.Tensor:
        device = self.device
        return self._model.placement.generate(
            self._model.model, input_ids.to(device), attention_mask.to(device), config, stopping_criteria
        )

    def with_oom_backoff(self, run: Callable[[], T], batch_rows: int) -> T | None:
        return self._model._with_oom_backoff(run, batch_rows)

    def on_finished(self, requests: list[GenerationRequest], responses: list[GenerationResponse]) -> None:
        self._model._batch_done(requests, responses)
