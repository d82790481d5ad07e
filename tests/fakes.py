"""Prompt encoders for the tests' scripted models (no tokenizer): words as tokens, and a chat
template of visible role markers."""

from __future__ import annotations

from lighteval_like.models.prompt_encoder import PromptEncoder


class WordEncoder(PromptEncoder):
    """One token per whitespace-separated word."""

    def __init__(self, max_length: int | None = None):
        self.max_length = max_length

    def encode(self, text: str) -> list[int]:
        return list(range(len(text.split())))


class MarkerChatEncoder(WordEncoder):
    """Renders chat prompts as `<|role|>content<|end|>` lines, then `<|assistant|>`."""

    def chat_text(self, messages: list[dict]) -> str:
        return "".join(f"<|{m['role']}|>{m['content']}<|end|>\n" for m in messages) + "<|assistant|>"
