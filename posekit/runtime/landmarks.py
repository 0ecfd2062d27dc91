"""The unsupervised-landmark (FSE) steps outside the graph, in numpy: the square resize-then-crop
of an image, and the fitted linear regressor from K discovered landmarks to MAFL's 5 points.

`posekit.data.landmarks` crops its items with `resize_crop`, `posekit.metrics.nme` fits and
applies the regressor with `regressor_design` / `apply_regressor`, and the FSE family's
`postprocess` calls `landmark_outputs`: an exported .onnx file run by `posekit.runtime.predict`
gives the same numbers as the PyTorch path because both run this code.

Pixel centres sit at integer coordinates: resizing maps x to (x + 0.5) * R / W - 0.5.
"""
from __future__ import annotations

import cv2
import numpy as np

from posekit.runtime.geometry import to_original_frame
from posekit.runtime.onnx import REEXPORT, stored_buffer
from posekit.skeletons import get_skeleton

__all__ = ["MAFL5_POINTS", "apply_regressor", "landmark_outputs", "regressor_design", "regressor_from_buffers",
           "resize_crop", "resize_crop_geometry"]

MAFL5_POINTS = get_skeleton("mafl5").num_keypoints  # the annotated points the regressor predicts


def resize_crop_geometry(image_hw, size: int, resize: int | None, offset: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """(2x3 matrix original pixels -> crop pixels, (left, top) of the crop in the resized image)
    for a `resize`^2 resize (None: keep the size) then a `size`^2 crop at (offset, offset) (None: centred)."""
    h, w = (int(v) for v in image_hw[:2])
    rw, rh = (resize, resize) if resize else (w, h)
    sx, sy = rw / w, rh / h
    ox = (rw - size) // 2 if offset is None else offset
    oy = (rh - size) // 2 if offset is None else offset
    if ox < 0 or oy < 0 or ox + size > rw or oy + size > rh:
        raise ValueError(f"a {size}x{size} crop at ({ox}, {oy}) does not fit the {rw}x{rh} resized image "
                         f"(data.resize / data.crop_offset / data.input_size)")
    return np.array([[sx, 0.0, 0.5 * sx - 0.5 - ox], [0.0, sy, 0.5 * sy - 0.5 - oy]]), (ox, oy)


def resize_crop(image: np.ndarray, size: int, resize: int | None, offset: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (S, S, 3) crop, a view into the resized image, 2x3 original -> crop matrix) of an RGB
    image: area-resized to `resize`^2 (aspect ratio NOT kept, as the FSE reference squashes CelebA's
    178x218), then sliced at the offset."""
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3):
        raise ValueError(f"expected an RGB (H, W, 3) image, got shape {getattr(image, 'shape', None)}")
    matrix, (ox, oy) = resize_crop_geometry(image.shape[:2], size, resize, offset)
    resized = image
    if resize and image.shape[:2] != (resize, resize):
        resized = cv2.resize(image, (resize, resize), interpolation=cv2.INTER_AREA)
    return resized[oy:oy + size, ox:ox + size], matrix


def regressor_design(discovered) -> np.ndarray:
    """(N, K, 2) discovered landmarks -> the (N, 2K + 1) design matrix [x0, y0, x1, ..., 1]."""
    d = np.asarray(discovered, dtype=np.float64)
    if d.ndim != 3 or d.shape[-1] != 2:
        raise ValueError(f"discovered landmarks must be (N, K, 2), got {d.shape}")
    return np.concatenate([d.reshape(len(d), -1), np.ones((len(d), 1))], axis=1)


def apply_regressor(w: np.ndarray, discovered) -> np.ndarray:
    """The fitted regressor W (2K + 1, 2P) on (N, K, 2) discovered landmarks -> (N, P, 2)."""
    x = regressor_design(discovered)
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] % 2:
        raise ValueError(f"a regressor must be a (2K + 1, 2P) matrix, got shape {w.shape}")
    if w.shape[0] != x.shape[1]:
        raise ValueError(f"regressor expects {w.shape[0] - 1} discovered coordinates, got {x.shape[1] - 1}")
    return (x @ w).reshape(len(x), -1, 2)


def landmark_outputs(keypoints_crop, scores, matrices, regressor: np.ndarray | None = None) -> list[dict]:
    """Per image: `keypoints` (1, K, 2) and `scores` (1, K) in original pixels, and `meta` with
    "mafl5" (the 5 regressed points in original pixels, as lists) when a regressor has been fitted.
    The regressor works in the crop frame, the one frame all images share."""
    crop = np.asarray(keypoints_crop, np.float64)
    matrices = np.asarray(matrices, np.float64)
    kp = to_original_frame(crop, matrices)
    scores = np.asarray(scores, np.float64)
    mafl5 = None if regressor is None else to_original_frame(apply_regressor(regressor, crop), matrices)
    return [{"keypoints": kp[i][None], "scores": scores[i][None], "person_scores": None, "boxes": None,
             "meta": {} if mafl5 is None else {"mafl5": mafl5[i].tolist()}} for i in range(len(kp))]


def regressor_from_buffers(buffers: dict | None, num_landmarks: int, source: str) -> np.ndarray | None:
    """The fitted MAFL regressor W (2K + 1, 10) an exported FSE file stores in `posekit.buffers`
    (`mafl_regressor`, flagged by `mafl_regressor_fitted` > 0, as the family's `prepare` reads
    them from a checkpoint); None when none has been fitted."""
    buffers = buffers or {}
    if not isinstance(buffers, dict):
        raise ValueError(f"{source}: metadata posekit.buffers is not a mapping; {REEXPORT}")
    shape = (2 * int(num_landmarks) + 1, 2 * MAFL5_POINTS)
    fitted = stored_buffer(buffers, "mafl_regressor_fitted", (), source)
    w = stored_buffer(buffers, "mafl_regressor", shape, source)
    if fitted is None or not float(fitted) > 0:
        return None
    return w if w is not None else np.zeros(shape)  # only buffers unlike a fresh model's are stored
