"""Structured prompts: turns of a role and parts, a part being text or an image named by the
digest of its bytes. Pixels never sit inside a prompt (or a request): they live in a `MediaStore`
keyed by digest, so a request stays small, hashable and comparable.

A plain prompt is one user turn of one text part with `chat` False: it renders to its text,
exactly the string a request carried before prompts had structure. A chat prompt is rendered by
the prompt encoder with the tokenizer's chat template, ready for the assistant's turn.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    """An image by the sha256 of its encoded bytes (see `MediaStore`)."""

    digest: str


Part = TextPart | ImagePart


@dataclass(frozen=True)
class Turn:
    role: str  # "system", "user", "assistant"
    parts: tuple[Part, ...]

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))


@dataclass(frozen=True)
class Prompt:
    """What the model is asked; `chat` says whether the chat template renders it."""

    turns: tuple[Turn, ...]
    chat: bool = False

    @classmethod
    def plain(cls, text: str) -> Prompt:
        return cls((Turn("user", (TextPart(text),)),))

    @classmethod
    def from_messages(cls, messages: list[tuple[str, str]]) -> Prompt:
        """A chat prompt of (role, text) turns."""
        return cls(tuple(Turn(role, (TextPart(text),)) for role, text in messages), chat=True)

    def followed_by(self, answer: str, query: str, separator: str) -> Prompt:
        """The next turn of a conversation: this prompt, the model's `answer` and the user's `query`
        (a chat prompt gets an assistant and a user turn; a text prompt the texts, `separator` between)."""
        if self.chat:
            return Prompt((*self.turns, Turn("assistant", (TextPart(answer),)), Turn("user", (TextPart(query),))), True)
        return Prompt.plain(f"{self.text}{answer}{separator}{query}")

    @property
    def is_plain(self) -> bool:
        return not self.chat and len(self.turns) == 1 and len(self.turns[0].parts) == 1 \
            and isinstance(self.turns[0].parts[0], TextPart)

    @property
    def text(self) -> str:
        """The text of a prompt without a template: its parts' text, in order."""
        return "".join(t.text for t in self.turns)

    @property
    def images(self) -> tuple[str, ...]:
        """Digests of the prompt's images, in order."""
        return tuple(p.digest for t in self.turns for p in t.parts if isinstance(p, ImagePart))

    def messages(self) -> list[dict]:
        """The turns as chat-template messages: text-only turns as strings, others as part lists."""
        out = []
        for turn in self.turns:
            if all(isinstance(p, TextPart) for p in turn.parts):
                out.append({"role": turn.role, "content": turn.text})
            else:
                out.append({"role": turn.role, "content": [
                    {"type": "text", "text": p.text} if isinstance(p, TextPart) else {"type": "image"}
                    for p in turn.parts
                ]})
        return out

    def identity(self) -> str | list:
        """What identifies the prompt: a plain prompt's text (as requests were keyed before
        prompts had structure), else its template flag and turns with image digests."""
        if self.is_plain:
            return self.text
        return ["chat" if self.chat else "text", [
            [t.role, [["text", p.text] if isinstance(p, TextPart) else ["image", p.digest] for p in t.parts]]
            for t in self.turns
        ]]


def media_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class MediaStore:
    """Encoded images by digest; a backend decodes them when it needs pixels."""

    def __init__(self):
        self._items: dict[str, bytes] = {}

    def put(self, data: bytes) -> ImagePart:
        digest = media_digest(data)
        self._items.setdefault(digest, data)
        return ImagePart(digest)

    def get(self, digest: str) -> bytes:
        return self._items[digest]

    def __contains__(self, digest: str) -> bool:
        return digest in self._items

    def __len__(self) -> int:
        return len(self._items)
