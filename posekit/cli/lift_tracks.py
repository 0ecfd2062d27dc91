"""`posekit lift --tracks`: a tracked JSON-lines file (`posekit predict VIDEO --track`) lifted
frame by frame, one 3-D JSON-lines file per track plus a side-by-side video.

It lifts through a `lift(poses, skeleton=, rescale=)` callable (`posekit.cli.lift.Lifter`), so an
exported .onnx lifter runs it with numpy + onnxruntime alone: nothing here imports torch, scipy or
posekit.engine (matplotlib draws the video's 3-D panel, only when `render`).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["lift_tracks", "tracked_lines"]


def tracked_lines(path, skeleton: str | None):
    """(line number, frame dict) of a `posekit predict --track` JSON-lines file, checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tracked JSON-lines file not found: {path}")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {n}: not JSON ({e.msg}); expected one frame per line as "
                                 "`posekit predict --track` writes") from None
            if not isinstance(rec, dict) or "keypoints" not in rec:
                raise ValueError(f"{path}: line {n}: not a frame record (no 'keypoints')")
            if "track_ids" not in rec:
                raise ValueError(f"{path}: line {n}: no 'track_ids': make the file with `posekit predict ... --track`")
            name = rec.get("skeleton") or skeleton
            if name is None:
                raise ValueError(f"{path}: line {n}: the record names no skeleton; give --skeleton")
            try:
                kp = np.asarray([[[np.nan if v is None else v for v in j] for j in p] for p in rec["keypoints"]],
                                dtype=np.float64)
                scores = np.asarray([[0.0 if v is None else v for v in p] for p in rec.get("scores") or []],
                                    dtype=np.float64)
                ids = np.asarray(rec["track_ids"], dtype=np.int64).reshape(-1)
            except (TypeError, ValueError):
                raise ValueError(f"{path}: line {n}: keypoints, scores or track_ids are not numbers in the form "
                                 "`posekit predict --track` writes") from None
            if kp.size and (kp.ndim != 3 or kp.shape[-1] != 2 or len(ids) != len(kp)):
                raise ValueError(f"{path}: line {n}: keypoints {kp.shape} and {len(ids)} track ids do not match "
                                 "(P, K, 2) with one id per person")
            if not scores.size:
                scores = np.where(np.isfinite(kp).all(-1), 1.0, 0.0) if kp.size else np.zeros((0, 0))
            yield n, {"frame": int(rec.get("frame", n - 1)), "time_s": rec.get("time_s"), "skeleton": name,
                      "keypoints": kp, "scores": scores, "track_ids": ids, "image_size": rec.get("image_size")}


def lift_tracks(lift, tracks_path, out_dir, *, video=None, skeleton: str | None = None, rescale: bool = True,
                chunk_frames: int = 32, panel_size: tuple[int, int] = (360, 360), render: bool = True) -> dict:
    """Lift every tracked person of a `posekit predict --track` JSON-lines file with `lift`, frame
    by frame (chunks of frames, constant memory): `<stem>_track<ID>.3d.jsonl` per track (one line
    per frame the person is in: keypoints = the most likely hypothesis, all hypotheses and their
    weights) and, with `render`, `<stem>_3d.mp4`: the 2-D video (`video`, else the 2-D poses on a
    blank frame) beside the most likely 3-D poses. People with track id -1 (not tracked) are
    skipped. Every file is written under a temporary name and renamed when complete."""
    from posekit.data.video import VideoReader, VideoWriter
    from posekit.results import json_safe
    from posekit.skeletons import get_skeleton
    from posekit.viz.tracks import draw_tracks, tracks_3d_panel

    tracks_path, out = Path(tracks_path), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = tracks_path.name.removesuffix(".jsonl")
    partial: dict[int, tuple[Path, object]] = {}
    reader = VideoReader(video) if video is not None and render else None
    frames_2d = iter(reader) if reader is not None else None
    writer = VideoWriter(out / f"{stem}_3d.mp4", fps=reader.fps if reader else 25.0) if render else None
    lifted = frames = 0
    lifter_skeleton = None

    def flush(batch):
        nonlocal lifted, frames, lifter_skeleton
        items = [(b, p) for b in batch for p in range(len(b["track_ids"])) if b["track_ids"][p] >= 0]
        by_layout: dict[str, list] = {}
        for b, p in items:
            by_layout.setdefault(b["skeleton"], []).append((b, p))
        lifted_of: dict[tuple[int, int], object] = {}
        for layout, group in by_layout.items():
            inputs = [np.concatenate([b["keypoints"][p], b["scores"][p][:, None]], axis=1) for b, p in group]
            for (b, p), res in zip(group, lift(inputs, skeleton=layout, rescale=rescale)):
                lifted_of[(id(b), p)] = res
                lifter_skeleton = res.skeleton
        for b in batch:
            poses, ids = [], []
            for p, tid in enumerate(b["track_ids"].tolist()):
                res = lifted_of.get((id(b), p))
                if res is None:
                    continue
                if tid not in partial:
                    fd, name = tempfile.mkstemp(prefix=f".{stem}_track{tid}.", suffix=".partial.jsonl", dir=out)
                    partial[tid] = (Path(name), os.fdopen(fd, "w"))
                record = {"frame": b["frame"], "time_s": b["time_s"], "track_id": tid, "skeleton": res.skeleton.name,
                          "keypoints": res.keypoints[0], "hypotheses": res.hypotheses[0],
                          "hypothesis_weights": res.hypothesis_weights[0], "units": "mm, camera frame, root-relative"}
                partial[tid][1].write(json.dumps(json_safe(record), allow_nan=False) + "\n")
                poses.append(res.keypoints[0])
                ids.append(tid)
                lifted += 1
            if writer is not None:
                left = next(frames_2d, None) if frames_2d is not None else None
                if left is None:
                    w, h = b["image_size"] if b["image_size"] else (panel_size[1], panel_size[0])
                    left = np.full((int(h), int(w), 3), 255, np.uint8)
                    sk = get_skeleton(b["skeleton"])
                    if len(b["keypoints"]):
                        left = draw_tracks(left, b["keypoints"], b["scores"], sk, b["track_ids"])
                right = tracks_3d_panel(poses, ids, lifter_skeleton or get_skeleton("h36m17"),
                                        size=(left.shape[0], max(left.shape[0], 240)))
                writer.write(np.concatenate([left, right], axis=1))
            frames += 1

    try:
        batch = []
        for _, rec in tracked_lines(tracks_path, skeleton):
            batch.append(rec)
            if len(batch) >= chunk_frames:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
        if frames == 0:
            raise ValueError(f"{tracks_path}: no frame records (an empty file?)")
    except BaseException:
        for name, handle in partial.values():
            handle.close()
            name.unlink(missing_ok=True)
        if writer is not None:
            writer.discard()
        raise
    written = []
    for tid, (name, handle) in sorted(partial.items()):
        handle.close()
        target = out / f"{stem}_track{tid}.3d.jsonl"
        os.replace(name, target)
        written.append(target)
    if writer is not None:
        writer.close()
    return {"frames": frames, "poses": lifted, "tracks": written,
            "video": out / f"{stem}_3d.mp4" if writer is not None else None}
