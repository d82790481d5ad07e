"""Answer parsing of lmms-eval 0.7.3's single-image tasks, reimplemented from its conventions.

- `option_letter`: its shared multiple-choice extractor (`mcq_extract`, used by MMStar and
  RealWorldQA): a letter found in several formats, the most telling format winning (a bare letter
  at the start, then at the end, then after an answer phrase, in parentheses, before a period, a
  colon, a closing parenthesis, a space; any occurrence only when nothing else matched), the last
  occurrence within a format; "" when no letter occurs.
- `scienceqa_correct`: LLaVA's ScienceQA check (the whole answer is the letter, or it starts
  with an upper-case letter and a period).
- `ai2d_correct`: a leading "X." reduced to its letter, then exact match ignoring case and
  punctuation (lm-eval's `exact_match` options).
- `relaxed_correct`: ChartQA's relaxed accuracy (numbers within 5% of a non-zero gold, a
  trailing % read as a fraction; otherwise case-insensitive equality).
"""

from __future__ import annotations

import re
import string

_EDGE_PUNCTUATION = (",", ".", "!", "?", ";", ":", "'", '"')
_ANSWER_PHRASES = (
    "the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
    "best answer is", "the correct option is", "correct option is", "the best option is", "best option is",
    "the choice is", "choice is", "the correct choice is", "correct choice is", "i choose", "i select", "i pick",
    "my answer is", "my choice is", "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは",
)
# A format's rank (higher wins) and the text that marks a letter in it.
_MARKED_FORMATS = ((6, "({})"), (5, "{}."), (4, "{}:"), (3, "{})"), (2, "{} "))
_START, _END, _PHRASE, _ANYWHERE = 10, 9, 7, 0


def _strip_edges(text: str, characters) -> str:
    """Strips each of `characters` from both ends, one after the other (as lmms-eval does)."""
    for character in characters:
        text = text.strip(character)
    return text


def _letter_candidates(text: str, letters) -> list[tuple[int, int, str]]:
    """(rank, position, letter) of every format a letter appears in (`text` padded with spaces)."""
    found = [(rank, text.rfind(mark.format(c)), c) for rank, mark in _MARKED_FORMATS for c in letters
             if mark.format(c) in text]
    lower = text.lower()
    for phrase in _ANSWER_PHRASES:
        at = lower.find(phrase)
        if at != -1:
            found += [(_PHRASE, text.find(c, at + len(phrase)), c) for c in letters
                      if text.find(c, at + len(phrase)) != -1]
    bare = text.strip()
    found += [(_START, 0, c) for c in letters if bare.startswith(c) and (len(bare) == 1 or not bare[1].isalpha())]
    found += [(_END, len(text) - 1, c) for c in letters
              if bare.endswith(c) and (len(bare) == 1 or not bare[-2].isalpha())]
    return found


def option_letter(response: str, letters=("A", "B", "C", "D")) -> str:
    """The option letter a free-form answer gives, or "" (lmms-eval's `extract_mcq_answer`)."""
    if not response or not response.strip():
        return ""
    text = " " + _strip_edges(response.strip(), _EDGE_PUNCTUATION) + " "
    found = _letter_candidates(text, letters)
    if not found:
        found = [(_ANYWHERE, text.rfind(c), c) for c in letters if c in text]
    # the best rank, then the last position; among equals the first found (a stable sort's first)
    return max(found, key=lambda f: (f[0], f[1]))[2] if found else ""


def scienceqa_correct(response: str, gold_letter: str) -> bool:
    answer, gold = response.strip(), gold_letter.strip().lower()
    if answer.lower() == gold:
        return True
    return len(answer) >= 2 and answer[0].isupper() and answer[1] == "." and answer[0].lower() == gold


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def ai2d_correct(response: str, gold_letter: str) -> bool:
    leading = re.match(r"^\s*([A-Z])\.", response)
    answer = leading.group(1) if leading else response
    return answer.lower().translate(_PUNCTUATION) == gold_letter.lower().translate(_PUNCTUATION)


def _number(text: str) -> float | None:
    try:
        return float(text.rstrip("%")) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        return None


def relaxed_correct(response: str, gold: str, tolerance: float = 0.05) -> bool:
    """ChartQA's relaxed accuracy (Methani et al.): within `tolerance` of a numeric, non-zero gold."""
    predicted, target = _number(response), _number(gold)
    if predicted is not None and target:
        return abs(predicted - target) / abs(target) <= tolerance
    return response.lower() == gold.lower()
