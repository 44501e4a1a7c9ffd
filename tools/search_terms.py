"""Words and index terms of the local search: one tokenizer for documents and queries alike.

Owns how text becomes BM25 terms: lower-cased runs of letters and digits
(Unicode-aware, so 東京 or naïve are words), diacritics folded (café ->
cafe), then the Porter stem (cafés -> cafe, connections -> connect), which
is what SQLite FTS5's `porter unicode61 remove_diacritics 2` tokenizer
produced for the earlier index. Also owns which query words are searched:
English function words are dropped unless nothing else is left.
"""

import functools
import re
import unicodedata

from tools.porter_stemmer import stem

MAX_QUERY_TERMS = 32
# English function words match most documents; dropping them keeps queries fast and sharp.
STOPWORDS = frozenset(
    "a an and are as at be been but by did do does for from had has have how i in is it its of on or "
    "that the their there these this those to was were what when where which who whom whose why will "
    "with you your".split())
_WORD = re.compile(r"[^\W_]+")
_ASCII_WORD = re.compile(r"[a-z0-9]+")  # the same words in lower-case ASCII text, found twice as fast
# Combining marks left by canonical decomposition (é -> e + U+0301): the diacritics to fold away.
_COMBINING_MARKS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


def fold(text: str) -> str:
    """Lower-case text with diacritics removed (ASCII text is only lower-cased).

    >>> fold("Café NAÏVE Ångström")
    'cafe naive angstrom'
    """
    text = text.lower()
    if text.isascii():
        return text
    return _COMBINING_MARKS.sub("", unicodedata.normalize("NFD", text))


def words(text: str) -> list[str]:
    """The folded words of a text, in order, repeats kept (what the index counts)."""
    folded = fold(text)
    return (_ASCII_WORD if folded.isascii() else _WORD).findall(folded)


@functools.lru_cache(maxsize=1 << 16)
def term(word: str) -> str:
    """The index term of one word: folded, then stemmed.

    >>> [term(w) for w in ("Cafés", "connections", "東京")]
    ['cafe', 'connect', '東京']
    """
    return stem(fold(word))


def query_terms(query: str) -> list[str]:
    """The searchable words of free text: lower-cased letter/digit runs, function words dropped.

    Operators and quotes mean nothing here: every word of any text is just a word.

    >>> query_terms("What is the capital of Japan?")
    ['capital', 'japan']
    """
    found = list(dict.fromkeys(word.lower() for word in _WORD.findall(query)))
    content_words = [word for word in found if word not in STOPWORDS]
    return (content_words or found)[:MAX_QUERY_TERMS]
