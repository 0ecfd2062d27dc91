"""Start-up and 20-image wall time of `posekit predict model.onnx` vs `posekit predict best.pt`.

Trains a one-step checkpoint of a family's smoke recipe (default hourglass at 64 px), exports it
with `posekit export`, then runs the CLI in fresh processes, paired and interleaved (.pt, .onnx,
.onnx, .pt, ...): start-up = one image, and 20 images. Also reports whether the .onnx process
imported torch / onnx (`python -X importtime`): for keypoints, hourglass and openpose files the
CLI takes the numpy runtime (posekit.runtime.predict) and imports neither. Goals (issue 25):
.onnx start-up <= 1.0 s on 2 cores (and its ratio to the .pt start-up), 20 images <= 0.6x the
.pt CLI. Ratios are per pair (benchmarks/paired.py `summarize`: median and IQR).

Run:  .venv/bin/python benchmarks/bench_onnx_startup.py [--family hourglass] [--pairs 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from paired import fmt_ratio, summarize  # noqa: E402

SMALL = {"hourglass": ("data.input_size=64", "data.heatmap_size=16", "data.synthetic_image_size=96")}


def cli(*args: str, env=None) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "posekit", *args], check=True, capture_output=True, env=env, cwd=ROOT)
    return time.perf_counter() - start


def imported(onnx_path: Path, image: Path, out: Path) -> dict:
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "posekit", "predict", str(onnx_path), str(image),
                          "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    names = {line.split("|")[-1].strip().split(".")[0] for line in run.stderr.splitlines() if "|" in line}
    return {m: m in names for m in ("torch", "onnx")}


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="hourglass")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    from conftest import smoke_checkpoint
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = smoke_checkpoint(args.family, tmp / "run", *SMALL.get(args.family, ()))
        onnx_path = tmp / "model.onnx"
        cli("export", str(ckpt), "--out", str(onnx_path))
        images = tmp / "images"
        images.mkdir()
        rng = np.random.default_rng(0)
        for i in range(20):
            cv2.imwrite(str(images / f"{i:02d}.jpg"), rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))
        one = images / "00.jpg"
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        rows = {}
        for label, inputs in (("start-up (1 image)", [str(one)]), ("20 images", [str(images)])):
            pt, ox = [], []
            for i in range(args.pairs):
                order = [("pt", ckpt), ("onnx", onnx_path)] if i % 2 == 0 else [("onnx", onnx_path), ("pt", ckpt)]
                for kind, model in order:
                    t = cli("predict", str(model), *inputs, "--out", str(tmp / f"out_{kind}_{i}"),
                            "--threads", str(args.threads), env=env)
                    (pt if kind == "pt" else ox).append(t)
            rows[label] = summarize(pt, ox)  # a = .pt, b = .onnx: the ratio is .onnx / .pt per pair
        loaded = imported(onnx_path, one, tmp / "out_importtime")
    lines = [f"`posekit predict` CLI, {args.family} smoke checkpoint, --threads {args.threads}, "
             f"{args.pairs} interleaved pairs of fresh processes (loaded machine).", "",
             "| run | .pt s (median) | .onnx s (median) | .onnx / .pt (median, IQR) | min-max |",
             "|---|---:|---:|---:|---:|"]
    for label, r in rows.items():
        lines.append(f"| {label} | {r['a_s']:.2f} | {r['b_s']:.2f} | {fmt_ratio(r)} | {r['min']:.2f}-{r['max']:.2f} |")
    start, many = rows["start-up (1 image)"], rows["20 images"]
    lines += ["", f"the .onnx process imported torch: {loaded['torch']}, onnx: {loaded['onnx']}",
              f"goal .onnx start-up <= 1.0 s: {start['b_s']:.2f} s ({'met' if start['b_s'] <= 1.0 else 'NOT met'}); "
              f"goal 20 images .onnx / .pt <= 0.6: {many['ratio']:.2f} ({'met' if many['ratio'] <= 0.6 else 'NOT met'})"]
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
