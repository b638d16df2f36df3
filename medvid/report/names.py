"""Person names in free text by lexicon: UCSF Philter's name and non-name word sets (``philter-lite``).

Philter (Norgeot et al., npj Digital Medicine 2020) ships US census first and last names (≈ 97k + 161k) and a
≈ 195k-word list of words that are *not* names (medical and English vocabulary). Its own pipeline needs NLTK's
part-of-speech tagger, whose data is a download, so medvid uses the word sets alone (loaded once, ≈ 4 s) and
stands in for the tagger's "proper noun" with capitalisation and position:

* a **sure** word is in the name sets and not ordinary vocabulary (the non-name list, also after dropping an
  inflection: ``chambers`` → ``chamber``; plus a few echo words that are also surnames: ``vena``, ``PISA``);
* a **possible** word is a particle (``van der``, ``de la``), an initial (``J.``) or a word that is not ordinary
  vocabulary (``Rose``, ``Nek-Dachgelt``); after a particle or an initial any word is the surname (``van Es``);
* a run of adjacent possible words (one space or ``", "`` between them, on one line) is a name when it holds an
  initial followed by a word, or two or more words one of them sure (``DOE JOHN``, ``alison parsons`` needs
  both sure), or is one capitalised sure word that does not start a sentence (``with Kim``, not ``Short axis``).

``is_common_word`` lets context rules refuse ordinary words (``Tech: Difficult windows``).
"""
from __future__ import annotations

import re
import unicodedata
from functools import cache

PARTICLES = frozenset("van von der den de del della di da du des la le dos das ter ten bin ibn al el mac 't 's".split())
CREDENTIALS = frozenset("NP RN MD DO PA PA-C PHD RDCS RCS MBBS MBCHB FACC FASE FRCP MRCP CNP APRN BSC MSC".split())
# Words of echo reports that are also census names (never a name here unless a title or label says so).
_CLINICAL = frozenset("""aorta aortic apex apical atrium basal biplane cardiology cava doppler echo ejection ero fellow
grade lateral left mitral normal pisa plax psax pulmonic right saline septal short trace tricuspid valve vena ventricle
""".split())
_TOKEN = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*(?:\d{1,3}\b)?\.?")
_INFLECTIONS = ("ies", "es", "s", "ed", "ing", "ly")
_LONGEST = 40  # longer "words" are not names (and would make hostile text slow)


@cache
def _lexicon() -> tuple[frozenset[str], frozenset[str]]:
    """(name words, non-name words), lower-case ASCII."""
    from philter_lite.filters.filter_db import set_db

    return frozenset(set_db["firstnames"]) | frozenset(set_db["lastnames"]), frozenset(set_db["nonames"]) | _CLINICAL


def _fold(word: str) -> str:
    return unicodedata.normalize("NFKD", word).encode("ascii", "ignore").decode().lower()


def _ordinary(part: str) -> bool:
    """A non-name word, or one inflected from a non-name word (``frames``, ``measured``)."""
    _, common = _lexicon()
    return part in common or any(part.endswith(e) and len(part) - len(e) >= 3 and (part[:-len(e)] in common
                                 or part[:-len(e)] + ("y" if e == "ies" else "e") in common) for e in _INFLECTIONS)


def is_common_word(word: str) -> bool:
    """Ordinary vocabulary that is not a name (every part of a hyphenated word)."""
    return all(_ordinary(p) for p in re.split(r"['’-]", _fold(word.rstrip("."))) if p)


def is_sure_name(word: str) -> bool:
    """In the name sets and not ordinary vocabulary (any part: ``Bud-Dubois``, ``O'Connor``)."""
    names, _ = _lexicon()
    folded = _fold(word.rstrip("."))
    keys = [folded.replace("'", "").replace("’", ""), *re.split(r"['’-]", folded)]
    return any(k in names and not _ordinary(k) for k in keys if k)


def is_user_id(word: str) -> bool:
    """A lower-case login: a sure surname and digits (``parsons12``)."""
    alpha = word.rstrip("0123456789")
    return alpha != word and alpha.isascii() and alpha.islower() and len(alpha) >= 3 and is_sure_name(alpha)


def _initial(word: str) -> bool:
    return len(word) == 2 and word[0].isupper() and word.endswith(".")


def _name_part(word: str) -> bool:
    """A particle, an initial or a word that is neither ordinary vocabulary nor a credential."""
    bare = word.rstrip(".")
    if _fold(bare) in PARTICLES or _initial(word):
        return True
    return len(bare) > 1 and bare.upper() not in CREDENTIALS and not is_common_word(bare)


def _is_name(text: str, run: list[re.Match[str]]) -> bool:
    words = [m.group(0).rstrip(".") for m in run if _fold(m.group(0)) not in PARTICLES and not _initial(m.group(0))]
    if any(_initial(m.group(0)) for m in run[:-1]):
        return bool(words)
    sure = [w for w in words if is_sure_name(w)]
    if len(words) >= 2:
        return len(sure) >= (2 if all(w.islower() for w in words) else 1)
    before = text[:run[0].start()].rstrip(" \t")
    starts_sentence = not before or before[-1] in ".:;!?\n"
    return bool(sure) and sure[0][0].isupper() and not sure[0].isupper() and not starts_sentence


def name_spans(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, "NAME" | "ID")`` spans of the names (see the module) and user IDs in ``text``."""
    spans: list[tuple[int, int, str]] = []
    run: list[re.Match[str]] = []

    def close() -> None:
        while run and _fold(run[-1].group(0)) in PARTICLES:
            run.pop()
        if run and _is_name(text, run):
            spans.append((run[0].start(), _end(run[-1]), "NAME"))
        run.clear()

    for m in _TOKEN.finditer(text):
        word = m.group(0)
        if len(word) > _LONGEST:
            close()
            continue
        if is_user_id(word.rstrip(".")):
            close()
            spans.append((m.start(), _end(m), "ID"))
            continue
        if run and not re.fullmatch(r" |, ?", text[_end(run[-1]):m.start()]):
            close()
        after_particle = run and (_fold(run[-1].group(0)) in PARTICLES or _initial(run[-1].group(0)))
        if after_particle or _name_part(word) or is_sure_name(word):
            run.append(m)
        else:
            close()
    close()
    return spans


def _end(m: re.Match[str]) -> int:
    """A word's end, without a sentence's full stop (an initial keeps its dot)."""
    return m.end() - 1 if m.group(0).endswith(".") and not _initial(m.group(0)) else m.end()


__all__ = ["CREDENTIALS", "PARTICLES", "is_common_word", "is_sure_name", "is_user_id", "name_spans"]
