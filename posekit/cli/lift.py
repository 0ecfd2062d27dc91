"""`posekit lift`: 2-D poses (JSON files, or images through a Hourglass checkpoint) -> 3-D
hypotheses with a GMH-MDN checkpoint."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = ("lift 2-D poses (a JSON file, or an image through a Hourglass checkpoint) to 3-D hypotheses with a "
        "GMH-MDN checkpoint")


def parse_box(text: str | None) -> list[float] | None:
    """`--box x,y,w,h`: four finite numbers with positive width and height (NaN would give NaN
    poses in the output JSON)."""
    import math
    if not text:
        return None
    try:
        box = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--box must be x,y,w,h numbers, got {text!r}") from None
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
        raise ValueError(f"--box must be x,y,w,h: four finite numbers with positive w and h, got {text!r}")
    return box


def read_poses(path: str) -> list[dict]:
    """`read_pose_json`, but a file that is not JSON text at all (a JPEG given to --json) is named
    as such instead of failing with a UTF-8 decoding message."""
    from posekit.data.formats.pose_json import read_pose_json
    p = Path(path)
    if p.is_file():
        with open(p, "rb") as f:
            head = f.read(512)
        try:
            text = head.decode("utf-8-sig", errors="strict" if len(head) < 512 else "ignore").lstrip()
        except UnicodeDecodeError:
            text = ""
        if not text.startswith(("[", "{")) or b"\x00" in head:
            hint = " (an image? use --image with --hourglass)" if p.suffix.lower() in (
                ".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp") else ""
            raise ValueError(f"{p}: not a JSON file of 2-D poses{hint}")
    return read_pose_json(p)


def add_arguments(p) -> None:
    p.add_argument("checkpoint", help="a trained gmh_mdn checkpoint (best.pt / last.pt) or its exported .onnx file "
                   "(runs with onnxruntime and numpy alone: no PyTorch needed)")
    p.add_argument("--json", nargs="*", default=[], help="JSON files of 2-D poses (Results JSON, "
                   "{'skeleton': ..., 'poses': [...]} or a list of [x, y(, score)] poses)")
    p.add_argument("--image", nargs="*", default=[], help="images: 2-D poses come from --hourglass first")
    p.add_argument("--hourglass", help="posekit Hourglass checkpoint (or its .onnx export) used for --image "
                   "(MPII-16 -> H36M)")
    p.add_argument("--box", help="person box x,y,w,h for --image (default: the whole image)")
    from posekit.skeletons.mappings import lift_layouts  # torch-free: building the parser imports no torch
    p.add_argument("--skeleton", default=None, choices=lift_layouts(),
                   help="joint order of JSON poses that do not name their skeleton (required for them: "
                   "16 joints may be h36m16 or mpii16, 17 may be h36m17 or coco17)")
    p.add_argument("--rescale", default=None, action=argparse.BooleanOptionalAction, help="fit each 2-D pose to the "
                   "training set's size and centre (default: on for --image, off for --json)")
    p.add_argument("--tracks", metavar="JSONL", help="a tracked JSON-lines file (posekit predict VIDEO --track): "
                   "each track lifted frame by frame into <name>_track<ID>.3d.jsonl, plus <name>_3d.mp4")
    p.add_argument("--video", metavar="MP4", help="with --tracks: the 2-D video shown beside the 3-D poses (e.g. the "
                   "annotated mp4 predict wrote; default: the 2-D poses on a blank frame)")
    p.add_argument("--out", required=True, help="folder for <name>.json and <name>.png")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads of onnxruntime and torch (default: the physical cores)")


class Lifter:
    """What `posekit lift` lifts with: `lifter(poses, skeleton=, rescale=)` -> one Results per
    input. An .onnx lifter on the CPU runs through numpy + onnxruntime alone (torch is never
    imported, `posekit.cli.runtime_lift`); on another device it runs through the Task path
    (`engine.onnx_backend`), and a checkpoint through PyTorch."""

    def __init__(self, checkpoint: str, *, device: str = "cpu", threads: int | None = None):
        from posekit.cli.runtime_lift import runtime_lifter_for
        path = Path(checkpoint)
        if path.suffix.lower() == ".onnx" and not path.is_file():
            raise FileNotFoundError(f"ONNX file not found: {path}")
        self.backend = "onnxruntime"
        self.runtime = None
        if path.suffix.lower() == ".onnx" and str(device).lower() == "cpu":
            from posekit.runtime.onnx import open_session, read_metadata
            session = open_session(path, threads=threads)
            meta = read_metadata(session, str(path))
            self.runtime = runtime_lifter_for(path, session=session, metadata=meta)
            if self.runtime is None and meta.get("task") != "gmh_mdn":  # refused without importing torch
                self.task_name = str(meta.get("task"))
                return
        if self.runtime is not None:
            self.task_name = self.runtime.task.name
            return
        if threads is not None:
            import torch
            torch.set_num_threads(threads)
        if path.suffix.lower() == ".onnx":
            from posekit.engine.onnx_backend import load_onnx, predict_onnx
            task, runner, _, _ = load_onnx(path, device=device, threads=threads)
            self._lift = lambda inputs, **options: predict_onnx(task, runner, inputs, **options)
        else:
            from posekit.engine.evaluation import predict
            from posekit.engine.predictor import load_for_inference
            from posekit.engine.weights import resolve_checkpoint
            task, model, _ = load_for_inference(resolve_checkpoint(checkpoint), device=device)
            self._lift = lambda inputs, **options: predict(task, model, inputs, **options)
            self.backend = "torch"
        self.task_name = task.name

    def __call__(self, inputs: list, *, skeleton: str = "h36m17", rescale: bool = False) -> list:
        if self.runtime is not None:
            return self.runtime(list(inputs), skeleton=skeleton, rescale=rescale)
        return self._lift(list(inputs), skeleton=skeleton, rescale=rescale)


def load_lifter(args) -> Lifter:
    """The lifter of `args.checkpoint`, refused in one line when it is another family's."""
    lifter = Lifter(args.checkpoint, device=args.device, threads=getattr(args, "threads", None))
    if lifter.task_name != "gmh_mdn":
        raise ValueError(f"{args.checkpoint}: a {lifter.task_name!r} checkpoint; `posekit lift` needs a gmh_mdn one")
    return lifter


