"""FSE losses (Thewlis et al. 2017): alignment under a known warp + diversity.

Alignment. For an image x and its warp x' = x o g^-1, landmark k of x should land, through g,
on landmark k of x'. With u ~ p(.|x, k) over the receptive-field centres a_u of x and
v ~ q(.|x', k) over the centres b_v of x', independently,
    E ||g(a_u) - b_v||^2 = sum_u p |g(a_u)|^2 + sum_v q |b_v|^2 - 2 (sum_u p g(a_u)) . (sum_v q b_v),
averaged over (batch, k). Unlike the reference, g is applied in pixels to receptive-field
centres (the reference warps normalised coordinates of a padded cell grid, which mis-scales
and mis-centres it; seeds_spec section 3). Distances are then expressed in score-map cells
(pixels / network stride, 2 for FSE) so the loss has the reference's scale and its tuned
diversity weight of 500 keeps its meaning. Centres that g maps outside x' keep their true
position (the reference reads 0 there, silently dropping mass).

Diversity. Per image: K - sum over positions of max over k of the M x M average-pooled
(stride 1, VALID) distributions. A one-hot landmark at least M - 1 cells from every border
lies in M*M windows of 1/M^2 each and contributes 1 to the sum; one nearer the border lies in
fewer windows (a corner cell in one) and contributes as little as 1/M^2, because VALID pooling
has no windows past the edge. So the loss is 0 only when the K landmarks are peaked at least M
cells apart AND at least M - 1 cells inside the map (a corner landmark alone costs
1 - 1/M^2); it is K - 1 or more when all collapse onto one cell. Mean over the batch;
the reference adds it for both x and x'.

Weight decay is the optimiser's (see `posekit.models.fse.FSENet.param_groups`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["alignment_loss", "diversity_loss", "fse_loss", "map_stride"]


def map_stride(centers: torch.Tensor, map_size: tuple[int, int]) -> float:
    """Pixel spacing of neighbouring cells in a (H*W, 2) row-major centre grid."""
    h, w = map_size
    grid = centers.reshape(h, w, 2)
    if w > 1:
        return float(grid[0, 1, 0] - grid[0, 0, 0])
    if h > 1:
        return float(grid[1, 0, 1] - grid[0, 0, 1])
    return 1.0


def _warped_centers(warp, centers: torch.Tensor, batch: int) -> torch.Tensor:
    if isinstance(warp, torch.Tensor):
        if warp.shape != (batch, centers.shape[0], 2):
            raise ValueError(f"pre-warped centres must be (B, H*W, 2) = ({batch}, {centers.shape[0]}, 2), "
                             f"got {tuple(warp.shape)}")
        return warp
    with torch.no_grad():
        return warp.warp_points(centers[None].expand(batch, -1, -1).double())


def alignment_loss(probs_a: torch.Tensor, probs_b: torch.Tensor, warp, centers: torch.Tensor,
                   *, cell: float | None = None) -> torch.Tensor:
    """E ||g(a) - b||^2 in cell units (`cell` pixels; default the centres' spacing), mean over (B, K).

    `warp` is a `posekit.ops.tps.TPSWarp` (its `warp_points` is g) or the already warped centres
    g(a) as a (B, H*W, 2) tensor in x' pixels."""
    if probs_a.shape != probs_b.shape or probs_a.ndim != 4:
        raise ValueError(f"probability maps must both be (B, K, H, W), got {tuple(probs_a.shape)} and "
                         f"{tuple(probs_b.shape)}")
    b, k, h, w = probs_a.shape
    centers = centers.to(probs_a.device)
    if centers.shape != (h * w, 2):
        raise ValueError(f"centers must be (H*W, 2) = ({h * w}, 2), got {tuple(centers.shape)}")
    cell = cell or map_stride(centers, (h, w))
    origin = centers.mean(0)  # the expression is translation invariant; centring avoids float32 cancellation
    a = (_warped_centers(warp, centers, b).to(probs_a.device, probs_a.dtype) - origin) / cell  # (B, HW, 2)
    bb = ((centers - origin) / cell).to(probs_a.dtype)  # (HW, 2)
    p = probs_a.reshape(b, k, h * w)
    q = probs_b.reshape(b, k, h * w)
    second_a = p @ (a ** 2).sum(-1)[..., None]  # (B, K, 1)
    second_b = q @ (bb ** 2).sum(-1)[:, None]
    mean_a = p @ a  # (B, K, 2)
    mean_b = q @ bb
    per = second_a[..., 0] + second_b[..., 0] - 2 * (mean_a * mean_b).sum(-1)
    return per.mean()


def diversity_loss(probs: torch.Tensor, pool: int = 4) -> torch.Tensor:
    """K - sum_positions max_k avgpool_MxM(p), mean over the batch."""
    b, k, h, w = probs.shape
    pooled = F.avg_pool2d(probs, pool, stride=1)
    return (k - pooled.amax(1).flatten(1).sum(-1)).mean()


def fse_loss(probs_a: torch.Tensor, probs_b: torch.Tensor, warp, centers: torch.Tensor, *,
             diversity_weight: float = 500.0, pool: int = 4, align_weight: float = 1.0,
             cell: float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """align_weight * L_align + diversity_weight * (L_div(A) + L_div(B)) and its parts (detached)."""
    align = alignment_loss(probs_a, probs_b, warp, centers, cell=cell)
    div_a = diversity_loss(probs_a, pool)
    div_b = diversity_loss(probs_b, pool)
    total = align_weight * align + diversity_weight * (div_a + div_b)
    parts = {"align": align.detach(), "div_a": div_a.detach(), "div_b": div_b.detach(), "total": total.detach()}
    return total, parts
