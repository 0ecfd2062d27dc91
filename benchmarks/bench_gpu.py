"""CUDA speed per family: what `benchmarks/gpu.sh` runs on a machine with an NVIDIA GPU.

1. training samples/s through the posekit trainer (`train.performance=N`), fp32 vs AMP bf16 vs
   AMP fp16 (+ GradScaler), on each family's synthetic recipe;
2. inference latency, eager `forward_decode` on the GPU vs the exported ONNX graph in onnxruntime
   (CUDAExecutionProvider when onnxruntime-gpu is installed, else the CPU provider, said so),
   batch 1 and 8, paired estimator (benchmarks/paired.py);
3. the OpenPose decode path on the device: in-graph peak finding + the grouping in postprocess;
4. 2-GPU torchrun DDP samples/s when two GPUs exist (gpu.sh starts it).

    python benchmarks/bench_gpu.py [--families ...] [--steps 30] [--out benchmarks/results/gpu.md]
    python benchmarks/bench_gpu.py --dry-run      # the plan, no GPU needed (how CI tests it)
The whole run is sized to finish in under 5 minutes on one modern GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from paired import fmt_ratio, paired_ratio  # noqa: E402

PRECISIONS = ("fp32", "bf16", "fp16")


def posekit_families() -> list[str]:
    from posekit.families import get_task_class, list_tasks
    return [n for n in list_tasks() if get_task_class(n).__module__.startswith("posekit.families.")]


# the trainer as it was before issue 25: the NaN guard reads the loss on the host every step
PER_STEP_READ = ("import sys, posekit.engine.trainer as t; t.LossWatch.MAX_PENDING = 1; "
                 "from posekit.cli import main; sys.exit(main(sys.argv[1:]))")


def train_rate(family: str, amp: str, steps: int, nproc: int = 1, *, device: str = "cuda",
               per_step_read: bool = False, extra: tuple[str, ...] = ()) -> dict:
    """samples/s of `steps` timed trainer steps (the trainer's performance mode prints one JSON
    line). `per_step_read`: the loss is read on the host every step (the pre-issue-25 loop)."""
    from posekit.families import get_task_class
    cls = get_task_class(family)
    sizes = [o for o in cls.smoke_overrides if "synthetic" in o.split("=", 1)[0]]
    args = ["train", cls.synthetic_recipe, *sizes, f"train.performance={steps}", f"train.amp={amp}",
            f"train.device={device}", "train.progress=false", *extra]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "-m", "posekit", *args]
    elif per_step_read:
        cmd = [sys.executable, "-c", PER_STEP_READ, *args]
    else:
        cmd = [sys.executable, "-m", "posekit", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{") and "samples_per_s" in line:
            return json.loads(line)
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"error": tail[0]}


def infer_latency(family: str, pairs: int, tmp: Path) -> list[str]:
    import onnxruntime as ort

    from bench_speed import synthetic_task
    from posekit.engine.evaluation import to_device
    from posekit.engine.export import export_task
    task = synthetic_task(family)
    datasets = task.build_datasets(tuple(dict.fromkeys(("train",) + task.eval_splits)))
    model = task.build_model()
    task.prepare(model, datasets)
    model.eval()
    spec = task.export_spec()
    path = export_task(task, model, tmp / f"{family}.onnx", check=False)["path"]
    cuda = torch.device("cuda")
    model.to(cuda)
    provider = "CUDAExecutionProvider" if "CUDAExecutionProvider" in ort.get_available_providers() \
        else "CPUExecutionProvider"
    session = ort.InferenceSession(path, providers=[provider])
    inputs = (task.sample_inputs(datasets, 8) * 8)[:8]
    cells = []
    for n in (1, 8):
        x = task.model_inputs(to_device(task.prepare_inputs(inputs[:n]), torch.device("cpu")))
        xg = x.to(cuda)
        feed = {spec.input_names[0]: x.numpy()}

        def eager():
            with torch.no_grad():
                out = task.forward_decode(model, xg)
            torch.cuda.synchronize()
            return out
        r = paired_ratio(eager, lambda: session.run(None, feed), pairs=pairs, block=5)
        cells.append(f"{r['a_s'] * 1e3:.2f} / {r['b_s'] * 1e3:.2f} ({fmt_ratio(r)})")
    return [family, provider.replace("ExecutionProvider", ""), *cells]


def openpose_decode(repeats: int = 10) -> str:
    from bench_speed import synthetic_task
    from posekit.engine.evaluation import to_device
    task = synthetic_task("openpose")
    datasets = task.build_datasets((task.eval_splits[-1],))
    model = task.build_model().cuda().eval()
    batch = to_device(task.prepare_inputs(task.sample_inputs(datasets, 1)), torch.device("cuda"))
    x = task.model_inputs(batch)
    times = {"network": [], "in-graph decode": [], "grouping (postprocess)": []}
    with torch.no_grad():
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            outputs = model(x)
            torch.cuda.synchronize()
            t1 = time.perf_counter()
            decoded = task.forward_decode(model, x, outputs=outputs)
            torch.cuda.synchronize()
            t2 = time.perf_counter()
            task.postprocess(decoded, batch)
            t3 = time.perf_counter()
            for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
                times[k].append(v)
    import statistics
    return ", ".join(f"{k} {statistics.median(v[1:]) * 1e3:.2f} ms" for k, v in times.items())


def sync_rates(family: str, steps: int, pairs: int, *, device: str = "cuda", amp: str = "fp32",
               extra: tuple[str, ...] = ()) -> dict:
    """Training samples/s with the NaN guard read once per step (before) and deferred to the
    log/save steps (now), in alternating runs (A B, B A, ...); the median of the per-pair ratios."""
    import statistics
    ratios, rates = [], {"per_step": [], "deferred": []}
    for i in range(pairs):
        order = ("per_step", "deferred") if i % 2 == 0 else ("deferred", "per_step")
        got = {k: train_rate(family, amp, steps, device=device, per_step_read=k == "per_step", extra=extra)
               for k in order}
        if any("samples_per_s" not in r for r in got.values()):
            return {"error": next(r["error"] for r in got.values() if "error" in r)}
        for k in got:
            rates[k].append(got[k]["samples_per_s"])
        ratios.append(got["deferred"]["samples_per_s"] / got["per_step"]["samples_per_s"])
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    return {"per_step": statistics.median(rates["per_step"]), "deferred": statistics.median(rates["deferred"]),
            "ratio": statistics.median(ratios), "iqr": (q[0], q[2]), "pairs": pairs}


def sync_section(families: list[str], steps: int, pairs: int, device: str = "cuda") -> list[str]:
    lines = ["", f"### NaN guard: loss read every step vs deferred (issue 25), {device}, fp32, "
             f"{steps} timed steps, {pairs} alternating pairs", "",
             "| family | per-step read samples/s | deferred samples/s | deferred / per-step (IQR) |",
             "|---|---|---|---|"]
    for f in families:
        r = sync_rates(f, steps, pairs, device=device)
        if "error" in r:
            lines.append(f"| {f} | {r['error'][:60]} | | |")
        else:
            lines.append(f"| {f} | {r['per_step']:.1f} | {r['deferred']:.1f} | {r['ratio']:.3f} "
                         f"({r['iqr'][0]:.3f}-{r['iqr'][1]:.3f}) |")
        print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="*", help="default: every posekit family")
    ap.add_argument("--steps", type=int, default=30, help="timed trainer steps per precision")
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--ddp", type=int, default=None, help="GPUs for the torchrun DDP run (default: 2 if present)")
    ap.add_argument("--out", default=None, help="write the markdown report here")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit (no GPU needed)")
    ap.add_argument("--sync-only", action="store_true",
                    help="only the NaN-guard section: steps/s with the loss read every step vs deferred")
    ap.add_argument("--sync-pairs", type=int, default=3, help="alternating run pairs per family (sync section)")
    args = ap.parse_args(argv)
    if args.steps < 3:
        ap.error("--steps must be >= 3 (the first 2 steps warm up and are not timed)")
    known = posekit_families()
    families = args.families or known
    bad = [f for f in families if f not in known]
    if bad:
        ap.error(f"unknown family {bad}; known: {known}")
    gpus = torch.cuda.device_count()
    ddp = args.ddp if args.ddp is not None else (2 if gpus >= 2 else 0)
    plan = [f"train {f} {p} x{args.steps} steps" for f in families for p in PRECISIONS]
    plan += [f"infer {f} eager vs onnxruntime, batch 1 and 8" for f in families]
    plan += ["openpose decode on the device"] if "openpose" in families else []
    plan += [f"ddp {ddp} GPUs: {f}" for f in families] if ddp >= 2 else ["ddp: skipped (fewer than 2 GPUs)"]
    sync_plan = [f"sync {f}: loss read every step vs deferred, {args.sync_pairs} pairs" for f in families]
    plan = sync_plan if args.sync_only else plan + sync_plan
    if args.dry_run:
        print("\n".join(plan))
        return 0
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine, "
              "or --dry-run to see the plan", file=sys.stderr)
        return 2
    if ddp > gpus:
        ap.error(f"--ddp {ddp}: only {gpus} GPU(s) visible")
    name = torch.cuda.get_device_name(0)
    if args.sync_only:
        lines = ["## GPU: the NaN guard's host-device sync", "",
                 f"`python benchmarks/bench_gpu.py {' '.join(argv or sys.argv[1:])}` on {name}, torch "
                 f"{torch.__version__}", *sync_section(families, args.steps, args.sync_pairs)]
        return _write(lines, args.out)
    lines = ["## GPU speed per family", "", f"`python benchmarks/bench_gpu.py {' '.join(argv or sys.argv[1:])}`"
             f" on {name} ({gpus} GPU(s)), torch {torch.__version__}, CUDA {torch.version.cuda}, "
             f"bf16 supported: {torch.cuda.is_bf16_supported()}.", "",
             "### Training samples/s (posekit trainer, performance mode)", "",
             "| family | fp32 | bf16 | fp16 | bf16 / fp32 | fp16 / fp32 |", "|---|---|---|---|---|---|"]
    for f in families:
        rates = {p: train_rate(f, p, args.steps) for p in PRECISIONS}
        cells = [f"{rates[p]['samples_per_s']:.1f}" if "samples_per_s" in rates[p] else rates[p]["error"][:60]
                 for p in PRECISIONS]
        ok = all("samples_per_s" in rates[p] for p in PRECISIONS)
        speed = [f"{rates[p]['samples_per_s'] / rates['fp32']['samples_per_s']:.2f}" if ok else "" for p in PRECISIONS[1:]]
        lines.append(f"| {f} | " + " | ".join(cells + speed) + " |")
        print(lines[-1], flush=True)
    lines += ["", "### Inference latency, ms eager / onnxruntime (ratio ORT / eager)", "",
              "| family | ORT provider | batch 1 | batch 8 |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for f in families:
            lines.append("| " + " | ".join(infer_latency(f, args.pairs, Path(tmp))) + " |")
            print(lines[-1], flush=True)
    if "openpose" in families:
        lines += ["", f"OpenPose on the device (1 image): {openpose_decode()}"]
    if ddp >= 2:
        lines += ["", f"### torchrun DDP, {ddp} GPUs (global batch = the recipe's)", "",
                  "| family | 1 GPU fp32 samples/s | DDP samples/s | scaling |", "|---|---|---|---|"]
        for f in families:
            one, many = train_rate(f, "fp32", args.steps), train_rate(f, "fp32", args.steps, nproc=ddp)
            scale = f"{many['samples_per_s'] / one['samples_per_s']:.2f}" if "samples_per_s" in one and \
                "samples_per_s" in many else many.get("error", "")[:60]
            lines.append(f"| {f} | {one.get('samples_per_s', '')} | {many.get('samples_per_s', '')} | {scale} |")
    lines += sync_section(families, args.steps, args.sync_pairs)
    return _write(lines, args.out)


def _write(lines: list[str], out: str | None) -> int:
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
