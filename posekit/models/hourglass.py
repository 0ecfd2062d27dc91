"""Stacked Hourglass networks (Newell, Yang, Deng, ECCV 2016) with intermediate supervision.

Follows the original Torch code (anewell/pose-hg-train): pre-activation bottleneck residual
modules, a 7x7/2 stem, a recursive hourglass that pools `n_low` times, per-stack heads and the
merge `next = x + conv(lin) + conv(heatmaps)`. The forward pass returns every stack's heatmaps,
stacked as (B, n_stacks, K, H/4, W/4), so the loss can supervise all of them and inference
reads the last one.

Options cover the TensorFlow reference (wbenbihi/hourglasstensorlfow) where it is a choice
rather than a bug: `dropout` after each hourglass, the `tiny` block. Its off-by-one depth is
`n_low=5`; its bias-free convs, BN without gamma and broken inter-stack merge are not copied.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_model

__all__ = ["Residual", "Hourglass", "StackedHourglass", "hourglass8", "hourglass4", "hourglass2_small"]


class Residual(nn.Module):
    """Pre-activation residual module.

    Regular: BN-ReLU-conv1x1(C->C/2), BN-ReLU-conv3x3(C/2->C/2), BN-ReLU-conv1x1(C/2->out).
    Tiny (the TF reference's `tiny` option): a single BN-ReLU-conv3x3(C->out).
    The skip is the identity, or a 1x1 conv when the width changes. No ReLU after the sum.
    """

    def __init__(self, in_channels: int, out_channels: int, *, tiny: bool = False):
        super().__init__()
        if tiny:
            self.body = nn.Sequential(
                nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
                nn.Conv2d(in_channels, out_channels, 3, padding=1))
        else:
            mid = out_channels // 2
            self.body = nn.Sequential(
                nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True), nn.Conv2d(in_channels, mid, 1),
                nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, padding=1),
                nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, out_channels, 1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


def _residuals(channels: int, count: int, tiny: bool) -> nn.Sequential:
    return nn.Sequential(*[Residual(channels, channels, tiny=tiny) for _ in range(count)])


class Hourglass(nn.Module):
    """One hourglass of depth `depth`: output = up1(x) + upsample(low3(low2(low1(pool(x)))))."""

    def __init__(self, depth: int, channels: int, *, n_modules: int = 1, tiny: bool = False):
        super().__init__()
        if depth < 1:
            raise ValueError(f"hourglass depth must be >= 1, got {depth}")
        self.up1 = _residuals(channels, n_modules, tiny)
        self.low1 = _residuals(channels, n_modules, tiny)
        self.low2 = (Hourglass(depth - 1, channels, n_modules=n_modules, tiny=tiny) if depth > 1
                     else _residuals(channels, n_modules, tiny))
        self.low3 = _residuals(channels, n_modules, tiny)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up1 = self.up1(x)
        low = self.low3(self.low2(self.low1(F.max_pool2d(x, 2))))
        # nearest-neighbour x2 upsampling, as in the Torch code; the explicit size keeps odd
        # sizes working and exports to a fixed Resize
        return up1 + F.interpolate(low, size=up1.shape[-2:], mode="nearest")


class StackedHourglass(nn.Module):
    """The full network: stem, `n_stacks` hourglasses with heads, heatmaps of every stack.

    Input: (B, 3, H, W) RGB in [0, 1] (H, W divisible by 4 * 2**n_low).
    Output: (B, n_stacks, num_joints, H/4, W/4) heatmaps (raw, no activation).
    """

    stride = 4

    def __init__(self, *, n_stacks: int = 8, n_feats: int = 256, n_modules: int = 1, n_low: int = 4,
                 num_joints: int = 16, dropout: float = 0.0, tiny: bool = False):
        super().__init__()
        if n_stacks < 1 or n_feats < 2 or n_modules < 1 or n_low < 1 or num_joints < 1:
            raise ValueError(f"invalid hourglass configuration: n_stacks={n_stacks}, n_feats={n_feats}, "
                             f"n_modules={n_modules}, n_low={n_low}, num_joints={num_joints}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.n_stacks, self.n_feats, self.n_low, self.num_joints = n_stacks, n_feats, n_low, num_joints
        # stem: 256 -> 128 (conv) -> 64 (pool); the tiny variant drops the middle residual (r2)
        stem = [nn.Conv2d(3, 64, 7, stride=2, padding=3), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                Residual(64, 128, tiny=tiny), nn.MaxPool2d(2)]
        if not tiny:
            stem.append(Residual(128, 128, tiny=tiny))
        stem.append(Residual(128, n_feats, tiny=tiny))
        self.stem = nn.Sequential(*stem)

        self.hourglasses = nn.ModuleList()
        self.features = nn.ModuleList()
        self.heads = nn.ModuleList()
        self.merge_features = nn.ModuleList()
        self.merge_heatmaps = nn.ModuleList()
        for i in range(n_stacks):
            self.hourglasses.append(Hourglass(n_low, n_feats, n_modules=n_modules, tiny=tiny))
            self.features.append(nn.Sequential(
                nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
                _residuals(n_feats, n_modules, tiny),
                nn.Conv2d(n_feats, n_feats, 1), nn.BatchNorm2d(n_feats), nn.ReLU(inplace=True)))
            self.heads.append(nn.Conv2d(n_feats, num_joints, 1))
            if i < n_stacks - 1:
                self.merge_features.append(nn.Conv2d(n_feats, n_feats, 1))
                self.merge_heatmaps.append(nn.Conv2d(num_joints, n_feats, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        need = self.stride * 2 ** self.n_low
        if x.shape[-1] % need or x.shape[-2] % need:
            raise ValueError(f"input size {tuple(x.shape[-2:])} must be divisible by {need} "
                             f"(stride 4 x 2**n_low with n_low={self.n_low})")
        x = self.stem(x)
        outputs = []
        for i in range(self.n_stacks):
            feat = self.features[i](self.hourglasses[i](x))
            heat = self.heads[i](feat)
            outputs.append(heat)
            if i < self.n_stacks - 1:
                x = x + self.merge_features[i](feat) + self.merge_heatmaps[i](heat)
        return torch.stack(outputs, dim=1)


def _build(**kwargs) -> StackedHourglass:
    return StackedHourglass(**kwargs)


@register_model(family="hourglass", skeleton="mpii16", input_size=(3, 256, 256), output="heatmap")
def hourglass8(*, n_stacks: int = 8, n_feats: int = 256, n_modules: int = 1, n_low: int = 4, num_joints: int = 16,
               dropout: float = 0.0, tiny: bool = False) -> StackedHourglass:
    """Newell's 8-stack hourglass (paper model), 256 features: 25,434,112 parameters."""
    return _build(n_stacks=n_stacks, n_feats=n_feats, n_modules=n_modules, n_low=n_low, num_joints=num_joints,
                  dropout=dropout, tiny=tiny)


@register_model(family="hourglass", skeleton="mpii16", input_size=(3, 256, 256), output="heatmap")
def hourglass4(*, n_stacks: int = 4, n_feats: int = 256, n_modules: int = 1, n_low: int = 4, num_joints: int = 16,
               dropout: float = 0.0, tiny: bool = False) -> StackedHourglass:
    """4-stack hourglass, 256 features (the ModelZoo seed's size): 12,858,304 parameters."""
    return _build(n_stacks=n_stacks, n_feats=n_feats, n_modules=n_modules, n_low=n_low, num_joints=num_joints,
                  dropout=dropout, tiny=tiny)


@register_model(family="hourglass", skeleton="mpii16", input_size=(3, 128, 128), output="heatmap")
def hourglass2_small(*, n_stacks: int = 2, n_feats: int = 64, n_modules: int = 1, n_low: int = 3,
                     num_joints: int = 16, dropout: float = 0.0, tiny: bool = False) -> StackedHourglass:
    """A 2-stack, 64-feature, depth-3 hourglass for 128-px inputs: tests, demo and CPU benchmarks."""
    return _build(n_stacks=n_stacks, n_feats=n_feats, n_modules=n_modules, n_low=n_low, num_joints=num_joints,
                  dropout=dropout, tiny=tiny)
