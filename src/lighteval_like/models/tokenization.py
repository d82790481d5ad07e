"""Requests -> token ids, as lm-evaluation-harness tokenises them, for every backend.

Trailing whitespace of a context moves to the continuation, the continuation is the tail of
the joint encoding, an empty context becomes the prefix token (BOS, else EOS), and inputs
longer than `max_length` are cut from the left. Rolling requests are cut into disjoint windows.
"""

from __future__ import annotations

from dataclasses import dataclass

from lighteval_like.errors import LightevalLikeError
from lighteval_like.models.base import LoglikelihoodRequest
from lighteval_like.models.packing import ScoreItem


@dataclass
class RequestEncoder:
    """Tokenises requests for one tokenizer and context length."""

    tokenizer: object
    max_length: int
    add_special_tokens: bool = False
    # True: add a space before every continuation; False: strip it; None: as given.
    continuation_start_space: bool | None = None

    @property
    def prefix_token_id(self) -> int:
        tok = self.tokenizer
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=self.add_special_tokens)["input_ids"]

    def _continuation_space(self, continuation: str) -> str:
        if self.continuation_start_space is True and not continuation.startswith(" "):
            return " " + continuation
        if self.continuation_start_space is False:
            return continuation.lstrip()
        return continuation

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if not context:
            return [self.prefix_token_id], self.encode(continuation)
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.encode(context + continuation)
        context_enc = self.encode(context)
        return context_enc, whole[len(context_enc) :]

    def score_item(self, context_enc: list[int], continuation_enc: list[int]) -> tuple[ScoreItem, bool]:
        """lm-eval's window: (context + continuation)[-(max_length + 1):][:-1]; True when cut."""
        whole = (context_enc + continuation_enc)[-(self.max_length + 1) :]
        truncated = len(whole) < len(context_enc) + len(continuation_enc)
        targets = continuation_enc[-(len(whole) - 1) :] if len(continuation_enc) >= len(whole) else continuation_enc
        inputs = whole[:-1]
        return ScoreItem(tuple(inputs), len(inputs) - len(targets), tuple(targets)), truncated

    def request_item(self, req: LoglikelihoodRequest) -> tuple[ScoreItem, bool]:
        ctx, cont = self.encode_pair(req.context, self._continuation_space(req.continuation))
        if not cont:
            raise LightevalLikeError(f"continuation {req.continuation!r} encodes to no tokens")
        if req.single_token and len(cont) != 1:
            raise LightevalLikeError(
                f"single-token task: continuation {req.continuation!r} is {len(cont)} tokens for this "
                "tokenizer; use the multiple_choice request type instead"
            )
        return self.score_item(ctx, cont)

    def rolling_windows(self, text: str) -> list[ScoreItem]:
        """Disjoint windows of at most max_length predictions, each with as much left context as fits."""
        tokens = self.encode(text)
        items, predicted, n = [], 0, len(tokens)
        while predicted < n:
            span = min(n - predicted, self.max_length)
            end = predicted + span
            if predicted == 0:
                context = [self.prefix_token_id]
            else:
                context = tokens[max(0, end - self.max_length - 1) : predicted]
            targets = tokens[predicted:end]
            items.append(ScoreItem(tuple((context + targets)[:-1]), len(context) - 1, tuple(targets)))
            predicted = end
        return items
