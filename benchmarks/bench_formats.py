"""Formats from other tools train to the same metric (issue 23).

1. The committed DeepLabCut fixture (tests/fixtures/deeplabcut/single, written by pandas as DLC's
   GUI writes it) trains and evaluates straight from its config.yaml (data.format=deeplabcut).
2. The same data converted DLC -> COCO -> YOLO-pose: trained through the YOLO reader and, after
   YOLO -> COCO, through the COCO reader, with one seed: the two runs see the same samples (to
   the YOLO files' 6 decimals), so their metrics must agree.

    python benchmarks/bench_formats.py --steps 150 --out runs/bench_formats
Prints one JSON line per run and the verdict. CPU; about a minute per run on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from posekit.data.formats.convert import convert  # noqa: E402
from posekit.data.formats.registry import source_skeleton  # noqa: E402
from posekit.engine.evaluation import evaluate_checkpoint  # noqa: E402
from posekit.engine.recipes import load_config  # noqa: E402
from posekit.engine.trainer import train  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "deeplabcut" / "single" / "config.yaml"


def run(name, data_overrides, out, steps, threads):
    import torch
    torch.set_num_threads(threads)
    cfg = load_config("keypoints_synthetic", [
        "data.dataset=coco", *data_overrides, "data.input_size=64", "data.augment=false",
        "model.args.n_stacks=1", "model.args.n_feats=32", "train.batch_size=5", f"train.max_steps={steps}",
        f"train.val_every={steps}", "train.seed=0", "train.lr=2.5e-3", f"out_dir={out}", f"name={name}"])
    metrics = evaluate_checkpoint(cfg, train(cfg) / "last.pt")
    row = {"run": name, "AP": metrics.get("AP"), "pck": metrics.get("pck"), "mean_px_error": metrics.get("mean_px_error"), "steps": steps}
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    args = ap.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_formats_"))
    dlc = str(FIXTURE)
    rows = [run("deeplabcut", ["data.format=deeplabcut", f"data.train_ann={dlc}", f"data.val_ann={dlc}",
                               "data.skeleton=auto"], out, args.steps, args.threads)]
    convert(FIXTURE, "coco", out / "coco_from_dlc")
    skeleton = source_skeleton("deeplabcut", FIXTURE)
    convert(out / "coco_from_dlc" / "annotations" / "train.json", "yolo", out / "yolo",
            images_dir=out / "coco_from_dlc" / "images" / "train", skeleton=skeleton)
    data_yaml = out / "yolo" / "data.yaml"  # one labelled split: validate on it too (the fit is what is compared)
    data_yaml.write_text(data_yaml.read_text() + "val: images/train\n")
    convert(out / "yolo", "coco", out / "coco_from_yolo")
    y = str(out / "yolo" / "data.yaml")
    rows.append(run("yolo", ["data.format=yolo", f"data.train_ann={y}", "data.val_ann=" + y, "data.skeleton=auto"],
                    out, args.steps, args.threads))
    sk_yaml = out / "skeleton.yaml"
    import yaml
    sk_yaml.write_text(yaml.safe_dump({k: v for k, v in skeleton.to_dict().items()}))
    c = out / "coco_from_yolo"
    rows.append(run("coco_from_yolo", ["data.format=coco", f"data.train_ann={c / 'annotations' / 'train.json'}",
                                       f"data.train_images={c / 'images' / 'train'}",
                                       f"data.val_ann={c / 'annotations' / 'val.json'}",
                                       f"data.val_images={c / 'images' / 'val'}", f"data.skeleton={sk_yaml}"],
                    out, args.steps, args.threads))
    same = abs(rows[1]["AP"] - rows[2]["AP"]) <= 1e-3
    print(json.dumps({"yolo_vs_coco_AP_diff": rows[1]["AP"] - rows[2]["AP"], "same_metric": same,
                      "dlc_trains": rows[0]["AP"] is not None}))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
