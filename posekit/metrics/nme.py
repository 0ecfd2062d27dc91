"""Landmark NME with the unsupervised-landmark protocol of Thewlis et al. (2017).

Discovered landmarks carry no names, so they are evaluated through a linear least-squares
regressor from the 2K discovered coordinates (plus a bias) to the 10 annotated ones, fitted on
the training split (MAFL train) and applied to the test split. The error is the mean
Euclidean distance over the annotated points divided by the inter-ocular distance (the two
eye landmarks; MAFL's "eye centres"), in percent, averaged over images.
"""
from __future__ import annotations

import numpy as np

# the regressor's design and application are numpy-only: the ONNX runtime applies a fitted one too
from posekit.runtime.landmarks import apply_regressor
from posekit.runtime.landmarks import regressor_design as _design

__all__ = ["fit_landmark_regressor", "apply_regressor", "interocular_nme", "mean_shape_baseline"]


def fit_landmark_regressor(discovered: np.ndarray, annotated: np.ndarray, *,
                           underdetermined: str = "error") -> np.ndarray:
    """W (2K + 1, 2P) minimising ||[d, 1] W - a||^2 over N images: (N, K, 2) -> (N, P, 2).

    Coordinates are flattened as (x0, y0, x1, y1, ...); the last row of W is the bias.
    With N < 2K + 1 images the fit is not determined: `underdetermined="error"` refuses,
    "min_norm" takes the minimum-norm linear part on mean-centred data (the bias, unpenalised,
    matches the means), so smoke runs on a handful of images still give a finite number."""
    if underdetermined not in ("error", "min_norm"):
        raise ValueError(f"underdetermined must be 'error' or 'min_norm', got {underdetermined!r}")
    x = _design(discovered)
    a = np.asarray(annotated, dtype=np.float64)
    if a.ndim != 3 or a.shape[-1] != 2 or len(a) != len(x):
        raise ValueError(f"annotated landmarks must be (N={len(x)}, P, 2), got {a.shape}")
    if len(x) < x.shape[1]:
        if underdetermined == "error" or len(x) == 0:
            raise ValueError(f"{len(x)} images cannot determine a regressor with {x.shape[1]} inputs per output "
                             f"(need N >= 2K + 1)")
        d, t = x[:, :-1], a.reshape(len(a), -1)
        d_mean, t_mean = d.mean(0), t.mean(0)
        lin, *_ = np.linalg.lstsq(d - d_mean, t - t_mean, rcond=None)
        return np.concatenate([lin, (t_mean - d_mean @ lin)[None]], axis=0)
    w, *_ = np.linalg.lstsq(x, a.reshape(len(a), -1), rcond=None)
    return w


def interocular_nme(pred: np.ndarray, gt: np.ndarray, left_eye: int = 0, right_eye: int = 1, *,
                    per_image: bool = False):
    """Mean over images of (mean point error / inter-ocular distance), in %. (N, P, 2) each."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] < 2:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must both be (N, P, 2)")
    iod = np.linalg.norm(gt[:, left_eye, :2] - gt[:, right_eye, :2], axis=-1)
    if np.any(iod <= 0):
        raise ValueError(f"{int(np.sum(iod <= 0))} image(s) have coincident eye landmarks (zero inter-ocular distance)")
    err = np.linalg.norm(pred[..., :2] - gt[..., :2], axis=-1).mean(-1) / iod * 100.0
    return err if per_image else float(err.mean())


def mean_shape_baseline(train_gt: np.ndarray, test_gt: np.ndarray, left_eye: int = 0, right_eye: int = 1) -> float:
    """NME (%) of predicting the mean training shape for every test image: the floor any
    discovered-landmark regressor must beat."""
    mean = np.asarray(train_gt, dtype=np.float64).mean(0)
    test_gt = np.asarray(test_gt, dtype=np.float64)
    return interocular_nme(np.broadcast_to(mean, test_gt.shape), test_gt, left_eye, right_eye)
