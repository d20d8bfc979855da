"""Report paragraphs and VQA items built from a slide's measured ground-truth facts.

Every sentence is derived from the ``facts`` dict produced by
:func:`hwsi_model.demo.synthetic_tissue.measure_slide` (lengths in um, densities in nuclei
per 0.01 mm2, fractions in percent), so it is true for that slide at its scale. A seeded
generator only varies the wording.

Sentences are grouped by scale: ``slide`` (diagnosis, tissue pieces), ``region`` (extent,
side and location of the lesion, an inflammatory focus), ``patch`` (local architecture and
density) and ``cell`` (nucleus size, shape, chromatin).
"""

from __future__ import annotations

import numpy as np

DIAGNOSIS_NAMES: dict[str, str] = {
    "benign": "Benign glandular tissue",
    "low_grade": "Low-grade carcinoma",
    "high_grade": "High-grade carcinoma",
}
# What the "lesion" compartment is called in the text.
LESION_NAMES: dict[str, str] = {
    "benign": "Glandular tissue",
    "low_grade": "Carcinoma",
    "high_grade": "Carcinoma",
}
PIECE_OPTIONS = ("One", "Two", "Three")
#: Mean lesional nucleus diameter (um) above which the closed question calls them enlarged.
ENLARGED_NUCLEUS_UM = 9.0
DENSE_PER_0_01MM2 = 22.0  # lesional nuclei per 0.01 mm2 at or above which we say "dense"
MODERATE_PER_0_01MM2 = 14.0
LETTERS = "ABCDEFGH"
#: The scale at which each measured fact (``measure_slide``'s keys) is seen, and "slide" for
#: the diagnosis; stored with every report record as ``fact_scales``.
_SCALE_OF_FACTS = {
    "slide": ("diagnosis", "mpp", "width_um", "height_um", "width_px", "height_px",
              "n_tissue_pieces", "tissue_fraction_pct", "tissue_extent_mm"),
    "region": ("lesion_fraction_pct", "lesion_location", "lesion_share_upper_pct",
               "lesion_share_left_pct", "lesion_share_quadrant_pct", "lesion_side",
               "inflammation_focus", "focus_location", "focus_diameter_um", "n_focus_nuclei"),
    "patch": ("architecture", "n_glands", "gland_diameter_um_mean", "gland_gap_um_mean",
              "stratified_pct", "n_lesion_nuclei", "lesion_nuclei_per_0.01mm2",
              "stroma_nuclei_per_0.01mm2"),
    "cell": ("lesion_nucleus_diameter_um_mean", "lesion_nucleus_diameter_um_p10",
             "lesion_nucleus_diameter_um_p90", "lesion_nucleus_diameter_cv_pct",
             "lesion_nucleus_area_um2_mean", "lesion_nucleus_eccentricity_mean", "nucleoli_pct",
             "chromatin", "stroma_nucleus_length_um_mean", "stroma_nucleus_width_um_mean"),
}  # fmt: skip
FACT_SCALES: dict[str, str] = {k: sc for sc, keys in _SCALE_OF_FACTS.items() for k in keys}


def size_class(mean_diameter_um: float) -> int:
    """0 small (under 7.5 um), 1 medium (7.5 to 10.5 um), 2 large, for a mean nucleus
    diameter in um."""
    return 0 if mean_diameter_um < 7.5 else 1 if mean_diameter_um < 10.5 else 2


def density_word(per_0_01mm2: float) -> str:
    """Wording for a lesional nucleus density (nuclei per 0.01 mm2)."""
    if per_0_01mm2 >= DENSE_PER_0_01MM2:
        return "densely packed"
    return "moderately crowded" if per_0_01mm2 >= MODERATE_PER_0_01MM2 else "sparse"


def shape_kind(f: dict) -> str:
    """``pleomorphic`` (diameter CV >= 15 %), ``oval`` (eccentricity >= 0.5) or ``round``."""
    if f["lesion_nucleus_diameter_cv_pct"] >= 15:
        return "pleomorphic"
    return "oval" if f["lesion_nucleus_eccentricity_mean"] >= 0.5 else "round"


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _slide_sentences(label: str, f: dict, rng: np.random.Generator) -> list[str]:
    name = DIAGNOSIS_NAMES[label]
    n = f["n_tissue_pieces"]
    pieces = "a single tissue piece" if n == 1 else f"{n} separate tissue pieces"
    w, h = f["tissue_extent_mm"]
    return [
        _pick(
            rng,
            [
                f"Diagnosis: {name.lower()}.",
                f"The findings are consistent with {name.lower()}.",
                f"Overall, the slide shows {name.lower()}.",
            ],
        ),
        _pick(
            rng,
            [
                f"The slide contains {pieces} covering about "
                f"{f['tissue_fraction_pct']:.0f}% of the slide area.",
                f"There {'is' if n == 1 else 'are'} {pieces} on the slide, covering about "
                f"{f['tissue_fraction_pct']:.0f}% of its area.",
            ],
        ),
        f"Together the tissue spans about {w:.2f} x {h:.2f} mm.",
    ]


