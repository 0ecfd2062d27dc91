"""Synthetic five-keypoint figures ("figure5"): the no-download data of the generic keypoints family.

Each image holds 1..`max_people` stick figures (head, two hands, two feet) on a noisy
background; left limbs are blue and right limbs orange, so left and right can be told apart
after a mirror (a flip with the skeleton's pairs keeps "left = blue"). Figures are rotated and
mirrored at random, so a model must read the colours, not the position.

`SyntheticFigures` yields COCO-reader-like `Sample`s in memory (all people of an image, boxes,
meta image_id/width/height/areas); `write_coco` writes the same figures as JPEGs plus a COCO
keypoint file, the layout a user's own dataset has (see docs/guide.md).
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from posekit.data.sample import Sample
from posekit.skeletons import Skeleton, register_skeleton

__all__ = ["FIGURE5", "SyntheticFigures", "write_coco"]

FIGURE5 = register_skeleton(Skeleton(
    name="figure5",
    keypoints=("head", "left_hand", "right_hand", "left_foot", "right_foot"),
    flip_pairs=((1, 2), (3, 4)),
    limbs=((0, 1), (0, 2), (0, 3), (0, 4)),
    sigmas=(0.05, 0.07, 0.07, 0.08, 0.08),
    colors=((255, 255, 255), (60, 160, 255), (255, 120, 60), (60, 160, 255), (255, 120, 60)),
))

LEFT, RIGHT, BODY = (60, 160, 255), (255, 120, 60), (200, 200, 200)


def _rotate(points: np.ndarray, center: np.ndarray, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return (points - center) @ rot.T + center


class SyntheticFigures:
    """`n` images of `image_size` (square) pixels; image i depends only on (seed, i)."""

    def __init__(self, n: int, *, seed: int = 0, image_size: int = 160, min_people: int = 1, max_people: int = 3):
        if n < 1 or not 1 <= min_people <= max_people:
            raise ValueError(f"SyntheticFigures needs n >= 1 and 1 <= min_people <= max_people, got n={n}, "
                             f"people {min_people}..{max_people}")
        self.n, self.seed, self.image_size = int(n), int(seed), int(image_size)
        self.min_people, self.max_people = int(min_people), int(max_people)
        self.skeleton = FIGURE5

    def __len__(self) -> int:
        return self.n

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(i)])

    def _layout(self, rng: np.random.Generator) -> list[dict]:
        """Figures as joint positions (head, shoulder, hip, hands, feet) in image pixels."""
        s = self.image_size
        figures = []
        for _ in range(int(rng.integers(self.min_people, self.max_people + 1))):
            height = rng.uniform(0.35, 0.65) * s
            center = rng.uniform(0.25 * s, 0.75 * s, size=2)
            shoulder = center + [0.0, -0.18 * height]
            hip = center + [0.0, 0.12 * height]
            head = center + [0.0, -0.36 * height]
            arms = rng.uniform(-60, 60, size=2)  # degrees from horizontal, per side
            legs = rng.uniform(5, 40, size=2)  # degrees from vertical, outwards
            arm, leg = 0.32 * height, 0.36 * height
            left_hand = shoulder + arm * np.array([np.cos(np.deg2rad(arms[0])), np.sin(np.deg2rad(arms[0]))])
            right_hand = shoulder + arm * np.array([-np.cos(np.deg2rad(arms[1])), np.sin(np.deg2rad(arms[1]))])
            left_foot = hip + leg * np.array([np.sin(np.deg2rad(legs[0])), np.cos(np.deg2rad(legs[0]))])
            right_foot = hip + leg * np.array([-np.sin(np.deg2rad(legs[1])), np.cos(np.deg2rad(legs[1]))])
            pts = np.stack([head, left_hand, right_hand, left_foot, right_foot, shoulder, hip])
            if rng.random() < 0.5:  # seen from the back: the left side is on the image's left
                pts[:, 0] = 2 * center[0] - pts[:, 0]
            pts = _rotate(pts, center, rng.uniform(-30, 30))
            figures.append({"points": pts, "head_radius": 0.07 * height, "width": max(2, int(0.05 * height))})
        return figures

    def _annotate(self, figures: list[dict], index: int) -> Sample:
        s = self.image_size
        kps, boxes = [], []
        for f in figures:
            xy = f["points"][:5]
            inside = (xy >= 0).all(1) & (xy <= s - 1).all(1)
            kps.append(np.concatenate([np.where(inside[:, None], xy, 0.0), 2.0 * inside[:, None]], axis=1))
            r = f["head_radius"] + f["width"]
            lo = np.clip(f["points"].min(0) - r, 0, s - 1)
            hi = np.clip(f["points"].max(0) + r, 0, s - 1)
            boxes.append([lo[0], lo[1], max(hi[0] - lo[0], 1.0), max(hi[1] - lo[1], 1.0)])
        boxes = np.asarray(boxes, dtype=np.float64)
        meta = {"image_id": index + 1, "file_name": f"{index + 1:06d}.jpg", "width": s, "height": s,
                "areas": boxes[:, 2] * boxes[:, 3], "ann_ids": [index * 100 + p + 1 for p in range(len(boxes))]}
        return Sample(keypoints=np.stack(kps), boxes=boxes, meta=meta)

    def peek(self, i: int) -> Sample:
        """Annotations of image i without rendering it (cheap: builds the per-person index)."""
        if not 0 <= i < self.n:
            raise IndexError(f"figure image {i} out of range (0..{self.n - 1})")
        rng = self._rng(i)
        self._background_colours(rng)  # the same draws as rendering, so the layout matches
        return self._annotate(self._layout(rng), i)

    @staticmethod
    def _background_colours(rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(40, 140, size=(6, 6, 3)).astype(np.float32)

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < self.n:
            raise IndexError(f"figure image {i} out of range (0..{self.n - 1})")
        rng = self._rng(i)
        s = self.image_size
        canvas = cv2.resize(self._background_colours(rng), (s, s), interpolation=cv2.INTER_CUBIC)
        figures = self._layout(rng)
        sample = self._annotate(figures, i)
        canvas += rng.normal(0, 6, size=canvas.shape).astype(np.float32)  # drawn after the layout
        image = np.clip(canvas, 0, 255).astype(np.uint8)
        for f in figures:
            p = np.round(f["points"]).astype(int)
            head, lh, rh, lf, rf, sh, hip = (tuple(int(v) for v in q) for q in p)
            w = f["width"]
            cv2.line(image, sh, hip, BODY, w + 1, cv2.LINE_AA)
            cv2.line(image, sh, head, BODY, w, cv2.LINE_AA)
            cv2.line(image, sh, lh, LEFT, w, cv2.LINE_AA)
            cv2.line(image, hip, lf, LEFT, w, cv2.LINE_AA)
            cv2.line(image, sh, rh, RIGHT, w, cv2.LINE_AA)
            cv2.line(image, hip, rf, RIGHT, w, cv2.LINE_AA)
            cv2.circle(image, head, max(2, int(round(f["head_radius"]))), (245, 245, 245), -1, cv2.LINE_AA)
        sample.image = image
        return sample


def write_coco(out_dir: str | Path, n: int, *, seed: int = 0, image_size: int = 160,
               ann_name: str = "annotations.json", images: str = "images") -> Path:
    """Write `n` figure images to `out_dir/<images>/` and their COCO keypoint file to
    `out_dir/<ann_name>` (category "figure", 1-based `skeleton` as in COCO); returns the file."""
    from posekit.data.io import write_image

    out_dir = Path(out_dir)
    figures = SyntheticFigures(n, seed=seed, image_size=image_size)
    records, annotations = [], []
    for i in range(n):
        s = figures[i]
        write_image(out_dir / images / s.meta["file_name"], s.image)
        records.append({"id": s.meta["image_id"], "file_name": s.meta["file_name"], "width": image_size,
                       "height": image_size})
        for p in range(s.num_people):
            kp = s.keypoints[p]
            annotations.append({"id": s.meta["ann_ids"][p], "image_id": s.meta["image_id"], "category_id": 1,
                                "bbox": [round(float(v), 2) for v in s.boxes[p]],
                                "area": round(float(s.meta["areas"][p]), 2), "iscrowd": 0,
                                "num_keypoints": int((kp[:, 2] > 0).sum()),
                                "keypoints": [round(float(v), 2) for v in kp.reshape(-1)]})
    category = {"id": 1, "name": "figure", "supercategory": "figure", "keypoints": list(FIGURE5.keypoints),
                "skeleton": [[a + 1, b + 1] for a, b in FIGURE5.limbs]}
    path = out_dir / ann_name
    path.write_text(json.dumps({"images": records, "annotations": annotations, "categories": [category]}))
    return path
