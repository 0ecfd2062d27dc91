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


def per_image_pck(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, normalizer: np.ndarray, threshold: float,
                  *, joints=None) -> dict:
    """PCK as StanfordExtra/WLDO score it: a joint is correct when dist < threshold * normalizer
    (strict), each image's accuracy is the fraction of its visible joints that are correct, and
    the result is the mean over images (images without a visible joint, or without a usable
    normaliser, do not count). `joints` restricts the joints scored (a part group).

    Returns per-image accuracy (NaN where an image does not count), the mean and the image count.
    """
    dist = keypoint_distances(pred, gt)
    visible = np.asarray(visible).reshape(dist.shape) > 0
    if joints is not None:
        keep = np.zeros(dist.shape[1], bool)
        keep[list(joints)] = True
        visible = visible & keep
    normalizer = np.asarray(normalizer, dtype=np.float64).reshape(-1)
    if normalizer.shape[0] != dist.shape[0]:
        raise ValueError(f"{normalizer.shape[0]} normalisers for {dist.shape[0]} samples")
    usable = np.isfinite(normalizer) & (normalizer > 0) & visible.any(axis=1)
    safe = np.where(usable, normalizer, 1.0)[:, None]
    correct = (dist < threshold * safe) & visible
    with np.errstate(invalid="ignore", divide="ignore"):
        per_image = np.where(usable, correct.sum(axis=1) / np.maximum(visible.sum(axis=1), 1), np.nan)
    mean = float(per_image[usable].mean()) if usable.any() else float("nan")
    return {"per_image": per_image, "mean": mean, "images": int(usable.sum())}


def segmentation_normalizer(seg_area: np.ndarray) -> np.ndarray:
    """StanfordExtra/WLDO PCK normaliser: sqrt of each dog's segmentation area (pixels^2)."""
    return np.sqrt(np.asarray(seg_area, dtype=np.float64).reshape(-1))
