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
    """Photometric jitter on RGB uint8, drawn in this order: channel scale (each channel x
    U(1-c, 1+c), Newell's colour augmentation), brightness (x U(1-b, 1+b)), contrast (towards the
    image mean by U(1-c, 1+c)), saturation (towards each pixel's grey, the channel mean).

    Every step is affine in the RGB value and only the end result is clipped, so the whole jitter
    is one 3x4 matrix applied in one pass (`cv2.transform`); the contrast's image mean comes from
    the per-channel means, which the earlier steps only scale. Rounds to the nearest level."""
    scale = np.ones(3)
    if channel_scale:
        scale = rng.uniform(1 - channel_scale, 1 + channel_scale, size=3)
    if brightness:
        scale = scale * rng.uniform(1 - brightness, 1 + brightness)
    linear, offset = np.diag(scale), np.zeros(3)
    if contrast:
        # the mean over pixels and channels of the image so far
        mean = float(np.dot(scale, cv2.mean(image)[:3]) / 3.0)
        alpha = rng.uniform(1 - contrast, 1 + contrast)
        linear, offset = alpha * linear, offset + (1 - alpha) * mean
    if saturation:
        sat = rng.uniform(1 - saturation, 1 + saturation)
        towards_grey = sat * np.eye(3) + (1 - sat) / 3.0 * np.ones((3, 3))
        linear, offset = towards_grey @ linear, towards_grey @ offset
    if not (channel_scale or brightness or contrast or saturation):
        return image
    matrix = np.concatenate([linear, offset[:, None]], axis=1)
    return cv2.transform(np.ascontiguousarray(image), matrix)


def item_rng() -> np.random.Generator:
    """The one RNG rule of every pipeline: a fresh numpy Generator per item, drawn from torch's
    generator. In training the trainer seeds that generator for each item from (train.seed,
    epoch, index) alone (posekit/data/robust.py), so augmentation is the same with 0 or N
    workers and on resume, and differs between epochs. No pipeline touches numpy's or Python's
    global RNG."""
    import torch
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


def item_seeds(n: int) -> np.ndarray:
    """(n,) uint64 seeds drawn from torch's generator exactly as n successive `item_rng()` calls
    draw theirs (torch's CPU generator fills the tensor in order): a batch draws its items' seeds
    in one call and gets the ones it would item by item."""
    import torch
    return torch.randint(0, 2**62, (int(n),)).numpy().astype(np.uint64)


_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def seeded_uniform(seeds: np.ndarray, count: int) -> np.ndarray:
    """(n, count) float64 uniforms in [0, 1), a pure function of each seed (splitmix64 of the seed
    and a counter). For array pipelines whose per-item draws must be vectorised over a batch yet
    equal the item-by-item ones: one numpy Generator per item costs ~0.1 ms to create."""
    seeds = np.asarray(seeds, dtype=np.uint64).reshape(-1, 1)
    with np.errstate(over="ignore"):
        z = seeds + (np.arange(1, count + 1, dtype=np.uint64)[None] * _GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2x3 matrix of `outer` applied after `inner`."""
    a = np.vstack([outer, [0, 0, 1]])
    b = np.vstack([inner, [0, 0, 1]])
    return (a @ b)[:2]