def detect_2d(hourglass: str, *, device: str, threads: int | None):
    """`detect(image, box)` -> the 2-D Results of a Hourglass on one image: an .onnx Hourglass on
    the CPU through the numpy runtime (no torch), anything else through the Task path."""
    path = Path(hourglass)
    if path.suffix.lower() == ".onnx" and path.is_file() and str(device).lower() == "cpu":
        from posekit.cli.runtime_predict import RuntimePredictor
        from posekit.runtime.onnx import open_session, read_metadata
        from posekit.runtime.predict import RuntimeModel
        session = open_session(path, threads=threads)
        meta = read_metadata(session, str(path))
        if meta.get("task") != "hourglass":
            raise ValueError(f"{hourglass}: a {meta.get('task')!r} export; --hourglass needs a hourglass one")
        if RuntimeModel.supports(meta, [o.name for o in session.get_outputs()]):
            predictor = RuntimePredictor(RuntimeModel(path, session=session))
            return lambda image, box: predictor([image], boxes=[box] if box else None)[0]
    from posekit.engine.evaluation import predict
    if path.suffix.lower() == ".onnx":
        from posekit.engine.onnx_backend import load_onnx, predict_onnx
        hg_task, runner, _, _ = load_onnx(path, device=device, threads=threads)
        run_2d = lambda image, box: predict_onnx(hg_task, runner, [image], boxes=[box] if box else None)[0]  # noqa: E731
    else:
        from posekit.engine.predictor import load_for_inference
        from posekit.engine.weights import resolve_checkpoint
        hg_task, hg_model, _ = load_for_inference(resolve_checkpoint(hourglass), device=device)
        run_2d = lambda image, box: predict(hg_task, hg_model, [image], boxes=[box] if box else None)[0]  # noqa: E731
    if hg_task.name != "hourglass":
        raise ValueError(f"{hourglass}: a {hg_task.name!r} checkpoint; --hourglass needs a hourglass one")
    return run_2d


def can_draw_3d() -> bool:
    """Whether matplotlib (the 3-D figures) is installed; a deploy install (`posekit[runtime]`)
    lacks it, and then `lift` writes the JSON alone."""
    import importlib.util
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


