"""Geometry shared by every top-down pipeline: one 2x3 affine matrix per sample.

The matrix that warps the image is the single source of truth for moving keypoints both ways
(`affine_points` with the matrix, or with `invert_affine(matrix)` to go back to the original
frame). Flips are part of the matrix; the left/right label swap comes from the skeleton.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from posekit.skeletons import Skeleton


def crop_affine(center, size, output_size, *, rotation: float = 0.0, flip: bool = False) -> np.ndarray:
    """2x3 matrix mapping a region of `size` (w, h) px centred at `center` (x, y), rotated by
    `rotation` degrees (counter-clockwise in the image) and optionally mirrored, onto an
    output of `output_size` (w, h)."""
    cx, cy = float(center[0]), float(center[1])
    sw, sh = (float(size), float(size)) if np.isscalar(size) else (float(size[0]), float(size[1]))
    ow, oh = output_size
    if sw <= 0 or sh <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    t = math.radians(rotation)
    c, s = math.cos(t), math.sin(t)
    sx, sy = ow / sw, oh / sh
    # centre -> origin, rotate, scale, mirror, origin -> output centre
    a = np.array([[c * sx, s * sx], [-s * sy, c * sy]])
    if flip:
        a[0] *= -1
    m = np.zeros((2, 3))
    m[:, :2] = a
    # pixel centres sit at integer coordinates: the output's centre is ((ow - 1) / 2, (oh - 1) / 2),
    # so a mirrored crop maps x to (ow - 1) - x exactly like flipping the array
    m[:, 2] = np.array([(ow - 1) / 2.0, (oh - 1) / 2.0]) - a @ np.array([cx, cy])
    return m


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def affine_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 (or batched (..., 2, 3)) affine matrix to (..., K, 2+) points; extra channels pass through."""
    points = np.asarray(points, dtype=np.float64)
    matrix = np.asarray(matrix, dtype=np.float64)
    xy = points[..., :2]
    moved = np.einsum("...ij,...kj->...ki", matrix[..., :2], xy) + matrix[..., None, :, 2]
    return np.concatenate([moved, points[..., 2:]], axis=-1) if points.shape[-1] > 2 else moved


def warp_image(image: np.ndarray, matrix: np.ndarray, output_size, *, border_value=0,
               interpolation=cv2.INTER_LINEAR) -> np.ndarray:
    return cv2.warpAffine(image, np.asarray(matrix, dtype=np.float64), (int(output_size[0]), int(output_size[1])),
                          flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)


def swap_left_right(keypoints: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """Relabel joints after a mirror: left takes right's values and vice versa (axis -2)."""
    return np.asarray(keypoints)[..., skeleton.flip_index, :]


def color_jitter(image: np.ndarray, rng: np.random.Generator, *, brightness=0.2, contrast=0.2,
                 saturation=0.2, channel_scale=0.0) -> np.ndarray:
    """Photometric jitter on RGB uint8; `channel_scale` multiplies each channel by U(1-c, 1+c)
    (Newell's colour augmentation)."""
    img = image.astype(np.float32)
    if channel_scale:
        img *= rng.uniform(1 - channel_scale, 1 + channel_scale, size=3).astype(np.float32)
    if brightness:
        img *= rng.uniform(1 - brightness, 1 + brightness)
    if contrast:
        mean = img.mean()
        img = (img - mean) * rng.uniform(1 - contrast, 1 + contrast) + mean
    if saturation:
        grey = img.mean(axis=2, keepdims=True)
        img = (img - grey) * rng.uniform(1 - saturation, 1 + saturation) + grey
    return np.clip(img, 0, 255).astype(np.uint8)


def item_rng() -> np.random.Generator:
    """The one RNG rule of every pipeline: a fresh numpy Generator per item, drawn from torch's
    generator, which the trainer seeds and every DataLoader worker re-seeds distinctly. No
    pipeline touches numpy's or Python's global RNG."""
    import torch
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2x3 matrix of `outer` applied after `inner`."""
    a = np.vstack([outer, [0, 0, 1]])
    b = np.vstack([inner, [0, 0, 1]])
    return (a @ b)[:2]
