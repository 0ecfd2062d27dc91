"""OKS sigmas of a custom skeleton from repeated annotations of the same people.

COCO's definition (cocodataset.org/#keypoints-eval): sigma_i^2 = E[d_i^2 / s^2], d_i the distance of
an annotation of keypoint i from the true point and s^2 the object's area. The truth is unknown, so
it is estimated from m >= 2 annotations of one person: sum_j |a_j - mean|^2 / (m - 1) is an unbiased
estimate of E[d^2] (for m = 2 it is |a_1 - a_2|^2 / 2: two annotators disagree by sqrt(2) x sigma
on average). Per keypoint, sigma is the square root of the mean over people of that estimate
divided by the person's area; the 95 % interval comes from resampling the people (bootstrap).

`oks_sigmas_for` is which sigmas a recipe's OKS AP uses: its own, the skeleton's, or one default.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from posekit.skeletons import Skeleton

MIN_PEOPLE = 2  # fewer repeated people than this per keypoint: no estimate
DEFAULT_SIGMA = 0.07  # OKS sigma of every keypoint when neither the skeleton nor eval.sigmas gives one
# (COCO's 17 sigmas average 0.067: a keypoint about as precise as a COCO elbow)


def oks_sigmas_for(skeleton: Skeleton, sigmas=None, default_sigma: float = DEFAULT_SIGMA, *,
                   error=ValueError) -> np.ndarray:
    """The (K,) OKS sigmas of a recipe: `sigmas` (eval.sigmas; `error` unless K positive numbers),
    else the skeleton's own, else `default_sigma` for every keypoint with a RuntimeWarning saying
    how to declare them (AP then compares custom keypoints as if all were about a COCO elbow)."""
    k = skeleton.num_keypoints
    if sigmas is not None:
        if len(sigmas) != k or min(sigmas) <= 0:
            raise error(f"eval.sigmas must be {k} positive numbers (one per keypoint of {skeleton.name!r}), "
                        f"got {sigmas}")
        return np.asarray(sigmas, dtype=np.float64)
    if skeleton.sigmas is not None:
        return skeleton.oks_sigmas()
    warnings.warn(f"skeleton {skeleton.name!r} declares no OKS sigmas: OKS AP uses eval.default_sigma="
                  f"{default_sigma} for every keypoint (set `sigmas:` in the skeleton YAML or eval.sigmas)",
                  RuntimeWarning, stacklevel=2)
    return np.full(k, float(default_sigma))


@dataclass
class SigmaEstimate:
    sigmas: np.ndarray  # (K,), NaN where too few repeats
    low: np.ndarray  # (K,) 95 % bootstrap interval
    high: np.ndarray
    people: np.ndarray  # (K,) people with >= 2 annotations of the keypoint
    pairs: np.ndarray  # (K,) annotation pairs those people give (m (m - 1) / 2 each)


def estimate_sigmas(groups, areas, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> SigmaEstimate:
    """groups: one (m, K, 3) array per person (m >= 1 annotations: x, y, visibility; v > 0 is
    labelled); areas: that person's area (s^2). Returns per-keypoint sigmas with intervals."""
    if len(groups) != len(areas):
        raise ValueError(f"{len(groups)} groups but {len(areas)} areas")
    if not len(groups):
        raise ValueError("no people given")
    k = np.asarray(groups[0]).shape[1]
    ratio = np.full((len(groups), k), np.nan)  # per person and keypoint: E[d^2] estimate / area
    pairs = np.zeros((len(groups), k))
    for n, (g, area) in enumerate(zip(groups, areas)):
        g = np.asarray(g, dtype=np.float64)
        if g.ndim != 3 or g.shape[1:] != (k, 3):
            raise ValueError(f"person {n}: annotations must be (m, {k}, 3), got {g.shape}")
        if not (np.isfinite(area) and area > 0):
            raise ValueError(f"person {n}: area must be positive, got {area}")
        for j in range(k):
            pts = g[g[:, j, 2] > 0, j, :2]
            m = len(pts)
            if m >= 2:
                ratio[n, j] = ((pts - pts.mean(0)) ** 2).sum() / (m - 1) / area
                pairs[n, j] = m * (m - 1) / 2
    have = np.isfinite(ratio)
    people = have.sum(0)
    total = np.where(have, ratio, 0.0).sum(0)
    sigmas = np.where(people >= MIN_PEOPLE, np.sqrt(total / np.maximum(people, 1)), np.nan)
    rng = np.random.default_rng(seed)
    low, high = np.full(k, np.nan), np.full(k, np.nan)
    for j in range(k):
        r = ratio[have[:, j], j]
        if len(r) < MIN_PEOPLE:
            continue
        draws = rng.integers(len(r), size=(n_boot, len(r)))
        boot = np.sqrt(r[draws].mean(1))
        low[j], high[j] = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return SigmaEstimate(sigmas, low, high, people.astype(int), pairs.sum(0).astype(int))


def match_repeats(annotations, *, iou_threshold: float = 0.5):
    """Group the annotations of one image into people: greedy by box IoU >= threshold, each group
    holding at most one annotation per source (annotator file). annotations: [(source, box (4,),
    keypoints (K, 3), area)]. Returns lists of indices."""
    groups: list[list[int]] = []
    for i, (src, box, _, _) in enumerate(annotations):
        best, best_iou = None, iou_threshold
        for g in groups:
            if any(annotations[j][0] == src and src is not None for j in g):
                continue
            iou = _iou(box, annotations[g[0]][1])
            if iou >= best_iou:
                best, best_iou = g, iou
        if best is None:
            groups.append([i])
        else:
            best.append(i)
    return groups


def _iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0
