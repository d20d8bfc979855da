"""``hwsi``: the command-line tool for what a user does by hand.

Sub-commands:
    hwsi info SLIDE                 vendor, levels, dimensions, mpp and where it came from
    hwsi tile SLIDE --out DIR       tissue detection + patch/region grid for one slide
    hwsi segment INPUT --out DIR    StarDist nuclei of an image or slide region (GeoJSON, CSV)
    hwsi check [OUTDIR]             validate every store of a cohort (tiles, cells, caches, ...)
    hwsi check-config CONFIG        validate a workflow config against the schema
    hwsi ask --model M --slide S Q  answer a question about a slide (cache or slide file)
    hwsi report --model M --slide S write the slide's report (and its evidence maps)
    hwsi metrics METRICS_JSON       print an evaluation's metrics per family next to chance
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from hwsi_model import __version__
from hwsi_model.errors import HwsiError
from hwsi_model.logs import run_reporting_errors

log = logging.getLogger("hwsi")


def _cmd_info(args: argparse.Namespace) -> None:
    from hwsi_model.slide.reader import describe_slide

    info = describe_slide(args.slide, mpp_override=args.mpp)
    if not args.properties:
        info.pop("properties")
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(f"slide       {info['path']}")
    print(f"format      {info['format'] or 'unknown'}")
    print(f"vendor      {info['vendor']}")
    print(f"dimensions  {info['dimensions'][0]} x {info['dimensions'][1]} px (level 0)")
    if info["mpp"] is None:
        print(f"mpp         unknown: {' '.join(str(info['mpp_problem']).split())}")
    else:
        w_mm, h_mm = (v / 1000 for v in info["size_um"])
        print(f"size        {w_mm:.3f} x {h_mm:.3f} mm")
        print(
            f"mpp         {info['mpp_x']:.4f} x {info['mpp_y']:.4f} um/px "
            f"(from {info['mpp_source']})"
        )
    if info["objective_power"]:
        print(f"objective   {info['objective_power']}x")
    print("levels")
    for lv in info["levels"]:
        w, h = lv["dimensions"]
        print(f"  {lv['level']:>2}  {w:>7} x {h:<7}  downsample {lv['downsample']:g}")
    for key, value in info.get("properties", {}).items():
        print(f"  {key} = {value}")


def _workflow_config(configfile: str | None = "config.yaml") -> dict:
    """The workflow config the defaults of a command come from: ``configfile`` when it exists,
    else the schema's defaults (so the CLI and the workflow never disagree)."""
    from hwsi_model.workflow_config import load_config, validate_config

    if configfile and Path(configfile).is_file():
        return load_config(configfile)
    return validate_config({"samples": "-"})


def _cmd_tile(args: argparse.Namespace) -> None:
    from hwsi_model.tiling.steps import tiling_step, tissue_step
    from hwsi_model.tiling.tissue import TissueParams

    cfg = _workflow_config(args.configfile)
    params = TissueParams.from_config(cfg["tissue"])
    slide_id = Path(args.slide).stem
    out = Path(args.out)
    tissue_step(
        args.slide, slide_id, out / "tissue" / slide_id, params, mpp_override=args.slide_mpp
    )
    tiling_step(
        slide_id,
        out / "tissue" / slide_id,
        out / "tiles" / f"{slide_id}.zarr",
        out / "qc" / "tiling" / f"{slide_id}.png",
        mpp=args.mpp or cfg["mpp"],
        patch_size=args.patch_size or cfg["patch_size"],
        region_size=args.region_size or cfg["region_size"],
        min_tissue_fraction=cfg["tissue"]["min_tissue_fraction"],
        mpp_tolerance=cfg["mpp_tolerance"],
    )


def _input_file(path: str | Path, what: str) -> Path:
    """``path`` if it is a file, else one clear error naming ``what`` it should be."""
    p = Path(path)
    if p.is_dir():
        raise HwsiError(f"{p} is a folder; give the {what}")
    if not p.is_file():
        raise HwsiError(f"{p} does not exist ({what})")
    return p


def _output_folder(path: str | Path) -> str:
    """A workflow ``outdir`` that exists and is a folder."""
    if not Path(path).is_dir():
        what = "is a file" if Path(path).exists() else "does not exist"
        raise HwsiError(f"outdir {path} {what}; give the workflow's output folder")
    return str(path)


def _cmd_segment(args: argparse.Namespace) -> None:
    from hwsi_model.cells.model_registry import load_stardist
    from hwsi_model.cells.single_image import segment_input

    region = None
    if args.region:
        parts = args.region.split(",")
        if len(parts) != 4 or not all(p.strip().lstrip("-").isdigit() for p in parts):
            raise HwsiError(f"--region must be x,y,w,h in level-0 px, got {args.region!r}")
        region = tuple(int(v) for v in parts)
    _input_file(args.input, "input image or slide")
    model, _ = load_stardist(args.model, allow_download=args.allow_download)
    segment_input(
        args.input,
        args.out,
        model,
        args.model_mpp,
        mpp=args.mpp,
        region=region,
        prob_thresh=args.prob_thresh,
        nms_thresh=args.nms_thresh,
        min_hematoxylin=args.min_hematoxylin,
    )


