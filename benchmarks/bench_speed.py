"""Speed users feel, per family, every number a paired ratio measured in this one process.

For each registered family (its synthetic recipe; the real samples for the data pipeline):
1. training step: fp32 vs AMP (bf16 autocast) vs channels_last (fp32), same batch, own optimiser;
2. inference: eager PyTorch `forward_decode` vs the exported ONNX graph in onnxruntime, batch 1 and 8;
3. data pipeline: one training item (decode, augment, encode targets) vs its floor (JPEG decode
   + one cv2.warpAffine to the input size; for the array-backed lifter, slicing the arrays).

Ratios come from the paired estimator (benchmarks/paired.py: short alternating blocks, median of
the per-pair ratios, with the interquartile range), so they hold on a busy machine.

    python benchmarks/bench_speed.py [--families dogs hourglass] [--skip train,infer,data]
                                     [--threads 2] [--out benchmarks/results/speed.md]
Prints the report; writes it only with --out.
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired import fmt_ratio, paired_ratio  # noqa: E402

from posekit.data import io  # noqa: E402
from posekit.data.io import realdata_root  # noqa: E402
from posekit.engine.evaluation import to_device  # noqa: E402
from posekit.engine.recipes import load_config  # noqa: E402
from posekit.families import build_task, get_task_class, list_tasks  # noqa: E402

# the real samples each family's pipeline is timed on (recipe, overrides); families not listed
# are timed on their synthetic data, whose images are rendered in memory (no floor to compare)
REAL_PIPELINES = {
    "dogs": ("dogs_mobilenetv2", ["data.train_on_all=true"]),
    "hourglass": ("mpii_synthetic", ["data.dataset=mpii", "data.train_file=mmpose/test_mpii.json",
                                      "data.val_file=mmpose/test_mpii.json", "data.skip_missing_images=true"]),
    "openpose": ("coco_openpose", []),
    "fse": ("celeba_fse", []),
    "gmh_mdn": ("h36m_gmh_mdn", ["data.root={realdata}/h36m/baseline", "data.detections=StackedHourglass",
                                 "data.train_subjects=[S1]", "data.test_subjects=[S9]", "data.val_fraction=0.1"]),
}


class ChannelsLast(nn.Module):
    """Feeds 4-D inputs in channels_last layout to a model converted to it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last)

    def forward(self, *args, **kwargs):
        args = [a.contiguous(memory_format=torch.channels_last) if torch.is_tensor(a) and a.dim() == 4 else a
                for a in args]
        return self.model(*args, **kwargs)


def synthetic_task(family: str):
    """The family's synthetic recipe, its datasets shrunk by the smoke overrides (sizes only:
    the model and input size stay the recipe's)."""
    cls = get_task_class(family)
    sizes = [o for o in cls.smoke_overrides if "synthetic" in o.split("=", 1)[0]]
    cfg = load_config(cls.synthetic_recipe, sizes + ["train.progress=false"])
    return build_task(cfg)


def one_batch(task, dataset, batch_size: int) -> dict:
    n = min(batch_size, len(dataset))
    return to_device(task.collate([dataset[i] for i in range(n)]), torch.device("cpu"))


