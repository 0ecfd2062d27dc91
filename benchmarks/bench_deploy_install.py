"""The deploy install (`pip install 'posekit[runtime]'`): what it holds, its size, and the start-up
of `posekit predict model.onnx` in it against the same command in the full install.

Builds a fresh venv under a temp folder (or --venv DIR, kept) with `pip install '<repo>[runtime]'`
(from the package index or pip's cache, pinned by constraints.txt), checks that torch, scipy,
matplotlib, h5py, pycocotools and onnx are absent, and measures its site-packages size. Then, per
family, exports a one-step smoke checkpoint and times fresh processes of `posekit predict FILE
one.jpg` (`posekit lift FILE --json one.json` for the gmh_mdn lifter): the .pt and the .onnx in
this interpreter's full install, and the .onnx in the deploy venv, interleaved in rotating order
(benchmarks/paired.py `summarize`: per-round ratios, median and IQR).

Run:  .venv/bin/python benchmarks/bench_deploy_install.py [--families keypoints hourglass openpose
      dogs fse gmh_mdn] [--pairs 5] [--threads 2] [--venv /tmp/posekit-deploy]
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
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from paired import fmt_ratio, summarize  # noqa: E402

SMALL = {"hourglass": ("data.input_size=64", "data.heatmap_size=16", "data.synthetic_image_size=96")}
ABSENT = ("torch", "torchvision", "scipy", "matplotlib", "h5py", "pycocotools", "onnx", "onnxscript")


def make_venv(venv: Path) -> Path:
    """A venv with posekit[runtime] only; returns its python."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c",
                    str(ROOT / "constraints.txt"), f"{ROOT}[runtime]"], check=True)
    return python


def site_size_mb(python: Path) -> float:
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    return sum(f.stat().st_size for f in Path(site).rglob("*") if f.is_file()) / 1e6


def absent_modules(python: Path) -> list[str]:
    code = ("import importlib.util, sys; "
            f"print(','.join(m for m in {ABSENT!r} if importlib.util.find_spec(m) is not None))")
    found = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    return [m for m in found.split(",") if m]


def timed(python: Path, *args: str, env) -> float:
    start = time.perf_counter()
    subprocess.run([str(python), "-m", "posekit", *args], check=True, capture_output=True, env=env, cwd="/")
    return time.perf_counter() - start


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="+", default=["keypoints", "hourglass", "openpose", "dogs", "fse", "gmh_mdn"])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--venv", type=Path, default=None, help="where to build (and keep) the deploy venv")
    args = ap.parse_args(argv)
    from conftest import smoke_checkpoint

    from posekit.cli import main as posekit_main
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        deploy = make_venv(args.venv or tmp / "venv")
        present = absent_modules(deploy)
        size = site_size_mb(deploy)
        full_size = site_size_mb(Path(sys.executable))
        image = tmp / "one.jpg"
        cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8))
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        pose = tmp / "one.json"
        pose.write_text('{"skeleton": "coco17", "poses": [[%s]]}' % ", ".join(
            f"[{160 + 20 * np.sin(i)}, {40 + 10 * i}, 1.0]" for i in range(17)))
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        lines = [f"deploy venv: `pip install '.[runtime]'`, site-packages {size:.0f} MB (this interpreter's full "
                 f"install: {full_size:.0f} MB); absent: {', '.join(m for m in ABSENT if m not in present)}"
                 + (f"; PRESENT (should not be): {', '.join(present)}" if present else ""), "",
                 f"fresh processes, --threads {args.threads}, {args.pairs} rounds in rotating order:", "",
                 "| family | command | full .pt s | full .onnx s | deploy .onnx s | deploy .onnx / full .pt (IQR) "
                 "| deploy / full .onnx (IQR) |", "|---|---|---:|---:|---:|---:|---:|"]
        for family in args.families:
            model = tmp / f"{family}.onnx"
            checkpoint = smoke_checkpoint(family, tmp / f"run_{family}", *SMALL.get(family, ()))
            assert posekit_main(["export", str(checkpoint), "--out", str(model)]) == 0
            verb = ["lift", "{model}", "--json", str(pose)] if family == "gmh_mdn" else ["predict", "{model}", str(image)]
            runs = {"pt": (Path(sys.executable), checkpoint), "onnx": (Path(sys.executable), model),
                    "deploy": (deploy, model)}
            times: dict = {k: [] for k in runs}
            for i in range(args.pairs):
                keys = list(runs)[i % 3:] + list(runs)[:i % 3]
                for key in keys:
                    python, file = runs[key]
                    argv = [str(file) if a == "{model}" else a for a in verb]
                    times[key].append(timed(python, *argv, "--out", str(tmp / f"o_{key}_{i}"),
                                            "--threads", str(args.threads), env=env))
            vs_pt, vs_onnx = summarize(times["pt"], times["deploy"]), summarize(times["onnx"], times["deploy"])
            lines.append(f"| {family} | {verb[0]} | {vs_pt['a_s']:.2f} | {vs_onnx['a_s']:.2f} | {vs_pt['b_s']:.2f} | "
                         f"{fmt_ratio(vs_pt)} | {fmt_ratio(vs_onnx)} |")
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
