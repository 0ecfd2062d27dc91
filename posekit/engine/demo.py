"""`posekit demo`: every family, on synthetic data, from a fresh clone with no download.

For each registered family: evaluate the untrained model, train for a fixed number of steps
(its `DemoPlan`; a wall-time cap stays as a safety net), evaluate again on the same validation
set, draw pictures, and write a summary table (Markdown + JSON) with before -> after per family.
Step budgets, not wall time, make the demo show learning on a slow or busy machine too.
"""
from __future__ import annotations

import csv
import functools
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from posekit.data.detections import PersonSource, peek_sample
from posekit.data.io import write_image
from posekit.engine.checkpoint import inference_state_dict, load_checkpoint
from posekit.engine.evaluation import evaluate, predict, to_device
from posekit.engine.recipes import load_config, resolve_config_path
from posekit.engine.trainer import seed_everything, train
from posekit.families import Task, build_task, get_task_class, list_tasks
from posekit.viz.comparison import truth_and_prediction


@dataclass(frozen=True)
class DemoPlan:
    """How `posekit demo` trains one family: `steps` optimiser steps with recipe `overrides` on
    top of the family's synthetic recipe; `seconds` is the measured training time on 2 free CPU
    cores, which splits the safety time cap between families."""

    steps: int
    overrides: tuple[str, ...] = ()
    seconds: float = 60.0


# Sized by steps to finish in under 10 minutes on 2 free CPU cores (9 min 7 s measured; `seconds`: the training
# time there, which also splits the safety cap). OpenPose is the slow learner: the plain small
# model (no normalisation, as the paper's VGG) scored AP 0 after 250 steps even on easy crowds (1-2
# people, no crowd regions or tiny figures; its validation loss fell 0.161 -> 0.029) and needs ~1,200
# steps for AP 0.1; with BatchNorm after every hidden conv (now in its synthetic recipe) the same
# 250 steps reached AP 0.135 (benchmarks/RESULTS.md). The other plans were trimmed to make room.
# A family may declare its own `demo_plan` class attribute instead.
DEMO_PLANS: dict[str, DemoPlan] = {
    "dogs": DemoPlan(280, ("data.synthetic_val_size=100", "train.warmup_steps=30"), 90.0),
    "hourglass": DemoPlan(210, ("data.synthetic_val_size=100", "train.warmup_steps=30"), 105.0),
    "gmh_mdn": DemoPlan(1000, ("data.synthetic_val=2000",), 38.0),
    "openpose": DemoPlan(230, ("data.synthetic_train_size=2000", "data.synthetic_max_people=2",
                               "data.synthetic_crowd_prob=0", "data.synthetic_small_prob=0",
                               "train.warmup_steps=20"), 160.0),
    "keypoints": DemoPlan(200, (), 70.0),
    "fse": DemoPlan(120, (), 58.0),
}
DEFAULT_PLAN = DemoPlan(300, (), 60.0)  # a family registered without a plan (its recipe, 300 steps)


def demo_plan(family: str) -> DemoPlan:
    """The family's own `demo_plan` class attribute, else DEMO_PLANS, else DEFAULT_PLAN."""
    own = getattr(get_task_class(family), "demo_plan", None)
    if isinstance(own, DemoPlan):
        return own
    return DEMO_PLANS.get(family, DEFAULT_PLAN)


def available_families() -> list[str]:
    """Every registered family with a synthetic recipe (its `Task.synthetic_recipe`)."""
    out = []
    for family in list_tasks():
        recipe = get_task_class(family).synthetic_recipe
        try:
            if recipe:
                resolve_config_path(recipe)
                out.append(family)
        except FileNotFoundError:
            continue
    return out


