"""Strict answer parsers on messy generated answers."""

from __future__ import annotations

import pytest

from hwsi_model.evaluation.parsing import (
    normalize_label,
    parse_label,
    parse_option_letter,
    parse_yes_no,
)

OPTIONS = ["Benign glandular tissue", "Low-grade carcinoma", "High-grade carcinoma", "Other"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(B) Low-grade carcinoma", "B"),
        ("b.", "B"),
        ("b)", "B"),
        ("b", "B"),
        ("Answer: B", "B"),
        ("answer:b", "B"),
        (" B) Foo", "B"),
        ("B", "B"),
        ("B.", "B"),
        ("B, because the nuclei are large", "B"),
        ("[C]", "C"),
        ("\n  D) Other.", "D"),
        ("Low-grade carcinoma.", "B"),  # exact option text
        ("  high grade CARCINOMA ", "C"),
        ('B "', "B"),  # a WSI-Bench reference as written, with a stray closing quote
        ('"B"', "B"),
        ("\u201cC\u201d", "C"),
        ('"B" is right', None),  # quotes do not open the door to text after the letter
        # rejected: not first, a sentence, an article, beyond the options, substrings
        ("The answer is B", None),
        ("I think B", None),
        ("B Low-grade", None),
        ("A large tumour", None),
        ("a large tumour", None),
        ("E) none", None),
        ("carcinoma", None),
        ("Low-grade carcinoma with necrosis", None),
        ("", None),
    ],
)
def test_option_letter(text: str, expected: str | None) -> None:
    assert parse_option_letter(text, 4, OPTIONS) == expected


def test_option_letter_without_options_and_bounds() -> None:
    assert parse_option_letter("Low-grade carcinoma", 4) is None  # needs the option texts
    assert parse_option_letter("C) High", 2) is None
    assert parse_option_letter("J.", 10) == "J"
    assert parse_option_letter("B) High-grade carcinoma.", 3) == "B"
    assert parse_option_letter(" (C)", 3) == "C"
    assert parse_option_letter("D) four", 3) is None  # beyond the options
    assert parse_option_letter("The answer is B", 3) is None  # not first: wrong


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", True),
        ("yes.", True),
        ("Yes, the nuclei are pleomorphic.", True),
        ("No", False),
        ("NO!", False),
        ("False", False),
        ("true", True),
        ('"No", there is no invasion', False),
        ("Answer: no", False),
        ("Yesterday", None),
        ("Not sure", None),
        ("Probably yes", None),
        ("no-one knows", None),
        ("Nope", None),
        ("", None),
    ],
)
def test_yes_no(text: str, expected: bool | None) -> None:
    assert parse_yes_no(text) is expected


def test_labels_exact_after_normalisation() -> None:
    labels = ["benign", "low_grade", "high_grade"]
    assert normalize_label(" High-grade_carcinoma. ") == "high grade carcinoma"
    assert parse_label("High grade", labels) == "high_grade"
    assert parse_label("  LOW-GRADE. ", labels) == "low_grade"
    assert parse_label("Answer: benign", labels) == "benign"
    assert parse_label("a high grade lesion", labels) is None  # no substring matching
    assert parse_label("grade", labels) is None
    assert parse_label("benign or low grade", labels) is None
    assert parse_label("x", ["a-b", "a b"]) is None
    assert parse_label("a b", ["a-b", "a b"]) is None  # ambiguous labels never match


def test_unparsed_count_over_a_batch() -> None:
    answers = ["B)", "The answer is B", "c.", "maybe A", "(A)"]
    parsed = [parse_option_letter(a, 3) for a in answers]
    assert parsed == ["B", None, "C", None, "A"]
    assert sum(p is None for p in parsed) == 2
