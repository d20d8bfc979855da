"""Training entry point of one stage: ``python -m hwsi_model.training.entry --stage N ...``.

Runs as is (a single process: :func:`~hwsi_model.training.distributed.ensure_launch_env` sets
``RANK``/``WORLD_SIZE``/``MASTER_*`` when absent) or under a launcher for several processes::

    python -m hwsi_model.training.entry --stage 1 --manifest results/manifest.csv \\
        --reports cohort/reports.jsonl --model-config model.json --out results/training/stage1
    python -m hwsi_model.training.entry --stage 2 --manifest ... --reports ... \\
        --init results/training/stage1/model --llm /models/Qwen2.5-7B-Instruct --out .../stage2
    python -m hwsi_model.training.entry --stage 3 --manifest ... --reports ... \\
        --instructions cohort/vqa/train.json cohort/vqa/val.json --init .../stage2/model --out ...
    torchrun --nproc_per_node 4 -m hwsi_model.training.entry --stage 3 ...   # or: deepspeed

Data per stage: stage 1 pairs each slide with its report; stage 2 turns reports into caption
items ("write a report" -> report); stage 3 uses the instruction items (any format of
:mod:`hwsi_model.data.text_records`). Slides are split by the manifest's ``split`` column.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hwsi_model import provenance
from hwsi_model.data.manifest import read_manifest
from hwsi_model.data.pairs import PairDataset, SlideStore
from hwsi_model.data.text_records import (
    InstructionItem,
    read_instructions,
    read_reports,
    report_items,
    whole_conversations,
)
from hwsi_model.model.configuration import HWSIConfig
from hwsi_model.training.engine import TrainResult, train_stage
from hwsi_model.training.stage_config import StageConfig
from hwsi_model.training.stage_model import load_stage_model, new_stage1_model
from hwsi_model.workflow_config import config_hash

log = logging.getLogger(__name__)


def _model_config(spec: str | Path | dict | HWSIConfig | None) -> HWSIConfig:
    if spec is None:
        return HWSIConfig()
    if isinstance(spec, HWSIConfig):
        return spec
    if isinstance(spec, dict):
        return HWSIConfig.from_dict(spec)
    return HWSIConfig.load(spec)


def build_datasets(
    stage: int,
    manifest: str | Path,
    reports: str | Path | None = None,
    instructions: Sequence[str | Path] = (),
    instruction_format: str = "auto",
    train_split: str = "train",
    val_split: str | None = "val",
    in_memory: bool = False,
) -> tuple[PairDataset, PairDataset | None]:
    """Train and validation datasets of ``stage`` (see the module docstring)."""
    rows = read_manifest(manifest)
    recs = read_reports(reports) if reports else []
    if stage in (1, 2) and not recs:
        raise ValueError(f"stage {stage} needs reports (--reports)")
    items: list[InstructionItem] | None = None
    if stage == 2:
        items = report_items(recs)
    elif stage == 3:
        if not instructions:
            raise ValueError("stage 3 needs instruction files (--instructions)")
        items = [it for f in instructions for it in read_instructions(f, instruction_format)]
        items = whole_conversations(items)  # a conversation once, loss on every answer

    def dataset(split: str) -> PairDataset | None:
        split_rows = [r for r in rows if r.split == split]
        if not split_rows:
            return None
        try:
            return PairDataset(SlideStore(split_rows, in_memory=in_memory), items, recs)
        except ValueError as exc:  # slides in the split but no text for them: say which split
            hint = "; give its text, or set validate: false" if split == val_split else ""
            raise ValueError(f"split {split!r} of {manifest}: {exc}{hint}") from None

    train = dataset(train_split)
    if train is None:
        raise ValueError(f"no training example in split {train_split!r} of {manifest}")
    val = dataset(val_split) if val_split else None
    if val is None and val_split:
        log.warning("no %r split in %s: no validation, no early stopping", val_split, manifest)
    log.info("stage %d: %d training and %d validation examples", stage, len(train), len(val or []))
    return train, val


def run_stage(
    cfg: StageConfig,
    manifest: str | Path,
    out_dir: str | Path,
    init: str | Path | None = None,
    model_config: str | Path | dict | HWSIConfig | None = None,
    reports: str | Path | None = None,
    instructions: Sequence[str | Path] = (),
    instruction_format: str = "auto",
    llm_path: str | None = None,
    text_encoder_path: str | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Build data and model for ``cfg.stage`` and train it (:func:`train_stage`)."""
    train, val = build_datasets(
        cfg.stage, manifest, reports, instructions, instruction_format,
        val_split="val" if cfg.validate else None, in_memory=cfg.in_memory,
    )  # fmt: skip
    # Fresh weights (stage 1, and the modules a later stage adds) from the run's seed: the same
    # command builds the same starting model, so a killed run's checkpoint is recognised as
    # its own (run fingerprint) and resumed instead of restarted from step 0.
    torch.manual_seed(cfg.seed)
    if init is not None:
        model = load_stage_model(init, cfg, llm_path, text_encoder_path)
    elif cfg.stage == 1:
        config = _model_config(model_config)
        if text_encoder_path:
            config.text_encoder_path = text_encoder_path
        if llm_path:
            config.llm_path = llm_path
        first = train[0].slide
        model = new_stage1_model(
            config,
            cfg,
            first.patch_emb.shape[1],
            first.cell_emb.shape[1],
            first.region_grid.shape[1],
        )
    else:
        raise ValueError(f"stage {cfg.stage} starts from the previous stage's folder (--init)")
    result = train_stage(model, cfg, train, out_dir, val_ds=val, resume=resume, progress=progress)
    model_dir = Path(result.model_dir)
    if provenance.env_rank() == 0 and model_dir.is_dir():
        _record_provenance(
            model_dir,
            cfg,
            manifest,
            init,
            model_config,
            reports,
            instructions,
            llm_path,
            text_encoder_path,
        )
    return result


