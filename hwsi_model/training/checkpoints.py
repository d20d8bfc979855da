"""A stage's DeepSpeed checkpoints: save, resume, and refuse another run's checkpoints.

``checkpoints/stepNNNNNNN/`` are DeepSpeed checkpoints (trainable weights, optimizer, schedule)
whose client state holds the loop's position (step, epoch, micro-batch in the epoch, RNG, early
stopping); ``checkpoints/latest`` names the newest; ``run_fingerprint.txt`` says which run they
belong to (its settings and starting weights), so a changed run starts afresh instead of mixing
two.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from hwsi_model.atomic import write_text_atomic
from hwsi_model.training.stage_config import StageConfig

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
FINGERPRINT_FILE = "run_fingerprint.txt"


def run_fingerprint(cfg: StageConfig, params: list[torch.Tensor]) -> str:
    """Identity of a run: its stage settings and its starting trainable weights (a sample of
    each tensor, so that a multi-GB model is not hashed whole)."""
    h = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
    for p in params:
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().reshape(-1)[:1024].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class StageCheckpoints:
    """The ``checkpoints/`` folder of one run (``fingerprint``); rank 0 writes the bookkeeping."""

    def __init__(self, out: Path, fingerprint: str, keep: int, rank: int) -> None:
        self.dir = out / CHECKPOINT_DIR
        self.fingerprint = fingerprint
        self.keep = keep
        self.rank = rank

    @property
    def exists(self) -> bool:
        return (self.dir / "latest").exists()

    def _ours(self) -> bool:
        f = self.dir / FINGERPRINT_FILE
        return f.is_file() and f.read_text().strip() == self.fingerprint

    def resume(self, engine, stage: int) -> dict[str, Any] | None:
        """The client state of the latest checkpoint of this run, loaded into ``engine`` (the
        torch RNG restored); ``None`` when there is none. Another run's checkpoints (settings
        or starting weights changed, e.g. more epochs or a retrained previous stage) are
        deleted: continuing them would mix the two runs."""
        if self.exists and not self._ours():
            log.warning(
                "stage %d: checkpoints in %s are from other settings or starting weights; "
                "training this stage afresh", stage, self.dir,
            )  # fmt: skip
            shutil.rmtree(self.dir, ignore_errors=True)
        if not self.exists:
            return None
        path, client = engine.load_checkpoint(str(self.dir), load_module_strict=False)
        if path is None:
            raise RuntimeError(f"could not load the checkpoint in {self.dir}")
        rng = client.pop("rng", None)
        if rng is not None:
            torch.set_rng_state(rng)
        log.info(
            "resumed from %s at step %s (epoch %s)", path, client.get("step"), client.get("epoch")
        )
        return client

    def save(self, engine, state: dict[str, Any]) -> None:
        """Checkpoint at ``state["step"]``; the fingerprint is on disk before the first
        checkpoint becomes ``latest`` (a run killed at any point is recognised as this one)."""
        if self.rank == 0 and not self.exists:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.dir / FINGERPRINT_FILE, self.fingerprint)
        engine.save_checkpoint(
            str(self.dir),
            tag=f"step{state['step']:07d}",
            client_state={**state, "rng": torch.get_rng_state()},
            exclude_frozen_parameters=True,
        )
        if self.rank == 0:
            write_text_atomic(self.dir / FINGERPRINT_FILE, self.fingerprint)
            tags = sorted(p for p in self.dir.glob("step*") if p.is_dir())
            for p in tags[: max(0, len(tags) - self.keep)]:
                shutil.rmtree(p, ignore_errors=True)
