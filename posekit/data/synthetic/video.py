"""Synthetic videos for tracking: stick figures (the multi-person generator's) walk across a
static background, cross each other and pass behind a pillar, with ground-truth ids.

Frame t is a pure function of (seed, t). Each person walks on a straight line at a constant
speed with a periodic gait (arms and legs swing), drawn with `multiperson._figure` and
`_draw_figure`, so a model trained on the multi-person images sees the same figures. Nearer
people (larger baseline y) are drawn over farther ones; a joint covered by another person gets
v = 1, a joint behind the pillar or outside the frame v = 0 (a fully hidden person is absent
from that frame's ground truth, as an annotator would leave them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

from posekit.data.sample import Sample
from posekit.data.synthetic.multiperson import SyntheticMultiPerson, _draw_figure, _figure, _figure_polygons

__all__ = ["SyntheticVideo", "Walker"]

PILLAR_LABEL = 255


@dataclass
class Walker:
    """One person's path: pelvis at (x0 + vx t, y) px, `height` px, gait phase offset (rad)."""
    x0: float
    y: float
    vx: float
    height: float
    phase: float
    track_id: int


class _GaitDraws:
    """Stands in for the generator `_figure` draws from: the ten numbers that set lean, facing
    and the four joint angles per side, here a smooth function of time (a walking cycle)."""

    def __init__(self, phase: float):
        s, c = math.sin(phase), math.sin(phase + math.pi)
        self.values = np.array([0.5, 0.0,                               # upright, facing the viewer
                                0.15 + 0.07 * c, 0.30 + 0.05 * c, 0.35 + 0.25 * s, 0.55 + 0.10 * s,  # left
                                0.15 + 0.07 * s, 0.30 + 0.05 * s, 0.35 + 0.25 * c, 0.55 + 0.10 * c])  # right

    def random(self, n: int) -> np.ndarray:
        return self.values[:n].copy()


