"""IFEval's verifiable instructions (Zhou et al. 2023), one checker per instruction id of the
dataset, and the validation of each dataset row's instruction arguments.

Each checker answers whether a response follows one instruction, as the paper defines it and as the
authors' scorer judges it (a checker is called on a non-blank response; blank ones never follow).
Keyword arguments are the dataset's `kwargs` for the instruction, None values dropped (the hub's
rows carry every argument name, null where unused); a row whose instruction id is unknown or whose
arguments are missing, unexpected or of the wrong kind is refused by `validate`, naming the id.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from lighteval_like.tasks.ifeval_text import detect_language, sentences, word_count, word_tokens

RELATIONS = ("less than", "at least")
# Languages a `language:response_language` row may ask for (ISO 639-1, as langdetect reports them).
LANGUAGES = frozenset("en es pt ar hi fr ru de ja it bn uk th ur ta te bg ko pl he fa vi ne sw kn mr gu pa ml fi".split())
ANSWER_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")
JSON_FENCES = ("```json", "```Json", "```JSON", "```")


def _compare(count: int, relation: str, threshold: int) -> bool:
    return count < threshold if relation == "less than" else count >= threshold


def _english(text: str) -> bool:
    """langdetect says English, or cannot tell (the reference then gives the benefit of the doubt)."""
    return detect_language(text) in ("en", None)


# ------------------------------------------------------------------ keywords


def keywords_existence(text: str, keywords: list[str]) -> bool:
    return all(re.search(re.escape(k), text, flags=re.IGNORECASE) for k in keywords)


def keywords_frequency(text: str, keyword: str, frequency: int, relation: str) -> bool:
    found = len(re.findall(re.escape(keyword.strip()), text, flags=re.IGNORECASE))
    return _compare(found, relation, frequency)


def forbidden_words(text: str, forbidden_words: list[str]) -> bool:
    return not any(re.search(rf"\b{re.escape(w)}\b", text, flags=re.IGNORECASE) for w in forbidden_words)


def letter_frequency(text: str, letter: str, let_frequency: int, let_relation: str) -> bool:
    return _compare(text.lower().count(letter.strip().lower()), let_relation, let_frequency)


# ------------------------------------------------------------------ language and case


def response_language(text: str, language: str) -> bool:
    found = detect_language(text)
    return found is None or found == language


def english_capital(text: str) -> bool:
    return text.isupper() and _english(text)


def english_lowercase(text: str) -> bool:
    return text.islower() and _english(text)


def capital_word_frequency(text: str, capital_frequency: int, capital_relation: str) -> bool:
    capitals = sum(token.isupper() for token in word_tokens(text))
    return _compare(capitals, capital_relation, capital_frequency)


# ------------------------------------------------------------------ length


def number_words(text: str, num_words: int, relation: str) -> bool:
    return _compare(word_count(text), relation, num_words)


def number_sentences(text: str, num_sentences: int, relation: str) -> bool:
    return _compare(len(sentences(text)), relation, num_sentences)


def _pieces_between(text: str, separator: str) -> list[str] | None:
    """The pieces of `text` between separators; None when a piece inside is blank (blank pieces at
    either end are dropped)."""
    parts = re.split(separator, text)
    inner = [p for i, p in enumerate(parts) if p.strip() or i in (0, len(parts) - 1)]
    if len(inner) != len(parts):
        return None
    return [p for p in parts if p.strip()]


def number_paragraphs(text: str, num_paragraphs: int) -> bool:
    """Paragraphs separated by the markdown divider `***`."""
    paragraphs = _pieces_between(text, r"\s?\*\*\*\s?")
    return paragraphs is not None and len(paragraphs) == num_paragraphs


def _first_word(paragraph: str) -> str:
    """The paragraph's first word, lowercased: leading quotes dropped, cut at punctuation."""
    word = paragraph.split()[0].lstrip("'").lstrip('"')
    return re.split(r"[.,?!'\"]", word, maxsplit=1)[0].lower()


