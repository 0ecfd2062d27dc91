"""3-D pose errors in the Human3.6M protocols.

* Protocol #1 (MPJPE): mean Euclidean joint error after root alignment (the poses given here are
  already root-centred).
* Protocol #2 (P-MPJPE): the prediction is first aligned to the ground truth by the optimal
  similarity transform (rotation, isotropic scale, translation; orthogonal Procrustes with the
  reflection fix, so the rotation never mirrors the pose).
* best-of-M: the minimum over hypotheses of a per-frame error (taken after alignment for #2).

All functions are numpy, vectorised over leading axes, and return errors in the input unit (mm).
"""
from __future__ import annotations

import numpy as np


def mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(..., K, 3) -> (...) mean joint distance."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape[-2:] != gt.shape[-2:]:
        raise ValueError(f"mpjpe: pose shapes differ: {pred.shape} vs {gt.shape}")
    return np.linalg.norm(pred - gt, axis=-1).mean(axis=-1)


def procrustes_align(pred: np.ndarray, gt: np.ndarray, *, return_transform: bool = False):
    """Align `pred` (..., K, 3) to `gt` (broadcastable) with the least-squares similarity transform.

    Solves min_{s, R, t} sum_k |s R p_k + t - g_k|^2 with det(R) = +1 (Umeyama): the SVD of the
    cross-covariance gives R; if it would be a reflection, the smallest singular direction is flipped.
    Returns the aligned prediction (and (s, R, t) when asked, with aligned = s * pred @ R.T + t).
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    pred, gt = np.broadcast_arrays(pred, gt)
    mu_p = pred.mean(axis=-2, keepdims=True)
    mu_g = gt.mean(axis=-2, keepdims=True)
    p0 = pred - mu_p
    g0 = gt - mu_g
    # cross-covariance H = sum_k g_k p_k^T; R = U diag(1,1,d) V^T maximises tr(R^T H)
    H = np.swapaxes(g0, -1, -2) @ p0
    U, S, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(U @ Vt))
    d = np.where(d == 0, 1.0, d)
    D = np.ones(S.shape)
    D[..., -1] = d
    R = (U * D[..., None, :]) @ Vt
    var_p = np.sum(p0 ** 2, axis=(-2, -1))
    scale = np.sum(S * D, axis=-1) / np.maximum(var_p, 1e-12)
    aligned = scale[..., None, None] * (p0 @ np.swapaxes(R, -1, -2)) + mu_g
    if return_transform:
        t = mu_g[..., 0, :] - scale[..., None] * np.einsum("...ij,...j->...i", R, mu_p[..., 0, :])
        return aligned, (scale, R, t)
    return aligned


def p_mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Protocol #2: MPJPE after similarity Procrustes alignment, (..., K, 3) -> (...)."""
    return mpjpe(procrustes_align(pred, gt), gt)


def hypothesis_errors(hypotheses: np.ndarray, gt: np.ndarray, *, procrustes: bool = False) -> np.ndarray:
    """(N, M, K, 3) hypotheses against (N, K, 3) ground truth -> (N, M) per-hypothesis errors."""
    hypotheses = np.asarray(hypotheses, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)[:, None]
    return p_mpjpe(hypotheses, gt) if procrustes else mpjpe(hypotheses, gt)


def best_of_m(errors: np.ndarray) -> np.ndarray:
    """(N, M) errors -> (N,) error of the closest hypothesis per frame (an oracle selection)."""
    return np.min(np.asarray(errors), axis=-1)


def select_hypothesis(errors: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(N, M) errors and (N,) chosen hypothesis (e.g. the largest mixing weight) -> (N,)."""
    errors = np.asarray(errors)
    return np.take_along_axis(errors, np.asarray(index, dtype=np.int64)[:, None], axis=1)[:, 0]


def per_action_mean(errors: np.ndarray, action_index: np.ndarray, action_names: list[str]) -> tuple[dict, float]:
    """Mean error per action (over its frames) and the unweighted mean over actions present."""
    errors = np.asarray(errors, dtype=np.float64)
    action_index = np.asarray(action_index)
    per_action = {}
    for i, name in enumerate(action_names):
        sel = action_index == i
        if np.any(sel):
            per_action[name] = float(errors[sel].mean())
    mean = float(np.mean(list(per_action.values()))) if per_action else float("nan")
    return per_action, mean


def format_table(per_action: dict[str, dict[str, float]], means: dict[str, float], *, title: str = "") -> str:
    """Actions as rows, (P1, P2) x (best-of-M, most likely) as columns, mm, plus the unweighted mean."""
    cols = ["p1_best", "p1_ml", "p2_best", "p2_ml"]
    heads = ["P1 best", "P1 ML", "P2 best", "P2 ML"]
    width = max([len(a) for a in per_action] + [len("Average")])
    lines = [title] if title else []
    lines.append(f"{'Action':<{width}}  " + "  ".join(f"{h:>8}" for h in heads))
    for action, row in per_action.items():
        lines.append(f"{action:<{width}}  " + "  ".join(f"{row[c]:8.1f}" for c in cols))
    lines.append(f"{'Average':<{width}}  " + "  ".join(f"{means[c]:8.1f}" for c in cols))
    return "\n".join(lines)
