"""The DeepSpeed training loop shared by the three stages.

:func:`train_stage` drives a :class:`StageTrainer`: it wraps the model in
:class:`~hwsi_model.training.stage_module.StageModule` (stage 1: L_HC + L_CS in the alignment
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

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from hwsi_model.atomic import write_text_atomic
from hwsi_model.data.pairs import PairDataset, collate_examples
from hwsi_model.model.checkpoint import save_model_folder
from hwsi_model.model.mllm import HWSIModel, HWSIOutput
from hwsi_model.training.checkpoints import CHECKPOINT_DIR, StageCheckpoints, run_fingerprint
from hwsi_model.training.distributed import init_deepspeed_distributed
from hwsi_model.training.loss_curves import LossLog, plot_losses
from hwsi_model.training.sampler import ResumableSampler
from hwsi_model.training.stage_config import StageConfig, lr_lambda
from hwsi_model.training.stage_model import configure_trainable
from hwsi_model.training.stage_module import StageModule

__all__ = ["CHECKPOINT_DIR", "MODEL_DIR", "StageTrainer", "TrainResult", "train_stage"]

log = logging.getLogger(__name__)

MODEL_DIR = "model"


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


class _StepMeter:
    """Losses, samples and tokens of the micro-batches of one optimizer step."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss, self.n, self.samples, self.tokens = 0.0, 0, 0, 0
        self.parts: dict[str, float | None] = {"lm": None, "hc": None, "cs": None}
        self.t0 = time.perf_counter()

    def add(self, result: HWSIOutput, batch_size: int, world: int) -> None:
        self.loss += float(result.loss.detach())
        for key, value in (("lm", result.lm_loss), ("hc", result.hc_loss), ("cs", result.cs_loss)):
            if value is not None:
                self.parts[key] = (self.parts[key] or 0.0) + float(value.detach())
        self.n += 1
        self.samples += batch_size * world
        if result.attention_mask is not None:
            self.tokens += int(result.attention_mask.sum()) * world

    def row(self, step: int, epoch: int, lr: float) -> dict:
        dt, n = max(time.perf_counter() - self.t0, 1e-9), self.n
        parts = {f"{k}_loss": None if v is None else v / n for k, v in self.parts.items()}
        rates = {"samples_per_s": self.samples / dt, "tokens_per_s": self.tokens / dt}
        return {"step": step, "epoch": epoch, "split": "train", "loss": self.loss / n, **parts,
                "lr": lr, **rates}  # fmt: skip


