"""Crop-frame points back to the original image: the inverse of each item's 2x3 crop matrix."""
from __future__ import annotations

import numpy as np

__all__ = ["invert_affines", "to_original_frame"]


def invert_affines(matrices) -> np.ndarray:
    """(N, 2, 3) forward affines (original -> crop) -> (N, 2, 3) inverses (crop -> original)."""
    m = np.asarray(matrices, np.float64)
    if m.ndim != 3 or m.shape[1:] != (2, 3):
        raise ValueError(f"crop matrices must be (N, 2, 3), got {m.shape}")
    a_inv = np.linalg.inv(m[:, :, :2])
    return np.concatenate([a_inv, -np.einsum("nij,nj->ni", a_inv, m[:, :, 2])[:, :, None]], axis=2)


def to_original_frame(keypoints_input, matrices) -> np.ndarray:
    """(N, K, 2+) crop-frame points (numpy) -> original-frame points with each item's inverse
    matrix; channels after x, y pass through."""
    kp = np.asarray(keypoints_input, np.float64)
    inv = invert_affines(matrices)
    if kp.ndim != 3 or kp.shape[0] != inv.shape[0] or kp.shape[2] < 2:
        raise ValueError(f"keypoints must be (N, K, 2) for {inv.shape[0]} crop matrices, got {kp.shape}")
    moved = np.einsum("...ij,...kj->...ki", inv[..., :2], kp[..., :2]) + inv[..., None, :, 2]
    return np.concatenate([moved, kp[..., 2:]], axis=-1) if kp.shape[-1] > 2 else moved
