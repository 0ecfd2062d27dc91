"""Synthetic deformable objects with exact ground-truth landmarks: cartoon faces.

Each face is drawn as polygons in a canonical "face unit" frame (head ellipse 0.75 x 1.0,
eyes at (+-0.33, -0.2), nose, lips with dark corner marks), varied per face (yaw shift of the
features, eye size, mouth width and smile), then every vertex and every landmark goes through
the same forward map: a smooth sinusoidal deformation in face units followed by a random
similarity into pixels. Because the polygons are deformed before rasterisation, the landmarks
are exact (no inverse warp to approximate) and land inside their drawn features.

Landmarks follow `mafl5`: lefteye, righteye (iris centres; "left" = image-left), nose (inside
the nose), leftmouth, rightmouth (centres of the corner marks). Backgrounds are smooth colour
noise with a few random rectangles, so a landmark detector cannot just find the image centre.

Sample i is a pure function of (seed, i): `np.random.default_rng((seed, i))`.
"""
from __future__ import annotations

import cv2
import numpy as np

from posekit.data.sample import Sample

__all__ = ["SyntheticFaces", "PART_IDS"]

PART_IDS = {"background": 0, "hair": 1, "head": 2, "eye_white": 3, "iris": 4, "nose": 5, "lips": 6,
            "mouth_corner": 7}
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel polygon vertices
_ONE = 1 << _SHIFT


def _ellipse(cx: float, cy: float, ax: float, ay: float, n: int) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], -1)


def _subdivide(poly: np.ndarray, per_edge: int) -> np.ndarray:
    nxt = np.roll(poly, -1, axis=0)
    t = np.arange(per_edge)[None, :, None] / per_edge
    return (poly[:, None] * (1 - t) + nxt[:, None] * t).reshape(-1, 2)


