"""Learning benchmark of Factorized Spatial Embeddings (unsupervised landmarks), CPU only.

From scratch on synthetic cartoon faces (`faces_synthetic` recipe: fse_small, K = 8): the
paper's protocol before and after a fixed number of optimisation steps, beside the mean-shape
baseline: a linear regressor from the K discovered landmarks to the 5 known points, fitted on the
"fit" faces, inter-ocular NME (%) on held-out "val" faces. Also the equivariance error (pixels):
landmarks found on g(x) vs the landmarks of x moved by g, for held-out random TPS warps g
(seeds never used in training).

    .venv/bin/python benchmarks/bench_fse.py [--steps 400] [--batch 16] [--threads 1] [--out PATH]

The budget is optimisation steps, so a result reproduces on a busy machine (one thread is the
fastest setting on a shared 2-core box). Prints a markdown report; writes it only with --out.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from posekit.engine.evaluation import evaluate  # noqa: E402
from posekit.engine.recipes import load_config  # noqa: E402
from posekit.engine.trainer import build_optimizer, seed_everything  # noqa: E402
from posekit.families import build_task  # noqa: E402
from posekit.models import count_parameters  # noqa: E402


@torch.no_grad()
def equivariance_error(task, model, dataset, n: int = 64, seed: int = 987_654) -> float:
    """Mean |kp(g(x)) - g(kp(x))| in pixels over n held-out images and warps."""
    model.eval()
    x = torch.stack([dataset[i]["image"] for i in range(min(n, len(dataset)))]).float() / 255
    warp = task._sample_warp(len(x), "cpu", generator=torch.Generator().manual_seed(seed))
    on_x = task.forward_decode(model, x)["keypoints"]
    on_warped = task.forward_decode(model, warp.warp_image(x))["keypoints"]
    return float((on_warped - warp.warp_points(on_x.double()).float()).norm(dim=-1).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fit", type=int, default=300, help="labelled faces the regressor is fitted on")
    ap.add_argument("--val", type=int, default=200, help="held-out faces it is scored on")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    cfg = load_config("faces_synthetic", [f"train.lr={args.lr}", f"train.batch_size={args.batch}",
                                          f"data.synthetic_train_size={args.steps * args.batch}",
                                          f"data.synthetic_fit_size={args.fit}", f"data.synthetic_val_size={args.val}"])
    task = build_task(cfg)
    seed_everything(cfg.train.seed)
    model = task.build_model()
    datasets = task.build_datasets()
    task.prepare(model, datasets)
    rows = []

    def measure(label, steps, seconds):
        m = evaluate(task, model, datasets)
        rows.append((label, steps, seconds, m["nme"], m["nme_mean_shape"], m["nme_fit"],
                     equivariance_error(task, model, datasets["val"]), m["val_loss"]))
        print(f"{label}: nme {m['nme']:.2f}  mean shape {m['nme_mean_shape']:.2f}", flush=True)

    measure("untrained", 0, 0.0)
    optimizer = build_optimizer(model, cfg)
    loader = torch.utils.data.DataLoader(datasets["train"], batch_size=args.batch, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(cfg.train.seed))
    model.train()
    start = time.time()
    step, last = 0, {}
    for batch in loader:
        loss, last = task.training_step(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % 50 == 0:
            print(f"step {step}: loss {float(loss.detach()):.2f} " + " ".join(f"{k} {v:.3f}" for k, v in last.items()), flush=True)
        if step >= args.steps:
            break
    seconds = time.time() - start
    measure("trained", step, seconds)

    trainable = count_parameters(model)[0]
    d = cfg.data
    lines = [
        "# FSE learning benchmark (synthetic faces, CPU)", "",
        f"{cfg.model.name}, K = {task.num_landmarks}, {trainable:,} trainable parameters; {d.warp} warps; "
        f"batch {args.batch}, Adam lr {args.lr} (beta1 0.5), wd 5e-4 on filters; {args.threads} thread(s), "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}.",
        f"Regressor fitted on {args.fit} faces, NME on {args.val} held-out faces; equivariance on 64 held-out "
        f"faces and warps.", "",
        "| model | steps | train s | NME % (val) | mean-shape NME % | NME % (fit) | equivariance px | val loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]:.0f} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.2f} | {r[6]:.2f} | {r[7]:.1f} |"
              for r in rows]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
