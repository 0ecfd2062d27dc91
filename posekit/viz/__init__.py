"""Drawing (cv2) and plots (matplotlib). No logic lives here.

Sizes (lines, dots, fonts) follow the image size, so a 64 px crop and a 4k photo both read well;
left/right colours come from the skeleton (keypoint names, then flip pairs). Several people in one
image are told apart by colour (one per person or track id), box labels never overlap, and a
person under the person threshold is drawn greyed, thin and dashed (see `draw_skeleton`).
"""
from __future__ import annotations

import colorsys
from pathlib import Path

import cv2
import numpy as np

from posekit.skeletons import Skeleton

LEFT_RGB = (40, 120, 230)  # blue
RIGHT_RGB = (230, 70, 40)  # red
CENTRE_RGB = (90, 90, 90)


def person_color(i: int) -> tuple[int, int, int]:
    """RGB of person (or track id) `i`: golden-ratio hues, so neighbours in order differ most and
    the same id keeps its colour from frame to frame."""
    r, g, b = colorsys.hsv_to_rgb((0.13 + int(i) * 0.618034) % 1.0, 0.9, 1.0)
    return int(255 * r), int(255 * g), int(255 * b)


def person_colors(n: int) -> np.ndarray:
    """(n, 3) uint8 RGB, distinct per person (golden-ratio hues, saturated, bright)."""
    return np.array([person_color(i) for i in range(n)], dtype=np.uint8).reshape(n, 3)


LOW_SCORE_GREY = 110  # a person under the person threshold: its colour mixed half-way to this grey
LOW_SCORE_LABEL_RGB = (128, 128, 128)


def _faded(color) -> tuple[int, int, int]:
    """A person colour half-way to mid grey: still tells people apart, reads as "not sure" on light
    and dark images alike (transparency vanished on snow)."""
    return tuple(int(round((c + LOW_SCORE_GREY) / 2)) for c in color)


def draw_sizes(shape: tuple[int, ...]) -> dict:
    """Line thickness, dot radius, font scale and font thickness for an image of `shape` (H, W, ...):
    about 0.4 % of the mean side for lines, never below 1 px."""
    side = (shape[0] + shape[1]) / 2.0
    thickness = max(1, int(round(side * 0.004)))
    radius = max(2, int(round(side * 0.009)))
    font = max(0.35, side / 900.0)
    return {"thickness": thickness, "radius": radius, "font_scale": font,
            "font_thickness": max(1, int(round(font * 1.6)))}


def put_text(canvas: np.ndarray, text: str, org: tuple[int, int], *, scale: float, color=(255, 255, 255),
             thickness: int = 1, outline=(0, 0, 0)) -> None:
    """Text with a dark outline so it reads on any background (in place)."""
    org = (int(org[0]), int(org[1]))
    if outline is not None:
        cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, tuple(int(c) for c in outline),
                    thickness + 2, cv2.LINE_AA)
    cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, tuple(int(c) for c in color), thickness,
                cv2.LINE_AA)


def _pt(p) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def _intersects(a, b) -> bool:
    """Rectangles (x0, y0, x1, y1), inclusive pixel bounds."""
    return not (a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1])