class SyntheticFaces:
    """`n` cartoon faces of `image_size`^2 pixels; `faces[i]` -> Sample with an RGB uint8 image and
    keypoints (1, 5, 3) (v = 2). `with_parts` adds meta["parts"], an (H, W) uint8 map of PART_IDS."""

    def __init__(self, n: int, *, seed: int = 0, image_size: int = 128, with_parts: bool = False,
                 deformation: float = 0.05, rotation: float = 0.35):
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {image_size}")
        self.n, self.seed, self.image_size = int(n), int(seed), int(image_size)
        self.with_parts = with_parts
        self.deformation = float(deformation)
        self.rotation = float(rotation)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Sample:
        if not -self.n <= index < self.n:
            raise IndexError(f"SyntheticFaces index {index} out of range for {self.n} faces")
        index = index % self.n
        rng = np.random.default_rng((self.seed, index))
        image, parts, keypoints = self._render(rng)
        meta = {"index": index, "image_id": f"synthetic_face_{self.seed}_{index:06d}", "dataset": "synthetic_faces"}
        if parts is not None:
            meta["parts"] = parts
        kps = np.concatenate([keypoints, np.full((5, 1), 2.0)], axis=1)[None]
        return Sample(keypoints=kps, image=image, meta=meta)

    # -- rendering ---------------------------------------------------------------------------------
    def _background(self, rng: np.random.Generator) -> np.ndarray:
        s = self.image_size
        coarse = rng.uniform(30, 225, size=(4, 4, 3)).astype(np.float32)
        image = cv2.resize(coarse, (s, s), interpolation=cv2.INTER_CUBIC)
        image += rng.normal(0, 6, size=(s, s, 1)).astype(np.float32)  # fine grain texture
        image = np.clip(image, 0, 255).astype(np.uint8)
        for _ in range(int(rng.integers(2, 5))):
            x0, y0 = rng.integers(0, s, 2)
            w, h = rng.integers(s // 10, s // 3, 2)
            cv2.rectangle(image, (int(x0), int(y0)), (int(x0 + w), int(y0 + h)),
                          tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
        return image

    def _forward_map(self, rng: np.random.Generator):
        """Face units -> pixels: smooth deformation, then similarity. Returns the map as a function."""
        s = self.image_size
        freq = rng.uniform(1.0, 2.2, size=(2, 2)) * rng.choice([-1, 1], size=(2, 2))
        phase = rng.uniform(0, 2 * np.pi, size=2)
        amp = rng.uniform(0.3, 1.0, size=2) * self.deformation
        theta = rng.uniform(-self.rotation, self.rotation)
        scale = s * rng.uniform(0.27, 0.34)
        centre = s / 2 - 0.5 + np.clip(rng.normal(0, 0.04 * s, 2), -0.08 * s, 0.08 * s)
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) * scale

        def forward(p: np.ndarray) -> np.ndarray:
            d = amp * np.sin(p @ freq.T + phase)  # (N, 2): x and y displacement, each a plane wave
            return (p + d) @ rot.T + centre

        return forward

    def _render(self, rng: np.random.Generator):
        s = self.image_size
        image = self._background(rng)
        parts = np.zeros((s, s), np.uint8) if self.with_parts else None
        forward = self._forward_map(rng)

        yaw = rng.uniform(-1, 1)
        eye_y = rng.uniform(-0.25, -0.15)
        eye_dx = rng.uniform(0.29, 0.36)
        eye_r = rng.uniform(0.11, 0.15)
        iris_r = eye_r * rng.uniform(0.5, 0.65)
        nose_len = rng.uniform(0.28, 0.4)
        mouth_y = rng.uniform(0.45, 0.55)
        mouth_w = rng.uniform(0.24, 0.34)
        smile = rng.uniform(-0.04, 0.08)
        lip_h = rng.uniform(0.06, 0.1)

        red = rng.uniform(140, 245)
        skin = np.array([red, red * rng.uniform(0.6, 0.85), red * rng.uniform(0.4, 0.65)])
        hair = rng.uniform(10, 90, 3)
        iris = rng.uniform(20, 110, 3)
        lips = np.array([rng.uniform(150, 210), rng.uniform(30, 70), rng.uniform(40, 80)])
        colours = {"hair": hair, "head": skin, "eye_white": np.full(3, 240.0), "iris": iris, "nose": skin * 0.72,
                   "lips": lips, "mouth_corner": lips * 0.35}

        ex = 0.15 * yaw
        eyes = np.array([[-eye_dx + ex, eye_y], [eye_dx + ex, eye_y]])
        nose_top = np.array([0.24 * yaw, eye_y + 0.1])
        nose_tip = np.array([0.24 * yaw, eye_y + 0.1 + nose_len])
        nose_poly = _subdivide(np.array([nose_top, nose_tip + [-0.1, 0.02], nose_tip + [0.1, 0.02]]), 4)
        mx = 0.18 * yaw
        corners = np.array([[mx - mouth_w, mouth_y - smile], [mx + mouth_w, mouth_y - smile]])
        t = np.linspace(0, np.pi, 16)
        upper = np.stack([mx - mouth_w * np.cos(t), mouth_y - smile + (smile - lip_h) * np.sin(t)], -1)
        lower = np.stack([mx + mouth_w * np.cos(t), mouth_y - smile + (smile + lip_h) * np.sin(t)], -1)
        # the nose landmark sits 3/4 of the way down the nose, inside its polygon
        keypoints_face = np.array([eyes[0], eyes[1], nose_top + 0.75 * (nose_tip - nose_top), corners[0],
                                   corners[1]])

        shapes = [("hair", _ellipse(0, -0.35, 0.82, 0.8, 48)),
                  ("head", _ellipse(0, 0, 0.75, 1.0, 64)),
                  ("eye_white", _ellipse(*eyes[0], eye_r * 1.35, eye_r, 24)),
                  ("eye_white", _ellipse(*eyes[1], eye_r * 1.35, eye_r, 24)),
                  ("iris", _ellipse(*eyes[0], iris_r, iris_r, 16)),
                  ("iris", _ellipse(*eyes[1], iris_r, iris_r, 16)),
                  ("nose", nose_poly),
                  ("lips", np.concatenate([upper, lower[1:-1]])),
                  ("mouth_corner", _ellipse(*corners[0], 0.045, 0.045, 12)),
                  ("mouth_corner", _ellipse(*corners[1], 0.045, 0.045, 12))]
        for name, poly in shapes:
            pts = np.round(forward(poly) * _ONE).astype(np.int32)[None]
            cv2.fillPoly(image, pts, tuple(float(c) for c in colours[name]), lineType=cv2.LINE_AA, shift=_SHIFT)
            if parts is not None:
                cv2.fillPoly(parts, pts, PART_IDS[name], lineType=cv2.LINE_8, shift=_SHIFT)
        return image, parts, forward(keypoints_face)