class SyntheticVideo:
    """`n_frames` frames (``len``, ``[t] -> Sample`` with ``meta["track_ids"]``), RGB uint8.

    people: walkers; the first two walk toward each other on nearby lines and cross at mid-video
    (`crossing=True`), the rest walk in random directions. pillar_frames: when > 0, a pillar
    stands where the third walker (or the first, with fewer people) is at mid-video, wide enough
    to hide them completely for about that many frames. gait_period: frames per walking cycle."""

    def __init__(self, n_frames: int = 60, *, seed: int = 0, image_size=(320, 240), people: int = 3,
                 crossing: bool = True, pillar_frames: int = 0, speed: float = 3.0, gait_period: float = 30.0,
                 height_range=(0.45, 0.6)):
        if n_frames < 0 or people < 1:
            raise ValueError(f"SyntheticVideo needs n_frames >= 0 and people >= 1, got {n_frames}, {people}")
        self.n, self.seed = int(n_frames), int(seed)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.gait_period = float(gait_period)
        self.skeleton = "coco17"
        w, h = self.image_size
        rng = np.random.default_rng([self.seed, 7])
        mid = (self.n - 1) / 2
        walkers = []
        for i in range(people):
            height = rng.uniform(*height_range) * h
            if crossing and i < 2:
                direction = 1.0 if i == 0 else -1.0
                vx = direction * speed
                y = h * (0.62 + 0.06 * i)  # the second is nearer: drawn over the first as they cross
                x0 = w / 2 - vx * mid + rng.uniform(-4, 4)
            else:
                direction = 1.0 if rng.random() < 0.5 else -1.0
                vx = direction * speed * rng.uniform(0.7, 1.2)
                y = h * rng.uniform(0.55, 0.75)
                x0 = rng.uniform(0.2, 0.8) * w - vx * mid
            walkers.append(Walker(x0, y, vx, height, rng.uniform(0, 2 * math.pi), i))
        self.walkers = walkers
        self.pillar: tuple[int, int] | None = None  # x range [x0, x1)
        if pillar_frames > 0:
            target = walkers[2] if people > 2 else walkers[0]
            t_mid = int(round(mid))
            joints_x = self._figure(target, t_mid)["joints"][:, 0]  # hidden = every joint behind it
            width = np.ptp(joints_x) + abs(target.vx) * (pillar_frames + 1)
            cx = (joints_x.min() + joints_x.max()) / 2
            self.pillar = (int(math.floor(cx - width / 2)), int(math.ceil(cx + width / 2)))
        self._background = SyntheticMultiPerson(0, seed=self.seed, image_size=self.image_size)._background(
            np.random.default_rng([self.seed, 8]))

    def __len__(self) -> int:
        return self.n

    def _figure(self, walker: Walker, t: int) -> dict:
        phase = walker.phase + 2 * math.pi * t / self.gait_period
        return _figure(_GaitDraws(phase), (walker.x0 + walker.vx * t, walker.y), walker.height)

    def __getitem__(self, t: int) -> Sample:
        t = int(t)
        if t < 0:
            t += self.n
        if not 0 <= t < self.n:
            raise IndexError(f"frame {t} out of range for {self.n} frames")
        w, h = self.image_size
        image = self._background.copy()
        labels = np.zeros((h, w), np.uint8)
        order = sorted(range(len(self.walkers)), key=lambda i: self.walkers[i].y)  # far first
        figures = {i: self._figure(self.walkers[i], t) for i in order}
        for i in order:
            _draw_figure(image, figures[i])
            _draw_figure(labels, figures[i], label_value=i + 1)
        if self.pillar is not None:
            x0, x1 = max(self.pillar[0], 0), min(self.pillar[1], w)
            if x1 > x0:
                image[:, x0:x1] = (118, 112, 104)
                image[:, x0:min(x0 + 2, x1)] = (80, 76, 70)
                image[:, max(x1 - 2, x0):x1] = (80, 76, 70)
                labels[:, x0:x1] = PILLAR_LABEL
        keypoints, boxes, ids = [], [], []
        for i in range(len(self.walkers)):
            xy = figures[i]["joints"]
            ix, iy = np.round(xy[:, 0]).astype(int), np.round(xy[:, 1]).astype(int)
            inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
            under = np.zeros(17, np.uint8)
            under[inside] = labels[iy[inside], ix[inside]]
            labelled = inside & (under != PILLAR_LABEL)
            if not labelled.any():
                continue  # gone behind the pillar or out of the frame
            kp = np.zeros((17, 3))
            kp[labelled, :2] = xy[labelled]
            kp[labelled, 2] = np.where(under[labelled] == i + 1, 2.0, 1.0)
            rle = mask_utils.merge(mask_utils.frPyObjects(_figure_polygons(figures[i]), h, w))
            keypoints.append(kp)
            boxes.append(mask_utils.toBbox(rle).astype(np.float64))
            ids.append(self.walkers[i].track_id)
        meta = {"frame": t, "track_ids": np.asarray(ids, dtype=np.int64), "width": w, "height": h,
                "areas": np.asarray([b[2] * b[3] for b in boxes], dtype=np.float64),
                "dataset": "synthetic_video"}
        return Sample(keypoints=np.stack(keypoints) if keypoints else np.zeros((0, 17, 3)), image=image,
                      boxes=np.stack(boxes) if boxes else np.zeros((0, 4)), meta=meta)

    def frames(self):
        """The RGB frames in order (one at a time)."""
        for t in range(self.n):
            yield self[t].image

    def write(self, path, fps: float = 25.0, fourcc: str | None = None):
        """Write the video to `path` (an .mp4 through posekit.data.video.VideoWriter)."""
        from posekit.data.video import VideoWriter
        with VideoWriter(path, fps=fps, fourcc=fourcc) as writer:
            for image in self.frames():
                writer.write(image)
        return path
