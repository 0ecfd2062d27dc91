"""Mixture-density losses for GMH-MDN (Li & Lee 2019).

The model predicts M isotropic Gaussian kernels over the D-dimensional normalised 3-D pose:
p(y | x) = sum_m alpha_m N(y; mu_m, sigma_m^2 I). The negative log-likelihood is evaluated with
log-sum-exp so that tiny kernel densities (D = 48 makes them astronomically small or large)
never underflow. A Dirichlet(c) prior on the mixing weights (c = 2 in the paper) discourages
kernels from dying: -log Dir(alpha; c) = -(c - 1) sum_m log alpha_m + const.
"""
from __future__ import annotations

import math

import torch


def mixture_log_likelihood(means: torch.Tensor, sigmas: torch.Tensor, weights: torch.Tensor, target: torch.Tensor, *,
                           sigma_clip: tuple[float, float] = (1e-15, 1e15),
                           weight_clip: tuple[float, float] = (1e-8, 1.0)) -> torch.Tensor:
    """log p(target) per sample. means (B, M, D), sigmas (B, M), weights (B, M), target (B, D) -> (B,)."""
    if means.dim() != 3 or target.dim() != 2 or means.shape[0] != target.shape[0] or means.shape[2] != target.shape[1]:
        raise ValueError(f"mixture_log_likelihood: means {tuple(means.shape)} and target {tuple(target.shape)} "
                         "must be (B, M, D) and (B, D)")
    d = means.shape[-1]
    sigma = sigmas.clamp(*sigma_clip)
    alpha = weights.clamp(*weight_clip)
    sq = ((target[:, None, :] - means) ** 2).sum(-1)  # (B, M)
    log_kernel = -0.5 * d * math.log(2 * math.pi) - d * torch.log(sigma) - sq / (2 * sigma ** 2)
    return torch.logsumexp(torch.log(alpha) + log_kernel, dim=1)


def mdn_nll(means: torch.Tensor, sigmas: torch.Tensor, weights: torch.Tensor, target: torch.Tensor, **kw) -> torch.Tensor:
    """Mean negative log-likelihood over the batch (the paper's L_NLL)."""
    return -mixture_log_likelihood(means, sigmas, weights, target, **kw).mean()


def dirichlet_prior(weights: torch.Tensor, concentration: float = 2.0, *, weight_clip: tuple[float, float] = (1e-8, 1.0)) -> torch.Tensor:
    """-mean_b (c - 1) sum_m log alpha_m: the negative log of a symmetric Dirichlet(c), up to a constant."""
    return -(concentration - 1.0) * torch.log(weights.clamp(*weight_clip)).sum(dim=1).mean()


class MDNLoss(torch.nn.Module):
    """L = L_NLL + prior_weight * L_prior (`mdm_5_prior` in the reference; prior_weight=0 gives `mdm_5`)."""

    def __init__(self, *, concentration: float = 2.0, prior_weight: float = 1.0):
        super().__init__()
        self.concentration = concentration
        self.prior_weight = prior_weight

    def forward(self, means, sigmas, weights, target) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        nll = mdn_nll(means, sigmas, weights, target)
        prior = dirichlet_prior(weights, self.concentration)
        return nll + self.prior_weight * prior, {"nll": nll.detach(), "prior": prior.detach()}
