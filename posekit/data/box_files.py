"""Person boxes given to top-down models: a detections file or a box on the command line.

    boxes = load_box_file("dets.json")          # COCO detections, a COCO annotation file, or
    boxes.lookup("images/000000000785.jpg")     #   {"file name": [[x, y, w, h(, score)], ...]}
    rows, many = normalize_boxes([[x, y, w, h, score], ...])   # one input's boxes, checked

Every box is [x, y, w, h] in pixels of the original image, plus a score (1 when not given).
COCO detections (the standard top-down protocol: a list of {image_id, category_id, bbox,
score}) name images by id: an image file matches an id through `--images-json` (a COCO file
whose "images" give id and file_name) or through its numeric stem (000000000785.jpg -> 785).
numpy only, so the torch-free deploy path (`posekit predict model.onnx --boxes dets.json`)
reads boxes with the same checks as the PyTorch one; the detector is in `engine.detector`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from posekit.data.sample import MAX_COORDINATE, BadRecordError

PERSON = 1  # COCO category id of "person" (torchvision's detection labels are COCO ids)


def parse_box(text: str, where: str = "--box") -> list[float]:
    """"x,y,w,h" (or "x,y,w,h,score") -> numbers; NaN, inf, w, h <= 0, a value beyond
    +-MAX_COORDINATE px or a score outside [0, 1] are one-line errors."""
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise ValueError(f"{where} must be x,y,w,h numbers, got {text!r}") from None
    if len(values) not in (4, 5):
        raise ValueError(f"{where} must be x,y,w,h (or x,y,w,h,score), got {text!r}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{where} must be finite numbers, got {text!r}")
    if values[2] <= 0 or values[3] <= 0:
        raise ValueError(f"{where} must have positive w and h, got {text!r}")
    if any(abs(v) > MAX_COORDINATE for v in values[:4]):
        raise ValueError(f"{where} must be within +-{MAX_COORDINATE:.0f} px (beyond is not a box in an image), "
                         f"got {text!r}")
    if len(values) == 5 and not 0 <= values[4] <= 1:
        raise ValueError(f"{where}: the score (5th value) must be in [0, 1], got {text!r}")
    return values


class _NonStandard:
    """A NaN / Infinity / -Infinity token in a JSON file: Python's json accepts them, JSON has
    none. Kept as this marker (never a float) so that a field holding one is refused by name."""

    def __init__(self, token: str):
        self.token = token

    def __repr__(self) -> str:
        return self.token


def _read_json(path: str | Path, what: str):
    """A JSON file's content, NaN/Infinity tokens kept as `_NonStandard`; errors name the file."""
    import json
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(), parse_constant=_NonStandard)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, over-long integers
        raise ValueError(f"{path}: not a readable {what}: invalid JSON ({str(e)[:120]})") from None


