"""Checkpoint size and predict's peak memory per family (issue 25: slim checkpoints).

For each family (its synthetic recipe; OpenPose also at full size, openpose_vgg19) this writes,
from one set of weights: a checkpoint as the trainer used to write best.pt (weights +
Adam state + config: "fat") and the slim best.pt (`slim_checkpoint`). Then, each in a fresh
subprocess, it measures the peak RSS (resource.getrusage ru_maxrss) of:
  bare       build the model (its buffers, e.g. a lifter's statistics, from the weights file),
             one forward_decode on a sample input;
  fat-old    the fat file loaded as predict did before (torch.load into memory + copy);
  fat        the fat file through today's load_for_inference (mmap + assign);
  slim       the slim file through load_for_inference;
  bare+imports  bare after importing posekit.engine.predictor (predict's modules: today that
             pulls in torch.distributed and with it torch._dynamo, sympy and triton).

    python benchmarks/bench_checkpoint_memory.py [--families openpose hourglass] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

FULL_OPENPOSE = ["full"]  # the synthetic recipe with the full model: openpose_vgg19, its default args


def _task(family: str, extra: list[str]):
    from bench_speed import get_task_class, load_config
    from posekit.families import build_task
    cls = get_task_class(family)
    sizes = [o for o in cls.smoke_overrides if "synthetic" in o.split("=", 1)[0]]
    cfg = load_config(cls.synthetic_recipe, sizes + ["train.progress=false"])
    if extra == FULL_OPENPOSE:
        cfg.model.name, cfg.model.args = "openpose_vgg19", {}
    return build_task(cfg)


def _forward(task, model) -> None:
    import torch
    datasets = task.build_datasets(tuple(task.eval_splits))
    inputs = task.sample_inputs(datasets, 1)
    batch = task.prepare_inputs(inputs)
    with torch.no_grad():
        task.forward_decode(model, task.model_inputs(batch))


def child(mode: str, family: str, extra: list[str], path: str) -> None:
    """One measurement in this (fresh) process; prints {"rss_mb": ...}."""
    import torch
    torch.set_num_threads(1)
    if mode == "bare+imports":  # what predict's modules cost to import, apart from any checkpoint
        import posekit.engine.predictor  # noqa: F401
    if mode.startswith("bare"):  # its own initial parameters; only the (small) buffers come from the file
        task = _task(family, extra)
        model = task.build_model().eval()
        params = {k for k, _ in model.named_parameters()}
        buffers = {k: v for k, v in torch.load(path, weights_only=True, mmap=True).items() if k not in params}
        model.load_state_dict(buffers, strict=False)
        task.prepare(model, {})
    elif mode == "fat-old":  # the pre-issue-25 load path: read everything, copy into fresh weights
        from posekit.engine.checkpoint import inference_state_dict, load_checkpoint
        from posekit.engine.evaluation import _load_weights
        from posekit.engine.predictor import config_from_stored
        from posekit.families import build_task
        ckpt = load_checkpoint(path, require=("model", "config"))
        cfg = config_from_stored(ckpt["config"], source=path)
        task = build_task(cfg)
        model = task.build_model()
        _load_weights(model, inference_state_dict(ckpt), cfg, path)
        model.eval()
        task.prepare(model, {})
    else:
        from posekit.engine.predictor import load_for_inference
        task, model, _ = load_for_inference(path)
    _forward(task, model)
    print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def write_checkpoints(family: str, extra: list[str], folder: Path) -> dict:
    import torch

    from posekit.config import config_to_dict
    from posekit.engine.checkpoint import save_checkpoint, slim_checkpoint
    task = _task(family, extra)
    model = task.build_model()
    task.prepare(model, task.build_datasets())  # as the trainer does (a lifter fits its statistics)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    for p in model.parameters():  # one Adam step gives the optimiser its full state (exp_avg, exp_avg_sq)
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    opt.step()
    weights = model.state_dict()
    fat = {"model": weights, "optimizer": opt.state_dict(), "scheduler": {}, "scaler": {}, "ema": None,
           "step": 1, "epoch": 0, "batch_in_epoch": 1, "best": 0.0, "config": config_to_dict(task.cfg)}
    paths = {"fat": folder / f"{family}-fat.pt", "slim": folder / f"{family}-slim.pt",
             "weights": folder / f"{family}-weights.pt"}
    save_checkpoint(fat, paths["fat"])
    save_checkpoint(slim_checkpoint(fat), paths["slim"])
    save_checkpoint(weights, paths["weights"])  # the bare state dict: "the weights' size"
    return {k: str(v) for k, v in paths.items()}


def measure(mode: str, family: str, extra: list[str], path: str = "") -> float:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, family, path, *extra],
                          capture_output=True, text=True, timeout=600)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)["rss_mb"]
    raise RuntimeError(f"{family} {mode}: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], argv[2], argv[4:], argv[3])
        return 0
    if argv[:1] == ["--write"]:
        print(json.dumps(write_checkpoints(argv[1], argv[3:], Path(argv[2]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="*", default=["dogs", "fse", "gmh_mdn", "hourglass", "keypoints",
                                                      "openpose", "openpose_vgg19"])
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    lines = ["| family (model) | weights MB | fat MB | slim MB | slim / weights | bare RSS MB | fat-old RSS / bare | "
             "fat RSS / bare | slim RSS / bare | bare+imports RSS MB | slim RSS / bare+imports |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.families:
            family, extra = ("openpose", FULL_OPENPOSE) if name == "openpose_vgg19" else (name, [])
            # written in a child too: this process stays small, since Linux carries a parent's peak
            # RSS into its children's ru_maxrss (across fork and exec)
            proc = subprocess.run([sys.executable, __file__, "--write", family, tmp, *extra], capture_output=True,
                                  text=True, timeout=600, check=True)
            paths = json.loads(proc.stdout.strip().splitlines()[-1])
            size = {k: Path(p).stat().st_size / 1e6 for k, p in paths.items()}
            bare = measure("bare", family, extra, paths["weights"])
            bare_imports = measure("bare+imports", family, extra, paths["weights"])
            rss = {m: measure(m, family, extra, paths["slim" if m == "slim" else "fat"])
                   for m in ("fat-old", "fat", "slim")}
            lines.append(f"| {name} | {size['weights']:.1f} | {size['fat']:.1f} | {size['slim']:.1f} | "
                         f"{size['slim'] / size['weights']:.3f} | {bare:.0f} | {rss['fat-old'] / bare:.3f} | "
                         f"{rss['fat'] / bare:.3f} | {rss['slim'] / bare:.3f} | {bare_imports:.0f} | "
                         f"{rss['slim'] / bare_imports:.3f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
