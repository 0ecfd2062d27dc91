"""Landmark codec for unsupervised landmark maps (FSE): spatial softmax + soft-argmax.

Each of the K score maps becomes a distribution p(u | x, k) over its cells (softmax over all
H*W cells); the landmark is the expected receptive-field centre under it, in input pixels.
The per-landmark confidence is the largest probability mass inside any `window` x `window`
block of cells (1 for a perfectly peaked map, ~window^2 / (H W) for a flat one).

Only softmax, matmul, average pooling and max reductions are used, so the decoder exports to
ONNX as is. `landmark_skeleton(K)` generates the matching keypoint layout.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from posekit.skeletons import Skeleton, landmarks

__all__ = ["LandmarkDecoder", "spatial_softmax", "soft_argmax", "landmark_skeleton"]


def spatial_softmax(scores: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(B, K, H, W) scores -> probabilities of the same shape, each map summing to 1."""
    b, k, h, w = scores.shape
    return torch.softmax(scores.reshape(b, k, h * w) / temperature, dim=-1).reshape(b, k, h, w)


def soft_argmax(probs: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Expected position (B, K, 2) of (B, K, H, W) distributions over cells with (H*W, 2) centres."""
    b, k, h, w = probs.shape
    return probs.reshape(b, k, h * w) @ centers.to(probs.dtype)


class LandmarkDecoder(nn.Module):
    """Score maps (B, K, H, W) -> (keypoints (B, K, 2) in input pixels, confidence (B, K)).

    `centers` (H*W, 2) are the cells' receptive-field centres in input pixels, row-major
    (`posekit.models.fse.cell_centers`)."""

    def __init__(self, map_size: int | tuple[int, int], centers: torch.Tensor, *, temperature: float = 1.0,
                 window: int = 3):
        super().__init__()
        self.map_size = (map_size, map_size) if isinstance(map_size, int) else tuple(map_size)
        centers = torch.as_tensor(centers, dtype=torch.float32)
        if centers.shape != (self.map_size[0] * self.map_size[1], 2):
            raise ValueError(f"centers must be (H*W, 2) = ({self.map_size[0] * self.map_size[1]}, 2) for map size "
                             f"{self.map_size}, got {tuple(centers.shape)}")
        if window < 1 or window > min(self.map_size):
            raise ValueError(f"confidence window must be in [1, {min(self.map_size)}], got {window}")
        self.register_buffer("centers", centers)
        self.temperature = float(temperature)
        self.window = int(window)

    def forward(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        if not tracing and tuple(scores.shape[-2:]) != self.map_size:
            raise ValueError(f"expected score maps of size {self.map_size}, got {tuple(scores.shape[-2:])}")
        probs = spatial_softmax(scores, self.temperature)
        keypoints = soft_argmax(probs, self.centers)
        mass = F.avg_pool2d(probs, self.window, stride=1) * (self.window * self.window)
        confidence = mass.flatten(2).amax(-1)
        return keypoints, confidence


def landmark_skeleton(num_landmarks: int) -> Skeleton:
    """The generated layout `landmarks{K}` (l0 .. l{K-1}, no flips, no limbs): declared once, in
    `posekit.skeletons.landmarks`, so `get_skeleton("landmarks{K}")` gives the same object."""
    return landmarks(num_landmarks)
