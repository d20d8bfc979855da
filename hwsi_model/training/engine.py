"""The DeepSpeed training loop shared by the three stages.

:func:`train_stage` wraps the model in :class:`StageModule` (stage 1: L_HC + L_CS in the alignment
space; stages 2-3: L_LM + the auxiliary losses in the LLM space), hands it with a
``torch.optim.AdamW`` (no compiled op) and a warm-up + cosine schedule to ``deepspeed.initialize``,
and runs epochs of a :class:`~hwsi_model.training.sampler.ResumableSampler`. Output folder::

    checkpoints/step0000100/   DeepSpeed checkpoints (trainable weights, optimizer, schedule,
    checkpoints/latest          client state: step, epoch, position in the epoch, RNG, early stop)
    loss.csv  loss.png          loss curves (train per optimizer step, validation per epoch)
    metrics.json                summary of the run
    model/                      the final self-contained model folder

``resume=True`` continues from ``checkpoints/latest`` at the saved step with the same data order.
Without a launcher (no ``RANK``/``WORLD_SIZE`` in the environment)
:func:`~hwsi_model.training.distributed.ensure_launch_env` sets up a single process; on a
machine without GPU DeepSpeed runs on the CPU with gloo.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from hwsi_model.atomic import write_text_atomic
from hwsi_model.data.pairs import PairDataset, TrainBatch, collate_examples
from hwsi_model.model.checkpoint import save_model_folder
from hwsi_model.model.hierarchy import UnitEmbeddings
from hwsi_model.model.mllm import HWSIModel, HWSIOutput
from hwsi_model.training.config import StageConfig, lr_lambda
from hwsi_model.training.distributed import init_deepspeed_distributed
from hwsi_model.training.loss_curves import LossLog, plot_losses
from hwsi_model.training.sampler import ResumableSampler
from hwsi_model.training.stage_model import configure_trainable

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
MODEL_DIR = "model"


# -- the per-stage forward --------------------------------------------------------------------


def _stack_units(parts: list[dict[str, UnitEmbeddings]]) -> dict[str, UnitEmbeddings]:
    """Concatenate per-report ``[1, T_i, D]`` units into ``[B, max T, D]`` with masks."""
    out = {}
    for scale in parts[0]:
        T = max(p[scale].emb.shape[1] for p in parts)
        D = parts[0][scale].emb.shape[2]
        emb = parts[0][scale].emb.new_zeros(len(parts), T, D)
        mask = torch.zeros(len(parts), T, dtype=torch.bool, device=emb.device)
        for i, p in enumerate(parts):
            t = p[scale].emb.shape[1]
            emb[i, :t], mask[i, :t] = p[scale].emb[0], p[scale].mask[0]
        out[scale] = UnitEmbeddings(emb, mask)
    return out


class StageModule(nn.Module):
    """What DeepSpeed wraps: ``forward(TrainBatch) -> HWSIOutput`` for one stage.

    Stage 1 with a frozen text encoder encodes each report's views once and reuses them
    (the text encoder gets no gradient, so its outputs never change).
    """

    def __init__(self, model: HWSIModel, config: StageConfig):
        super().__init__()
        self.model = model
        self.stage = config.stage
        self.aux = config.aux_losses
        self._text_cache: dict[str, dict[str, UnitEmbeddings]] = {}

    def train(self, mode: bool = True) -> StageModule:
        """Frozen sub-models (text encoder unless trained, the LLM in stage 2) stay in eval mode:
        no dropout noise in features that get no gradient (and reproducible resumes)."""
        super().train(mode)
        te, llm = self.model.text_encoder, self.model.llm
        if te is not None and not te.trainable:
            te.eval()
        if llm is not None and self.stage == 2:
            llm.eval()
        return self

    def _stage1_text(self, batch: TrainBatch) -> dict[str, UnitEmbeddings]:
        te = self.model.text_encoder
        if te is None:
            raise RuntimeError("stage 1 needs a text encoder")
        if batch.views is None:
            raise ValueError("stage 1 needs a report for every slide")
        if te.trainable:
            return te.encode_views(batch.views)
        parts = []
        for v in batch.views:
            key = v.paragraph
            if key not in self._text_cache:
                with torch.no_grad():
                    self._text_cache[key] = te.encode_views([v])
            parts.append(self._text_cache[key])
        return _stack_units(parts)

    def forward(self, batch: TrainBatch) -> HWSIOutput:
        device = next(self.model.visual.parameters()).device
        slides = batch.slides.to(device)
        if self.stage == 1:
            return self.model.alignment_losses(slides, text=self._stage1_text(batch))
        enc = {
            k: v.to(device) for k, v in self.model.processor(batch.questions, batch.answers).items()
        }
        views = batch.views if self.aux else None
        return self.model(slides, **enc, views=views)


# -- the loop ---------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """Summary of a stage run (also written to ``metrics.json``)."""

    stage: int
    steps: int
    epochs_done: int
    total_steps: int
    resumed_from: int | None
    first_loss: float | None
    last_loss: float | None
    best_val_loss: float | None
    stopped_early: bool
    seconds: float
    samples_per_s: float
    model_dir: str
    val_losses: list[float] = field(default_factory=list)


def _loader(ds: PairDataset, sampler, batch_size: int, workers: int, drop_last: bool) -> DataLoader:
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        collate_fn=collate_examples,
        num_workers=workers,
        persistent_workers=False,
    )


@torch.no_grad()
def validation_loss(engine, ds: PairDataset, cfg: StageConfig, rank: int, world: int) -> float:
    """Mean loss over the validation examples (weighted by batch size, summed over ranks)."""
    sampler = ResumableSampler(len(ds), shuffle=False, rank=rank, world_size=world)
    was_training = engine.module.training
    engine.eval()
    total = torch.zeros(2, dtype=torch.float64)
    for batch in _loader(ds, sampler, cfg.micro_batch_size, cfg.num_workers, drop_last=False):
        out = engine(batch)
        total += torch.tensor([float(out.loss) * len(batch), len(batch)], dtype=torch.float64)
    if world > 1:
        torch.distributed.all_reduce(total)
    engine.train(was_training)
    return float(total[0] / total[1].clamp(min=1))


def _prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    tags = sorted(p for p in ckpt_dir.glob("step*") if p.is_dir())
    for p in tags[: max(0, len(tags) - keep)]:
        shutil.rmtree(p, ignore_errors=True)


FINGERPRINT_FILE = "run_fingerprint.txt"


def run_fingerprint(cfg, params: list[torch.Tensor]) -> str:
    """Identity of a run: its stage settings and its starting trainable weights (a sample of
    each tensor, so that a multi-GB model is not hashed whole)."""
    h = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
    for p in params:
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().reshape(-1)[:1024].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _same_run(ckpt_dir: Path, fingerprint: str) -> bool:
    f = ckpt_dir / FINGERPRINT_FILE
    return f.is_file() and f.read_text().strip() == fingerprint


def train_stage(
    model: HWSIModel,
    cfg: StageConfig,
    train_ds: PairDataset,
    out_dir: str | Path,
    val_ds: PairDataset | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_at_step: int | None = None,
) -> TrainResult:
    """Train ``model`` for stage ``cfg.stage`` and write the output folder (module docstring).

    ``stop_at_step`` ends the run after that optimizer step with a checkpoint but without the
    final model folder, as a job killed by its time limit would (then run again with ``resume``).
    """
    rank, world = init_deepspeed_distributed()
    import deepspeed

    out = Path(out_dir)
    ckpt_dir = out / CHECKPOINT_DIR
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "stage_config.json")
    torch.manual_seed(cfg.seed)
    trainable = configure_trainable(model, cfg)
    if not trainable:
        raise RuntimeError(f"stage {cfg.stage}: nothing to train")
    module = StageModule(model, cfg)
    params = [p for p in module.parameters() if p.requires_grad]

    sampler = ResumableSampler(len(train_ds), seed=cfg.seed, rank=rank, world_size=world)
    micro_per_epoch = len(sampler.epoch_indices(0)) // cfg.micro_batch_size
    steps_per_epoch = micro_per_epoch // cfg.grad_accum
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(train_ds)} training examples are too few for micro-batch "
            f"{cfg.micro_batch_size} x accumulation {cfg.grad_accum} x {world} rank(s)"
        )
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)

    fingerprint = run_fingerprint(cfg, params)  # before ZeRO partitions anything
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))
    engine, _, _, _ = deepspeed.initialize(
        model=module,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        model_parameters=params,
        config=cfg.deepspeed_config(world),
    )
    state = {"step": 0, "epoch": 0, "micro_in_epoch": 0, "best_val": math.inf, "bad_epochs": 0}
    resumed_from = None
    if resume and (ckpt_dir / "latest").exists() and not _same_run(ckpt_dir, fingerprint):
        # Settings or starting weights changed (e.g. more epochs, a retrained previous stage):
        # the checkpoint belongs to another run, continuing it would mix the two.
        log.warning(
            "stage %d: checkpoints in %s are from other settings or starting weights; "
            "training this stage afresh",
            cfg.stage,
            ckpt_dir,
        )
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    if resume and (ckpt_dir / "latest").exists():
        path, client = engine.load_checkpoint(str(ckpt_dir), load_module_strict=False)
        if path is None:
            raise RuntimeError(f"could not load the checkpoint in {ckpt_dir}")
        rng = client.pop("rng", None)
        state.update({k: client[k] for k in state if k in client})
        if rng is not None:
            torch.set_rng_state(rng)
        resumed_from = state["step"]
        log.info("resumed from %s at step %d (epoch %d)", path, state["step"], state["epoch"])

    losses = LossLog(
        out / "loss.csv", keep_until=state["step"] if resumed_from else None, enabled=rank == 0
    )

    def checkpoint() -> None:
        # Before the checkpoint becomes ``latest``: the loss rows up to this step (and, for a
        # first checkpoint, the run's fingerprint) are on disk, so a process killed at any point
        # (SIGKILL) resumes with its whole loss history, its first checkpoint included.
        losses.flush()
        if rank == 0 and not (ckpt_dir / "latest").exists():
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(ckpt_dir / FINGERPRINT_FILE, fingerprint)
        client = {**state, "rng": torch.get_rng_state()}
        engine.save_checkpoint(
            str(ckpt_dir),
            tag=f"step{state['step']:07d}",
            client_state=client,
            exclude_frozen_parameters=True,
        )
        if rank == 0:
            write_text_atomic(ckpt_dir / FINGERPRINT_FILE, fingerprint)
            _prune_checkpoints(ckpt_dir, cfg.keep_checkpoints)

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps,
        initial=state["step"],
        disable=not progress or rank != 0,
        desc=f"stage {cfg.stage}",
    )
    engine.train()
    t_start = time.perf_counter()
    n_samples, first_loss, last_loss, stopped_early = 0, None, None, False
    val_losses: list[float] = []
    fresh = {"loss": 0.0, "lm": None, "hc": None, "cs": None, "n": 0, "samples": 0, "tokens": 0}
    acc = dict(fresh)
    t_step = time.perf_counter()
    while state["step"] < total_steps and state["epoch"] < cfg.epochs:
        sampler.set_epoch(state["epoch"], start=state["micro_in_epoch"] * cfg.micro_batch_size)
        loader = _loader(train_ds, sampler, cfg.micro_batch_size, cfg.num_workers, drop_last=True)
        for batch in loader:
            if state["micro_in_epoch"] >= steps_per_epoch * cfg.grad_accum:
                break
            result = engine(batch)
            engine.backward(result.loss)
            engine.step()
            state["micro_in_epoch"] += 1
            acc["loss"] += float(result.loss.detach())
            for key, value in (
                ("lm", result.lm_loss),
                ("hc", result.hc_loss),
                ("cs", result.cs_loss),
            ):
                if value is not None:
                    acc[key] = (acc[key] or 0.0) + float(value.detach())
            acc["n"] += 1
            acc["samples"] += len(batch) * world
            if result.attention_mask is not None:
                acc["tokens"] += int(result.attention_mask.sum()) * world
            if state["micro_in_epoch"] % cfg.grad_accum:
                continue
            state["step"] += 1
            dt = max(time.perf_counter() - t_step, 1e-9)
            n = acc["n"]
            row = {
                "step": state["step"],
                "epoch": state["epoch"],
                "split": "train",
                "loss": acc["loss"] / n,
                "lm_loss": None if acc["lm"] is None else acc["lm"] / n,
                "hc_loss": None if acc["hc"] is None else acc["hc"] / n,
                "cs_loss": None if acc["cs"] is None else acc["cs"] / n,
                "lr": engine.get_lr()[0],
                "samples_per_s": acc["samples"] / dt,
                "tokens_per_s": acc["tokens"] / dt,
            }
            losses.add(row)
            n_samples += acc["samples"]
            first_loss = row["loss"] if first_loss is None else first_loss
            last_loss = row["loss"]
            bar.update(1)
            bar.set_postfix(
                loss=f"{row['loss']:.4f}",
                sps=f"{row['samples_per_s']:.1f}",
                tps=f"{row['tokens_per_s']:.0f}",
            )
            if state["step"] % max(1, cfg.log_every) == 0:
                log.info(
                    "stage %d step %d/%d loss %.4f lr %.2e %.1f samples/s %.0f tokens/s",
                    cfg.stage, state["step"], total_steps, row["loss"], row["lr"],
                    row["samples_per_s"], row["tokens_per_s"],
                )  # fmt: skip
            acc = dict(fresh)
            t_step = time.perf_counter()
            if state["step"] >= total_steps:
                break
            if stop_at_step is not None and state["step"] >= stop_at_step:
                break
            if cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0:
                checkpoint()
        epoch_done = state["micro_in_epoch"] >= steps_per_epoch * cfg.grad_accum
        if not epoch_done or (stop_at_step is not None and state["step"] >= stop_at_step):
            break  # max_steps (or stop_at_step) reached inside the epoch
        state["epoch"] += 1
        state["micro_in_epoch"] = 0
        if val_ds is not None and cfg.validate:
            v = validation_loss(engine, val_ds, cfg, rank, world)
            val_losses.append(v)
            losses.add(
                {"step": state["step"], "epoch": state["epoch"] - 1, "split": "val", "loss": v}
            )
            log.info("stage %d epoch %d validation loss %.4f", cfg.stage, state["epoch"], v)
            if v < state["best_val"] - 1e-6:
                state["best_val"], state["bad_epochs"] = v, 0
            else:
                state["bad_epochs"] += 1
            patience = cfg.early_stopping_patience
            if patience is not None and state["bad_epochs"] >= patience:
                log.info("early stopping after %d epochs without improvement", patience)
                stopped_early = True
        if state["step"] < total_steps and not stopped_early:
            checkpoint()
        if stopped_early:
            break
    bar.close()
    checkpoint()
    seconds = time.perf_counter() - t_start
    interrupted = stop_at_step is not None and state["step"] < total_steps

    model_dir = out / MODEL_DIR
    if not interrupted:
        _save_final(engine, model, cfg, model_dir, rank)
    losses.flush()
    if rank == 0:
        plot_losses(losses.rows, out / "loss.png", title=f"stage {cfg.stage}")
    best = state["best_val"]
    result = TrainResult(
        stage=cfg.stage,
        steps=state["step"],
        epochs_done=state["epoch"],
        total_steps=total_steps,
        resumed_from=resumed_from,
        first_loss=first_loss,
        last_loss=last_loss,
        best_val_loss=None if math.isinf(best) else best,
        stopped_early=stopped_early,
        seconds=seconds,
        samples_per_s=n_samples / max(seconds, 1e-9),
        model_dir=str(model_dir),
        val_losses=val_losses,
    )
    if rank == 0:
        write_text_atomic(out / "metrics.json", json.dumps(result.__dict__, indent=2) + "\n")
    return result


def _save_final(engine, model: HWSIModel, cfg: StageConfig, model_dir: Path, rank: int) -> None:
    """Rank 0 writes the model folder (ZeRO-3 gathers the partitioned weights first). A fully
    fine-tuned LLM (stage 3, ``llm_tuning="full"``) is always written: it is part of the model."""
    save_llm = cfg.save_llm or (cfg.stage == 3 and cfg.llm_tuning == "full")
    if cfg.zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            if rank == 0:
                save_model_folder(model, model_dir, save_llm=save_llm)
    elif rank == 0:
        save_model_folder(model, model_dir, save_llm=save_llm)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