def nth_paragraph_first_word(text: str, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    """Paragraphs separated by blank lines: exactly `num_paragraphs` of them, the nth starting with
    `first_word`."""
    parts = text.split("\n\n")
    count = sum(bool(p.strip()) for p in parts)
    if nth_paragraph > count or not parts[nth_paragraph - 1].strip():
        return False
    return count == num_paragraphs and _first_word(parts[nth_paragraph - 1].strip()) == first_word.lower()


# ------------------------------------------------------------------ content and format


def number_placeholders(text: str, num_placeholders: int) -> bool:
    return len(re.findall(r"\[.*?\]", text)) >= num_placeholders


def postscript(text: str, postscript_marker: str) -> bool:
    """A line holding the marker (P.S. and P.P.S also written with spaces after the dots)."""
    marker = postscript_marker.strip()
    pattern = {"P.P.S": r"p\.\s?p\.\s?s", "P.S.": r"p\.\s?s\."}.get(marker, re.escape(marker.lower()))
    return re.search(pattern, text.lower()) is not None


def constrained_response(text: str) -> bool:
    return any(option in text.strip() for option in ANSWER_OPTIONS)


def json_format(text: str) -> bool:
    """The whole response is JSON, optionally inside a markdown code fence."""
    body = text.strip()
    for fence in JSON_FENCES:
        body = body.removeprefix(fence)
    try:
        json.loads(body.removesuffix("```").strip())
    except ValueError:
        return False
    return True


def multiple_sections(text: str, section_spliter: str, num_sections: int) -> bool:
    """At least `num_sections` headers '<splitter> <number>'."""
    headers = re.findall(rf"\s?{re.escape(section_spliter.strip())}\s?\d+\s?", text)
    return len(headers) >= num_sections


def number_bullet_lists(text: str, num_bullets: int) -> bool:
    """Exactly `num_bullets` markdown bullet lines ('* item' or '- item')."""
    stars = re.findall(r"^\s*\*[^\*].*$", text, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", text, flags=re.MULTILINE)
    return len(stars) + len(dashes) == num_bullets


def number_highlighted_sections(text: str, num_highlights: int) -> bool:
    """At least `num_highlights` non-empty *highlighted* spans (a **bold** span counts too)."""
    single = [h for h in re.findall(r"\*[^\n\*]*\*", text) if h.strip("*").strip()]
    double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", text) if h[2:-2].strip()]
    return len(single) + len(double) >= num_highlights


def title(text: str) -> bool:
    """A non-empty title in double angular brackets, <<like this>>."""
    return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", text))


def two_responses(text: str) -> bool:
    """Two different responses separated by six asterisks."""
    answers = _pieces_between(text, re.escape("******"))
    return answers is not None and len(answers) == 2 and answers[0].strip() != answers[1].strip()


def repeat_prompt(text: str, prompt_to_repeat: str) -> bool:
    return text.strip().lower().startswith(prompt_to_repeat.strip().lower())


def end_checker(text: str, end_phrase: str) -> bool:
    return text.strip().strip('"').lower().endswith(end_phrase.strip().lower())


def quotation(text: str) -> bool:
    body = text.strip()
    return len(body) > 1 and body[0] == '"' and body[-1] == '"'


def no_comma(text: str) -> bool:
    return "," not in text


# ------------------------------------------------------------------ the table and its validation


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


KINDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "count": (_is_count, "a whole number >= 0"),
    "position": (lambda v: _is_count(v) and v >= 1, "a whole number >= 1"),
    "relation": (lambda v: v in RELATIONS, f"one of {', '.join(map(repr, RELATIONS))}"),
    "text": (lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty string"),
    "words": (lambda v: isinstance(v, list) and bool(v) and all(isinstance(w, str) and w.strip() for w in v),
              "a non-empty list of non-empty strings"),
    "language": (lambda v: v in LANGUAGES, f"an ISO 639-1 code among {', '.join(sorted(LANGUAGES))}"),
    "letter": (lambda v: isinstance(v, str) and len(v.strip()) == 1, "a single character"),
}


@dataclass(frozen=True)
class Instruction:
    """One instruction id: its checker and the kind of each of its arguments (all required)."""

    check: Callable[..., bool]
    arguments: dict[str, str]


INSTRUCTIONS: dict[str, Instruction] = {
    "keywords:existence": Instruction(keywords_existence, {"keywords": "words"}),
    "keywords:frequency": Instruction(keywords_frequency, {"keyword": "text", "frequency": "count", "relation": "relation"}),
    "keywords:forbidden_words": Instruction(forbidden_words, {"forbidden_words": "words"}),
    "keywords:letter_frequency": Instruction(
        letter_frequency, {"letter": "letter", "let_frequency": "count", "let_relation": "relation"}),
    "language:response_language": Instruction(response_language, {"language": "language"}),
    "change_case:english_capital": Instruction(english_capital, {}),
    "change_case:english_lowercase": Instruction(english_lowercase, {}),
    "change_case:capital_word_frequency": Instruction(
        capital_word_frequency, {"capital_frequency": "count", "capital_relation": "relation"}),
    "length_constraints:number_words": Instruction(number_words, {"num_words": "count", "relation": "relation"}),
    "length_constraints:number_sentences": Instruction(
        number_sentences, {"num_sentences": "count", "relation": "relation"}),
    "length_constraints:number_paragraphs": Instruction(number_paragraphs, {"num_paragraphs": "count"}),
    "length_constraints:nth_paragraph_first_word": Instruction(
        nth_paragraph_first_word, {"num_paragraphs": "count", "nth_paragraph": "position", "first_word": "text"}),
    "detectable_content:number_placeholders": Instruction(number_placeholders, {"num_placeholders": "count"}),
    "detectable_content:postscript": Instruction(postscript, {"postscript_marker": "text"}),
    "detectable_format:constrained_response": Instruction(constrained_response, {}),
    "detectable_format:json_format": Instruction(json_format, {}),
    "detectable_format:multiple_sections": Instruction(
        multiple_sections, {"section_spliter": "text", "num_sections": "count"}),
    "detectable_format:number_bullet_lists": Instruction(number_bullet_lists, {"num_bullets": "count"}),
    "detectable_format:number_highlighted_sections": Instruction(number_highlighted_sections, {"num_highlights": "count"}),
    "detectable_format:title": Instruction(title, {}),
    "combination:two_responses": Instruction(two_responses, {}),
    "combination:repeat_prompt": Instruction(repeat_prompt, {"prompt_to_repeat": "text"}),
    "startend:end_checker": Instruction(end_checker, {"end_phrase": "text"}),
    "startend:quotation": Instruction(quotation, {}),
    "punctuation:no_comma": Instruction(no_comma, {}),
}


def validate(instruction_id: object, kwargs: object) -> dict:
    """The instruction's arguments (None values dropped), or ValueError naming the id and what is
    wrong: an unknown id, or arguments missing, unexpected or of the wrong kind."""
    if instruction_id not in INSTRUCTIONS:
        close = difflib.get_close_matches(str(instruction_id), list(INSTRUCTIONS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown instruction id {instruction_id!r} ({hint}IFEval has {len(INSTRUCTIONS)}: "
                         "see lighteval_like.tasks.ifeval_instructions.INSTRUCTIONS)")
    if not isinstance(kwargs, dict):
        raise ValueError(f"instruction {instruction_id!r}: kwargs must be a mapping, got {kwargs!r}")
    given = {k: v for k, v in kwargs.items() if v is not None}
    expected = INSTRUCTIONS[instruction_id].arguments
    for name, kind in expected.items():
        accepts, wanted = KINDS[kind]
        if name not in given:
            raise ValueError(f"instruction {instruction_id!r}: kwargs lack {name!r} ({wanted})")
        if not accepts(given[name]):
            raise ValueError(f"instruction {instruction_id!r}: kwargs {name}={given[name]!r} is not {wanted}")
    unexpected = sorted(set(given) - set(expected))
    if unexpected:
        raise ValueError(f"instruction {instruction_id!r}: unexpected kwargs {', '.join(unexpected)} "
                         f"(it takes {', '.join(expected) or 'none'})")
    return given


def follows(instruction_id: str, kwargs: dict, text: str) -> bool:
    """Whether the (non-blank) text follows the instruction with these validated arguments."""
    return bool(text.strip()) and INSTRUCTIONS[instruction_id].check(text, **kwargs)
