"""Mixture-density codec for 2-D -> 3-D lifting (GMH-MDN).

Encoding: 2-D inputs (16 joints, pixels) and 3-D targets (16 root-relative joints, mm, camera
frame) are z-scored per dimension with training-set statistics. Decoding: the M mixture means
(normalised) are un-normalised to mm and the zero root is put back, giving (M, 17, 3) hypotheses
with their mixing weights.

The statistics are registered buffers of this module, so a model that owns a codec carries them
in its state dict (a checkpoint alone is enough to predict).

Joint conventions (Human3.6M 17-joint order, see `posekit.skeletons` "h36m17"): the 2-D input
drops neck_base (index 9, no Stacked Hourglass counterpart); the 3-D output drops the root (0).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from posekit.skeletons.builtin import H36M17_LIFT_INPUTS as INPUT_JOINTS  # 16 2-D inputs (no neck_base)
from posekit.skeletons.builtin import H36M17_LIFT_OUTPUTS as OUTPUT_JOINTS  # 16 3-D outputs (no root)

NUM_JOINTS = 17


class MDNCodec(nn.Module):
    """z-score normalisation (buffers) plus mixture decoding to hypotheses in mm."""

    def __init__(self, *, num_inputs: int = len(INPUT_JOINTS), num_outputs: int = len(OUTPUT_JOINTS)):
        super().__init__()
        self.num_inputs = num_inputs
        self.num_outputs = num_outputs
        self.register_buffer("mean_2d", torch.zeros(num_inputs * 2))
        self.register_buffer("std_2d", torch.ones(num_inputs * 2))
        self.register_buffer("mean_3d", torch.zeros(num_outputs * 3))
        self.register_buffer("std_3d", torch.ones(num_outputs * 3))
        # 1 once fit() has run: lets predict() refuse an un-normalised model instead of printing nonsense
        self.register_buffer("fitted", torch.zeros(()))

    # --- statistics ---------------------------------------------------------------------------
    @torch.no_grad()
    def fit(self, inputs_2d: np.ndarray, targets_3d: np.ndarray) -> None:
        """Training statistics from (N, 16, 2) pixels and (N, 16, 3) root-relative mm."""
        x = np.asarray(inputs_2d, dtype=np.float64).reshape(len(inputs_2d), -1)
        y = np.asarray(targets_3d, dtype=np.float64).reshape(len(targets_3d), -1)
        if x.shape[1] != self.mean_2d.numel() or y.shape[1] != self.mean_3d.numel():
            raise ValueError(f"MDNCodec.fit: expected {self.num_inputs}x2 inputs and {self.num_outputs}x3 targets, "
                             f"got {x.shape[1]} and {y.shape[1]} values per sample")
        if len(x) < 2:
            raise ValueError("MDNCodec.fit: need at least 2 training samples for statistics")
        for name, arr in (("mean_2d", x.mean(0)), ("std_2d", x.std(0)), ("mean_3d", y.mean(0)), ("std_3d", y.std(0))):
            if name.startswith("std"):
                arr = np.where(arr < 1e-8, 1.0, arr)  # a constant dimension passes through unscaled
            getattr(self, name).copy_(torch.as_tensor(arr, dtype=getattr(self, name).dtype))
        self.fitted.fill_(1.0)

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted.item() > 0)

    # --- encoding -----------------------------------------------------------------------------
    def normalize_2d(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 16, 2) or (B, 32) pixels -> (B, 32) z-scores."""
        return (x.reshape(x.shape[0], -1) - self.mean_2d) / self.std_2d

    def normalize_3d(self, y: torch.Tensor) -> torch.Tensor:
        """(B, 16, 3) or (B, 48) root-relative mm -> (B, 48) z-scores. This is `encode`."""
        return (y.reshape(y.shape[0], -1) - self.mean_3d) / self.std_3d

    encode = normalize_3d

    def denormalize_3d(self, y: torch.Tensor) -> torch.Tensor:
        """(..., 48) z-scores -> (..., 48) mm."""
        return y * self.std_3d + self.mean_3d

    def denormalize_2d(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std_2d + self.mean_2d

    # --- decoding -----------------------------------------------------------------------------
    def decode(self, means: torch.Tensor, sigmas: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """Network outputs -> hypotheses.

        means (B, M, 48) normalised, sigmas (B, M), weights (B, M) ->
        {"hypotheses": (B, M, 17, 3) mm with a zero root, "weights": (B, M), "sigmas": (B, M),
         "best": (B,) index of the largest mixing weight, "keypoints": (B, 17, 3) that hypothesis}.
        """
        b, m = means.shape[:2]
        mm = self.denormalize_3d(means).reshape(b, m, self.num_outputs, 3)
        root = torch.zeros(b, m, 1, 3, dtype=mm.dtype, device=mm.device)
        hyps = torch.cat([root, mm], dim=2)
        best = torch.argmax(weights, dim=1)
        keypoints = hyps[torch.arange(b, device=hyps.device), best]
        return {"hypotheses": hyps, "weights": weights, "sigmas": sigmas, "best": best, "keypoints": keypoints}


def to_root_relative_17(targets_16: np.ndarray | torch.Tensor):
    """(N, 16, 3) root-relative outputs -> (N, 17, 3) with the zero root in front."""
    if isinstance(targets_16, torch.Tensor):
        return torch.cat([torch.zeros_like(targets_16[:, :1]), targets_16], dim=1)
    t = np.asarray(targets_16)
    return np.concatenate([np.zeros_like(t[:, :1]), t], axis=1)
