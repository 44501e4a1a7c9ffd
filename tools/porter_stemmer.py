"""The Porter stemmer (M. F. Porter, 1980), as SQLite's FTS5 `porter` tokenizer applies it.

Owns one function, `stem(word)`: a lower-case ASCII word -> its stem
("connections" -> "connect", "ponies" -> "poni"). It follows Porter's own
reference implementation, including its two published departures from the
paper (-bli -> -ble, -logi -> -log), which FTS5 makes too. Words of one or
two letters, of more than 64, or with non-ASCII letters are returned unchanged
(digits count as consonants, as in FTS5).
tests/test_search_index.py checks it against FTS5's tokenizer word by word.
Pure Python; the search index calls it once per distinct word (memoised).
"""

MAX_WORD = 64  # FTS5 leaves longer tokens as they are
# Each letter as v(owel) or c(onsonant); y is decided by its left neighbour in `_pattern`.
_KINDS = str.maketrans({chr(code): "v" if chr(code) in "aeiou" else "y" if chr(code) == "y" else "c"
                        for code in range(128)})

_STEP2 = (("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"), ("izer", "ize"),
          ("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous"),
          ("ization", "ize"), ("ation", "ate"), ("ator", "ate"), ("alism", "al"), ("iveness", "ive"),
          ("fulness", "ful"), ("ousness", "ous"), ("aliti", "al"), ("iviti", "ive"), ("biliti", "ble"),
          ("logi", "log"))
_STEP3 = (("icate", "ic"), ("ative", ""), ("alize", "al"), ("iciti", "ic"), ("ical", "ic"), ("ful", ""),
          ("ness", ""))
_STEP4 = ("al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "ion", "ou", "ism",
          "ate", "iti", "ous", "ive", "ize")


def _pattern(word: str) -> str:
    """The word as v/c letters: y is a consonant first or after a vowel, else a vowel ("toy" -> "cvc")."""
    kinds = word.translate(_KINDS)
    if "y" not in kinds:
        return kinds
    letters = list(kinds)
    for i, kind in enumerate(letters):
        if kind == "y":
            letters[i] = "v" if i and letters[i - 1] == "c" else "c"
    return "".join(letters)


def _measure(word: str) -> int:
    """m in [C](VC)^m[V]: how many vowel-consonant sequences the word has."""
    return _pattern(word).count("vc")


def _has_vowel(word: str) -> bool:
    return "v" in _pattern(word)


def _double_consonant(word: str) -> bool:
    return len(word) >= 2 and word[-1] == word[-2] and _pattern(word)[-1] == "c"


def _cvc(word: str) -> bool:
    """Ends consonant-vowel-consonant, the last not w, x or y (e.g. -hop, -fil)."""
    return len(word) >= 3 and _pattern(word).endswith("cvc") and word[-1] not in "wxy"


def _replace(word: str, rules, minimum_measure: int) -> str:
    """The first rule whose suffix ends the word decides: replaced when the stem's measure allows."""
    for suffix, replacement in rules:
        if word.endswith(suffix):
            stem = word[:-len(suffix)]
            return stem + replacement if _measure(stem) > minimum_measure else word
    return word


def _ends(word: str, suffix: str) -> bool:
    """The word ends with the suffix and has something before it (FTS5 never strips a whole word)."""
    return len(word) > len(suffix) and word.endswith(suffix)


def _step1(word: str) -> str:
    if word.endswith("s"):
        if _ends(word, "sses") or _ends(word, "ies"):
            word = word[:-2]
        elif not word.endswith("ss"):
            word = word[:-1]
    if _ends(word, "eed"):
        return word[:-1] if _measure(word[:-3]) > 0 else word
    for suffix in ("ed", "ing"):
        if _ends(word, suffix) and _has_vowel(word[:-len(suffix)]):
            word = word[:-len(suffix)]
            if word.endswith(("at", "bl", "iz")):
                return word + "e"
            if _double_consonant(word) and word[-1] not in "lsz":
                return word[:-1]
            if _measure(word) == 1 and _cvc(word):
                return word + "e"
            return word
    return word


def _step4(word: str) -> str:
    for suffix in _STEP4:
        if word.endswith(suffix):
            stem = word[:-len(suffix)]
            if suffix == "ion" and not stem.endswith(("s", "t")):
                return word
            return stem if _measure(stem) > 1 else word
    return word


def _step5(word: str) -> str:
    if word.endswith("e"):
        measure = _measure(word[:-1])
        if measure > 1 or (measure == 1 and not _cvc(word[:-1])):
            word = word[:-1]
    if word.endswith("ll") and _measure(word) > 1:
        word = word[:-1]
    return word


def stem(word: str) -> str:
    """The Porter stem of a lower-case word; unchanged when short, very long or not ASCII.

    >>> [stem(w) for w in ("caresses", "ponies", "relational", "hopping", "generalizations", "sky", "2000s")]
    ['caress', 'poni', 'relat', 'hop', 'gener', 'sky', '2000']
    """
    if not 2 < len(word) <= MAX_WORD or not word.isascii():
        return word
    word = _step1(word)
    if len(word) <= 1:
        return word
    if word.endswith("y") and _has_vowel(word[:-1]):
        word = word[:-1] + "i"
    word = _replace(word, _STEP2, 0)
    word = _replace(word, _STEP3, 0)
    return _step5(_step4(word))


