"""Stacked Hourglass learning benchmark (CPU, <= 10 minutes wall on a 2-core machine).

1. Real-data codec round trip: the 5 shared MPII people (HRNet JSON, head sizes from valid.h5):
   GT -> 256 crop -> 64x64 heatmaps -> decode -> inverse affine -> PCKh with the real head sizes.
   PCKh@0.5 must be 100 %.
2. Synthetic learning: `hourglass2_small` (2 stacks, 64 features, 128-px input) from scratch on
   synthetic MPII-16 figures through the real trainer (`posekit.engine.trainer.train`);
   PCKh / torso PCK on 200 held-out figures before vs after.
3. Overfit the 5 real images (same small model, 128 px), PCKh on them with the real head sizes.

Run:  .venv/bin/python benchmarks/bench_hourglass.py [--minutes 6] [--out benchmarks/results/hourglass.md]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from posekit.codecs.heatmap import HeatmapCodec  # noqa: E402
from posekit.config import load_config  # noqa: E402
from posekit.data.io import realdata_root  # noqa: E402
from posekit.data.mpii import MPIIImageSource, TopDownHeatmapDataset, attach_head_sizes, load_mpii_h5, load_mpii_json  # noqa: E402
from posekit.data.transforms import affine_points, invert_affine  # noqa: E402
from posekit.metrics.mpii import format_pckh_table, pckh_table  # noqa: E402
from posekit.models import count_parameters  # noqa: E402
from posekit.tasks import get_task  # noqa: E402


def real_records():
    mpii = realdata_root() / "mpii"
    recs = load_mpii_json(mpii / "mmpose" / "test_mpii.json")
    attach_head_sizes(recs, load_mpii_h5(mpii / "pose_hg_train" / "valid.h5"))
    return recs, mpii / "mmpose" / "images"


def round_trip(lines: list[str]) -> None:
    recs, image_dir = real_records()
    for refine in ("shift", "dark"):
        codec = HeatmapCodec((256, 256), (64, 64), 1.0, refine=refine)
        ds = TopDownHeatmapDataset(MPIIImageSource(recs, image_dir), codec, train=False)
        preds, gts, ann, heads = [], [], [], []
        for i in range(len(ds)):
            item = ds[i]
            kp, _ = codec.decode(item["target"])
            preds.append(affine_points(kp, invert_affine(item["matrix"])))
            gts.append(item["joints"])
            ann.append(item["annotated"] & (item["target_weight"] > 0))
            heads.append(item["head_size"])
        pred, gt, a, h = map(np.asarray, (preds, gts, ann, heads))
        table = pckh_table(pred, gt, a, h)
        err = np.linalg.norm(pred - gt, axis=-1)[a]
        lines.append(f"- decode `{refine}`: PCKh@0.5 = **{table['Mean']:.2f} %**, PCKh@0.1 = {table['Mean@0.1']:.2f} %, "
                     f"error in original pixels mean {err.mean():.3f} / max {err.max():.3f} "
                     f"({a.sum()} annotated joints, head sizes {', '.join(f'{v:.1f}' for v in h)})")
        print(lines[-1], flush=True)


def fmt_metrics(m: dict) -> str:
    return (f"PCKh@0.5 {m['pckh']:.2f} | PCKh@0.1 {m['pckh@0.1']:.2f} | torso PCK@0.2 {m['pck_torso@0.2']:.2f} | "
            f"val loss {m['val_loss']:.5f}")


def part_table(m: dict) -> str:
    t = {"Head": m["pckh_head"], "Shoulder": m["pckh_shoulder"], "Elbow": m["pckh_elbow"], "Wrist": m["pckh_wrist"],
         "Hip": m["pckh_hip"], "Knee": m["pckh_knee"], "Ankle": m["pckh_ankle"], "Mean": m["pckh"],
         "Mean@0.1": m["pckh@0.1"]}
    return format_pckh_table(t)


def run_training(cfg, lines: list[str], label: str) -> dict:
    from posekit.engine.trainer import train
    from posekit.engine.checkpoint import load_checkpoint

    task = get_task(cfg.task)
    torch.manual_seed(cfg.train.seed)
    model = task.build_model(cfg)
    _, val = task.build_datasets(cfg)
    t0 = time.time()
    before = task.evaluate(model, val, cfg)
    eval_s = time.time() - t0
    print(f"[{label}] before: {fmt_metrics(before)} ({eval_s:.1f} s)", flush=True)
    t0 = time.time()
    run_dir = train(cfg)
    train_s = time.time() - t0
    ckpt = load_checkpoint(run_dir / "last.pt")
    model.load_state_dict(ckpt["model"])
    model.eval()
    after = task.evaluate(model, val, cfg)
    print(f"[{label}] after {ckpt['step']} steps ({train_s:.0f} s): {fmt_metrics(after)}", flush=True)
    lines += [f"- before training: {fmt_metrics(before)}",
              f"- after {ckpt['step']} steps ({train_s:.0f} s wall, incl. periodic validation): {fmt_metrics(after)}",
              "", "```", part_table(after), "```"]
    return {"before": before, "after": after, "steps": ckpt["step"], "seconds": train_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=900, help="synthetic training steps (batch 8)")
    ap.add_argument("--overfit-steps", type=int, default=400)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "hourglass.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    cmd = "  ".join(["", ".venv/bin/python benchmarks/bench_hourglass.py"] + sys.argv[1:]).strip()
    lines = ["# Stacked Hourglass benchmark (CPU)", "",
             f"Command: `{cmd}`  ", f"torch {torch.__version__}, {args.threads} thread(s), 2-core CPU; "
             f"budget <= 10 min wall.", ""]

    lines += ["## 1. Real MPII codec round trip (5 shared people, real head sizes)", ""]
    round_trip(lines)

    work = Path(tempfile.mkdtemp(prefix="bench_hourglass_"))
    lines += ["", "## 2. Synthetic MPII-16, `hourglass2_small` from scratch", ""]
    cfg = load_config(ROOT / "configs" / "mpii_synthetic.yaml",
                      [f"out_dir={work}", "name=synthetic", f"train.max_steps={args.steps}",
                       f"train.val_every={args.steps}", "train.progress=false", "train.tensorboard=false",
                       "train.log_every=40"])
    task = get_task("hourglass")
    n_params = count_parameters(task.build_model(cfg))[0]
    lines += [f"Recipe `configs/mpii_synthetic.yaml` with `train.max_steps={args.steps}`: {n_params:,} parameters, "
              f"128-px input, 32x32 heatmaps, batch {cfg.train.batch_size}, Adam lr {cfg.train.lr} cosine, "
              f"augmentation on; validation = {cfg.data.synthetic_val_size} held-out figures, flip test, "
              "quarter-pixel decode.", ""]
    syn = run_training(cfg, lines, "synthetic")

    lines += ["", "## 3. Overfitting the 5 real MPII images", ""]
    cfg = load_config(ROOT / "configs" / "mpii_synthetic.yaml",
                      [f"out_dir={work}", "name=overfit", "data.dataset=mpii", "data.train_file=mmpose/test_mpii.json",
                       "data.val_file=pose_hg_train/valid.h5", "data.skip_missing_images=true",
                       "data.train_repeat=4", "data.augment=false", f"train.max_steps={args.overfit_steps}",
                       f"train.val_every={args.overfit_steps}", "train.batch_size=5", "train.lr=2.0e-3",
                       "train.warmup_steps=10", "train.progress=false", "train.tensorboard=false", "train.log_every=25"])
    lines += [f"Train = the 5 people of `mmpose/test_mpii.json` (no augmentation), validation = the same 5 from "
              f"`pose_hg_train/valid.h5` (its own centre/scale/joints and real head sizes), `hourglass2_small`, "
              f"128-px crops, {args.overfit_steps} steps of batch 5.", ""]
    ovf = run_training(cfg, lines, "overfit")

    total = time.time() - start
    lines += ["", f"Total wall time: {total / 60:.1f} min.", "",
              "| check | before | after |", "|---|---|---|",
              f"| synthetic PCKh@0.5 (%) | {syn['before']['pckh']:.1f} | {syn['after']['pckh']:.1f} |",
              f"| synthetic torso PCK@0.2 (%) | {syn['before']['pck_torso@0.2']:.1f} | {syn['after']['pck_torso@0.2']:.1f} |",
              f"| 5 real images, PCKh@0.5 (%) | {ovf['before']['pckh']:.1f} | {ovf['after']['pckh']:.1f} |"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-5:]))
    print(f"wrote {out} ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