def _cmd_check(args: argparse.Namespace) -> None:
    from hwsi_model.data.check import KINDS, check_cohort, excluded_slides

    outdir = _output_folder(args.outdir or _workflow_config()["outdir"])
    results = check_cohort(outdir)
    excluded = excluded_slides(outdir)
    for slide, failure in sorted(excluded.items()):
        print(f"EXCLUDED  {slide}: {failure.describe()}")
    if excluded:
        print(f"{len(excluded)} slide(s) excluded after a failure (`hwsi retry-failed {outdir}`)")
    if not results:
        if excluded:
            return
        raise HwsiError(f"no stores under {outdir} ({', '.join(KINDS)})")
    bad, total = [], 0
    for kind, stores in results.items():
        for slide, problems in stores.items():
            total += 1
            name = f"{kind}/{slide}"
            print(
                f"{'BAD' if problems else 'ok '}  {name}"
                + (f": {'; '.join(problems)}" if problems else "")
            )
            if problems:
                bad.append(name)
    print(f"{total - len(bad)} valid, {len(bad)} bad store(s)")
    if bad:
        raise HwsiError(f"{len(bad)} invalid store(s): {', '.join(bad)}")


def _cmd_retry_failed(args: argparse.Namespace) -> None:
    from hwsi_model.data.check import excluded_slides
    from hwsi_model.data.failures import remove_placeholders
    from hwsi_model.data.layout import OutputLayout

    outdir = _output_folder(args.outdir or _workflow_config()["outdir"])
    excluded = excluded_slides(outdir)
    removed = remove_placeholders(outdir)
    # Snakemake does not rebuild a missing intermediate output while what was built from it
    # is present: the cohort tables go too (rebuilt by the next run from the same inputs).
    layout = OutputLayout(outdir)
    tables = [Path(p) for p in (layout.tiling_summary, layout.manifest, layout.failures)]
    for table in tables if removed else []:
        table.unlink(missing_ok=True)
    for slide in sorted(excluded):
        print(f"will retry {slide} ({excluded[slide].describe()})")
    print(
        f"{len(excluded)} slide(s): {len(removed)} failure placeholder(s) and the cohort "
        "tables removed; the next snakemake run tries them again"
    )


