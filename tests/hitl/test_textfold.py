"""Text folded as a reader sees it: what cannot be told apart folds alike."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hitl.textfold import fold, fold_mapped


@pytest.mark.parametrize(("text", "folded"), [
    ("Ignore Previous", "ignore previous"),
    ("ＩＧＮＯＲＥ　ｐｒｅｖｉｏｕｓ", "ignore previous"),  # fullwidth, ideographic space
    ("ig\u200bno\u200dre\u2060 pre\u00advious\ufeff", "ignore previous"),  # invisible
    ("ignore \t\n\u00a0\u2003 previous\n", "ignore previous"),
    ("ignоre prеvіous", "ignore previous"),  # Cyrillic о, е, і
    ("ΙGΝΟRΕ ρrevιουs", "ignore previous"),  # Greek capitals, ρ, ι, ο, υ
    ("ɪɢɴᴏʀᴇ", "ignore"),  # Latin small capitals
    ("іgnоrе", "ignore"),
    ("𝐢𝐠𝐧𝐨𝐫𝐞", "ignore"),  # mathematical bold
    ("ïgnóré", "ignore"),  # diacritics
    ("ﬁle", "file"),
    ("Straße", "strasse"),
    ("тест", "tect"),  # Cyrillic te folds through small capital T
    ("", ""),
    ("\u200b \u200b", ""),
])
def test_fold(text: str, folded: str) -> None:
    assert fold(text) == folded
    assert fold_mapped(text).text == folded


def test_digits_and_ascii_look_alikes_are_left_alone() -> None:
    """Folding 0/O or 1/l would change ordinary numbers and words."""
    assert fold("Order 1010, total 0.50") == "order 1010, total 0.50"
    assert fold("lIl") == "lil"


def test_a_match_maps_back_to_the_original() -> None:
    text = "Hi!  ОК? no: ig\u200bnore  ALL\n previous"
    mapped = fold_mapped(text)
    assert mapped.text == "hi! ok? no: ignore all previous"
    start = mapped.text.index("ignore all")
    span = mapped.source(start, start + len("ignore all"))
    assert text[span[0]:span[1]] == "ig\u200bnore  ALL"


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_fold_is_one_function_fast_or_mapped(text: str) -> None:
    """The rules search the fast fold and locate a hit in the mapped one: they agree."""
    mapped = fold_mapped(text)
    assert fold(text) == mapped.text
    assert len(mapped.sources) == len(mapped.text)
    assert list(mapped.sources) == sorted(mapped.sources)
    assert all(0 <= index < len(text) for index in mapped.sources)


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_fold_is_idempotent(text: str) -> None:
    """Folded text is already as a reader sees it: names compared by fold compare stably."""
    assert fold(fold(text)) == fold(text)
