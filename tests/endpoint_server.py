"""A small OpenAI-style completions server on 127.0.0.1 for the endpoint tests, backed by a tiny
transformers model in fp32 (real prompt log-probabilities), which misbehaves on demand:
`faults` holds what it does wrong on every request (shifted logprobs, no echo, a BOS added to every
prompt or to text prompts only, answers without text, the seed ignored), `fault_rate` the share of
requests answered 429, 500 or a reset. With `structured`, it honours vLLM's
`structured_outputs: {"regex": ...}` by answering the first of `STRUCTURED_ANSWERS` the regex
matches (it records every regex it was sent, honoured or not). With `token_queries` (the default)
it honours vLLM's `logprob_token_ids` (each generated position reports those ids too); the
`query_shift` fault reports them from the position before. At its root it answers vLLM's
`/tokenize` (a prompt, or chat messages through the tokenizer's chat template), `/detokenize` and
`/tokenizer_info` (vLLM's only with --enable-tokenizer-info-endpoint), each path in `missing`
answered 404 as vLLM answers a path it does not serve; `tokenized` records what /tokenize was asked.

Standalone (for benchmarks/endpoint_faults.py): `python tests/endpoint_server.py MODEL_DIR [--port P]
[--model_id ID] [--faults shift,no_echo,bos,text_bos,seed_ignored,empty]` serves until killed and
prints its base URL on its first line."""

from __future__ import annotations

import argparse
import json
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
from fault_proxy import reply, reset

STRUCTURED_ANSWERS = ("zqqq7", "The answer is relevant. Rating: [[5]]")


