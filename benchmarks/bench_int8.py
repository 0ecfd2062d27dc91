"""int8 vs fp32 ONNX per family: latency at batch 1 and 8 (onnxruntime, paired) and the metric change.

For each family: a smoke checkpoint of its synthetic recipe (or --checkpoint FAMILY=PATH for a
trained one), `export_task` (fp32) and `export_int8` (calibrated on --calib validation images,
no refusal: the metric change is what is reported). Latency is `session.run` on a batch of the
family's own validation inputs, fp32 and int8 alternating in flipped pairs (`paired.py`),
both sessions with --threads intra-op threads.

    python benchmarks/bench_int8.py --families gmh_mdn hourglass --threads 1
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from paired import fmt_ratio, paired_ratio  # noqa: E402

SMALLER = {"hourglass": ("data.input_size=64", "data.heatmap_size=16", "data.synthetic_image_size=96")}


def _inputs(task, dataset, n: int) -> np.ndarray:
    loader = torch.utils.data.DataLoader(dataset, batch_size=min(n, len(dataset)), collate_fn=task.collate)
    x = task.model_inputs(next(iter(loader))).numpy().astype(np.float32)
    reps = math.ceil(n / len(x))
    return np.ascontiguousarray(np.concatenate([x] * reps)[:n])


def bench_family(family: str, checkpoint: str | None, work: Path, *, calib: int, threads: int, pairs: int) -> dict:
    from posekit.engine.export import export_task
    from posekit.engine.predictor import load_for_inference
    from posekit.engine.quantize import export_int8
    from posekit.runtime.onnx import open_session
    if checkpoint is None:
        from conftest import smoke_checkpoint
        checkpoint = smoke_checkpoint(family, work / f"ckpt_{family}", *SMALLER.get(family, ()))
    task, model, _ = load_for_inference(checkpoint)
    datasets = task.build_datasets(tuple(task.eval_splits))
    fp32, int8 = work / f"{family}.onnx", work / f"{family}.int8.onnx"
    export_task(task, model, fp32)
    report = export_int8(task, model, int8, datasets, calib=calib, max_drop=math.inf)
    s32, s8 = open_session(fp32, threads=threads), open_session(int8, threads=threads)
    name = s32.get_inputs()[0].name
    row = {"family": family, "metric": report["metric"], "fp32_metric": report["fp32"], "int8_metric": report["int8"],
           "drop": report["drop"], "fp32_mb": fp32.stat().st_size / 2**20, "int8_mb": int8.stat().st_size / 2**20}
    for batch in (1, 8):
        x = _inputs(task, datasets[task.eval_splits[-1]], batch)
        r = paired_ratio(lambda s=s32, x=x: s.run(None, {name: x}), lambda s=s8, x=x: s.run(None, {name: x}),
                         pairs=pairs, block=3)
        row[f"b{batch}"] = r
    return row


def main(argv=None) -> list[dict]:
    from posekit.families import get_task_class, list_tasks
    families = [n for n in list_tasks() if get_task_class(n).__module__.startswith("posekit.families.")]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="*", default=families)
    p.add_argument("--checkpoint", action="append", default=[], metavar="FAMILY=PATH")
    p.add_argument("--calib", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pairs", type=int, default=9)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    given = dict(c.split("=", 1) for c in args.checkpoint)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            row = bench_family(family, given.get(family), Path(tmp), calib=args.calib, threads=args.threads,
                               pairs=args.pairs)
            rows.append(row)
            print(f"| {family} | {row['metric']} {row['fp32_metric']:.4g} -> {row['int8_metric']:.4g} "
                  f"({row['drop']:.1%} worse) | {fmt_ratio(row['b1'])} | {fmt_ratio(row['b8'])} | "
                  f"{row['b1']['a_s'] * 1e3:.2f} / {row['b1']['b_s'] * 1e3:.2f} ms | "
                  f"{row['fp32_mb']:.1f} -> {row['int8_mb']:.1f} MB |", flush=True)
    print(f"int8/fp32 latency ratios: median of {args.pairs} pairs, {args.threads} thread(s), calib {args.calib}")
    return rows


if __name__ == "__main__":
    main()
