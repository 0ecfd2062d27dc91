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


class BadRecordError(ValueError):
    """One record (an image, an annotation) cannot be used. The message names the file and the
    record; training may skip such records (`data.on_bad_record`), evaluation stops on them."""


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
        from posekit.data.io import read_image
        return replace(self, image=read_image(self.image_path))
