"""`posekit data`: convert datasets between tools, look at a recipe's data, estimate OKS sigmas,
cache OpenPose ignore masks."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "convert, look at and measure datasets (convert, show, stats, sigmas, coco-masks)"
EPILOG = """examples:
  posekit data convert my-pose/data.yaml --to coco runs/my-pose-coco          # YOLO-pose -> COCO
  posekit data convert ann.json --images imgs --skeleton my.yaml --to yolo runs/my-yolo
  posekit data convert dlc-project/config.yaml --to coco runs/dlc-coco        # DeepLabCut -> COCO
  posekit data convert cvat-task/annotations.xml --to coco runs/cvat-coco     # CVAT for images -> COCO
  posekit data show configs/keypoints_synthetic.yaml split=train --n 16 --out runs/show
  posekit data stats configs/keypoints_synthetic.yaml --json runs/stats.json
  posekit data sigmas annotator_a.json annotator_b.json                       # OKS sigmas, YAML to paste
  posekit data coco-masks annotations/person_keypoints_train2017.json train2017 --out masks/train2017
  posekit train configs/coco_openpose.yaml data.mask_cache=masks/train2017 ..."""


def _config(args):
    from posekit.engine.recipes import load_config
    overrides = [o for o in args.overrides if not o.startswith("split=")]
    split = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("split=")), args.split)
    return load_config(args.config, overrides), split


def cmd_convert(args) -> int:
    from posekit.data.formats.convert import convert
    skeleton = None
    if args.skeleton:
        from posekit.skeletons import get_skeleton, load_skeleton_yaml
        skeleton = load_skeleton_yaml(args.skeleton) if args.skeleton.endswith((".yaml", ".yml")) \
            else get_skeleton(args.skeleton)
    report = convert(args.src, args.to, args.out, fmt=args.format, images_dir=args.images, skeleton=skeleton,
                     images=args.image_mode, ndim=args.ndim, decimals=args.decimals, category_id=args.category_id)
    print(f"wrote {report['to']} to {args.out}: {report['images']} images, {report['people']} people "
          f"(from {report['from']}, splits {report['splits']})")
    for key in ("keypoints_outside_image", "crowd_regions_dropped", "occluded_written_visible"):
        if report.get(key):
            print(f"  note: {report[key]} {key.replace('_', ' ')} (YOLO cannot say these)")
    if report["skipped"]:
        print(f"  {len(report['skipped'])} bad record(s) skipped; the first: {report['skipped'][0]}")
    if not report["flip_pairs"]:
        print("  note: no flip pairs (a COCO source has none): pass --skeleton YAML for YOLO's flip_idx")
    return 0


def cmd_show(args) -> int:
    from posekit.engine.data_tools import show
    cfg, split = _config(args)
    paths = show(cfg, args.out, split=split, n=args.n, seed=args.seed)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_stats(args) -> int:
    from posekit.engine.data_tools import dataset_stats, format_stats
    cfg, split = _config(args)
    st = dataset_stats(cfg, split, check_images=not args.no_image_check)
    print(format_stats(st))
    if args.json:
        Path(args.json).write_text(json.dumps(st, indent=1))
    return 0


def cmd_sigmas(args) -> int:
    from posekit.engine.data_tools import format_sigmas, sigmas_from_files
    res = sigmas_from_files(args.files, category_id=args.category_id, iou_threshold=args.iou)
    print(format_sigmas(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


def cmd_coco_masks(args) -> int:
    from posekit.data.formats.coco import cache_ignore_masks
    n = cache_ignore_masks(args.ann, args.images, args.out)
    print(f"{n} non-empty ignore mask(s) written to {args.out} (with a manifest of every image covered)")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="{convert,show,stats,sigmas,coco-masks}")

    def add(name, text, fn):
        p = sub.add_parser(name, help=text, description=text)
        p.set_defaults(fn=fn)
        return p

    p = add("convert", "convert a dataset: COCO <-> YOLO-pose; DeepLabCut, Label Studio, CVAT -> COCO (a new folder)",
            cmd_convert)
    p.add_argument("src", help="COCO JSON, YOLO data YAML (or its folder), DeepLabCut config.yaml or CollectedData "
                               "file, Label Studio JSON export, CVAT for images annotations.xml")
    p.add_argument("--to", required=True, choices=["coco", "yolo"])
    p.add_argument("out", help="the new dataset's folder (must not exist or be empty)")
    p.add_argument("--format", choices=["coco", "yolo", "deeplabcut", "labelstudio", "cvat"],
                   help="the source's format (default: guessed)")
    p.add_argument("--images", help="a COCO / Label Studio / CVAT source's image folder")
    p.add_argument("--skeleton", help="skeleton name or YAML (flip pairs for YOLO's flip_idx from a COCO source)")
    p.add_argument("--image-mode", choices=["copy", "symlink"], default="copy", help="how images reach OUT")
    p.add_argument("--ndim", type=int, choices=[2, 3], default=3, help="YOLO: values per keypoint")
    p.add_argument("--decimals", type=int, default=6, help="YOLO: decimals of normalised coordinates")
    p.add_argument("--category-id", type=int, help="the keypoint category (class) when there are several")

    for name, text, fn in (("show", "a grid of pipeline items as the model sees them, and un-augmented", cmd_show),
                           ("stats", "images, people, keypoints per joint, box sizes, unreadable images, skipped "
                                     "records", cmd_stats)):
        p = add(name, text, fn)
        p.add_argument("config", help="recipe YAML or name")
        p.add_argument("overrides", nargs="*", help="split=NAME and key=value overrides")
        p.add_argument("--split", default="train")
        if name == "show":
            p.add_argument("--n", type=int, default=16, help="items to draw")
            p.add_argument("--out", required=True, help="folder for the PNGs")
            p.add_argument("--seed", type=int, help="augmentation seed (default: train.seed)")
        else:
            p.add_argument("--json", help="also write the numbers to this JSON file")
            p.add_argument("--no-image-check", action="store_true", help="do not open every image's header")

    p = add("sigmas", "OKS sigmas from repeated annotations of the same people (YAML to paste)", cmd_sigmas)
    p.add_argument("files", nargs="+", help="COCO keypoint file(s): one per annotator, or one with repeats")
    p.add_argument("--category-id", type=int)
    p.add_argument("--iou", type=float, default=0.5, help="box IoU that makes two annotations the same person")
    p.add_argument("--json", help="also write the estimate to this JSON file")

    p = add("coco-masks", "cache OpenPose ignore masks of a COCO file", cmd_coco_masks)
    p.add_argument("ann", help="COCO person-keypoints annotation file")
    p.add_argument("images", help="its image folder")
    p.add_argument("--out", required=True, help="folder for <image_id>.png masks")


def run(args) -> int:
    return args.fn(args)
