"""``hwsi-demo`` (or ``python -m hwsi_model.demo``): the synthetic demo's own command line.

Sub-commands:
    hwsi-demo cohort OUTDIR         write the synthetic demo cohort (slides, sheet, reports, VQA,
                                    nucleus masks, lesion annotations)
    hwsi-demo llm --out DIR ...     build the demo's tiny causal LM from a cohort's training text
    hwsi-demo encoder --out DIR     build the demo's tiny random ViT patch encoder

The library (``hwsi``) never imports the demo; the demo uses the library like any user.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hwsi_model.errors import HwsiError
from hwsi_model.logs import run_reporting_errors

log = logging.getLogger("hwsi-demo")


def _cmd_cohort(args: argparse.Namespace) -> None:
    from hwsi_model.demo.cohort import generate_demo_cohort

    try:
        sheet = generate_demo_cohort(
            Path(args.outdir),
            n_slides=args.n_slides,
            seed=args.seed,
            scale=args.scale,
            test_fraction=args.test_fraction,
            val_fraction=args.val_fraction,
        )
    except ValueError as exc:  # a bad argument: one line, not a traceback
        raise HwsiError(str(exc)) from None
    log.info("demo cohort written; sample sheet: %s", sheet)


def _cmd_llm(args: argparse.Namespace) -> None:
    from hwsi_model.demo.llm import build_demo_llm_from_files

    build_demo_llm_from_files(
        args.out, args.instructions, args.reports, args.manifest, args.split,
        hidden=args.hidden, layers=args.layers, seed=args.seed, pretrain_steps=args.steps,
    )  # fmt: skip


def _cmd_encoder(args: argparse.Namespace) -> None:
    from hwsi_model.demo.tiny_encoder import build_tiny_encoder

    build_tiny_encoder(args.out, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hwsi-demo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("cohort", help="write the synthetic demo cohort")
    p.add_argument("outdir")
    p.add_argument("--n-slides", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="linear size factor (4 = large slides)")
    p.add_argument("--test-fraction", type=float, default=0.25, help="of each class's slides")
    p.add_argument("--val-fraction", type=float, default=0.125, help="of each class's slides")
    p.set_defaults(func=_cmd_cohort)

    p = sub.add_parser("llm", help="build the demo's tiny causal LM (training text only)")
    p.add_argument("--out", required=True)
    p.add_argument("--instructions", nargs="+", required=True, help="VQA / instruction files")
    p.add_argument("--reports", help="reports (JSONL or JSON)")
    p.add_argument("--manifest", help="use only the slides of --split in this manifest")
    p.add_argument("--split", default="train")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=400, help="text-only pretraining steps")
    p.set_defaults(func=_cmd_llm)

    p = sub.add_parser("encoder", help="build the demo's tiny random ViT encoder folder")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_encoder)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting_errors(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
