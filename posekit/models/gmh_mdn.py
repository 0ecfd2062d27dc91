"""GMH-MDN (Li & Lee, CVPR 2019): a mixture density network on the Martinez et al. 2017 lifter.

Input: 16 two-dimensional joints in pixels (Human3.6M order without neck_base). The model
z-scores them itself with statistics stored as buffers (`self.codec`), so checkpoints are
self-contained. Trunk: Linear 32->1024 -> BN -> ReLU -> Dropout, then two residual blocks of
two [Linear 1024->1024 -> BN -> ReLU -> Dropout]. Heads for M kernels: means (M x 48, in the
reference's kernel-fastest layout), one isotropic sigma per kernel (ELU + 1) and softmax mixing
weights. Outputs stay in normalised 3-D space (that is where the likelihood is defined);
`self.codec.decode` turns them into millimetre hypotheses.

Parameters at the defaults: 4,498,682 trainable (+10,240 BatchNorm statistics).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from posekit.codecs.mdn import INPUT_JOINTS, MDNCodec
from posekit.models.registry import register_model


class MaxNormLinear(nn.Linear):
    """A linear layer whose whole weight matrix is rescaled to Frobenius norm <= 1 inside forward.

    This mirrors the reference's `tf.clip_by_norm(W, 1)` applied in the graph (the stored weight is
    untouched; gradients flow through the rescaling). Off unless `max_norm=True`.
    """

    def __init__(self, in_features: int, out_features: int, *, max_norm: bool = False):
        super().__init__(in_features, out_features)
        self.max_norm = max_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if self.max_norm:
            norm = torch.sqrt((w * w).sum())
            w = w * torch.clamp(1.0 / norm, max=1.0)
        return F.linear(x, w, self.bias)


def _tf_kaiming_(t: torch.Tensor) -> None:
    """The reference initialiser for weights and biases: truncated normal (2 std) x sqrt(2 / shape[0])
    of the TensorFlow variable, i.e. fan-in for weights ([in, out] in TF) and the size for biases."""
    fan = t.shape[1] if t.dim() == 2 else t.shape[0]
    with torch.no_grad():
        nn.init.trunc_normal_(t, 0.0, 1.0, -2.0, 2.0)
        t.mul_(math.sqrt(2.0 / fan))


class ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float, max_norm: bool, bn_momentum: float, bn_eps: float):
        super().__init__()
        self.fc1 = MaxNormLinear(width, width, max_norm=max_norm)
        self.bn1 = nn.BatchNorm1d(width, momentum=bn_momentum, eps=bn_eps)
        self.fc2 = MaxNormLinear(width, width, max_norm=max_norm)
        self.bn2 = nn.BatchNorm1d(width, momentum=bn_momentum, eps=bn_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(F.relu(self.bn1(self.fc1(x))))
        y = self.dropout(F.relu(self.bn2(self.fc2(y))))
        return x + y


class GMHMDN(nn.Module):
    """The lifter. `forward(x, mask=None, target=None)` -> dict of means / sigmas / weights.

    x: (B, 16, 2) or (B, 32) pixels. mask: (B, 16) bool, True where a joint is missing (its
    normalised coordinates are set to 0, the training mean, as in the reference's missing-joint
    augmentation); non-finite input coordinates are treated as missing too. target: optional
    (B, 16, 3) mm, returned normalised as "target" so the loss never needs the statistics.
    """

    def __init__(self, *, width: int = 1024, num_blocks: int = 2, num_kernels: int = 5, dropout: float = 0.5,
                 max_norm: bool = False, bn_momentum: float = 0.01, bn_eps: float = 1e-3):
        super().__init__()
        self.num_kernels = num_kernels
        self.codec = MDNCodec()
        n_in = self.codec.num_inputs * 2
        self.n_out = self.codec.num_outputs * 3
        self.input_fc = MaxNormLinear(n_in, width, max_norm=max_norm)
        self.input_bn = nn.BatchNorm1d(width, momentum=bn_momentum, eps=bn_eps)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(ResidualBlock(width, dropout, max_norm, bn_momentum, bn_eps)
                                    for _ in range(num_blocks))
        self.mu_head = MaxNormLinear(width, self.n_out * num_kernels, max_norm=max_norm)
        self.sigma_head = MaxNormLinear(width, num_kernels, max_norm=max_norm)
        self.alpha_head = nn.Linear(width, num_kernels)  # the reference does not clip this one
        for module in self.modules():
            if isinstance(module, nn.Linear):
                _tf_kaiming_(module.weight)
                _tf_kaiming_(module.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        b = x.shape[0]
        x = x.reshape(b, -1, 2)
        missing = ~torch.isfinite(x).all(dim=-1)
        if mask is not None:
            missing = missing | mask.reshape(b, -1).bool()
        z = self.codec.normalize_2d(torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)).reshape(b, -1, 2)
        z = torch.where(missing[..., None], torch.zeros_like(z), z).reshape(b, -1)
        h = self.dropout(F.relu(self.input_bn(self.input_fc(z))))
        for block in self.blocks:
            h = block(h)
        # mu: (B, 48 * M) with the kernel index fastest -> (B, M, 48)
        means = self.mu_head(h).reshape(b, self.n_out, self.num_kernels).transpose(1, 2)
        sigmas = F.elu(self.sigma_head(h)) + 1.0
        weights = torch.softmax(self.alpha_head(h), dim=1)
        out = {"means": means, "sigmas": sigmas, "weights": weights}
        if target is not None:
            out["target"] = self.codec.normalize_3d(target)
        return out

    @torch.no_grad()
    def lift(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Pixels -> hypotheses in mm (see `MDNCodec.decode`)."""
        out = self.forward(x, mask)
        return self.codec.decode(out["means"], out["sigmas"], out["weights"])


@register_model(family="gmh_mdn", skeleton="h36m17", input_size=(len(INPUT_JOINTS), 2),
                description="GMH-MDN lifter: 16 2-D joints -> M=5 Gaussian 3-D hypotheses (4.50M params)")
def gmh_mdn(*, width: int = 1024, num_blocks: int = 2, num_kernels: int = 5, dropout: float = 0.5,
            max_norm: bool = False) -> GMHMDN:
    """GMH-MDN (Li & Lee 2019) at the paper's size: 4,498,682 parameters with the defaults.

    `dropout` is the drop probability (the reference's flag 0.5 is a keep probability; same value).
    `max_norm=True` reproduces the reference's whole-matrix max-norm clip (most ports drop it).
    """
    return GMHMDN(width=width, num_blocks=num_blocks, num_kernels=num_kernels, dropout=dropout, max_norm=max_norm)

