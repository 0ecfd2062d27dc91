"""StanfordExtra (v12 JSON) dog keypoints: the reader, split files and a lazy image source.

File format (`StanfordExtra_v12.json`, and the 18-dog sample in the same schema): a JSON list,
one dict per dog, with `img_path` (relative to the Stanford Dogs image folder), `img_width`,
`img_height`, `img_bbox` = [x, y, w, h] (NOT x1y1x2y2), `joints` = 24 x [x, y, v] with v = 1
labelled / 0 unlabelled (unlabelled joints are [0, 0, 0]; indices 20-23 are never labelled),
`is_multiple_dogs` and `seg`, a COCO compressed-RLE `counts` string of the dog's mask.
The official train/val/test splits are `.npy` arrays of indices into that list.

The source yields `Sample`s (P = 1: original-frame keypoints + the annotated box); the top-down
pipeline (posekit.data.topdown) crops, augments and encodes them.
"""
from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posekit.data.io import read_image, read_json
from posekit.data.sample import MAX_COORDINATE, BadRecordError, Sample, check_values, relative_path_problem

NUM_JOINTS = 24
# border fill for letterboxing/augmentation: the ImageNet mean colour, i.e. ~0 after normalisation
PAD_VALUE = (124, 116, 104)  # ImageNet mean RGB: letterbox borders look like average content


class StanfordExtraError(ValueError):
    """A StanfordExtra file or record is malformed; the message names the file and the record."""


class StanfordExtraRecordError(StanfordExtraError, BadRecordError):
    """One record (an annotation, or its image at load time) cannot be used."""


@dataclass
class StanfordExtraRecord:
    index: int  # position in the JSON list (what the official split files index)
    img_path: str
    bbox: np.ndarray  # (4,) x, y, w, h pixels
    joints: np.ndarray  # (24, 3) x, y, v
    width: int | None = None
    height: int | None = None
    is_multiple_dogs: bool = False
    seg: str | None = None


