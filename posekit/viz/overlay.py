"""2-D overlays on an image: skeletons, boxes and their labels, sized by the image so a 64 px
crop and a 4k photo both read well; box labels never overlap; a person under the person
threshold is drawn greyed, thin and dashed (see `draw_skeleton`)."""
from __future__ import annotations

import cv2
import numpy as np

from posekit.skeletons import Skeleton
from posekit.viz.colors import LOW_SCORE_LABEL_RGB, _faded, person_color


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
