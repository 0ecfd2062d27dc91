"""Direct coordinate regression: keypoints as fractions of the network input's width and height.

The keras-io dog regressor predicts 24 (x, y) pairs in [0, 1] through a sigmoid, where
(0, 0) is the input's top-left corner and (1, 1) its bottom-right; pixels = value x size.
`encode` turns input-frame pixel keypoints into those targets plus per-joint loss weights;
`decode` goes back to input-frame pixels and works on numpy arrays and torch tensors alike,
so the same object serves the dataset and the exported graph.
"""
from __future__ import annotations

import numpy as np
import torch


class RegressionCodec:
    """Normalised-coordinate codec for an input of `input_size` = (width, height) pixels.

    mask: how `encode` weights joints in the loss.
      - "visible": labelled joints (v > 0) with finite coordinates; with `mask_outside`,
        joints pushed outside the input by augmentation are dropped too (a sigmoid head
        cannot reach them, so training on them only drags predictions to the border).
      - "none": every joint weighs 1, as in the reference (unlabelled joints train as (0, 0)).
    """

    def __init__(self, input_size: tuple[int, int], *, mask: str = "visible", mask_outside: bool = True):
        if mask not in ("visible", "none"):
            raise ValueError(f"RegressionCodec mask must be 'visible' or 'none', got {mask!r}")
        w, h = (input_size, input_size) if np.isscalar(input_size) else input_size
        if w <= 0 or h <= 0:
            raise ValueError(f"RegressionCodec input_size must be positive, got {input_size}")
        self.input_size = (int(w), int(h))
        self.mask = mask
        self.mask_outside = mask_outside

    def encode(self, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(..., K, 3) pixels [x, y, v] in the input frame -> targets (..., K, 2) and weights (..., K)."""
        keypoints = np.asarray(keypoints, dtype=np.float64)
        if keypoints.shape[-1] < 2:
            raise ValueError(f"keypoints must end in (x, y[, v]), got shape {keypoints.shape}")
        scale = np.array(self.input_size, dtype=np.float64)
        xy = keypoints[..., :2] / scale
        finite = np.isfinite(xy).all(axis=-1)
        if self.mask == "none":
            weights = np.ones(xy.shape[:-1], dtype=np.float32)
        else:
            vis = keypoints[..., 2] > 0 if keypoints.shape[-1] > 2 else np.ones(xy.shape[:-1], bool)
            weights = vis & finite
            if self.mask_outside:
                weights &= ((xy >= 0) & (xy <= 1)).all(axis=-1)
            weights = weights.astype(np.float32)
        targets = np.where(finite[..., None], xy, 0.0).astype(np.float32)
        return targets, weights

    def decode(self, normalized):
        """(..., K, 2) normalised -> (..., K, 2) input-frame pixels (numpy or torch, same type back)."""
        w, h = self.input_size
        if isinstance(normalized, torch.Tensor):
            scale = torch.tensor([w, h], dtype=normalized.dtype, device=normalized.device)
            return normalized * scale
        return np.asarray(normalized, dtype=np.float64) * np.array([w, h], dtype=np.float64)


def flip_test_coordinates(model, x: torch.Tensor, outputs: torch.Tensor | None, codec: RegressionCodec, flip_index,
                          *, flip: bool) -> torch.Tensor:
    """A coordinate regressor's keypoints (N, K, 2) in crop pixels for input `x` (`outputs` when
    already computed), averaged when `flip` with the mirrored input's: its joints swapped left for
    right and x mirrored back about the crop (x -> W - 1 - x, pixel centres)."""
    xy = codec.decode((model(x) if outputs is None else outputs).float())
    if flip:
        mirrored = codec.decode(model(x.flip(-1)).float())[:, torch.as_tensor(flip_index, device=xy.device)]
        xy = 0.5 * (xy + torch.stack([(x.shape[-1] - 1) - mirrored[..., 0], mirrored[..., 1]], dim=-1))
    return xy
