"""OpenPose loss with intermediate supervision (MindSpore / CMU): every stage is compared with the same targets.

loss = sum over stages of [mean(W * (L_s - L*)^2) + mean(W * (S_s - S*)^2)], W = 1 - ignore mask, a
spatial (B, 1, h, w) weight broadcast over channels. The means run over all elements, masked
ones included (as MindSpore's), so the loss scale does not depend on how much is masked.
"""
from __future__ import annotations

import torch

__all__ = ["paf_loss"]


def paf_loss(pafs_pred: torch.Tensor, heat_pred: torch.Tensor, pafs_t: torch.Tensor, heat_t: torch.Tensor,
             weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """pafs_pred (B, S, 2L, h, w), heat_pred (B, S, K+1, h, w) (or without the S axis for one stage),
    targets (B, 2L, h, w) and (B, K+1, h, w), weight (B, 1, h, w) or None (all ones).

    Returns (total loss, per-stage losses (S,)).
    """
    if pafs_pred.dim() == 4:
        pafs_pred = pafs_pred.unsqueeze(1)
    if heat_pred.dim() == 4:
        heat_pred = heat_pred.unsqueeze(1)
    if pafs_pred.dim() != 5 or heat_pred.dim() != 5 or pafs_pred.shape[:2] != heat_pred.shape[:2]:
        raise ValueError(f"predictions must be (B, S, C, h, w) with the same B and S, got {tuple(pafs_pred.shape)} "
                         f"and {tuple(heat_pred.shape)}")
    b, _, _, h, w = pafs_pred.shape
    for name, pred, target in (("PAF", pafs_pred, pafs_t), ("heatmap", heat_pred, heat_t)):
        if tuple(target.shape) != (b,) + tuple(pred.shape[2:]):
            raise ValueError(f"{name} target shape {tuple(target.shape)} does not match predictions "
                             f"{tuple(pred.shape)} (expected {(b,) + tuple(pred.shape[2:])})")
    if heat_pred.shape[-2:] != (h, w):
        raise ValueError(f"PAF maps {tuple(pafs_pred.shape[-2:])} and heatmaps {tuple(heat_pred.shape[-2:])} differ")
    if weight is not None and tuple(weight.shape) != (b, 1, h, w):
        raise ValueError(f"weight must be (B, 1, h, w) = {(b, 1, h, w)}, got {tuple(weight.shape)}")

    def per_stage(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        sq = (pred - target.unsqueeze(1).to(pred.dtype)) ** 2
        if weight is not None:
            sq = sq * weight.unsqueeze(1).to(pred.dtype)
        return sq.mean(dim=(0, 2, 3, 4))

    stages = per_stage(pafs_pred, pafs_t) + per_stage(heat_pred, heat_t)
    return stages.sum(), stages
