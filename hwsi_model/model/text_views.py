"""Text views of a pathology report, one per scale (pure Python, no NLP dependency).

=======  ===================  ==========================================================
scale    view                 how
=======  ===================  ==========================================================
cell     key terms (words)    matches of a pathology vocabulary (longest first), in order
patch    phrases              sentences cut at punctuation and at clause words
region   sentences            split after . ! ? when a new sentence starts
wsi      paragraph            the whole report, whitespace-normalised
=======  ===================  ==========================================================

The vocabulary is configurable (:func:`load_vocabulary` reads one term per line); when a report
contains none of its terms, the content words of the report are used so the cell view is never
empty for a non-empty report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Default pathology vocabulary: cytology first (the cell scale's "words"), then architecture.
DEFAULT_VOCABULARY: tuple[str, ...] = (
    # nuclei and cytology
    "nucleus", "nuclei", "nuclear", "nucleoli", "nucleolus", "prominent nucleoli", "chromatin",
    "hyperchromatic", "hyperchromasia", "vesicular", "coarse chromatin", "pleomorphic",
    "pleomorphism", "nuclear pleomorphism", "atypia", "atypical", "cytologic atypia", "mitosis",
    "mitoses", "mitotic", "mitotic figures", "apoptotic", "apoptosis", "cytoplasm", "eosinophilic",
    "basophilic", "clear cell", "spindle", "spindle cells", "round", "oval", "enlarged",
    "small", "medium", "large", "nuclear size", "nucleus size", "n:c ratio",
    "lymphocytes", "lymphocytic", "plasma cells", "neutrophils", "macrophages", "histiocytes",
    "giant cells", "signet ring", "keratinization", "keratin pearls",
    # tissue and architecture
    "carcinoma", "adenocarcinoma", "squamous", "sarcoma", "lymphoma", "melanoma", "glioma",
    "benign", "malignant", "low-grade", "high-grade", "well differentiated",
    "moderately differentiated", "poorly differentiated", "invasive", "invasion",
    "in situ", "necrosis", "necrotic", "hemorrhage", "fibrosis", "desmoplasia", "desmoplastic",
    "stroma", "stromal", "inflammation", "inflammatory", "infiltrate", "gland", "glands",
    "glandular", "tubular", "papillary", "solid", "cribriform", "sheets", "nests", "cords",
    "trabecular", "epithelium", "epithelial", "lumen", "lumina", "margin", "margins",
    "lymphovascular invasion", "perineural invasion", "capsule", "adipose", "muscle",
    "mucin", "mucinous", "calcification", "metastasis", "metastatic", "tumor", "tumour",
    "lesion", "densely packed", "crowded", "sparse",
)  # fmt: skip

#: Words that end a phrase (clause boundaries, verbs and conjunctions of report prose).
PHRASE_BREAKS: frozenset[str] = _words(
    "and or but with without while whereas which that who where when is are was were be been "
    "being shows show showed showing seen noted identified present consistent contains "
    "contain containing there here it its this these those has have had also as by covering "
    "covers spans span spanning measuring measures involving involves including composed "
    "arranged"
)
#: Words dropped at phrase edges and not counted as content.
STOPWORDS: frozenset[str] = PHRASE_BREAKS | _words(
    "a an the of in on at to for from into within over under about than then no not some "
    "any all each both overall together"
)

_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][)\]\"']))\s+(?=[\"'(\[]?[A-Z0-9])")
_CLAUSE_PUNCT = re.compile(r"[,;:()\[\]]|\s[-\u2013\u2014]\s")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9%/:.+-]*[A-Za-z0-9%]|[A-Za-z0-9]")


@dataclass
class TextViews:
    """The four views of one report."""

    paragraph: str
    sentences: list[str]
    phrases: list[str]
    terms: list[str]

    def for_scale(self, scale: str) -> list[str]:
        """Texts of a scale: terms (cell), phrases (patch), sentences (region), paragraph (wsi)."""
        views = {
            "cell": self.terms,
            "patch": self.phrases,
            "region": self.sentences,
            "wsi": [self.paragraph] if self.paragraph else [],
        }
        if scale not in views:
            raise ValueError(f"unknown scale {scale!r}")
        return views[scale]


def load_vocabulary(path: str | Path) -> tuple[str, ...]:
    """Read one term per line (blank lines and ``#`` comments ignored)."""
    terms = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            terms.append(line)
    return tuple(terms)


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``; decimals such as ``7.5 um`` do not split."""
    text = " ".join(text.split())
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def split_phrases(sentence: str) -> list[str]:
    """Noun-phrase-ish chunks: cut at clause punctuation and clause words, trim stop words."""
    phrases = []
    for piece in _CLAUSE_PUNCT.split(sentence):
        current: list[str] = []
        for word in _WORD.findall(piece):
            if word.lower() in PHRASE_BREAKS:
                phrases.append(current)
                current = []
            else:
                current.append(word)
        phrases.append(current)
    out = []
    for words in phrases:
        while words and words[0].lower() in STOPWORDS:
            words = words[1:]
        while words and words[-1].lower() in STOPWORDS:
            words = words[:-1]
        if words:
            out.append(" ".join(words).rstrip("."))
    return out


def find_terms(text: str, vocabulary: Iterable[str]) -> list[str]:
    """Vocabulary terms in ``text`` in order of appearance, longest match first, no overlaps.

    Matching is case-insensitive on word boundaries; a term is returned as the vocabulary spells
    it, once per occurrence.
    """
    terms = sorted({t.lower() for t in vocabulary}, key=len, reverse=True)
    if not terms:
        return []
    pattern = re.compile(
        r"(?<![A-Za-z0-9])(" + "|".join(re.escape(t) for t in terms) + r")(?![A-Za-z0-9])",
        re.IGNORECASE,
    )
    return [m.group(1).lower() for m in pattern.finditer(text)]


def content_words(text: str, min_length: int = 4) -> list[str]:
    """Words that are not stop words or numbers (fallback key terms)."""
    words = (w.lower() for w in _WORD.findall(text))
    return [w for w in words if len(w) >= min_length and w not in STOPWORDS and w.isalpha()]


def split_report(
    report: str,
    vocabulary: Iterable[str] = DEFAULT_VOCABULARY,
    unique_terms: bool = True,
    max_items: int | None = 64,
) -> TextViews:
    """Split ``report`` into its four views.

    Args:
        report: free-text report (one paragraph or several).
        vocabulary: key terms for the cell view.
        unique_terms: keep only the first occurrence of a term.
        max_items: cap on sentences, phrases and terms (``None``: no cap).
    """
    paragraph = " ".join(report.split())
    sentences = split_sentences(paragraph)
    phrases = [p for s in sentences for p in split_phrases(s)]
    terms = find_terms(paragraph, vocabulary) or content_words(paragraph)
    if unique_terms:
        terms = list(dict.fromkeys(terms))
    if max_items is not None:
        sentences, phrases, terms = sentences[:max_items], phrases[:max_items], terms[:max_items]
    return TextViews(paragraph=paragraph, sentences=sentences, phrases=phrases, terms=terms)
