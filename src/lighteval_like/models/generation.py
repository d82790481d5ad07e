"""Greedy generation for the transformers backend: left-padded static batches, longest
prompts first, each row stopped by its own stop sequences or token limit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from lighteval_like.models.base import GenerationRequest, GenerationResponse

if TYPE_CHECKING:
    from lighteval_like.models.transformers_model import TransformersModel


@dataclass
class Prompt:
    ids: list[int]  # the prompt, cut on the left to leave room for the new tokens
    truncated: bool
    max_new: int


class StopSequences:
    """Per-row stop (a transformers StoppingCriteria): a stop sequence appeared in the new text,
    or the row's token limit. `stopped_at[b]` records how many tokens row b had generated when it
    stopped (the batch goes on, padding finished rows, until every row has stopped)."""

    def __init__(self, tokenizer, prompt_len: int, stops: list[tuple[str, ...]], limits: list[int]):
        self.tokenizer, self.prompt_len, self.stops, self.limits = tokenizer, prompt_len, stops, limits
        self.stopped_at: list[int | None] = [None] * len(limits)

    def __call__(self, input_ids, scores, **kwargs):
        for b, row in enumerate(input_ids):
            if self.stopped_at[b] is not None:
                continue
            new = row[self.prompt_len :]
            tail = self.tokenizer.decode(new[-24:], skip_special_tokens=False)
            if len(new) >= self.limits[b] or any(s in tail for s in self.stops[b]):
                self.stopped_at[b] = len(new)
        done = [n is not None for n in self.stopped_at]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _encode_prompts(model: TransformersModel, requests: list[GenerationRequest]) -> list[Prompt]:
    prompts = []
    for req in requests:
        max_new = req.max_new_tokens or model.config.max_gen_toks
        prompts.append(Prompt(*model.encoder.generation_prompt(req.context, max_new), max_new))
    return prompts


def _left_padded(prompts: list[Prompt], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and attention mask with every row's prompt ending at the same column."""
    width = max(len(p.ids) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for b, p in enumerate(prompts):
        input_ids[b, width - len(p.ids) :] = torch.tensor(p.ids)
        attention[b, width - len(p.ids) :] = 1
    return input_ids, attention


def _run_batch(model: TransformersModel, requests: list[GenerationRequest], prompts: list[Prompt],
               eos: str | None) -> list[GenerationResponse] | None:
    """One static batch; None after an out-of-memory that shrank the budget (retry smaller)."""
    from transformers import GenerationConfig, StoppingCriteriaList

    tokenizer = model.tokenizer
    stops = [tuple(s for s in (*req.stop_sequences, eos) if s) for req in requests]
    limits = [p.max_new for p in prompts]
    input_ids, attention = _left_padded(prompts, tokenizer.pad_token_id)
    width = input_ids.shape[1]
    stopper = StopSequences(tokenizer, width, stops, limits)
    gen_config = GenerationConfig(
        max_new_tokens=max(limits), do_sample=False, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )

    def generate():
        with torch.no_grad():
            return model.placement.generate(
                model.model, input_ids.to(model.device), attention.to(model.device), gen_config,
                StoppingCriteriaList([stopper]),
            )

    out = model._with_oom_backoff(generate, len(requests))
    if out is None:
        return None
    responses = []
    for b, prompt in enumerate(prompts):
        new = out[b, width:][: stopper.stopped_at[b] or limits[b]].tolist()
        text = tokenizer.decode(new, skip_special_tokens=True)
        for stop in stops[b]:
            text = text.split(stop)[0]
        model.counters.generated_tokens += len(new)
        responses.append(GenerationResponse(text, len(new), prompt.truncated))
    return responses


def generate_static_batches(model: TransformersModel, requests: list[GenerationRequest]) -> list[GenerationResponse]:
    tokenizer = model.tokenizer
    eos = tokenizer.decode([tokenizer.eos_token_id]) if tokenizer.eos_token_id is not None else None
    prompts = _encode_prompts(model, requests)
    order = sorted(range(len(requests)), key=lambda i: len(prompts[i].ids), reverse=True)
    responses: dict[int, GenerationResponse] = {}
    progress = tqdm(total=len(requests), desc="greedy generation", disable=not model.show_progress, leave=False)
    start = 0
    while start < len(order):
        longest = len(prompts[order[start]].ids) + prompts[order[start]].max_new
        count = model.batch_size or max(1, model.token_budget // max(longest, 1))
        batch = order[start : start + count]
        done = _run_batch(model, [requests[i] for i in batch], [prompts[i] for i in batch], eos)
        if done is None:
            continue
        responses.update(zip(batch, done))
        model._batch_done([requests[i] for i in batch], done)
        start += len(batch)
        progress.update(len(batch))
    progress.close()
    return [responses[i] for i in range(len(requests))]
