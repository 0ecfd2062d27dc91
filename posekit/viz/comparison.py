"""Ground truth beside a prediction on one whole image, every person drawn in its own colour."""
from __future__ import annotations

import numpy as np

from posekit.skeletons import Skeleton
from posekit.viz.overlay import draw_skeleton
from posekit.viz.panels import caption, side_by_side, upscale


def truth_and_prediction(image: np.ndarray, truth: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                         skeleton: Skeleton, *, truth_boxes=None, boxes=None, person_scores=None,
                         captions: tuple[str, str] = ("ground truth", "prediction"), score_threshold: float = 0.05,
                         min_height: int = 384, interpolation: str = "linear", color_by_person: bool | None = True,
                         gap: int | None = 6) -> np.ndarray:
    """"ground truth | prediction" panels of one image: `truth` (P, K, 3) shows its labelled
    points (visibility > 0), the prediction `keypoints` (Q, K, 2) its joints scoring above
    `score_threshold`, with `person_scores` on their boxes. The image is first upscaled
    (`interpolation`: linear for a whole frame, nearest to keep a tiny crop's pixels honest) to
    `min_height` px, then drawn on, so a small frame stays judgeable and its lines stay sharp;
    coordinates follow the pixel-centre convention. `color_by_person`: one colour per person
    (False: left/right colours; None: `draw_skeleton`'s choice by the number of people); `gap`: white pixels between the panels (None: 1/60 of a panel's
    width, at least 6, so a large picture's panels stay visibly apart)."""
    big = upscale(image, min_height, interpolation=interpolation)
    f = np.array([big.shape[1] / image.shape[1], big.shape[0] / image.shape[0]])  # x, y: the width is rounded

    def scaled(xy):
        return (np.asarray(xy, dtype=np.float64)[..., :2] + 0.5) * f - 0.5

    def scaled_boxes(b):
        return None if b is None else np.asarray(b, dtype=np.float64)[..., :4] * np.tile(f, 2)

    truth = np.asarray(truth, dtype=np.float64)
    left = draw_skeleton(big, scaled(truth[..., :2]), (truth[..., 2] > 0).astype(float), skeleton,
                         score_threshold=0.5, boxes=scaled_boxes(truth_boxes), color_by_person=color_by_person)
    right = draw_skeleton(big, scaled(keypoints), scores, skeleton, score_threshold=score_threshold,
                          boxes=scaled_boxes(boxes), person_scores=person_scores, color_by_person=color_by_person)
    left, right = caption(left, captions[0]), caption(right, captions[1])
    return side_by_side([left, right], gap=max(6, left.shape[1] // 60) if gap is None else gap)
