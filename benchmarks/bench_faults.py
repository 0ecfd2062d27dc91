"""Fault profile, the long one (tests/test_faults.py runs the short one): SIGKILL a real
`posekit train` at random moments, over and over, restart it with the same command
(`train.resume=auto`, as a supervisor or torchrun would), and check what docs/reliability.md
promises: the final weights are bit-exact against an uninterrupted run, metrics.csv logs every
step once and in order, last.pt is always loadable, and a finished run, started again, trains
nothing.

    .venv/bin/python benchmarks/bench_faults.py [--kills 20] [--recipe mpii_synthetic] [--steps 60]
                                                [--workers 1] [--seed 0] [--out PATH]

The default recipe is the Hourglass synthetic one shrunk to seconds (`Task.smoke_overrides`
style: tiny model and images), so the faults land inside real image pipelines, heatmap targets
and validation; `--recipe` takes any recipe name or YAML and `--set KEY=VALUE` overrides. Kill
moments are drawn from --seed: a step after the last checkpoint, plus a random delay inside it
(forward, backward, a checkpoint write, a validation). Prints a report; writes it (markdown)
only with `--out`.
"""
from __future__ import annotations

import argparse
import csv
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from posekit.engine.checkpoint import load_checkpoint  # noqa: E402

SMALL = {  # seconds-long versions of the synthetic recipes
    "mpii_synthetic": ["data.synthetic_train_size=64", "data.synthetic_val_size=16", "data.input_size=64",
                       "data.heatmap_size=16", "data.synthetic_image_size=96", "train.batch_size=8",
                       "train.warmup_steps=0"],
}


def command(recipe: str, out_dir: Path, steps: int, workers: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "posekit", "train", recipe, f"out_dir={out_dir}", "name=run",
            f"train.max_steps={steps}", f"train.val_every={max(2, steps // 4)}", f"train.save_every={max(1, steps // 12)}",
            "train.log_every=1", "train.progress=false", "train.tensorboard=false", "train.resume=auto",
            f"train.num_workers={workers}", *SMALL.get(Path(recipe).stem, []), *extra]


def step_of(run: Path) -> int:
    return load_checkpoint(run / "last.pt")["step"] if (run / "last.pt").is_file() else 0


def watch_steps(proc: subprocess.Popen, run: Path, target: int, delay: float) -> bool:
    """SIGKILL `proc` once metrics.csv shows step `target` (plus `delay` s); False if it ended first."""
    while proc.poll() is None:
        rows = (run / "metrics.csv").read_text().splitlines() if (run / "metrics.csv").is_file() else []
        if any(r.split(",", 1)[0] == str(target) for r in rows[1:]):
            time.sleep(delay)
            proc.kill()
            proc.wait()
            return True
        time.sleep(0.005)
    return False


def metrics_consistent(run: Path, steps: int) -> bool:
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    train_steps = [int(r["step"]) for r in rows if r.get("loss")]
    val_keys = [k for k in (rows[0] if rows else {}) if k.startswith("val/")]
    val_steps = [int(r["step"]) for r in rows if val_keys and r.get(val_keys[0])]
    return train_steps == list(range(1, steps + 1)) and val_steps == sorted(set(val_steps))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--recipe", default="mpii_synthetic")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out")
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    rnd = random.Random(args.seed)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        straight_cmd = command(args.recipe, tmp / "straight", args.steps, args.workers, args.extra)
        straight = subprocess.Popen(straight_cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
        errors: list[str] = []
        threading.Thread(target=lambda: errors.append(straight.communicate()[1]), daemon=True).start()
        run = tmp / "killed" / "run"
        cmd = command(args.recipe, tmp / "killed", args.steps, args.workers, args.extra)
        kills, loadable, with_ckpt, ended_early, resumed_from = 0, 0, 0, 0, []
        while kills < args.kills:
            at = step_of(run)
            if at >= args.steps - 1:
                break
            target = rnd.randint(at + 1, args.steps - 1)
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if watch_steps(proc, run, target, rnd.uniform(0.0, 0.2)):
                kills += 1
                if (run / "last.pt").is_file():
                    with_ckpt += 1
                    load_checkpoint(run / "last.pt")  # raises if a kill left it unreadable
                    loadable += 1
                resumed_from.append(at)
            else:
                ended_early += 1
                if proc.returncode != 0:
                    raise SystemExit(f"the run failed: {proc.stderr.read().decode()[-2000:]}")
        final = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if final.returncode != 0:
            raise SystemExit(f"the final resume failed: {final.stderr[-2000:]}")
        straight.wait()
        if straight.returncode != 0:
            raise SystemExit(f"the uninterrupted run failed: {''.join(errors)[-2000:]}")
        a = load_checkpoint(tmp / "straight" / "run" / "last.pt")["model"]
        b = load_checkpoint(run / "last.pt")["model"]
        exact = set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
        consistent = metrics_consistent(run, args.steps)
        before = (run / "last.pt").read_bytes()
        again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        complete = again.returncode == 0 and "already complete" in again.stdout and (run / "last.pt").read_bytes() == before
    report = "\n".join([
        f"# Fault profile: {args.kills} SIGKILLs of `posekit train {args.recipe}`",
        "",
        f"{args.steps} steps, {args.workers} DataLoader worker(s), seed {args.seed}, {time.time() - t0:.0f} s, "
        f"torch {torch.__version__}",
        "",
        "| check | result |",
        "|---|---|",
        f"| SIGKILLs delivered mid-run | {kills} (runs that ended before their kill: {ended_early}) |",
        f"| last.pt loadable after each kill | {loadable} of {with_ckpt} kills that left one |",
        f"| resumed from steps | {resumed_from} |",
        f"| final weights bit-exact vs uninterrupted | {exact} |",
        f"| metrics.csv: every step once, in order | {consistent} |",
        f"| restarting the finished run trains nothing | {complete} |",
    ])
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
    return 0 if exact and consistent and complete else 1


if __name__ == "__main__":
    sys.exit(main())
