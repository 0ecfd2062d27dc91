"""Synthetic multi-person images with exact COCO-17 ground truth, for bottom-up (OpenPose) smoke training.

Each image holds several stick figures on a grey, low-saturation background. Every limb type has
its own saturated colour (left and right differ), the head is a disc with coloured eye, ear and nose
dots, so a small CNN can learn both parts and limbs. Figures vary in scale, lean, facing and joint
angles, overlap one another (a covered keypoint gets v = 1), leave the frame (v = 0 at (0, 0), as
COCO annotators do) and occasionally lose a label at random.

Annotations are carried exactly like a real COCO file read by `posekit.data.formats.coco`:
``meta["segments"]`` has one polygon segmentation per person plus, sometimes, one ``iscrowd``
polygon around a cluster of small unlabelled figures; sometimes a tiny person (area <= 32^2) or a
person with fewer than 5 labelled keypoints is added. `ignore_mask` therefore masks them through
the same code path as COCO crowds.

Item i is a pure function of (seed, i): layout and pixels use their own numpy Generators seeded from
both, so indices can be read in any order, by any DataLoader worker.
"""
from __future__ import annotations

import colorsys
import math

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from posekit.data.sample import Sample

__all__ = ["BODY_LIMBS", "FACE_COLORS", "HEAD_COLOR", "NECK_COLOR", "PALETTE", "SyntheticMultiPerson"]

# COCO-17 limbs drawn as lines, each with its own colour
BODY_LIMBS = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
              (7, 9), (8, 10))


def _palette(n: int) -> list[tuple[int, int, int]]:
    # saturated hues, alternating brightness, so neighbours in hue still differ (all have max-min >= 150)
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb(i / n, 1.0, 1.0 if i % 2 == 0 else 0.7)
        out.append((int(round(255 * r)), int(round(255 * g)), int(round(255 * b))))
    return out


PALETTE = tuple(_palette(len(BODY_LIMBS) + 7))
LIMB_COLORS = PALETTE[:len(BODY_LIMBS)]
NECK_COLOR, HEAD_COLOR = PALETTE[len(BODY_LIMBS)], PALETTE[len(BODY_LIMBS) + 1]
FACE_COLORS = PALETTE[len(BODY_LIMBS) + 2:]  # nose, left eye, right eye, left ear, right ear
_BG_SPREAD = 40  # background channels differ by at most this, palette colours by >= 150


def _figure(rng: np.random.Generator, center, height: float) -> dict:
    """COCO-17 joints of one stick figure (pelvis at `center`) plus what drawing and masking need.
    Scalar math on purpose: a figure costs ~20 us this way, against ~100 us with tiny numpy arrays."""
    r = rng.random(10)  # one draw for every random choice: lean, facing, 4 angles per side
    lean = math.radians((r[0] - 0.5) * 30.0)
    ux, uy = math.sin(lean), -math.cos(lean)  # body up
    facing = 1.0 if r[1] < 0.75 else -1.0  # facing the viewer: the person's left is image right
    lx, ly = math.cos(lean) * facing, math.sin(lean) * facing  # towards the person's left
    h = float(height)
    px, py = float(center[0]), float(center[1])
    nx, ny = px + ux * 0.30 * h, py + uy * 0.30 * h  # neck
    hx, hy = nx + ux * 0.11 * h, ny + uy * 0.11 * h  # head centre
    k = [(0.0, 0.0)] * 17
    k[0] = (hx - ux * 0.015 * h, hy - uy * 0.015 * h)
    for j, sgn in ((1, 1.0), (2, -1.0)):
        k[j] = (hx + ux * 0.025 * h + sgn * lx * 0.03 * h, hy + uy * 0.025 * h + sgn * ly * 0.03 * h)
    k[3], k[4] = (hx + lx * 0.06 * h, hy + ly * 0.06 * h), (hx - lx * 0.06 * h, hy - ly * 0.06 * h)

    def limb(x, y, deg, side, length):
        # the body's down direction rotated by `deg` degrees towards this side's outside
        t = math.radians(deg)
        c, s = math.cos(t), math.sin(t)
        return x + (-ux * c + lx * side * s) * length, y + (-uy * c + ly * side * s) * length

    for side, (sh, el, wr, hp, kn, an), o in ((1.0, (5, 7, 9, 11, 13, 15), 2), (-1.0, (6, 8, 10, 12, 14, 16), 6)):
        k[sh] = (nx + lx * side * 0.13 * h, ny + ly * side * 0.13 * h)
        a1 = -20.0 + 180.0 * r[o]
        k[el] = limb(*k[sh], a1, side, 0.17 * h)
        k[wr] = limb(*k[el], a1 - 30.0 + 160.0 * r[o + 1], side, 0.15 * h)
        k[hp] = (px + lx * side * 0.09 * h, py + ly * side * 0.09 * h)
        a2 = -12.0 + 57.0 * r[o + 2]
        k[kn] = limb(*k[hp], a2, side, 0.24 * h)
        k[an] = limb(*k[kn], a2 - 50.0 + 75.0 * r[o + 3], side, 0.24 * h)
    return {"joints": np.array(k), "neck": np.array([nx, ny]), "head": np.array([hx, hy]),
            "head_r": 0.075 * h, "height": h, "thick": max(1, int(round(0.035 * h)))}


