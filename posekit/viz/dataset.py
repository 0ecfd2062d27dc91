"""Drawing for `posekit data show`: pipeline items as the model sees them, in a captioned grid.

Each tile is one network input (RGB uint8) with, when the family has them: the target heatmaps
(max over keypoints, "hot" colours), PAF magnitudes (cyan), the ignore mask (red tint where the
loss does not look), and the keypoints with their names; left-side keypoints are drawn in blue,
right-side in orange, so a flipped item shows its labels swapped with the picture.
"""
from __future__ import annotations

import cv2
import numpy as np

LEFT, RIGHT, CENTRE = (60, 140, 255), (255, 140, 40), (240, 240, 240)


def keypoint_sides(names) -> list[tuple[int, int, int]]:
    """A colour per keypoint name: left blue, right orange, others white."""
    out = []
    for n in names:
        low = n.lower()
        out.append(LEFT if "left" in low or low.startswith(("l_", "l.")) else
                   RIGHT if "right" in low or low.startswith(("r_", "r.")) else CENTRE)
    return out


def _resize_map(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(np.ascontiguousarray(m, dtype=np.float32), size, interpolation=cv2.INTER_LINEAR)


def overlay_maps(image: np.ndarray, *, heatmaps=None, pafs=None, ignore=None, alpha: float = 0.55) -> np.ndarray:
    """`image` (H, W, 3) uint8 with heatmaps (K, h, w), PAFs (2L, h, w) and an ignore weight
    (1 or h, w; 0 = ignored) blended in at the image's size."""
    out = image.astype(np.float32)
    h, w = image.shape[:2]
    if pafs is not None and len(pafs):
        p = np.asarray(pafs, np.float32).reshape(-1, 2, *np.asarray(pafs).shape[-2:])
        mag = np.clip(_resize_map(np.sqrt((p ** 2).sum(1)).max(0), (w, h)), 0, 1)
        out = out * (1 - 0.35 * mag[..., None]) + np.array([0, 230, 255], np.float32) * (0.35 * mag[..., None])
    if heatmaps is not None and len(heatmaps):
        heat = np.clip(_resize_map(np.asarray(heatmaps, np.float32).max(0), (w, h)), 0, 1)
        colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_HOT)[..., ::-1].astype(np.float32)
        a = (alpha * heat)[..., None]
        out = out * (1 - a) + colour * a
    if ignore is not None:
        weight = np.asarray(ignore, np.float32).reshape(-1, *np.asarray(ignore).shape[-2:])[0]
        masked = _resize_map(weight, (w, h)) < 0.5
        out[masked] = out[masked] * 0.5 + np.array([255, 0, 0], np.float32) * 0.5
    return np.clip(out, 0, 255).astype(np.uint8)


def draw_keypoints(image: np.ndarray, keypoints: np.ndarray, names, *, limbs=(), labels: bool = True) -> np.ndarray:
    """(P, K, 3) or (K, 3) keypoints (v > 0 drawn) with limbs and, when `labels`, their names."""
    out = image.copy()
    kp = np.asarray(keypoints, np.float64)
    kp = kp[None] if kp.ndim == 2 else kp
    colours = keypoint_sides(names)
    scale = max(out.shape[0], out.shape[1]) / 256.0
    r, font = max(3, int(round(3 * scale))), 0.35 * max(scale, 1.0)
    for person in kp:
        for a, b in limbs:
            if person[a, 2] > 0 and person[b, 2] > 0:
                cv2.line(out, tuple(int(round(v)) for v in person[a, :2]), tuple(int(round(v)) for v in person[b, :2]),
                         (200, 200, 200), max(1, int(scale)), cv2.LINE_AA)
        for j, (x, y, v) in enumerate(person):
            if v <= 0 or not np.isfinite([x, y]).all():
                continue
            c = (int(round(x)), int(round(y)))
            cv2.circle(out, c, r, colours[j], -1, cv2.LINE_AA)
            cv2.circle(out, c, r, (0, 0, 0), 1, cv2.LINE_AA)
            if labels:
                cv2.putText(out, str(names[j]), (c[0] + r + 1, c[1] - r), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), 2,
                            cv2.LINE_AA)
                cv2.putText(out, str(names[j]), (c[0] + r + 1, c[1] - r), cv2.FONT_HERSHEY_SIMPLEX, font, colours[j], 1,
                            cv2.LINE_AA)
    return out


def captioned(image: np.ndarray, text: str, *, min_side: int = 256) -> np.ndarray:
    """The tile upscaled (nearest) to at least `min_side` and a caption bar on top."""
    h, w = image.shape[:2]
    f = max(1, int(np.ceil(min_side / max(h, w))))
    big = cv2.resize(image, (w * f, h * f), interpolation=cv2.INTER_NEAREST) if f > 1 else image
    bar = np.full((22, big.shape[1], 3), 20, np.uint8)
    cv2.putText(bar, text[: max(8, big.shape[1] // 7)], (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                cv2.LINE_AA)
    return np.concatenate([bar, big], axis=0)


def grid(tiles: list[np.ndarray], *, columns: int = 4, gap: int = 4) -> np.ndarray:
    """Tiles (any sizes) in rows of `columns`, padded to the largest tile."""
    if not tiles:
        raise ValueError("no tiles to draw")
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    rows = (len(tiles) + columns - 1) // columns
    cols = min(columns, len(tiles))
    canvas = np.full((rows * (th + gap) - gap, cols * (tw + gap) - gap, 3), 60, np.uint8)
    for i, t in enumerate(tiles):
        y, x = (i // columns) * (th + gap), (i % columns) * (tw + gap)
        canvas[y:y + t.shape[0], x:x + t.shape[1]] = t
    return canvas
