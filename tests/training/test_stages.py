"""Each stage for a few steps on a tiny synthetic cache with DeepSpeed on the CPU.

Per stage: a run is cut at a step mid-epoch (checkpoint written, no model folder), then resumed
with a freshly built model: it continues at the right step, the loss falls over the run, the
parameters the stage trains changed and all others are bit-identical to the starting point.
Stage 1 is also run uninterrupted: the resumed run ends with the same weights (same data order).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from train_helpers import D_C, D_P, tiny_model_config

from hwsi_model.evaluation.families import MULTIPLE_CHOICE
from hwsi_model.evaluation.runner import alignment_metrics, evaluate_models
from hwsi_model.model.checkpoint import load_model_folder
from hwsi_model.model.mllm import HWSIModel
from hwsi_model.training.engine import CHECKPOINT_DIR, MODEL_DIR, TrainResult, train_stage
from hwsi_model.training.entry import build_datasets
from hwsi_model.training.stage_config import StageConfig
from hwsi_model.training.stage_model import configure_trainable, load_stage_model, new_stage1_model

STOP = 3  # mid-epoch: 6 training slides, micro-batch 3 -> 2 steps per epoch


def stage_config(stage: int, **kw) -> StageConfig:
    base = {
        "stage": stage,
        "micro_batch_size": 3,
        "epochs": 3,
        "lr": 3e-3 if stage == 1 else 1e-2,
        "checkpoint_every": 2,
        "keep_checkpoints": 2,
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
    }
    return StageConfig(**{**base, **kw})


def snapshot(model: HWSIModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def read_rows(out: Path) -> list[dict]:
    with open(out / "loss.csv") as f:
        return list(csv.DictReader(f))


def interrupted_and_resumed(
    factory: Callable[[], HWSIModel], cfg: StageConfig, cohort: dict, out: Path
) -> tuple[HWSIModel, dict[str, torch.Tensor], list[str], TrainResult]:
    """Run to ``STOP``, check the checkpoint, resume with a new model; return the trained model,
    the starting weights, the trainable names and the resumed run's result."""
    instructions = [cohort["vqa_train"], cohort["vqa_val"]] if cfg.stage == 3 else []
    train, val = build_datasets(cfg.stage, cohort["manifest"], cohort["reports"], instructions)
    first = factory()
    start = snapshot(first)
    cut = train_stage(first, cfg, train, out, val_ds=val, progress=False, stop_at_step=STOP)
    assert cut.steps == STOP and not (out / MODEL_DIR).exists()
    ckpt = out / CHECKPOINT_DIR
    assert (ckpt / "latest").read_text().strip() == f"step{STOP:07d}"
    assert (ckpt / f"step{STOP:07d}" / "mp_rank_00_model_states.pt").exists()

    model = factory()
    trainable = configure_trainable(model, cfg)
    result = train_stage(model, cfg, train, out, val_ds=val, progress=False, resume=True)
    assert result.resumed_from == STOP and result.steps == result.total_steps == 6
    rows = read_rows(out)
    steps = [int(r["step"]) for r in rows if r["split"] == "train"]
    assert steps == list(range(1, 7))  # no step twice, none missing
    assert len(result.val_losses) == 2 and (out / "loss.png").stat().st_size > 0
    assert (out / MODEL_DIR / "config.json").exists()
    return model, start, trainable, result


def check_parameters(model: HWSIModel, start: dict, trainable: list[str]) -> None:
    names = set(trainable)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), start[n])]
    frozen_changed = [n for n in changed if n not in names]
    assert not frozen_changed, f"frozen parameters changed: {frozen_changed[:5]}"
    # Every trained tensor moved (the per-scale temperatures are one tensor, checked as such).
    unchanged = [n for n in names if n not in changed and "log_logit_scale" not in n]
    assert not unchanged, f"trainable parameters did not change: {unchanged[:5]}"


def train_losses(out: Path, key: str = "loss") -> list[float]:
    return [float(r[key]) for r in read_rows(out) if r["split"] == "train"]


