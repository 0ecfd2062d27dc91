"""OpenPose learning benchmark (CPU): a small OpenPose trained from scratch on synthetic crowds.

1. The codec's ceiling: the oracle (ground truth -> heatmaps + PAFs -> the decoder -> OKS AP) on the
   held-out synthetic images and on the 4 shared real COCO images.
2. Learning: `openpose_small` (3 stages, BatchNorm as the recipe sets it) from scratch through the real trainer on
   `coco_synthetic` (1-6 figures per image, occlusion, crowd regions, masked small people); OKS AP
   on held-out images before vs after, with the decoder's `cmu` preset.

Run:  .venv/bin/python benchmarks/bench_openpose.py [--steps 1500] [--threads 2] [--out PATH]

Budgets are optimisation steps, so the result reproduces on a busy machine. Prints the report;
writes it (markdown) only with `--out PATH`.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from posekit.data.io import realdata_root  # noqa: E402
from posekit.engine.evaluation import evaluate, evaluate_checkpoint  # noqa: E402
from posekit.engine.recipes import load_config  # noqa: E402
from posekit.engine.trainer import seed_everything, train  # noqa: E402
from posekit.families import build_task  # noqa: E402
from posekit.models import count_parameters  # noqa: E402

KEYS = ("AP", "AP50", "AP75", "AR")


def row(name: str, m: dict) -> str:
    return f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in KEYS) + f" | {int(m['people'])} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--val", type=int, default=64, help="held-out synthetic images")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="also write the report to this markdown file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lines = ["# OpenPose learning benchmark", "",
             f"`python benchmarks/bench_openpose.py --steps {args.steps} --threads {args.threads}`", "",
             "| what | " + " | ".join(KEYS) + " | people |", "|---|" + "---|" * (len(KEYS) + 1)]
    real = realdata_root() / "coco"
    if real.is_dir():
        m = evaluate_checkpoint(load_config("coco_openpose", [f"data.root={real}"]), oracle=True)
        lines.append(row("oracle, 4 real COCO val images (368 letterbox, cmu preset)", m))
        print(lines[-1], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("coco_synthetic", [f"out_dir={tmp}", "name=bench", f"train.max_steps={args.steps}",
                                             f"train.val_every={args.steps}", f"data.synthetic_val_size={args.val}",
                                             "train.progress=false", "train.tensorboard=false"])
        task = build_task(cfg)
        datasets = task.build_datasets()
        oracle = evaluate(task, None, datasets, oracle=True)
        lines.append(row(f"oracle, {args.val} synthetic held-out images", oracle))
        seed_everything(cfg.train.seed)  # the initial weights train() starts from
        model = task.build_model()
        before = evaluate(task, model, datasets)
        lines.append(row("untrained openpose_small", before))
        print(lines[-1], flush=True)
        t0 = time.time()
        run_dir = train(cfg)
        seconds = time.time() - t0
        after = evaluate_checkpoint(cfg, run_dir / "last.pt")
    lines.append(row(f"after {args.steps} steps (batch {cfg.train.batch_size}, {seconds:.0f} s)", after))
    total, _ = count_parameters(model)
    lines += ["", f"openpose_small: {total:,} parameters, input {cfg.data.input_size} px, "
              f"{cfg.train.batch_size} images per step, {seconds / args.steps * 1000:.0f} ms per step."]
    report = "\n".join(lines)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")


if __name__ == "__main__":
    main()
