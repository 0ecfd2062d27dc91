"""The dog family's (StanfordExtra-24 regressor) steps outside the graph, in numpy.

The graph gives keypoints only; the scores are the labelled-joint mask (StanfordExtra never labels
joints 20-23, so the network never learnt them), read from the skeleton layer's
`STANFORD_EXTRA_LABELLED` by the family's `postprocess` and by an exported .onnx file run through
`posekit.runtime.predict` alike.
"""
from __future__ import annotations

import numpy as np

from posekit.runtime.geometry import to_original_frame
from posekit.skeletons.builtin import STANFORD_EXTRA_LABELLED, STANFORD_EXTRA24

__all__ = ["dog_outputs", "labelled_joint_scores"]


def labelled_joint_scores(num_keypoints: int = STANFORD_EXTRA24.num_keypoints) -> np.ndarray:
    """(K,) 1 for the joints StanfordExtra labels, 0 for those it never does."""
    if num_keypoints != STANFORD_EXTRA24.num_keypoints:
        raise ValueError(f"the dog family predicts the {STANFORD_EXTRA24.num_keypoints} StanfordExtra joints, "
                         f"got {num_keypoints}")
    scores = np.zeros(num_keypoints)
    scores[list(STANFORD_EXTRA_LABELLED)] = 1.0
    return scores


def dog_outputs(keypoints_crop, matrices, boxes=None) -> list[dict]:
    """Per image: `keypoints` (1, K, 2) in original pixels, `scores` (1, K) the labelled-joint mask,
    `boxes` (1, 4) the dog's box (the given one, else the whole image; None where it is not finite)."""
    kp = to_original_frame(np.asarray(keypoints_crop, np.float64), np.asarray(matrices, np.float64))
    scores = labelled_joint_scores(kp.shape[1])[None]
    box = np.full((len(kp), 4), np.nan) if boxes is None else np.asarray(boxes, np.float64).reshape(-1, 4)
    return [{"keypoints": kp[i][None], "scores": scores.copy(), "person_scores": None,
             "boxes": box[i][None] if np.isfinite(box[i]).all() else None} for i in range(len(kp))]
