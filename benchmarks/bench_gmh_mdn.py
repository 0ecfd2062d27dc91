"""GMH-MDN learning benchmark: does the lifter learn, and do M hypotheses help?

1. Synthetic Human3.6M-like data (configs/h36m_synthetic.yaml): train with the posekit trainer
   for a fixed CPU time, report Protocol #1/#2 (best of 5 and most likely hypothesis) on a held-out
   synthetic test split before and after training.
2. Real Human3.6M samples shipped in ../shared/realdata/h36m/baseline (configs/h36m_gmh_mdn.yaml,
   the paper model and optimiser): train on S1 (Directions 1, 4 cameras), select on the tail of
   the S1 sequences, evaluate on S9 (Directions 1, 4 cameras), once with the Stacked Hourglass
   detections as 2-D input and once with projected ground-truth 2-D.

CPU budget (defaults): 300 s synthetic training + 2 x 120 s real training, about 10 min wall
with evaluation on a 2-core machine. Run:

    .venv/bin/python benchmarks/bench_gmh_mdn.py [--synthetic-seconds 300] [--real-seconds 120] [--threads 2]

Results are printed and written to benchmarks/results/gmh_mdn.md.
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

from posekit.config import load_config  # noqa: E402
from posekit.data.io import realdata_root  # noqa: E402
from posekit.engine.trainer import evaluate_checkpoint, seed_everything, train  # noqa: E402
from posekit.tasks import get_task  # noqa: E402

KEYS = ("p1_best", "p1_ml", "p2_best", "p2_ml")


def untrained_metrics(config: str, overrides: list[str]) -> dict:
    """The model exactly as the trainer initialises it (same seed), with training statistics fitted."""
    cfg = load_config(config, overrides)
    task = get_task(cfg.task)
    seed_everything(cfg.train.seed)
    model = task.build_model(cfg)
    train_set, _ = task.build_datasets(cfg)
    task.prepare(model, train_set, cfg)
    test_cfg = load_config(config, overrides + ["data.eval_split=test"])
    _, test_set = task.build_datasets(test_cfg)
    return task.evaluate(model.eval(), test_set, test_cfg)


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
    ap.add_argument("--synthetic-seconds", type=float, default=300.0)
    ap.add_argument("--real-seconds", type=float, default=120.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gmh_mdn.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="data.eval_split=test")
    command = "  ".join(["    .venv/bin/python benchmarks/bench_gmh_mdn.py"] + sys.argv[1:])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results["synthetic"] = run("configs/h36m_synthetic.yaml",
                                   [f"train.max_time={args.synthetic_seconds}", "train.max_steps=1000000",
                                    "train.val_every=1000"], tmp, "synthetic")
        print(results["synthetic"]["table"], flush=True)
        baseline = realdata_root() / "h36m" / "baseline"
        if not args.skip_real and baseline.is_dir():
            real = [f"data.root={baseline}", "data.detections=StackedHourglass", "data.train_subjects=[S1]",
                    "data.test_subjects=[S9]", "data.val_fraction=0.1", f"train.max_time={args.real_seconds}",
                    "train.max_epochs=null", "train.max_steps=1000000", "train.val_every=500",
                    "train.num_workers=0", "train.log_every=100"]
            for source in ("detections", "gt"):
                results[f"real_{source}"] = run("configs/h36m_gmh_mdn.yaml", real + [f"data.input_2d={source}"],
                                                tmp, f"real_{source}")
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
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
