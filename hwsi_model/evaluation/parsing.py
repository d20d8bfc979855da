"""Strict parsers of generated answers to closed questions.

Every parser returns the parsed value or ``None`` (unparsed); an unparsed answer counts as
wrong and is reported in the ``unparsed`` count. *Strict* means: the value must be the first
thing of the answer (after an optional fixed prefix), and a value is never found by searching
inside the text (no substring matching: ``"I think it is B"`` or ``"not A but B"`` are
unparsed).

One prefix is accepted: the label ``Answer:`` (any case, spaces around the colon). Sentences
such as ``"The answer is B"`` are not: the value must come first.

Option letters (:func:`parse_option_letter`), for ``n_options`` options ``A``, ``B``, ...:

=============================  =========  ===================================================
answer                         parsed     why
=============================  =========  ===================================================
``"B"``, ``"B."``, ``"B)"``    ``B``      the letter alone, or with ``)``, ``.``, ``:``, ``,``
``"B) Foo"``, ``" B) Foo"``    ``B``      leading whitespace is ignored
``"(B) ..."``, ``"[B]"``       ``B``      a bracketed letter
``"b."``, ``"b)"``, ``"b"``    ``B``      lower case only with a terminator or alone
``"Answer: B"``                ``B``      the accepted prefix
``'B "'``, ``'"B"'``            ``B``      quotes around the letter (WSI-Bench references)
``"The answer is B"``          ``None``   a sentence, not the letter first
``"Foo"`` (an option's text)   its letter exact option text after :func:`normalize_label`
``"B Foo"``                    ``None``   a letter followed by a word could be an article
                                          (``"A large tumour"``); needs a terminator
``"a large tumour"``           ``None``   idem
``"I think B"``                ``None``   not first, no accepted prefix
``"E"`` with 4 options         ``None``   beyond the options
=============================  =========  ===================================================

Yes/no and true/false (:func:`parse_yes_no`): the first word (after an accepted prefix and
opening quotes/brackets) is ``yes``/``true`` -> ``True`` or ``no``/``false`` -> ``False``,
followed by the end, punctuation or a space: ``"Yes, the nuclei ..."`` -> ``True``;
``"Yesterday"``, ``"Not sure"``, ``"Probably yes"`` -> ``None``.

Classification labels (:func:`parse_label`): the whole answer, after :func:`normalize_label`
(lower case, punctuation to spaces, whitespace collapsed), must equal one normalised label:
``" High-grade carcinoma. "`` matches ``"high grade carcinoma"``; ``"a high-grade carcinoma"``
does not.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

LETTERS = "ABCDEFGHIJ"

_PREFIX = re.compile(r"^\s*answer\s*:\s*", re.IGNORECASE)
# Opening quotes before the letter and closing quotes after it are not part of the answer
# (WSI-Bench references such as 'B "').
_Q_OPEN, _Q_END = "[\"'\u201c\u2018]*", "\\s*[\"'\u201d\u2019]*\\s*$"
_UPPER = re.compile(rf"^\s*{_Q_OPEN}(?:\(([A-J])\)|\[([A-J])\]|([A-J])(?=[).:,]|{_Q_END}))")
_LOWER = re.compile(rf"^\s*{_Q_OPEN}(?:\(([a-j])\)|\[([a-j])\]|([a-j])(?=[).:]|{_Q_END}))")
_YESNO = re.compile(r"^[\s\"'(\[*]*(yes|no|true|false)(?=$|[\s.,;:!?)\]\"'*])", re.IGNORECASE)
_NON_WORD = re.compile(r"[^\w]+")


def strip_prefix(text: str) -> str:
    """``text`` without a leading ``Answer:`` prefix (``"Answer: B"`` -> ``"B"``)."""
    return _PREFIX.sub("", text, count=1)


def normalize_label(text: str) -> str:
    """Lower case, punctuation and underscores to spaces, whitespace collapsed:
    ``" High-grade_carcinoma. "`` -> ``"high grade carcinoma"``."""
    return " ".join(_NON_WORD.sub(" ", text.replace("_", " ")).lower().split())


def parse_option_letter(
    text: str, n_options: int, options: Sequence[str] | None = None
) -> str | None:
    """The option letter of a generated answer (upper case) or ``None``; see the module doc.

    Args:
        text: the generated answer.
        n_options: number of options (letters ``A`` .. ``LETTERS[n_options - 1]``).
        options: the options' texts; when given, an answer that is exactly one option's text
            (after :func:`normalize_label`) gives that option's letter.
    """
    if not text:
        return None
    for candidate in (text, strip_prefix(text)):
        m = _UPPER.match(candidate) or _LOWER.match(candidate)
        if m:
            letter = next(g for g in m.groups() if g).upper()
            return letter if LETTERS.index(letter) < n_options else None
    if options:
        norm = [normalize_label(o) for o in options[:n_options]]
        for candidate in (text, strip_prefix(text)):
            key = normalize_label(candidate)
            if key and norm.count(key) == 1:
                return LETTERS[norm.index(key)]
    return None


def parse_yes_no(text: str) -> bool | None:
    """``True`` for yes/true, ``False`` for no/false, ``None`` otherwise (see module doc)."""
    if not text:
        return None
    for candidate in (text, strip_prefix(text)):
        m = _YESNO.match(candidate)
        if m:
            return m.group(1).lower() in ("yes", "true")
    return None


def parse_label(text: str, labels: Sequence[str]) -> str | None:
    """The label (as given in ``labels``) that the whole answer names, or ``None``.

    Exact match after :func:`normalize_label`, also after an accepted prefix; never a
    substring. Labels that normalise to the same text are ambiguous and never match.
    """
    if not text:
        return None
    norm = [normalize_label(label) for label in labels]
    for candidate in (text, strip_prefix(text)):
        key = normalize_label(candidate)
        if key and norm.count(key) == 1:
            return labels[norm.index(key)]
    return None
