"""`EndpointModelConfig`: the model args of the endpoint backend (`endpoint`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from lighteval_like.api.errors import ModelArgsError
from lighteval_like.api.generation import GenerationParameters
from lighteval_like.models.config import BackendConfig


@dataclass
class EndpointModelConfig(BackendConfig):
    """A served model: `base_url` (several separated by ';' share the requests), `model` (the served
    id; `pretrained` is its other name), `api_key_env` (the environment variable holding the key:
    the key itself is never recorded) and a `tokenizer`: a local folder, or `server` (the server's
    /tokenize, recorded as `server:<base_url>`); without one the backend counts no tokens and scores
    no loglikelihoods."""

    pretrained: str = ""
    base_url: str = ""
    model: str = ""
    api_key_env: str | None = None
    concurrent_requests: int = 8
    prompts_per_request: int = 8
    timeout_s: float = 120.0
    max_retries: int = 5
    chat: bool = False  # generation through /chat/completions (the server applies its chat template)
    token_queries: bool = True  # single-target items as next-token queries where the server offers them
    max_length: int | None = None  # None: the server's max_model_len (from /models)
    generation_parameters: GenerationParameters | None = None

    DTYPES: ClassVar[tuple[str, ...]] = ("auto",)
    DTYPE_REFUSED_BY: ClassVar[str] = " by an endpoint (the server chose its dtype)"
    KEY_ORDER: ClassVar[tuple[str, ...]] = (
        "base_url", "model", "pretrained", "api_key_env", "tokenizer", "concurrent_requests", "prompts_per_request",
        "timeout_s", "max_retries", "chat", "token_queries", "max_length", "add_special_tokens", "multichoice_continuations_start_space",
        "max_gen_toks", "generation_parameters", "revision", "subfolder", "dtype", "trust_remote_code",
    )

    def check_args(self) -> None:
        self.model = self.model or self.pretrained
        self.pretrained = self.model
        if not self.base_urls or not self.model:
            raise ModelArgsError("an endpoint needs base_url=http://host:port/v1 and model=<served model id>")
        bad = [u for u in self.base_urls if not u.startswith(("http://", "https://"))]
        if bad:
            raise ModelArgsError(f"base_url '{bad[0]}' is no http(s) URL: pass base_url=http://host:port/v1")
        sizes = ("concurrent_requests", "prompts_per_request", "max_gen_toks", "max_length")
        wrong = [k for k in sizes if getattr(self, k) is not None and getattr(self, k) <= 0]
        if wrong or self.timeout_s <= 0 or self.max_retries < 0:
            raise ModelArgsError(f"{', '.join(wrong) or 'timeout_s, max_retries'} must be positive (max_retries >= 0)")
        if self.tokenizer == "server":
            self.tokenizer = self.server_tokenizer
        elif (self.tokenizer or "").startswith("server:") and not self.tokenizes_on_server:
            raise ModelArgsError(f"tokenizer={self.tokenizer} names other servers than base_url={self.base_url}: "
                                 "pass tokenizer=server")

    def _check_source(self) -> None:
        """Nothing local to check: the model is the server's."""

    @property
    def base_urls(self) -> list[str]:
        return [u.strip().rstrip("/") for u in self.base_url.split(";") if u.strip()]

    @property
    def server_tokenizer(self) -> str:
        """`tokenizer=server` as recorded (results, response-cache fingerprint): the servers that tokenise."""
        return "server:" + ";".join(self.base_urls)

    @property
    def tokenizes_on_server(self) -> bool:
        return self.tokenizer == self.server_tokenizer

    @property
    def counts_tokens(self) -> bool:
        return self.tokenizer is not None

    @property
    def model_name(self) -> str:
        return self.model

    def run_defaults(self) -> dict[str, Any]:
        return {"generation": self.generation_parameters}
