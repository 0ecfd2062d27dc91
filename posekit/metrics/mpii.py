"""MPII single-person evaluation: the official PCKh table and torso PCK.

PCKh@t: a joint is correct when its error <= t x head size, head size being 0.6 x the diagonal
of the annotated head rectangle (`normalize` in the pose-hg-train files). Only annotated joints
count (MPII's occlusion flag does not matter: occluded-but-annotated joints are scored). The
table follows the official MATLAB code and HRNet: Head = head_top, the other parts average the
left and right joints, and Mean is weighted by joint counts over the 14 joints other than
pelvis and thorax (upper_neck is in the Mean but has no column).

Torso PCK@0.2 (FLIC/LSP style) normalises by the torso diagonal |l_shoulder - r_hip| (the other
diagonal when one of those is missing); samples without either are skipped.
"""
from __future__ import annotations

import numpy as np

from posekit.metrics.pck import keypoint_distances, pck
from posekit.skeletons import get_skeleton

__all__ = ["PCKH_PARTS", "mpii_pckh", "pckh_table", "format_pckh_table", "torso_pck", "torso_size"]

_SK = get_skeleton("mpii16")
_J = {name: i for i, name in enumerate(_SK.keypoints)}
# (column, joints averaged in it)
PCKH_PARTS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("Head", (_J["head_top"],)),
    ("Shoulder", (_J["l_shoulder"], _J["r_shoulder"])),
    ("Elbow", (_J["l_elbow"], _J["r_elbow"])),
    ("Wrist", (_J["l_wrist"], _J["r_wrist"])),
    ("Hip", (_J["l_hip"], _J["r_hip"])),
    ("Knee", (_J["l_knee"], _J["r_knee"])),
    ("Ankle", (_J["l_ankle"], _J["r_ankle"])),
)
EXCLUDED_FROM_MEAN = (_J["pelvis"], _J["thorax"])


def _check(pred, gt, annotated, head_size):
    pred = np.asarray(pred, dtype=np.float64)[..., :2]
    gt = np.asarray(gt, dtype=np.float64)[..., :2]
    annotated = np.asarray(annotated).astype(bool)
    head_size = np.asarray(head_size, dtype=np.float64).reshape(-1)
    if gt.ndim != 3 or gt.shape[1] != 16:
        raise ValueError(f"MPII PCKh expects (N, 16, 2) ground truth, got {gt.shape}")
    if pred.shape != gt.shape or annotated.shape != gt.shape[:2] or head_size.shape[0] != gt.shape[0]:
        raise ValueError(f"shape mismatch: pred {pred.shape}, gt {gt.shape}, annotated {annotated.shape}, "
                         f"head_size {head_size.shape}")
    bad = annotated.any(axis=1) & ~(np.isfinite(head_size) & (head_size > 0))
    if bad.any():
        raise ValueError(f"PCKh needs a positive head size for every sample with annotated joints; "
                         f"missing for sample(s) {np.flatnonzero(bad)[:10].tolist()}")
    # a non-finite prediction is simply wrong, never a NaN in the table
    pred = np.where(np.isfinite(pred), pred, 1e12)
    return pred, gt, annotated, head_size


def mpii_pckh(pred, gt, annotated, head_size, threshold: float = 0.5) -> dict:
    """Per-joint PCKh (%) at `threshold`, joint counts, and the official weighted Mean (%)."""
    pred, gt, annotated, head_size = _check(pred, gt, annotated, head_size)
    res = pck(pred, gt, annotated, np.where(head_size > 0, head_size, 1.0), threshold)
    counts = res["counts"].astype(np.float64)
    keep = np.ones(16, bool)
    keep[list(EXCLUDED_FROM_MEAN)] = False
    correct = res["correct"].sum(axis=0)
    total = counts[keep].sum()
    mean = 100.0 * correct[keep].sum() / total if total else float("nan")
    return {"per_joint": 100.0 * res["per_joint"], "counts": res["counts"], "mean": float(mean),
            "correct": res["correct"]}


def pckh_table(pred, gt, annotated, head_size) -> dict[str, float]:
    """The papers' table: Head, Shoulder, Elbow, Wrist, Hip, Knee, Ankle, Mean (all @0.5), Mean@0.1 (%).

    A part column averages its left/right joint accuracies (NaN-aware, as the official code
    averages the two per-joint rates)."""
    at5 = mpii_pckh(pred, gt, annotated, head_size, 0.5)
    at1 = mpii_pckh(pred, gt, annotated, head_size, 0.1)
    table = {}
    for name, joints in PCKH_PARTS:
        vals = at5["per_joint"][list(joints)]
        table[name] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    table["Mean"] = at5["mean"]
    table["Mean@0.1"] = at1["mean"]
    return table


def format_pckh_table(table: dict[str, float]) -> str:
    """A two-line markdown-ish table for logs and reports."""
    keys = [name for name, _ in PCKH_PARTS] + ["Mean", "Mean@0.1"]
    head = " | ".join(f"{k:>8}" for k in keys)
    row = " | ".join(f"{table[k]:8.2f}" for k in keys)
    return f"{head}\n{row}"


def torso_size(gt, annotated) -> np.ndarray:
    """(N,) torso diagonal |l_shoulder - r_hip|, else |r_shoulder - l_hip|, else NaN."""
    gt = np.asarray(gt, dtype=np.float64)[..., :2]
    annotated = np.asarray(annotated).astype(bool)
    d1 = np.linalg.norm(gt[:, _J["l_shoulder"]] - gt[:, _J["r_hip"]], axis=-1)
    ok1 = annotated[:, _J["l_shoulder"]] & annotated[:, _J["r_hip"]]
    d2 = np.linalg.norm(gt[:, _J["r_shoulder"]] - gt[:, _J["l_hip"]], axis=-1)
    ok2 = annotated[:, _J["r_shoulder"]] & annotated[:, _J["l_hip"]]
    return np.where(ok1 & (d1 > 0), d1, np.where(ok2 & (d2 > 0), d2, np.nan))


def torso_pck(pred, gt, annotated, threshold: float = 0.2) -> dict:
    """PCK@threshold normalised by the torso diagonal; samples without a torso size are skipped."""
    pred = np.asarray(pred, dtype=np.float64)[..., :2]
    gt = np.asarray(gt, dtype=np.float64)[..., :2]
    keypoint_distances(pred, gt)  # shape check with a clear message
    annotated = np.asarray(annotated).astype(bool)
    size = torso_size(gt, annotated)
    usable = np.isfinite(size)
    annotated = annotated & usable[:, None]
    pred = np.where(np.isfinite(pred), pred, 1e12)
    res = pck(pred, gt, annotated, np.where(usable, size, 1.0), threshold)
    return {"per_joint": 100.0 * res["per_joint"], "counts": res["counts"],
            "mean": 100.0 * res["mean"] if np.isfinite(res["mean"]) else float("nan"),
            "samples": int(usable.sum())}
