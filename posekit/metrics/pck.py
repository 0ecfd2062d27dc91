"""Percentage of Correct Keypoints, the core shared by PCK@bbox (dogs), PCKh (MPII) and torso PCK."""
from __future__ import annotations

import numpy as np


def keypoint_distances(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, K) Euclidean distances between (N, K, 2+) predictions and ground truth."""
    pred = np.asarray(pred, dtype=np.float64)[..., :2]
    gt = np.asarray(gt, dtype=np.float64)[..., :2]
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    return np.linalg.norm(pred - gt, axis=-1)


def pck(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, normalizer: np.ndarray, threshold: float) -> dict:
    """PCK with per-sample normaliser: a joint is correct when dist <= threshold * normalizer.

    Only joints with `visible` > 0 count. Returns per-joint accuracy (NaN where no joint counts),
    per-joint counts, and the overall mean weighted by joint counts.
    """
    dist = keypoint_distances(pred, gt)
    visible = np.asarray(visible).reshape(dist.shape) > 0
    normalizer = np.asarray(normalizer, dtype=np.float64).reshape(-1, 1)
    if normalizer.shape[0] != dist.shape[0]:
        raise ValueError(f"{normalizer.shape[0]} normalisers for {dist.shape[0]} samples")
    if np.any(normalizer[visible.any(axis=1)] <= 0):
        raise ValueError("PCK normaliser must be positive for every sample with visible joints")
    correct = (dist <= threshold * normalizer) & visible
    counts = visible.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_joint = np.where(counts > 0, correct.sum(axis=0) / np.maximum(counts, 1), np.nan)
    mean = float(correct.sum() / counts.sum()) if counts.sum() else float("nan")
    return {"per_joint": per_joint, "counts": counts, "mean": mean, "correct": correct}


def bbox_normalizer(bbox: np.ndarray) -> np.ndarray:
    """PCK@bbox normaliser: max(w, h) of each [x, y, w, h] box."""
    bbox = np.asarray(bbox, dtype=np.float64).reshape(-1, 4)
    return np.maximum(bbox[:, 2], bbox[:, 3])