def run(args) -> int:
    from posekit.skeletons import get_skeleton
    from posekit.skeletons.mappings import lift_layouts

    if getattr(args, "tracks", None):
        return run_tracks(args)
    if not args.json and not args.image:
        raise ValueError("give --json FILE(S) or --image FILE(S)")  # main() adds "posekit lift:"
    if getattr(args, "threads", None) is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if args.image and not args.hourglass:
        raise ValueError("--image needs --hourglass CHECKPOINT (a posekit Hourglass model "
                         "that finds the 2-D MPII joints first)")
    box = parse_box(args.box)
    # every pose file is read and its layout settled before the model loads: a bad file fails fast
    files = []
    for path in args.json:
        records = read_poses(path)
        # one batched predict per skeleton in the file, not one forward pass per pose
        by_skeleton: dict[str, list[dict]] = {}
        for rec in records:
            skeleton = rec["skeleton"] or args.skeleton
            if skeleton is None:  # a bare list: 16 joints may be MPII or H36M order, 17 COCO or H36M
                raise ValueError(f"{path}: {rec['name']}: {rec['keypoints'].shape[1]} joints in an unknown layout; "
                                 f"name it with --skeleton NAME or a 'skeleton' key ({', '.join(lift_layouts())})")
            if skeleton not in lift_layouts():
                raise ValueError(f"{path}: {rec['name']}: skeleton {skeleton!r} has no mapping to the lifter's "
                                 f"input; known layouts: {', '.join(lift_layouts())}")
            want = 16 if skeleton == "h36m16" else len(get_skeleton(skeleton).keypoints)
            if rec["keypoints"].shape[1] != want:
                raise ValueError(f"{path}: {rec['name']}: {rec['keypoints'].shape[1]} joints, but {skeleton} has "
                                 f"{want}; name the right layout ({', '.join(lift_layouts())})")
            by_skeleton.setdefault(skeleton, []).append(rec)
        files.append((path, by_skeleton))
    lifter = load_lifter(args)
    detect = detect_2d(args.hourglass, device=args.device, threads=getattr(args, "threads", None)) \
        if args.image else None
    draw = can_draw_3d()
    if not draw:
        print("posekit lift: note: matplotlib is not installed, so the 3-D figures (.png) are not drawn; the JSON is "
              "written (pip install matplotlib for the figures)", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = 0

    def save(res, stem: str) -> None:
        res.save(out / f"{stem}.json")
        if draw:
            res.save(out / f"{stem}.png")

    for path, by_skeleton in files:
        for skeleton, recs in by_skeleton.items():
            results = lifter([r["keypoints"] for r in recs], skeleton=skeleton, rescale=bool(args.rescale))
            for rec, res in zip(recs, results):
                res.path = str(path)
                save(res, rec["name"].replace(" ", "_"))
                written += 1
    if args.image:
        from posekit.data.io import read_image
        rescale = True if args.rescale is None else bool(args.rescale)
        for path in args.image:
            image = read_image(path)
            det = detect(image, box)
            if det.skeleton.name != "mpii16":
                raise ValueError(f"{args.hourglass}: predicts {det.skeleton.name!r} keypoints; lifting from an image "
                                 "needs an MPII-16 Hourglass")
            det.image = image
            det.path = str(path)
            (res,) = lifter([det], rescale=rescale)
            save(res, f"{Path(path).stem}_3d")
            written += 1
    print(f"{written} lifted pose set(s) written to {out} ({lifter.backend})")
    return 0


def run_tracks(args) -> int:
    """--tracks: lift a tracked JSON-lines file, one 3-D JSON-lines file per track plus an mp4
    (the mp4 needs matplotlib for its 3-D panel; without it, the JSON-lines files alone)."""
    from posekit.cli.lift_tracks import lift_tracks
    if args.json or args.image:
        raise ValueError("--tracks lifts a whole tracked video; give it alone (not with --json or --image)")
    tracks = Path(args.tracks)
    if not tracks.is_file():
        raise FileNotFoundError(f"--tracks {tracks}: not found (make it with posekit predict VIDEO --track)")
    if args.video and not Path(args.video).is_file():
        raise FileNotFoundError(f"--video {args.video}: not found")
    if getattr(args, "threads", None) is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    lifter = load_lifter(args)
    draw = can_draw_3d()
    if not draw:
        print("posekit lift: note: matplotlib is not installed, so the side-by-side video (its 3-D panel) is not "
              "made; the per-track JSON-lines files are written (pip install matplotlib for the video)",
              file=sys.stderr)
    report = lift_tracks(lifter, tracks, args.out, video=args.video, skeleton=args.skeleton,
                         rescale=True if args.rescale is None else bool(args.rescale), render=draw)
    made = [p.name for p in report["tracks"]] + ([report["video"].name] if report["video"] else [])
    print(f"{report['poses']} pose(s) of {len(report['tracks'])} track(s) over {report['frames']} frame(s) lifted "
          f"-> {args.out} ({', '.join(made)}; {lifter.backend})")
    return 0