def train_step_fn(task, model: nn.Module, batch: dict, precision: str):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else \
        (lambda: torch.autocast("cpu", enabled=False))

    def step():
        opt.zero_grad(set_to_none=True)
        with ctx():
            loss, _ = task.training_step(model, batch)
        loss.backward()
        opt.step()
    return step


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def bench_train(family: str, rows: list[str], pairs: int) -> None:
    task = synthetic_task(family)
    datasets = task.build_datasets(("train",))
    torch.manual_seed(0)
    base = task.build_model()
    task.prepare(base, datasets)
    base.train()
    batch = one_batch(task, datasets["train"], task.cfg.train.batch_size)
    bsz = len(next(v for v in batch.values() if torch.is_tensor(v)))
    fp32 = train_step_fn(task, copy.deepcopy(base), batch, "fp32")
    bf16 = paired_ratio(fp32, train_step_fn(task, copy.deepcopy(base), batch, "bf16"), pairs=max(3, pairs // 3),
                        block=1)
    cells = [f"{bf16['a_s'] * 1e3:.0f}", f"{bf16['b_s'] * 1e3:.0f} ({fmt_ratio(bf16)})"]
    if has_conv(base):
        cl = paired_ratio(fp32, train_step_fn(task, ChannelsLast(copy.deepcopy(base)), batch, "fp32"),
                          pairs=pairs, block=2)
        cells.append(f"{cl['b_s'] * 1e3:.0f} ({fmt_ratio(cl)})")
    else:
        cells.append("n/a (no conv)")
    rows.append(f"| {family} | {task.cfg.model.name} | {bsz} | " + " | ".join(cells) + " |")


def bench_infer(family: str, rows: list[str], pairs: int, tmp: Path) -> None:
    import onnxruntime as ort

    from posekit.engine.export import export_task
    task = synthetic_task(family)
    datasets = task.build_datasets(tuple(dict.fromkeys(("train",) + task.eval_splits)))
    torch.manual_seed(0)
    model = task.build_model()
    task.prepare(model, datasets)  # data statistics (the lifter's normalisation) as after training
    model.eval()
    spec = task.export_spec()
    if len(spec.input_names) != 1:
        rows.append(f"| {family} | graph has {len(spec.input_names)} inputs: skipped | | |")
        return
    path = export_task(task, model, tmp / f"{family}.onnx", check=False)["path"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    inputs = task.sample_inputs(datasets, 8)
    inputs = (inputs * 8)[:8]
    cells = []
    for n in (1, 8):
        x = task.model_inputs(to_device(task.prepare_inputs(inputs[:n]), torch.device("cpu")))
        feed = {spec.input_names[0]: x.numpy()}

        def eager():
            with torch.no_grad():
                task.forward_decode(model, x)
        r = paired_ratio(eager, lambda: session.run(None, feed), pairs=pairs, block=2)
        cells.append(f"{r['a_s'] * 1e3:.1f} / {r['b_s'] * 1e3:.1f} ({fmt_ratio(r)})")
    rows.append(f"| {family} | {task.cfg.model.name} | " + " | ".join(cells) + " |")


_READ_IMAGE = io.read_image
_READERS = ("posekit.data.io", "posekit.data.sample", "posekit.data.formats.stanford_extra",
            "posekit.data.formats.yolo")


def _recorded_reads(train, n: int) -> list[list[tuple]]:
    """Per item, the `read_image` calls (args, kwargs) the pipeline makes to build it: every module
    that binds read_image is patched for one pass, so the floor replays the same decodes (a
    reduced decode where the pipeline reduces) and never a path lookup that decodes again."""
    import importlib
    calls: list = []

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        return _READ_IMAGE(*args, **kwargs)
    modules = [importlib.import_module(m) for m in _READERS]
    saved = [getattr(m, "read_image", None) for m in modules]
    out = []
    try:
        for m in modules:
            if hasattr(m, "read_image"):
                m.read_image = record
        for i in range(n):
            calls = []
            train[i]
            out.append(calls)
    finally:
        for m, f in zip(modules, saved):
            if f is not None:
                m.read_image = f
    if not all(out):
        raise RuntimeError("an item was built without data.io.read_image: the floor cannot replay its decode")
    return out


def _sample_of(dataset, i: int):
    return dataset.sample(i) if hasattr(dataset, "sample") else dataset.source[i]


def bench_data(family: str, rows: list[str], pairs: int) -> None:
    recipe, overrides = REAL_PIPELINES.get(family, (None, []))
    where = "real samples"
    try:
        if recipe is None:
            raise FileNotFoundError
        cfg = load_config(recipe, [o.format(realdata=realdata_root()) for o in overrides] + ["train.progress=false"])
        task = build_task(cfg)
        train = task.build_datasets(("train",))["train"]
    except (FileNotFoundError, ValueError, KeyError) as e:
        where = f"synthetic ({type(e).__name__}: real samples unavailable)" if recipe else "synthetic"
        task = synthetic_task(family)
        train = task.build_datasets(("train",))["train"]
    n = len(train)
    first = train[0]
    if "image" not in first or not torch.is_tensor(first["image"]) or first["image"].dim() != 3:
        # array-backed (the lifter): a DataLoader batch the way the loader fetches it, vs slicing
        idx = list(range(min(n, 64)))
        keys = [k for k, v in first.items() if torch.is_tensor(v)]
        arrays = {k: np.stack([train[i][k].numpy() for i in range(min(n, 256))]) for k in keys}
        fetch = getattr(train, "__getitems__", None) or (lambda ids: [train[i] for i in ids])
        r = paired_ratio(lambda: {k: torch.from_numpy(a[idx]) for k, a in arrays.items()},
                         lambda: task.collate(fetch(idx)), pairs=pairs, block=20)
        rows.append(f"| {family} | {where}, batch of {len(idx)} | {r['a_s'] * 1e3:.3f} | {r['b_s'] * 1e3:.3f} | "
                    f"{fmt_ratio(r)} |")
        return
    size = tuple(first["image"].shape[-2:])[::-1]  # (w, h) of the network input
    counter = {"floor": 0, "pipe": 0}

    def pipeline():
        train[counter["pipe"] % n]
        counter["pipe"] += 1

    path0 = getattr(_sample_of(train, 0), "image_path", None)
    if path0 is None:
        t0 = time.perf_counter()
        for i in range(min(n, 20)):
            train[i]
        ms = (time.perf_counter() - t0) / min(n, 20) * 1e3
        rows.append(f"| {family} | {where} | n/a (images in memory) | {ms:.2f} | n/a |")
        return

    reads = _recorded_reads(train, n)

    def floor():
        # exactly the decodes the pipeline made for this item (same calls, same reduction), then
        # one bilinear warp to the input size; the path lookup happened outside the timed region
        calls = reads[counter["floor"] % n]
        counter["floor"] += 1
        for args, kwargs in calls:
            image = _READ_IMAGE(*args, **kwargs)
        h, w = image.shape[:2]
        m = np.float32([[size[0] / w, 0, 0], [0, size[1] / h, 0]])
        cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR)
    r = paired_ratio(floor, pipeline, pairs=pairs, block=max(2, min(n, 8)))
    rows.append(f"| {family} | {where} ({n} items, {size[0]}x{size[1]} input) | {r['a_s'] * 1e3:.2f} | "
                f"{r['b_s'] * 1e3:.2f} | {fmt_ratio(r)} |")
    resize = getattr(train, "resize", None)
    if family == "fse" and resize:
        # the recipe's one resampling is an area resize (the spec's), not the bilinear warp above:
        # its own floor is JPEG decode + that resize, the least work that gives the same crop
        def area_floor():
            calls = reads[counter["floor"] % n]
            counter["floor"] += 1
            for args, kwargs in calls:
                image = _READ_IMAGE(*args, **kwargs)
            cv2.resize(image, (resize, resize), interpolation=cv2.INTER_AREA)
        r = paired_ratio(area_floor, pipeline, pairs=pairs, block=max(2, min(n, 8)))
        rows.append(f"| {family} | floor = JPEG decode + the spec's {resize}x{resize} area resize | "
                    f"{r['a_s'] * 1e3:.2f} | {r['b_s'] * 1e3:.2f} | {fmt_ratio(r)} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="*", help="default: every posekit family")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: train, infer, data")
    ap.add_argument("--pairs", type=int, default=7, help="alternating pairs per ratio")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="also write the report (markdown) here")
    args = ap.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - {"train", "infer", "data"}
    if unknown:
        ap.error(f"--skip: unknown section(s) {sorted(unknown)}; valid: train, infer, data")
    known = [n for n in list_tasks() if get_task_class(n).__module__.startswith("posekit.families.")]
    families = args.families or known
    bad = [f for f in families if f not in known]
    if bad:
        ap.error(f"unknown family {bad}; known: {known}")
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    command = "python benchmarks/bench_speed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = ["## Speed per family (paired ratios)", "", f"`{command.strip()}`: torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}; "
             f"each ratio is the median of {args.pairs} alternating pairs (IQR in brackets).", ""]
    sections = []
    if "train" not in skip:
        rows = []
        for f in families:
            print(f"train step: {f}", flush=True)
            bench_train(f, rows, args.pairs)
        sections += ["### Training step, ms (ratio to fp32)", "",
                     "| family | model | batch | fp32 | bf16 autocast | channels_last fp32 |", "|---|---|---|---|---|---|",
                     *rows, ""]
    if "infer" not in skip:
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for f in families:
                print(f"inference: {f}", flush=True)
                bench_infer(f, rows, args.pairs, Path(tmp))
        sections += ["### Inference, ms eager / onnxruntime (ratio ORT / eager)", "",
                     "| family | model | batch 1 | batch 8 |", "|---|---|---|---|", *rows, ""]
    if "data" not in skip:
        rows = []
        for f in families:
            print(f"data pipeline: {f}", flush=True)
            bench_data(f, rows, args.pairs)
        sections += ["### Data pipeline vs its floor, ms per item (ratio pipeline / floor; goal <= 2)", "",
                     "| family | data | floor | pipeline | ratio |", "|---|---|---|---|---|", *rows, ""]
    text = "\n".join(lines + sections)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
