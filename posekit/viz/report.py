"""Figures of the evaluation report (engine/report.py): curves, bars, the error-taxonomy bars and
the gallery's ground truth | prediction pairs. Each returns PNG bytes, so the caller decides where
(and how atomically) they are written; matplotlib runs headless (Agg)."""
from __future__ import annotations

import io

import numpy as np

from posekit.skeletons import Skeleton

# the colours of coco-analyze's figures, so a reader of the paper recognises them
ERROR_COLORS = {"good": "#7FB069", "jitter": "#8C4646", "inversion": "#D96459", "swap": "#F2AE72",
                "miss": "#F2E394"}


def _figure(width: float = 7.0, height: float = 4.0):
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    return fig, ax


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def curves_png(x: np.ndarray, curves: dict[str, np.ndarray], *, xlabel: str, ylabel: str, title: str,
               highlight: str | None = None) -> bytes:
    """Lines y(x), one per name (e.g. PCK vs threshold per joint); `highlight` drawn thick and black."""
    fig, ax = _figure(7.5, 4.5)
    for name, y in curves.items():
        if name == highlight:
            continue
        ax.plot(x, y, lw=1.2, alpha=0.85, label=name)
    if highlight in curves:
        ax.plot(x, curves[highlight], lw=3, color="black", label=highlight)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.set_xlim(float(np.min(x)), float(np.max(x)))
    ax.legend(fontsize=7, ncol=2 if len(curves) > 8 else 1, loc="lower right")
    return _png(fig)


def bars_png(categories: list[str], series: dict[str, list[float]], *, ylabel: str, title: str,
             horizontal_line: float | None = None) -> bytes:
    """Grouped bars: one group per category, one bar per series (e.g. P1 and P2 per action)."""
    fig, ax = _figure(min(12.0, max(6.0, 0.3 * len(categories) * max(1, len(series)) + 2)), 4.5)
    n = max(1, len(series))
    width = 0.8 / n
    xs = np.arange(len(categories))
    for i, (name, values) in enumerate(series.items()):
        vals = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        ax.bar(xs + (i - (n - 1) / 2) * width, np.nan_to_num(vals), width, label=name)
    if horizontal_line is not None:
        ax.axhline(horizontal_line, color="black", lw=1, ls="--")
    ax.set_xticks(xs)
    ax.set_xticklabels(categories, rotation=45 if len(categories) > 6 else 0, ha="right" if len(categories) > 6
                       else "center", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _png(fig)


def error_breakdown_png(keypoint_names: list[str], counts: dict[str, list[int]], *, title: str) -> bytes:
    """Stacked bars per keypoint type: the fraction of good / jitter / inversion / swap / miss."""
    fig, ax = _figure(max(7.0, 0.45 * len(keypoint_names) + 2), 4.8)
    total = np.sum([np.asarray(counts[t], dtype=np.float64) for t in ERROR_COLORS], axis=0)
    bottom = np.zeros(len(keypoint_names))
    xs = np.arange(len(keypoint_names))
    for t, color in ERROR_COLORS.items():
        frac = np.divide(np.asarray(counts[t], dtype=np.float64), total, out=np.zeros_like(bottom), where=total > 0)
        ax.bar(xs, 100 * frac, 0.8, bottom=100 * bottom, color=color, edgecolor="black", lw=0.4, label=t)
        bottom += frac
    ax.set_xticks(xs)
    ax.set_xticklabels(keypoint_names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("% of labelled keypoints of matched detections")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def histogram_png(values: np.ndarray, *, xlabel: str, title: str, bins: int = 30) -> bytes:
    fig, ax = _figure(6.0, 3.8)
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    ax.hist(values, bins=bins, color="#4F82BD", edgecolor="white")
    if len(values):
        ax.axvline(float(np.median(values)), color="black", ls="--", lw=1, label=f"median {np.median(values):.1f}")
        ax.legend(fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("frames")
    ax.set_title(title, fontsize=10)
    return _png(fig)


def scatter_png(x: np.ndarray, y: np.ndarray, *, xlabel: str, ylabel: str, title: str) -> bytes:
    """Points with the y = x diagonal (e.g. fitted vs held-out error per point)."""
    fig, ax = _figure(5.0, 4.5)
    ax.scatter(x, y, s=14, alpha=0.7)
    hi = float(np.nanmax(np.concatenate([np.ravel(x), np.ravel(y)]))) if np.size(x) else 1.0
    ax.plot([0, hi], [0, hi], color="black", lw=1, ls="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return _png(fig)


def _encode_png(image: np.ndarray) -> bytes:
    import cv2
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode a report image as PNG")
    return buf.tobytes()


def _upscale(image: np.ndarray, side: int) -> np.ndarray:
    import cv2
    h, w = image.shape[:2]
    s = side / max(h, w)
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))),
                      interpolation=cv2.INTER_LINEAR if s > 1 else cv2.INTER_AREA)


def _caption(image: np.ndarray, text: str) -> np.ndarray:
    import cv2
    bar = np.full((22, image.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (20, 20, 20), 1, cv2.LINE_AA)
    return np.concatenate([bar, image], 0)


def pair_png(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, skeleton: Skeleton, *, side: int = 256,
             left: str = "ground truth", right: str = "prediction") -> bytes:
    """Ground truth | prediction side by side on one image (keypoints (P, K, 2|3) in its pixels;
    a GT joint with visibility 0 is not drawn)."""
    from posekit.viz import draw_skeleton
    h, w = image.shape[:2]
    scale = side / max(h, w)
    big = _upscale(image, side)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, skeleton.num_keypoints, gt.shape[-1])
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, skeleton.num_keypoints, pred.shape[-1])
    gt_scores = (gt[..., 2] > 0).astype(np.float64) if gt.shape[-1] > 2 else np.ones(gt.shape[:2])
    finite = np.isfinite(pred[..., :2]).all(-1)
    panels = []
    for kp, scores, label in ((gt[..., :2] * scale, gt_scores, left),
                              (np.nan_to_num(pred[..., :2]) * scale, finite.astype(np.float64), right)):
        drawn = draw_skeleton(big, kp, scores, skeleton, score_threshold=0.5, boxes=None) if len(kp) else big
        panels.append(_caption(drawn, label))
    gap = np.full((panels[0].shape[0], 6, 3), 255, np.uint8)
    return _encode_png(np.concatenate([panels[0], gap, panels[1]], 1))


def figure_3d_png(pred: np.ndarray, gt: np.ndarray, skeleton: Skeleton, *, title: str) -> bytes:
    """A 3-D pose (K, 3) in mm against its ground truth, one panel, the y axis pointing down."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(4.0, 4.0), dpi=100)
    ax = fig.add_subplot(111, projection="3d")
    for pose, color, label in ((gt, "#2E7D32", "ground truth"), (pred, "#C62828", "prediction")):
        for a, b in skeleton.limbs:
            ax.plot([pose[a, 0], pose[b, 0]], [pose[a, 2], pose[b, 2]], [-pose[a, 1], -pose[b, 1]], color=color, lw=2)
        ax.scatter(pose[:, 0], pose[:, 2], -pose[:, 1], color=color, s=6, label=label)
    both = np.concatenate([gt, pred])
    centre, half = both.mean(0), max(float(np.ptp(both, 0).max()) / 2, 1.0)
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[2] - half, centre[2] + half)
    ax.set_zlim(-centre[1] - half, -centre[1] + half)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_xticklabels([])
    ax.set_yticklabels([])
    ax.set_zticklabels([])
    return _png(fig)
