"""Prompts -> text -> token ids, for every backend: the prompt encoder.

A `PromptEncoder` renders a structured prompt (a plain prompt as its text, a chat prompt through
the chat template) and counts tokens; it needs no weights. `TokenizerEncoder` is the one every
backend with a transformers tokenizer uses, and tokenises requests as lm-evaluation-harness does.
Trailing whitespace of a context moves to the continuation, the continuation is the tail of
the joint encoding, an empty context becomes the prefix token (BOS, else EOS), and inputs
longer than `max_length` are cut from the left. Rolling requests are cut into disjoint windows.
Also the tokenizer loading and chat rendering every backend shares.
"""

from __future__ import annotations

import functools
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from lighteval_like.api.errors import LightevalLikeError, ModelLoadError, one_line
from lighteval_like.api.prompt import MediaStore, Prompt, TextPart
from lighteval_like.api.requests import LoglikelihoodRequest
from lighteval_like.models.packing import ScoreItem


class PromptEncoder(ABC):
    """Renders prompts and counts tokens for one model, before and without its weights."""

    max_length: int | None = None
    counts_tokens: bool = True  # False: a backend that cannot count (truncate=1 is refused)
    reads_images: bool = False  # True: prompts may hold images (their bytes in `media`)
    # Why not, and the fix, for an image task on an encoder that does not read them.
    no_images: str = "this model reads text only: evaluate a vision-language model (a folder with an image processor)"

    @functools.cached_property
    def media(self) -> MediaStore:
        """The images of this run's prompts, by digest (the samples stage puts them here)."""
        return MediaStore()

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of `text` as the model would encode a context."""

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def chat_text(self, messages: list[dict]) -> str:
        """Messages as the chat template renders them, ready for the assistant's turn."""
        raise LightevalLikeError("--use_chat_template: this model has no chat template")

    def render(self, prompt: Prompt) -> str:
        """The prompt's text as the model reads it: a plain prompt's text, a chat prompt templated."""
        return self.chat_text(prompt.messages()) if prompt.chat else prompt.text


class TextEncoder(PromptEncoder):
    """The encoder of a backend without a tokenizer: renders plain prompts, counts no tokens."""

    counts_tokens = False

    def encode(self, text: str) -> list[int]:
        raise LightevalLikeError("this backend has no tokenizer, so it counts no tokens: give it tokenizer=...")


class PreviewEncoder(TextEncoder):
    """Renders any prompt as readable text without a model (`tasks inspect`): a chat prompt's
    turns as `[role] text`, an image as a marker with the start of its digest."""

    reads_images = True

    def render(self, prompt: Prompt) -> str:
        if not prompt.chat:
            return prompt.text
        return "\n".join(f"[{turn.role}] " + "".join(
            part.text if isinstance(part, TextPart) else f"<image sha256:{part.digest[:12]}>" for part in turn.parts)
            for turn in prompt.turns)


@dataclass
class TokenizerEncoder(PromptEncoder):
    """Renders with a transformers tokenizer's chat template and tokenises requests for one
    tokenizer and context length."""

    tokenizer: object
    max_length: int
    add_special_tokens: bool = False
    # True: add a space before every continuation; False: strip it; None: as given.
    continuation_start_space: bool | None = None
    model_name: str = "the model"
    _rendered: dict = field(default_factory=dict, repr=False, compare=False)

    def chat_text(self, messages: list[dict]) -> str:
        return render_chat(self.tokenizer, messages, self.model_name)

    def render(self, prompt: Prompt) -> str:
        """Rendered once per distinct prompt (planning and computing both ask)."""
        if prompt not in self._rendered:
            self._rendered[prompt] = super().render(prompt)
        return self._rendered[prompt]

    @property
    def prefix_token_id(self) -> int:
        tok = self.tokenizer
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=self.add_special_tokens)["input_ids"]

    def generation_prompt(self, prompt: Prompt, max_new_tokens: int) -> tuple[list[int], bool]:
        """The prompt's ids cut on the left to leave room for the new tokens; True when cut."""
        ids = self.encode(self.render(prompt))
        room = max(1, self.max_length - max_new_tokens)
        return ids[-room:], len(ids) > room

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
        ctx, cont = self.encode_pair(self.render(req.prompt), self._continuation_space(req.continuation))
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


# Files any transformers tokenizer is loaded from (a folder with none of them has no tokenizer).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model")


def _check_local_path(path: str) -> None:
    looks_local = path.startswith((".", "/", "~")) or path.count("/") > 1 or os.sep == "\\" and "\\" in path
    if looks_local and not os.path.exists(os.path.expanduser(path)):
        raise ModelLoadError(f"model path '{path}' does not exist: pass pretrained=<existing directory or hub id>")


def load_tokenizer(pretrained: str, tokenizer: str | None, source_kwargs: dict):
    """The model's tokenizer (or `tokenizer`'s), with a pad token; load failures are one line with the fix.
    `source_kwargs` are the model's `from_pretrained` arguments (revision, subfolder, ...)."""
    from transformers import AutoTokenizer

    _check_local_path(pretrained)
    kwargs = dict(source_kwargs)
    if tokenizer:
        kwargs.pop("gguf_file", None)
        kwargs.pop("subfolder", None)
    name = tokenizer or pretrained
    try:
        tok = AutoTokenizer.from_pretrained(name, **kwargs)
    except Exception as e:  # hub/IO/format errors have many types
        folder = os.path.expanduser(name)
        hint = ""
        if os.path.isdir(folder) and not any(os.path.exists(os.path.join(folder, f)) for f in TOKENIZER_FILES):
            raise ModelLoadError(
                f"cannot load the tokenizer of '{name}': the folder has none of {', '.join(TOKENIZER_FILES)}: "
                f"copy the tokenizer files into it, or pass tokenizer=<folder or hub id of the tokenizer>"
            ) from e
        if not os.path.isdir(folder):  # looked up on the hub: say so, and the fix
            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
            hint = (
                f" ('{name}' is no local directory, so it was looked up on the hub"
                + (" with HF_HUB_OFFLINE set" if offline else "")
                + "): pass pretrained=<model directory>, or a hub id that is cached or reachable"
            )
        raise ModelLoadError(f"cannot load the tokenizer of '{name}': {type(e).__name__}: {one_line(e)}{hint}") from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)
    return tok


def render_chat(tokenizer, messages: list[dict], model_name: str) -> str:
    """`messages` as the tokenizer's chat template renders them, ready for the assistant's turn."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise LightevalLikeError(f"--use_chat_template: the tokenizer of '{model_name}' has no chat template")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
