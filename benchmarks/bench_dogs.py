"""Learning benchmark of the dog keypoint regressor (dogs_mobilenetv2), CPU only.

A. From scratch on synthetic dogs (no weights exist offline): PCK@0.1 (%) on held-out synthetic dogs
   before training, after a fixed CPU time budget, and for the mean-pose baseline (every
   prediction = the training set's mean pose, per joint, in the input frame).
B. Overfit the 18 real StanfordExtra samples (train = eval, no augmentation): PCK@0.1 in original
   image pixels should approach 100 %; this exercises the real loader, the geometry and decoding.

Both report the mmpose-style PCK@0.1 x max(bbox w, h) (`pck`, the one benchmarks/RESULTS.md
quotes) and beside it the StanfordExtra/WLDO PCK@0.15 x sqrt(segmentation area) (`pck_seg`,
mean per image; the synthetic dogs' silhouettes, the real dogs' `seg` masks). Percent.

    .venv/bin/python benchmarks/bench_dogs.py [--steps-a 2645] [--steps-b 942] [--threads 1] [--out PATH]

Budgets are optimisation steps (defaults: the step counts of the recorded 420 s / 150 s runs), so a
result reproduces on a busy machine; the learning rate follows a cosine over the budget with a 2 %
warm-up. `--max-time-a/--max-time-b SECONDS` give a wall-clock budget instead (the schedule then
follows wall time, and the step count depends on the machine's load).

Prints the report; writes it (markdown) only with `--out PATH`, e.g.
`--out benchmarks/results/dogs.md`. The model is the full-width MobileNetV2 (2.32 M parameters)
at a 96x96 input to fit the budget on a 2-core machine.
"""
from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from posekit.data.topdown import to_original_frame  # noqa: E402
from posekit.engine.evaluation import evaluate  # noqa: E402
from posekit.engine.recipes import config_from_dict  # noqa: E402
from posekit.families import build_task  # noqa: E402
from posekit.families.dogs import pck_box_metrics  # noqa: E402
from posekit.models import count_parameters  # noqa: E402


def make_cfg(data: dict, *, lr: float, batch: int, dropout: float, flip_test: bool = False):
    return config_from_dict({
        "task": "dogs", "name": "bench_dogs",
        "model": {"name": "dogs_mobilenetv2", "args": {"pretrained": False, "freeze_backbone": False,
                                                        "dropout": dropout}},
        "data": data, "train": {"batch_size": batch, "lr": lr, "seed": 0},
        "eval": {"batch_size": 32, "flip_test": flip_test}})


def mean_pose_metrics(task, train_set, val_set, n_fit: int = 1000) -> dict:
    """Predict, for every sample, the per-joint mean of the training targets (input frame)."""
    k = task.skeleton.num_keypoints
    sums, counts = np.zeros((k, 2)), np.zeros(k)
    for i in range(min(n_fit, len(train_set))):
        item = train_set[i]
        w = item["target_weight"].numpy()
        sums += item["target"].numpy() * w[:, None]
        counts += w
    mean = task.codec.decode(sums / np.maximum(counts, 1)[:, None])  # input-frame pixels
    items = [val_set[i] for i in range(len(val_set))]
    matrices = np.stack([it["matrix"].numpy() for it in items])
    preds = to_original_frame(np.broadcast_to(mean, (len(items), k, 2)), matrices)
    gts = np.stack([it["keypoints"].numpy() for it in items])
    boxes = np.stack([it["box"].numpy() for it in items])
    seg = np.stack([it["seg_area"].numpy() for it in items]) if "seg_area" in items[0] else None
    return pck_box_metrics(preds, gts, boxes, threshold=task.cfg.eval.pck_threshold, seg_area=seg,
                           seg_threshold=task.cfg.eval.seg_pck_threshold)


