"""Generation for the transformers backend.

The engine keeps the batch full (continuous batching): a row leaves the moment its stop
sequence, end-of-sequence token or token limit is reached, and a waiting request is prefilled
into its place. Requests whose prompts share a prefix of at least `MIN_SHARED_PREFIX` tokens (a
fixed chain-of-thought preamble, a long system prompt) are prefilled from one key/value cache of
that prefix, computed once, and attend to that one copy at every step (`row_cache.py`). Stop
sequences are searched in the new text of each step only. Greedy rows draft the tokens that
followed an earlier occurrence of their last three tokens (or two, or one: prompt lookup) and the model checks the draft
in the same forward: a row that copies from its prompt or repeats itself takes several tokens a
step, and its text is the one token-by-token decoding gives (a draft token is kept only where it
is the argmax).

The scheduler and the cache are ours, the forward passes transformers'. transformers' own
continuous batching (`generate_batch`, paged cache; `benchmarks/generation_engine.py` measures it)
takes one generation config for the whole batch: no per-request token limit, stop strings or
random stream (so sampled texts would depend on the batch), and on CPU its setup dominates small
runs (5 gsm8k_cot prompts x 6 tokens on a 2-layer model: 64 s, against 4 s for ours).
Pipelined placements (pp > 1), whose stages hold no cache, and models with sliding-window or
chunked attention use static left-padded batches (`generate_static_batches`).

The engine reads the model only through a `StepRunner` (`step_runner.py`): forwards, tokenizer,
budget, counters and the finished-request callback.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from lighteval_like.api.errors import LightevalLikeError
from lighteval_like.api.requests import GenerationRequest, GenerationResponse, SamplingParams
from lighteval_like.models.packing import common_length, media_key
from lighteval_like.models.transformers.decoding import IncrementalText, next_tokens
from lighteval_like.models.transformers.row_cache import Prefix, RowCache
from lighteval_like.models.transformers.step_runner import StepRunner

# A shared prefix shorter than this is prefilled with each row (a separate pass costs more).
MIN_SHARED_PREFIX = 16
# Prompt-lookup drafts of greedy rows: the tokens after the latest earlier occurrence of the
# last 3 tokens (else 2, else 1); a row's draft length adapts (doubles when all was confirmed,
# else one more than was), so rows whose drafts miss cost about one extra token a step (on CPU
# each drafted token is compute). A step of few rows lets each draft up to its share of
# `STEP_INPUTS`: reading the weights costs a step about as much as that many inputs.
DRAFT_NGRAMS, FIRST_DRAFT, MAX_DRAFT, STEP_INPUTS = (3, 2, 1), 2, 16, 32
# A prompt without a shared prefix longer than this is prefilled in a forward of its own (its
# attention by SDPA); shorter ones, and those after a shared prefix, join a decode step.
JOIN_LIMIT = 256
# Those prompts are packed up to this many tokens a forward (enough for full-speed matrix products;
# more would only hold more activations in memory).
PREFILL_TOKENS = 2048


@dataclass
class Prompt:
    ids: list[int]  # the prompt, cut on the left to leave room for the new tokens
    truncated: bool
    max_new: int
    media: tuple[tuple[int, int, str], ...] = ()  # image spans of `ids` (start, end, digest)
    rope: torch.Tensor | None = None  # multimodal rotary positions [3, len(ids)] (Qwen-VL); None: 0..n-1
    rope_shift: int = 0  # a generated token at index i sits at position i + rope_shift (with `rope`)

    @functools.cached_property
    def key(self) -> tuple[int, ...]:
        """The ids as prefixes are shared: an image span stands for its image (`media_key`)."""
        return media_key(self.ids, self.media)

    def positions(self, start: int, end: int) -> torch.Tensor:
        """The model positions of indices start..end-1 (prompt, then generated tokens): [n], or
        [3, n] with `rope`."""
        if self.rope is None:
            return torch.arange(start, end)
        inside = self.rope[:, start : min(end, len(self.ids))]
        after = torch.arange(max(start, len(self.ids)), max(end, len(self.ids))) + self.rope_shift
        return torch.cat([inside, after.expand(3, -1)], dim=1)

    def images(self, start: int, end: int, at: int) -> list[tuple[int, str, int, int]]:
        """The image tokens among indices start..end-1 when they are forwarded from input `at`
        on: (input, digest, first token of the image, count) per image span they cut."""
        out = []
        for first, last, digest in self.media:
            lo, hi = max(first, start), min(last, end)
            if lo < hi:
                out.append((at + lo - start, digest, lo - first, hi - lo))
        return out


@dataclass
class Row:
    """A request being decoded: its generated text so far and its own random stream."""

    index: int  # in the request list
    prompt: Prompt
    stops: tuple[str, ...]
    sampling: SamplingParams
    generator: torch.Generator | None
    text: IncrementalText
    finished: bool = False
    draft_length: int = FIRST_DRAFT

    def history(self) -> list[int]:
        """Prompt and generated tokens (what a repetition penalty looks at)."""
        return self.prompt.ids + self.text.tokens


@dataclass
class PrefixGroup:
    """Requests prefilled from one cached prompt prefix (empty: none shared)."""

    prefix: tuple[int, ...]
    members: list[int]
    cache: Prefix | None = None  # the prefix's keys and values while members wait to join
    waiting: int = 0

    def __post_init__(self):
        self.waiting = len(self.members)


def _encode_prompts(runner: StepRunner, requests: list[GenerationRequest]) -> list[Prompt]:
    return [Prompt(*runner.encode(req)) for req in requests]


def _eos_text(tokenizer) -> str | None:
    return tokenizer.decode([tokenizer.eos_token_id]) if tokenizer.eos_token_id is not None else None


def _stops(request: GenerationRequest, eos: str | None) -> tuple[str, ...]:
    return tuple(s for s in (*request.stop_sequences, eos) if s)


def _response(tokenizer, tokens: list[int], stops: tuple[str, ...], prompt: Prompt) -> GenerationResponse:
    """The generation's text up to its first stop sequence (special tokens dropped)."""
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    for stop in stops:
        text = text.split(stop)[0]
    return GenerationResponse(text, len(tokens), prompt.truncated)