def _short(value) -> str:
    """The offending value for a message: its repr, cut to 80 characters, plus a hint when it
    holds a NaN/Infinity token."""
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    items = value if isinstance(value, (list, tuple)) else [value]
    if any(isinstance(v, _NonStandard) for v in items):
        text += " (NaN and Infinity are not JSON numbers)"
    return text


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _whole(value, field: str, where: str) -> int:
    """An id as COCO writes it: an integer (785, the integral 785.0, or the digits "785"); a
    fraction (785.9 is never truncated to 785), a boolean, null, NaN or text is refused."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    raise BadRecordError(f"{where}: {field} must be an integer (an id is never rounded), got {_short(value)}")


def _box_row(bbox, score, where: str) -> list[float]:
    """[x, y, w, h] (or [x, y, w, h, score] without a separate score) -> x, y, w, h, score."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) not in (4, 5) or not all(_is_number(v) for v in bbox):
        raise BadRecordError(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {_short(bbox)}")
    if len(bbox) == 5:
        if score is not None:
            raise BadRecordError(f"{where}: bbox has a 5th value and the record a 'score': give [x, y, w, h], got "
                                 f"{_short(bbox)}")
        bbox, score = bbox[:4], bbox[4]
    values = [float(v) if abs(v) <= MAX_COORDINATE else math.inf for v in bbox]  # 10**400 would overflow
    if not all(math.isfinite(v) for v in values):
        raise BadRecordError(f"{where}: bbox must be 4 finite numbers within +-{MAX_COORDINATE:.0f} px (beyond is a "
                             f"unit or file error), got {_short(bbox)}")
    if values[2] <= 0 or values[3] <= 0:
        raise BadRecordError(f"{where}: bbox must be [x, y, w, h] with positive w, h, got {_short(bbox)}")
    if score is None:
        return values + [1.0]
    if not _is_number(score) or not 0 <= score <= 1:  # NaN fails the range test too
        raise BadRecordError(f"{where}: score must be a number in [0, 1] (or absent), got {_short(score)}")
    return values + [float(score)]


class BoxFile:
    """Boxes per image, read once; `lookup(name)` -> (N, 5) rows or None (no entry)."""

    def __init__(self, by_id: dict[int, list], by_name: dict[str, list], id_of_file: dict[str, int], source: str,
                 notes: list[str] | tuple = ()):
        self.by_id, self.by_name, self.id_of_file, self.source = by_id, by_name, id_of_file, source
        self.notes = list(notes)  # one-line remarks for the user (e.g. categories dropped)

    def __len__(self) -> int:
        return len(self.by_id) + len(self.by_name)

    def lookup(self, name: str, relative: str | None = None) -> np.ndarray | None:
        """Boxes of the image called `name` (its path; `relative`: its path inside the folder
        given on the command line), matched by path, file name or stem; for COCO ids by the
        `images` table or the numeric stem."""
        base, frame_sep, frame = name.partition("#")  # video frames are named "<file>#<frame>"
        p = Path(base)
        keys = [name, f"{p.name}#{frame}", f"{p.stem}#{frame}"] if frame_sep else [name, relative, p.name, p.stem]
        for key in keys:
            if key and key in self.by_name:
                return np.asarray(self.by_name[key], dtype=np.float64).reshape(-1, 5)
        if frame_sep:
            return None
        if self.by_id:
            image_id = self.id_of_file.get(p.name)
            if image_id is None and relative:
                image_id = self.id_of_file.get(relative)
            if image_id is None and p.stem.isascii() and p.stem.isdigit():
                image_id = int(p.stem)
            if image_id is not None and image_id in self.by_id:
                return np.asarray(self.by_id[image_id], dtype=np.float64).reshape(-1, 5)
        return None


def load_box_file(path: str | Path, *, images_json: str | Path | None = None,
                  category_id: int | str | None = None) -> BoxFile:
    """Read a boxes file (see the module docstring); every record is checked (integer ids, a
    finite in-image-scale box, a score in [0, 1]) and a bad one is one line naming the file and
    the record. `category_id`: keep only that category; "all": every box; None (default): every
    box when the file has one category, else COCO's person (1) with a note in `notes` (a file
    of several categories without person is refused: which one is meant is not guessed).
    `images_json` maps COCO image ids to file names."""
    path = Path(path)
    raw = _read_json(path, "boxes file")
    by_id: dict[int, list] = {}
    by_name: dict[str, list] = {}
    id_of_file: dict[str, int] = {}
    notes: list[str] = []

    def add_images(images, source):
        for n, im in enumerate(images):
            if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
                raise BadRecordError(f"{source}: images[{n}] needs 'id' and 'file_name'")
            image_id = _whole(im["id"], "id", f"{source}: images[{n}]")
            name = im["file_name"]
            if not isinstance(name, str) or not name:
                raise BadRecordError(f"{source}: images[{n}]: file_name must be a file name, got {_short(name)}")
            if id_of_file.get(name, image_id) != image_id:
                raise BadRecordError(f"{source}: images[{n}]: file_name {name!r} is listed with id {id_of_file[name]} "
                                     f"and id {image_id}: an image has one id")
            id_of_file[name] = image_id
            id_of_file.setdefault(Path(name).name, image_id)

    records, label = None, "record"
    if isinstance(raw, list):
        records = raw
    elif isinstance(raw, dict) and isinstance(raw.get("annotations"), list):  # a COCO annotation file
        records, label = raw["annotations"], "annotations"
        images = raw.get("images") or []
        if not isinstance(images, list):
            raise ValueError(f"{path}: 'images' must be a list of {{id, file_name}}")
        add_images(images, str(path))
    elif isinstance(raw, dict):
        for name, boxes in raw.items():
            if not isinstance(boxes, list):
                raise BadRecordError(f"{path}: {name!r}: expected a list of [x, y, w, h(, score)] boxes, got "
                                     f"{_short(boxes)}")
            rows = boxes if not boxes or isinstance(boxes[0], (list, tuple)) else [boxes]
            by_name[str(name)] = [_box_row(b, None, f"{path}: {name!r}[{i}]") for i, b in enumerate(rows)]
        records = []
    else:
        raise ValueError(f"{path}: expected COCO detections (a list of {{image_id, bbox, score}}), a COCO "
                         "annotation file, or {\"file name\": [[x, y, w, h, score], ...]}")
    rows_of: list[tuple[int, int | None, list[float]]] = []
    for n, rec in enumerate(records):
        where = f"{path}: {label}[{n}]" if label == "annotations" else f"{path}: record {n}"
        if not isinstance(rec, dict) or "image_id" not in rec or "bbox" not in rec:
            raise BadRecordError(f"{where}: a detection needs 'image_id' and 'bbox'")
        image_id = _whole(rec["image_id"], "image_id", where)
        category = _whole(rec["category_id"], "category_id", where) if "category_id" in rec else None
        rows_of.append((image_id, category, _box_row(rec["bbox"], rec.get("score"), where)))
    keep = _categories_to_keep(rows_of, category_id, path, notes)
    for image_id, category, row in rows_of:
        if keep is None or category is None or category == keep:
            by_id.setdefault(image_id, []).append(row)
    if images_json:
        ref = _read_json(images_json, "COCO images file")
        if not isinstance(ref, dict) or not isinstance(ref.get("images"), list):
            raise ValueError(f"{images_json}: expected a COCO file with an 'images' list")
        add_images(ref["images"], str(images_json))
    return BoxFile(by_id, by_name, id_of_file, str(path), notes)


def _categories_to_keep(rows, category_id, path: Path, notes: list[str]) -> int | None:
    """The one category to keep (None: every box), by the rule of `load_box_file`."""
    if isinstance(category_id, str):
        if category_id.lower() != "all":
            raise ValueError(f"category to keep must be an integer id or 'all', got {category_id!r}")
        return None
    if category_id is not None:
        return int(category_id)
    found = sorted({c for _, c, _ in rows if c is not None})
    if len(found) <= 1:
        return None
    listed = ", ".join(map(str, found[:6])) + (", ..." if len(found) > 6 else "")
    if PERSON not in found:
        raise ValueError(f"{path}: boxes of {len(found)} categories ({listed}) and none is COCO's person "
                         f"({PERSON}): give --box-category ID (or --box-category all) to say which boxes are meant")
    dropped = sum(c is not None and c != PERSON for _, c, _ in rows)
    notes.append(f"{path}: boxes of {len(found)} categories ({listed}): keeping COCO's person (category_id "
                 f"{PERSON}), {dropped} of {len(rows)} box(es) dropped (--box-category ID keeps another, "
                 "--box-category all keeps every box)")
    return PERSON


def keep_boxes(rows: np.ndarray | None, threshold: float) -> np.ndarray | None:
    """Rows with score >= threshold (None stays None)."""
    if rows is None:
        return None
    return rows[rows[:, 4] >= threshold]


def normalize_boxes(spec, where: str = "box") -> tuple[np.ndarray | None, bool]:
    """One input's boxes -> ((N, 5) x, y, w, h, score array or None, whether it is a list).

    None: no box (the whole image). [x, y, w, h(, score)]: one box. [[...], ...] or an (N, 4|5)
    array: a list of boxes (possibly empty). Non-finite numbers or w, h <= 0 are a ValueError."""
    if spec is None:
        return None, False
    try:
        arr = np.asarray(spec, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: boxes must be numbers [x, y, w, h(, score)], got {spec!r}") from None
    if arr.size == 0:
        return np.zeros((0, 5)), True
    if arr.ndim == 1:
        arr, many = arr[None], False
    elif arr.ndim == 2:
        many = True
    else:
        raise ValueError(f"{where}: a box is [x, y, w, h] or [x, y, w, h, score], got {spec!r}")
    if arr.shape[1] not in (4, 5):
        raise ValueError(f"{where}: a box is [x, y, w, h] or [x, y, w, h, score], got {spec!r}")
    if arr.shape[1] == 4:
        arr = np.concatenate([arr, np.ones((len(arr), 1))], axis=1)
    for row in arr:
        if not np.isfinite(row).all() or row[2] <= 0 or row[3] <= 0:
            raise ValueError(f"{where}: a box must be finite numbers x, y, w, h with positive w, h; got "
                             f"{[float(v) for v in row[:4]]}")
    return arr, many
