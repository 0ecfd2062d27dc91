"""Tracked video frames: each person drawn in its track's colour with a "#id" label, so a person
keeps one colour from frame to frame; people seen but not tracked (id -1) are drawn greyed and
unlabelled under the tracked ones."""
from __future__ import annotations

import numpy as np

from posekit.skeletons import Skeleton
from posekit.viz import draw_skeleton


def _keypoint_boxes(keypoints: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """(P, 4) boxes around each person's drawn joints (for a label when the model gives no box)."""
    out = np.full((len(keypoints), 4), np.nan)
    for p, (kp, sc) in enumerate(zip(keypoints, scores)):
        ok = np.isfinite(kp[:, :2]).all(axis=1) & (sc > threshold)
        if ok.any():
            lo, hi = kp[ok, :2].min(axis=0), kp[ok, :2].max(axis=0)
            out[p] = [lo[0], lo[1], max(hi[0] - lo[0], 1.0), max(hi[1] - lo[1], 1.0)]
    return out


def draw_tracks(image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray | None, skeleton: Skeleton,
                track_ids, *, boxes: np.ndarray | None = None, score_threshold: float = 0.0,
                person_scores: np.ndarray | None = None, person_threshold: float | None = None,
                radius: int | None = None, thickness: int | None = None) -> np.ndarray:
    """RGB copy of `image` with people coloured and labelled by `track_ids` (P,). Without
    `boxes`, each tracked person gets a box around its joints, which carries the label."""
    k = skeleton.num_keypoints
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, k, np.shape(keypoints)[-1] if np.size(keypoints)
                                                                 else 2)
    scores = np.ones(keypoints.shape[:2]) if scores is None else np.asarray(scores, dtype=np.float64).reshape(
        keypoints.shape[:2])
    ids = np.asarray(track_ids, dtype=np.int64).reshape(-1)
    if len(ids) != len(keypoints):
        raise ValueError(f"draw_tracks: {len(ids)} track ids for {len(keypoints)} people")
    boxes = _keypoint_boxes(keypoints, scores, score_threshold) if boxes is None else \
        np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    tracked, untracked = np.flatnonzero(ids >= 0), np.flatnonzero(ids < 0)
    canvas = np.ascontiguousarray(np.array(image, copy=True))
    if len(untracked):  # greyed (a person score of 0 under a threshold of 1), no box, no label
        canvas = draw_skeleton(canvas, keypoints[untracked], scores[untracked], skeleton,
                               score_threshold=score_threshold, radius=radius, thickness=thickness,
                               person_scores=np.zeros(len(untracked)), person_threshold=1.0, color_by_person=True,
                               track_ids=np.zeros(len(untracked), np.int64))
    if len(tracked):
        canvas = draw_skeleton(canvas, keypoints[tracked], scores[tracked], skeleton,
                               score_threshold=score_threshold, radius=radius, thickness=thickness,
                               boxes=boxes[tracked], color_by_person=True, track_ids=ids[tracked],
                               person_scores=None if person_scores is None else np.asarray(person_scores)[tracked],
                               person_threshold=person_threshold)
    return canvas


def tracks_3d_panel(poses, track_ids, skeleton: Skeleton, *, size: tuple[int, int] = (360, 360),
                    elev: float = 15.0, azim: float = -70.0) -> np.ndarray:
    """RGB (H, W, 3) matplotlib view of 3-D poses (N, K, 3; mm, camera frame: x right, y down,
    z forward), each in its track's colour, side by side along x so people do not overlap
    (a root-relative lifter gives no distances between people)."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from posekit.viz import person_color
    h, w = size
    fig = plt.figure(figsize=(w / 100, h / 100), dpi=100)
    try:
        ax = fig.add_subplot(111, projection="3d")
        ax.view_init(elev=elev, azim=azim)
        poses = [np.asarray(p, dtype=np.float64) for p in poses]
        spacing = 900.0
        for n, (pose, tid) in enumerate(zip(poses, track_ids)):
            pose = pose - np.nanmean(pose, axis=0) + np.array([n * spacing, 0.0, 0.0])
            color = np.array(person_color(int(tid))) / 255.0
            for a, b in skeleton.limbs:
                ax.plot(pose[[a, b], 0], pose[[a, b], 2], -pose[[a, b], 1], "-", color=color, linewidth=2)
            ax.text(pose[:, 0].mean(), 0.0, -np.nanmin(pose[:, 1]) + 120, f"#{int(tid)}", color=color)
        half = max(1, len(poses)) * spacing / 2
        mid = (max(1, len(poses)) - 1) * spacing / 2
        ax.set_xlim(mid - half, mid + half)
        ax.set_ylim(-half, half)
        ax.set_zlim(-half, half)
        ax.set_xticklabels([])
        ax.set_yticklabels([])
        ax.set_zticklabels([])
        ax.set_title("3-D (most likely hypothesis)" if poses else "3-D: no tracked person", fontsize=8)
        fig.canvas.draw()
        rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    finally:
        plt.close(fig)
    return rgb
