"""Synthetic dogs: articulated side-view figures with the StanfordExtra-24 layout on textured
backgrounds, with random occluders and visibility flags. A fresh clone can train, test and run
the demo of the dog regressor with no download.

The figure is posed in a canonical frame (facing +x, body length 1): torso, four 2-segment legs,
tail, neck and head with ears. The legs on the viewer's side are the dog's LEFT legs when it
faces right; they are drawn lighter and on top of the far (right) legs, so left/right is
decidable from the image. A dog facing left is the mirror image with left/right labels swapped
through the skeleton's flip pairs, exactly like a flip augmentation.

Visibility: v = 2 visible, v = 1 labelled but hidden by an occluder, v = 0 unlabelled (outside
the image, or joints 20-23 unless `label_all`, mirroring StanfordExtra where they are never
labelled). `meta["seg_area"]` is the visible silhouette's pixel count (StanfordExtra's `seg`, the
normaliser of the WLDO PCK). Every sample is a pure function of (seed, index).
"""
from __future__ import annotations

import cv2
import numpy as np

from posekit.data.sample import Sample
from posekit.skeletons import get_skeleton

SKELETON = get_skeleton("stanford_extra24")
J = {name: i for i, name in enumerate(SKELETON.keypoints)}


def _rot(v: np.ndarray, deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _limb(start: np.ndarray, length: float, angle_from_down: float) -> np.ndarray:
    """End of a segment of `length` leaving `start`, rotated from straight down (y grows down)."""
    return start + _rot(np.array([0.0, length]), angle_from_down)


def canonical_pose(rng: np.random.Generator) -> np.ndarray:
    """(24, 2) joints of a dog facing +x with body length ~1, in a random plausible pose."""
    p = np.zeros((24, 2))
    body = rng.uniform(0.9, 1.1)
    withers = np.array([0.42 * body, -0.12])
    rump = np.array([-0.45 * body, -0.08 + rng.uniform(-0.05, 0.05)])
    p[J["withers"]] = withers
    p[J["tail_start"]] = rump + np.array([-0.06, -0.02])
    leg_len = rng.uniform(0.26, 0.36)
    gait = rng.uniform(-1, 1)  # walking phase: near and far legs swing in opposite directions
    for side, sign, shift in (("left", 1.0, 0.0), ("right", -1.0, 0.05)):
        for end, anchor in (("front", withers + np.array([-0.04, 0.2])), ("rear", rump + np.array([0.08, 0.2]))):
            top = anchor + np.array([shift, -0.02 if side == "right" else 0.0])
            swing = sign * gait * 25 + rng.normal(0, 8)
            knee_bend = rng.uniform(-25, 5) if end == "front" else rng.uniform(0, 35)
            mid = _limb(top, leg_len, swing)
            paw = _limb(mid, leg_len * rng.uniform(0.85, 1.05), swing + knee_bend)
            p[J[f"{side}_{end}_top"]] = top
            p[J[f"{side}_{end}_middle"]] = mid
            p[J[f"{side}_{end}_paw"]] = paw
    tail_angle = rng.uniform(-80, 60)  # 0 = straight back, negative = up
    tail_dir = _rot(np.array([-1.0, 0.0]), -tail_angle)
    p[J["tail_end"]] = p[J["tail_start"]] + rng.uniform(0.3, 0.5) * tail_dir
    neck_angle = rng.uniform(25, 75)  # degrees above horizontal
    head = withers + rng.uniform(0.25, 0.35) * np.array([np.cos(np.deg2rad(neck_angle)), -np.sin(np.deg2rad(neck_angle))])
    head_pitch = rng.uniform(-35, 25)  # muzzle direction: 0 forward, positive down
    fwd = _rot(np.array([1.0, 0.0]), head_pitch)
    up = _rot(np.array([0.0, -1.0]), head_pitch)
    muzzle = rng.uniform(0.2, 0.3)
    p[J["nose"]] = head + muzzle * fwd + 0.02 * up
    p[J["chin"]] = head + 0.7 * muzzle * fwd - 0.09 * up
    p[J["left_ear_base"]] = head - 0.02 * fwd + 0.09 * up
    p[J["right_ear_base"]] = head - 0.08 * fwd + 0.1 * up
    droop = rng.uniform(-60, 120)  # ear tip direction: upright .. floppy
    ear_len = rng.uniform(0.1, 0.18)
    for side in ("left", "right"):
        base = p[J[f"{side}_ear_base"]]
        p[J[f"{side}_ear_tip"]] = base + ear_len * _rot(up, -droop + rng.normal(0, 10))
    p[J["left_eye"]] = head + 0.07 * fwd + 0.05 * up
    p[J["right_eye"]] = head + 0.03 * fwd + 0.06 * up
    p[J["throat"]] = head - 0.05 * fwd - 0.14 * up
    return p


def _texture(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A random RGB background: blurred noise blobs, stripes and clutter shapes."""
    coarse = rng.uniform(0, 255, size=(int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3)).astype(np.float32)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.5:  # stripes
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = rng.uniform(0, np.pi)
        period = rng.uniform(6, 30)
        wave = np.sin((xx * np.cos(t) + yy * np.sin(t)) * 2 * np.pi / period)[..., None]
        img += wave * rng.uniform(10, 50) * rng.uniform(-1, 1, size=3).astype(np.float32)
    for _ in range(int(rng.integers(2, 8))):  # clutter
        color = tuple(float(c) for c in rng.uniform(0, 255, 3))
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if rng.random() < 0.5:
            axes = (int(rng.integers(3, max(4, w // 5))), int(rng.integers(3, max(4, h // 5))))
            cv2.ellipse(img, c, axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
        else:
            d = (int(rng.integers(3, max(4, w // 4))), int(rng.integers(3, max(4, h // 4))))
            cv2.rectangle(img, c, (c[0] + d[0], c[1] + d[1]), color, -1)
    img += rng.normal(0, rng.uniform(2, 12), size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _pt(p) -> tuple[int, int]:
    return int(round(p[0] * 16)), int(round(p[1] * 16))  # cv2 shift=4 sub-pixel drawing


def render_dog(image: np.ndarray, joints: np.ndarray, facing_right: bool, scale: float, rng: np.random.Generator,
               mask: np.ndarray | None = None) -> None:
    """Draw the figure (in image coordinates, canonical labels: left = near side) in place; with
    `mask` ((H, W) uint8), also paint the figure's silhouette there (255, anti-aliased)."""
    coat = rng.uniform(30, 230, 3)
    near = tuple(float(c) for c in np.clip(coat * 1.15 + 15, 0, 255))
    far = tuple(float(c) for c in np.clip(coat * 0.6, 0, 255))
    body = tuple(float(c) for c in coat)
    thick = max(2, int(round(scale * rng.uniform(0.07, 0.1))))
    aa, sh = cv2.LINE_AA, 4

    def paint(fn, *geometry, color, width):
        fn(image, *geometry, color, width, aa, sh)
        if mask is not None:
            fn(mask, *geometry, 255, width, aa, sh)

    def line(a, b, color, t):
        paint(cv2.line, _pt(joints[a]), _pt(joints[b]), color=color, width=t)

    for leg in ("right_front", "right_rear"):  # far legs
        line(J[f"{leg}_top"], J[f"{leg}_middle"], far, thick)
        line(J[f"{leg}_middle"], J[f"{leg}_paw"], far, thick)
    line(J["right_ear_base"], J["right_ear_tip"], far, max(2, thick))
    # torso: an ellipse between rump and withers
    w_, r_ = joints[J["withers"]], joints[J["tail_start"]]
    centre = (w_ + r_) / 2 + np.array([0, 0.1 * scale])
    length = np.linalg.norm(w_ - r_)
    angle = float(np.degrees(np.arctan2(w_[1] - r_[1], w_[0] - r_[0])))
    paint(cv2.ellipse, _pt(centre), (int(length * 16 * 0.62), int(scale * 16 * rng.uniform(0.16, 0.22))), angle,
          0, 360, color=body, width=-1)
    line(J["tail_start"], J["tail_end"], body, max(2, int(thick * 0.7)))
    head = (joints[J["left_ear_base"]] + joints[J["right_ear_base"]] + joints[J["chin"]]) / 3
    line(J["withers"], J["throat"], body, int(thick * 1.6))
    paint(cv2.line, _pt(w_), _pt(head), color=body, width=int(thick * 1.8))
    paint(cv2.circle, _pt(head), int(scale * 16 * 0.11), color=body, width=-1)
    paint(cv2.line, _pt(head), _pt(joints[J["nose"]]), color=body, width=int(thick * 1.3))
    line(J["chin"], J["nose"], body, max(2, thick // 2))
    paint(cv2.circle, _pt(joints[J["nose"]]), max(16, int(thick * 8)), color=(20.0, 20.0, 20.0), width=-1)
    for leg in ("left_front", "left_rear"):  # near legs, on top
        line(J[f"{leg}_top"], J[f"{leg}_middle"], near, thick)
        line(J[f"{leg}_middle"], J[f"{leg}_paw"], near, thick)
        paint(cv2.circle, _pt(joints[J[f"{leg}_paw"]]), max(16, int(thick * 10)), color=near, width=-1)
    line(J["left_ear_base"], J["left_ear_tip"], near, max(2, thick))
    paint(cv2.circle, _pt(joints[J["left_eye"]]), max(16, int(thick * 5)), color=(10.0, 10.0, 10.0), width=-1)


class SyntheticDogs:
    """`n` reproducible synthetic dogs; a source for the top-down pipeline (yields `Sample`)."""

    def __init__(self, n: int = 1000, *, seed: int = 0, image_size: tuple[int, int] = (160, 128),
                 occlusion_prob: float = 0.4, label_all: bool = False):
        if n <= 0:
            raise ValueError(f"SyntheticDogs needs n > 0, got {n}")
        self.n = int(n)
        self.seed = int(seed)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.occlusion_prob = occlusion_prob
        self.label_all = label_all

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < self.n:
            raise IndexError(f"synthetic dog {i} out of range (n={self.n})")
        rng = np.random.default_rng([self.seed, i])
        w, h = self.image_size
        image = _texture(rng, w, h)
        canon = canonical_pose(rng)
        facing_right = bool(rng.random() < 0.5)
        scale = rng.uniform(0.32, 0.5) * min(w, h * 1.3)
        tilt = rng.uniform(-20, 20)
        pts = np.stack([_rot(p, tilt) for p in canon]) * scale
        if not facing_right:
            pts[:, 0] *= -1
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        # place the figure mostly inside the image (a paw or tail may stick out)
        lo_off = -lo - 0.05 * np.array([w, h])
        hi_off = np.array([w, h]) - hi + 0.05 * np.array([w, h])
        off = np.where(hi_off > lo_off, rng.uniform(np.minimum(lo_off, hi_off), np.maximum(lo_off, hi_off)),
                       (lo_off + hi_off) / 2)
        pts = pts + off
        silhouette = np.zeros((h, w), np.uint8)
        render_dog(image, pts, facing_right, scale, rng, silhouette)
        labels = pts if facing_right else pts[SKELETON.flip_index]
        v = np.full(24, 2.0)
        occluded = np.zeros(24, bool)
        if rng.random() < self.occlusion_prob:
            occ_mask = np.zeros((h, w), np.uint8)
            cx, cy = rng.uniform(lo[0] + off[0], hi[0] + off[0]), rng.uniform(lo[1] + off[1], hi[1] + off[1])
            ow, oh = rng.uniform(0.15, 0.4) * (hi - lo + 1)
            patch = _texture(rng, w, h)
            if rng.random() < 0.5:
                cv2.rectangle(occ_mask, (int(cx - ow / 2), int(cy - oh / 2)), (int(cx + ow / 2), int(cy + oh / 2)), 1, -1)
            else:
                cv2.ellipse(occ_mask, (int(cx), int(cy)), (int(ow / 2) + 1, int(oh / 2) + 1), 0, 0, 360, 1, -1)
            image[occ_mask > 0] = patch[occ_mask > 0]
            silhouette[occ_mask > 0] = 0
            xi = np.clip(np.round(labels[:, 0]).astype(int), 0, w - 1)
            yi = np.clip(np.round(labels[:, 1]).astype(int), 0, h - 1)
            occluded = occ_mask[yi, xi] > 0
            v[occluded] = 1.0
        inside = (labels[:, 0] >= 0) & (labels[:, 0] <= w - 1) & (labels[:, 1] >= 0) & (labels[:, 1] <= h - 1)
        v[~inside] = 0.0
        if not self.label_all:
            v[20:] = 0.0
        kps = np.concatenate([labels, v[:, None]], axis=1)
        kps[v == 0, :2] = 0.0  # StanfordExtra stores unlabelled joints as [0, 0, 0]
        x0, y0 = np.clip(pts.min(axis=0), 0, [w - 1, h - 1])
        x1, y1 = np.clip(pts.max(axis=0), 0, [w - 1, h - 1])
        pad = 0.04 * scale
        x0, y0 = max(0.0, x0 - pad), max(0.0, y0 - pad)
        x1, y1 = min(w - 1.0, x1 + pad), min(h - 1.0, y1 + pad)
        bbox = np.array([x0, y0, max(x1 - x0, 1.0), max(y1 - y0, 1.0)])
        return Sample(keypoints=kps[None], image=image, boxes=bbox[None],
                      meta={"name": f"synthetic_{self.seed}_{i:05d}", "facing_right": facing_right,
                            "occluded": occluded,
                            # the visible silhouette's pixel count, like StanfordExtra's `seg` mask
                            "seg_area": float((silhouette >= 128).sum())})
