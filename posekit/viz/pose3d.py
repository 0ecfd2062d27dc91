"""3-D hypotheses (matplotlib): the 2-D input and one 3-D panel per hypothesis, left limbs
blue, right red, ground truth dashed."""
from __future__ import annotations

import numpy as np

from posekit.viz.colors import _side_color, limb_sides


def _figure_to_rgb(fig) -> np.ndarray:
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    import matplotlib.pyplot as plt
    plt.close(fig)
    return rgb


def _gt_from(results, gt) -> np.ndarray | None:
    """Ground-truth 3-D poses (P, K, 3): the argument, else Results.meta["gt_keypoints_3d"]."""
    if gt is None:
        gt = results.meta.get("gt_keypoints_3d") if isinstance(results.meta, dict) else None
    if gt is None:
        return None
    gt = np.asarray(gt, dtype=np.float64)
    k = results.skeleton.num_keypoints
    if gt.shape[-2:] != (k, 3):
        raise ValueError(f"plot_3d_hypotheses: ground truth must be (P, {k}, 3), got {gt.shape}")
    return gt.reshape(-1, k, 3)


def _draw_pose_3d(ax, pose, sides, limbs, *, alpha=1.0, width=2.0, style="-", color=None) -> None:
    # camera frame (x right, y down, z forward) shown as x, depth z, height -y
    for (a, b), s in zip(limbs, sides):
        ax.plot(pose[[a, b], 0], pose[[a, b], 2], -pose[[a, b], 1], style, color=color or _side_color(s),
                alpha=alpha, linewidth=width)


def plot_3d_hypotheses(results, *, gt: np.ndarray | None = None, max_hypotheses: int = 8,
                       panel_size: float = 3.0, dpi: int = 100) -> np.ndarray:
    """The lifting figure (`lifting_figure`) as an RGB image."""
    return _figure_to_rgb(lifting_figure(results, gt=gt, max_hypotheses=max_hypotheses, panel_size=panel_size,
                                         dpi=dpi))


def lifting_figure(results, *, gt: np.ndarray | None = None, max_hypotheses: int = 8,
                   panel_size: float = 3.0, dpi: int = 100):
    """The lifting figure (matplotlib): one row per person; the 2-D input (on the image when
    known), then one small 3-D panel per hypothesis, most likely first, weight (and error against
    the ground truth, when known) in its title. Left limbs blue, right red; ground truth (the
    `gt` argument or Results.meta["gt_keypoints_3d"], (P, K, 3) mm) in dashed black in every
    panel. Millimetre axes, equal aspect, the same limits across a person's panels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    sk = results.skeleton
    sides = limb_sides(sk)
    limbs = list(sk.limbs)
    n_people = len(results)
    hyps_all = (np.asarray(results.hypotheses, dtype=np.float64) if results.hypotheses is not None
                else np.asarray(results.keypoints, dtype=np.float64)[:, None])
    if results.hypothesis_weights is not None:
        weights_all = np.asarray(results.hypothesis_weights, dtype=np.float64).reshape(hyps_all.shape[:2])
    else:
        weights_all = np.full(hyps_all.shape[:2], 1.0 / hyps_all.shape[1])
    gt_all = _gt_from(results, gt)
    k2d = None if results.keypoints_2d is None else np.asarray(results.keypoints_2d, dtype=np.float64)
    m_shown = min(hyps_all.shape[1], max_hypotheses)
    cols = m_shown + (1 if k2d is not None else 0)
    rows = max(n_people, 1)
    fig = plt.figure(figsize=(panel_size * cols, panel_size * rows + 0.5), dpi=dpi)
    mpjpe_meta = results.meta.get("mpjpe_per_hypothesis_mm") if isinstance(results.meta, dict) else None

    for p in range(n_people):
        hyps, weights = hyps_all[p], weights_all[p]
        order = np.argsort(-weights)[:m_shown]
        person_gt = gt_all[p] if gt_all is not None and p < len(gt_all) else None
        col = 0
        if k2d is not None:
            ax2 = fig.add_subplot(rows, cols, p * cols + 1)
            pts = k2d[p]
            if results.image is not None:
                ax2.imshow(results.image)
            for (a, b), s in zip(limbs, sides):
                ax2.plot(pts[[a, b], 0], pts[[a, b], 1], "-", color=_side_color(s), linewidth=2)
            ax2.scatter(pts[:, 0], pts[:, 1], s=10, c="k", zorder=3)
            if results.image is None:
                ax2.invert_yaxis()
            ax2.set_aspect("equal")
            ax2.tick_params(labelsize=6)
            ax2.set_title(f"person {p + 1}: 2-D input (px)" if n_people > 1 else "2-D input (px)", fontsize=8)
            col = 1
        pts3 = hyps[order].reshape(-1, 3)
        if person_gt is not None:
            pts3 = np.concatenate([pts3, person_gt], axis=0)
        pts3 = pts3[np.isfinite(pts3).all(axis=1)]
        if not len(pts3):
            pts3 = np.zeros((1, 3))
        mid = (pts3.max(0) + pts3.min(0)) / 2
        r = float((pts3.max(0) - pts3.min(0)).max()) / 2 * 1.05 + 1e-6
        for n, m in enumerate(order):
            ax = fig.add_subplot(rows, cols, p * cols + col + n + 1, projection="3d")
            if person_gt is not None:
                _draw_pose_3d(ax, person_gt, sides, limbs, style="--", color="k", width=1.0, alpha=0.7)
            _draw_pose_3d(ax, hyps[m], sides, limbs, width=2.0)
            title = f"h{n + 1}  w={float(weights[m]):.2f}"
            if person_gt is not None:
                title += f"  {float(np.linalg.norm(hyps[m] - person_gt, axis=-1).mean()):.0f} mm"
            elif mpjpe_meta is not None and n_people == 1 and m < len(mpjpe_meta):
                title += f"  {float(mpjpe_meta[m]):.0f} mm"
            ax.set_title(title, fontsize=8)
            ax.set_xlim(mid[0] - r, mid[0] + r)
            ax.set_ylim(mid[2] - r, mid[2] + r)
            ax.set_zlim(-mid[1] - r, -mid[1] + r)
            ax.set_box_aspect((1, 1, 1))
            for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
                axis.set_major_locator(MaxNLocator(3))
            ax.tick_params(labelsize=6, pad=-2)
            ax.set_xlabel("x (mm)", fontsize=7, labelpad=-4)
            ax.set_ylabel("depth (mm)", fontsize=7, labelpad=-4)
            ax.set_zlabel("up (mm)", fontsize=7, labelpad=-4)
            ax.view_init(elev=12, azim=-70)
    handles = [Line2D([], [], color=_side_color(-1), lw=2, label="left"),
               Line2D([], [], color=_side_color(1), lw=2, label="right"),
               Line2D([], [], color=_side_color(0), lw=2, label="centre")]
    if gt_all is not None:
        handles.append(Line2D([], [], color="k", ls="--", lw=1, label="ground truth"))
    title = f"{hyps_all.shape[1]} hypotheses, most likely first"
    if results.path:
        title = f"{results.path}: {title}"
    fig.suptitle(title, fontsize=9)
    fig.legend(handles=handles, loc="upper right", fontsize=7, ncol=len(handles), frameon=False)
    top = 1 - 0.55 / (panel_size * rows + 0.5)
    fig.subplots_adjust(left=0.03, right=0.98, bottom=0.04, top=top - 0.04 / rows, wspace=0.12, hspace=0.25)
    return fig