class TinyServer:
    """`url` is its base URL; `completions` counts the completion requests it answered, `scored`
    the echoed (scoring) prompts; `fail_after` fails every request after that many answers."""

    def __init__(self, folder: str, model_id: str = "tiny", max_model_len: int = 256, key: str | None = None,
                 port: int = 0):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.entry = {"id": model_id, "object": "model", "root": folder, "max_model_len": max_model_len}
        self.key = key
        self.faults: set[str] = set()
        self.fault_rate = 0.0
        self.fault_kinds = ["429", "500", "reset"]  # drawn from, with "slow" (2 s late) and "truncated"
        self.fail_after: int | None = None
        self.structured = False
        self.structured_delay_s = 0.0  # how late each constrained answer comes (a slow judge)
        self.regexes: list[str] = []
        self.missing: set[str] = set()  # root paths answered 404, e.g. {"/tokenize", "/detokenize"}
        self.tokenized: list[tuple[str, bool]] = []  # (prompt or messages as JSON, add_special_tokens) asked
        self.delay_s = 0.0  # each completion answered this much later
        self.rng = random.Random(0)
        self.token_queries = True
        self.completions = self.scored = self.queried = 0
        self.active = 0  # requests being answered (a slow one may outlive its client's timeout)
        self.most_active = 0  # the most answered at a time
        self.injected: list[str] = []  # the faults injected, in order
        self.lock = threading.Lock()
        self.http = ThreadingHTTPServer(("127.0.0.1", port), type("Bound", (Handler,), {"tiny": self}))
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/v1"

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()

    def wait_idle(self) -> None:
        while self.active:
            time.sleep(0.05)

    def fault(self) -> str | None:
        """The fault this request gets (None: answered well)."""
        with self.lock:
            if self.fail_after is not None and self.completions >= self.fail_after:
                return "500"
            if self.fault_rate and self.rng.random() < self.fault_rate:
                self.injected.append(self.rng.choice(self.fault_kinds))
                return self.injected[-1]
        return None

    def ids(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            return [self.tokenizer.bos_token_id, *ids] if "text_bos" in self.faults else ids
        return list(prompt)

    def prompts(self, body: dict) -> list[list[int]]:
        prompt = body["prompt"]
        many = isinstance(prompt, list) and prompt and not isinstance(prompt[0], int)
        prompts = [self.ids(p) for p in (prompt if many else [prompt])]
        return [[self.tokenizer.bos_token_id, *p] for p in prompts] if "bos" in self.faults else prompts

    @torch.no_grad()
    def logprobs(self, seq: list[int]) -> torch.Tensor:
        with self.lock:  # one forward at a time
            return torch.log_softmax(self.model(torch.tensor([seq])).logits[0].float(), -1)

    def generate(self, prompt: list[int], body: dict) -> tuple[list[int], str, str]:
        """(new ids, text cut at a stop sequence, finish_reason)."""
        new: list[int] = []
        stops = body.get("stop") or []
        temperature = body.get("temperature", 1.0)
        seed = random.randrange(2**31) if "seed_ignored" in self.faults else body.get("seed", 0)
        generator = torch.Generator().manual_seed(seed)
        while len(new) < body.get("max_tokens", 16):
            row = self.logprobs(prompt + new)[-1]
            if temperature > 0:
                token = int(torch.multinomial(torch.softmax(row / temperature, -1), 1, generator=generator))
            else:
                token = int(row.argmax())
            new.append(token)
            if token == self.tokenizer.eos_token_id:  # generated, as vLLM counts and echoes it; not in the text
                return new, self.tokenizer.decode(new, skip_special_tokens=True), "stop"
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            cut = [text.find(s) for s in stops if s in text]
            if cut:
                return new, text[: min(cut)], "stop"
        return new, self.tokenizer.decode(new, skip_special_tokens=True), "length"

    def choice(self, index: int, prompt: list[int], body: dict) -> tuple[dict, int]:
        regex = (body.get("structured_outputs") or {}).get("regex")
        if regex is not None:
            self.regexes.append(regex)
            if self.structured:
                time.sleep(self.structured_delay_s)
                return {"index": index, "text": next(a for a in STRUCTURED_ANSWERS if re.fullmatch(regex, a)),
                        "finish_reason": "stop"}, 1
        new, text, finish = self.generate(prompt, body) if body.get("max_tokens", 16) else ([], "", "length")
        choice = {"index": index, "text": text, "finish_reason": finish}
        if body.get("logprobs") is not None:
            echo = body.get("echo") and "no_echo" not in self.faults
            choice["logprobs"] = self.token_logprobs(prompt + new, 0 if echo else len(prompt))
            if echo:
                self.scored += 1
            if body.get("logprob_token_ids") and self.token_queries and not echo:
                self.answer_queries(choice["logprobs"]["top_logprobs"], prompt + new, len(prompt), body["logprob_token_ids"])
        return choice, len(new)

    def answer_queries(self, tops: list[dict], seq: list[int], start: int, ids: list[int]) -> None:
        """Each generated position's top-1 joined by the log-probabilities of `ids` there."""
        rows = self.logprobs(seq)
        shift = 1 if "query_shift" in self.faults else 0
        for k, top in enumerate(tops):
            top.update({f"token_id:{t}": float(rows[start + k - 1 - shift, t]) for t in ids})
        with self.lock:
            self.queried += 1

    def token_logprobs(self, seq: list[int], start: int) -> dict:
        rows = self.logprobs(seq)
        values = [None] + [float(rows[p - 1, seq[p]]) for p in range(1, len(seq))]
        tops = [None] + [int(rows[p - 1].argmax()) for p in range(1, len(seq))]
        if "shift" in self.faults:  # llama.cpp without a BOS: each position reports the next one's
            values, tops = values[1:] + values[-1:], tops[1:] + tops[-1:]
        top = [None if t is None else {f"token_id:{t}": float(rows[p - 1, t])} for p, t in enumerate(tops)]
        return {"tokens": [f"token_id:{t}" for t in seq[start:]], "token_logprobs": values[start:],
                "top_logprobs": top[start:]}

    def chat(self, body: dict) -> dict:
        """A chat completion: the messages' contents joined by newlines stand for a chat template."""
        text = "\n".join(m["content"] for m in body["messages"])
        choice, n = self.choice(0, self.ids(text), {**body, "logprobs": None})
        choice["message"] = {"role": "assistant", "content": choice.pop("text")}
        return {"object": "chat.completion", "model": body["model"], "choices": [choice],
                "usage": {"completion_tokens": n}}

    def tokenize(self, body: dict) -> tuple[int, dict]:
        """vLLM's /tokenize: a prompt (with the special tokens a text prompt gets unless told not to:
        none, or a BOS with `text_bos`), or messages through the chat template (none added); a
        tokenizer without a template is vLLM's 400."""
        if "messages" not in body:
            text, special = body["prompt"], body.get("add_special_tokens", True)
        elif self.tokenizer.chat_template is None:
            return 400, {"error": {"message": "As of transformers v4.44, default chat template is no longer allowed, "
                                              "so you must provide a chat template if the tokenizer does not define "
                                              "one.", "type": "BadRequestError", "param": None, "code": 400}}
        else:
            text = self.tokenizer.apply_chat_template(body["messages"], tokenize=False,
                                                      add_generation_prompt=body.get("add_generation_prompt", True))
            special = False
        with self.lock:
            self.tokenized.append((body.get("prompt", json.dumps(body.get("messages"))), special))
        ids = self.ids(text) if special else self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return 200, {"count": len(ids), "max_model_len": self.entry["max_model_len"], "tokens": ids, "token_strs": None}

    def tokenizer_info(self) -> dict:
        """vLLM's /tokenizer_info: the tokenizer's init kwargs (an added token as its text), and its class."""
        info = {k: getattr(v, "content", v) for k, v in self.tokenizer.init_kwargs.items()
                if isinstance(getattr(v, "content", v), (str, int, float, bool, type(None)))}
        return {**info, "tokenizer_class": type(self.tokenizer).__name__}

    def complete(self, body: dict) -> dict:
        answers = [self.choice(i, p, body) for i, p in enumerate(self.prompts(body))]
        if "empty" in self.faults:  # an answer refused or cut off: no text, another finish_reason
            answers = [({**c, "text": None, "finish_reason": "abort"}, n) for c, n in answers]
        with self.lock:
            self.completions += 1
        return {"object": "text_completion", "model": body["model"], "choices": [c for c, _ in answers],
                "usage": {"completion_tokens": sum(n for _, n in answers)}}


class Handler(BaseHTTPRequestHandler):
    """The server's requests, answered by its `TinyServer` (`tiny`, bound per server)."""

    tiny: TinyServer

    def log_message(self, *args) -> None:
        """Quiet."""

    def _send(self, code: int, payload: dict, headers: dict | None = None) -> None:
        reply(self, code, json.dumps(payload).encode(), headers or {})

    def _authorised(self) -> bool:
        if self.tiny.key and self.headers.get("Authorization") != f"Bearer {self.tiny.key}":
            self._send(401, {"error": "bad key"})
            return False
        return True

    def do_GET(self) -> None:
        if not self._authorised():
            return
        if self.path in self.tiny.missing:
            self._send(404, {"detail": "Not Found"})
        elif self.path == "/tokenizer_info":
            self._send(200, self.tiny.tokenizer_info())
        else:
            self._send(200, {"object": "list", "data": [self.tiny.entry]})

    def do_POST(self) -> None:
        with self.tiny.lock:
            self.tiny.active += 1
            self.tiny.most_active = max(self.tiny.most_active, self.tiny.active)
        try:
            self._answer(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        finally:
            with self.tiny.lock:
                self.tiny.active -= 1

    def _answer(self, body: dict) -> None:
        if not self._authorised():
            return
        fault = self.tiny.fault()
        time.sleep(self.tiny.delay_s)
        if fault == "slow":
            time.sleep(2.0)
            self._send(200, self.tiny.complete(body))
        elif fault == "truncated":  # a body cut short of its Content-Length
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"choices": [')
            self.close_connection = True
        elif fault == "reset":
            reset(self)
        elif fault is not None:
            self._send(int(fault), {"error": "injected"}, {"Retry-After": "0"} if fault == "429" else None)
        elif self.path in self.tiny.missing:
            self._send(404, {"detail": "Not Found"})
        elif body.get("model") != self.tiny.entry["id"]:
            self._send(404, {"error": f"model {body.get('model')} does not exist"})
        elif self.path == "/tokenize":
            self._send(*self.tiny.tokenize(body))
        elif self.path == "/detokenize":
            self._send(200, {"prompt": self.tiny.tokenizer.decode(body["tokens"])})
        elif self.path.endswith("/chat/completions"):
            self._send(200, self.tiny.chat(body))
        else:
            self._send(200, self.tiny.complete(body))


def main() -> None:
    parser = argparse.ArgumentParser(description="the tests' OpenAI-style server, misbehaving on demand")
    parser.add_argument("model_dir")
    parser.add_argument("--port", type=int, default=0, help="0: a free one")
    parser.add_argument("--model_id", default="tiny")
    parser.add_argument("--max_model_len", type=int, default=2048)
    parser.add_argument("--faults", default="", help="comma-separated: shift, no_echo, bos, text_bos, seed_ignored, empty")
    args = parser.parse_args()
    served = TinyServer(args.model_dir, args.model_id, args.max_model_len, port=args.port)
    served.faults = {f for f in args.faults.split(",") if f}
    print(served.url, flush=True)
    threading.Event().wait()  # until killed


if __name__ == "__main__":
    main()