class StageTrainer:
    """One stage run: set-up (:meth:`__init__`), resume (:meth:`resume`), the epochs
    (:meth:`run`: the step loop, then validation and early stopping per epoch) and the outputs
    (:meth:`finish`). :func:`train_stage` drives it."""

    def __init__(
        self,
        model: HWSIModel,
        cfg: StageConfig,
        train_ds: PairDataset,
        out_dir: str | Path,
        val_ds: PairDataset | None = None,
        stop_at_step: int | None = None,
    ) -> None:
        self.rank, self.world = init_deepspeed_distributed()
        self.model, self.cfg, self.train_ds, self.val_ds = model, cfg, train_ds, val_ds
        self.stop_at_step = stop_at_step
        self.out = Path(out_dir)
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            cfg.save(self.out / "stage_config.json")
        torch.manual_seed(cfg.seed)
        if not configure_trainable(model, cfg):
            raise RuntimeError(f"stage {cfg.stage}: nothing to train")
        module = StageModule(model, cfg)
        params = [p for p in module.parameters() if p.requires_grad]
        self.sampler = ResumableSampler(
            len(train_ds), seed=cfg.seed, rank=self.rank, world_size=self.world
        )
        self.steps_per_epoch, self.total_steps = self._plan_steps()
        # The fingerprint before ZeRO partitions anything.
        self.checkpoints = StageCheckpoints(
            self.out, run_fingerprint(cfg, params), cfg.keep_checkpoints, self.rank
        )
        self.engine = self._deepspeed_engine(module, params)
        self.state = {
            "step": 0, "epoch": 0, "micro_in_epoch": 0, "best_val": math.inf, "bad_epochs": 0,
        }  # fmt: skip
        self.resumed_from: int | None = None
        self.losses = LossLog(self.out / "loss.csv", enabled=self.rank == 0)
        self.first_loss: float | None = None
        self.last_loss: float | None = None
        self.n_samples = 0
        self.val_losses: list[float] = []
        self.stopped_early = False
        self.seconds = 0.0

    def _plan_steps(self) -> tuple[int, int]:
        """Optimizer steps per epoch and in all (``epochs``, capped by ``max_steps``)."""
        cfg = self.cfg
        micro = len(self.sampler.epoch_indices(0)) // cfg.micro_batch_size
        per_epoch = micro // cfg.grad_accum
        if per_epoch == 0:
            raise ValueError(
                f"{len(self.train_ds)} training examples are too few for micro-batch "
                f"{cfg.micro_batch_size} x accumulation {cfg.grad_accum} x {self.world} rank(s)"
            )
        total = cfg.epochs * per_epoch
        return per_epoch, total if cfg.max_steps is None else min(total, cfg.max_steps)

    def _deepspeed_engine(self, module: StageModule, params: list[torch.Tensor]):
        """``deepspeed.initialize`` with a ``torch.optim.AdamW`` (no compiled op) and the
        warm-up + schedule of :func:`~hwsi_model.training.stage_config.lr_lambda`."""
        import deepspeed

        cfg = self.cfg
        optimizer = torch.optim.AdamW(
            params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, self.total_steps))
        engine, _, _, _ = deepspeed.initialize(
            model=module,
            optimizer=optimizer,
            lr_scheduler=scheduler,
            model_parameters=params,
            config=cfg.deepspeed_config(self.world),
        )
        return engine

    def resume(self) -> None:
        """Continue from this run's latest checkpoint, keeping its loss rows up to that step."""
        client = self.checkpoints.resume(self.engine, self.cfg.stage)
        if client is None:
            return
        self.state.update({k: client[k] for k in self.state if k in client})
        self.resumed_from = self.state["step"]
        self.losses = LossLog(
            self.out / "loss.csv", keep_until=self.resumed_from or None, enabled=self.rank == 0
        )

    def checkpoint(self) -> None:
        # The loss rows up to this step are on disk before the checkpoint becomes ``latest``: a
        # process killed at any point (SIGKILL) resumes with its whole loss history.
        self.losses.flush()
        self.checkpoints.save(self.engine, self.state)

    @property
    def _stop_requested(self) -> bool:
        return self.stop_at_step is not None and self.state["step"] >= self.stop_at_step

    def run(self, progress: bool = True) -> None:
        """The epochs: steps, then (at each epoch's end) validation, early stopping and a
        checkpoint, until the last step, early stopping or ``stop_at_step``."""
        from tqdm.auto import tqdm

        cfg, state = self.cfg, self.state
        bar = tqdm(total=self.total_steps, initial=state["step"], desc=f"stage {cfg.stage}",
                   disable=not progress or self.rank != 0)  # fmt: skip
        self.engine.train()
        t_start = time.perf_counter()
        while state["step"] < self.total_steps and state["epoch"] < cfg.epochs:
            epoch_done = self._run_epoch(bar)
            if not epoch_done or self._stop_requested:
                break  # max_steps (or stop_at_step) reached inside the epoch
            state["epoch"] += 1
            state["micro_in_epoch"] = 0
            self._end_of_epoch()
            if state["step"] < self.total_steps and not self.stopped_early:
                self.checkpoint()
            if self.stopped_early:
                break
        bar.close()
        self.checkpoint()
        self.seconds = time.perf_counter() - t_start

    def _run_epoch(self, bar) -> bool:
        """Optimizer steps through the rest of the epoch; True when the epoch was completed."""
        cfg, state, engine = self.cfg, self.state, self.engine
        micro_per_epoch = self.steps_per_epoch * cfg.grad_accum
        self.sampler.set_epoch(state["epoch"], start=state["micro_in_epoch"] * cfg.micro_batch_size)
        loader = _loader(self.train_ds, self.sampler, cfg.micro_batch_size, cfg.num_workers,
                         drop_last=True)  # fmt: skip
        meter = _StepMeter()
        for batch in loader:
            if state["micro_in_epoch"] >= micro_per_epoch:
                break
            result = engine(batch)
            engine.backward(result.loss)
            engine.step()
            state["micro_in_epoch"] += 1
            meter.add(result, len(batch), self.world)
            if state["micro_in_epoch"] % cfg.grad_accum:
                continue
            state["step"] += 1
            self._log_step(meter.row(state["step"], state["epoch"], engine.get_lr()[0]), meter, bar)
            meter.reset()
            if state["step"] >= self.total_steps or self._stop_requested:
                break
            if cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0:
                self.checkpoint()
        return state["micro_in_epoch"] >= micro_per_epoch

    def _log_step(self, row: dict, meter: _StepMeter, bar) -> None:
        self.losses.add(row)
        self.n_samples += meter.samples
        self.first_loss = row["loss"] if self.first_loss is None else self.first_loss
        self.last_loss = row["loss"]
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}", sps=f"{row['samples_per_s']:.1f}",
                        tps=f"{row['tokens_per_s']:.0f}")  # fmt: skip
        if row["step"] % max(1, self.cfg.log_every) == 0:
            log.info(
                "stage %d step %d/%d loss %.4f lr %.2e %.1f samples/s %.0f tokens/s",
                self.cfg.stage, row["step"], self.total_steps, row["loss"], row["lr"],
                row["samples_per_s"], row["tokens_per_s"],
            )  # fmt: skip

    def _end_of_epoch(self) -> None:
        """Validation loss of the finished epoch; early stopping after ``patience`` epochs
        without a better one."""
        cfg, state = self.cfg, self.state
        if self.val_ds is None or not cfg.validate:
            return
        v = validation_loss(self.engine, self.val_ds, cfg, self.rank, self.world)
        self.val_losses.append(v)
        self.losses.add({"step": state["step"], "epoch": state["epoch"] - 1, "split": "val",
                         "loss": v})  # fmt: skip
        log.info("stage %d epoch %d validation loss %.4f", cfg.stage, state["epoch"], v)
        if v < state["best_val"] - 1e-6:
            state["best_val"], state["bad_epochs"] = v, 0
        else:
            state["bad_epochs"] += 1
        patience = cfg.early_stopping_patience
        if patience is not None and state["bad_epochs"] >= patience:
            log.info("early stopping after %d epochs without improvement", patience)
            self.stopped_early = True

    def finish(self) -> TrainResult:
        """The model folder (unless stopped at ``stop_at_step``), the loss plot, metrics.json."""
        cfg, state = self.cfg, self.state
        model_dir = self.out / MODEL_DIR
        if not (self.stop_at_step is not None and state["step"] < self.total_steps):
            _save_final(self.engine, self.model, cfg, model_dir, self.rank)
        self.losses.flush()
        if self.rank == 0:
            plot_losses(self.losses.rows, self.out / "loss.png", title=f"stage {cfg.stage}")
        best = state["best_val"]
        result = TrainResult(
            stage=cfg.stage,
            steps=state["step"],
            epochs_done=state["epoch"],
            total_steps=self.total_steps,
            resumed_from=self.resumed_from,
            first_loss=self.first_loss,
            last_loss=self.last_loss,
            best_val_loss=None if math.isinf(best) else best,
            stopped_early=self.stopped_early,
            seconds=self.seconds,
            samples_per_s=self.n_samples / max(self.seconds, 1e-9),
            model_dir=str(model_dir),
            val_losses=self.val_losses,
        )
        if self.rank == 0:
            write_text_atomic(
                self.out / "metrics.json", json.dumps(result.__dict__, indent=2) + "\n"
            )
        return result


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
    trainer = StageTrainer(model, cfg, train_ds, out_dir, val_ds, stop_at_step)
    if resume:
        trainer.resume()
    trainer.run(progress)
    return trainer.finish()


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
