"""The top-down items of a split: one per labelled person (its GT box) or one per detector box
of a COCO detections file (the top-down protocol), matched to the GT people it covers; and the
single-person Samples the top-down pipeline (data.topdown) crops from them."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from posekit.data.io import read_json
from posekit.data.sample import Sample

__all__ = ["PersonSource", "detection_entries", "parse_person_boxes", "peek_sample", "person_crops", "person_entries"]


def person_entries(images, min_keypoints: int = 1) -> list[tuple]:
    """(image index, person row, box, keypoints, box score 1) for every person with at least
    `min_keypoints` labelled keypoints and a box: the GT-box items."""
    out = []
    for i in range(len(images)):
        s = peek_sample(images, i)
        for p in range(s.num_people):
            if int((s.keypoints[p, :, 2] > 0).sum()) >= max(min_keypoints, 1) and s.boxes is not None \
                    and len(s.boxes) == s.num_people and (s.boxes[p, 2:] > 0).all():
                out.append((i, p, s.boxes[p], s.keypoints[p], 1.0))
    return out


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y1 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    return inter / (box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter)


def detection_entries(images, det_file, *, score_threshold: float = 0.0, category_id=None, root=None,
                      key: str | None = None) -> list[tuple]:
    """One item per detector box of a COCO detections JSON ([{image_id, bbox, score,
    category_id}]) on the images of the split. Each box carries, for the oracle and the
    validation loss only, the keypoints of the GT person it matches (greedy by score, IoU >= 0.5,
    each person once); unmatched boxes carry none. Detections of other images are ignored, but a
    file none of whose image ids is an image of the split is an error (the wrong split's file).
    A relative `det_file` is under `root` when given; a missing one is a FileNotFoundError naming
    the config `key` it came from (data.val_detections)."""
    det_file = Path(det_file)
    if root and not det_file.is_absolute():
        det_file = Path(root) / det_file
    if not det_file.is_file():
        raise FileNotFoundError(f"{key + ': ' if key else ''}detections file not found: {det_file}")
    raw = read_json(det_file, "COCO detections file")
    if not isinstance(raw, list):
        raise ValueError(f"{det_file}: a COCO detections file is a JSON list of {{image_id, bbox, score}}")
    by_image: dict = {}
    for i in range(len(images)):
        by_image[peek_sample(images, i).meta.get("image_id", i)] = i
    per_image: dict[int, list] = {}
    unmatched: list = []
    for n, det in enumerate(raw):
        try:
            box = np.asarray(det["bbox"], dtype=np.float64)
            score = float(det.get("score", 1.0))
            image_id = det["image_id"]
        except (TypeError, KeyError, ValueError):
            raise ValueError(f"{det_file}: detection #{n}: needs 'image_id', 'bbox' [x, y, w, h] and 'score'") from None
        if box.shape != (4,) or not np.isfinite(box).all() or not np.isfinite(score):
            raise ValueError(f"{det_file}: detection #{n}: 'bbox' must be 4 finite numbers and 'score' finite")
        if category_id is not None and det.get("category_id", category_id) != category_id:
            continue
        if image_id not in by_image:
            unmatched.append(image_id)
            continue
        if box[2] <= 0 or box[3] <= 0 or score < score_threshold:
            continue
        per_image.setdefault(by_image[image_id], []).append((score, box))
    if unmatched and len(unmatched) == len(raw) and by_image:
        ids = sorted(set(map(str, unmatched)))
        split = sorted(map(str, by_image))
        raise ValueError(f"{det_file}: no detection's image_id is an image of this split (file ids "
                         f"{', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''}; split ids "
                         f"{', '.join(split[:3])}{', ...' if len(split) > 3 else ''}): is it the detections "
                         "file of another split?")
    out = []
    for i in sorted(per_image):
        s = peek_sample(images, i)
        k = s.keypoints.shape[1]
        labelled = [p for p in range(s.num_people) if (s.keypoints[p, :, 2] > 0).any()]
        gt_boxes = s.boxes[labelled] if labelled and s.boxes is not None else np.zeros((0, 4))
        taken: set = set()
        for score, box in sorted(per_image[i], key=lambda t: -t[0]):
            kp, row = np.zeros((k, 3)), -1
            if len(gt_boxes):
                ious = _iou(box, gt_boxes)
                for j in np.argsort(-ious):
                    if ious[j] < 0.5:
                        break
                    if j not in taken:
                        taken.add(int(j))
                        row = labelled[j]
                        kp = s.keypoints[row]
                        break
            out.append((i, row, box, kp, score))
    return out


def peek_sample(images, i: int) -> Sample:
    """An image Sample's annotations without decoding or rendering its image."""
    return images.peek(i) if hasattr(images, "peek") else images[i]


class PersonSource:
    """Single-person Samples (P = 1) for the top-down pipeline, from image Samples and entries."""

    def __init__(self, images, entries: list[tuple]):
        self.images, self.entries = images, entries

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, n: int) -> Sample:
        i, row, box, kp, score = self.entries[n]
        s = self.images[i]
        return Sample(keypoints=kp[None], image=s.image, image_path=s.image_path, boxes=np.asarray(box)[None],
                      meta={"image_index": float(i), "person_row": float(row), "box_score": float(score)})


def parse_person_boxes(entry, n: int) -> list:
    """One image's person boxes as a caller gives them (prediction on user images): None (the
    whole image), one [x, y, w, h(, score)] box, or a list / (P, 4|5) array of them -> a list of
    boxes (None for the whole image, [] for no person); `n` names the image in errors."""
    if entry is None:
        return [None]
    try:
        arr = np.asarray(entry, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"image {n}: boxes must be numbers [x, y, w, h(, score)], got {entry!r}") from None
    if arr.size == 0:
        return []  # no person on this image: an empty Results
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or (len(arr) and arr.shape[1] not in (4, 5)):
        raise ValueError(f"image {n}: a box is [x, y, w, h] or [x, y, w, h, score]; got {entry!r}")
    for b in arr:
        if not np.isfinite(b).all() or b[2] <= 0 or b[3] <= 0:
            raise ValueError(f"image {n}: person box must be finite [x, y, w, h] with positive w, h; got {list(b)}")
    return list(arr)


def person_crops(inputs, boxes=None) -> tuple[list, list, list[float], list[int]]:
    """A batch of images and, per image, its boxes as a caller gives them (`parse_person_boxes`;
    `boxes` None: every image whole) -> one entry per person to crop: (its image, its [x, y, w, h]
    or None for the whole image, its box score (1 without one), the index of its image)."""
    if boxes is not None and len(boxes) != len(inputs):
        raise ValueError(f"got {len(boxes)} box entries for {len(inputs)} images (one entry per image)")
    crops, crop_boxes, scores, owner = [], [], [], []
    for n, image in enumerate(inputs):
        for b in parse_person_boxes(None if boxes is None else boxes[n], n):
            crops.append(image)
            crop_boxes.append(None if b is None else b[:4])
            scores.append(float(b[4]) if b is not None and len(b) > 4 else 1.0)
            owner.append(n)
    return crops, crop_boxes, scores, owner
