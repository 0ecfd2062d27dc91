"""`Results`: the one output type of every family (2-D single/multi-person, 3-D hypotheses, landmarks)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from posekit.data.box_files import normalize_boxes
from posekit.runtime.predict import topdown_person_scores
from posekit.skeletons import Skeleton, get_skeleton


@dataclass
class Results:
    """Poses found in one input.

    keypoints: (P, K, 2) pixel coordinates in the source image (or (P, K, 3) for 3-D, in mm).
    scores: (P, K) per-keypoint confidences.
    person_scores: (P,) per-person scores (defaults to the mean keypoint score).
    hypotheses: (P, M, K, 3) alternative 3-D poses with `hypothesis_weights` (P, M), for lifters.
    image: the source image, RGB uint8 (H, W, 3), when known.
    track_ids: (P,) int video track ids (-1: a person seen but not tracked), set by tracking
    (`Predictor.track`); None for a still image.
    """

    keypoints: np.ndarray
    scores: np.ndarray
    skeleton: Skeleton
    person_scores: np.ndarray | None = None
    boxes: np.ndarray | None = None  # (P, 4) x, y, w, h
    hypotheses: np.ndarray | None = None
    hypothesis_weights: np.ndarray | None = None
    keypoints_2d: np.ndarray | None = None  # the 2-D input of a lifter, (P, K, 2)
    image: np.ndarray | None = None
    path: str | None = None
    meta: dict = field(default_factory=dict)
    track_ids: np.ndarray | None = None

    def __post_init__(self):
        self.skeleton = get_skeleton(self.skeleton)
        self.keypoints = np.asarray(self.keypoints, dtype=np.float64)
        if self.keypoints.ndim == 2:
            self.keypoints = self.keypoints[None]
        if self.keypoints.ndim != 3 or self.keypoints.shape[-1] not in (2, 3):
            raise ValueError(f"Results.keypoints must be (persons, K, 2|3), got {self.keypoints.shape}")
        if self.keypoints.shape[1] != self.skeleton.num_keypoints:
            raise ValueError(f"Results.keypoints has {self.keypoints.shape[1]} joints, skeleton "
                             f"{self.skeleton.name!r} has {self.skeleton.num_keypoints}")
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(self.keypoints.shape[:2])
        if self.person_scores is None:
            self.person_scores = self.scores.mean(axis=1) if self.scores.size else np.zeros(len(self.keypoints))
        self.person_scores = np.asarray(self.person_scores, dtype=np.float64).reshape(len(self.keypoints))
        if self.track_ids is not None:
            self.track_ids = np.asarray(self.track_ids, dtype=np.int64).reshape(len(self.keypoints))

    def __len__(self) -> int:
        return len(self.keypoints)

    @property
    def is_3d(self) -> bool:
        return self.keypoints.shape[-1] == 3

    def plot(self, *, image: np.ndarray | None = None, score_threshold: float = 0.0, radius: int | None = None,
             thickness: int | None = None, boxes: bool = True, labels: bool | list[str] = False,
             color_by_person: bool | None = None, gt: np.ndarray | None = None,
             person_threshold: float | None = None) -> np.ndarray:
        """An RGB overlay image: the skeleton drawn on the source image (2-D), or the lifting figure
        (3-D: one row per person, one panel per hypothesis, ground truth from `gt` or
        meta["gt_keypoints_3d"]). 2-D: each person's box when known (`boxes=False` hides them),
        joints at or below `score_threshold` hidden, `labels` writes keypoint names; line and dot
        sizes follow the image size; several people are coloured by person, one by limb
        (`color_by_person` forces either; see viz.draw_skeleton); a person scored under
        `person_threshold` is drawn greyed and thin, never as confident."""
        from posekit.viz import draw_skeleton, plot_3d_hypotheses
        if self.is_3d:
            return plot_3d_hypotheses(self, gt=gt)
        base = self.image if image is None else image
        if base is None:
            raise ValueError("Results.plot() needs an image: none was stored; pass image=...")
        if self.track_ids is not None:  # a tracked frame: colours and labels follow the track id
            from posekit.viz.tracks import draw_tracks
            return draw_tracks(base, self.keypoints, self.scores, self.skeleton, self.track_ids,
                               boxes=self.boxes if boxes else None, score_threshold=score_threshold,
                               person_scores=self.person_scores, person_threshold=person_threshold,
                               radius=radius, thickness=thickness)
        return draw_skeleton(base, self.keypoints, self.scores, self.skeleton, score_threshold=score_threshold,
                             radius=radius, thickness=thickness, boxes=self.boxes if boxes else None,
                             person_scores=self.person_scores, labels=labels, color_by_person=color_by_person,
                             person_threshold=person_threshold)

    def to_coco(self, *, image_id: int = 0, category_id: int = 1) -> list[dict]:
        """COCO result dicts: keypoints as flat [x, y, score] * K, one dict per person."""
        if self.is_3d:
            raise ValueError("to_coco() is for 2-D keypoints")
        out = []
        for p in range(len(self)):
            flat = np.concatenate([self.keypoints[p], self.scores[p][:, None]], axis=1).reshape(-1)
            out.append({"image_id": int(image_id), "category_id": int(category_id),
                        "keypoints": [round(float(v), 3) for v in flat],
                        "score": float(self.person_scores[p])})
        return out

    def to_dict(self) -> dict:
        """Plain JSON-ready values; a non-finite number (a joint that was not found) is None, so
        the JSON stays strict (no NaN token, which most JSON readers refuse)."""
        d = {"skeleton": self.skeleton.name, "keypoint_names": list(self.skeleton.keypoints),
             "keypoints": self.keypoints.tolist(), "scores": self.scores.tolist(),
             "person_scores": self.person_scores.tolist(), "path": self.path}
        for name in ("boxes", "hypotheses", "hypothesis_weights", "keypoints_2d", "track_ids"):
            value = getattr(self, name)
            if value is not None:
                d[name] = np.asarray(value).tolist()
        if self.meta:
            d["meta"] = self.meta
        return json_safe(d)

    def save(self, path: str | Path, **plot_options) -> Path:
        """`.json` writes the numbers; `.png`/`.jpg` writes the overlay (`plot_options` go to `plot`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".json":
            path.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False))
        elif path.suffix.lower() in (".png", ".jpg", ".jpeg"):
            from posekit.data.io import write_image
            write_image(path, self.plot(**plot_options))
        else:
            raise ValueError(f"Results.save: unsupported extension {path.suffix!r} (use .json, .png or .jpg)")
        return path