_LIMB_A = np.array([a for a, _ in BODY_LIMBS])
_LIMB_B = np.array([b for _, b in BODY_LIMBS])
_NGON = np.stack([np.cos(np.linspace(0.0, 2 * np.pi, 12, endpoint=False)),
                  np.sin(np.linspace(0.0, 2 * np.pi, 12, endpoint=False))], 1)


def _figure_polygons(fig: dict) -> list[list[float]]:
    """A body-shaped segmentation (limb quads, neck, head 12-gon): wider than the drawn lines, as a
    real person's outline is."""
    k, h = fig["joints"], fig["height"]
    half = max(0.05 * h, fig["thick"] / 2 + 1.0)
    a = np.concatenate([k[_LIMB_A], fig["neck"][None]])
    b = np.concatenate([k[_LIMB_B], fig["head"][None]])
    d = b - a
    n = np.hypot(d[:, 0], d[:, 1])[:, None]
    d = np.where(n > 1e-9, d / np.maximum(n, 1e-9), np.array([1.0, 0.0]))
    p = np.stack([-d[:, 1], d[:, 0]], 1) * half
    a, b = a - d * half, b + d * half
    quads = np.stack([a + p, b + p, b - p, a - p], 1).reshape(len(a), 8)
    polys = quads.tolist()
    polys.append((fig["head"] + _NGON * (fig["head_r"] + 1.0)).ravel().tolist())
    return polys


def _draw_figure(canvas, fig: dict, *, label_value=None) -> None:
    """Draw on an RGB image (a colour per part) or on a label map (one value); identical geometry."""
    sh = 4  # sub-pixel drawing: coordinates in 1/16 px
    k = np.round(fig["joints"] * 16).astype(np.int64).tolist()
    t = fig["thick"] + 1
    neck = tuple(np.round(fig["neck"] * 16).astype(np.int64).tolist())
    head = tuple(np.round(fig["head"] * 16).astype(np.int64).tolist())
    lab = label_value
    for (a, b), c in zip(BODY_LIMBS, LIMB_COLORS, strict=True):
        cv2.line(canvas, k[a], k[b], c if lab is None else lab, t, cv2.LINE_8, sh)
    cv2.line(canvas, neck, head, NECK_COLOR if lab is None else lab, t, cv2.LINE_8, sh)
    cv2.circle(canvas, head, int(round(fig["head_r"] * 16)), HEAD_COLOR if lab is None else lab, -1, cv2.LINE_8, sh)
    dot = int(round(max(1.0, 0.018 * fig["height"]) * 16))
    for j, c in enumerate(FACE_COLORS):
        cv2.circle(canvas, k[j], dot, c if lab is None else lab, -1, cv2.LINE_8, sh)


