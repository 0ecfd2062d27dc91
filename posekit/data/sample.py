"""`Sample`: what every format reader and synthetic generator hands to a pipeline.

One image with all its people. Readers parse and validate annotation files into Samples
(no image decoding: `image` stays None and `image_path` says where it is, so a reader of
100k records is cheap); the pipeline loads the image, augments and encodes targets.
Coordinates are 0-based pixels of the original image; a single-person dataset has P = 1.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from posekit.data.errors import BadRecordError
from posekit.data.io import read_image

__all__ = ["MAX_COORDINATE", "MAX_HEAD_SIZE", "BadRecordError", "Sample", "check_head_size", "check_values", "person_boxes",
           "relative_path_problem"]


@dataclass
class Sample:
    """keypoints: (P, K, 3) x, y, visibility (0 = not labelled, 1 = labelled but occluded,
    2 = visible; COCO's convention, which every reader maps onto).
    boxes: (P, 4) x, y, w, h person boxes, when the source has them.
    ignore_mask: (H, W) uint8, 1 where the loss must not look (crowds, unlabelled people).
    meta: per-image facts a metric needs (image_id, head sizes, areas, ...)."""

    keypoints: np.ndarray
    image: np.ndarray | None = None
    image_path: Path | None = None
    boxes: np.ndarray | None = None
    ignore_mask: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.keypoints = np.asarray(self.keypoints, dtype=np.float64)
        if self.keypoints.ndim == 2:
            self.keypoints = self.keypoints[None]
        if self.keypoints.ndim != 3 or self.keypoints.shape[-1] != 3:
            raise ValueError(f"Sample.keypoints must be (persons, K, 3), got {self.keypoints.shape}")
        if self.boxes is not None:
            self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)

    @property
    def num_people(self) -> int:
        return len(self.keypoints)

    def load(self) -> "Sample":
        """This sample with its image decoded (RGB uint8); a no-op when it already has one."""
        if self.image is not None:
            return self
        if self.image_path is None:
            raise ValueError("Sample has neither an image nor an image_path")
        return replace(self, image=read_image(self.image_path))


# --- shared sanity limits for readers -----------------------------------------------------------
# A coordinate (pixels, or mm for 3-D) beyond MAX_COORDINATE, or a head size beyond MAX_HEAD_SIZE,
# is a unit or file error, never a real pose: accepting it makes metrics silently meaningless
# (a 1e300 PCKh normaliser counts every guess as correct).
MAX_COORDINATE = 1e6
MAX_HEAD_SIZE = 1e5


def check_values(values, what: str, where: str, *, limit: float = MAX_COORDINATE,
                 error: type[Exception] = BadRecordError) -> np.ndarray:
    """`values` as float64, or `error` naming `where` and `what` when one is non-finite or beyond
    +-`limit`. Readers call it on coordinates, boxes and scales before building Samples."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise error(f"{where}: {what} must be numbers") from None
    if not np.all(np.isfinite(arr)):
        raise error(f"{where}: {what} has non-finite values (NaN or inf)")
    if arr.size and float(np.abs(arr).max()) > limit:
        raise error(f"{where}: {what} has an absurd value {float(np.abs(arr).max()):.6g} (limit {limit:g}); "
                    "a unit or file error")
    return arr


def check_head_size(value: float, where: str, *, error: type[Exception] = BadRecordError) -> float:
    """A PCKh normaliser: positive, finite and at most MAX_HEAD_SIZE pixels."""
    v = float(value)
    if not (np.isfinite(v) and 0 < v <= MAX_HEAD_SIZE):
        raise error(f"{where}: head size {v:g} must be positive, finite and at most {MAX_HEAD_SIZE:g} px")
    return v


def relative_path_problem(name) -> str | None:
    """Why an image path read from an annotation file may not be used under its dataset root
    (absolute, a drive letter, or `..` escaping it), or None. Lexical, so symlinked dataset
    folders keep working; backslashes count as separators (Windows-written files)."""
    import posixpath
    if not isinstance(name, str) or not name:
        return f"image path must be a non-empty string, got {name!r}"
    text = name.replace("\\", "/")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        return f"image path {name!r} is absolute; annotation paths must be relative to the dataset root"
    norm = posixpath.normpath(text)
    if norm == ".." or norm.startswith("../"):
        return f"image path {name!r} leaves the dataset root"
    return None


def person_boxes(keypoints: np.ndarray, boxes=None) -> np.ndarray:
    """(P, 4) x, y, w, h per person: its given box, else (None, or no boxes at all) the extent of
    its labelled keypoints (zeros when none is labelled). What readers and pipelines use when a
    format or a record gives no box."""
    out = np.zeros((len(keypoints), 4))
    for i, kp in enumerate(keypoints):
        given = None if boxes is None else boxes[i]
        if given is not None:
            out[i] = given
            continue
        lab = kp[kp[:, 2] > 0, :2]
        if len(lab):
            lo, hi = lab.min(0), lab.max(0)
            out[i] = [lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]]
    return out
