"""2-D pose files: posekit Results JSON, {"skeleton": ..., "poses": [...]}, or lists (for lifting,
`read_pose_json`); a folder of images plus a JSON list of records with boxes and keypoints (for
the keypoints family, `load_pose_json_samples`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from posekit.data.io import read_json
from posekit.data.sample import BadRecordError, Sample, check_values


def read_pose_json(path: str | Path) -> list[dict]:
    """2-D poses from JSON -> [{"keypoints": (P, K, 2|3), "skeleton": str|None, "name": str}].

    Accepted: a posekit Results JSON (or a list of them), {"skeleton": ..., "poses": [...]},
    a list of poses, or one pose ([[x, y(, score)], ...]). Non-finite or absurd values (a null
    joint, 1e308) are refused naming the file and record: a lifter would turn them into NaN.
    """
    path = Path(path)
    raw = read_json(path, "pose file")

    def entry(obj, name, skeleton=None, scores=None):
        try:
            pts = np.asarray(obj, dtype=np.float64)
            if scores is not None and pts.shape[-1] == 2:
                pts = np.concatenate([pts, np.asarray(scores, dtype=np.float64)[..., None]], axis=-1)
        except (TypeError, ValueError, OverflowError):
            raise BadRecordError(f"{path}: {name}: keypoints/scores are not matching numeric arrays") from None
        if pts.ndim == 2:
            pts = pts[None]
        if pts.ndim != 3 or pts.shape[-1] not in (2, 3) or pts.shape[1] == 0:
            raise BadRecordError(f"{path}: {name}: keypoints must be (K, 2|3) or (P, K, 2|3), got {pts.shape}")
        check_values(pts, "keypoints", f"{path}: {name}")
        if skeleton is not None and not isinstance(skeleton, str):
            raise BadRecordError(f"{path}: {name}: 'skeleton' must be a name, got {skeleton!r}")
        return {"keypoints": pts, "skeleton": skeleton, "name": name}

    if isinstance(raw, dict) and "keypoints" in raw:
        return [entry(raw["keypoints"], path.stem, raw.get("skeleton"), raw.get("scores"))]
    if isinstance(raw, dict) and "poses" in raw:
        return [entry(raw["poses"], path.stem, raw.get("skeleton"))]
    if isinstance(raw, list) and raw and isinstance(raw[0], dict):
        out = []
        for i, rec in enumerate(raw):
            if not isinstance(rec, dict) or "keypoints" not in rec:
                raise BadRecordError(f"{path}: record {i} has no 'keypoints'")
            out.append({**entry(rec["keypoints"], f"record {i}", rec.get("skeleton"), rec.get("scores")),
                        "name": f"{path.stem}_{i}"})
        return out
    if isinstance(raw, list):
        return [entry(raw, path.stem)]
    raise ValueError(f"{path}: expected a Results JSON, {{'poses': [...]}} or a list of poses")


def load_pose_json_samples(ann_file, image_dir) -> list[Sample]:
    """A JSON list of records {"image" (or "path"): file relative to `image_dir`, "keypoints":
    (K, 2|3) or (P, K, 2|3), optional "boxes": (P, 4) x, y, w, h} -> image Samples. A third
    keypoint column is the visibility (> 0 labelled; a posekit Results JSON gives its scores);
    without it every finite point is labelled. Missing boxes are the labelled points' extent
    padded by 10%; the OKS area is the box area."""
    ann_file, image_dir = Path(ann_file), Path(image_dir)
    raw = read_json(ann_file, "pose JSON file")
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise ValueError(f"{ann_file}: expected a JSON list of records with 'image' and 'keypoints'")
    poses = read_pose_json(ann_file)  # the keypoints, parsed and shape-checked once
    samples = []
    for i, (rec, pose) in enumerate(zip(raw, poses)):
        name = rec.get("image", rec.get("path"))
        if not isinstance(name, str) or not name:
            raise ValueError(f"{ann_file}: record {i}: needs 'image' (a file name in {image_dir})")
        kp = pose["keypoints"]
        if kp.shape[-1] == 2:
            finite = np.isfinite(kp).all(-1)
            kp = np.concatenate([np.where(finite[..., None], kp, 0.0), 2.0 * finite[..., None]], axis=-1)
        kp = np.where(np.isfinite(kp), kp, 0.0)
        if rec.get("boxes") is not None:
            try:
                boxes = np.asarray(rec["boxes"], dtype=np.float64).reshape(-1, 4)
            except (TypeError, ValueError):
                raise ValueError(f"{ann_file}: record {i}: 'boxes' must be [x, y, w, h] per person") from None
            if len(boxes) != len(kp) or not np.isfinite(boxes).all() or (boxes[:, 2:] <= 0).any():
                raise ValueError(f"{ann_file}: record {i}: 'boxes' must be {len(kp)} finite [x, y, w, h] with "
                                 "positive w, h (one per person)")
        else:
            boxes = []
            for p in range(len(kp)):
                lab = kp[p][kp[p, :, 2] > 0, :2]
                if not len(lab):
                    raise ValueError(f"{ann_file}: record {i}: person {p} has no labelled keypoint and no box")
                lo, hi = lab.min(0), lab.max(0)
                pad = 0.1 * max(float((hi - lo).max()), 1.0)
                boxes.append([lo[0] - pad, lo[1] - pad, hi[0] - lo[0] + 2 * pad, hi[1] - lo[1] + 2 * pad])
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        path = image_dir / name
        samples.append(Sample(keypoints=kp, image_path=path, boxes=boxes,
                              meta={"image_id": i + 1, "file_name": name, "areas": boxes[:, 2] * boxes[:, 3]}))
    return samples