def _region_sentences(label: str, f: dict, rng: np.random.Generator) -> list[str]:
    lesion = LESION_NAMES[label]
    loc = f["lesion_location"]
    out = [
        _pick(
            rng,
            [
                f"{lesion} occupies about {f['lesion_fraction_pct']:.0f}% of the tissue area.",
                f"About {f['lesion_fraction_pct']:.0f}% of the tissue area is {lesion.lower()}.",
            ],
        )
    ]
    if " " in loc:  # a quadrant holds at least half of the lesion
        out.append(
            f"Most of it ({f['lesion_share_quadrant_pct']:.0f}% of its area) lies in the "
            f"{loc} part of the tissue."
        )
    elif loc in ("upper", "lower", "left", "right"):
        share = {
            "upper": f["lesion_share_upper_pct"],
            "lower": 100 - f["lesion_share_upper_pct"],
            "left": f["lesion_share_left_pct"],
            "right": 100 - f["lesion_share_left_pct"],
        }[loc]
        out.append(
            f"It lies predominantly in the {loc} half of the tissue ({share:.0f}% of its area)."
        )
    else:
        out.append("It is distributed across the tissue without a predominant side.")
    out.append(
        _pick(
            rng,
            [
                "The remaining tissue is fibrous stroma.",
                "The rest of the tissue is collagenous stroma.",
            ],
        )
    )
    out.append(focus_sentence(f, rng))
    return out


def focus_sentence(f: dict, rng: np.random.Generator) -> str:
    """The region-scale finding of an inflammatory focus, or its absence."""
    if not f.get("inflammation_focus"):
        return _pick(
            rng,
            ["No inflammatory focus is seen.", "There is no focus of inflammation."],
        )
    where = {"upper": "top", "lower": "bottom"}[f["focus_location"]]
    return _pick(
        rng,
        [
            f"A focus of dense lymphocytic inflammation, about {f['focus_diameter_um']:.0f} um "
            f"across, lies in the stroma towards the {where} of the tissue.",
            f"The stroma towards the {where} of the tissue holds a focus of lymphocytic "
            f"inflammation about {f['focus_diameter_um']:.0f} um across.",
        ],
    )


def _patch_sentences(label: str, f: dict, rng: np.random.Generator) -> list[str]:
    out = []
    if f["architecture"] == "sheets":
        out.append(
            _pick(
                rng,
                [
                    "Tumour cells grow in solid sheets without gland formation.",
                    "The tumour forms solid sheets of cells with no glandular lumens.",
                ],
            )
        )
    else:
        out.append(
            "Glands are round to oval with open lumens, about "
            f"{f['gland_diameter_um_mean']:.0f} um across."
        )
        if f["n_glands"] >= 2:
            gap = f["gland_gap_um_mean"]
            if gap < 20:
                out.append(
                    "Glands are crowded, nearly back-to-back "
                    f"(mean gap between neighbours {gap:.0f} um)."
                )
            else:
                out.append(
                    "Glands are separated by bands of stroma "
                    f"(mean gap between neighbours {gap:.0f} um)."
                )
        if f["stratified_pct"] > 0:
            out.append(
                f"Nuclei are stratified into two layers in places ({f['stratified_pct']:.0f}% of "
                "gland nuclei lie in a second layer)."
            )
        else:
            out.append("Glands are lined by an orderly single layer of nuclei.")
    dens = f["lesion_nuclei_per_0.01mm2"]
    out.append(
        _pick(
            rng,
            [
                f"Lesional nuclei are {density_word(dens)}, about {dens:.0f} per 0.01 mm2.",
                f"There are about {dens:.0f} lesional nuclei per 0.01 mm2 ({density_word(dens)}).",
            ],
        )
    )
    out.append(
        f"The stroma holds sparse spindle-shaped nuclei (about "
        f"{f['stroma_nuclei_per_0.01mm2']:.0f} per 0.01 mm2) between wavy collagen fibres."
    )
    return out


