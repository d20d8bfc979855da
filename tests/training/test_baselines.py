"""The baselines train from the method's stage-1 folder with the same engine and LLM:

- flat: one visual token (mean patch embedding through a projector); stage 2 trains only that
  projector, and slides with different patch embeddings give different tokens;
- flat_cells: the same token from the mean patch and the mean cell embedding: it changes with
  the cells alone;
- text only: no visual token; stage 3 trains only the LLM, and every slide gets the same answer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from train_helpers import D_C, D_P, tiny_model_config

from hwsi_model.model.batch import collate_slides
from hwsi_model.model.checkpoint import load_model_folder, save_model_folder
from hwsi_model.model.mllm import HWSIModel
from hwsi_model.training.engine import MODEL_DIR, train_stage
from hwsi_model.training.entry import build_datasets
from hwsi_model.training.stage_config import StageConfig
from hwsi_model.training.stage_model import load_stage_model, new_stage1_model


@pytest.fixture(scope="module")
def stage1_folder(tiny_text_encoder, tiny_llm, tmp_path_factory) -> Path:
    config = tiny_model_config(tiny_text_encoder)
    config.llm_path = str(tiny_llm)
    torch.manual_seed(0)
    model = new_stage1_model(config, StageConfig(stage=1), D_P, D_C)
    out = tmp_path_factory.mktemp("s1") / "model"
    save_model_folder(model, out)
    return out


def _cfg(stage: int, visual_input: str) -> StageConfig:
    return StageConfig(
        stage=stage, visual_input=visual_input, micro_batch_size=3, epochs=2, lr=1e-2,
        llm_tuning="full", checkpoint_every=100,
    )  # fmt: skip


def _train(folder: Path, cfg: StageConfig, cohort: dict, out: Path) -> tuple[HWSIModel, dict]:
    instr = [cohort["vqa_train"]] if cfg.stage == 3 else []
    train, _ = build_datasets(
        cfg.stage, cohort["manifest"], cohort["reports"], instr, val_split=None
    )
    model = load_stage_model(folder, cfg)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_stage(model, cfg, train, out, progress=False)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), start[n])}
    return model, {"changed": changed, "train": train}


def test_flat_baseline(stage1_folder, cohort, tmp_path) -> None:
    model, info = _train(stage1_folder, _cfg(2, "flat"), cohort, tmp_path)
    assert info["changed"] and all(n.startswith("flat_projector.") for n in info["changed"])
    slides = [info["train"][i].slide for i in range(2)]
    batch = collate_slides(slides)
    tokens, hierarchy = model.llm_visual_inputs(batch)
    assert hierarchy is None and [t.shape[0] for t in tokens] == [1, 1]
    assert not torch.allclose(tokens[0], tokens[1])
    saved = load_model_folder(tmp_path / MODEL_DIR)
    assert saved.config.visual_input == "flat"
    for name, p in saved.flat_projector.named_parameters():
        torch.testing.assert_close(p, dict(model.flat_projector.named_parameters())[name])
    assert len(saved.generate(batch, ["What is the diagnosis?"] * 2, max_new_tokens=3)) == 2


def test_flat_baseline_with_cell_features(stage1_folder, cohort, tmp_path) -> None:
    model, info = _train(stage1_folder, _cfg(2, "flat_cells"), cohort, tmp_path)
    assert info["changed"] and all(n.startswith("flat_projector.") for n in info["changed"])
    assert model.flat_projector is not None
    slide = info["train"][0].slide
    batch = collate_slides([slide, slide])
    assert batch.cell_mask.any()
    batch.cell_emb[1] = batch.cell_emb[1] + 1.0  # same patches, other cells
    tokens, hierarchy = model.llm_visual_inputs(batch)
    assert hierarchy is None and [t.shape[0] for t in tokens] == [1, 1]
    assert not torch.allclose(tokens[0], tokens[1])
    plain = HWSIModel(dataclasses.replace(model.config, visual_input="flat"))
    assert plain.flat_projector is not None  # the flat baseline's input: patches only
    width = plain.flat_projector.net[1].in_features
    assert model.flat_projector.net[1].in_features == width + D_C
    saved = load_model_folder(tmp_path / MODEL_DIR)
    assert saved.config.visual_input == "flat_cells"
    again, _ = saved.llm_visual_inputs(batch)
    torch.testing.assert_close(again[1], tokens[1])


def test_text_only_baseline(stage1_folder, cohort, tmp_path) -> None:
    model, info = _train(stage1_folder, _cfg(3, "none"), cohort, tmp_path)
    assert info["changed"] and all(n.startswith("llm.") for n in info["changed"])
    slides = [info["train"][i].slide for i in range(3)]
    batch = collate_slides(slides)
    tokens, _ = model.llm_visual_inputs(batch)
    assert [t.shape[0] for t in tokens] == [0, 0, 0]
    saved = load_model_folder(tmp_path / MODEL_DIR)
    answers = saved.generate(batch, ["What is the most likely diagnosis?"] * 3, max_new_tokens=4)
    assert len(set(answers)) == 1  # nothing in the input tells the slides apart


def test_unknown_visual_input_is_refused() -> None:
    with pytest.raises(ValueError, match="visual_input"):
        StageConfig(stage=2, visual_input="mean")