class SyntheticMultiPerson:
    """`n` deterministic multi-person images (a named dataset: ``len``, ``[i] -> Sample``).

    image_size (W, H); min_people..max_people annotated figures; crowd_prob: chance of a crowd
    cluster (an iscrowd polygon over small unlabelled figures); small_prob: chance of one extra
    person that the OpenPose rule masks (tiny, or < 5 labelled keypoints); unlabelled_prob: chance
    that an in-image keypoint is left unlabelled (v = 0). `peek(i)` gives the annotations without
    the pixels (cheap; what a pipeline needs to filter its training list)."""

    def __init__(self, n: int, *, seed: int, image_size=(256, 256), min_people: int = 1, max_people: int = 6,
                 crowd_prob: float = 0.3, small_prob: float = 0.3, unlabelled_prob: float = 0.03,
                 height_range=(0.35, 0.9)):
        if n < 0 or min_people < 1 or max_people < min_people:
            raise ValueError(f"need n >= 0 and 1 <= min_people <= max_people, got {n}, {min_people}, {max_people}")
        self.n, self.seed = int(n), int(seed)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.min_people, self.max_people = int(min_people), int(max_people)
        self.crowd_prob, self.small_prob, self.unlabelled_prob = float(crowd_prob), float(small_prob), \
            float(unlabelled_prob)
        self.height_range = (float(height_range[0]), float(height_range[1]))
        self.skeleton = "coco17"

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Sample:
        return self._make(self._check(index), render=True)

    def peek(self, index: int) -> Sample:
        return self._make(self._check(index), render=False)

    def _check(self, index) -> int:
        index = int(index)
        if index < 0:
            index += self.n
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} items")
        return index

    # --- layout ----------------------------------------------------------------------------------

    def _layout(self, rng: np.random.Generator):
        w, h = self.image_size
        side = min(w, h)
        crowd = None
        if rng.random() < self.crowd_prob:
            c = np.array([rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h])
            ax = rng.uniform(0.10, 0.20, size=2) * side
            figs = []
            for _ in range(int(rng.integers(5, 12))):
                t = rng.uniform(0, 2 * np.pi)
                r = np.sqrt(rng.uniform(0, 0.6))
                p = c + np.array([np.cos(t) * ax[0], np.sin(t) * ax[1]]) * r
                figs.append(_figure(rng, p, rng.uniform(0.08, 0.14) * side))
            t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
            poly = np.stack([c[0] + ax[0] * np.cos(t), c[1] + ax[1] * np.sin(t)], 1).ravel()
            crowd = {"figures": figs, "polygon": [float(v) for v in poly]}

        people = []  # (figure, kind); the first drawn is large and inside, so most images are usable
        for j in range(int(rng.integers(self.min_people, self.max_people + 1))):
            ht = rng.uniform(*self.height_range) * side
            if j == 0:
                ht = max(ht, 0.45 * side)
                ctr = np.array([rng.uniform(0.3, 0.7) * w, rng.uniform(0.45, 0.6) * h])
            else:
                ctr = np.array([rng.uniform(-0.05, 1.05) * w, rng.uniform(0.1, 1.0) * h])
            people.append((_figure(rng, ctr, ht), "person"))
        if rng.random() < self.small_prob:
            if rng.random() < 0.5:
                ctr = np.array([rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h])
                people.insert(0, (_figure(rng, ctr, rng.uniform(10.0, 22.0)), "tiny"))
            else:
                ctr = np.array([rng.uniform(0.1, 0.9) * w, rng.uniform(0.3, 0.8) * h])
                people.insert(0, (_figure(rng, ctr, rng.uniform(0.3, 0.5) * side), "few"))
        order = rng.permutation(len(people))  # depth order (drawing order) varies
        return crowd, [people[i] for i in order]

    def _make(self, index: int, *, render: bool) -> Sample:
        w, h = self.image_size
        rng = np.random.default_rng([self.seed, index, 0])
        crowd, people = self._layout(rng)

        labels = np.zeros((h, w), np.uint8)  # topmost annotated figure per pixel (1-based), for v = 1 vs 2
        image = self._background(np.random.default_rng([self.seed, index, 1])) if render else None
        if crowd is not None and render:
            for fig in crowd["figures"]:
                _draw_figure(image, fig)
        for p, (fig, _) in enumerate(people):
            if render:
                _draw_figure(image, fig)
            _draw_figure(labels, fig, label_value=p + 1)

        keypoints, boxes, areas, nks, ann_ids, segments = [], [], [], [], [], []
        for p, (fig, kind) in enumerate(people):
            polys = _figure_polygons(fig)
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
            area = float(mask_utils.area(rle))
            if area <= 0:
                continue  # entirely outside the frame
            kp = np.zeros((17, 3))
            xy = fig["joints"]
            ix, iy = np.round(xy[:, 0]).astype(int), np.round(xy[:, 1]).astype(int)
            inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
            labelled = inside & (rng.random(17) >= self.unlabelled_prob)
            if kind == "few":
                keep = rng.permutation(np.flatnonzero(labelled))[:int(rng.integers(1, 5))]
                labelled = np.isin(np.arange(17), keep)
            own = np.zeros(17, bool)
            own[inside] = labels[iy[inside], ix[inside]] == p + 1
            kp[labelled, :2] = xy[labelled]
            kp[labelled, 2] = np.where(own[labelled], 2.0, 1.0)
            row = len(keypoints)
            ann_id = index * 1000 + p + 1
            keypoints.append(kp)
            boxes.append(mask_utils.toBbox(rle).astype(np.float64))
            areas.append(area)
            nks.append(int(np.count_nonzero(labelled)))
            ann_ids.append(ann_id)
            segments.append({"id": ann_id, "segmentation": polys, "iscrowd": False, "num_keypoints": nks[-1],
                             "area": area, "bbox": boxes[-1].tolist(), "person": row})
        if crowd is not None:
            rle = mask_utils.merge(mask_utils.frPyObjects([crowd["polygon"]], h, w))
            segments.append({"id": index * 1000 + 999, "segmentation": [crowd["polygon"]], "iscrowd": True,
                             "num_keypoints": 0, "area": float(mask_utils.area(rle)),
                             "bbox": mask_utils.toBbox(rle).tolist(), "person": -1})
        meta = {"image_id": index, "width": w, "height": h, "areas": np.asarray(areas, dtype=np.float64),
                "num_keypoints": np.asarray(nks, dtype=np.int64), "ann_ids": ann_ids, "segments": segments,
                "crowd": [s for s in segments if s["iscrowd"]], "dataset": "synthetic_multiperson"}
        return Sample(keypoints=np.stack(keypoints) if keypoints else np.zeros((0, 17, 3)), image=image,
                      boxes=np.stack(boxes) if boxes else np.zeros((0, 4)), meta=meta)

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """Smooth grey blobs with a faint constant tint (channel spread < _BG_SPREAD) and grey strokes."""
        w, h = self.image_size
        low = rng.normal(rng.uniform(70, 190), 25.0, size=(6, 6, 1))
        tint = rng.uniform(-_BG_SPREAD / 2 + 2, _BG_SPREAD / 2 - 2, size=3)
        img = cv2.resize(np.clip(low + tint, 0, 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
        for _ in range(int(rng.integers(0, 4))):
            p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            v = int(rng.integers(30, 225))
            cv2.line(img, p1, p2, (v, v, v), int(rng.integers(1, 6)), cv2.LINE_8)
        return img
