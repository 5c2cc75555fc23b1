"""Text folded to the form a reader sees, so a check cannot be stepped around by spelling.

A person (and a model) reads ``ＩＧＮＯＲＥ``, ``ig\u200bnore``, ``ignоre`` (a Cyrillic
``о``) and ``ignore   previous`` as the words they look like. ``fold`` maps text to that
reading, character by character:

1. compatibility decomposition (NFKD: fullwidth and styled letters, ligatures,
   precomposed accents split from their letter);
2. marks, format characters (zero-width space and joiners, bidi controls, soft
   hyphen, tags), controls, private-use, unassigned code points and the blank
   fillers that render as nothing are removed: a diacritic or an invisible
   character does not make another word;
3. each non-ASCII letter mapped to the ASCII character Unicode's confusables data
   (UTS #39, from the ``confusable-homoglyphs`` package) says it looks like, as
   written and then in lower case (Cyrillic ``р`` to ``p``, Greek ``Ν`` to ``n``,
   ``ν`` to ``v``); a Latin letter outside ASCII with no such entry, or whose
   entry is another Latin letter (``τ`` to small capital ``ᴛ``; ``ø``), becomes
   its base letter;
4. case folding;
5. every run of whitespace becomes one space, trimmed at both ends.

Two strings a reader cannot tell apart fold to the same text (the rules match
their patterns against it; reviewer names can be compared by it). The converse
does not hold: the fold is for matching and comparing, never for display or
storage. Known limits: ASCII look-alikes are left as they are (``l``/``I``,
``0``/``O``: folding them would change ordinary words and numbers), and a
letter that UTS #39 does not list as confusable with a Latin one stays itself.

Pure and thread-safe; per-character results are cached (bounded).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from confusable_homoglyphs import confusables

# Removed outright (general categories): nonspacing and enclosing marks, format
# characters, private use, surrogates, unassigned. Controls other than whitespace too.
_DROPPED_CATEGORIES = frozenset({"Mn", "Me", "Cf", "Co", "Cs", "Cn"})
# Letters and symbols that render blank but are not whitespace or format characters.
_BLANK = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e")
_LATIN_BASE = re.compile(
    r"LATIN (?:SMALL |CAPITAL )?LETTER (?:SMALL CAPITAL )?([A-Z])(?: WITH .+)?")
# ASCII controls that are not whitespace, removed on the all-ASCII fast path.
_ASCII_DROP = {code: None for code in (*range(0x20), 0x7F) if not chr(code).isspace()}


def fold(text: str) -> str:
    """``text`` as a reader sees it: see the module docstring for the steps."""
    if text.isascii():
        return " ".join(text.translate(_ASCII_DROP).lower().split())
    return " ".join("".join(map(_fold_char, text)).split())


@dataclass(frozen=True, slots=True)
class Folded:
    """A folded text that remembers where each of its characters came from, so a
    match in ``text`` can be shown to a person as the original wrote it."""

    original: str
    text: str
    sources: tuple[int, ...]  # for each character of ``text``, its index in ``original``

    def source(self, start: int, end: int) -> tuple[int, int]:
        """The span of ``original`` that folded to ``text[start:end]`` (``end > start``)."""
        return self.sources[start], self.sources[end - 1] + 1


def fold_mapped(text: str) -> Folded:
    """``fold(text)`` with its source positions (slower: use it once a match is found)."""
    out: list[str] = []
    sources: list[int] = []
    space_at: int | None = None  # where a pending run of whitespace began
    for index, char in enumerate(text):
        for folded in _fold_char(char):
            if folded == " ":
                if out and space_at is None:
                    space_at = index
                continue
            if space_at is not None:
                out.append(" ")
                sources.append(space_at)
                space_at = None
            out.append(folded)
            sources.append(index)
    return Folded(original=text, text="".join(out), sources=tuple(sources))


@lru_cache(maxsize=65536)
def _fold_char(char: str) -> str:
    """One character folded; whitespace comes out as a single ``" "``."""
    out: list[str] = []
    for part in unicodedata.normalize("NFKD", char):
        if part.isspace():
            out.append(" ")
        elif not _dropped(part):
            out.append(_reading(part))
    return "".join(out)


def _dropped(char: str) -> bool:
    category = unicodedata.category(char)
    return category in _DROPPED_CATEGORIES or category == "Cc" or char in _BLANK


@lru_cache(maxsize=65536)
def _reading(char: str) -> str:
    """What a letter reads as, lower case.

    The letter as written is looked up before its lower case: a Greek capital nu
    looks like ``N``, its lower case like ``v``. A capital UTS #39 files with ``l``
    (Cyrillic ``І``, Greek ``Ι``) folds like the ASCII ``I`` it imitates, to ``i``.
    """
    if char.isascii():
        return char.lower()
    glyph = _ascii_glyph(char)
    if glyph is not None:
        return "i" if glyph == "l" and char.isupper() else glyph.lower()
    lower = unicodedata.normalize("NFKD", char.casefold())
    if lower != char:
        return "".join(" " if c.isspace() else _reading(c) for c in lower if not _dropped(c))
    return _prototype_base(char) or _base_letter(char) or char


def _homoglyphs(char: str) -> list[str]:
    found = confusables.is_confusable(char, greedy=True)
    return [glyph["c"] for glyph in found[0]["homoglyphs"]] if found else []


def _ascii_glyph(char: str) -> str | None:
    """The ASCII character UTS #39 says ``char`` is confusable with: a letter before a
    digit before punctuation (Cyrillic palochka reads as ``i``, not ``1``)."""
    glyphs = [g for g in _homoglyphs(char)
              if len(g) == 1 and g.isascii() and g.isprintable() and not g.isspace()]
    for wanted in (str.isalpha, str.isdigit):
        match = next((g for g in glyphs if wanted(g)), None)
        if match is not None:
            return match
    return glyphs[0] if glyphs else None


def _prototype_base(char: str) -> str | None:
    """The base letter of ``char``'s UTS #39 prototype when that is a Latin letter
    outside ASCII (Greek tau's prototype is small capital ``ᴛ``: ``t``)."""
    glyphs = _homoglyphs(char)
    return _base_letter(glyphs[0]) if len(glyphs) == 1 and len(glyphs[0]) == 1 else None


def _base_letter(char: str) -> str | None:
    """``t`` for ``ᴛ`` (small capital), ``o`` for ``ø`` (with stroke); None otherwise."""
    match = _LATIN_BASE.fullmatch(unicodedata.name(char, ""))
    return match.group(1).lower() if match else None