def train_for(task, model, train_set, *, max_steps: int, max_time: float | None = None,
              shuffle: bool = True, log=print) -> tuple[int, float]:
    """Adam + cosine decay (2 % warm-up) over the budget: `max_steps` steps, or `max_time` seconds
    of wall clock when given (then `max_steps` only caps it). Returns (steps, seconds)."""
    cfg = task.cfg
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)
    g = torch.Generator().manual_seed(cfg.train.seed)
    start, step = time.time(), 0
    while True:
        loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.train.batch_size, shuffle=shuffle,
                                             drop_last=True, collate_fn=task.collate, generator=g)
        for batch in loader:
            elapsed = time.time() - start
            if (max_time is not None and elapsed >= max_time) or (max_steps and step >= max_steps):
                return step, elapsed
            frac = min(elapsed / max_time if max_time is not None else step / max_steps, 1.0)
            for group in opt.param_groups:  # cosine over the budget, 2% warm-up
                group["lr"] = cfg.train.lr * min(1.0, (frac + 1e-9) / 0.02) * 0.5 * (1 + math.cos(math.pi * frac))
            model.train()
            task.on_step(model, step)
            loss, _ = task.training_step(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 100 == 0:
                log(f"  step {step:5d}  t={elapsed:6.1f}s  loss={loss.item():.5f}")
            step += 1


def fmt(m: dict) -> str:
    return (f"PCK@0.1 {m['pck']:.1f} %, WLDO PCK@0.15 {m.get('pck_seg', float('nan')):.1f} %, "
            f"mean error {m['mean_px_error']:.1f} px")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps-a", type=int, default=2645, help="steps of synthetic training")
    ap.add_argument("--steps-b", type=int, default=942, help="steps of overfitting the real samples")
    ap.add_argument("--max-time-a", type=float, default=None,
                    help="seconds of synthetic training instead of --steps-a (wall-clock budget)")
    ap.add_argument("--max-time-b", type=float, default=None,
                    help="seconds of overfitting instead of --steps-b (wall-clock budget)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--input-size", type=int, default=96)
    ap.add_argument("--out", default=None, help="also write the report (markdown) to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lines = []

    # --- A. synthetic, from scratch ------------------------------------------------------------
    # scale_range is a crop-side multiplier (> 1 zooms out): [0.91, 1.11] ~ the old zoom U(0.9, 1.1)
    data_a = {"dataset": "synthetic", "synthetic_train_size": 6000, "synthetic_val_size": 300,
              "synthetic_image_size": [128, 104], "input_size": args.input_size, "crop": "image",
              "rotation": 15.0, "scale_range": [0.91, 1.11], "translate": 0.05}
    task = build_task(make_cfg(data_a, lr=1e-3, batch=16, dropout=0.1))
    flip_task = build_task(make_cfg(data_a, lr=1e-3, batch=16, dropout=0.1, flip_test=True))
    torch.manual_seed(0)
    model = task.build_model()
    total, _ = count_parameters(model)
    datasets = task.build_datasets()
    task.prepare(model, datasets)
    train_set, val_set = datasets["train"], datasets["val"]
    before = evaluate(task, model, datasets)
    baseline = mean_pose_metrics(task, train_set, val_set)
    print(f"A. synthetic before: {fmt(before)}; mean-pose baseline: {fmt(baseline)}", flush=True)
    steps_a, secs_a = train_for(task, model, train_set, max_steps=args.steps_a, max_time=args.max_time_a)
    after = evaluate(task, model, datasets)
    after_flip = evaluate(flip_task, model, datasets)
    print(f"A. synthetic after {steps_a} steps / {secs_a:.0f} s: {fmt(after)}; flip test: {fmt(after_flip)}",
          flush=True)

    # --- B. overfit the 18 real StanfordExtra samples -------------------------------------------
    task_b = build_task(make_cfg({"dataset": "stanford_extra", "train_on_all": True, "augment": False,
                                  "input_size": args.input_size, "crop": "image"}, lr=1e-3, batch=18, dropout=0.0))
    result_b = None
    try:
        torch.manual_seed(0)
        model_b = task_b.build_model()
        data_b = task_b.build_datasets()
        task_b.prepare(model_b, data_b)
        train_b, val_b = data_b["train"], data_b["val"]
        before_b = evaluate(task_b, model_b, data_b)
        base_b = mean_pose_metrics(task_b, train_b, val_b)
        steps_b, secs_b = train_for(task_b, model_b, train_b, max_steps=args.steps_b, max_time=args.max_time_b)
        after_b = evaluate(task_b, model_b, data_b)
        result_b = (before_b, base_b, after_b, steps_b, secs_b, len(train_b))
        print(f"B. real overfit before: {fmt(before_b)}; mean pose: {fmt(base_b)}; after {steps_b} steps: {fmt(after_b)}",
              flush=True)
    except FileNotFoundError as e:
        print(f"B. skipped: {e}")

    # --- report ---------------------------------------------------------------------------------
    cmd = (".venv/bin/python benchmarks/bench_dogs.py " + " ".join(sys.argv[1:])).strip()
    lines += ["# dogs_mobilenetv2 learning benchmark", "",
              f"Command: `{cmd.strip()}`", "",
              f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s) on a 2-core CPU; "
              f"torch {torch.__version__}. Model: dogs_mobilenetv2, width 1.0, {total:,} parameters, random init "
              f"(no ImageNet weights offline), input {args.input_size}x{args.input_size} (letterboxed whole image). "
              "PCK@0.1 = percent of labelled joints within 0.1 x max(bbox w, h) of the truth (mmpose style, "
              "pooled over joints; the number benchmarks/RESULTS.md quotes), measured in ORIGINAL image pixels. "
              "WLDO PCK@0.15 = the StanfordExtra/WLDO protocol: distance < 0.15 x sqrt(segmentation area), "
              "the mean over dogs of each dog's percent.", "",
              "## A. Synthetic dogs, trained from scratch", "",
              f"6000 generated training dogs (128x104, occluders, random facing), 300 held-out dogs; Adam lr 1e-3 "
              f"with cosine decay over {budget(args.steps_a, args.max_time_a)}, batch 16, flip/rotation/scale/"
              "shift/colour augmentation, visibility-masked MSE.", "",
              "| model | PCK@0.1 (%) | WLDO PCK@0.15 (%) | mean px error |", "|---|---|---|---|",
              f"| before training (random init) | {row(before)} |",
              f"| mean-pose baseline (training mean) | {row(baseline)} |",
              f"| after {steps_a} steps ({secs_a:.0f} s) | {row(after, bold=True)} |",
              f"| after, with flip test | {row(after_flip)} |", ""]
    per_joint = [(k.split("/", 1)[1], v) for k, v in after.items() if k.startswith("pck/")]
    lines += ["Per-joint PCK@0.1 (%) after training: " + ", ".join(f"{n} {v:.0f}" for n, v in per_joint), ""]
    if result_b:
        before_b, base_b, after_b, steps_b, secs_b, n_b = result_b
        lines += ["## B. Overfitting the real StanfordExtra samples (train = eval)", "",
                  f"The {n_b} real dogs of `stanford_extra/StanfordExtra_sample.json`, no augmentation, batch {n_b}, "
                  f"Adam lr 1e-3, cosine decay over {budget(args.steps_b, args.max_time_b)}.", "",
                  "| model | PCK@0.1 (%) | WLDO PCK@0.15 (%) | mean px error (original pixels) |",
                  "|---|---|---|---|",
                  f"| before training | {row(before_b)} |",
                  f"| mean pose | {row(base_b)} |",
                  f"| after {steps_b} steps ({secs_b:.0f} s) | {row(after_b, bold=True)} |",
                  ""]
    else:
        lines += ["## B. Overfitting the real samples: skipped (real data not found)", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")


def row(m: dict, *, bold: bool = False) -> str:
    """`PCK | WLDO PCK | px error` cells of a report table (percent, percent, pixels)."""
    pck = f"**{m['pck']:.1f}**" if bold else f"{m['pck']:.1f}"
    return f"{pck} | {m.get('pck_seg', float('nan')):.1f} | {m['mean_px_error']:.1f}"


def budget(steps: int, max_time: float | None) -> str:
    return f"a {max_time:.0f} s wall-clock budget" if max_time is not None else f"a {steps}-step budget"


if __name__ == "__main__":
    main()
