"""Who a name stands for: reviewer and requester names as identities, not strings.

Two spellings that a person reads as the same name must be the same identity,
or self-approval and four-eyes can be stepped around (``SVC-Billing`` requests,
``svc-billing`` approves; ``carol`` and ``carol`` + a zero-width space are two
approvers). So:

- ``identity_key`` is what names are compared by (``hitl.textfold.fold``): case,
  accents and invisible characters (zero-width and the like) dropped, surrounding
  space trimmed, look-alike letters of other scripts mapped to the Latin letter they
  imitate (Unicode's confusables data), and the ASCII look-alikes (``I``, ``l``,
  ``1``; ``0``, ``O``) made one. Self-approval, distinct approvers and the registry's
  uniqueness use it, so it errs towards "the same person".
- ``registered_name`` is the check a name passes to become a reviewer: the
  NFKC, case-folded form, refused when it holds space, control or format
  characters, or letters of more than one script (a Latin name with one
  Cyrillic ``а`` in it). A whole-script look-alike (all Cyrillic, reading as a
  Latin name) passes this check but collides on ``identity_key`` with the name
  it imitates, which the registry refuses too.

Pure: no store, no Temporal.
"""

from __future__ import annotations

import unicodedata

from hitl.errors import InputError
from hitl.textfold import fold

MAX_NAME_LENGTH = 200
fold("\u0430")  # loads the confusables data here, at import, never inside a workflow
# Characters a name may hold besides letters and digits.
NAME_PUNCTUATION = frozenset("._-@+")
def _script(char: str) -> str | None:
    """The script of a letter, from its Unicode name (``LATIN SMALL LETTER A``);
    None for digits and punctuation, which every script shares."""
    if not char.isalpha():
        return None
    name = unicodedata.name(char, "")
    return name.split(" ", 1)[0] if name else "UNKNOWN"


def _fold(name: str) -> str:
    return unicodedata.normalize("NFKC", name).casefold().strip()


def identity_key(name: str) -> str:
    """The form names are compared by; equal keys are the same identity
    (``hitl.textfold.fold``: look-alikes, case, accents and invisible characters; then
    the ASCII look-alikes ``I``/``l``/``1``/``|`` and ``0``/``O``, which the fold keeps
    apart for the rules' sake). A key is for comparing, never for showing."""
    return fold(name).translate(_ASCII_LOOKALIKES)


# After case folding: i (from I), l, 1 and | read as one letter, 0 and o as another.
_ASCII_LOOKALIKES = str.maketrans({"i": "l", "1": "l", "|": "l", "0": "o"})


def same_identity(a: str | None, b: str | None) -> bool:
    """Whether two names stand for one identity (None matches nothing)."""
    if a is None or b is None:
        return False
    key = identity_key(a)
    return bool(key) and key == identity_key(b)


def registered_name(name: str, *, field: str = "name") -> str:
    """The name a reviewer is registered under, or ``InputError`` naming ``field``."""
    folded = _fold(name)
    if not folded:
        raise InputError(f"{field}: must not be empty", field=field)
    if len(folded) > MAX_NAME_LENGTH:
        raise InputError(f"{field}: at most {MAX_NAME_LENGTH} characters", field=field)
    for char in folded:
        category = unicodedata.category(char)
        if category[0] in "CZ":  # control, format (zero-width), private use, space
            raise InputError(
                f"{field}: must not contain spaces, control or invisible characters "
                f"(found U+{ord(char):04X})", field=field)
        if not (char.isalnum() or char in NAME_PUNCTUATION):
            raise InputError(
                f"{field}: only letters, digits and {''.join(sorted(NAME_PUNCTUATION))} "
                f"are allowed (found {char!r})", field=field)
    scripts = {s for s in map(_script, folded) if s is not None}
    if len(scripts) > 1:
        raise InputError(f"{field}: mixes letters of several scripts "
                         f"({', '.join(sorted(scripts)).lower()}); use one", field=field)
    return folded
