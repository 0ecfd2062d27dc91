"""Joint-order mappings between skeletons.

A mapping lists, for each destination joint, its source: an index, a tuple of indices to
average (e.g. the OpenPose neck = mid-shoulders), or None when the source has no such joint.
"""
from __future__ import annotations

import numpy as np

from .builtin import H36M32_TO_17

# MPII-16 -> H36M-17 in the 3d-pose-baseline convention used with Stacked Hourglass detections:
# MPII thorax plays H36M "spine", upper_neck plays "thorax", head_top plays "head"; H36M neck_base
# has no MPII counterpart. This is the SH permutation [6,2,1,0,3,4,5,7,8,9,13,14,15,12,11,10]
# with the Neck/Nose slot left empty.
MPII16_TO_H36M17 = (6, 2, 1, 0, 3, 4, 5, 7, 8, None, 9, 13, 14, 15, 12, 11, 10)
# COCO-17 -> H36M-17, MMPose's convention (body3d lifter demo): root = hip midpoint, thorax =
# shoulder midpoint, spine = midpoint of those two (the mean of both hips and shoulders), neck_base
# = nose, head = eye midpoint (COCO has no head top). The lifter does not read neck_base.
COCO17_TO_H36M17 = ((11, 12), 12, 14, 16, 11, 13, 15, (5, 6, 11, 12), (5, 6), 0, (1, 2), 5, 7, 9, 6, 8, 10)
# OpenPose-18 -> H36M-17, the same convention as COCO-17's above (thorax = shoulder midpoint, not
# OpenPose's own neck, so a COCO pose gives the same lifter input by either route)
OPENPOSE18_TO_H36M17 = ((8, 11), 8, 9, 10, 11, 12, 13, (2, 5, 8, 11), (2, 5), 0, (14, 15), 5, 6, 7, 2, 3, 4)
COCO17_TO_OPENPOSE18 = (0, (5, 6), 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
OPENPOSE18_TO_COCO17 = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)

MAPPINGS: dict[tuple[str, str], tuple] = {
    ("mpii16", "h36m17"): MPII16_TO_H36M17,
    ("coco17", "h36m17"): COCO17_TO_H36M17,
    ("openpose18", "h36m17"): OPENPOSE18_TO_H36M17,
    ("coco17", "openpose18"): COCO17_TO_OPENPOSE18,
    ("openpose18", "coco17"): OPENPOSE18_TO_COCO17,
    ("h36m32", "h36m17"): H36M32_TO_17,
}


def sources_of(dst: str) -> list[str]:
    """The skeletons that map to `dst` (e.g. the layouts a lifter in h36m17 order can read)."""
    return sorted(src for src, d in MAPPINGS if d == dst)


def lift_layouts() -> list[str]:
    """2-D layouts a lifter in h36m17 order reads (`data.lifting.as_h36m17`): h36m17, h36m16 (the
    16 lifter inputs) and every skeleton with a declared mapping to h36m17. Here, torch-free, so
    the command line can offer them without importing the lifting pipeline."""
    return ["h36m17", "h36m16"] + [s for s in sources_of("h36m17") if s not in ("h36m17", "h36m16")]


def map_keypoints(points: np.ndarray, src: str, dst: str, *, has_visibility: bool) -> np.ndarray:
    """Reorder (..., K_src, C) points into the `dst` skeleton's order.

    `has_visibility`: the last channel is a visibility/score (2-D keypoints as x, y, v). Then an
    averaged joint is visible only when all its sources are, and a joint with no source is
    (0, 0, 0). Without visibility (e.g. 3-D coordinates) a joint with no source is NaN.
    """
    try:
        mapping = MAPPINGS[(src, dst)]
    except KeyError:
        raise KeyError(f"no joint mapping {src} -> {dst}; known: {sorted(MAPPINGS)}") from None
    points = np.asarray(points, dtype=np.float64)
    out = np.zeros(points.shape[:-2] + (len(mapping), points.shape[-1]))
    direct = [(j, source) for j, source in enumerate(mapping) if isinstance(source, int)]
    if direct:  # one gather for the joints that copy a single source joint
        dst_index, src_index = zip(*direct)
        out[..., list(dst_index), :] = points[..., list(src_index), :]
    for j, source in enumerate(mapping):
        if isinstance(source, int):
            continue
        if source is None:
            out[..., j, :] = 0.0 if has_visibility else np.nan
        elif isinstance(source, tuple):
            pts = points[..., list(source), :]
            if has_visibility:
                vis = np.all(pts[..., 2] > 0, axis=-1)
                out[..., j, :2] = pts[..., :2].mean(-2) * vis[..., None]
                out[..., j, 2] = np.where(vis, pts[..., 2].min(-1), 0.0)
            else:
                out[..., j, :] = pts.mean(-2)
    return out
