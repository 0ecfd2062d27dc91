"""Ultralytics YOLO-pose datasets: a data YAML plus one `labels/*.txt` per image, read and written.

The data YAML (Ultralytics' own keys):

    path: ../datasets/my-pose     # dataset root; relative to the YAML's folder (default: that folder)
    train: images/train           # a folder of images, a .txt list of images, or a list of either
    val: images/val
    kpt_shape: [17, 3]            # K keypoints, 2 (x y) or 3 (x y visibility) values each
    flip_idx: [0, 2, 1, ...]      # the keypoint each one becomes under a horizontal flip
    names: {0: person}
    kpt_names: {0: [nose, ...]}   # optional (newer Ultralytics); else kp0, kp1, ...
    skeleton: [[0, 1], ...]       # optional, 0-based limbs (posekit writes it; Ultralytics ignores it)

Labels: `images/` -> `labels/` in the image path, suffix `.txt`; one line per object,
`class cx cy w h x1 y1 [v1] x2 ...`, every coordinate normalised by the image width or height
(Ultralytics' converter: x / W, so posekit's 0-based pixels map onto it directly). A missing label
file is an image without people (Ultralytics' background images). With 2 values per keypoint a point
at exactly (0, 0) is taken as unlabelled: that is how converters write a missing point.

A bad label file refuses its whole image (as Ultralytics does): one line naming the file and the
line; with ``on_bad_record="skip"`` the image is dropped and listed in ``.skipped``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from posekit.data.formats.coco import COCOSamples
from posekit.data.io import image_size_from_header
from posekit.data.sample import BadRecordError, Sample, relative_path_problem
from posekit.skeletons import Skeleton

__all__ = ["YOLOFormatError", "YOLORecordError", "YOLODataYAML", "read_data_yaml", "yolo_skeleton",
           "load_yolo_pose", "write_yolo_pose", "label_path", "image_wh", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")  # what Ultralytics lists
BOUND_SLACK = 1e-6  # normalised values a hair outside [0, 1] (float printing) are accepted


class YOLOFormatError(ValueError):
    """A YOLO-pose data YAML or label file is malformed; the message names the file (and line)."""


class YOLORecordError(YOLOFormatError, BadRecordError):
    """One bad image or label file (``on_bad_record="error"``)."""


@dataclass
class YOLODataYAML:
    """A parsed data YAML: `root` is the resolved dataset folder, `splits` the raw split entries."""
    yaml_path: Path
    root: Path
    splits: dict
    num_keypoints: int
    ndim: int
    flip_idx: list | None
    names: dict
    kpt_names: dict | None
    skeleton: list | None


def _err(path, message) -> YOLOFormatError:
    return YOLOFormatError(f"{path}: {message}")


def read_data_yaml(path) -> YOLODataYAML:
    """The data YAML, checked: kpt_shape [K, 2|3], flip_idx a permutation of range(K) that is its
    own inverse, names a mapping or list of class names."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"YOLO data YAML not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise _err(path, f"invalid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(raw, dict):
        raise _err(path, "a YOLO data YAML is a mapping with path, train, val, kpt_shape, names")
    shape = raw.get("kpt_shape")
    if not (isinstance(shape, list) and len(shape) == 2 and all(type(v) is int for v in shape)
            and shape[0] > 0 and shape[1] in (2, 3)):
        raise _err(path, f"'kpt_shape' must be [K, 2] or [K, 3] (a pose dataset), got {shape!r}")
    k, ndim = shape
    flip = raw.get("flip_idx")
    if flip is not None:
        if not (isinstance(flip, list) and sorted(flip) == list(range(k)) and all(type(v) is int for v in flip)):
            raise _err(path, f"'flip_idx' must list each of the {k} keypoint indices once, got {flip!r}")
        if any(flip[flip[i]] != i for i in range(k)):
            raise _err(path, "'flip_idx' must swap keypoints in pairs (flip_idx[flip_idx[i]] == i)")
    names = raw.get("names", {0: "object"})
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise _err(path, f"'names' must map class ids to names, got {names!r}")
    kpt_names = raw.get("kpt_names")
    if isinstance(kpt_names, list):
        kpt_names = {0: kpt_names}
    if kpt_names is not None:
        if not isinstance(kpt_names, dict) or not all(
                isinstance(v, list) and len(v) == k and all(isinstance(n, str) for n in v) for v in kpt_names.values()):
            raise _err(path, f"'kpt_names' must map class ids to lists of {k} names")
    limbs = raw.get("skeleton")
    if limbs is not None and not (isinstance(limbs, list) and all(
            isinstance(p, list) and len(p) == 2 and all(type(v) is int and 0 <= v < k for v in p) for p in limbs)):
        raise _err(path, f"'skeleton' must be a list of [a, b] keypoint indices (0..{k - 1})")
    base = raw.get("path")
    if base is None or base == "":
        root = path.parent
    elif isinstance(base, str):
        root = Path(base) if Path(base).is_absolute() else path.parent / base
    else:
        raise _err(path, f"'path' must be a folder, got {base!r}")
    splits = {s: raw[s] for s in ("train", "val", "test") if raw.get(s)}
    return YOLODataYAML(path, Path(os.path.normpath(os.path.abspath(root))), splits, k, ndim, flip, names,
                        kpt_names, limbs)


def yolo_skeleton(data: YOLODataYAML | str | Path, *, class_id: int | None = None, name: str | None = None) -> Skeleton:
    """The skeleton the data YAML declares: kpt_names (else kp0..), flip pairs from flip_idx,
    limbs from an optional `skeleton` key."""
    if not isinstance(data, YOLODataYAML):
        data = read_data_yaml(data)
    cid = _class_id(data, class_id)
    names = (data.kpt_names or {}).get(cid) or [f"kp{i}" for i in range(data.num_keypoints)]
    flip = data.flip_idx or list(range(data.num_keypoints))
    pairs = tuple((i, j) for i, j in enumerate(flip) if i < j)
    try:
        return Skeleton(name=name or f"{data.yaml_path.stem}", keypoints=tuple(names), flip_pairs=pairs,
                        limbs=tuple(tuple(p) for p in (data.skeleton or ())))
    except ValueError as e:
        raise _err(data.yaml_path, str(e)) from None


def _class_id(data: YOLODataYAML, class_id) -> int:
    if class_id is None:
        if len(data.names) > 1:
            raise _err(data.yaml_path, f"several classes {data.names}; pick one (data.category_id=ID)")
        return int(next(iter(data.names)))
    if class_id not in data.names:
        raise _err(data.yaml_path, f"class {class_id} is not in names {data.names}")
    return int(class_id)


def _inside(root: Path, path: Path) -> bool:
    full = os.path.normpath(os.path.abspath(path))
    return os.path.commonpath([str(root), full]) == str(root)


def _split_images(data: YOLODataYAML, split: str) -> list[tuple[Path, Path]]:
    """(image, base) for every image of a split: folders are listed recursively (sorted; base: the
    folder), .txt lists read line by line (relative lines against the list's folder; base: the
    dataset root); each must lie inside the dataset root. File names are relative to the base."""
    if split not in data.splits:
        raise _err(data.yaml_path, f"no {split!r} split (it lists {sorted(data.splits) or 'none'})")
    entries = data.splits[split]
    entries = entries if isinstance(entries, list) else [entries]
    out: list[tuple[Path, Path]] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise _err(data.yaml_path, f"{split}: entries must be folders or .txt lists, got {entry!r}")
        p = Path(entry) if Path(entry).is_absolute() else data.root / entry
        if not _inside(data.root, p):
            raise _err(data.yaml_path, f"{split}: {entry!r} lies outside the dataset root {data.root}; refused")
        if p.is_dir():
            out += [(q, p) for q in sorted(p.rglob("*")) if q.suffix.lower() in IMAGE_SUFFIXES]
        elif p.is_file() and p.suffix == ".txt":
            for n, line in enumerate(p.read_text().splitlines(), 1):
                line = line.strip()
                if not line:
                    continue
                q = Path(line) if Path(line).is_absolute() else p.parent / line
                if not _inside(data.root, q):
                    raise _err(p, f"line {n}: image {line!r} lies outside the dataset root {data.root}; refused")
                out.append((Path(os.path.normpath(q)), data.root))
        else:
            raise FileNotFoundError(f"{data.yaml_path}: {split}: image folder or list not found: {p}")
    return out


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last `images` folder of the path becomes `labels`, the suffix `.txt`."""
    parts = list(Path(image).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def image_wh(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, decoding it only for formats without a known header."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    wh = image_size_from_header(head)
    if wh is None or min(wh) <= 0:
        from posekit.data.io import read_image
        h, w = read_image(path).shape[:2]
        wh = (w, h)
    return int(wh[0]), int(wh[1])


def _parse_labels(text: str, file: Path, k: int, ndim: int, cid: int, wh) -> tuple[np.ndarray, np.ndarray]:
    w, h = wh
    kps, boxes = [], []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{file}: line {n}"
        try:
            values = np.array([float(v) for v in fields], dtype=np.float64)
        except ValueError:
            raise BadRecordError(f"{where}: values must be numbers") from None
        if len(values) != 5 + k * ndim:
            raise BadRecordError(f"{where}: {len(values)} values, expected {5 + k * ndim} (class, box, "
                                 f"{k} keypoints x {ndim}; kpt_shape in the data YAML)")
        if not np.isfinite(values).all():
            raise BadRecordError(f"{where}: non-finite values (NaN or inf)")
        if not float(values[0]).is_integer() or values[0] < 0:
            raise BadRecordError(f"{where}: class {fields[0]!r} must be a non-negative integer")
        if int(values[0]) != cid:
            continue
        pts = values[5:].reshape(k, ndim)
        coords = np.concatenate([values[1:5], pts[:, :2].ravel()])
        if coords.min() < -BOUND_SLACK or coords.max() > 1 + BOUND_SLACK:
            raise BadRecordError(f"{where}: coordinates must be normalised to [0, 1] (got {coords.min():g}.."
                                 f"{coords.max():g}); pixel labels? divide x by the width, y by the height")
        if ndim == 3:
            vis = pts[:, 2]
            if vis.min() < 0 or vis.max() > 2:
                raise BadRecordError(f"{where}: keypoint visibility must be 0 (unlabelled), 1 or 2, got "
                                     f"{vis[(vis < 0) | (vis > 2)][0]:g}")
        else:
            vis = np.where((pts[:, 0] == 0) & (pts[:, 1] == 0), 0.0, 2.0)
        cx, cy, bw, bh = values[1:5]
        if bw <= 0 or bh <= 0:
            raise BadRecordError(f"{where}: box width and height must be positive")
        boxes.append([(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h])
        xy = pts[:, :2] * [w, h]
        kps.append(np.concatenate([np.where(vis[:, None] > 0, xy, 0.0), vis[:, None]], axis=1))
    return (np.stack(kps) if kps else np.zeros((0, k, 3))), np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def load_yolo_pose(yaml_file, split: str = "train", *, on_bad_record: str = "error",
                   class_id: int | None = None) -> COCOSamples:
    """One Sample per image of `split` with all the people of class `class_id` (the only class
    when there is one). meta: image_id (1-based position), file_name (relative to the dataset
    split folder, or to the dataset root for .txt lists), width, height, areas (box areas: YOLO has no segment area)."""
    if on_bad_record not in ("error", "skip"):
        raise ValueError(f"on_bad_record must be 'error' or 'skip', got {on_bad_record!r}")
    data = read_data_yaml(yaml_file)
    cid = _class_id(data, class_id)
    skeleton = yolo_skeleton(data, class_id=cid)
    k, ndim = data.num_keypoints, data.ndim
    samples, skipped = [], []
    for image, base in _split_images(data, split):
        rel = os.path.relpath(image, base)
        try:
            if not image.is_file():
                raise BadRecordError(f"{data.yaml_path}: {split}: image file not found: {image}")
            try:
                wh = image_wh(image)
            except (OSError, ValueError) as e:
                raise BadRecordError(f"{image}: cannot read the image size ({' '.join(str(e).split())})") from None
            labels = label_path(image)
            text = labels.read_text(errors="replace") if labels.is_file() else ""
            kp, boxes = _parse_labels(text, labels, k, ndim, cid, wh)
        except BadRecordError as e:
            if on_bad_record == "error":
                raise YOLORecordError(str(e)) from None
            skipped.append(str(e))
            continue
        samples.append(Sample(keypoints=kp, image_path=image, boxes=boxes,
                              meta={"image_id": len(samples) + 1, "file_name": rel, "width": wh[0], "height": wh[1],
                                    "areas": boxes[:, 2] * boxes[:, 3]}))
    return COCOSamples(samples, skipped=skipped, keypoint_names=skeleton.keypoints, category_id=cid,
                       ann_file=data.yaml_path)


# --- writing --------------------------------------------------------------------------------------
def _fmt(v: float, decimals: int) -> str:
    text = f"{v:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _place_image(src: Path, dst: Path, mode: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        raise FileExistsError(f"{dst} already exists; write to an empty folder")
    if mode == "symlink":
        os.symlink(os.path.abspath(src), dst)
    else:
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


def write_yolo_pose(splits: dict, out_dir, skeleton: Skeleton, *, ndim: int = 3, decimals: int = 6,
                    images: str = "copy", class_name: str = "object") -> dict:
    """Write `{split: [Sample, ...]}` as a YOLO-pose dataset under `out_dir` (which must not hold
    one already): images/<split>/<file_name>, labels/<split>/<name>.txt, data.yaml. Coordinates
    are written with `decimals` decimals of the normalised value; boxes are clipped to the image;
    labelled keypoints outside the image and crowd regions cannot be said in YOLO and are counted
    in the returned report. `images`: copy (default) or symlink; the sources are never touched."""
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim}")
    if images not in ("copy", "symlink"):
        raise ValueError(f"images must be 'copy' or 'symlink', got {images!r}")
    out = Path(out_dir)
    if (out / "data.yaml").exists():
        raise FileExistsError(f"{out / 'data.yaml'} already exists; write to a new folder")
    k = skeleton.num_keypoints
    report = {"images": 0, "people": 0, "keypoints_outside_image": 0, "crowd_regions_dropped": 0,
              "occluded_written_visible": 0}
    for split, samples in splits.items():
        used: set = set()
        for i, s in enumerate(samples):
            if s.keypoints.shape[1] != k:
                raise ValueError(f"{split} sample {i}: {s.keypoints.shape[1]} keypoints, skeleton has {k}")
            name = str(s.meta.get("file_name") or (s.image_path.name if s.image_path else f"{i:06d}.png"))
            problem = relative_path_problem(name)
            if problem:
                name = Path(name).name
            if name in used:
                raise ValueError(f"{split} sample {i}: two images named {name!r}")
            used.add(name)
            w, h = int(s.meta.get("width", 0)), int(s.meta.get("height", 0))
            if not (w > 0 and h > 0):
                if s.image is not None:
                    h, w = s.image.shape[:2]
                elif s.image_path is not None:
                    w, h = image_wh(s.image_path)
                else:
                    raise ValueError(f"{split} sample {i}: no image size (meta width/height) and no image")
            lines = []
            for p in range(s.num_people):
                kp = s.keypoints[p]
                if s.boxes is not None and len(s.boxes) == s.num_people:
                    x, y, bw, bh = s.boxes[p]
                else:
                    lab = kp[kp[:, 2] > 0, :2]
                    if not len(lab):
                        continue
                    (x, y), (x1, y1) = lab.min(0), lab.max(0)
                    bw, bh = x1 - x, y1 - y
                x0, y0 = max(x, 0.0), max(y, 0.0)
                x1, y1 = min(x + bw, float(w)), min(y + bh, float(h))
                if x1 <= x0 or y1 <= y0:
                    continue
                vals = [(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h]
                for j in range(k):
                    px, py, v = kp[j]
                    inside = 0 <= px <= w and 0 <= py <= h
                    if v > 0 and not inside:
                        report["keypoints_outside_image"] += 1
                    if v > 0 and inside:
                        vals += [px / w, py / h] + ([v] if ndim == 3 else [])
                    else:
                        vals += [0.0, 0.0] + ([0.0] if ndim == 3 else [])
                    report["occluded_written_visible"] += int(ndim == 2 and v == 1 and inside)
                lines.append(" ".join(["0"] + [_fmt(v, decimals) for v in vals]))
                report["people"] += 1
            report["crowd_regions_dropped"] += len(s.meta.get("crowd", ()))
            image_dst = out / "images" / split / name
            if s.image_path is not None:
                _place_image(Path(s.image_path), image_dst, images)
            elif s.image is not None:
                from posekit.data.io import write_image
                image_dst.parent.mkdir(parents=True, exist_ok=True)
                write_image(image_dst, s.image)
            _atomic_write(label_path(image_dst), "".join(line + "\n" for line in lines))
            report["images"] += 1
    doc = {"path": ".", **{split: f"images/{split}" for split in splits}, "kpt_shape": [k, ndim],
           "flip_idx": [int(v) for v in skeleton.flip_index], "names": {0: class_name},
           "kpt_names": {0: list(skeleton.keypoints)}}
    if skeleton.limbs:
        doc["skeleton"] = [list(map(int, p)) for p in skeleton.limbs]
    _atomic_write(out / "data.yaml", "# written by posekit data convert (Ultralytics YOLO-pose data YAML)\n"
                  + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None))
    return report
