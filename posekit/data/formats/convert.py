"""`posekit data convert`: COCO <-> YOLO-pose; DeepLabCut, Label Studio, CVAT -> COCO; written to a new folder.

COCO output: OUT/annotations/<split>.json + OUT/images/<split>/<file_name> (copies, or symlinks).
YOLO output: OUT/data.yaml + OUT/images/<split>/ + OUT/labels/<split>/.
The sources are never written to; every file is written to a temporary name and renamed.
Coordinates: COCO keeps float pixels; YOLO writes `decimals` decimals of the normalised value,
so COCO -> YOLO -> COCO agrees to 0.5e-`decimals` x the image side.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from posekit.data.formats.registry import guess_format, load_samples, source_skeleton
from posekit.data.formats.yolo import _atomic_write, _place_image, read_data_yaml, write_yolo_pose
from posekit.data.sample import relative_path_problem
from posekit.skeletons import Skeleton

TARGETS = ("coco", "yolo")


def coco_dict(samples, skeleton: Skeleton, *, category_name: str = "object") -> dict:
    """A COCO keypoint dict of image Samples; file names as the samples' meta file_name
    (relative), boxes and areas as read; keypoints at full float precision."""
    images, annotations = [], []
    for i, s in enumerate(samples):
        image_id = i + 1
        w, h = s.meta.get("width"), s.meta.get("height")
        images.append({"id": image_id, "file_name": str(s.meta.get("file_name", s.image_path.name)),
                       "width": int(w), "height": int(h)})
        areas = s.meta.get("areas")
        for p in range(s.num_people):
            kp = s.keypoints[p]
            box = s.boxes[p] if s.boxes is not None and len(s.boxes) == s.num_people else None
            if box is None:
                lab = kp[kp[:, 2] > 0, :2]
                lo, hi = lab.min(0), lab.max(0)
                box = np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])
            area = float(areas[p]) if areas is not None and len(areas) == s.num_people else float(box[2] * box[3])
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "keypoints": [float(v) if j % 3 < 2 else int(round(v)) for j, v in
                                              enumerate(kp.ravel())],
                                "num_keypoints": int((kp[:, 2] > 0).sum()), "bbox": [float(v) for v in box],
                                "area": area, "iscrowd": 0})
    category = {"id": 1, "name": category_name, "supercategory": category_name,
                "keypoints": list(skeleton.keypoints), "skeleton": [[a + 1, b + 1] for a, b in skeleton.limbs]}
    return {"info": {"description": "written by posekit data convert"}, "images": images,
            "annotations": annotations, "categories": [category]}


def write_coco(splits: dict, out_dir, skeleton: Skeleton, *, images: str = "copy") -> dict:
    out = Path(out_dir)
    report = {"images": 0, "people": 0}
    for split, samples in splits.items():
        json_path = out / "annotations" / f"{split}.json"
        if json_path.exists():
            raise FileExistsError(f"{json_path} already exists; write to a new folder")
        for s in samples:
            name = str(s.meta.get("file_name", s.image_path.name))
            if relative_path_problem(name):
                name = Path(name).name
                s.meta["file_name"] = name
            _place_image(Path(s.image_path), out / "images" / split / name, images)
        _atomic_write(json_path, json.dumps(coco_dict(samples, skeleton)))
        report["images"] += len(samples)
        report["people"] += sum(s.num_people for s in samples)
    return report


def _splits_of(src: Path, fmt: str, images_dir, category_id, keypoint_names=None) -> tuple[dict, Skeleton]:
    """{split: samples} and the skeleton of a source dataset."""
    if fmt in ("labelstudio", "cvat"):  # images: --images (Label Studio: default the JSON's folder; CVAT: images/)
        samples = load_samples(fmt, src, images_dir, category_id=category_id, keypoint_names=keypoint_names)
        return {"train": samples}, samples.skeleton
    if fmt == "yolo":
        data_yaml = src / "data.yaml" if src.is_dir() else src
        splits = {s: load_samples("yolo", data_yaml, split=s, category_id=category_id)
                  for s in read_data_yaml(data_yaml).splits}
        return splits, source_skeleton("yolo", data_yaml, category_id)
    if fmt == "deeplabcut":
        ann = src / "config.yaml" if src.is_dir() else src
        samples = load_samples("deeplabcut", ann)
        return {"train": samples}, samples.skeleton
    if fmt == "coco":
        if images_dir is None:
            raise ValueError(f"{src}: a COCO source needs its image folder (--images DIR)")
        samples = load_samples("coco", src, images_dir, category_id=category_id)
        names = samples.keypoint_names
        return {"train": samples}, None if names is None else Skeleton(name=src.stem, keypoints=tuple(names))
    raise ValueError(f"cannot convert from {fmt!r}; sources: coco, yolo, deeplabcut, labelstudio, cvat")


def convert(src, to: str, out, *, fmt: str | None = None, images_dir=None, skeleton: Skeleton | None = None,
            images: str = "copy", ndim: int = 3, decimals: int = 6, category_id=None, split: str | None = None) -> dict:
    """Convert the dataset at `src` (format `fmt`, guessed when None) to `to` under `out`.
    A COCO source has no flip pairs: `skeleton` (from a YAML) supplies them for YOLO's flip_idx."""
    if to not in TARGETS:
        raise ValueError(f"--to {to!r}; valid: {', '.join(TARGETS)}")
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"source not found: {src}")
    fmt = fmt or guess_format(src)
    if fmt == to:
        raise ValueError(f"{src} is already {to}")
    out = Path(out)
    if src.is_dir() and (out.resolve() == src.resolve() or src.resolve() in out.resolve().parents):
        raise ValueError(f"--out {out} lies inside the source {src}; write somewhere else")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--out {out} exists and is not an empty folder; posekit writes a new dataset there")
    splits, sk = _splits_of(src, fmt, images_dir, category_id, skeleton.keypoints if skeleton is not None else None)
    if split:
        splits = {split: next(iter(splits.values()))} if len(splits) == 1 else {split: splits[split]}
    if skeleton is not None:
        k = next(iter(splits.values()))[0].keypoints.shape[1] if any(len(v) for v in splits.values()) else None
        if k is not None and skeleton.num_keypoints != k:
            raise ValueError(f"--skeleton {skeleton.name!r} has {skeleton.num_keypoints} keypoints, {src} has {k}")
        sk = skeleton
    report = write_coco(splits, out, sk, images=images) if to == "coco" else \
        write_yolo_pose(splits, out, sk, ndim=ndim, decimals=decimals, images=images)
    skipped = [m for v in splits.values() for m in getattr(v, "skipped", [])]
    return {**report, "from": fmt, "to": to, "splits": {k: len(v) for k, v in splits.items()},
            "skipped": skipped, "flip_pairs": len(sk.flip_pairs)}