def _cmd_check_config(args: argparse.Namespace) -> None:
    from hwsi_model.samples import read_sample_sheet
    from hwsi_model.workflow_config import load_config

    cfg = load_config(args.config)
    samples = read_sample_sheet(cfg["samples"])
    bad = [
        f"{s.slide_id} ({s.path}: {'not readable' if Path(s.path).is_file() else 'missing'})"
        for s in samples.values()
        if not (Path(s.path).is_file() and os.access(s.path, os.R_OK))
    ]
    if bad:
        shown = "; ".join(bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise HwsiError(
            f"config keys OK, but {len(bad)} of {len(samples)} slide file(s) in "
            f"{cfg['samples']} cannot be read: {shown}"
        )
    log.info("config OK; %d slide(s) in %s, every file present", len(samples), cfg["samples"])


def _cmd_ask(args: argparse.Namespace) -> None:
    from hwsi_model.evaluation.ask import REPORT_PROMPT, ask, prepare_cache
    from hwsi_model.model.checkpoint import load_model_folder

    question = getattr(args, "question", None) or REPORT_PROMPT
    cache, slide_file = Path(args.slide), None
    if not (cache.is_dir() and cache.suffix == ".zarr"):
        slide_file = cache
        cache = prepare_cache(
            args.slide,
            args.results or _workflow_config(args.configfile)["outdir"],
            args.configfile,
            args.slide_id,
            args.mpp,
            args.cores,
        )
    from hwsi_model.devices import resolve_device

    model = load_model_folder(args.model).to(resolve_device(args.device))
    answer = ask(
        model, cache, question, evidence_dir=args.evidence, num_beams=args.beams,
        max_new_tokens=args.max_new_tokens, slide_path=args.slide_file or slide_file,
    )  # fmt: skip
    if args.json:
        print(json.dumps(answer.to_dict(), indent=2))
    else:
        print(answer.answer)
    for name, path in answer.pictures.items():
        log.info("evidence (%s): %s", name, path)


def _cmd_metrics(args: argparse.Namespace) -> None:
    from hwsi_model.evaluation.pipeline import summary_lines

    path = _input_file(args.metrics, "metrics file (the workflow's evaluate rule writes it)")
    doc = json.loads(path.read_text())
    print(f"model {doc.get('model')} on the {doc.get('split')} split ({path})")
    for line in summary_lines(doc):
        print(line)
    for direction, r in (doc.get("retrieval") or {}).items():
        print(f"retrieval {direction}: recall@1 {r['r1']:.3f} (chance {r['chance_r1']:.3f}), "
              f"MRR {r['mrr']:.3f}, n={r['n']}")  # fmt: skip
    z = doc.get("zero_shot")
    if z:
        print(f"zero-shot classification: accuracy {z['accuracy']:.3f} (chance {z['chance']:.3f})")
    e = doc.get("evidence_overlap")
    if e:
        auroc = "n/a" if e["auroc_mean"] is None else f"{e['auroc_mean']:.3f}"
        print(
            f"evidence vs lesion ({e['slides']} slides): top-10% patches in lesion "
            f"{e['top10_in_lesion_mean']:.3f} (lesion share {e['lesion_rate_mean']:.3f}), "
            f"AUROC {auroc}"
        )


def _ask_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="trained model folder (stage 3)")
    p.add_argument("--slide", required=True, help="the slide's cache (.zarr) or a slide file")
    p.add_argument("--evidence", help="folder for the evidence pictures (PNG)")
    p.add_argument("--results", help="the workflow's outdir (default: --configfile's outdir)")
    p.add_argument("--configfile", default="config.yaml", help="workflow config (slide files)")
    p.add_argument("--slide-id", help="id of a new slide's cache (default: the file name)")
    p.add_argument("--slide-file", help="the slide file, if not where the cache recorded it")
    p.add_argument("--mpp", type=float, help="level-0 um/px overriding the file")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--beams", type=int, default=1, help="beam search width (1: greedy)")
    p.add_argument("--max-new-tokens", type=int, default=192)
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    p.add_argument("--device", default="auto", help="auto (CUDA when there is one), cpu, cuda")
    p.set_defaults(func=_cmd_ask)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hwsi", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"hwsi {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="describe a slide (vendor, levels, mpp and its source)")
    p.add_argument("slide")
    p.add_argument("--mpp", type=float, help="level-0 um/px overriding the file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--properties", action="store_true", help="also list every file property")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("tile", help="tissue detection and patch grid for one slide")
    p.add_argument("slide")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--configfile", default="config.yaml", help="defaults and tissue settings")
    p.add_argument("--mpp", type=float, help="target um/px (default: the config's mpp)")
    p.add_argument("--slide-mpp", type=float, help="level-0 um/px overriding the file")
    p.add_argument("--patch-size", type=int, help="px at --mpp (default: the config's)")
    p.add_argument("--region-size", type=int, help="region side in patches (default: config's)")
    p.set_defaults(func=_cmd_tile)

    p = sub.add_parser("segment", help="StarDist nuclei of an image or a slide region")
    p.add_argument("input", help="image (PNG/JPEG/TIFF, with --mpp) or slide (with --region)")
    p.add_argument("--out", required=True, help="output folder (GeoJSON for QuPath + CSV)")
    p.add_argument("--mpp", type=float, help="um/px of the image (or override of the slide's)")
    p.add_argument("--region", help="x,y,w,h in level-0 px of the slide")
    p.add_argument("--model", default="2D_versatile_he", help="pretrained name or model folder")
    p.add_argument("--model-mpp", type=float, default=0.25, help="um/px the model expects")
    p.add_argument("--prob-thresh", type=float)
    p.add_argument("--nms-thresh", type=float)
    p.add_argument(
        "--min-hematoxylin",
        type=float,
        default=0.03,
        help="drop detections paler than this haematoxylin OD (0: keep all)",
    )
    p.add_argument("--allow-download", action="store_true")
    p.set_defaults(func=_cmd_segment)

    p = sub.add_parser("check", help="validate every store of a cohort; list the bad ones")
    p.add_argument("outdir", nargs="?", help="the workflow's outdir (default: config.yaml's)")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("retry-failed", help="remove the failure placeholders of excluded slides")
    p.add_argument("outdir", nargs="?", help="the workflow's outdir (default: config.yaml's)")
    p.set_defaults(func=_cmd_retry_failed)

    p = sub.add_parser("check-config", help="validate a workflow config and its sample sheet")
    p.add_argument("config")
    p.set_defaults(func=_cmd_check_config)

    p = sub.add_parser("ask", help="answer a question about a slide, with evidence maps")
    p.add_argument("question")
    _ask_arguments(p)

    p = sub.add_parser("report", help="write a slide's report, with evidence maps")
    _ask_arguments(p)

    p = sub.add_parser("metrics", help="print an evaluation's metrics.json as a summary")
    p.add_argument("metrics", help="metrics.json of an evaluation run")
    p.set_defaults(func=_cmd_metrics)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting_errors(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
