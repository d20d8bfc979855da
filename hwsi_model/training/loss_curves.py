"""Loss curves of a training run: ``loss.csv`` (one row per optimizer step and per validation)
and ``loss.png`` (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from hwsi_model.atomic import atomic_output

log = logging.getLogger(__name__)

COLUMNS = (
    "step",
    "epoch",
    "split",
    "loss",
    "lm_loss",
    "hc_loss",
    "cs_loss",
    "lr",
    "samples_per_s",
    "tokens_per_s",
)


class LossLog:
    """Rows of ``loss.csv``, rewritten atomically on each flush.

    On resume (``keep_until`` = the resumed step) the rows of the interrupted run after that step
    are dropped: those steps are trained again.
    """

    def __init__(self, path: str | Path, keep_until: int | None = None, enabled: bool = True,
                 flush_every: int = 20):  # fmt: skip
        self.path = Path(path)
        self.enabled = enabled
        self.flush_every = flush_every
        self.rows: list[dict] = []
        if keep_until is not None and self.path.exists():
            with open(self.path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until]
            for r in self.rows:
                r["step"], r["epoch"] = int(r["step"]), int(r["epoch"])
        self._pending = 0

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self._pending += 1
        if self._pending >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            w.writeheader()
            for r in self.rows:
                w.writerow({k: "" if r.get(k) is None else r[k] for k in COLUMNS})
        self._pending = 0


def plot_losses(rows: list[dict], path: str | Path, title: str = "") -> None:
    """Train loss per step (and its components) and validation loss per epoch, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(split: str, key: str) -> tuple[list[int], list[float]]:
        pts = [
            (int(r["step"]), float(r[key]))
            for r in rows
            if r["split"] == split and r.get(key) not in (None, "")
        ]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style in (("loss", "-"), ("lm_loss", ":"), ("hc_loss", ":"), ("cs_loss", ":")):
        x, y = series("train", key)
        if y and any(v != 0 for v in y):
            ax.plot(x, y, style, label=f"train {key}")
    x, y = series("val", "loss")
    if y:
        ax.plot(x, y, "o-", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
