"""`tokenizer=server`: the served model's tokenizer asked of the server (vLLM's `/tokenize` and
`/detokenize`, at the server's root), shaped as `TokenizerEncoder` reads a transformers tokenizer:
called on a text, `bos_token_id`, `eos_token_id`, `chat_template` and `apply_chat_template`.

Each distinct (text, add_special_tokens) is asked once (the last MEMO_SIZE are kept), also while
several threads ask for it (the backend encodes its requests `concurrent_requests` at a time).
A chat goes through the server's template (`messages`, `add_generation_prompt`) and its ids are
decoded (`/detokenize`) into the text the encoder renders; that text must tokenise back to them.
The BOS and EOS are `/tokenizer_info`'s (vLLM's `--enable-tokenizer-info-endpoint`), else the BOS
is the one token the server adds before a text with `add_special_tokens`; one the server does not
tell is refused where an empty context or a rolling window first needs it."""

from __future__ import annotations

import functools
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future

from lighteval_like.api.errors import LightevalLikeError, ModelLoadError
from lighteval_like.models.endpoint.client import Client, EndpointError

MEMO_SIZE = 1 << 16  # distinct texts (and chats) kept
FIX = "pass tokenizer=<the served model's tokenizer folder>"
SPECIALS = ("bos_token", "eos_token")
SAMPLE_TEXT = "a"  # what the added BOS is learned from


class Memo:
    """`compute(key)` once per key, also when several threads ask for the same key at a time (the
    later ones wait for the first); the last `size` keys are kept. A failure is not kept."""

    def __init__(self, compute: Callable, size: int):
        self.compute = compute
        self.size = size
        self._futures: OrderedDict[Hashable, Future] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, key: Hashable):
        with self._lock:
            future = self._futures.get(key)
            mine = future is None
            if mine:
                future = self._futures[key] = Future()
                if len(self._futures) > self.size:
                    self._futures.popitem(last=False)
            else:
                self._futures.move_to_end(key)
        if mine:
            try:
                future.set_result(self.compute(key))
            except BaseException as e:
                with self._lock:
                    self._futures.pop(key, None)
                future.set_exception(e)
        return future.result()


class ServerTokenizer:
    """The served model's tokenizer, as far as the prompt encoder uses one, answered by the server."""

    chat_template = "the server's"  # `render_chat` asks for one; the server applies its own

    def __init__(self, client: Client, model: str):
        self.client = client
        self.model = model
        self._ids = Memo(self._tokenize, MEMO_SIZE)
        self._chats = Memo(self._chat, MEMO_SIZE)

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": list(self._ids((text, add_special_tokens)))}

    def apply_chat_template(self, messages: list[dict], tokenize: bool = False,
                            add_generation_prompt: bool = True) -> str | list[int]:
        ids, text = self._chats((json.dumps(messages), add_generation_prompt))
        return list(ids) if tokenize else text

    @property
    def bos_token_id(self) -> int | None:
        return self._special("bos_token")

    @property
    def eos_token_id(self) -> int | None:
        return self._special("eos_token")

    def _post(self, path: str, body: dict) -> dict:
        """`path` at the server's root; a server without it is one line with the fix."""
        try:
            return self.client.request(path, {"model": self.model, **body}, root=True)
        except EndpointError as e:
            if e.status == 404:
                raise ModelLoadError(f"the server has no {path}: {FIX}") from e
            raise

    def _tokenize(self, key: tuple[str, bool]) -> tuple[int, ...]:
        text, add_special_tokens = key
        return tuple(self._post("/tokenize", {"prompt": text, "add_special_tokens": add_special_tokens})["tokens"])

    def _chat(self, key: tuple[str, bool]) -> tuple[tuple[int, ...], str]:
        """(ids, text) of messages under the server's chat template, as vLLM tokenises a chat
        (without added special tokens); the text must tokenise back to the ids."""
        messages, add_generation_prompt = key
        try:
            ids = self._post("/tokenize", {"messages": json.loads(messages), "add_special_tokens": False,
                                           "add_generation_prompt": add_generation_prompt})["tokens"]
        except EndpointError as e:
            if e.status != 400:
                raise
            raise LightevalLikeError(f"--use_chat_template: the server applied no chat template ({e}): serve the "
                                     f"model with one (vLLM's --chat-template), or {FIX}") from e
        text = self._post("/detokenize", {"tokens": ids})["prompt"]
        if self(text, add_special_tokens=False)["input_ids"] != ids:
            raise ModelLoadError("tokenizer=server: the server's chat template, decoded by /detokenize, does not "
                                 f"tokenise back to its ids: {FIX}")
        return tuple(ids), text

    @functools.cached_property
    def _specials(self) -> dict[str, int | None]:
        """The BOS and EOS ids the server tells: `/tokenizer_info`'s tokens (each one id, or none),
        else, for the BOS, the one token it adds before a text."""
        try:
            info = self.client.request("/tokenizer_info", root=True)
        except EndpointError as e:
            if e.status != 404:
                raise
            info = {}
        known = {}
        for key in (k for k in SPECIALS if k in info):
            ids = self(info[key], add_special_tokens=False)["input_ids"] if info[key] else []
            if len(ids) <= 1:
                known[key] = ids[0] if ids else None
        if "bos_token" not in known:
            plain, marked = (self(SAMPLE_TEXT, add_special_tokens=s)["input_ids"] for s in (False, True))
            if marked[1:] == plain:
                known["bos_token"] = marked[0]
        return known

    def _special(self, key: str) -> int | None:
        if key not in self._specials:
            raise ModelLoadError(
                f"tokenizer=server: the server does not tell its tokenizer's {key} (neither /tokenizer_info, vLLM's "
                "--enable-tokenizer-info-endpoint, nor a token added before a text gives it), which an empty context or "
                f"a rolling window starts with: {FIX}")
        return self._specials[key]