def _cell_sentences(label: str, f: dict, rng: np.random.Generator) -> list[str]:
    if f["n_lesion_nuclei"] == 0:
        return ["No lesional nuclei are present.", _spindle_sentence(f)]
    size = ("small", "medium-sized", "large")[size_class(f["lesion_nucleus_diameter_um_mean"])]
    out = [
        f"Lesional nuclei are {size}, with a mean diameter of "
        f"{f['lesion_nucleus_diameter_um_mean']:.1f} um (10th to 90th percentile "
        f"{f['lesion_nucleus_diameter_um_p10']:.1f} to "
        f"{f['lesion_nucleus_diameter_um_p90']:.1f} um)."
    ]
    orient = (
        "randomly oriented"
        if f["architecture"] == "sheets"
        else "with the long axis perpendicular to the gland lumen"
    )
    kind = shape_kind(f)
    if kind == "pleomorphic":
        out.append(
            "They are pleomorphic, with marked variation in size (coefficient of variation "
            f"{f['lesion_nucleus_diameter_cv_pct']:.0f}%) and shape, {orient}."
        )
    elif kind == "oval":
        out.append(
            "They are oval with mild variation in shape (mean eccentricity "
            f"{f['lesion_nucleus_eccentricity_mean']:.2f}), {orient}."
        )
    else:
        out.append(
            _pick(rng, ["They are round and uniform.", "They are round, regular and uniform."])
        )
    out.append(
        {
            "fine": "Chromatin is fine and evenly distributed.",
            "slightly coarse": "Chromatin is slightly coarse.",
            "coarse": "Chromatin is coarse and clumped, and the nuclei are hyperchromatic.",
        }[f["chromatin"]]
    )
    if f["nucleoli_pct"] > 0:
        out.append(
            f"Prominent nucleoli are seen in about {f['nucleoli_pct']:.0f}% of lesional nuclei."
        )
    else:
        out.append("Nucleoli are inconspicuous.")
    out.append(_spindle_sentence(f))
    return out


def _spindle_sentence(f: dict) -> str:
    return (
        f"Stromal nuclei are spindle-shaped, about {f['stroma_nucleus_length_um_mean']:.0f} um "
        f"long and {f['stroma_nucleus_width_um_mean']:.0f} um wide."
    )


def key_terms(f: dict) -> list[str]:
    """Cell and morphology terms that apply to the slide (all true by construction)."""
    terms = []
    if f["n_lesion_nuclei"]:
        size = size_class(f["lesion_nucleus_diameter_um_mean"])
        kind = shape_kind(f)
        terms.append(("small nuclei", "mildly enlarged nuclei", "enlarged nuclei")[size])
        terms += {
            "round": ["round nuclei", "uniform nuclei"],
            "oval": ["oval nuclei", "mild nuclear atypia"],
            "pleomorphic": ["pleomorphic", "nuclear pleomorphism"],
        }[kind]
        terms.append(f"{f['chromatin']} chromatin")
        if f["chromatin"] == "coarse":
            terms.append("hyperchromatic")
        if f["nucleoli_pct"] > 0:
            terms.append("prominent nucleoli")
    if f["architecture"] == "sheets":
        terms.append("solid sheets")
    else:
        terms.append("glandular architecture")
        if f["n_glands"] >= 2 and f["gland_gap_um_mean"] < 20:
            terms.append("crowded glands")
        terms.append(
            "nuclear stratification" if f["stratified_pct"] > 0 else "single-layered epithelium"
        )
    terms.append("spindle-shaped nuclei")
    return terms


def build_report(slide_id: str, label: str, facts: dict, rng: np.random.Generator) -> dict:
    """Report record for one slide: ``slide_id``, ``label``, ``report`` (paragraph),
    ``sentences`` ({"slide"|"region"|"patch"|"cell": [str]}), ``key_terms``, ``facts`` and
    ``fact_scales`` (the scale of each fact and of the diagnosis, :data:`FACT_SCALES`)."""
    sentences = {
        "slide": _slide_sentences(label, facts, rng),
        "region": _region_sentences(label, facts, rng),
        "patch": _patch_sentences(label, facts, rng),
        "cell": _cell_sentences(label, facts, rng),
    }
    paragraph = " ".join(
        s for scale in ("slide", "region", "patch", "cell") for s in sentences[scale]
    )
    return {
        "slide_id": slide_id,
        "label": label,
        "report": paragraph,
        "sentences": sentences,
        "key_terms": key_terms(facts),
        "facts": facts,
        "fact_scales": {k: FACT_SCALES[k] for k in ("diagnosis", *facts)},
    }


# ----------------------------------------------------------------------------- VQA


def _closed_item(
    slide_id: str,
    qid: int,
    task: str,
    question: str,
    options: list[str],
    correct: int,
    why: str = "",
) -> dict:
    lines = "\n".join(f"{LETTERS[i]}) {opt}" for i, opt in enumerate(options))
    letter = LETTERS[correct]
    answer = f"{letter}) {options[correct]}." + (f" {why}" if why else "")
    return {
        "id": f"{slide_id}_q{qid}",
        "image": f"{slide_id}.tiff",
        "slide_id": slide_id,
        "conversations": [
            {
                "from": "human",
                "value": f"<image>\n{question}\n{lines}\nAnswer with the option's letter.",
            },
            {"from": "gpt", "value": answer},
        ],
        "question_type": "closed",
        "task": task,
        "options": list(options),
        "answer": letter,
    }