@pytest.fixture(scope="module")
def stage1(cohort, tiny_text_encoder, tmp_path_factory):
    cfg = stage_config(1)
    out = tmp_path_factory.mktemp("stage1")

    def factory() -> HWSIModel:
        torch.manual_seed(0)
        return new_stage1_model(tiny_model_config(tiny_text_encoder), cfg, D_P, D_C)

    model, start, trainable, result = interrupted_and_resumed(factory, cfg, cohort, out)
    return {"model": model, "start": start, "trainable": trainable, "out": out, "cfg": cfg,
            "factory": factory, "result": result, "cohort": cohort}  # fmt: skip


def test_stage1_trains_alignment_and_resumes(stage1) -> None:
    check_parameters(stage1["model"], stage1["start"], stage1["trainable"])
    assert not any(n.startswith(("text_encoder.", "llm.")) for n in stage1["trainable"])
    losses = train_losses(stage1["out"])
    assert sum(losses[-2:]) < 0.9 * sum(losses[:2]), losses  # epoch 3 vs epoch 1
    hc = train_losses(stage1["out"], "hc_loss")
    assert hc[-1] < hc[0]
    assert stage1["result"].val_losses[-1] < stage1["result"].val_losses[0]


def test_stage1_trained_longer_retrieves_held_out_reports(
    stage1, cohort, tiny_text_encoder, tmp_path
) -> None:
    """Trained past the near-ties of a 3-epoch run, the alignment space ranks the held-out
    slides' reports (and slides for reports) better than chance: mean reciprocal rank above
    chance's in both directions, recall@1 above chance on average over the two (3 slides: one
    direction's recall@1 alone moves in steps of 1/3). The evaluation package's cosine retrieval."""
    cfg = stage_config(1, epochs=30, checkpoint_every=1000)
    train, val = build_datasets(1, cohort["manifest"], cohort["reports"])
    model = stage1["factory"]()
    train_stage(model, cfg, train, tmp_path, val_ds=val, progress=False)
    r = alignment_metrics(model, cohort["manifest"], "val", cohort["reports"])["retrieval"]
    for direction in ("slide_to_report", "report_to_slide"):
        m = r[direction]
        assert m["n"] == 3 and m["chance_r1"] == pytest.approx(1 / 3)
        assert m["mrr"] > (1 + 1 / 2 + 1 / 3) / 3, r  # chance: the mean of 1/rank
    mean_r1 = (r["slide_to_report"]["r1"] + r["report_to_slide"]["r1"]) / 2
    assert mean_r1 > 1 / 3, r


def test_stage1_resume_gives_the_uninterrupted_result(stage1, cohort, tmp_path) -> None:
    cfg = stage1["cfg"]
    train, val = build_datasets(1, cohort["manifest"], cohort["reports"])
    model = stage1["factory"]()
    train_stage(model, cfg, train, tmp_path, val_ds=val, progress=False)
    resumed = dict(stage1["model"].named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, resumed[name], rtol=0, atol=1e-6, msg=name)
    a = train_losses(tmp_path)
    b = train_losses(stage1["out"])
    assert a == pytest.approx(b, abs=1e-5)


def test_stage1_text_encoder_top_layers(stage1, cohort, tmp_path) -> None:
    cfg = stage_config(1, text_encoder_top_layers=1, epochs=1)
    train, _ = build_datasets(1, cohort["manifest"], cohort["reports"])
    model = load_stage_model(stage1["out"] / MODEL_DIR, cfg)
    start = snapshot(model)
    trainable = configure_trainable(model, cfg)
    te = [n for n in trainable if n.startswith("text_encoder.")]
    assert te and all(".layer.1." in n for n in te)  # the top one of two layers
    train_stage(model, cfg, train, tmp_path, progress=False)
    check_parameters(model, start, trainable)
    saved = load_model_folder(tmp_path / MODEL_DIR, load_llm=False)
    name = te[0].removeprefix("text_encoder.")
    trained = dict(model.text_encoder.named_parameters())[name]
    torch.testing.assert_close(dict(saved.text_encoder.named_parameters())[name], trained)


@pytest.fixture(scope="module")
def stage2(stage1, cohort, tiny_llm, tmp_path_factory):
    cfg = stage_config(2)
    out = tmp_path_factory.mktemp("stage2")
    init = stage1["out"] / MODEL_DIR

    def factory() -> HWSIModel:
        torch.manual_seed(1)
        return load_stage_model(init, cfg, llm_path=str(tiny_llm))

    model, start, trainable, _ = interrupted_and_resumed(factory, cfg, cohort, out)
    return {"model": model, "start": start, "trainable": trainable, "out": out}


