"""The demo LLM's text pretraining: option re-ordering keeps each answer on its option, only the
training slides' reports are used, and pretraining teaches the model to read the question."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hwsi_model.data.text_records import InstructionItem
from hwsi_model.demo.llm import (
    build_demo_llm,
    demo_llm_texts,
    option_permutations,
    pretraining_texts,
)

ITEM = InstructionItem(
    slide_id="s1",
    question="Which diagnosis?\nA) Benign\nB) Low-grade\nC) High-grade\nAnswer with the letter.",
    answer="C) High-grade. Large nuclei.",
    question_type="closed",
    options=["Benign", "Low-grade", "High-grade"],
    answer_letter="C",
)


def test_option_permutations_follow_the_answer() -> None:
    pairs = option_permutations(ITEM, limit=6)
    assert len(pairs) == 6 and pairs[0] == (ITEM.question, ITEM.answer)
    assert len({q for q, _ in pairs}) == 6
    for question, answer in pairs:
        letter, _, rest = answer.partition(") ")
        assert rest == "High-grade. Large nuclei."
        assert f"\n{letter}) High-grade\n" in question
        assert question.startswith("Which diagnosis?\n") and question.endswith("the letter.")


def test_option_permutations_leave_other_items_alone() -> None:
    open_item = InstructionItem(slide_id="s1", question="Describe.", answer="Text.")
    assert option_permutations(open_item) == [("Describe.", "Text.")]
    unlisted = InstructionItem(**{**ITEM.__dict__, "question": "Which diagnosis?"})
    assert option_permutations(unlisted) == [(unlisted.question, ITEM.answer)]


def _demo_files(tmp_path: Path) -> tuple[Path, Path]:
    items = []
    for sid, (letter, text) in {"s1": ("A", "Yes"), "s2": ("B", "No")}.items():
        items.append(
            {
                "id": f"{sid}_q0",
                "slide_id": sid,
                "conversations": [
                    {"from": "human", "value": "<image>\nIs it dense?\nA) Yes\nB) No"},
                    {"from": "gpt", "value": f"{letter}) {text}."},
                ],
                "question_type": "closed",
                "options": ["Yes", "No"],
                "answer": letter,
            }
        )
    vqa = tmp_path / "train.json"
    vqa.write_text(json.dumps(items))
    reports = tmp_path / "reports.jsonl"
    reports.write_text(
        "".join(
            json.dumps({"slide_id": s, "report": f"Report of {s}."}) + "\n"
            for s in ("s1", "s2", "held_out")
        )
    )
    return vqa, reports


def test_pretraining_texts_use_only_the_items_slides(tmp_path: Path) -> None:
    vqa, reports = _demo_files(tmp_path)
    texts = pretraining_texts([vqa], reports)
    assert (None, "Report of s1.") in texts and (None, "Report of s2.") in texts
    assert not any("held_out" in a for _, a in texts)
    qa = [(q, a) for q, a in texts if q is not None]
    assert len(qa) == 4  # two items, each in both option orders
    assert all("<image>" not in q for q, _ in qa)
    assert ("Is it dense?\nA) No\nB) Yes", "B) Yes.") in qa


def test_no_held_out_text_reaches_the_tokenizer_or_the_pretraining(tmp_path: Path) -> None:
    vqa, reports = _demo_files(tmp_path)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("slide_id,cache,split\ns1,c1.zarr,train\ns2,c2.zarr,val\n")
    corpus, pairs = demo_llm_texts([vqa], reports, manifest, split="train")
    assert "Report of s1." in corpus and (None, "Report of s1.") in pairs
    text = " ".join(corpus) + " ".join(a for _, a in pairs)
    assert "s2" not in text and "held_out" not in text and "B) No." not in text
    assert all(q is None or "A) Yes" in q or "B) Yes" in q for q, _ in pairs)
    with pytest.raises(ValueError, match="no slide in split 'test'"):
        demo_llm_texts([vqa], reports, manifest, split="test")


def test_pretraining_teaches_the_question(tmp_path: Path) -> None:
    """After pretraining, the answer to a question depends on which question it is."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    qa = {"What colour is the sky?": "Blue.", "What colour is grass?": "Green."}
    pairs = list(qa.items())
    out = build_demo_llm(
        tmp_path / "llm", [f"{q} {a}" for q, a in pairs] * 4, hidden=32, layers=1,
        vocab_size=300, pretrain=pairs, pretrain_steps=200,
    )  # fmt: skip
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    for q, a in pairs:
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=4, do_sample=False)
        text = tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True)
        assert text.strip().startswith(a), (q, text)