def _scalars(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def run_family(family: str, out_dir: Path, budget_s: float, *, steps: int | None = None,
               overrides: tuple[str, ...] | list[str] = (), smoke: bool = False) -> dict:
    """Train one family for `steps` (default: its plan) with at most `budget_s` seconds, scoring the
    untrained and the trained model on the same validation set. `smoke` adds the family's
    `smoke_overrides` (tiny data sets: tests)."""
    plan = demo_plan(family)
    steps = max(1, int(plan.steps if steps is None else steps))
    cls = get_task_class(family)
    recipe = cls.synthetic_recipe
    if smoke:
        overrides = (*cls.smoke_overrides, *overrides)
    # one validation, at the end: it is the "after" score (curves.png gets the untrained one at step 0)
    cfg = load_config(recipe, [*plan.overrides, *overrides, f"out_dir={out_dir}", f"name={family}",
                               f"train.max_steps={steps}", f"train.max_time={budget_s}",
                               f"train.val_every={steps}", f"train.log_every={max(1, steps // 60)}",
                               "train.tensorboard=false"])
    task = build_task(cfg)
    run_dir = cfg.run_dir
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a demo always starts fresh

    seed_everything(cfg.train.seed)  # the same initial weights that train() will start from
    model = task.build_model()
    datasets = task.build_datasets()
    task.prepare(model, datasets)
    t0 = time.time()
    before = _scalars(evaluate(task, model, datasets))
    eval_seconds = time.time() - t0

    t0, c0 = time.time(), time.process_time()
    train(cfg)
    seconds, cpu_seconds = time.time() - t0, time.process_time() - c0

    ckpt = load_checkpoint(run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "last.pt",
                           require=("model", "step"))
    model = task.build_model()
    model.load_state_dict(inference_state_dict(ckpt))
    model.eval()
    task.prepare(model, {})
    key = task.primary_metric
    rows = _read_metrics(run_dir / "metrics.csv")
    # the trainer scored this checkpoint on the same validation set: reuse it rather than evaluate again
    after = _validation_at(rows, int(ckpt["step"]))
    if key not in after:
        after = _scalars(evaluate(task, model, datasets))
    if rows:  # curves.png again, now with the untrained model's scores at step 0
        from posekit.viz import plot_training_curves
        plot_training_curves(rows, run_dir / "curves.png", metric_keys=[f"val/{key}"],
                             initial={f"val/{k}": v for k, v in before.items()})
    images = demo_pictures(task, model, datasets, run_dir / "predictions")
    from posekit.engine.report import ReportRecorder, provenance, write_report  # the evaluation report, per family
    recorder = ReportRecorder()
    reported = evaluate(task, model, datasets, recorder=recorder)
    best = run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "last.pt"
    report = write_report(run_dir / "report", metrics=reported, recorder=recorder, prov=provenance(cfg, best))
    done = int(load_checkpoint(run_dir / "last.pt", require=("step",))["step"])
    return {"family": family, "recipe": str(resolve_config_path(recipe)), "model": cfg.model.name,
            "steps": done, "planned_steps": steps, "capped": done < steps, "train_seconds": round(seconds, 1),
            "train_cpu_seconds": round(cpu_seconds, 1), "threads": torch.get_num_threads(),
            "seconds_per_step": round(seconds / max(done, 1), 4), "eval_seconds": round(eval_seconds, 1),
            "overrides": [*plan.overrides, *overrides],
            "metric": key, "higher_is_better": task.higher_is_better, "before": before.get(key),
            "after": after.get(key), "val_loss_before": before.get("val_loss"), "val_loss_after": after.get("val_loss"),
            "all_before": before, "all_after": after,
            "curves": str(run_dir / "curves.png"), "images": [str(p) for p in images], "report": str(report)}


def _read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _validation_at(rows: list[dict], step: int) -> dict:
    """The scalar `val/` metrics logged at `step` (without the prefix); {} when none were."""
    for r in reversed(rows):
        if r.get("step") not in (None, "") and int(float(r["step"])) == step:
            vals = {k[4:]: float(v) for k, v in r.items() if k.startswith("val/") and v not in (None, "")}
            if vals:
                return vals
    return {}


@torch.no_grad()
def demo_pictures(task: Task, model, datasets: dict, out_dir: Path, count: int = 4, *,
                  min_height: int = 384, score_threshold: float = 0.05) -> list[Path]:
    """The family's own demo pictures; else, for top-down items over the people of whole images
    (`PersonSource`), those images (`whole_image_pictures`); else "ground truth | prediction" for
    a few validation samples spread over the set: both sides from the same image at the same
    scale (small crops upscaled to at least `min_height` px), every person with its box,
    evaluation geometry."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = functools.partial(predict, task, model)  # run(inputs, **options) -> Results
    own = task.demo(run, datasets, out_dir)
    if own:
        return own
    dataset = datasets[task.eval_splits[-1]]
    source = getattr(dataset, "source", None)
    if isinstance(source, PersonSource):  # top-down over the people of whole images: show the images
        return whole_image_pictures(task, run, source.images, out_dir)
    if source is None:
        return []
    picks = sorted(set(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int).tolist()))
    batch = to_device(task.collate([dataset[i] for i in picks]), next(model.parameters()).device)
    results = task.postprocess(task.forward_decode(model.eval(), task.model_inputs(batch)), batch)
    paths = []
    for n, (i, res) in enumerate(zip(picks, results)):
        sample = source[i].load()
        gt = sample.keypoints
        labelled = int((gt[..., 2] > 0).sum())
        shown = int((res.scores > score_threshold).sum())
        captions = (f"ground truth: {labelled} joints" + (f", {len(gt)} people" if len(gt) > 1 else ""),
                    f"prediction: {shown} joints with score > {score_threshold:g}"
                    + (f", {len(res)} people" if len(res) != 1 or len(gt) > 1 else ""))
        # nearest keeps a tiny crop's pixels honest; colours by person only where there are several
        picture = truth_and_prediction(sample.image, gt, res.keypoints, res.scores, task.skeleton,
                                       truth_boxes=sample.boxes, boxes=res.boxes, captions=captions,
                                       score_threshold=score_threshold, min_height=min_height,
                                       interpolation="nearest", color_by_person=None, gap=None)
        path = out_dir / f"{task.name}_demo_{n}.png"
        write_image(path, picture)
        paths.append(path)
    return paths


def whole_image_pictures(task: Task, run, images, out_dir: Path, count: int = 2) -> list[Path]:
    """A top-down family's demo: the `count` validation images with the most people, every person
    predicted from its labelled box, "ground truth | prediction" side by side."""
    paths = []
    for i in sorted(range(len(images)), key=lambda i: -peek_sample(images, i).num_people)[:count]:
        s = images[i].load()
        if s.boxes is None or not len(s.boxes):
            continue
        res = run([s.image], boxes=[s.boxes])[0]
        picture = truth_and_prediction(
            s.image, s.keypoints, res.keypoints, res.scores, task.skeleton, truth_boxes=s.boxes, boxes=res.boxes,
            person_scores=res.person_scores, captions=(f"ground truth: {len(s.keypoints)} people",
                                                       f"prediction from the {len(s.boxes)} boxes (joints > 0.05)"))
        path = Path(out_dir) / f"{task.name}_val{i}.png"
        write_image(path, picture)
        paths.append(path)
    return paths


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4g}"


def _change(row: dict) -> str:
    b, a = row["before"], row["after"]
    if b is None or a is None:
        return "n/a"
    if a == b:
        return "no change"
    better = (a > b) if row["higher_is_better"] else (a < b)
    return f"{'better' if better else 'worse'} ({a - b:+.3g})"


def run_demo(*, out_dir: Path = Path("runs/demo"), families: list[str] | None = None,
             budget_s: float = 1800.0, steps: int | dict | None = None, steps_scale: float = 1.0,
             smoke: bool = False) -> list[dict]:
    """Every chosen family (default: all registered with a synthetic recipe) trained for its planned
    steps (`steps`: one count for all, or {family: count}; `steps_scale` multiplies the plans).
    `budget_s` is only a safety cap on the total training time, split by the plans' measured
    seconds; a family stopped by it is marked in the summary."""
    out_dir = Path(out_dir)
    available = available_families()
    chosen = list(families or available)
    unknown = [f for f in chosen if f not in available]
    if unknown:
        raise ValueError(f"no demo for {unknown}; available: {available}")
    if not chosen:
        raise ValueError("no family has a demo recipe yet")
    if steps_scale <= 0:
        raise ValueError(f"steps_scale must be > 0, got {steps_scale}")
    if budget_s <= 0:
        raise ValueError(f"budget_s (the safety cap on training seconds) must be > 0, got {budget_s}")
    out_dir.mkdir(parents=True, exist_ok=True)

    def planned(family):
        if isinstance(steps, dict):
            n = steps.get(family, demo_plan(family).steps)
        else:
            n = demo_plan(family).steps if steps is None else steps
        return max(1, int(round(n * steps_scale)))

    total_est = sum(demo_plan(f).seconds for f in chosen)
    start = time.time()
    rows = []
    for family in chosen:
        cap = budget_s * demo_plan(family).seconds / total_est
        n = planned(family)
        print(f"== {family}: {n} training steps (safety cap {cap:.0f} s)", flush=True)
        row = run_family(family, out_dir, cap, steps=n, smoke=smoke)
        arrow = "higher is better" if row["higher_is_better"] else "lower is better"
        capped = f" (time cap reached at {row['steps']} of {n} steps)" if row["capped"] else ""
        print(f"   {row['metric']}: {_fmt(row['before'])} -> {_fmt(row['after'])} ({arrow}) after "
              f"{row['steps']} steps in {row['train_seconds']} s{capped}", flush=True)
        rows.append(row)
    total = time.time() - start
    (out_dir / "summary.json").write_text(json.dumps(rows, indent=1))
    lines = ["# posekit demo", "",
             "Synthetic data, trained from scratch for a fixed number of steps per family; the metric is "
             "scored on the same validation set before training (untrained weights) and after.", "",
             "| family | model | steps | train s | s/step | metric | before | after | change | val loss | pictures | report |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pics = ", ".join(f"[{Path(p).name}]({Path(p).relative_to(out_dir)})" for p in r["images"][:3])
        better = "↑" if r["higher_is_better"] else "↓"
        steps_txt = f"{r['steps']} of {r['planned_steps']} (time cap)" if r["capped"] else str(r["steps"])
        lines.append(f"| {r['family']} | {r['model']} | {steps_txt} | {r['train_seconds']} | {r['seconds_per_step']} | "
                     f"{r['metric']} {better} | {_fmt(r['before'])} | {_fmt(r['after'])} | {_change(r)} | "
                     f"{_fmt(r['val_loss_before'])} -> {_fmt(r['val_loss_after'])} | {pics} | "
                     f"[index.html]({Path(r['report']).relative_to(out_dir)}) |")
    lines += ["", f"Total {total:.0f} s (training {sum(r['train_seconds'] for r in rows):.0f} s)."]
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[4:]))
    print(f"summary: {out_dir / 'summary.md'}")
    return rows
