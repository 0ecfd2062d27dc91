"""Heatmap losses with intermediate supervision: every stack is compared with the same target.

`mse` (Newell): mean squared error per joint map, weighted by the joint's target weight (0 for
missing joints, so a missing joint neither pulls its map to zero nor counts), summed over
stacks. `bce` (the TensorFlow reference's sigmoid cross-entropy on logits), but masked per joint
here; the reference multiplies an already-reduced scalar by the weights, which masks nothing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["heatmap_loss"]


def heatmap_loss(outputs: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None, *,
                 kind: str = "mse", stack_reduction: str = "sum") -> tuple[torch.Tensor, torch.Tensor]:
    """outputs (B, S, K, H, W) (or (B, K, H, W) for one stack), target (B, K, H, W), weights either
    per joint (B, K) or spatial (B, 1|K, H, W) (ignore masks: 0 where the loss must not look).

    Each stack's loss is the mean over batch, joints and pixels of the per-element loss times the
    weight (the Torch MSECriterion normalisation). Returns (total over stacks, per-stack (S,)).
    """
    if outputs.dim() == 4:
        outputs = outputs.unsqueeze(1)
    if outputs.dim() != 5:
        raise ValueError(f"heatmap outputs must be (B, S, K, H, W), got {tuple(outputs.shape)}")
    if target.shape != outputs.shape[:1] + outputs.shape[2:]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match outputs {tuple(outputs.shape)}")
    target = target.unsqueeze(1).expand_as(outputs).to(outputs.dtype)
    if kind == "mse":
        per_elem = (outputs - target) ** 2
    elif kind == "bce":
        per_elem = F.binary_cross_entropy_with_logits(outputs, target, reduction="none")
    else:
        raise ValueError(f"unknown heatmap loss {kind!r}; choose 'mse' or 'bce'")
    if weights is not None and weights.dim() == 4:  # spatial mask, broadcast over stacks (and joints)
        b, _, k, h, w = outputs.shape
        if weights.shape[0] != b or weights.shape[1] not in (1, k) or weights.shape[2:] != (h, w):
            raise ValueError(f"spatial weights {tuple(weights.shape)} must be (B, 1|K, H, W) = ({b}, 1|{k}, {h}, {w})")
        per_elem = per_elem * weights.unsqueeze(1).to(per_elem.dtype)
        weights = None
    per_joint = per_elem.mean(dim=(-2, -1))  # (B, S, K)
    if weights is not None:
        if weights.shape != per_joint.shape[:1] + per_joint.shape[2:]:
            raise ValueError(f"weights shape {tuple(weights.shape)} does not match (B, K) = "
                             f"{tuple(per_joint.shape[:1] + per_joint.shape[2:])}")
        per_joint = per_joint * weights.unsqueeze(1).to(per_joint.dtype)
    per_stack = per_joint.mean(dim=(0, 2))
    if stack_reduction == "sum":
        total = per_stack.sum()
    elif stack_reduction == "mean":
        total = per_stack.mean()
    else:
        raise ValueError(f"unknown stack reduction {stack_reduction!r}; choose 'sum' or 'mean'")
    return total, per_stack
