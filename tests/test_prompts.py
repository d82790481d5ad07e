"""Structured prompts and the one request identity: a plain prompt is keyed as the string it
renders to (response caches written before prompts had structure still answer), and two images
behind the same placeholder tokens are two requests, two cache entries and never one prefix."""

from __future__ import annotations

import json
import sqlite3

from lighteval_like.api.doc import Doc
from lighteval_like.api.prompt import ImagePart, MediaStore, Prompt, TextPart, Turn
from lighteval_like.api.requests import GenerationRequest, LoglikelihoodRequest, LoglikelihoodResponse, request_identity
from lighteval_like.api.sample import Sample
from lighteval_like.evaluation.cache import ResponseCache
from lighteval_like.evaluation.samples import prompt_texts
from lighteval_like.models.packing import ScoreItem, group_by_prefix, pack_rows, unique_tokens
from lighteval_like.models.prompt_encoder import PromptEncoder
from lighteval_like.models.transformers.generation import Prompt as EnginePrompt
from lighteval_like.models.transformers.generation import prefix_groups
from lighteval_like.results.record import text_hash

PLACEHOLDER, IMAGE_TOKENS = 7, 4


class PlaceholderEncoder(PromptEncoder):
    """A fake image-capable encoder: characters are tokens, an image is IMAGE_TOKENS placeholder ids
    (the same ids for every image, as a VLM's processor expands its image token)."""

    max_length = 512

    def encode(self, text: str) -> list[int]:
        return [100 + ord(c) for c in text]

    def item(self, request: LoglikelihoodRequest) -> ScoreItem:
        tokens, media = [], []
        for part in (p for t in request.prompt.turns for p in t.parts):
            if isinstance(part, TextPart):
                tokens += self.encode(part.text)
            else:
                media.append((len(tokens), len(tokens) + IMAGE_TOKENS, part.digest))
                tokens += [PLACEHOLDER] * IMAGE_TOKENS
        targets = self.encode(request.continuation)
        whole = tokens + targets
        return ScoreItem(tuple(whole[:-1]), len(tokens) - 1, tuple(targets), tuple(media))


def _image_request(store: MediaStore, pixels: bytes) -> LoglikelihoodRequest:
    turn = Turn("user", (TextPart("Look: "), store.put(pixels), TextPart(" Is it red?")))
    return LoglikelihoodRequest(Prompt((turn,), chat=True), " yes")


def test_plain_prompt_identity_is_the_string_requests_carried_before():
    request = LoglikelihoodRequest("Question: 2+2?\nAnswer:", " 4")
    before = json.dumps(["LoglikelihoodRequest", {"context": "Question: 2+2?\nAnswer:", "continuation": " 4",
                                                  "single_token": False}], sort_keys=True, ensure_ascii=False)
    assert request.prompt == Prompt.plain("Question: 2+2?\nAnswer:")
    assert request_identity(request) == before
    chat = LoglikelihoodRequest(Prompt.from_messages([("user", "Question: 2+2?\nAnswer:")]), " 4")
    assert request_identity(chat) != before  # the same text under a chat template is another request
    generation = GenerationRequest("Q:", ("\n",), 8)
    assert json.loads(request_identity(generation))[1]["context"] == "Q:"


def test_two_images_behind_the_same_placeholders_are_two_requests_two_entries_no_shared_prefix(tmp_path):
    store = MediaStore()
    red, blue = _image_request(store, b"red pixels"), _image_request(store, b"blue pixels")
    again = _image_request(store, b"red pixels")
    assert len(store) == 2 and red.prompt.images != blue.prompt.images
    assert request_identity(red) != request_identity(blue) and red != blue
    assert request_identity(again) == request_identity(red) and len({red, blue, again}) == 2

    cache = ResponseCache(str(tmp_path), "fingerprint")
    cache.store([red, blue], [LoglikelihoodResponse(-1.0, True, 1), LoglikelihoodResponse(-2.0, False, 1)])
    cache.close()
    with sqlite3.connect(cache.main_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 2
    found = ResponseCache(str(tmp_path), "fingerprint").lookup([again, blue])
    assert found[again].logprob == -1.0 and found[blue].logprob == -2.0

    encoder = PlaceholderEncoder()
    a, b = encoder.item(red), encoder.item(blue)
    assert a.tokens == b.tokens and a.key != b.key  # the same ids, two different images
    text_before = len(encoder.encode("Look: "))
    [row] = pack_rows([a, b], row_tokens=1000)
    assert len(row.tokens) == text_before + 2 * (len(a.tokens) - text_before)  # shared up to the image only
    assert unique_tokens([a, b]) == len(row.tokens)
    groups = group_by_prefix([a, b] * 3, row_tokens=8, min_prefix=2)
    assert all(len(g.prefix) <= text_before for g in groups)
    [same] = pack_rows([a, encoder.item(again)], row_tokens=1000)
    assert len(same.tokens) == len(a.tokens)  # the same image: one path, fully shared


def test_image_part_renders_as_a_content_list_for_chat_templates():
    prompt = Prompt((Turn("user", (ImagePart("d1"), TextPart("What is it?"))),), chat=True)
    assert prompt.messages() == [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    assert prompt.images == ("d1",) and not prompt.is_plain


def test_prompt_hash_tells_two_images_apart_and_is_the_rendered_text_without_images():
    store = MediaStore()
    red, blue = _image_request(store, b"red pixels"), _image_request(store, b"blue pixels")

    def sample(request) -> Sample:
        return Sample("lmms|toy|0", 0, 1234, Doc("Is it red?", ["yes"], 0), ["Look: <image> Is it red?"], [request], 0)

    assert text_hash(prompt_texts([sample(red)])) != text_hash(prompt_texts([sample(blue)]))
    plain = sample(LoglikelihoodRequest("Look: <image> Is it red?", " yes"))
    assert list(prompt_texts([plain])) == ["Look: <image> Is it red?"]  # text-only runs hash as before


def test_generation_prefix_groups_never_share_an_image_they_do_not_both_show():
    def prompt(text_tokens: int, digest: str) -> EnginePrompt:
        ids = list(range(100, 100 + text_tokens)) + [PLACEHOLDER] * IMAGE_TOKENS + list(range(200, 230))
        return EnginePrompt(ids, False, 8, ((text_tokens, text_tokens + IMAGE_TOKENS, digest),))

    short = [prompt(10, "red"), prompt(10, "blue"), prompt(10, "red")]  # 10 text tokens: too few to share alone
    shared = {tuple(sorted(g.members)): len(g.prefix) for g in prefix_groups(short)}
    assert shared == {(0, 2): len(short[0].ids) - 1, (1,): 0}  # the same image: all but the last token
    long = [prompt(20, "red"), prompt(20, "blue")]
    assert [len(g.prefix) for g in prefix_groups(long)] == [20]  # shared up to the image, not into it
