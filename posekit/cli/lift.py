"""`posekit lift`: 2-D poses (JSON files, or images through a Hourglass checkpoint) -> 3-D
hypotheses with a GMH-MDN checkpoint."""
from __future__ import annotations

import argparse
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
    p.add_argument("checkpoint", help="a trained gmh_mdn checkpoint (best.pt / last.pt)")
    p.add_argument("--json", nargs="*", default=[], help="JSON files of 2-D poses (Results JSON, "
                   "{'skeleton': ..., 'poses': [...]} or a list of [x, y(, score)] poses)")
    p.add_argument("--image", nargs="*", default=[], help="images: 2-D poses come from --hourglass first")
    p.add_argument("--hourglass", help="posekit Hourglass checkpoint used for --image (MPII-16 -> H36M)")
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


def run(args) -> int:
    from posekit.data.io import read_image
    from posekit.data.lifting import lift_layouts
    from posekit.engine.evaluation import predict
    from posekit.engine.predictor import load_for_inference
    from posekit.skeletons import get_skeleton

    if getattr(args, "tracks", None):
        return run_tracks(args)
    if not args.json and not args.image:
        raise ValueError("give --json FILE(S) or --image FILE(S)")  # main() adds "posekit lift:"
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
    from posekit.engine.weights import resolve_checkpoint
    task, model, cfg = load_for_inference(resolve_checkpoint(args.checkpoint), device=args.device)
    if task.name != "gmh_mdn":
        raise ValueError(f"{args.checkpoint}: a {task.name!r} checkpoint; `posekit lift` needs a gmh_mdn one")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for path, by_skeleton in files:
        for skeleton, recs in by_skeleton.items():
            results = predict(task, model, [r["keypoints"] for r in recs], skeleton=skeleton,
                              rescale=bool(args.rescale))
            for rec, res in zip(recs, results):
                res.path = str(path)
                stem = rec["name"].replace(" ", "_")
                res.save(out / f"{stem}.json")
                res.save(out / f"{stem}.png")
                written += 1
    if args.image:
        if not args.hourglass:
            raise ValueError("--image needs --hourglass CHECKPOINT (a posekit Hourglass model "
                             "that finds the 2-D MPII joints first)")
        hg_task, hg_model, hg_cfg = load_for_inference(resolve_checkpoint(args.hourglass), device=args.device)
        if hg_task.name != "hourglass":
            raise ValueError(f"{args.hourglass}: a {hg_task.name!r} checkpoint; --hourglass needs a hourglass one")
        rescale = True if args.rescale is None else bool(args.rescale)
        box = parse_box(args.box)
        for path in args.image:
            image = read_image(path)
            (det,) = predict(hg_task, hg_model, [image], boxes=[box] if box else None)
            if det.skeleton.name != "mpii16":
                raise ValueError(f"{args.hourglass}: predicts {det.skeleton.name!r} keypoints; lifting from an image "
                                 "needs an MPII-16 Hourglass")
            det.image = image
            det.path = str(path)
            (res,) = predict(task, model, [det], rescale=rescale)
            stem = Path(path).stem
            res.save(out / f"{stem}_3d.json")
            res.save(out / f"{stem}_3d.png")
            written += 1
    print(f"{written} lifted pose set(s) written to {out}")
    return 0


def run_tracks(args) -> int:
    """--tracks: lift a tracked JSON-lines file, one 3-D JSON-lines file per track plus an mp4."""
    from posekit.engine.predictor import load_for_inference
    from posekit.engine.tracking import lift_tracks
    from posekit.engine.weights import resolve_checkpoint
    if args.json or args.image:
        raise ValueError("--tracks lifts a whole tracked video; give it alone (not with --json or --image)")
    tracks = Path(args.tracks)
    if not tracks.is_file():
        raise FileNotFoundError(f"--tracks {tracks}: not found (make it with posekit predict VIDEO --track)")
    if args.video and not Path(args.video).is_file():
        raise FileNotFoundError(f"--video {args.video}: not found")
    task, model, cfg = load_for_inference(resolve_checkpoint(args.checkpoint), device=args.device)
    if task.name != "gmh_mdn":
        raise ValueError(f"{args.checkpoint}: a {task.name!r} checkpoint; `posekit lift` needs a gmh_mdn one")
    report = lift_tracks(task, model, tracks, args.out, video=args.video, skeleton=args.skeleton,
                         rescale=True if args.rescale is None else bool(args.rescale))
    print(f"{report['poses']} pose(s) of {len(report['tracks'])} track(s) over {report['frames']} frame(s) lifted "
          f"-> {args.out} ({', '.join(p.name for p in report['tracks'])}; {report['video'].name})")
    return 0
