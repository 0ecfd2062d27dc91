"""Pictures side by side: upscaling small crops, captions, rows of panels."""
from __future__ import annotations

import cv2
import numpy as np


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
