"""Drawing (cv2) and plots (matplotlib). No logic lives here."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from posekit.skeletons import Skeleton


def draw_skeleton(image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray | None, skeleton: Skeleton, *,
                  score_threshold: float = 0.0, radius: int | None = None, thickness: int | None = None) -> np.ndarray:
    """RGB image with every person's limbs and joints drawn; joints at or below the threshold
    (or non-finite) are skipped."""
    canvas = np.ascontiguousarray(image.copy())
    if canvas.ndim == 2:
        canvas = cv2.cvtColor(canvas, cv2.COLOR_GRAY2RGB)
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, skeleton.num_keypoints, keypoints.shape[-1])
    if scores is None:
        scores = np.ones(keypoints.shape[:2])
    scores = np.asarray(scores).reshape(keypoints.shape[:2])
    scale = max(canvas.shape[:2]) / 400.0
    radius = radius or max(2, int(round(3 * scale)))
    thickness = thickness or max(1, int(round(2 * scale)))
    kcol = skeleton.keypoint_colors()
    lcol = skeleton.limb_colors_rgb()
    for person, person_scores in zip(keypoints, scores):
        ok = np.isfinite(person[:, :2]).all(axis=1) & (person_scores > score_threshold)
        for (a, b), color in zip(skeleton.limbs, lcol):
            if ok[a] and ok[b]:
                pa = tuple(int(round(v)) for v in person[a, :2])
                pb = tuple(int(round(v)) for v in person[b, :2])
                cv2.line(canvas, pa, pb, tuple(int(c) for c in color), thickness, cv2.LINE_AA)
        for j in np.flatnonzero(ok):
            p = tuple(int(round(v)) for v in person[j, :2])
            cv2.circle(canvas, p, radius, tuple(int(c) for c in kcol[j]), -1, cv2.LINE_AA)
            cv2.circle(canvas, p, radius, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def caption(image: np.ndarray, text: str, *, min_height: int = 320) -> np.ndarray:
    """The image (upscaled to at least `min_height` px, so small crops stay readable) under a
    white bar with `text`."""
    img = np.ascontiguousarray(image)
    if img.shape[0] < min_height:
        f = min_height / img.shape[0]
        img = cv2.resize(img, (int(round(img.shape[1] * f)), min_height), interpolation=cv2.INTER_NEAREST)
    bar = np.full((28, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, img], axis=0)


def _figure_to_rgb(fig) -> np.ndarray:
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    import matplotlib.pyplot as plt
    plt.close(fig)
    return rgb


def plot_3d_hypotheses(results) -> np.ndarray:
    """All 3-D hypotheses of the first person, line width/alpha by mixing weight, beside the 2-D input."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sk = results.skeleton
    has_2d = results.keypoints_2d is not None
    fig = plt.figure(figsize=(9 if has_2d else 5, 4.5))
    if has_2d:
        ax2 = fig.add_subplot(1, 2, 1)
        k2 = np.asarray(results.keypoints_2d)[0]
        if results.image is not None:
            ax2.imshow(results.image)
        for a, b in sk.limbs:
            ax2.plot(k2[[a, b], 0], k2[[a, b], 1], "-", color="tab:blue")
        ax2.scatter(k2[:, 0], k2[:, 1], s=8, c="k")
        if results.image is None:
            ax2.invert_yaxis()
        ax2.set_aspect("equal")
        ax2.set_title("2-D input")
    ax = fig.add_subplot(1, 2 if has_2d else 1, 2 if has_2d else 1, projection="3d")
    hyps = results.hypotheses[0] if results.hypotheses is not None else results.keypoints[:1]
    weights = (results.hypothesis_weights[0] if results.hypothesis_weights is not None
               else np.ones(len(hyps)) / len(hyps))
    cmap = plt.get_cmap("tab10")
    for m, (pose, w) in enumerate(zip(hyps, weights)):
        alpha = 0.25 + 0.75 * float(w) / max(float(np.max(weights)), 1e-9)
        for a, b in sk.limbs:
            # camera frame (x right, y down, z forward) shown with z as depth and -y up
            ax.plot(pose[[a, b], 0], pose[[a, b], 2], -pose[[a, b], 1], color=cmap(m % 10), alpha=alpha,
                    linewidth=0.5 + 2.5 * float(w))
        ax.plot([], [], color=cmap(m % 10), label=f"h{m} w={float(w):.2f}")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_xlabel("x")
    ax.set_ylabel("z")
    ax.set_zlabel("-y")
    pts = hyps.reshape(-1, 3)
    mid = (pts.max(0) + pts.min(0)) / 2
    r = (pts.max(0) - pts.min(0)).max() / 2 + 1e-6
    ax.set_xlim(mid[0] - r, mid[0] + r)
    ax.set_ylim(mid[2] - r, mid[2] + r)
    ax.set_zlim(-mid[1] - r, -mid[1] + r)
    ax.set_title(f"{len(hyps)} hypotheses")
    fig.tight_layout()
    return _figure_to_rgb(fig)


def plot_training_curves(rows: list[dict], path: str | Path, *, metric_keys: list[str] | None = None) -> Path:
    """Loss (and learning rate) against step, plus validation metrics, from metrics.csv rows."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    train = [r for r in rows if r.get("loss") not in (None, "")]
    val = [r for r in rows if any(k.startswith("val/") and r.get(k) not in (None, "") for k in r)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    if train:
        steps = [int(r["step"]) for r in train]
        axes[0].plot(steps, [float(r["loss"]) for r in train], label="train loss")
        axes[0].set_yscale("log" if all(float(r["loss"]) > 0 for r in train) else "linear")
        axes[0].set_xlabel("step")
        axes[0].legend(loc="upper right")
        lr_ax = axes[0].twinx()
        lr_ax.plot(steps, [float(r["lr"]) for r in train], color="tab:orange", alpha=0.5, label="lr")
        lr_ax.set_ylabel("lr")
    keys = metric_keys or sorted({k for r in val for k in r if k.startswith("val/") and r.get(k) not in (None, "")})
    for k in keys:
        pts = [(int(r["step"]), float(r[k])) for r in val if r.get(k) not in (None, "")]
        if pts:
            axes[1].plot(*zip(*pts), marker="o", label=k)
    axes[1].set_xlabel("step")
    if axes[1].lines:
        axes[1].legend(fontsize=7)
    axes[0].set_title("training")
    axes[1].set_title("validation")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