def _open_item(slide_id: str, qid: int, task: str, question: str, answer: str) -> dict:
    return {
        "id": f"{slide_id}_q{qid}",
        "image": f"{slide_id}.tiff",
        "slide_id": slide_id,
        "conversations": [
            {"from": "human", "value": f"<image>\n{question}"},
            {"from": "gpt", "value": answer},
        ],
        "question_type": "open",
        "task": task,
        "answer": answer,
    }


_OPEN_QUESTIONS = {
    "cell": [
        "Describe the nuclear features of the lesional cells.",
        "What do the nuclei look like?",
    ],
    "patch": [
        "How are the lesional cells arranged at higher magnification?",
        "Describe the architecture of the lesion.",
    ],
    "region": [
        "How much of the tissue does the lesion involve, and where?",
        "Describe the extent and location of the lesion.",
    ],
}


def build_vqa_items(record: dict, rng: np.random.Generator) -> list[dict]:
    """WSI-Bench / LLaVA style items for one slide from its report ``record``.

    Closed items carry ``options`` (texts without letters) and ``answer`` = option letter;
    open items carry the reference ``answer`` text. Every item names the ``fact`` it asks
    about and that fact's ``scale`` (slide, region, patch, cell; ``mixed`` for reports).
    The generator balances the closed answers within every class (see
    :func:`hwsi_model.demo.cohort.plan_slides`); option orders are shuffled where they are
    not a scale (yes/no, counts).
    """
    sid, label, f = record["slide_id"], record["label"], record["facts"]
    items: list[dict] = []

    def closed(fact, scale, question, options, correct, why=""):
        items.append(
            _closed_item(
                sid,
                len(items),
                "diagnosis" if fact == "diagnosis" else "morphology",
                question,
                options,
                correct,
                why,
            )
            | {"fact": fact, "scale": scale}
        )

    def shuffled(options: list[str], correct: str) -> tuple[list[str], int]:
        order = [options[int(i)] for i in rng.permutation(len(options))]
        return order, order.index(correct)

    options, correct = shuffled(list(DIAGNOSIS_NAMES.values()), DIAGNOSIS_NAMES[label])
    q = _pick(rng, ["What is the most likely diagnosis?", "Which diagnosis best fits this slide?"])
    closed("diagnosis", "slide", q, options, correct)
    n = f["n_tissue_pieces"]
    if 1 <= n <= len(PIECE_OPTIONS):
        closed(
            "tissue_pieces",
            "slide",
            "How many separate tissue pieces are on the slide?",
            list(PIECE_OPTIONS),
            n - 1,
        )
    frac = f["lesion_fraction_pct"]
    closed(
        "lesion_extent",
        "region",
        "Does the lesion occupy more than half of the tissue area?",
        ["Yes", "No"],
        0 if frac > 50 else 1,
        f"It occupies about {frac:.0f}% of the tissue.",
    )
    if f.get("lesion_side"):
        side = f"{f['lesion_side'].capitalize()} half"
        options, correct = shuffled(["Left half", "Right half"], side)
        closed(
            "lesion_side",
            "region",
            "Does most of the lesion lie in the left or the right half of the tissue?",
            options,
            correct,
        )
    if "inflammation_focus" in f:
        present = bool(f["inflammation_focus"])
        closed(
            "inflammation_focus",
            "region",
            "Is there a focus of inflammation in the stroma?",
            ["Yes", "No"],
            0 if present else 1,
        )
        if present:
            where = f"{f['focus_location'].capitalize()} half"
            options, correct = shuffled(["Upper half", "Lower half"], where)
            closed(
                "focus_location",
                "region",
                "In which half of the tissue is the focus of inflammation?",
                options,
                correct,
            )
    if f["n_lesion_nuclei"]:
        d = f["lesion_nucleus_diameter_um_mean"]
        closed(
            "nuclei_enlarged",
            "cell",
            f"Are the lesional nuclei enlarged (mean diameter over {ENLARGED_NUCLEUS_UM:g} um)?",
            ["Yes", "No"],
            0 if d > ENLARGED_NUCLEUS_UM else 1,
            f"The mean nuclear diameter is about {d:.1f} um.",
        )

    scales = [str(s) for s in rng.choice(["cell", "patch", "region"], size=2, replace=False)]
    for scale in scales:
        answer = " ".join(record["sentences"][scale])
        items.append(
            _open_item(sid, len(items), "morphology", _pick(rng, _OPEN_QUESTIONS[scale]), answer)
            | {"fact": scale, "scale": scale}
        )
    items.append(
        _open_item(
            sid,
            len(items),
            "report",
            "Write a concise pathology report for this slide.",
            record["report"],
        )
        | {"fact": "report", "scale": "mixed"}
    )
    return items