def _drops_an_image(key: tuple[int, ...], shared: int) -> bool:
    """Whether cutting a run's shared key to `shared` would drop image tokens from it (they are
    negative in a key): where the run's members share an image, a prompt after another image
    starts a run of its own instead, so the questions about one image share its keys and values."""
    return any(k < 0 for k in key[shared:])


def prefix_groups(prompts: list[Prompt]) -> list[PrefixGroup]:
    """Requests in runs (in sorted token order) sharing a prefix of `MIN_SHARED_PREFIX` tokens
    or more, never cut inside an image's share; each member keeps at least its last prompt
    token to prefill. Within a group the longest prompts come first, so an out-of-memory shows
    up at once."""
    keys = [p.key for p in prompts]
    runs: list[tuple[tuple[int, ...], list[int]]] = []  # (shared key, members)
    for i in sorted(range(len(prompts)), key=keys.__getitem__):
        own = keys[i][:-1]
        if runs:
            shared = common_length(runs[-1][0], own)
            if shared >= MIN_SHARED_PREFIX and not (len(runs[-1][1]) > 1 and _drops_an_image(runs[-1][0], shared)):
                runs[-1] = (runs[-1][0][:shared], runs[-1][1] + [i])
                continue
        runs.append((own, [i]))
    groups = []
    for prefix, members in runs:
        members.sort(key=lambda i: len(prompts[i].ids), reverse=True)
        shared = tuple(prompts[members[0]].ids[: len(prefix)]) if len(members) > 1 else ()
        groups.append(PrefixGroup(shared, members))
    return groups


def _generator(request: GenerationRequest) -> torch.Generator | None:
    if request.sampling.greedy:
        return None
    if request.seed is None:
        raise LightevalLikeError("a sampled generation request needs a seed (set by the task's samples)")
    return torch.Generator().manual_seed(request.seed)