# ----------------------------------------------------------------------------------------------
# annotation files
def _number_array(value, what: str, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise StanfordExtraRecordError(f"{where}: '{what}' must contain numbers, got {str(value)[:80]}") from None
    return arr


def parse_record(raw, index: int, source: str = "<json>") -> StanfordExtraRecord:
    """Validate one JSON entry; every problem is a StanfordExtraError naming file, index and image."""
    if not isinstance(raw, dict):
        raise StanfordExtraRecordError(f"{source}: record {index}: expected an object, got {type(raw).__name__}")
    img_path = raw.get("img_path")
    where = f"{source}: record {index} ({img_path})"
    if not isinstance(img_path, str) or not img_path:
        raise StanfordExtraRecordError(f"{source}: record {index}: missing or empty 'img_path'")
    problem = relative_path_problem(img_path)
    if problem:
        raise StanfordExtraRecordError(f"{source}: record {index}: {problem}")
    for key in ("joints", "img_bbox"):
        if key not in raw:
            raise StanfordExtraRecordError(f"{where}: missing field '{key}'")
    joints = _number_array(raw["joints"], "joints", where)
    if joints.ndim != 2 or joints.shape[1] != 3:
        raise StanfordExtraRecordError(f"{where}: 'joints' must be {NUM_JOINTS} x [x, y, v], got shape {joints.shape}")
    if joints.shape[0] != NUM_JOINTS:
        raise StanfordExtraRecordError(f"{where}: 'joints' has {joints.shape[0]} entries, expected {NUM_JOINTS}")
    bad = np.flatnonzero(~np.isfinite(joints).all(axis=1))
    if bad.size:
        raise StanfordExtraRecordError(f"{where}: 'joints' has NaN/inf values at joint(s) {bad.tolist()}")
    bbox = _number_array(raw["img_bbox"], "img_bbox", where)
    if bbox.shape != (4,) or not np.isfinite(bbox).all():
        raise StanfordExtraRecordError(f"{where}: 'img_bbox' must be 4 finite numbers [x, y, w, h], got {raw['img_bbox']}")
    if bbox[2] <= 0 or bbox[3] <= 0:
        raise StanfordExtraRecordError(f"{where}: 'img_bbox' [x, y, w, h] needs positive w and h, got {bbox.tolist()}")
    check_values(joints[:, :2], "'joints'", where, error=StanfordExtraRecordError)
    if not np.all(np.isin(joints[:, 2], (0, 1, 2))):
        raise StanfordExtraRecordError(f"{where}: 'joints' visibilities must be 0 or 1 (2 accepted), got "
                                       f"{sorted(set(joints[:, 2].tolist()))[:5]}")
    check_values(bbox, "'img_bbox'", where, error=StanfordExtraRecordError)
    width, height = raw.get("img_width"), raw.get("img_height")
    for key, value in (("img_width", width), ("img_height", height)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 < value <= MAX_COORDINATE):
            raise StanfordExtraRecordError(f"{where}: '{key}' must be a positive number up to {MAX_COORDINATE:g}, "
                                           f"got {value!r}")
    seg = raw.get("seg")
    if seg is not None and not isinstance(seg, str):
        raise StanfordExtraRecordError(f"{where}: 'seg' must be a compressed-RLE string, got {type(seg).__name__}")
    return StanfordExtraRecord(index=index, img_path=img_path, bbox=bbox, joints=joints,
                               width=None if width is None else int(width),
                               height=None if height is None else int(height),
                               is_multiple_dogs=bool(raw.get("is_multiple_dogs", False)), seg=seg)


def load_stanford_extra(json_path: str | Path, image_dir: str | Path | None = None, *,
                        check_images: bool = True) -> list[StanfordExtraRecord]:
    """Read and validate a StanfordExtra v12 JSON list. With `check_images`, a record whose image
    is missing under `image_dir` is an error naming it (caught at load time, not mid-training)."""
    json_path = Path(json_path)
    data = read_json(json_path, "StanfordExtra annotation file", StanfordExtraError)
    if not isinstance(data, list):
        raise StanfordExtraError(f"{json_path}: expected a JSON list of records, got {type(data).__name__}")
    records = [parse_record(raw, i, str(json_path)) for i, raw in enumerate(data)]
    # several dogs of one image share img_path (legal); the same dog twice is not
    seen: dict = {}
    for r in records:
        key = (r.img_path, *r.bbox.tolist())
        seen[key] = seen.get(key, 0) + 1
    extra = sum(n - 1 for n in seen.values() if n > 1)
    if extra:
        first = next(k for k, n in seen.items() if n > 1)
        warnings.warn(f"{json_path}: {extra} duplicate record(s) (same img_path and img_bbox), e.g. {first[0]}",
                      stacklevel=2)
    if check_images and image_dir is not None:
        image_dir = Path(image_dir)
        for r in records:
            if not (image_dir / r.img_path).is_file():
                raise StanfordExtraError(f"{json_path}: record {r.index} ({r.img_path}): image not found at "
                                         f"{image_dir / r.img_path}")
    return records


@dataclass(frozen=True)
class KeypointDefinition:
    index: int
    name: str
    color: tuple[int, int, int]
    labelled: bool  # the "Stanford" column: False for the Animal-Pose-only joints 20-23


def load_keypoint_definitions(csv_path: str | Path) -> list[KeypointDefinition]:
    """Parse `keypoint_definitions.csv` (Index, Name, Hex colour, Stanford, ...)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"keypoint definitions not found: {csv_path}")
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    required = ("Index", "Name", "Hex colour", "Stanford")
    if not rows or any(k not in rows[0] for k in required):
        raise StanfordExtraError(f"{csv_path}: expected columns {list(required)}, got {list(rows[0]) if rows else []}")
    out = []
    for line, row in enumerate(rows, start=2):
        try:
            index = int(row["Index"])
            hexc = row["Hex colour"].strip().lstrip("#")
            color = tuple(int(hexc[i:i + 2], 16) for i in (0, 2, 4))
        except (TypeError, ValueError, OverflowError):
            raise StanfordExtraError(f"{csv_path}: line {line}: bad Index or Hex colour in {row}") from None
        out.append(KeypointDefinition(index, row["Name"].strip(), color, row["Stanford"].strip().lower() == "y"))
    if [d.index for d in out] != list(range(NUM_JOINTS)):
        raise StanfordExtraError(f"{csv_path}: expected indices 0..{NUM_JOINTS - 1} in order")
    return out


def decode_seg(record: StanfordExtraRecord) -> np.ndarray:
    """The dog's mask (H, W) uint8 from the compressed-RLE `seg` string (needs img_width/height)."""
    from pycocotools import mask as mask_utils
    if record.seg is None:
        raise StanfordExtraError(f"record {record.index} ({record.img_path}): has no 'seg'")
    if record.width is None or record.height is None:
        raise StanfordExtraError(f"record {record.index} ({record.img_path}): 'seg' needs img_width and img_height")
    rle = {"size": [record.height, record.width], "counts": record.seg.encode("ascii")}
    try:
        return mask_utils.decode(rle)
    except Exception as e:  # pycocotools raises bare Exceptions on corrupt strings
        raise StanfordExtraError(f"record {record.index} ({record.img_path}): cannot decode 'seg': {e}") from None


def mask_bbox(mask: np.ndarray) -> np.ndarray:
    """[x, y, w, h] of a binary mask's extent (inclusive pixel bounds)."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        raise ValueError("empty mask")
    return np.array([xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1], dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# splits
def load_split(path: str | Path, records: list[StanfordExtraRecord]) -> np.ndarray:
    """Indices into `records` from an official `.npy` split (indices into the JSON list) or a text
    file with one index or `img_path` per line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    if path.suffix == ".npy":
        try:
            values = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise StanfordExtraError(f"{path}: not a plain numeric .npy array ({e})") from None
        if not np.issubdtype(values.dtype, np.integer):
            raise StanfordExtraError(f"{path}: split indices must be integers, got dtype {values.dtype}")
        idx = values.reshape(-1).astype(np.int64)
    else:
        by_path = {r.img_path: i for i, r in enumerate(records)}
        idx_list = []
        for line_no, line in enumerate(path.read_text().splitlines(), start=1):
            line = line.strip()
            if not line:
                continue
            if line.lstrip("-").isdigit():
                idx_list.append(int(line))
            elif line in by_path:
                idx_list.append(records[by_path[line]].index)
            else:
                raise StanfordExtraError(f"{path}: line {line_no}: {line!r} is neither an index nor a known img_path")
        idx = np.asarray(idx_list, dtype=np.int64)
    # split files index the full JSON list; map JSON indices to positions in `records`
    pos = {r.index: i for i, r in enumerate(records)}
    missing = [int(i) for i in idx if int(i) not in pos]
    if missing:
        raise StanfordExtraError(f"{path}: {len(missing)} index(es) not in the annotation file, e.g. {missing[:5]}")
    return np.array([pos[int(i)] for i in idx], dtype=np.int64)


def seeded_split(n: int, val_fraction: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reproducible (train, val) index split (the reference shuffles without a seed)."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# ----------------------------------------------------------------------------------------------
# sources
class StanfordExtraSource:
    """Lazily reads the images of a list of records; yields `Sample`s in the original frame."""

    def __init__(self, records: list[StanfordExtraRecord], image_dir: str | Path, *, source: str = "StanfordExtra"):
        self.records = list(records)
        self.image_dir = Path(image_dir)
        self.source = source

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Sample:
        r = self.records[i]
        path = self.image_dir / r.img_path
        try:
            image = read_image(path)
        except (FileNotFoundError, ValueError) as e:
            raise StanfordExtraRecordError(f"{self.source}: record {r.index} ({r.img_path}): {e}") from None
        h, w = image.shape[:2]
        if (r.width is not None and r.width != w) or (r.height is not None and r.height != h):
            raise StanfordExtraRecordError(f"{self.source}: record {r.index} ({r.img_path}): image is {w}x{h} but "
                                     f"img_width x img_height say {r.width}x{r.height}")
        return Sample(keypoints=r.joints[None].copy(), image=image, image_path=path, boxes=r.bbox[None].copy(),
                      meta={"index": r.index, "name": r.img_path})


def resolve_stanford_extra_paths(root: str | Path | None, json_path: str | None,
                                 image_dir: str | None) -> tuple[Path, Path]:
    """Find the annotation JSON and image folder: explicit paths win; otherwise look in `root`
    (default: the shared real-data samples) for StanfordExtra_v12.json or the sample file."""
    from posekit.data.io import realdata_root
    base = Path(root) if root else realdata_root() / "stanford_extra"
    if json_path:
        jp = Path(json_path)
        jp = jp if jp.is_absolute() or jp.exists() else base / jp
    else:
        candidates = [base / "StanfordExtra_v12.json", base / "StanfordExtra_v12" / "StanfordExtra_v12.json",
                      base / "StanfordExtra_sample.json"]
        jp = next((c for c in candidates if c.is_file()), None)
        if jp is None:
            raise FileNotFoundError(f"no StanfordExtra annotation file in {base} (looked for "
                                    f"{[c.name for c in candidates]}); set data.json")
    if image_dir:
        idir = Path(image_dir)
        idir = idir if idir.is_absolute() or idir.exists() else base / idir
    else:
        candidates = [base / "sample_imgs", base / "Images", base / "images"]
        idir = next((c for c in candidates if c.is_dir()), None)
        if idir is None:
            raise FileNotFoundError(f"no image folder in {base} (looked for {[c.name for c in candidates]}); "
                                    "set data.image_dir")
    return jp, idir
