"""Trainer overhead: posekit's trainer step time vs a bare PyTorch loop, same model and data.

Both loops run in this one process in short alternating blocks (bare, trainer, trainer, bare,
...); each pair of blocks gives one ratio under the same machine load, and the report is the
median of those paired ratios with their spread (benchmarks/paired.py), which stays stable on a
busy machine where "fastest of N long repeats" does not. Everything the trainer does
between steps (finiteness check, schedule, logging every 10 steps, metrics.csv, progress bar)
is included; validation and checkpoints are not (they happen once per epoch/run).

    python benchmarks/bench_trainer_overhead.py [--steps 30] [--pairs 15] [--out PATH]
Goal: ratio <= 1.05. Prints the report; writes it (markdown) only with `--out PATH`, e.g.
`--out benchmarks/results/trainer_overhead.md`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired import summarize  # noqa: E402

from posekit.config import DataConfig
from posekit.engine.recipes import config_from_dict
from posekit.engine.trainer import train
from posekit.families import Task, register_task
from posekit.skeletons import landmarks


def make_model() -> nn.Module:
    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
    return nn.Sequential(block(3, 32), nn.MaxPool2d(2), block(32, 64), nn.MaxPool2d(2), block(64, 64),
                         nn.Conv2d(64, 16, 1))


class HeatmapData(torch.utils.data.Dataset):
    def __init__(self, n=512):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 64, 64, generator=g)
        self.y = torch.rand(n, 16, 16, 16, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "target": self.y[i]}


STAMPS: list[float] = []


@dataclass
class BenchData(DataConfig):
    n: int = 512


@register_task
class OverheadTask(Task):
    """Training only: no validation split, so the trainer never evaluates (the decode and metric
    hooks of the contract are not needed)."""
    name = "bench_overhead"
    DataConfig = BenchData

    @property
    def skeleton(self):
        return landmarks(16)

    def build_model(self):
        return make_model()

    def build_datasets(self, splits=None):
        return {"train": HeatmapData(self.cfg.data.n)}

    def build_loss(self):
        def loss(outputs, batch):
            return ((outputs - batch["target"]) ** 2).mean(), {}
        return loss

    def model_inputs(self, batch):
        return batch["image"]

    def training_step(self, model, batch):
        STAMPS.append(time.perf_counter())
        return self.loss(model(self.model_inputs(batch)), batch)


def bare_loop(steps: int, batch_size: int) -> list[float]:
    torch.manual_seed(0)
    model = make_model().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(HeatmapData(), batch_size=batch_size, shuffle=True, drop_last=True)
    stamps, done = [], 0
    while done < steps:
        for batch in loader:
            stamps.append(time.perf_counter())
            loss = ((model(batch["image"]) - batch["target"]) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done >= steps:
                break
    stamps.append(time.perf_counter())
    return stamps


def trainer_loop(steps: int, batch_size: int, out_dir: str, name: str) -> list[float]:
    STAMPS.clear()
    cfg = config_from_dict({"task": "bench_overhead", "name": name, "out_dir": out_dir,
                            "train": {"batch_size": batch_size, "max_steps": steps, "lr": 1.0e-3, "amp": "fp32",
                                      "log_every": 10, "val_every": 10_000_000, "tensorboard": False}})
    train(cfg)
    return STAMPS[:] + [STAMPS[-1] + statistics.median(np.diff(STAMPS))]  # last step's end is not stamped


def per_step(stamps: list[float], warmup: int) -> float:
    """Mean step time after warm-up: periodic work (logging every 10 steps) counts in full."""
    return float(np.mean(np.diff(stamps)[warmup:]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="steps per block (the first 5 are warm-up)")
    parser.add_argument("--pairs", type=int, default=15, help="alternating (bare, trainer) block pairs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="also write the report (markdown) to this file")
    args = parser.parse_args()
    if args.steps <= 10:
        parser.error("--steps must be > 10 (5 warm-up steps, and the trainer logs every 10)")
    torch.set_num_threads(args.threads)
    warmup = 5
    bare, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.pairs):
            # the order flips every pair, so a steady drift of the machine's load cancels
            runs = [("bare", lambda: bare_loop(args.steps, args.batch_size)),
                    ("trainer", lambda: trainer_loop(args.steps, args.batch_size, tmp, f"overhead{r}"))]
            for kind, run in (runs if r % 2 == 0 else runs[::-1]):
                (bare if kind == "bare" else ours).append(per_step(run(), warmup))
            print(f"pair {r}: bare {bare[-1] * 1e3:.1f} ms/step, trainer {ours[-1] * 1e3:.1f} ms/step, "
                  f"ratio {ours[-1] / bare[-1]:.3f}", flush=True)
    s = summarize(bare, ours)
    command = "python benchmarks/bench_trainer_overhead.py " + " ".join(sys.argv[1:])
    text = (f"## Trainer overhead\n\n`{command.strip()}` ({torch.get_num_threads()} CPU threads, torch "
            f"{torch.__version__})\n\n| loop | median ms/step over {s['pairs']} blocks |\n|---|---|\n"
            f"| bare PyTorch | {s['a_s'] * 1e3:.2f} |\n| posekit trainer | {s['b_s'] * 1e3:.2f} |\n\n"
            f"**ratio trainer / bare = {s['ratio']:.3f}** (median of the {s['pairs']} paired ratios; IQR "
            f"{s['q1']:.3f}-{s['q3']:.3f}, range {s['min']:.3f}-{s['max']:.3f}; goal <= 1.05). Paired estimator "
            f"(benchmarks/paired.py): blocks of {args.steps} steps, bare and trainer alternating with the order "
            f"flipped every pair; the per-step time of a block is its mean after {warmup} warm-up steps, batch "
            f"{args.batch_size}, 64x64 conv net; the trainer logs every 10 steps (metrics.csv, progress bar) as in "
            f"normal use.\n")
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
