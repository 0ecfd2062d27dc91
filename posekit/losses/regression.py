"""Coordinate-regression loss (the dog keypoint regressor): a masked MSE over (x, y) coordinates."""
from __future__ import annotations

import torch


def masked_coordinate_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over (B, K, 2) coordinates, each joint weighted by `weight` (B, K).

    With visibility weights, unlabelled joints (StanfordExtra stores them as [0, 0, 0]) never
    train as (0, 0) targets; the mean runs over weighted coordinates only, so the loss scale
    does not depend on how many joints a batch happens to have. `weight=None` (or all ones)
    is the reference's plain MSE over every coordinate.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    sq = (pred - target) ** 2
    if weight is None:
        return sq.mean()
    if weight.shape != pred.shape[:-1]:
        raise ValueError(f"weight shape {tuple(weight.shape)} != {tuple(pred.shape[:-1])}")
    w = weight.to(sq.dtype).unsqueeze(-1).expand_as(sq)
    # an all-masked batch gives 0 with a graph attached, not NaN
    return (sq * w).sum() / w.sum().clamp_min(1.0)