class Engine:
    """Continuous batching over one list of requests (see the module docstring). `run` may be
    interrupted by an out-of-memory; `requeue` then puts the rows in flight back in the queue
    (their outputs restart from their seeds, so they come out the same)."""

    def __init__(self, runner: StepRunner, requests: list[GenerationRequest], progress: tqdm):
        self.runner, self.requests, self.progress = runner, requests, progress
        self.counters, self.tokenizer = runner.counters, runner.tokenizer
        self.eos = _eos_text(self.tokenizer)
        self.prompts = _encode_prompts(runner, requests)
        self.groups = prefix_groups(self.prompts)
        self.queue: deque[tuple[PrefixGroup, int]] = deque((g, i) for g in self.groups for i in g.members)
        self.active: list[Row] = []  # row j decodes in slot j of the cache
        self.joining: list[tuple[PrefixGroup, int]] = []  # taken from the queue, prefilled by the next step
        self.done: dict[int, GenerationResponse] = {}
        self.unreported: list[int] = []
        self.greedy = all(r.sampling.greedy and r.sampling.repetition_penalty == 1.0 for r in requests)
        self.started = time.perf_counter()
        self.capacity = self._capacity()
        self.cache = RowCache(self.capacity, self._width(), runner.device)

    def _width(self) -> int:
        """Columns a row may need after its group's prefix."""
        return max(len(self.prompts[i].ids) - len(g.prefix) + self.prompts[i].max_new for g in self.groups for i in g.members)

    def _capacity(self) -> int:
        """Rows decoded together: the batch size, else as many as the token budget holds."""
        if self.runner.batch_size:
            return self.runner.batch_size
        longest = max((self._row_tokens(g, i) for g in self.groups for i in g.members), default=1)
        return max(1, self.runner.token_budget // longest)

    def _row_tokens(self, group: PrefixGroup, index: int) -> int:
        """What a row holds against the budget: its prompt and new tokens, less a shared prefix that
        holds an image (kept once for its group, and the image's tokens are most of a prompt)."""
        prompt = self.prompts[index]
        shared = len(group.prefix) if any(k < 0 for k in prompt.key[: len(group.prefix)]) else 0
        return len(prompt.ids) - shared + prompt.max_new

    def requeue(self) -> None:
        """After an out-of-memory: the rows in flight wait again, with a smaller batch."""
        group_of = {index: group for group in self.groups for index in group.members}
        waiting = [(group_of[row.index], row.index) for row in self.active] + self.joining
        for group, index in reversed(waiting):
            group.waiting += 1
            self.queue.appendleft((group, index))
        self.active, self.joining = [], []
        for group in self.groups:
            group.cache = None
        self.capacity = self._capacity()
        self.cache = RowCache(self.capacity, self._width(), self.runner.device)

    @torch.no_grad()
    def run(self) -> bool:
        while self.queue or self.active:
            self._admit()
            if self.active or self.joining:
                self._step()
        self._report()
        return True

    def _admit(self) -> None:
        """Take waiting requests into the free rows: those after a shared prefix or with a prompt
        of at most `JOIN_LIMIT` tokens join the next step (`self.joining`); the others are
        prefilled now, packed up to `PREFILL_TOKENS` a forward (each attends alone, causal,
        without padding)."""
        apart = []
        while self.queue and len(self.active) + len(self.joining) + len(apart) < self.capacity:
            group, index = self.queue.popleft()
            group.waiting -= 1
            long = len(self.prompts[index].ids) > JOIN_LIMIT
            (apart if long and not group.prefix else self.joining).append((group, index))
        joining = self.joining
        while apart:  # an out-of-memory requeues the rows not yet prefilled with the joining ones
            self.joining = joining + apart
            count, tokens = 0, 0
            for _, index in apart:
                tokens += len(self.prompts[index].ids)
                if count and tokens > PREFILL_TOKENS:
                    break
                count += 1
            self._prefill([index for _, index in apart[:count]])
            apart = apart[count:]
        self.joining = joining

    def _prefixes(self, groups: list[PrefixGroup]) -> None:
        """The prefix keys and values of those of `groups` that have none yet, computed once: packed
        up to `PREFILL_TOKENS` a forward (each prefix attends alone), then each its own one-row
        `Prefix` (many short groups, e.g. two questions per image, cost a forward per pack)."""
        todo = list({id(g): g for g in groups if g.prefix and g.cache is None}.values())
        while todo:
            count, tokens = 0, 0
            for group in todo:
                tokens += len(group.prefix)
                if count and tokens > PREFILL_TOKENS:
                    break
                count += 1
            self._prefill_prefixes(todo[:count])
            todo = todo[count:]

    def _prefill_prefixes(self, groups: list[PrefixGroup]) -> None:
        lengths = [len(g.prefix) for g in groups]
        cache = RowCache(len(groups), max(lengths), self.runner.device)
        cache.prefill(lengths)
        firsts = [self.prompts[g.members[0]] for g in groups]
        starts = [sum(lengths[:j]) for j in range(len(groups))]
        positions = torch.cat([p.positions(0, n) for p, n in zip(firsts, lengths)], dim=-1)
        images = [m for p, n, at in zip(firsts, lengths, starts) for m in p.images(0, n, at)]
        self._forward([t for g in groups for t in g.prefix], positions, 1, cache, images)
        cache.advance()
        for j, (group, n) in enumerate(zip(groups, lengths)):
            group.cache = Prefix([k[j : j + 1, :, :n].contiguous() for k in cache.keys],
                                 [v[j : j + 1, :, :n].contiguous() for v in cache.values])
        self.counters.tokens_forwarded += sum(lengths)
        self.counters.prefix_tokens_reused -= sum(lengths)

    def _prefill(self, indices: list[int]) -> None:
        """Forward the prompts of `indices` (no shared prefix) into the free slots; their first
        new token is chosen and the rows that go on stay."""
        prompts = [self.prompts[i].ids for i in indices]
        ends = torch.tensor([len(p) for p in prompts]).cumsum(0) - 1
        self.cache.prefill([len(p) for p in prompts])
        starts = [int(e) - len(p) + 1 for e, p in zip(ends, prompts)]
        positions = torch.cat([self.prompts[i].positions(0, len(p)) for i, p in zip(indices, prompts)], dim=-1)
        images = [m for i, p, at in zip(indices, prompts, starts) for m in self.prompts[i].images(0, len(p), at)]
        logits = self._forward([t for p in prompts for t in p], positions, ends, images=images)
        self.cache.advance()
        self.counters.tokens_forwarded += sum(map(len, prompts))
        rows = [self._row(i) for i in indices]
        self.active += rows
        self._choose(rows, logits)
        self._leave()

    def _row(self, index: int) -> Row:
        request = self.requests[index]
        return Row(index, self.prompts[index], _stops(request, self.eos), request.sampling, _generator(request),
                   IncrementalText(self.tokenizer))

    def _forward(self, ids: list[int], positions: torch.Tensor, keep: int | torch.Tensor,
                 cache: RowCache | None = None, images: list[tuple[int, str, int, int]] = ()) -> torch.Tensor:
        """One packed sequence through the model; the logits of the inputs `keep` (indices, or
        that many last ones). The cache (the batch's by default) takes the new columns; `images`
        say which inputs are image tokens (`Prompt.images`)."""
        logits = self.runner.forward(ids, positions, keep, cache or self.cache, images)
        self.counters.forward_passes += 1
        return logits

    def _step(self) -> None:
        """Every active row's last token and its draft (see `_draft`), then the prompts of the
        joining rows after their prefixes, packed in one sequence: each active row takes its next
        token and the draft tokens the model confirms, each joining row its first; finished rows
        leave."""
        drafts = [self._draft(row) for row in self.active]
        ids, positions, counts, images = [], [], [], []
        for row, draft in zip(self.active, drafts):
            start = len(row.prompt.ids) + len(row.text.tokens) - 1
            ids += [row.text.tokens[-1], *draft]
            positions.append(row.prompt.positions(start, start + 1 + len(draft)))
            counts.append(1 + len(draft))
        keep = list(range(len(ids)))
        prefixes = []
        self._prefixes([group for group, _ in self.joining])
        for group, index in self.joining:
            prefixes.append(group.cache)
            shared, prompt = len(group.prefix), self.prompts[index]
            images += prompt.images(shared, len(prompt.ids), len(ids))
            ids += prompt.ids[shared:]
            positions.append(prompt.positions(shared, len(prompt.ids)))
            counts.append(len(prompt.ids) - shared)
            keep.append(len(ids) - 1)
            self.counters.prefix_tokens_reused += shared
        self.cache.decode(counts, prefixes)
        logits = self._forward(ids, torch.cat(positions, dim=-1), torch.tensor(keep), images=images)
        kept, at = [], 0
        picks = logits.argmax(-1).tolist() if self.greedy else None  # every row's argmax in one pass
        for row, draft in zip(self.active, drafts):
            span = slice(at, at + 1 + len(draft))
            kept.append(self._accept(row, draft, logits[span], picks[span] if picks is not None else None))
            at += 1 + len(draft)
        self.cache.advance(kept + counts[len(kept):])
        self.counters.tokens_forwarded += len(ids)
        rows = [self._row(index) for _, index in self.joining]
        for group, _ in self.joining:
            if group.waiting == 0:
                group.cache = None  # the rows in flight keep their reference
        self.joining = []
        self.active += rows
        self._choose(rows, logits[at:], picks[at:] if picks is not None else None)
        self._leave()

    def _draft(self, row: Row) -> list[int]:
        """Prompt lookup: after the latest earlier occurrence of the row's last tokens (see
        `DRAFT_NGRAMS`; in its prompt after its last image, or its generation), the
        `row.draft_length` that followed. A greedy row then checks them in the same forward; a
        loop the model repeats, or text it copies from the prompt, takes several tokens a step.
        Sampled rows take none."""
        room = row.prompt.max_new - len(row.text.tokens) - 1
        if room <= 0 or not row.sampling.greedy or row.sampling.repetition_penalty != 1.0:
            return []
        history = row.history()
        length = min(max(row.draft_length, STEP_INPUTS // len(self.active) - 1), room)
        after_images = row.prompt.media[-1][1] if row.prompt.media else 0  # image placeholders are never text
        for n in DRAFT_NGRAMS:
            tail = history[-n:]
            for start in range(len(history) - n - 1, after_images - 1, -1):
                if history[start : start + n] == tail:
                    return history[start + n : start + n + length]
        return []

    def _accept(self, row: Row, draft: list[int], logits: torch.Tensor, picks: list[int] | None = None) -> int:
        """Push the row's next token, then as long as it equals the next draft token, the token
        predicted after that one; how many of the row's inputs stay in the cache. `picks`: the
        argmax of `logits`, when the step took it for all rows at once."""
        if picks is not None:
            predicted = picks
        else:
            predicted = logits.argmax(-1).tolist() if draft else next_tokens(logits, [row], self.greedy)
        for j, token in enumerate(predicted):
            self._push(row, token)
            if row.finished or j == len(draft) or token != draft[j]:
                self.counters.draft_tokens_accepted += j
                if draft:
                    row.draft_length = min(MAX_DRAFT, 2 * len(draft) if j == len(draft) else j + 1)
                return j + 1
        raise AssertionError("unreachable: the last prediction ends the loop")

    def _leave(self) -> None:
        """Finished rows free their slots (the last row moves into each, here and in the cache)."""
        for j in reversed(range(len(self.active))):
            if self.active[j].finished:
                self.active[j] = self.active[-1]
                self.active.pop()
                self.cache.remove(j)

    def _choose(self, rows: list[Row], logits: torch.Tensor, picks: list[int] | None = None) -> None:
        for row, token in zip(rows, picks if picks is not None else next_tokens(logits, rows, self.greedy)):
            self._push(row, token)

    def _push(self, row: Row, token: int) -> None:
        """Append the row's next token; a row that reaches a stop is finished and answered."""
        new = row.text.push(token)
        if token == self.tokenizer.eos_token_id or len(row.text.tokens) >= row.prompt.max_new or row.text.stopped_by(new, row.stops):
            row.finished = True
            self._finish(row)

    def _finish(self, row: Row) -> None:
        self.done[row.index] = _response(self.tokenizer, row.text.tokens, row.stops, row.prompt)
        self.counters.generated_tokens += len(row.text.tokens)
        self.unreported.append(row.index)
        self.progress.update(1)
        seconds = time.perf_counter() - self.started
        self.progress.set_postfix_str(f"{self.counters.generated_tokens / seconds:.0f} tok/s", refresh=False)
        if len(self.unreported) >= self.capacity:
            self._report()

    def _report(self) -> None:
        """Hand the finished requests to the response cache."""
        indices, self.unreported = self.unreported, []
        self.runner.on_finished([self.requests[i] for i in indices], [self.done[i] for i in indices])


def generate(runner: StepRunner, requests: list[GenerationRequest]) -> list[GenerationResponse]:
    """Responses to `requests`, by continuous batching where the runner's placement and model
    allow it (`supports_row_cache`), else by static batches (greedy only)."""
    if not requests:
        return []
    start = time.perf_counter()
    progress = tqdm(total=len(requests), desc="generation", disable=not runner.show_progress, leave=False)
    if runner.supports_row_cache:
        engine = Engine(runner, requests, progress)
        while runner.with_oom_backoff(engine.run, len(engine.active)) is None:
            engine.requeue()
        responses = [engine.done[i] for i in range(len(requests))]
    else:
        if any(not r.sampling.greedy for r in requests):
            raise LightevalLikeError("sampling needs a model that is not split into pipeline stages (pp=1)")
        responses = generate_static_batches(runner, requests, progress)
    progress.close()
    runner.counters.generation_seconds += time.perf_counter() - start
    return responses


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


def _left_padded(prompts: list[Prompt], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and attention mask with every row's prompt ending at the same column."""
    width = max(len(p.ids) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for b, p in enumerate(prompts):
        input_ids[b, width - len(p.ids) :] = torch.tensor(p.ids)
        attention[b, width - len(p.ids) :] = 1
    return input_ids, attention


def _run_batch(runner: StepRunner, requests: list[GenerationRequest], prompts: list[Prompt],
               eos: str | None) -> list[GenerationResponse] | None:
    """One static batch; None after an out-of-memory that shrank the budget (retry smaller)."""
    from transformers import GenerationConfig, StoppingCriteriaList

    tokenizer = runner.tokenizer
    stops = [_stops(req, eos) for req in requests]
    limits = [p.max_new for p in prompts]
    input_ids, attention = _left_padded(prompts, tokenizer.pad_token_id)
    width = input_ids.shape[1]
    stopper = StopSequences(tokenizer, width, stops, limits)
    gen_config = GenerationConfig(
        max_new_tokens=max(limits), do_sample=False, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )

    def generate():
        return runner.generate_padded(input_ids, attention, gen_config, StoppingCriteriaList([stopper]))

    out = runner.with_oom_backoff(generate, len(requests))
    if out is None:
        return None
    responses = []
    for b, prompt in enumerate(prompts):
        new = out[b, width:][: stopper.stopped_at[b] or limits[b]].tolist()
        runner.counters.generated_tokens += len(new)
        responses.append(_response(tokenizer, new, stops[b], prompt))
    return responses


def generate_static_batches(runner: StepRunner, requests: list[GenerationRequest], progress: tqdm) -> list[GenerationResponse]:
    """Greedy generation in left-padded batches through the runner's `generate_padded` (the
    pipelined path: each batch runs until its slowest row stops)."""
    eos = _eos_text(runner.tokenizer)
    prompts = _encode_prompts(runner, requests)
    order = sorted(range(len(requests)), key=lambda i: len(prompts[i].ids), reverse=True)
    responses: dict[int, GenerationResponse] = {}
    start = 0
    while start < len(order):
        longest = len(prompts[order[start]].ids) + prompts[order[start]].max_new
        count = runner.batch_size or max(1, runner.token_budget // max(longest, 1))
        batch = order[start : start + count]
        done = _run_batch(runner, [requests[i] for i in batch], [prompts[i] for i in batch], eos)
        if done is None:
            continue
        responses.update(zip(batch, done))
        runner.on_finished([requests[i] for i in batch], done)
        start += len(batch)
        progress.update(len(batch))
    return [responses[i] for i in range(len(requests))]
