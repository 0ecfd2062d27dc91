"""`posekit predict` and `posekit export`: the inference verbs."""
from __future__ import annotations

from pathlib import Path


def _parse_box(text: str | None):
    if not text:
        return None
    try:
        box = [float(v) for v in text.split(",")]
    except ValueError:
        raise SystemExit(f"--box must be x,y,w,h numbers, got {text!r}") from None
    if len(box) != 4 or box[2] <= 0 or box[3] <= 0:
        raise SystemExit(f"--box must be x,y,w,h with positive w, h, got {text!r}")
    return box


def cmd_predict(args) -> int:
    from posekit.data.io import iter_sources
    from posekit.engine.evaluation import predict
    from posekit.engine.predictor import load_for_inference
    task, model, cfg = load_for_inference(args.checkpoint, args.overrides, device=args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    box = _parse_box(args.box)
    n = 0
    for name, image in iter_sources(args.sources):
        (result,) = predict(task, model, [image], boxes=[box] if box else None)
        result.path = name
        source, _, frame = name.partition("#")  # video frames are named "<file>#<frame>"
        stem = Path(source).stem + (f"_{frame}" if frame else "")
        result.save(out / f"{stem}.png")
        result.save(out / f"{stem}.json")
        n += 1
    print(f"{n} prediction(s) written to {out}")
    return 0


def cmd_export(args) -> int:
    from posekit.engine.export import export_task
    from posekit.engine.predictor import load_for_inference
    if args.format != "onnx":
        raise SystemExit(f"unsupported --format {args.format!r}; supported: onnx")
    task, model, cfg = load_for_inference(args.checkpoint, device="cpu")
    path = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".onnx")
    report = export_task(task, model, path)
    print(f"exported {report['path']} (outputs: {', '.join(report['outputs'])}); "
          f"onnxruntime parity: max abs difference {report['max_abs_diff']:.3g}")
    return 0


def add_parsers(add) -> None:
    """Register the verbs on the main parser (`add(name, help, fn)` returns a subparser)."""
    p = add("predict", "run a checkpoint on images, folders or a video", cmd_predict)
    p.add_argument("checkpoint")
    p.add_argument("sources", nargs="+", help="image files, folders of images, video files")
    p.add_argument("--out", required=True, help="folder for overlay PNGs and JSON results")
    p.add_argument("--box", help="person/animal box x,y,w,h for top-down models (default: whole image)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value stored in the checkpoint (e.g. eval.flip_test=false)")

    p = add("export", "export a checkpoint with decoding inside the graph", cmd_export)
    p.add_argument("checkpoint")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--out", help="output path (default: next to the checkpoint)")
