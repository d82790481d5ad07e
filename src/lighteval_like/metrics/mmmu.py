"""MMMU's answer parsing and scoring, as lmms-eval 0.7.3 runs the official MMMU evaluation code
(reimplemented from its conventions).

- Multiple choice (`choice_answer`): the edge punctuation stripped, then the first of these that
  finds letters: "(X)", "X " (a space after), "X."; for an answer of more than 5 words, an option's
  text within it. Several candidates: the last one in the answer. None: a random letter. lmms-eval
  draws it from Python's process-wide `random` (seeded 0 once per run), so the draw depends on every
  draw before it; here it is `random.Random(seed)` with the question's id as seed: the same letter
  whatever the order, batch or resume (it can differ from lmms-eval's draw for the same question).
- Open questions (`open_answers`): per line, the shortest tail after a key phrase ("so ", "is ",
  "therefore ", "answer ", ..., and "=" on the last line), or the whole answer; plus every number
  in them; each normalised (numbers as floats rounded to 2 places, text lower-cased, a single
  character padded with a space so it cannot match inside a word). `open_correct`: a number equal
  to a gold number, or a gold text contained in a predicted text.
"""

from __future__ import annotations

import random
import re

_EDGE_PUNCTUATION = (",", ".", "!", "?", ";", ":", "'")
_KEY_PHRASES = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")
_TRIVIAL = {":", ",", ".", "!", "?", ";", "'"}
_NUMBER_PATTERNS = (
    r"-?\b\d{1,3}(?:,\d{3})+\b",  # with thousands separators
    r"-?\d+(?:\.\d+)?[eE][+-]?\d+",  # scientific notation
    r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])",  # plain
)


def option_letters(options: list[str]) -> list[str]:
    return [chr(ord("A") + i) for i in range(len(options))]


def _letter_candidates(padded: str, letters: list[str], options: list[str]) -> tuple[list[str], str]:
    """Candidate letters and how they were found: "bracket", "letter" or "text"."""
    found = [c for c in letters if f"({c})" in padded]
    if found:
        return found, "bracket"
    found = [c for c in letters if f"{c} " in padded] or [c for c in letters if f"{c}." in padded]
    if found:
        return found, "letter"
    if len(padded.split()) > 5:
        return [c for c, text in zip(letters, options) if text.lower() in padded.lower()], "text"
    return [], "letter"


def choice_answer(response: str, options: list[str], seed: str) -> str:
    """The option letter an answer gives (MMMU's `parse_multi_choice_response`)."""
    letters = option_letters(options)
    text = response
    for character in _EDGE_PUNCTUATION:
        text = text.strip(character)
    padded = f" {text} "
    found, how = _letter_candidates(padded, letters, options)
    if not found:
        return random.Random(seed).choice(letters)
    if len(found) == 1:
        return found[0]
    by_letter = dict(zip(letters, options))
    positions = [padded.rfind(f"({c})") if how == "bracket" else padded.rfind(f" {c} ") if how == "letter"
                 else padded.lower().rfind(by_letter[c].lower()) for c in found]
    return found[positions.index(max(positions))]


def normalise(text: str) -> list:
    """A number as [its float rounded to 2 places]; text lower-cased, a single character padded."""
    text = text.strip()
    try:
        return [round(float(text.replace(",", "")), 2)]
    except ValueError:
        pass
    text = text.lower()
    return [" " + text, text + " "] if len(text) == 1 else [text]


def _shortest_tail(line: str, phrases: tuple[str, ...]) -> str | None:
    """The shortest text after the last occurrence of a key phrase (an empty one yields to the next)."""
    shortest = None
    for phrase in phrases:
        if phrase in line:
            tail = line.split(phrase)[-1].strip()
            if not shortest or len(tail) < len(shortest):
                shortest = tail
    return shortest


def _key_answers(response: str) -> list[str]:
    text = response.strip().strip(".").lower()
    lines = re.split(r"\.\s(?=[A-Z])|\n", text)  # lower-cased first, so in effect a split at new lines
    keys = []
    for i, line in enumerate(lines):
        tail = _shortest_tail(line, _KEY_PHRASES + (("=",) if i == len(lines) - 1 else ()))
        if tail and tail.strip() not in _TRIVIAL:
            keys.append(tail)
    return keys or [text]


def open_answers(response: str) -> list:
    """An open answer's normalised candidates (MMMU's `parse_open_response`)."""
    keys = _key_answers(response)
    candidates = keys + [n for key in keys for pattern in _NUMBER_PATTERNS for n in re.findall(pattern, key)]
    return list(dict.fromkeys(value for c in candidates for value in normalise(c)))


def open_correct(gold: str, predicted: list) -> bool:
    golds = normalise(gold)
    for value in predicted:
        if isinstance(value, str):
            if any(isinstance(g, str) and g in value for g in golds):
                return True
        elif value in golds:
            return True
    return False