def _record_provenance(
    model_dir: Path,
    cfg: StageConfig,
    manifest: str | Path,
    init: str | Path | None,
    model_config: str | Path | dict | HWSIConfig | None,
    reports: str | Path | None,
    instructions: Sequence[str | Path],
    llm_path: str | None,
    text_encoder_path: str | None,
) -> None:
    """Write ``provenance.json`` into the model folder: code, settings hash, inputs (the manifest,
    the digest of its caches' provenance ids, the previous stage's folder, LLM, text)."""
    caches = [row.cache for row in read_manifest(manifest)] if Path(manifest).is_file() else []
    local = {
        "init": init,
        "model_config": model_config if isinstance(model_config, str | Path) else None,
        "reports": reports,
        "llm": llm_path if llm_path and Path(llm_path).exists() else None,
        "text_encoder": (
            text_encoder_path if text_encoder_path and Path(text_encoder_path).exists() else None
        ),
    }
    inputs = {
        "manifest": manifest,
        "caches": provenance.combined_fingerprint(caches),
        **local,
        **{f"instructions_{i}": p for i, p in enumerate(instructions)},
    }
    prov = provenance.describe(config_hash(cfg.to_dict()), inputs)
    provenance.write_provenance(model_dir, prov)
    log.info("stage %d model %s: provenance %s", cfg.stage, model_dir, prov["id"])


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", type=int, required=True, choices=(1, 2, 3))
    p.add_argument("--manifest", required=True, help="cohort manifest.csv")
    p.add_argument("--out", required=True, help="output folder of this stage")
    p.add_argument("--init", help="previous stage's model folder")
    p.add_argument("--model-config", help="HWSIConfig JSON (stage 1 from scratch)")
    p.add_argument("--config", help="stage settings: JSON or YAML file (StageConfig keys)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override settings")
    p.add_argument("--reports", help="WSI-report pairs (reports.jsonl, JSON or CSV)")
    p.add_argument("--instructions", nargs="*", default=[], help="instruction files (stage 3)")
    p.add_argument("--instruction-format", default="auto")
    p.add_argument("--llm", help="local folder of the causal LM (stages 2-3)")
    p.add_argument("--text-encoder", help="local folder of the text encoder")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed
    return p.parse_args(argv)


def load_stage_settings(
    path: str | Path | None, stage: int, overrides: Sequence[str] = ()
) -> StageConfig:
    """:class:`StageConfig` from a JSON/YAML file plus ``KEY=VALUE`` overrides."""
    data: dict[str, Any] = {}
    if path:
        text = Path(path).read_text()
        if str(path).endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    for item in overrides:
        key, _, value = item.partition("=")
        data[key.strip()] = _parse_value(value)
    data["stage"] = stage
    return StageConfig.from_dict(data)


def main(argv: Sequence[str] | None = None) -> int:
    from hwsi_model.logs import setup_logging

    if not logging.getLogger().handlers:  # the workflow script set up its log file already
        setup_logging()
    args = parse_args(argv)
    cfg = load_stage_settings(args.config, args.stage, args.set)
    result = run_stage(
        cfg,
        args.manifest,
        args.out,
        init=args.init,
        model_config=args.model_config,
        reports=args.reports,
        instructions=args.instructions,
        instruction_format=args.instruction_format,
        llm_path=args.llm,
        text_encoder_path=args.text_encoder,
        resume=args.resume,
        progress=not args.no_progress,
    )
    log.info(
        "stage %d done: %d steps, loss %s -> %s",
        cfg.stage,
        result.steps,
        result.first_loss,
        result.last_loss,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
