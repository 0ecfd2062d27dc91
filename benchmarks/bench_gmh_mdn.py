"""GMH-MDN learning benchmark: does the lifter learn, and do M hypotheses help?

1. Synthetic Human3.6M-like data (configs/h36m_synthetic.yaml): train with the posekit trainer
   for a fixed number of steps, report Protocol #1/#2 (best of 5 and most likely hypothesis) on a held-out
   synthetic test split before and after training.
2. Real Human3.6M samples shipped in ../shared/realdata/h36m/baseline (configs/h36m_gmh_mdn.yaml,
   the paper model and optimiser): train on S1 (Directions 1, 4 cameras), select on the tail of
   the S1 sequences, evaluate on S9 (Directions 1, 4 cameras), once with the Stacked Hourglass
   detections as 2-D input and once with projected ground-truth 2-D.

Budgets are optimisation steps, so results reproduce on a busy machine; the defaults are the
step counts of the recorded wall-clock runs (300 s synthetic, 2 x 120 s real on a 2-core machine):
23,800 synthetic, 4,111 real with detections, 3,966 real with GT 2-D. `--synthetic-max-time` /
`--real-max-time SECONDS` give a wall-clock budget instead (the old behaviour; the step count then
depends on the machine's load). Run:

    .venv/bin/python benchmarks/bench_gmh_mdn.py [--synthetic-steps 23800] [--real-detections-steps 4111]
        [--real-gt-steps 3966] [--threads 2] [--out PATH]

Results are printed; the report (markdown) is written only with `--out PATH`, e.g.
`--out benchmarks/results/gmh_mdn.md`.
"""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from posekit.data.io import realdata_root  # noqa: E402
from posekit.engine.evaluation import evaluate, evaluate_checkpoint  # noqa: E402
from posekit.engine.recipes import load_config  # noqa: E402
from posekit.engine.trainer import seed_everything, train  # noqa: E402
from posekit.families import build_task  # noqa: E402

KEYS = ("p1_best", "p1_ml", "p2_best", "p2_ml")


def untrained_metrics(config: str, overrides: list[str]) -> dict:
    """The model exactly as the trainer initialises it (same seed), with training statistics fitted."""
    task = build_task(load_config(config, overrides))
    seed_everything(task.cfg.train.seed)
    model = task.build_model()
    task.prepare(model, task.build_datasets(("train",)))
    test_task = build_task(load_config(config, overrides + ["data.eval_split=test"]))
    test_task.prepare(model, {})
    metrics = evaluate(test_task, model, test_task.build_datasets(test_task.eval_splits))
    metrics.pop("table", None)
    return metrics


def budget(steps: int, max_time: float | None) -> list[str]:
    """Trainer overrides: `steps` steps, or a wall-clock budget of `max_time` seconds when given."""
    if max_time is not None:
        return [f"train.max_time={max_time}", "train.max_steps=1000000"]
    return [f"train.max_steps={steps}", "train.max_time=null"]


def run(config: str, overrides: list[str], out_dir: Path, name: str) -> dict:
    overrides = overrides + [f"out_dir={out_dir}", f"name={name}", "train.progress=false",
                             "train.tensorboard=false"]
    cfg = load_config(config, overrides)
    before = untrained_metrics(config, overrides)
    t0 = time.time()
    run_dir = train(cfg)
    train_s = time.time() - t0
    with open(run_dir / "metrics.csv") as f:
        steps = max((int(float(r["step"])) for r in csv.DictReader(f) if r.get("step")), default=0)
    test_cfg = load_config(config, overrides + ["data.eval_split=test"])
    after = evaluate_checkpoint(test_cfg, run_dir / "best.pt")
    return {"before": before, "after": after, "steps": steps, "seconds": train_s, "table": after.pop("table", "")}


def fmt(row: dict) -> str:
    return " | ".join(f"{row[k]:.1f}" for k in KEYS)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synthetic-steps", type=int, default=23800)
    ap.add_argument("--real-detections-steps", type=int, default=4111)
    ap.add_argument("--real-gt-steps", type=int, default=3966)
    ap.add_argument("--synthetic-max-time", type=float, default=None,
                    help="seconds of synthetic training instead of --synthetic-steps (wall-clock budget)")
    ap.add_argument("--real-max-time", type=float, default=None,
                    help="seconds of each real run instead of the step budgets (wall-clock budget)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--out", default=None, help="also write the report (markdown) to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="data.eval_split=test")
    command = "  ".join(["    .venv/bin/python benchmarks/bench_gmh_mdn.py"] + sys.argv[1:])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results["synthetic"] = run("configs/h36m_synthetic.yaml",
                                   budget(args.synthetic_steps, args.synthetic_max_time) + ["train.val_every=1000"],
                                   tmp, "synthetic")
        print(results["synthetic"]["table"], flush=True)
        baseline = realdata_root() / "h36m" / "baseline"
        if not args.skip_real and baseline.is_dir():
            real = [f"data.root={baseline}", "data.detections=StackedHourglass", "data.train_subjects=[S1]",
                    "data.test_subjects=[S9]", "data.val_fraction=0.1", "train.max_epochs=null",
                    "train.val_every=500", "train.num_workers=0", "train.log_every=100"]
            steps = {"detections": args.real_detections_steps, "gt": args.real_gt_steps}
            for source in ("detections", "gt"):
                results[f"real_{source}"] = run("configs/h36m_gmh_mdn.yaml",
                                                real + budget(steps[source], args.real_max_time)
                                                + [f"data.input_2d={source}"], tmp, f"real_{source}")
                print(results[f"real_{source}"]["table"], flush=True)

    lines = ["# GMH-MDN benchmark", "", "Command (from the repository root, CPU, "
             f"torch.set_num_threads({args.threads}), 2-core x86_64 machine):", "", command, "",
             "All errors in mm, 17-joint convention (root included, the paper's), unweighted mean over actions.",
             "best = best of the M=5 hypotheses (oracle), ML = hypothesis with the largest mixing weight.", "",
             "| run | train data | eval data | steps | train s | when | P1 best | P1 ML | P2 best | P2 ML |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    desc = {"synthetic": ("synthetic 50k (h36m_synthetic.yaml, width 512)", "synthetic test split, 5k"),
            "real_detections": ("S1 Directions 1, SH detections (paper model)", "S9 Directions 1, SH detections"),
            "real_gt": ("S1 Directions 1, GT 2-D (paper model)", "S9 Directions 1, GT 2-D")}
    for key, r in results.items():
        tr, ev = desc[key]
        lines.append(f"| {key} | {tr} | {ev} | 0 | 0 | before | {fmt(r['before'])} |")
        lines.append(f"| {key} | {tr} | {ev} | {r['steps']} | {r['seconds']:.0f} | after | {fmt(r['after'])} |")
    lines.append("")
    for key, r in results.items():
        lines += [f"## {key}: per-action table after training", "", "```", r["table"], "```", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