def test_stage2_trains_projectors_into_the_frozen_llm(stage1, stage2) -> None:
    model, trainable = stage2["model"], stage2["trainable"]
    assert trainable and all(n.startswith(("visual.llm_projectors.", "hc_llm.")) for n in trainable)
    check_parameters(model, stage2["start"], trainable)
    # The stage-1 modules came through unchanged from the stage-1 folder.
    s1 = dict(stage1["model"].named_parameters())
    for name, p in model.named_parameters():
        if name.startswith("visual.ccaf."):
            assert torch.equal(p, s1[name]), name
    lm = train_losses(stage2["out"], "lm_loss")
    assert sum(lm[-2:]) < sum(lm[:2]), lm


def test_stage3_lora(stage2, cohort, tiny_llm, tmp_path_factory) -> None:
    cfg = stage_config(3, llm_tuning="lora")
    out = tmp_path_factory.mktemp("stage3")
    init = stage2["out"] / MODEL_DIR

    def factory() -> HWSIModel:
        torch.manual_seed(2)
        return load_stage_model(init, cfg)

    model, start, trainable, _ = interrupted_and_resumed(factory, cfg, cohort, out)
    assert any("lora_" in n for n in trainable)
    assert not any(n.startswith("llm.") and "lora_" not in n for n in trainable)
    check_parameters(model, start, trainable)
    lm = train_losses(out, "lm_loss")
    assert sum(lm[-2:]) < sum(lm[:2]), lm
    assert (out / MODEL_DIR / "lora_adapter").is_dir()
    run = evaluate_models(
        {"lora": out / MODEL_DIR}, cohort["manifest"], [cohort["vqa_val"]], out / "eval", "val"
    )
    closed = run["families"]["lora"][MULTIPLE_CHOICE]
    assert closed["n"] == 3 and closed["chance"] == pytest.approx(1 / 3)
    assert 0.0 <= closed["metrics"]["accuracy"] <= 1.0
    assert len((out / "eval" / "predictions" / "lora.jsonl").read_text().splitlines()) == 3
    reloaded = load_model_folder(out / MODEL_DIR)
    ours = dict(model.named_parameters())
    for name, p in reloaded.named_parameters():
        if "lora_B" in name or name.startswith("visual.llm_projectors."):
            torch.testing.assert_close(p, ours[name], msg=name)


def test_stage3_full_finetune_merged_folder(stage2, cohort, tmp_path) -> None:
    cfg = stage_config(3, llm_tuning="full", epochs=1, zero_stage=1)
    instructions = [cohort["vqa_train"], cohort["vqa_val"]]
    train, _ = build_datasets(3, cohort["manifest"], cohort["reports"], instructions)
    model = load_stage_model(stage2["out"] / MODEL_DIR, cfg)
    start = snapshot(model)
    trainable = configure_trainable(model, cfg)
    assert any(n.startswith("llm.") for n in trainable)
    train_stage(model, cfg, train, tmp_path, progress=False)
    check_parameters(model, start, trainable)
    assert (tmp_path / MODEL_DIR / "llm" / "config.json").exists()  # the tuned LLM is saved
    reloaded = load_model_folder(tmp_path / MODEL_DIR)
    name = next(n for n in trainable if n.startswith("llm.") and "layers.0" in n)
    torch.testing.assert_close(
        dict(reloaded.named_parameters())[name], dict(model.named_parameters())[name]
    )


def test_changed_settings_do_not_resume_an_old_run(stage1, cohort, tmp_path) -> None:
    """A checkpoint from other settings is not continued (it would mix two runs)."""
    train, _ = build_datasets(1, cohort["manifest"], cohort["reports"])
    cfg = stage1["cfg"]
    cut = train_stage(stage1["factory"](), cfg, train, tmp_path, progress=False, stop_at_step=STOP)
    assert cut.steps == STOP
    longer = stage_config(1, epochs=cfg.epochs + 1)
    result = train_stage(stage1["factory"](), longer, train, tmp_path, progress=False, resume=True)
    assert result.resumed_from is None and result.steps == result.total_steps
    same = train_stage(stage1["factory"](), longer, train, tmp_path, progress=False, resume=True)
    assert same.resumed_from == result.total_steps  # the same settings do resume
