"""Pose tracking across video frames: ids that stay with people, optional One-Euro smoothing.

Association (per frame): similarity = oks_weight x OKS + (1 - oks_weight) x box IoU between each
live track (its pose moved on by its own velocity, so walkers crossing each other stay apart)
and each detected person; Hungarian matching (scipy's linear_sum_assignment) on 1 - similarity;
a pair below `min_similarity` is never matched. A track missed for more than `max_missed`
frames ends; an unmatched person starts a track only when its score reaches `birth_score`
(others get track id -1: seen, not tracked). Top-down (`propagated_boxes`): between detector
frames each live track's box comes from its last keypoints, enlarged, as rtmlib's PoseTracker does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from posekit.ops.one_euro import OneEuroFilter

FALLBACK_SIGMA = 0.07  # mean COCO sigma, for skeletons that declare none (a tracking cost, not a metric)


def keypoint_boxes(keypoints: np.ndarray, scores: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """(P, 4) x, y, w, h around each person's joints scored above `threshold` (all finite joints
    when none is); NaN rows for a person without a finite joint."""
    out = np.full((len(keypoints), 4), np.nan)
    for p, (kp, sc) in enumerate(zip(keypoints, scores)):
        finite = np.isfinite(kp).all(axis=1)
        use = finite & (sc > threshold)
        if not use.any():
            use = finite
        if not use.any():
            continue
        lo, hi = kp[use].min(axis=0), kp[use].max(axis=0)
        out[p] = [lo[0], lo[1], max(hi[0] - lo[0], 1.0), max(hi[1] - lo[1], 1.0)]
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, B) IoU of x, y, w, h boxes (0 where either is NaN)."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y1 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = a[:, None, 2] * a[:, None, 3] + b[None, :, 2] * b[None, :, 3] - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return np.nan_to_num(iou, nan=0.0)


def pose_oks(a: np.ndarray, a_valid: np.ndarray, b: np.ndarray, b_valid: np.ndarray, areas: np.ndarray,
             sigmas: np.ndarray) -> np.ndarray:
    """(A, B) OKS between poses a (A, K, 2) and b (B, K, 2) over joints valid in both, scaled by
    `areas` (A,) (the tracks' box areas)."""
    var = (2.0 * sigmas) ** 2
    both = a_valid[:, None] & b_valid[None]
    d2 = ((np.nan_to_num(a)[:, None] - np.nan_to_num(b)[None]) ** 2).sum(-1)
    e = d2 / (var * 2.0 * (areas[:, None, None] + np.spacing(1)))
    counted = both.sum(-1)
    return np.where(counted > 0, (np.exp(-e) * both).sum(-1) / np.maximum(counted, 1), 0.0)


@dataclass
class Track:
    track_id: int
    keypoints: np.ndarray  # (K, 2) last known position per joint (an unseen joint: moved on by the velocity)
    joint_age: np.ndarray  # (K,) frames since each joint was observed (0: in the last match)
    box: np.ndarray        # (4,) x, y, w, h at the last match
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # px / frame (median joint motion)
    missed: int = 0
    age: int = 1
    smoother: OneEuroFilter | None = None

    def predicted(self, max_age: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Keypoints, the joints still trusted (seen within `max_age` frames) and the box, all
        moved on by the velocity for the frames since the last match."""
        shift = self.velocity * (self.missed + 1)
        box = self.box.copy()
        box[:2] += shift
        return self.keypoints + shift, self.joint_age + self.missed <= max_age, box


class PoseTracker:
    """Give each person of each frame a track id (see the module docstring).

    skeleton: for OKS sigmas. kpt_thr: joints scored at or below it are ignored for matching.
    smooth: None, or {"min_cutoff": Hz, "beta": ...}: a One-Euro filter per track and joint on
    the keypoints handed back (joints scored at or below kpt_thr are not fed to it)."""

    def __init__(self, skeleton, *, oks_weight: float = 0.5, min_similarity: float = 0.2,
                 max_missed: int = 30, birth_score: float = 0.3, kpt_thr: float = 0.05,
                 smooth: dict | None = None, fps: float = 25.0, velocity_momentum: float = 0.5):
        if not 0.0 <= oks_weight <= 1.0:
            raise ValueError(f"tracker oks_weight must be in [0, 1], got {oks_weight}")
        if max_missed < 0:
            raise ValueError(f"tracker max_missed must be >= 0, got {max_missed}")
        self.skeleton = skeleton
        try:
            self.sigmas = skeleton.oks_sigmas()
        except ValueError:
            self.sigmas = np.full(skeleton.num_keypoints, FALLBACK_SIGMA)
        self.oks_weight, self.min_similarity = float(oks_weight), float(min_similarity)
        self.max_missed, self.birth_score, self.kpt_thr = int(max_missed), float(birth_score), float(kpt_thr)
        self.smooth = dict(smooth) if smooth is not None else None  # {}: the default parameters
        if self.smooth is not None:
            OneEuroFilter(**self.smooth)  # bad parameters fail now, not at the first person
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.momentum = float(velocity_momentum)
        self.tracks: list[Track] = []
        self.next_id = 0
        self.frame = -1

    def propagated_boxes(self, scale: float = 1.25) -> np.ndarray:
        """(N, 5) boxes (x, y, w, h, 1) for the tracks seen in the last frame, from their
        keypoints moved on by their velocity and enlarged by `scale` about the centre (rtmlib's
        PoseTracker does the same between detector frames)."""
        rows = []
        for t in self.tracks:
            if t.missed:
                continue
            kp, _, _ = t.predicted(0)
            box = keypoint_boxes(kp[None], (t.joint_age == 0)[None].astype(float), 0.5)[0]
            if not np.isfinite(box).all():
                continue
            cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
            w, h = box[2] * scale, box[3] * scale
            rows.append([cx - w / 2, cy - h / 2, w, h, 1.0])
        return np.asarray(rows, dtype=np.float64).reshape(-1, 5)

    def update(self, keypoints: np.ndarray, scores: np.ndarray, boxes: np.ndarray | None = None,
               person_scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One frame: (P, K, 2) keypoints, (P, K) scores, optional (P, 4) boxes and (P,) person
        scores -> ((P,) track ids (-1: not tracked), (P, K, 2) keypoints, smoothed when asked)."""
        self.frame += 1
        kp = np.asarray(keypoints, dtype=np.float64)[..., :2].reshape(-1, self.skeleton.num_keypoints, 2)
        sc = np.asarray(scores, dtype=np.float64).reshape(kp.shape[:2])
        valid = (sc > self.kpt_thr) & np.isfinite(kp).all(-1)
        det_boxes = keypoint_boxes(kp, sc, self.kpt_thr)
        if boxes is not None:
            given = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            det_boxes = np.where(np.isfinite(given).all(1, keepdims=True), given, det_boxes)
        ps = sc.mean(1) if person_scores is None else np.asarray(person_scores, dtype=np.float64).reshape(len(kp))
        ids = np.full(len(kp), -1, dtype=np.int64)

        matches: list[tuple[int, int]] = []
        if self.tracks and len(kp):
            pred = [t.predicted(self.max_missed) for t in self.tracks]
            t_kp = np.stack([p[0] for p in pred])
            t_valid = np.stack([p[1] for p in pred])
            t_box = np.stack([p[2] for p in pred])
            extent = keypoint_boxes(t_kp, t_valid.astype(float), 0.5)  # every trusted joint: the whole body
            areas = np.nan_to_num(np.maximum(extent[:, 2] * extent[:, 3], t_box[:, 2] * t_box[:, 3]), nan=1.0)
            missed = np.array([t.missed for t in self.tracks], dtype=np.float64)
            # a lost track's position is less certain the longer it is gone: its OKS scale grows
            oks = pose_oks(t_kp, t_valid, kp, valid, areas * (1.0 + 0.1 * missed) ** 2, self.sigmas)
            sim = self.oks_weight * oks + (1.0 - self.oks_weight) * box_iou(t_box, det_boxes)
            # stage 1: every track on pose + box; stage 2 (as ByteTrack re-finds lost tracks): a lost
            # track may take a person left over by stage 1 on pose alone, since the box of someone
            # half-hidden (coming out from behind something) barely overlaps their whole-body box
            rows, cols = linear_sum_assignment(-sim)
            matches = [(r, c) for r, c in zip(rows, cols) if sim[r, c] >= self.min_similarity]
            lost = [r for r in range(len(self.tracks)) if missed[r] > 0 and r not in {m[0] for m in matches}]
            left = [c for c in range(len(kp)) if c not in {m[1] for m in matches}]
            if lost and left:
                sub = oks[np.ix_(lost, left)]
                rows, cols = linear_sum_assignment(-sub)
                matches += [(lost[r], left[c]) for r, c in zip(rows, cols) if sub[r, c] >= self.min_similarity]

        matched_tracks = set()
        for r, c in matches:
            t = self.tracks[r]
            self._refresh(t, kp[c], valid[c], det_boxes[c])
            ids[c] = t.track_id
            matched_tracks.add(r)
        for c in range(len(kp)):
            if ids[c] < 0 and ps[c] >= self.birth_score and valid[c].any() and np.isfinite(det_boxes[c]).all():
                t = Track(self.next_id, np.where(valid[c][:, None], kp[c], np.nan), np.where(valid[c], 0, 1 << 20),
                          det_boxes[c].copy())
                if self.smooth is not None:
                    t.smoother = OneEuroFilter(**self.smooth)
                self.next_id += 1
                self.tracks.append(t)
                matched_tracks.add(len(self.tracks) - 1)
                ids[c] = t.track_id
        for r, t in enumerate(self.tracks):
            if r not in matched_tracks:
                t.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]

        out = kp.copy()
        if self.smooth is not None:
            by_id = {t.track_id: t for t in self.tracks}
            now = self.frame / self.fps
            for c, tid in enumerate(ids):
                if tid >= 0:
                    out[c] = by_id[tid].smoother(kp[c], now, valid[c])
        return ids, out

    def _refresh(self, t: Track, kp: np.ndarray, valid: np.ndarray, box: np.ndarray) -> None:
        """Match `t` to a detection: its velocity (median motion of the joints seen both times,
        robust to joints appearing and vanishing at the edge of an occluder) and its joints."""
        gap = t.missed + 1
        common = valid & (t.joint_age == 0)
        if common.any():
            step = np.median(kp[common] - t.keypoints[common], axis=0) / gap
            t.velocity = self.momentum * t.velocity + (1.0 - self.momentum) * step if t.age > 1 else step
        moved = t.keypoints + t.velocity * gap
        t.keypoints = np.where(valid[:, None], kp, moved)
        t.joint_age = np.where(valid, 0, t.joint_age + gap)
        t.box = box.copy()
        t.missed = 0
        t.age += 1
