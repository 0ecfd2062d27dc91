"""`posekit demo`: every family, on synthetic data, from a fresh clone with no download.

For each family: evaluate the untrained model, train within a time budget, evaluate again,
predict and draw overlays, and write a summary table (Markdown + JSON) under the output folder.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from posekit.engine.checkpoint import inference_state_dict, load_checkpoint
from posekit.engine.evaluation import evaluate, predict, to_device
from posekit.engine.recipes import load_config, resolve_config_path
from posekit.engine.trainer import seed_everything, train
from posekit.families import Task, build_task, get_task_class, list_tasks

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


def run_family(family: str, out_dir: Path, budget_s: float) -> dict:
    recipe = get_task_class(family).synthetic_recipe
    cfg = load_config(recipe, [f"out_dir={out_dir}", f"name={family}", f"train.max_time={budget_s}",
                               "train.tensorboard=false"])
    task = build_task(cfg)
    run_dir = cfg.run_dir
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a demo always starts fresh

    seed_everything(cfg.train.seed)  # the same initial weights that train() will start from
    model = task.build_model()
    datasets = task.build_datasets()
    task.prepare(model, datasets)
    before = _scalars(evaluate(task, model, datasets))

    t0 = time.time()
    train(cfg)
    seconds = time.time() - t0

    ckpt = load_checkpoint(run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "last.pt")
    model = task.build_model()
    model.load_state_dict(inference_state_dict(ckpt))
    model.eval()
    task.prepare(model, {})
    after = _scalars(evaluate(task, model, datasets))
    images = demo_pictures(task, model, datasets, run_dir / "predictions")
    key = task.primary_metric
    return {"family": family, "recipe": str(resolve_config_path(recipe)), "model": cfg.model.name,
            "steps": int(load_checkpoint(run_dir / "last.pt")["step"]), "train_seconds": round(seconds, 1),
            "metric": key, "higher_is_better": task.higher_is_better, "before": before.get(key),
            "after": after.get(key), "all_before": before, "all_after": after,
            "curves": str(run_dir / "curves.png"), "images": [str(p) for p in images]}


@torch.no_grad()
def demo_pictures(task: Task, model, datasets: dict, out_dir: Path, count: int = 4) -> list[Path]:
    """The family's own demo pictures, or "ground truth | prediction" for a few validation samples
    spread over the set (evaluation geometry, every person of the image)."""
    from posekit.data.io import write_image
    from posekit.viz import caption, draw_skeleton

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    own = task.demo(lambda inputs, **options: predict(task, model, inputs, **options), datasets, out_dir)
    if own:
        return own
    dataset = datasets[task.eval_splits[-1]]
    source = getattr(dataset, "source", None)
    if source is None:
        return []
    picks = sorted(set(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int).tolist()))
    batch = to_device(task.collate([dataset[i] for i in picks]), next(model.parameters()).device)
    results = task.postprocess(task.forward_decode(model.eval(), task.model_inputs(batch)), batch)
    paths = []
    for n, (i, res) in enumerate(zip(picks, results)):
        sample = source[i].load()
        # upscale small images before drawing, so the skeleton stays sharp and readable
        f = max(1.0, 360.0 / sample.image.shape[0])
        image = cv2.resize(sample.image, None, fx=f, fy=f, interpolation=cv2.INTER_LINEAR) if f > 1 else sample.image
        gt = sample.keypoints

        def up(points):
            return (points[..., :2] + 0.5) * f - 0.5
        left = caption(draw_skeleton(image, up(gt), (gt[..., 2] > 0).astype(float), task.skeleton,
                                     score_threshold=0.5), "ground truth")
        right = caption(draw_skeleton(image, up(res.keypoints), res.scores, task.skeleton, score_threshold=0.05),
                        "prediction")
        path = out_dir / f"{task.name}_demo_{n}.png"
        write_image(path, np.concatenate([left, right], axis=1))
        paths.append(path)
    return paths


def run_demo(*, out_dir: Path = Path("runs/demo"), families: list[str] | None = None,
             budget_s: float = 540.0) -> list[dict]:
    available = available_families()
    chosen = families or available
    unknown = [f for f in chosen if f not in available]
    if unknown:
        raise ValueError(f"no demo for {unknown}; available: {available}")
    if not chosen:
        raise ValueError("no family has a demo recipe yet")
    out_dir.mkdir(parents=True, exist_ok=True)
    total_share = sum(get_task_class(f).demo_share for f in chosen)
    rows = []
    for family in chosen:
        budget = budget_s * get_task_class(family).demo_share / total_share
        print(f"== {family}: training for up to {budget:.0f} s", flush=True)
        row = run_family(family, out_dir, budget)
        arrow = "higher is better" if row["higher_is_better"] else "lower is better"
        print(f"   {row['metric']}: {row['before']:.4g} -> {row['after']:.4g} ({arrow}) after {row['steps']} steps",
              flush=True)
        rows.append(row)
    (out_dir / "summary.json").write_text(json.dumps(rows, indent=1))
    lines = ["# posekit demo", "", "Synthetic data, CPU, trained from scratch within the time budget.", "",
             "| family | model | steps | train s | metric | before | after | pictures |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pics = ", ".join(f"[{Path(p).name}]({Path(p).relative_to(out_dir)})" for p in r["images"][:3])
        better = "↑" if r["higher_is_better"] else "↓"
        lines.append(f"| {r['family']} | {r['model']} | {r['steps']} | {r['train_seconds']} | {r['metric']} {better} | "
                     f"{r['before']:.4g} | {r['after']:.4g} | {pics} |")
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[4:]))
    print(f"summary: {out_dir / 'summary.md'}")
    return rows
