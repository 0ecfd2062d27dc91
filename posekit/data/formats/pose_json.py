"""2-D pose files for lifting: posekit Results JSON, {"skeleton": ..., "poses": [...]}, or lists."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from posekit.data.io import read_json
from posekit.data.sample import BadRecordError, check_values


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
