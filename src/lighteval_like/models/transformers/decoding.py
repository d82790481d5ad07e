"""The pieces of one decoding step that do not depend on scheduling: the text of a growing
generation decoded incrementally (stop sequences are searched in the new text only), the choice
of the next token (argmax, or a draw from the request's own random stream)."""

from __future__ import annotations

import torch

from lighteval_like.api.requests import SamplingParams


class IncrementalText:
    """The decoded text of a token list that grows one token at a time.

    Each token decodes a short window (the previous token or two and the new ones), not the
    whole generation: tokenizers that drop a leading space or split a character over several
    tokens (byte-level BPE) still give the text a full decode would give."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.text = ""
        self._prefix = self._read = 0  # the window starts at _prefix; tokens before _read are in text

    def push(self, token: int) -> str:
        """Append `token`; the text it completes ("" while a character is incomplete)."""
        self.tokens.append(token)
        decode = self.tokenizer.decode
        before = decode(self.tokens[self._prefix : self._read], skip_special_tokens=False)
        window = decode(self.tokens[self._prefix :], skip_special_tokens=False)
        if window.endswith("\ufffd"):
            return ""
        new = window[len(before) :]
        self._prefix, self._read = self._read, len(self.tokens)
        self.text += new
        return new

    def stopped_by(self, new: str, stops: tuple[str, ...]) -> bool:
        """A stop sequence ends inside the `new` text (earlier text was checked before)."""
        end = len(self.text)
        return any(s in self.text[max(0, end - len(new) - len(s) + 1) :] for s in stops if new)


def next_tokens(logits: torch.Tensor, rows: list, greedy: bool) -> list[int]:
    """The next token of each row: argmax where the row is greedy, else a draw from its own
    generator (`row.generator`) after its sampling settings (`row.sampling`). Draws are made on
    the CPU, one row at a time, so they do not depend on the batch or the device."""
    if greedy:
        return logits.argmax(-1).tolist()
    out = []
    for b, row in enumerate(rows):
        scores = _penalised(logits[b].float(), row.history(), row.sampling)
        if row.sampling.greedy:
            out.append(int(scores.argmax()))
        else:
            probs = _filtered_probs(scores, row.sampling).cpu()
            out.append(int(torch.multinomial(probs, 1, generator=row.generator)))
    return out


def _penalised(scores: torch.Tensor, history: list[int], sampling: SamplingParams) -> torch.Tensor:
    """CTRL's repetition penalty (as transformers applies it) on the tokens seen so far."""
    if sampling.repetition_penalty == 1.0 or not history:
        return scores
    seen = torch.tensor(sorted(set(history)), device=scores.device)
    picked = scores[seen]
    scores = scores.clone()
    scores[seen] = torch.where(picked < 0, picked * sampling.repetition_penalty, picked / sampling.repetition_penalty)
    return scores


def _filtered_probs(scores: torch.Tensor, sampling: SamplingParams) -> torch.Tensor:
    """Probabilities after temperature, top-k, top-p and min-p (transformers' order)."""
    scores = scores / sampling.temperature
    if 0 < sampling.top_k < scores.numel():
        kth = torch.topk(scores, sampling.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if sampling.top_p < 1.0:
        ordered, order = torch.sort(scores, descending=True)
        mass = ordered.softmax(-1).cumsum(-1)
        drop = mass - ordered.softmax(-1) >= sampling.top_p  # keep the tokens reaching top_p, at least one
        scores = scores.scatter(0, order, ordered.masked_fill(drop, float("-inf")))
    probs = scores.softmax(-1)
    if sampling.min_p > 0:
        probs = probs.masked_fill(probs < sampling.min_p * probs.max(), 0.0)
    return probs
