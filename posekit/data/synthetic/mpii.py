"""Synthetic single-person figures with the MPII-16 skeleton, for tests, demos and benchmarks.

Each figure is a jointed body (torso, head, thick limbs with joint caps) in a random pose,
size, lean and position, on a cluttered background (smooth colour noise plus distractor
shapes), sometimes partly covered by an occluder (joints under it keep their coordinates but
get MPII's is_visible = 0) or cut by the image border (joints outside are not annotated).

Figures face the camera, so the subject's right side is on the image's left and a mirrored
figure is again a valid figure: flip augmentation and the flip test behave as on real people.
Paired limbs share colours, so left/right must be told from the layout, not from a colour.

Each sample is rendered on demand from (seed, index): the dataset is deterministic and costs
no memory. A head rectangle gives a PCKh head size like MPII's (0.6 x its diagonal).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from posekit.data.formats.mpii import NUM_JOINTS, SCALE_PAD, MPIIRecord, record_to_sample
from posekit.data.sample import Sample
from posekit.skeletons import get_skeleton

__all__ = ["SyntheticMPII", "render_figure", "sample_pose"]

_J = {name: i for i, name in enumerate(get_skeleton("mpii16").keypoints)}


def _rot(v: np.ndarray, deg: float) -> np.ndarray:
    t = math.radians(deg)
    c, s = math.cos(t), math.sin(t)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _limb(rng: np.random.Generator, root: np.ndarray, direction: np.ndarray, first_len: tuple[float, float],
          max_bend: float, second_len: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """A two-segment limb from `root` along the unit `direction`, bent either way at the middle
    joint: (middle joint, end joint)."""
    first = direction * rng.uniform(*first_len)
    middle = root + first
    bend = rng.uniform(0, max_bend) * (1 if rng.random() < 0.5 else -1)
    second = _rot(first / np.linalg.norm(first), bend) * rng.uniform(*second_len)
    return middle, middle + second


def sample_pose(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """(16, 2) joints of a unit-torso figure (pelvis at the origin, y down) and its head length."""
    j = np.zeros((NUM_JOINTS, 2))
    lean = rng.normal(0, 12)
    up = _rot(np.array([0.0, -1.0]), lean)
    right = np.array([-up[1], up[0]])  # image-right, perpendicular to the torso
    width = rng.uniform(0.55, 1.0)  # body yaw foreshortens shoulders and hips
    j[_J["pelvis"]] = 0.0
    j[_J["thorax"]] = up * 1.0
    j[_J["upper_neck"]] = j[_J["thorax"]] + _rot(up, rng.normal(0, 8)) * 0.17
    head_dir = _rot(up, rng.normal(0, 15))
    head_len = rng.uniform(0.42, 0.52)
    j[_J["head_top"]] = j[_J["upper_neck"]] + head_dir * head_len
    # frontal figure: the subject's right is on the image's left
    j[_J["r_shoulder"]] = j[_J["thorax"]] - right * 0.38 * width
    j[_J["l_shoulder"]] = j[_J["thorax"]] + right * 0.38 * width
    j[_J["r_hip"]] = -right * 0.22 * width
    j[_J["l_hip"]] = right * 0.22 * width
    down = -up
    for side, sign in (("r", -1.0), ("l", 1.0)):
        # arm: abduct away from the body (0 = hanging, 180 = straight up), then bend the elbow
        abduct = rng.uniform(-25, 170) if rng.random() < 0.85 else rng.uniform(-60, -25)
        j[_J[f"{side}_elbow"]], j[_J[f"{side}_wrist"]] = _limb(
            rng, j[_J[f"{side}_shoulder"]], _rot(down, -sign * abduct), (0.55, 0.65), 140, (0.5, 0.58))
        # leg: hip swing outward/inward, knee bend either way (squats, kicks, steps)
        swing = rng.uniform(-15, 50) if rng.random() < 0.85 else rng.uniform(50, 100)
        j[_J[f"{side}_knee"]], j[_J[f"{side}_ankle"]] = _limb(
            rng, j[_J[f"{side}_hip"]], _rot(down, -sign * swing), (0.8, 0.95), 110, (0.8, 0.95))
    # MPII's pelvis and thorax are the midpoints of the hips and shoulders
    j[_J["pelvis"]] = 0.5 * (j[_J["r_hip"]] + j[_J["l_hip"]])
    j[_J["thorax"]] = 0.5 * (j[_J["r_shoulder"]] + j[_J["l_shoulder"]])
    return j, head_len


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    grid = rng.integers(2, 6)
    low = rng.uniform(0, 255, size=(grid, grid, 3)).astype(np.float32)
    img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, rng.uniform(2, 12), size=img.shape).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(2, 8)):  # distractor shapes
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        p = rng.integers(0, size, 2)
        if kind == 0:
            q = p + rng.integers(-size // 3, size // 3, 2)
            cv2.rectangle(img, tuple(int(v) for v in p), tuple(int(v) for v in q), color, -1)
        elif kind == 1:
            cv2.circle(img, tuple(int(v) for v in p), int(rng.integers(3, size // 6)), color, -1)
        else:
            q = rng.integers(0, size, 2)
            cv2.line(img, tuple(int(v) for v in p), tuple(int(v) for v in q), color, int(rng.integers(1, 6)))
    return img


def render_figure(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, dict]:
    """One RGB image (size x size) and its annotation dict: joints (16, 2), annotated, is_visible,
    objpos (2,), scale (person height / 200, MPII's convention), head_size."""
    pose, head_len = sample_pose(rng)
    extent = pose.max(axis=0) - pose.min(axis=0)
    height_px = rng.uniform(0.45, 0.9) * size
    unit = height_px / max(extent[1], 0.6 * extent[0], 1e-6)
    rot = rng.normal(0, 8)
    pts = np.stack([_rot(p, rot) for p in pose]) * unit
    mid = 0.5 * (pts.max(axis=0) + pts.min(axis=0))
    pts = pts - mid + size / 2 + rng.normal(0, 0.08 * size, 2)

    img = _background(rng, size)
    skin = rng.integers(60, 256, 3)
    shirt = rng.integers(0, 256, 3)
    trousers = rng.integers(0, 256, 3)
    limb_w = max(2, int(round(unit * rng.uniform(0.13, 0.2))))

    def col(c, jitter=0):
        return tuple(int(v) for v in np.clip(c + jitter, 0, 255))

    def line(a, b, c, w):
        cv2.line(img, tuple(int(round(v)) for v in pts[a]), tuple(int(round(v)) for v in pts[b]), c, w, cv2.LINE_AA)

    def cap(a, c, r):
        cv2.circle(img, tuple(int(round(v)) for v in pts[a]), r, c, -1, cv2.LINE_AA)

    # legs, torso, arms, head (frontal figure: draw order only matters where limbs cross)
    for side in ("r", "l"):
        line(_J[f"{side}_hip"], _J[f"{side}_knee"], col(trousers), limb_w + 1)
        line(_J[f"{side}_knee"], _J[f"{side}_ankle"], col(trousers, -40), limb_w)
        cap(_J[f"{side}_knee"], col(trousers, 40), max(2, limb_w // 2 + 1))
        cap(_J[f"{side}_ankle"], col(skin, -30), max(2, limb_w // 2 + 1))
    torso = pts[[_J["r_shoulder"], _J["l_shoulder"], _J["l_hip"], _J["r_hip"]]]
    cv2.fillConvexPoly(img, np.round(torso).astype(np.int32), col(shirt), cv2.LINE_AA)
    line(_J["thorax"], _J["upper_neck"], col(skin), max(2, limb_w))
    for side in ("r", "l"):
        line(_J[f"{side}_shoulder"], _J[f"{side}_elbow"], col(shirt, 25), limb_w)
        line(_J[f"{side}_elbow"], _J[f"{side}_wrist"], col(skin), max(2, limb_w - 1))
        cap(_J[f"{side}_elbow"], col(shirt, -30), max(2, limb_w // 2 + 1))
        cap(_J[f"{side}_wrist"], col(skin, 40), max(2, limb_w // 2 + 1))
    neck, top = pts[_J["upper_neck"]], pts[_J["head_top"]]
    head_c = 0.5 * (neck + top)
    axis = top - neck
    head_l = float(np.linalg.norm(axis))
    angle = math.degrees(math.atan2(axis[1], axis[0]))
    cv2.ellipse(img, tuple(int(round(v)) for v in head_c), (max(2, int(head_l / 2)), max(2, int(head_l * 0.38))),
                angle, 0, 360, col(skin, 15), -1, cv2.LINE_AA)
    # a nose mark on the face: the figure faces the camera
    nose = head_c - 0.05 * axis
    cv2.circle(img, tuple(int(round(v)) for v in nose), max(1, int(head_l * 0.08)), col(skin, -70), -1)

    is_visible = np.ones(NUM_JOINTS)
    if rng.random() < 0.35:  # an occluder over part of the body
        c = pts[rng.integers(NUM_JOINTS)] + rng.normal(0, 0.05 * size, 2)
        half = rng.uniform(0.06, 0.16, 2) * size
        x0, y0 = np.round(c - half).astype(int)
        x1, y1 = np.round(c + half).astype(int)
        cv2.rectangle(img, (int(x0), int(y0)), (int(x1), int(y1)), tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
        covered = (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)
        is_visible[covered] = 0
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), 0)

    inside = (pts[:, 0] >= 0) & (pts[:, 0] <= size - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= size - 1)
    is_visible[~inside] = 0
    # head rectangle: head_len long, as wide as tall -> 0.6 * diagonal like MPII's normaliser
    head_size = 0.6 * math.sqrt(2.0) * head_l
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    person_scale = max(hi[1] - lo[1], hi[0] - lo[0]) / 200.0
    objpos = 0.5 * (lo + hi)
    objpos[1] -= 15 * person_scale  # store like MPII: the loader convention re-adds the shift
    return img, {"joints": pts, "annotated": inside, "is_visible": is_visible, "objpos": objpos,
                 "scale": person_scale, "head_size": head_size}


class SyntheticMPII:
    """`n` rendered figures: `source[i] -> Sample` (as an MPII record would give), deterministic in (seed, i)."""

    def __init__(self, n: int = 1000, *, seed: int = 0, image_size: int = 256):
        if n < 1:
            raise ValueError(f"synthetic dataset size must be >= 1, got {n}")
        self.n, self.seed, self.image_size = int(n), int(seed), int(image_size)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < self.n:
            raise IndexError(f"synthetic MPII index {i} out of range [0, {self.n})")
        rng = np.random.default_rng([self.seed, int(i)])
        img, ann = render_figure(rng, self.image_size)
        center = ann["objpos"].copy()
        center[1] += 15 * ann["scale"]
        rec = MPIIRecord(image=f"synthetic_{self.seed}_{i:06d}.png", center=center, scale=ann["scale"] * SCALE_PAD,
                         joints=np.where(ann["annotated"][:, None], ann["joints"], 0.0),
                         annotated=ann["annotated"].astype(bool), is_visible=ann["is_visible"],
                         head_size=float(ann["head_size"]), index=i, person=0, source=f"synthetic:{i}")
        return record_to_sample(rec, image=img)
