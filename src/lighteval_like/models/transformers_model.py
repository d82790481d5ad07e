"""The transformers backend: loads a causal LM and answers the three request types.

Tokenisation follows lm-evaluation-harness so per-sample numbers match it: trailing
whitespace of a context moves to the continuation, the continuation is the tail of the joint
encoding, an empty context becomes the prefix token (BOS, else EOS), and inputs longer
than `max_length` are cut from the left.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from lighteval_like.errors import LightevalLikeError, ModelArgsError, ModelLoadError
from lighteval_like.models.base import (
    GenerationRequest,
    GenerationResponse,
    LanguageModel,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
    RollingRequest,
)
from lighteval_like.models.model_args import TransformersModelConfig
from lighteval_like.models.packing import (
    PackedRow,
    PrefixGroup,
    ScoreItem,
    batch_inputs,
    group_by_prefix,
    pack_rows,
    unique_tokens,
)

DEFAULT_MAX_LENGTH = 2048
CPU_TOKEN_BUDGET = 4096  # tokens per forward on CPU when the batch size is automatic
GPU_TOKEN_BUDGET = 65536  # first try on GPU; halved on out-of-memory
# Bytes of fp32 logits (predictions x vocabulary) per forward: with a 50k vocabulary, 256 MiB is
# about 1,300 predictions; the vocabulary-sized tensor is what dominates memory otherwise.
CPU_LOGITS_BUDGET = 2**28
GPU_LOGITS_BUDGET = 2**32
ROW_TOKENS = 1024  # tree nodes per packed row (longer single items get their own row)


@dataclass
class ScoringStats:
    tokens_forwarded: int = 0
    padding_tokens: int = 0
    unique_prompt_tokens: int = 0
    forward_passes: int = 0
    generated_tokens: int = 0

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        if self.unique_prompt_tokens:
            out["forwarded_over_unique"] = round(self.tokens_forwarded / self.unique_prompt_tokens, 4)
        return out


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
    # Whether `_score` may forward a long shared prefix once and reuse its key/value cache
    # (off for backends whose layers are split across processes).
    reuses_prefix_cache = True

    def __init__(
        self,
        config: TransformersModelConfig,
        batch_size: int | None = None,
        device: str | None = None,
        show_progress: bool = True,
    ):
        self.config = config
        self.batch_size = batch_size if batch_size and batch_size > 0 else None
        self.show_progress = show_progress
        self.counters = ScoringStats()
        self._plan: tuple[list[ScoreItem], list[PrefixGroup]] | None = None  # set by shard_units
        wanted = device or config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(wanted)
        self.tokenizer = self._load_tokenizer()
        self.model = self._load_model()
        self.max_length = self._max_length()
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

    def _check_local_path(self) -> None:
        path = self.config.pretrained
        looks_local = path.startswith((".", "/", "~")) or path.count("/") > 1 or os.sep == "\\" and "\\" in path
        if looks_local and not os.path.exists(os.path.expanduser(path)):
            raise ModelLoadError(f"model path '{path}' does not exist: pass pretrained=<existing directory or hub id>")

    def _load_tokenizer(self):
        from transformers import AutoTokenizer

        self._check_local_path()
        cfg = self.config
        kwargs = self._source_kwargs()
        if cfg.tokenizer:
            kwargs.pop("gguf_file", None)
            kwargs.pop("subfolder", None)
        try:
            tok = AutoTokenizer.from_pretrained(cfg.tokenizer or cfg.pretrained, **kwargs)
        except Exception as e:  # hub/IO/format errors have many types
            name = cfg.tokenizer or cfg.pretrained
            hint = ""
            if not os.path.isdir(os.path.expanduser(name)):  # looked up on the hub: say so, and the fix
                offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
                hint = (
                    f" ('{name}' is no local directory, so it was looked up on the hub"
                    + (" with HF_HUB_OFFLINE set" if offline else "")
                    + "): pass pretrained=<model directory>, or a hub id that is cached or reachable"
                )
            raise ModelLoadError(
                f"cannot load the tokenizer of '{name}': {type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}{hint}"
            ) from e
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)
        return tok

    def _load_model(self):
        from transformers import AutoModelForCausalLM

        cfg = self.config
        kwargs = self._source_kwargs()
        if cfg.attn_implementation:
            kwargs["attn_implementation"] = cfg.attn_implementation
        if cfg.quantized:
            kwargs["quantization_config"] = _bitsandbytes_config(cfg)
        if cfg.dtype not in ("4bit", "8bit"):
            kwargs["dtype"] = _torch_dtype(cfg.dtype)
        if cfg.model_parallel:
            kwargs["device_map"] = "auto"
        elif cfg.quantized:
            kwargs["device_map"] = {"": self.device}
        try:
            model = AutoModelForCausalLM.from_pretrained(cfg.pretrained, **kwargs)
        except Exception as e:  # hub/IO/format errors have many types
            raise ModelLoadError(
                f"cannot load model '{cfg.pretrained}': {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            ) from e
        if not cfg.model_parallel and not cfg.quantized:
            model = model.to(self.device)
        model.eval()
        if cfg.model_parallel:
            self.device = next(model.parameters()).device
        return model

    def _max_length(self) -> int:
        if self.config.max_length:
            return self.config.max_length
        for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(self.model.config, attr, None)
            if isinstance(value, int):
                return value
        model_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(model_max, int) and model_max < 1_000_000:
            return model_max
        return DEFAULT_MAX_LENGTH

    def info(self) -> dict:
        # num_parameters counts bitsandbytes' packed 4-bit weights as the weights they stand for.
        params = self.model.num_parameters()
        dtype = str(next(self.model.parameters()).dtype).replace("torch.", "")
        for bits in ("4bit", "8bit"):
            if getattr(self.model, f"is_loaded_in_{bits}", False):
                dtype = f"{bits} (bitsandbytes; other weights {dtype})"
        return {
            "model_name": self.config.model_name,
            "model_sha": getattr(self.model.config, "_commit_hash", None),
            "model_dtype": dtype,
            "model_size": f"{params / 1e6:.1f}M parameters",
            "max_length": self.max_length,
            "device": str(self.device),
            "add_special_tokens": self.config.add_special_tokens,
        }

    def stats(self) -> dict:
        return self.counters.as_dict()

    # ------------------------------------------------------------ tokenising
    @property
    def prefix_token_id(self) -> int:
        tok = self.tokenizer
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def tok_encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=self.config.add_special_tokens)["input_ids"]

    def count_tokens(self, text: str) -> int:
        return len(self.tok_encode(text))

    def apply_chat_template(self, messages: list[dict]) -> str:
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise LightevalLikeError(
                f"--use_chat_template: the tokenizer of '{self.config.pretrained}' has no chat template"
            )
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _continuation_space(self, continuation: str) -> str:
        start_space = self.config.multichoice_continuations_start_space
        if start_space is True and not continuation.startswith(" "):
            return " " + continuation
        if start_space is False:
            return continuation.lstrip()
        return continuation

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if not context:
            return [self.prefix_token_id], self.tok_encode(continuation)
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.tok_encode(context + continuation)
        context_enc = self.tok_encode(context)
        return context_enc, whole[len(context_enc) :]

    def _score_item(self, context_enc: list[int], continuation_enc: list[int]) -> tuple[ScoreItem, bool]:
        """lm-eval's window: (context + continuation)[-(max_length + 1):][:-1]."""
        whole = (context_enc + continuation_enc)[-(self.max_length + 1) :]
        truncated = len(whole) < len(context_enc) + len(continuation_enc)
        targets = continuation_enc[-(len(whole) - 1) :] if len(continuation_enc) >= len(whole) else continuation_enc
        inputs = whole[:-1]
        return ScoreItem(tuple(inputs), len(inputs) - len(targets), tuple(targets)), truncated

    def _request_item(self, req: LoglikelihoodRequest) -> tuple[ScoreItem, bool]:
        ctx, cont = self._encode_pair(req.context, self._continuation_space(req.continuation))
        if not cont:
            raise LightevalLikeError(f"continuation {req.continuation!r} encodes to no tokens")
        if req.single_token and len(cont) != 1:
            raise LightevalLikeError(
                f"single-token task: continuation {req.continuation!r} is {len(cont)} tokens for this "
                "tokenizer; use the multiple_choice request type instead"
            )
        return self._score_item(ctx, cont)

    # -------------------------------------------------------------- scoring
    def shard_units(self, requests: list) -> list[list[int]]:
        """Requests that must be scored on the same rank: those packed in one row or sharing a
        cached prefix. Every rank plans the same rows from the same requests and scores its
        share of them as planned, so a request's numbers do not depend on how many ranks run."""
        scored = [i for i, r in enumerate(requests) if isinstance(r, LoglikelihoodRequest)]
        units = [[i] for i, r in enumerate(requests) if not isinstance(r, LoglikelihoodRequest)]
        if not scored:
            return units
        items = [self._request_item(requests[i])[0] for i in scored]
        unique = list(dict.fromkeys(items))
        groups = self._group(unique)
        self._plan = (unique, groups)
        owners: dict[ScoreItem, list[int]] = {}
        for i, item in zip(scored, items):
            owners.setdefault(item, []).append(i)

        def unit(rows: list[PackedRow]) -> list[int]:
            return [i for row in rows for index, _ in row.predictions for i in owners[unique[index]]]

        for group in groups:
            units += [unit(group.rows)] if group.prefix else [unit([row]) for row in group.rows]
        return units

    def _group(self, unique: list[ScoreItem]) -> list[PrefixGroup]:
        """How `unique` is laid out in rows (and prefix groups) for the forward passes."""
        if not self.config.shared_prefix or self.config.attn_implementation == "flash_attention_2":
            # one row per item: the classic computation (flash attention has no 4D masks)
            rows = [pack_rows([it], len(it.tokens))[0] for it in unique]
            for index, row in enumerate(rows):
                row.predictions = [(index, row.predictions[0][1])]
            return [PrefixGroup((), rows)]
        row_tokens = max(ROW_TOKENS, max((len(it.tokens) for it in unique), default=0))
        if self.reuses_prefix_cache:
            return group_by_prefix(unique, row_tokens)
        return [PrefixGroup((), pack_rows(unique, row_tokens))]

    def _planned(self, unique: list[ScoreItem]) -> list[PrefixGroup] | None:
        """The rows planned by `shard_units` that hold `unique`, re-indexed; None when some item
        was not planned. Rows keep all their tokens (so their numbers do not change) but only
        predict what is asked."""
        if self._plan is None:
            return None
        planned, groups = self._plan
        wanted = {item: i for i, item in enumerate(unique)}
        if not set(unique) <= set(planned):
            return None
        out = []
        for group in groups:
            rows = []
            for row in group.rows:
                predictions = [(wanted[planned[i]], nodes) for i, nodes in row.predictions if planned[i] in wanted]
                if predictions:
                    rows.append(PackedRow(row.tokens, row.parents, row.depths, predictions))
            if rows:
                out.append(PrefixGroup(group.prefix, rows))
        return out

    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[LoglikelihoodResponse]:
        items, truncated = [], []
        for req in requests:
            item, cut = self._request_item(req)
            items.append(item)
            truncated.append(cut)
        positions: dict[ScoreItem, list[int]] = {}
        for j, item in enumerate(items):
            positions.setdefault(item, []).append(j)

        def respond(j: int, score: tuple[float, bool]) -> LoglikelihoodResponse:
            return LoglikelihoodResponse(score[0], score[1], len(items[j].targets), truncated[j])

        def report(scored: dict[ScoreItem, tuple[float, bool]]) -> None:
            done = [(j, score) for item, score in scored.items() for j in positions[item]]
            self._batch_done([requests[j] for j, _ in done], [respond(j, score) for j, score in done])

        scores = self._score(items, "loglikelihood", report if self.on_batch else None)
        return [respond(j, score) for j, score in enumerate(scores)]

    def _rolling_windows(self, tokens: list[int]) -> list[ScoreItem]:
        """Disjoint windows of at most max_length predictions, each with as much left context as fits."""
        items, predicted, n = [], 0, len(tokens)
        while predicted < n:
            first = predicted == 0
            span = min(n - predicted, self.max_length)
            end = predicted + span
            if first:
                context = [self.prefix_token_id]
            else:
                start = max(0, end - self.max_length - 1)
                context = tokens[start:predicted]
            targets = tokens[predicted:end]
            inputs = (context + targets)[:-1]
            items.append(ScoreItem(tuple(inputs), len(context) - 1, tuple(targets)))
            predicted = end
        return items

    def loglikelihood_rolling(self, requests: list[RollingRequest]) -> list[LoglikelihoodResponse]:
        owners, items = [], []
        windows: dict[int, list[int]] = {i: [] for i in range(len(requests))}  # request -> its items
        for i, req in enumerate(requests):
            for item in self._rolling_windows(self.tok_encode(req.text)):
                windows[i].append(len(items))
                owners.append(i)
                items.append(item)

        def total(i: int, score_of: dict[ScoreItem, tuple[float, bool]]) -> LoglikelihoodResponse:
            """Windows summed in order, so a response reported early equals the one returned."""
            lp, greedy, n = 0.0, True, 0
            for j in windows[i]:
                lp += score_of[items[j]][0]
                greedy &= score_of[items[j]][1]
                n += len(items[j].targets)
            return LoglikelihoodResponse(lp, greedy, n)

        scored: dict[ScoreItem, tuple[float, bool]] = {}
        positions: dict[ScoreItem, list[int]] = {}
        for j, item in enumerate(items):
            positions.setdefault(item, []).append(j)

        def report(batch_scores: dict[ScoreItem, tuple[float, bool]]) -> None:
            scored.update(batch_scores)
            touched = sorted({owners[j] for item in batch_scores for j in positions[item]})
            ready = [i for i in touched if all(items[j] in scored for j in windows[i])]
            self._batch_done([requests[i] for i in ready], [total(i, scored) for i in ready])

        scores = self._score(items, "rolling loglikelihood", report if self.on_batch else None)
        final = dict(zip(items, scores))
        return [total(i, final) for i in range(len(requests))]

    def _score(
        self, items: list[ScoreItem], label: str, on_done: Callable[[dict], None] | None = None
    ) -> list[tuple[float, bool]]:
        """(sum logprob of targets, all targets greedy) for every item, identical items once.
        `on_done` gets {item: result} of each batch as it finishes (for the response cache)."""
        unique = list(dict.fromkeys(items))
        self.counters.unique_prompt_tokens += unique_tokens(unique)
        groups = self._planned(unique) or self._group(unique)
        results: dict[int, tuple[float, bool]] = {}
        progress = tqdm(total=len(unique), desc=label, disable=not self.show_progress, leave=False)
        for group in groups:
            rows = sorted(group.rows, key=lambda r: len(r.tokens), reverse=True)  # OOM shows up at once
            cache = None
            start = 0
            while start < len(rows):
                batch = self._take_batch(rows, start)
                try:
                    if group.prefix and cache is None:
                        cache = self._forward_prefix(group.prefix)
                    self._forward_rows(batch, unique, results, group.prefix, cache)
                except RuntimeError as e:
                    if not _is_oom(e):
                        raise
                    self._shrink_after_oom(len(batch))
                    continue
                start += len(batch)
                progress.update(sum(len(r.predictions) for r in batch))
                if on_done is not None:
                    on_done({unique[i]: results[i] for row in batch for i, _ in row.predictions})
        progress.close()
        index = {it: i for i, it in enumerate(unique)}
        return [results[index[it]] for it in items]

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

    def _shrink_after_oom(self, batch_rows: int) -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
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

    @torch.no_grad()
    def _forward_prefix(self, prefix: tuple[int, ...]):
        """Forward a shared prefix once; its key/value cache serves every row of its group."""
        ids = torch.tensor([prefix], device=self.device)
        out = self.model(input_ids=ids, position_ids=torch.arange(len(prefix), device=self.device)[None], use_cache=True)
        self.counters.forward_passes += 1
        self.counters.tokens_forwarded += len(prefix)
        return out.past_key_values

    def _forward_logits(
        self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, wanted: list[list[int]], cache=None
    ) -> torch.Tensor | None:
        """Logits [N, vocab] at row b's columns `wanted[b]`, rows after one another: the one place
        the model runs on packed rows, so a backend that splits the model overrides only this.

        The output head sees only the wanted hidden states (a pre-hook gathers them), so the
        vocabulary-sized tensor has one row per prediction, not one per token of the batch; what
        a model does after its head (logit scaling or soft-capping) still applies."""
        kwargs = {"past_key_values": cache} if cache is not None else {}
        rows = torch.tensor([b for b, cols in enumerate(wanted) for _ in cols], device=input_ids.device)
        cols = torch.tensor([c for cols in wanted for c in cols], device=input_ids.device)
        head = self.model.get_output_embeddings()

        def gather(module, args):
            return (args[0][rows, cols][None], *args[1:])

        handle = head.register_forward_pre_hook(gather) if head is not None else None
        try:
            logits = self.model(
                input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=cache is not None, **kwargs
            ).logits
        finally:
            if handle is not None:
                handle.remove()
        return logits[0] if handle is not None else logits[rows, cols]

    @torch.no_grad()
    def _forward_rows(
        self, rows: list[PackedRow], items: list[ScoreItem], results: dict, prefix: tuple[int, ...] = (), cache=None
    ) -> None:
        dtype = self.model.get_input_embeddings().weight.dtype
        if not dtype.is_floating_point:
            dtype = torch.float32
        input_ids, positions, mask = batch_inputs(rows, self.tokenizer.pad_token_id, dtype, len(prefix))
        device = self.device
        if cache is not None:  # every row continues the same prefix: one copy of its cache per row
            cache = copy.deepcopy(cache)
            cache.batch_repeat_interleave(len(rows))
        # Only the positions that predict a target need logits (the vocabulary is large).
        wanted = [_predicting_nodes(row) for row in rows]
        logits = self._forward_logits(input_ids.to(device), positions.to(device), mask.to(device), wanted, cache)
        self.counters.forward_passes += 1
        real = sum(len(r.tokens) for r in rows)
        self.counters.tokens_forwarded += real
        self.counters.padding_tokens += input_ids.numel() - real
        if logits is None:  # this process computes no logits (a pipeline stage before the last)
            return
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
                results[item_index] = (float(picked.sum()), greedy)

    # ------------------------------------------------------------ generation
    def _generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, generation_config, stopping_criteria):
        """Greedy ids [rows, prompt + new] for a left-padded batch (transformers' `generate`);
        a backend that splits the model (pipeline stages) overrides only this."""
        return self.model.generate(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=generation_config,
            stopping_criteria=stopping_criteria,
        )

    def greedy_until(self, requests: list[GenerationRequest]) -> list[GenerationResponse]:
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

        tokenizer = self.tokenizer
        eos = tokenizer.decode([tokenizer.eos_token_id]) if tokenizer.eos_token_id is not None else None
        encoded = []
        for req in requests:
            max_new = req.max_new_tokens or self.config.max_gen_toks
            ids = self.tok_encode(req.context)
            room = max(1, self.max_length - max_new)
            encoded.append((ids[-room:], len(ids) > room, max_new))
        order = sorted(range(len(requests)), key=lambda i: len(encoded[i][0]), reverse=True)
        responses: dict[int, GenerationResponse] = {}

        class StopSequences(StoppingCriteria):
            """Per-row stop: a stop sequence appeared in the new text, or the row's token limit.
            `stopped_at[b]` records how many tokens row b had generated when it stopped (the
            batch goes on, padding finished rows, until every row has stopped)."""

            def __init__(self, prompt_len: int, stops: list[tuple[str, ...]], limits: list[int]):
                self.prompt_len, self.stops, self.limits = prompt_len, stops, limits
                self.stopped_at: list[int | None] = [None] * len(limits)

            def __call__(self, input_ids, scores, **kwargs):
                for b, row in enumerate(input_ids):
                    if self.stopped_at[b] is not None:
                        continue
                    new = row[self.prompt_len :]
                    tail = tokenizer.decode(new[-24:], skip_special_tokens=False)
                    if len(new) >= self.limits[b] or any(s in tail for s in self.stops[b]):
                        self.stopped_at[b] = len(new)
                done = [n is not None for n in self.stopped_at]
                return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

        progress = tqdm(total=len(requests), desc="greedy generation", disable=not self.show_progress, leave=False)
        start = 0
        while start < len(order):
            longest = len(encoded[order[start]][0]) + encoded[order[start]][2]
            count = self.batch_size or max(1, self.token_budget // max(longest, 1))
            batch = order[start : start + count]
            stops = [tuple(s for s in (*requests[i].stop_sequences, eos) if s) for i in batch]
            limits = [encoded[i][2] for i in batch]
            width = max(len(encoded[i][0]) for i in batch)
            input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for b, i in enumerate(batch):  # left padding: every row's prompt ends at `width`
                ids = encoded[i][0]
                input_ids[b, width - len(ids) :] = torch.tensor(ids)
                attention[b, width - len(ids) :] = 1
            stopper = StopSequences(width, stops, limits)
            gen_config = GenerationConfig(
                max_new_tokens=max(limits), do_sample=False, pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            try:
                with torch.no_grad():
                    out = self._generate(
                        input_ids.to(self.device), attention.to(self.device), gen_config,
                        StoppingCriteriaList([stopper]),
                    )
            except RuntimeError as e:
                if not _is_oom(e):
                    raise
                self._shrink_after_oom(len(batch))
                continue
            for b, i in enumerate(batch):
                new = out[b, width:][: stopper.stopped_at[b] or limits[b]].tolist()
                text = tokenizer.decode(new, skip_special_tokens=True)
                for stop in stops[b]:
                    text = text.split(stop)[0]
                self.counters.generated_tokens += len(new)
                responses[i] = GenerationResponse(text, len(new), encoded[i][1])
            self._batch_done([requests[i] for i in batch], [responses[i] for i in batch])
            start += len(batch)
            progress.update(len(batch))
        progress.close()
        return [responses[i] for i in range(len(requests))]