def json_safe(value):
    """`value` with numpy scalars/arrays as Python values and every non-finite float as None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value



def results_json(res: Results, **extra) -> dict:
    """`Results.to_dict()` (plus `extra`) as strict JSON with the image size: what `predict`
    writes, from the PyTorch path and the torch-free ONNX path alike."""
    d = json_safe({**res.to_dict(), **extra})
    if res.image is not None:
        d.setdefault("image_size", [int(res.image.shape[1]), int(res.image.shape[0])])
    return d


def merge_persons(parts: list[Results], rows: np.ndarray, *, skeleton, image=None, path=None,
                  score_threshold: float = 0.2) -> Results:
    """The single-person Results of N crops of one image -> one Results with N persons;
    person_scores = box score x the mean keypoint score above `score_threshold` (MMPose's top-down
    rescoring, the one the keypoints family evaluates with: its eval.keypoint_score_threshold)."""
    k = skeleton.num_keypoints
    if not parts:
        return Results(keypoints=np.zeros((0, k, 2)), scores=np.zeros((0, k)), skeleton=skeleton,
                       person_scores=np.zeros(0), boxes=np.zeros((0, 4)), image=image, path=path,
                       meta={"box_scores": []})
    keypoints = np.concatenate([p.keypoints for p in parts])
    scores = np.concatenate([p.scores for p in parts])
    box_scores = rows[:, 4]
    meta = {"box_scores": [float(s) for s in box_scores]}
    extra = [p.meta for p in parts if p.meta]
    if extra:
        meta["persons"] = [p.meta for p in parts]
    return Results(keypoints=keypoints, scores=scores, skeleton=skeleton,
                   person_scores=topdown_person_scores(scores, box_scores, score_threshold) if scores.size
                   else box_scores * 0.0,
                   boxes=rows[:, :4].copy(), image=image, path=path, meta=meta)


def people_per_image(keypoints: np.ndarray, scores: np.ndarray, person_scores: np.ndarray, boxes: np.ndarray,
                     owner: np.ndarray | None, *, skeleton: Skeleton, images: list | None = None,
                     paths: list | None = None) -> list[Results]:
    """A batch of top-down crops (N people: keypoints (N, K, 2) in image pixels, scores (N, K),
    person_scores (N,), boxes (N, 4), NaN for a whole-image crop) -> Results regrouped by image:
    `owner` (N,) names each crop's image (0 .. len(images) - 1); None: one Results per crop, as
    evaluation batches come. A group's boxes are None when one of them is a whole image."""
    k = skeleton.num_keypoints
    if owner is None:
        groups = [np.array([n]) for n in range(len(keypoints))]
    else:
        groups = [np.flatnonzero(owner == n) for n in range(len(images))]
    out = []
    for n, g in enumerate(groups):
        b = boxes[g]
        out.append(Results(keypoints=keypoints[g].reshape(len(g), k, 2), scores=scores[g].reshape(len(g), k),
                           skeleton=skeleton, person_scores=person_scores[g], boxes=b if np.isfinite(b).all() else None,
                           image=images[n] if images else None, path=paths[n] if paths else None))
    return out


def results_per_box(items: list, boxes: list, run, *, skeleton: Skeleton, score_threshold: float = 0.2) -> list[Results]:
    """Top-down prediction with per-input boxes, shared by `Predictor` and the numpy runtime's.

    boxes: per input None (the whole image), one box (the family's own single-person Results) or
    a list of boxes (each cropped and run like a single person, the N crops merged into one
    Results; `score_threshold`: see `merge_persons`). `run(crops, crop_boxes)` runs the model with
    one box (or None) per crop."""
    parsed = [normalize_boxes(b, where=f"input {i}: box") for i, b in enumerate(boxes)]
    if not any(many for _, many in parsed):
        return run(items, [None if rows is None else list(rows[0, :4]) for rows, _ in parsed])
    crops, crop_boxes, owners = [], [], []
    for i, (image, (rows, _)) in enumerate(zip(items, parsed)):
        for row in ([None] if rows is None else rows):
            crops.append(image)
            crop_boxes.append(None if row is None else list(row[:4]))
            owners.append(i)
    flat = run(crops, crop_boxes) if crops else []
    out = []
    for i, (image, (rows, many)) in enumerate(zip(items, parsed)):
        mine = [r for r, o in zip(flat, owners) if o == i]
        out.append(mine[0] if rows is None or not many else merge_persons(
            mine, rows, skeleton=skeleton, image=image, score_threshold=score_threshold))
    return out