def label_rects(boxes: np.ndarray, sizes: list[tuple[int, int]], image_shape: tuple[int, ...], *,
                margin: int = 1) -> list[tuple[int, int, int, int] | None]:
    """Where each box's label goes, as inclusive pixel rectangles (x0, y0, x1, y1), so that no two
    labels intersect and each lies inside the image.

    `boxes` (P, 4) x, y, w, h; `sizes` the (width, height) of each label. In order of preference a
    label sits just above its box's top-left corner (or top-right), just below its bottom-left,
    inside its top-left, then is shifted down / up a label height at a time, first within the box's
    width, then beside it, until it is free.
    A label with no free spot in the image (or a non-finite / empty box) gets None and is not drawn:
    overlapping labels would be unreadable, which is worse than a missing one."""
    h_img, w_img = int(image_shape[0]), int(image_shape[1])
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    placed: list[tuple[int, int, int, int]] = []
    out: list[tuple[int, int, int, int] | None] = []
    for box, (tw, th) in zip(boxes, sizes):
        if not np.isfinite(box).all() or box[2] <= 0 or box[3] <= 0 or tw >= w_img or th >= h_img:
            out.append(None)
            continue
        x0, y0 = _pt(box[:2])
        x1, y1 = _pt(box[:2] + box[2:])
        step = th + margin
        # preferred anchors (top-left corners of the label), then shifts a label height at a time
        ys = [y0 - margin - th - 1, y1 + margin + 1, y0 + margin + 1]
        for k in range(1, (h_img // max(step, 1)) + 2):
            ys += [y0 + margin + 1 + k * step, y0 - margin - th - 1 - k * step]
        xs = [x0, x1 - tw]
        xs += [x0 + k * (tw + margin) for k in range(1, (w_img // max(tw + margin, 1)) + 1)]
        xs += [x0 - k * (tw + margin) for k in range(1, (w_img // max(tw + margin, 1)) + 1)]
        near = [x for x in xs if x0 - tw <= x <= x1]  # first every spot that still touches the box's span
        candidates = [(ty, tx) for ty in ys for tx in near] + [(ty, tx) for ty in ys for tx in xs]
        spot = None
        for ty, tx in candidates:
            tx_c = int(min(max(tx, 0), w_img - tw - 1))
            if ty < 0 or ty + th > h_img - 1:
                continue
            rect = (tx_c, int(ty), tx_c + tw, int(ty) + th)
            if not any(_intersects(rect, r) for r in placed):
                spot = rect
                break
        out.append(spot)
        if spot is not None:
            placed.append(spot)
    return out


def _dashed_rectangle(canvas, p0, p1, color, thickness) -> None:
    """A dashed box outline (in place): marks a person the model is not confident about."""
    dash = max(4, 3 * thickness)
    (x0, y0), (x1, y1) = p0, p1
    for a, b in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        length = max(abs(b[0] - a[0]), abs(b[1] - a[1]))
        for s in range(0, length + 1, 2 * dash):
            e = min(s + dash, length)
            f0, f1 = s / max(length, 1), e / max(length, 1)
            cv2.line(canvas, (int(round(a[0] + (b[0] - a[0]) * f0)), int(round(a[1] + (b[1] - a[1]) * f0))),
                     (int(round(a[0] + (b[0] - a[0]) * f1)), int(round(a[1] + (b[1] - a[1]) * f1))),
                     color, thickness, cv2.LINE_8)


def draw_skeleton(image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray | None, skeleton: Skeleton, *,
                  score_threshold: float = 0.0, radius: int | None = None, thickness: int | None = None,
                  boxes: np.ndarray | None = None, person_scores: np.ndarray | None = None,
                  labels: bool | list[str] = False, color_by_person: bool | None = None,
                  font_scale: float | None = None, person_threshold: float | None = None,
                  track_ids: np.ndarray | list[int] | None = None) -> np.ndarray:
    """RGB image with every person's box, limbs and joints drawn (on a copy).

    Joints at or below `score_threshold` (or non-finite) are not drawn at all, and a limb needs
    both ends. Colours: with several people each person is drawn entirely in its own colour
    (`person_color`, indexed by person order, or by `track_ids` so a track keeps its colour across
    video frames); a single person keeps the skeleton's per-limb colours. `color_by_person`
    True / False forces either. `boxes` (P, 4) x, y, w, h are drawn in the person colour with a
    label "#index" (or "#track id") and `person_scores` when given; labels never overlap each
    other (`label_rects`). A person whose score is under `person_threshold` (default:
    `score_threshold`) is drawn as not confident: its colours (per-limb or per-person) mixed half-way
    to grey, 1 px lines, hollow joints, a dashed box and a grey label, under the confident people. `labels`: True writes the
    skeleton's keypoint names beside the joints (or pass a list of K strings)."""
    canvas = np.ascontiguousarray(np.array(image, copy=True))
    if canvas.ndim == 2:
        canvas = cv2.cvtColor(canvas, cv2.COLOR_GRAY2RGB)
    k = skeleton.num_keypoints
    keypoints = np.asarray(keypoints, dtype=np.float64)
    keypoints = keypoints.reshape(-1, k, keypoints.shape[-1]) if keypoints.size else np.zeros((0, k, 2))
    if scores is None:
        scores = np.ones(keypoints.shape[:2])
    scores = np.asarray(scores, dtype=np.float64).reshape(keypoints.shape[:2])
    sizes = draw_sizes(canvas.shape)
    radius = radius or sizes["radius"]
    thickness = thickness or sizes["thickness"]
    font = font_scale or sizes["font_scale"]
    font_thick = sizes["font_thickness"]
    names = list(skeleton.keypoints) if labels is True else (list(labels) if labels else None)
    if names is not None and len(names) != k:
        raise ValueError(f"draw_skeleton: labels has {len(names)} names, skeleton {skeleton.name!r} has {k}")
    kcol = skeleton.keypoint_colors()
    lcol = skeleton.limb_colors_rgb()
    boxes = None if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n_people = max(len(keypoints), 0 if boxes is None else len(boxes))
    if track_ids is not None:
        track_ids = [int(t) for t in np.asarray(track_ids).reshape(-1)]
        if len(track_ids) != n_people:
            raise ValueError(f"draw_skeleton: track_ids has {len(track_ids)} ids for {n_people} people")
    ident = track_ids if track_ids is not None else list(range(n_people))
    pcol = [person_color(i) for i in ident]
    if color_by_person is None:
        color_by_person = len(keypoints) > 1
    pscores = None if person_scores is None else np.asarray(person_scores, dtype=np.float64).reshape(-1)
    p_thr = score_threshold if person_threshold is None else float(person_threshold)
    low = [pscores is not None and p < len(pscores) and not pscores[p] >= p_thr for p in range(n_people)]

    def draw_person(target, p, faint: bool) -> None:
        t = 1 if faint else thickness
        tone = _faded if faint else (lambda c: c)
        if boxes is not None and p < len(boxes):
            box = boxes[p]
            if np.isfinite(box).all() and box[2] > 0 and box[3] > 0:
                corners = _pt(box[:2]), _pt(box[:2] + box[2:])
                if faint:
                    _dashed_rectangle(target, *corners, tone(pcol[p]), t)
                else:
                    cv2.rectangle(target, *corners, pcol[p], t, cv2.LINE_8)
        if p >= len(keypoints):
            return
        person = keypoints[p]
        ok = np.isfinite(person[:, :2]).all(axis=1) & (scores[p] > score_threshold)
        own = tone(pcol[p]) if color_by_person else None
        for (a, b), color in zip(skeleton.limbs, lcol):
            if ok[a] and ok[b]:
                cv2.line(target, _pt(person[a]), _pt(person[b]), own or tone(tuple(int(c) for c in color)), t,
                         cv2.LINE_AA)
        for j in np.flatnonzero(ok):
            p_xy = _pt(person[j])
            color = own or tone(tuple(int(c) for c in kcol[j]))
            if faint:  # hollow: a joint of a doubtful person is not a confident dot
                cv2.circle(target, p_xy, max(2, radius - 1), color, 1, cv2.LINE_AA)
                continue
            cv2.circle(target, p_xy, radius, color, -1, cv2.LINE_AA)
            if radius > 2:  # a dark rim keeps light joints visible; on tiny dots it would hide the colour
                cv2.circle(target, p_xy, radius, (0, 0, 0), max(1, thickness // 2), cv2.LINE_AA)
        if names is not None:
            for j in np.flatnonzero(ok):
                x, y = _pt(person[j])
                put_text(target, names[j], (x + radius + 2, y - radius), scale=font * 0.8,
                         color=tuple(int(c) for c in kcol[j]), thickness=max(1, font_thick - 1))

    # doubtful people first, so confident ones are drawn over them
    for p in sorted(range(n_people), key=lambda p: not low[p]):
        draw_person(canvas, p, low[p])

    # box labels last, on top of every limb, each in a spot no other label takes
    if boxes is not None and (n_people > 1 or pscores is not None) and min(canvas.shape[:2]) >= 160:
        tags = []
        for p in range(len(boxes)):
            tag = f"#{ident[p] if track_ids is not None else p + 1}"
            if pscores is not None and p < len(pscores):
                tag += f" {float(pscores[p]):.2f}"
            tags.append(tag)
        pad = max(1, font_thick)
        text_sizes = [cv2.getTextSize(tag, cv2.FONT_HERSHEY_SIMPLEX, font, font_thick) for tag in tags]
        dims = [(tw + 2 * pad, th + base + 2 * pad) for (tw, th), base in text_sizes]
        for p, (rect, tag, ((_, th), base)) in enumerate(zip(label_rects(boxes, dims, canvas.shape,
                                                                             margin=thickness // 2 + 1), tags,
                                                             text_sizes)):
            if rect is None:
                continue
            fill = LOW_SCORE_LABEL_RGB if low[p] else pcol[p]
            cv2.rectangle(canvas, rect[:2], rect[2:], fill, -1, cv2.LINE_8)
            ink = (0, 0, 0) if 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2] > 140 else (255, 255, 255)
            cv2.putText(canvas, tag, (rect[0] + pad, rect[1] + pad + th), cv2.FONT_HERSHEY_SIMPLEX, font, ink,
                        font_thick, cv2.LINE_AA)
    return canvas


def upscale(image: np.ndarray, min_height: int, *, interpolation: str = "nearest") -> np.ndarray:
    """`image` scaled up (never down) to at least `min_height` px tall."""
    img = np.ascontiguousarray(image)
    if img.shape[0] >= min_height:
        return img
    f = min_height / img.shape[0]
    flag = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR}.get(interpolation)
    if flag is None:
        raise ValueError(f"upscale: interpolation must be 'nearest' or 'linear', got {interpolation!r}")
    return cv2.resize(img, (int(round(img.shape[1] * f)), int(min_height)), interpolation=flag)


def caption(image: np.ndarray, text: str, *, min_height: int = 320, interpolation: str = "nearest") -> np.ndarray:
    """The image (upscaled to at least `min_height` px, so small crops stay readable) under a
    white bar with `text`; the font follows the width and shrinks until the text fits."""
    img = upscale(image, min_height, interpolation=interpolation)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    w = img.shape[1]
    scale = float(np.clip(w / 700.0, 0.45, 1.2))
    thick = 1 if scale < 0.9 else 2
    # the bar's height depends on the width only, so captions of one width line up side by side
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    bar = np.full((th + base + 14, w, 3), 255, np.uint8)
    while scale > 0.3 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0] > w - 12:
        scale *= 0.9
    cv2.putText(bar, text, (6, th + 7), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return np.concatenate([bar, img], axis=0)


def side_by_side(images: list[np.ndarray], *, gap: int = 6) -> np.ndarray:
    """Images in a row, bottom-padded white to the tallest, separated by white gaps."""
    h = max(im.shape[0] for im in images)
    parts = []
    for n, im in enumerate(images):
        if im.ndim == 2:
            im = cv2.cvtColor(im, cv2.COLOR_GRAY2RGB)
        if im.shape[0] < h:
            im = np.concatenate([im, np.full((h - im.shape[0], im.shape[1], 3), 255, np.uint8)], axis=0)
        if n:
            parts.append(np.full((h, gap, 3), 255, np.uint8))
        parts.append(im)
    return np.concatenate(parts, axis=1)


def _figure_to_rgb(fig) -> np.ndarray:
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    import matplotlib.pyplot as plt
    plt.close(fig)
    return rgb


def joint_sides(skeleton: Skeleton) -> np.ndarray:
    """(K,) -1 left, +1 right, 0 centre: from the names ("left_hip", "r_eye"), then flip pairs
    (a joint paired with a named one takes the other side; an unnamed pair is (left, right))."""
    side = np.zeros(skeleton.num_keypoints, dtype=np.int64)
    for j, name in enumerate(skeleton.keypoints):
        low = name.lower()
        if low.startswith(("left", "l_")) or "_left" in low:
            side[j] = -1
        elif low.startswith(("right", "r_")) or "_right" in low:
            side[j] = 1
    for a, b in skeleton.flip_pairs:
        if side[a] == 0 and side[b] == 0:
            side[a], side[b] = -1, 1
        elif side[a] == 0:
            side[a] = -side[b]
        elif side[b] == 0:
            side[b] = -side[a]
    return side


def limb_sides(skeleton: Skeleton) -> list[int]:
    """Per limb: -1 left, +1 right, 0 centre (a limb touching one side and the centre takes the side)."""
    side = joint_sides(skeleton)
    out = []
    for a, b in skeleton.limbs:
        s = {int(side[a]), int(side[b])} - {0}
        out.append(s.pop() if len(s) == 1 else 0)
    return out


def _side_color(s: int) -> tuple[float, float, float]:
    rgb = LEFT_RGB if s < 0 else RIGHT_RGB if s > 0 else CENTRE_RGB
    return tuple(c / 255.0 for c in rgb)


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


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average with shrinking windows at the ends (same length as the input)."""
    if window <= 1 or len(values) < 3:
        return values
    kernel = np.ones(window)
    num = np.convolve(values, kernel, mode="same")
    den = np.convolve(np.ones_like(values), kernel, mode="same")
    return num / den


def _floats(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    steps, vals = [], []
    for r in rows:
        v = r.get(key)
        if v in (None, ""):
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if np.isfinite(f):
            steps.append(int(float(r["step"])))
            vals.append(f)
    return steps, vals


def plot_training_curves(rows: list[dict], path: str | Path, *, metric_keys: list[str] | None = None,
                         loss_key: str = "val/val_loss", initial: dict | None = None, dpi: int = 100) -> Path:
    """curves.png (`training_curves_figure`) written to `path`."""
    fig = training_curves_figure(rows, metric_keys=metric_keys, loss_key=loss_key, initial=initial, dpi=dpi)
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def training_curves_figure(rows: list[dict], *, metric_keys: list[str] | None = None,
                           loss_key: str = "val/val_loss", initial: dict | None = None, dpi: int = 100):
    """The training figure from metrics.csv rows, three panels: training loss (raw, faint, and smoothed) with
    the learning rate on its own axis (log when it spans a decade); the validation loss
    (`loss_key`); the validation metrics (`metric_keys`, default every other `val/` scalar
    without a "/" in its name). `initial` ({"val/...": value}) adds the untrained model's scores
    at step 0, so even a single validation shows where training started. Values are labelled."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import FuncFormatter

    fig, (ax_loss, ax_vloss, ax_metric) = plt.subplots(1, 3, figsize=(14, 3.8), dpi=dpi)
    steps, losses = _floats(rows, "loss")
    if steps:
        x, y = np.asarray(steps), np.asarray(losses)
        ax_loss.plot(x, y, color="tab:blue", alpha=0.25 if len(y) >= 5 else 1.0, linewidth=0.8, label="train loss")
        if len(y) >= 5:
            ax_loss.plot(x, _smooth(y, max(3, len(y) // 15)), color="tab:blue", linewidth=2,
                         label="train loss (smoothed)")
        if (y > 0).all() and y.max() / max(y.min(), 1e-12) > 20:
            ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training")
    lr_steps, lrs = _floats(rows, "lr")
    lines, labels = ax_loss.get_legend_handles_labels()
    if lr_steps:
        lr_ax = ax_loss.twinx()
        lr_ax.plot(lr_steps, lrs, color="tab:orange", linewidth=1.2, label="learning rate")
        if all(v > 0 for v in lrs) and max(lrs) / min(lrs) > 10:
            lr_ax.set_yscale("log")
        else:  # a flat or gently decaying schedule: linear from 0, so a constant lr reads as one
            lr_ax.set_ylim(0, max(max(lrs), 1e-12) * 1.15)
            lr_ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
        lr_ax.set_ylabel("learning rate", color="tab:orange")
        lr_ax.tick_params(axis="y", colors="tab:orange", labelsize=7)
        more, more_labels = lr_ax.get_legend_handles_labels()
        lines, labels = lines + more, labels + more_labels
    if lines:
        ax_loss.legend(lines, labels, loc="upper right", fontsize=7)

    initial = initial or {}

    def draw(ax, key, color=None):
        s, v = _floats(rows, key)
        if not s:
            return False
        start = initial.get(key)
        if start is not None and np.isfinite(float(start)) and 0 not in s:
            s, v = [0, *s], [float(start), *v]
        (line,) = ax.plot(s, v, marker="o", markersize=5, label=key.removeprefix("val/"), color=color)
        if start is not None and s[0] == 0:
            ax.plot([0], [v[0]], marker="o", markersize=7, markerfacecolor="white", color=line.get_color())
            ax.annotate(f"untrained {v[0]:.4g}", (0, v[0]), textcoords="offset points", xytext=(4, -12),
                        fontsize=8, color=line.get_color())
        ax.annotate(f"{v[-1]:.4g}", (s[-1], v[-1]), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8,
                    color=line.get_color())
        ax.margins(y=0.15)
        if key == loss_key and min(v) > 0 and max(v) / min(v) > 20:  # an untrained loss far above the rest
            ax.set_yscale("log")
        if len(s) == 1:  # one point: give the axis some room around it
            ax.set_xlim(s[0] * 0.5 - 1, s[0] * 1.5 + 1)
        else:
            lo, hi = min(s), max(s)
            ax.set_xlim(lo - 0.05 * (hi - lo), hi + 0.12 * (hi - lo))
        return True

    if not draw(ax_vloss, loss_key, "tab:red"):
        ax_vloss.text(0.5, 0.5, f"no {loss_key}", ha="center", va="center", transform=ax_vloss.transAxes,
                      color="0.5")
    ax_vloss.set_title("validation loss")
    ax_vloss.set_xlabel("step")
    keys = metric_keys or sorted({k for r in rows for k in r if k.startswith("val/") and k != loss_key
                                  and "/" not in k[4:] and r.get(k) not in (None, "")})
    drawn = [k for k in keys if draw(ax_metric, k)]
    if drawn:
        ax_metric.legend(fontsize=7)
    else:
        ax_metric.text(0.5, 0.5, "no validation yet", ha="center", va="center", transform=ax_metric.transAxes,
                       color="0.5")
    ax_metric.set_title("validation metric" if len(drawn) <= 1 else "validation metrics")
    ax_metric.set_xlabel("step")
    for ax in (ax_loss, ax_vloss, ax_metric):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
