"""Colours: one per person or track id, left/right sides from the skeleton, and the faded
tone of a person under the person threshold (shared by the 2-D overlays and the 3-D plots)."""
from __future__ import annotations

import colorsys

import numpy as np

from posekit.skeletons import Skeleton

LEFT_RGB = (40, 120, 230)  # blue
RIGHT_RGB = (230, 70, 40)  # red
CENTRE_RGB = (90, 90, 90)


def person_color(i: int) -> tuple[int, int, int]:
    """RGB of person (or track id) `i`: golden-ratio hues, so neighbours in order differ most and
    the same id keeps its colour from frame to frame."""
    r, g, b = colorsys.hsv_to_rgb((0.13 + int(i) * 0.618034) % 1.0, 0.9, 1.0)
    return int(255 * r), int(255 * g), int(255 * b)


def person_colors(n: int) -> np.ndarray:
    """(n, 3) uint8 RGB, distinct per person (golden-ratio hues, saturated, bright)."""
    return np.array([person_color(i) for i in range(n)], dtype=np.uint8).reshape(n, 3)


LOW_SCORE_GREY = 110  # a person under the person threshold: its colour mixed half-way to this grey
LOW_SCORE_LABEL_RGB = (128, 128, 128)


def _faded(color) -> tuple[int, int, int]:
    """A person colour half-way to mid grey: still tells people apart, reads as "not sure" on light
    and dark images alike (transparency vanished on snow)."""
    return tuple(int(round((c + LOW_SCORE_GREY) / 2)) for c in color)


def joint_sides(skeleton: Skeleton) -> np.ndarray:
    """(K,) -1 left, +1 right, 0 centre: from the names ("left_hip", "r_eye"), then flip pairs
    (a joint paired with a named one takes the other side; an unnamed pair is (left, right))."""
    side = np.zeros(skeleton.num_keypoints, dtype=np.int64)
    for j, name in enumerate(skeleton.keypoints):
        low = name.lower()
        if low.startswith(("left", "l_")) or "_left" in low:
            side[j] = -1
        elif low.startswith(("right", "r_")) or "_right" in low:
            side[j] = 1
    for a, b in skeleton.flip_pairs:
        if side[a] == 0 and side[b] == 0:
            side[a], side[b] = -1, 1
        elif side[a] == 0:
            side[a] = -side[b]
        elif side[b] == 0:
            side[b] = -side[a]
    return side


def limb_sides(skeleton: Skeleton) -> list[int]:
    """Per limb: -1 left, +1 right, 0 centre (a limb touching one side and the centre takes the side)."""
    side = joint_sides(skeleton)
    out = []
    for a, b in skeleton.limbs:
        s = {int(side[a]), int(side[b])} - {0}
        out.append(s.pop() if len(s) == 1 else 0)
    return out


def _side_color(s: int) -> tuple[float, float, float]:
    rgb = LEFT_RGB if s < 0 else RIGHT_RGB if s > 0 else CENTRE_RGB
    return tuple(c / 255.0 for c in rgb)
