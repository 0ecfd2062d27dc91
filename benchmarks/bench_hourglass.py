"""Stacked Hourglass learning benchmark (CPU, <= 10 minutes wall on a 2-core machine).

1. Real-data codec round trip: the 5 shared MPII people (HRNet JSON, head sizes from valid.h5):
   GT -> 256 crop -> 64x64 heatmaps -> decode -> inverse affine -> PCKh with the real head sizes.
   PCKh@0.5 must be 100 %.
2. Synthetic learning: `hourglass2_small` (2 stacks, 64 features, 128-px input) from scratch on
   synthetic MPII-16 figures through the real trainer (`posekit.engine.trainer.train`);
   PCKh / torso PCK on 200 held-out figures before vs after.
3. Overfit the 5 real images (same small model, 128 px), PCKh on them with the real head sizes.

Run:  .venv/bin/python benchmarks/bench_hourglass.py [--steps 900] [--overfit-steps 400] [--threads 1] [--out PATH]

Budgets are optimisation steps, so results reproduce on a busy machine. Prints the report; writes
it (markdown) only with `--out PATH`, e.g. `--out benchmarks/results/hourglass.md`.
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

from posekit.engine.evaluation import evaluate  # noqa: E402
from posekit.engine.recipes import load_config  # noqa: E402
from posekit.families import build_task  # noqa: E402
from posekit.metrics.mpii import format_pckh_table, pckh_table  # noqa: E402
from posekit.models import count_parameters  # noqa: E402

RECIPE = ROOT / "configs" / "mpii_synthetic.yaml"


def round_trip(lines: list[str]) -> None:
    """The codec's ceiling through the task's own oracle seam (decode_targets -> postprocess):
    the HRNet JSON people (with valid.h5's head sizes attached), 256 crops, 64x64 heatmaps, sigma 1."""
    for refine in ("shift", "dark"):
        cfg = load_config(RECIPE, ["data.dataset=mpii", "data.train_file=mmpose/test_mpii.json",
                                   "data.val_file=mmpose/test_mpii.json", "data.head_sizes_from=pose_hg_train/valid.h5",
                                   "data.input_size=256", "data.heatmap_size=64", "data.sigma=1.0",
                                   f"eval.refine={refine}"])
        task = build_task(cfg)
        ds = task.build_datasets()["val"]
        batch = task.collate([ds[i] for i in range(len(ds))])
        results = task.postprocess(task.decode_targets(batch), batch)
        pred = np.stack([r.keypoints[0] for r in results])
        keypoints = batch["keypoints"].numpy()
        gt, a, h = keypoints[..., :2], (keypoints[..., 2] > 0) & (batch["target_weight"].numpy() > 0), \
            batch["head_size"].numpy()
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
    t = {part: m[f"pckh/{part.lower()}"] for part in ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle")}
    t |= {"Mean": m["pckh"], "Mean@0.1": m["pckh@0.1"]}
    return format_pckh_table(t)


def run_training(cfg, lines: list[str], label: str) -> dict:
    from posekit.engine.checkpoint import load_checkpoint
    from posekit.engine.trainer import train

    task = build_task(cfg)
    torch.manual_seed(cfg.train.seed)
    model = task.build_model()
    datasets = task.build_datasets(("val",))
    t0 = time.time()
    before = evaluate(task, model, datasets)
    eval_s = time.time() - t0
    print(f"[{label}] before: {fmt_metrics(before)} ({eval_s:.1f} s)", flush=True)
    t0 = time.time()
    run_dir = train(cfg)
    train_s = time.time() - t0
    ckpt = load_checkpoint(run_dir / "last.pt")
    model.load_state_dict(ckpt["model"])
    model.eval()
    after = evaluate(task, model, datasets)
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
    ap.add_argument("--out", default=None, help="also write the report (markdown) to this file")
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
    cfg = load_config(RECIPE,
                      [f"out_dir={work}", "name=synthetic", f"train.max_steps={args.steps}",
                       f"train.val_every={args.steps}", "train.progress=false", "train.tensorboard=false",
                       "train.log_every=40"])
    n_params = count_parameters(build_task(cfg).build_model())[0]
    lines += [f"Recipe `configs/mpii_synthetic.yaml` with `train.max_steps={args.steps}`: {n_params:,} parameters, "
              f"128-px input, 32x32 heatmaps, batch {cfg.train.batch_size}, Adam lr {cfg.train.lr} cosine, "
              f"augmentation on; validation = {cfg.data.synthetic_val_size} held-out figures, flip test, "
              "quarter-pixel decode.", ""]
    syn = run_training(cfg, lines, "synthetic")

    lines += ["", "## 3. Overfitting the 5 real MPII images", ""]
    cfg = load_config(RECIPE,
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
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out} ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
