"""COCO keypoint annotation files -> `Sample`s (one per image, all its people), and OpenPose ignore masks.

Works for any COCO-format keypoint file, not only person_keypoints: K comes from the chosen
category's `keypoints` list. Coordinates stay COCO's (0-based pixels), visibilities stay 0/1/2.

Masks are not rendered at load time (RLE run lengths are decoded and checked there). Each Sample's ``meta["segments"]`` keeps, for every
annotation of the image (people and crowds), the raw segmentation plus the facts the mask rule
needs (``iscrowd``, ``num_keypoints``, ``area``, ``bbox`` and ``person``: its row in
``keypoints`` or -1). `ignore_mask` turns that into the (H, W) uint8 mask on demand;
`cache_ignore_masks` writes it as PNGs and `load_ignore_mask` reads the cache when it is there.
Synthetic generators fill the same ``segments`` list, so one mask code path serves both.

Bad records raise `COCOFormatError` (one line naming the file and the record); with
``on_bad_record="skip"`` they are dropped and listed in the returned list's ``.skipped``.
"""
from __future__ import annotations

import errno
import gc
import hashlib
import json
import math
import os
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from posekit.data.io import read_json
from posekit.data.sample import MAX_COORDINATE, BadRecordError, Sample, check_values
from posekit.skeletons import map_keypoints

__all__ = [
    "MASK_CACHE_MANIFEST",
    "MASK_MIN_AREA",
    "MASK_MIN_KEYPOINTS",
    "COCOFormatError",
    "COCORecordError",
    "COCOSamples",
    "cache_ignore_masks",
    "coco17_to_openpose18",
    "ignore_mask",
    "load_coco_keypoints",
    "load_ignore_mask",
    "mask_file_name",
    "segment_rle",
]

MASK_MIN_KEYPOINTS = 5  # people with fewer labelled keypoints are masked (OpenPose rule)
MASK_MIN_AREA = 32 * 32  # people with area <= this are masked
MASK_CACHE_MANIFEST = "ignore_masks.json"


class COCOFormatError(ValueError):
    """A COCO annotation file or record is malformed; the message names the file and the record."""


class COCORecordError(COCOFormatError, BadRecordError):
    """One bad image or annotation record (with ``on_bad_record="error"``)."""


class COCOSamples(list):
    """The Samples of a COCO file (a plain list), plus what the reader learnt on the way:
    ``skipped`` (one message per dropped record, ``on_bad_record="skip"``), ``keypoint_names``,
    ``category_id`` and ``ann_file``."""

    def __init__(self, samples=(), *, skipped=(), keypoint_names=(), category_id=None, ann_file=None):
        super().__init__(samples)
        self.skipped: list[str] = list(skipped)
        self.keypoint_names: tuple[str, ...] = tuple(keypoint_names)
        self.category_id = category_id
        self.ann_file = ann_file


def _finite(v) -> bool:
    """math.isfinite that calls a JSON integer too large for a float (10**400) not finite."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


class _Bad(Exception):
    """Internal: one bad record, turned into an error or a skip by the caller."""


def _pick_category(categories, category_id, path) -> dict:
    with_kp = [c for c in categories if isinstance(c, dict) and c.get("keypoints")]
    for c in with_kp:
        if not _is_id(c.get("id")):
            raise COCOFormatError(f"{path}: category {c.get('name')!r} needs an integer or string 'id', "
                                  f"got {c.get('id')!r}")
    if category_id is not None:
        for c in with_kp:
            if c.get("id") == category_id:
                return c
        raise COCOFormatError(f"{path}: no category with id {category_id} and a 'keypoints' list")
    if not with_kp:
        raise COCOFormatError(f"{path}: no category declares a 'keypoints' list; not a COCO keypoint file")
    if len(with_kp) > 1:
        persons = [c for c in with_kp if c.get("name") == "person"]
        if len(persons) == 1:
            return persons[0]
        raise COCOFormatError(f"{path}: several keypoint categories {[c.get('id') for c in with_kp]}; "
                              "pass category_id")
    return with_kp[0]


def _resolve_image(image_dir: Path, file_name, path, root: str | None = None) -> Path:
    """The image path inside `image_dir`; lexical check, so symlinked dataset folders still work.
    `root` (the normalised absolute `image_dir`) saves recomputing it per image."""
    if not isinstance(file_name, str) or not file_name:
        raise _Bad(f"'file_name' must be a non-empty string, got {file_name!r}")
    if root is None:
        root = os.path.normpath(os.path.abspath(image_dir))
    if os.sep not in file_name and (os.altsep is None or os.altsep not in file_name) \
            and file_name not in (".", ".."):
        return Path(os.path.join(root, file_name))  # a bare name (COCO's): inside by construction
    full = os.path.normpath(os.path.join(root, file_name))
    if os.path.commonpath([root, full]) != root:
        raise COCOFormatError(f"{path}: image file {file_name!r} lies outside the image folder {root}; refused")
    return Path(full)


# Compressed RLE ("counts" a string) is decoded here before pycocotools sees it: its C decoder
# (rleFrString) reads past the end of a truncated string and keeps no check that the runs cover the
# image, and rleMerge then loops forever on runs that do not sum to h*w (an empty string crashes
# it outright). Same 6-bit scheme: chars 48..111, 5 data bits per char, 0x20 = "more chars follow",
# 0x10 on the last char = negative; runs from the 4th on are deltas to the run two before.
_RLE_MAX_CHARS_PER_RUN = 7  # 35 bits: more than any uint32 run pycocotools can hold


def _rle_string_runs(counts) -> np.ndarray:
    """Run lengths of a compressed COCO RLE string (raises _Bad for anything pycocotools would
    misread: empty, characters outside '0'..'o', a truncated last run, negative runs)."""
    if isinstance(counts, str):
        try:
            raw = counts.encode("ascii")
        except UnicodeEncodeError:
            raise _Bad("compressed RLE 'counts' has non-ASCII characters; re-encode the mask with "
                       "pycocotools") from None
    else:
        raw = bytes(counts)
    if not raw:
        raise _Bad("compressed RLE 'counts' is empty; give the mask's runs, or drop 'segmentation' to mask the box")
    c = np.frombuffer(raw, np.uint8).astype(np.int64) - 48
    if c.min() < 0 or c.max() > 63:
        bad = next(chr(b) for b in raw if not 48 <= b <= 111)
        raise _Bad(f"compressed RLE 'counts' has the character {bad!r} (valid: '0'..'o'); "
                   "re-encode the mask with pycocotools")
    more = (c & 0x20) != 0
    if more[-1]:
        raise _Bad("compressed RLE 'counts' is truncated (its last run is cut off); re-encode the mask with "
                   "pycocotools")
    ends = np.flatnonzero(~more)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.max() > _RLE_MAX_CHARS_PER_RUN:
        raise _Bad(f"compressed RLE 'counts' has a run of {lengths.max()} characters (at most "
                   f"{_RLE_MAX_CHARS_PER_RUN}); not a COCO RLE")
    shift = 5 * (np.arange(len(c)) - np.repeat(starts, lengths))
    runs = np.add.reduceat((c & 0x1F) << shift, starts)
    runs -= ((c[ends] & 0x10) != 0).astype(np.int64) << (5 * lengths)  # sign-extend
    runs[1::2] = np.cumsum(runs[1::2])  # runs[i] += runs[i - 2] for i > 2 (i = 1, 2 start)
    runs[2::2] = np.cumsum(runs[2::2])
    return runs


def _rle_runs(segm: dict, height, width):
    """The run lengths of an RLE dict, checked against the image (raises _Bad): 'size' is the
    image's [height, width]; runs are non-negative integers summing to height * width. Returns a
    numpy array (compressed) or the list itself (uncompressed)."""
    size, counts = segm.get("size"), segm.get("counts")
    if not (isinstance(size, (list, tuple)) and len(size) == 2):
        raise _Bad("RLE segmentation needs 'size': [height, width]")
    if not all(type(v) is int for v in size):  # pycocotools needs ints (bool is refused too)
        raise _Bad(f"segmentation has non-numeric sizes or counts: RLE 'size' must be two integers, got {list(size)!r}")
    if [size[0], size[1]] != [int(height), int(width)]:
        raise _Bad(f"RLE size {list(size)} differs from the image size [{height}, {width}]")
    total = int(height) * int(width)
    if isinstance(counts, (str, bytes)):
        runs = _rle_string_runs(counts)
        if runs.min() < 0:
            raise _Bad(f"compressed RLE 'counts' decodes to a negative run ({runs.min()}); not a valid mask")
        found = int(runs.sum())
    elif isinstance(counts, list):
        if not counts or not all(type(v) is int or (type(v) is float and v.is_integer()) for v in counts):
            raise _Bad("uncompressed RLE 'counts' must be a non-empty list of integers")
        if min(counts) < 0:
            raise _Bad(f"uncompressed RLE 'counts' has a negative run ({min(counts)})")
        runs, found = counts, sum(counts)
    else:
        raise _Bad("RLE segmentation needs 'counts' (a list or a compressed string)")
    if found != total:
        kind = "compressed" if isinstance(counts, (str, bytes)) else "uncompressed"
        raise _Bad(f"{kind} RLE runs sum to {found} pixels, expected {total} ({height}x{width}); "
                   "the mask does not fit this image")
    return runs


def _check_segmentation(segm, height, width) -> None:
    """Polygons: structure and extent; RLE (either form): fully decoded by `_rle_runs`."""
    if isinstance(segm, list):
        # pycocotools rasterises every polygon edge point by point: a vertex at 1e7 px costs
        # gigabytes, so vertices must lie near the image (within one image extent around it)
        extent = float(max(height, width))
        for poly in segm:
            if (not isinstance(poly, (list, tuple)) or len(poly) < 6 or len(poly) % 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and _finite(v) for v in poly)):
                raise _Bad("segmentation polygons must be lists of >= 3 finite (x, y) pairs")
            if not all(-extent <= v <= 2 * extent for v in poly):
                raise _Bad(f"segmentation polygon has a vertex far outside the {width}x{height} image "
                           f"(allowed {-extent:g} .. {2 * extent:g})")
        return
    if isinstance(segm, dict):
        _rle_runs(segm, height, width)
        return
    raise _Bad(f"segmentation must be a polygon list or an RLE dict, got {type(segm).__name__}")


def _parse_annotation(ann, k, image, *, require_keypoints) -> dict:
    """Validated fields of one annotation (raises _Bad)."""
    bbox = ann.get("bbox")
    try:
        box = np.asarray(bbox, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise _Bad(f"'bbox' must be 4 numbers, got {bbox!r}") from None
    if box.shape != (4,) or not np.all(np.isfinite(box)):
        raise _Bad(f"'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}")
    if box[2] <= 0 or box[3] <= 0:
        raise _Bad(f"'bbox' has zero or negative area (w={box[2]:g}, h={box[3]:g})")
    check_values(box, "'bbox'", "bbox", error=_Bad)
    crowd = ann.get("iscrowd", 0)
    # COCO defines iscrowd as 0 or 1; bool() would make "no" (or "0") a crowd, masked and not trained on
    if type(crowd) not in (int, bool, float) or crowd not in (0, 1):
        raise _Bad(f"'iscrowd' must be 0 or 1, got {crowd!r}")
    crowd = bool(crowd)
    raw = ann.get("keypoints")
    if raw is None or (crowd and not raw):
        if require_keypoints and not crowd:
            raise _Bad("missing 'keypoints'")
        kp = np.zeros((k, 3))
    else:
        try:
            kp = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise _Bad("'keypoints' must be numbers") from None
        if kp.ndim != 1 or kp.size != 3 * k:
            raise _Bad(f"'keypoints' has {kp.size} numbers, expected {3 * k} (3 x {k} keypoints)")
        if not np.all(np.isfinite(kp)):
            raise _Bad("'keypoints' contains non-finite values")
        check_values(kp, "'keypoints'", "keypoints", error=_Bad)
        kp = kp.reshape(k, 3)
        if not np.all(np.isin(kp[:, 2], (0, 1, 2))):
            raise _Bad(f"keypoint visibilities must be 0, 1 or 2, got {sorted(set(kp[:, 2].tolist()))}")
    area = ann.get("area")
    if area is None:
        area = float(box[2] * box[3])  # custom files without 'area': the box is the best scale we have
    elif isinstance(area, bool) or not isinstance(area, (int, float)) or not _finite(area) or area <= 0 \
            or area > MAX_COORDINATE ** 2:
        raise _Bad(f"'area' must be a positive finite number below {MAX_COORDINATE ** 2:g}, got {area!r}")
    segm = ann.get("segmentation")
    if segm:
        try:
            _check_segmentation(segm, image["height"], image["width"])
        except (TypeError, ValueError, OverflowError):
            raise _Bad("segmentation has non-numeric sizes or counts") from None
    else:
        segm = None
    # num_keypoints (COCO: the count of v > 0) is checked, not trusted. pycocotools' COCOeval only asks
    # whether it is 0 (such a GT is ignored; one with a count but no labelled keypoint is matched by box
    # distance), so a file whose field and keypoints disagree on that would score one AP there and
    # another here: a bad record. Other tools write other counts (some count only v == 2), so a nonzero
    # count that differs is replaced by the true one, which the OpenPose mask rule then reads.
    nk = ann.get("num_keypoints")
    labelled = int(np.count_nonzero(kp[:, 2] > 0))
    if nk is not None and (isinstance(nk, bool) or not isinstance(nk, (int, float)) or not _finite(nk) or nk < 0):
        raise _Bad(f"'num_keypoints' must be a non-negative count, got {nk!r}")
    if nk is not None and (nk == 0) != (labelled == 0):
        raise _Bad(f"'num_keypoints' is {nk!r} but {labelled} keypoints are labelled (v > 0); fix it or "
                   "drop the field (it is then counted)")
    nk = labelled
    return {"keypoints": kp, "bbox": box, "area": float(area), "iscrowd": crowd, "segmentation": segm,
            "num_keypoints": int(nk)}


# --- vectorised parsing -------------------------------------------------------------------------
# `_parse_annotation` is the definition of a valid annotation. Checking it one value at a time costs
# ~45 s on COCO train2017 (24M polygon coordinates through Python generators), so the loader first
# checks whole chunks of annotations with numpy: a record those checks vouch for is exactly one that
# `_parse_annotation` accepts, with the same fields; any record they cannot vouch for (a wrong type,
# an RLE, a value out of range) goes through `_parse_annotation` itself, which gives the verdict and
# the one-line message. Bad files therefore get the same errors, in the same order, as before.
_CHUNK = 8192  # annotations per vectorised chunk: bounds the flattened polygon list (~8 MB)
_NUMBER_TYPES = frozenset((int, float))


def _float_rows(rows: list, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(len(rows), width) float64 and a per-row "converted" mask; one numpy call when every row
    converts, row by row (NaN for a row that does not) otherwise."""
    try:
        arr = np.array(rows, dtype=np.float64)
        if arr.shape == (len(rows), width):
            return arr, np.ones(len(rows), bool)
    except (TypeError, ValueError, OverflowError):
        pass
    arr = np.full((len(rows), width), np.nan)
    good = np.zeros(len(rows), bool)
    for j, row in enumerate(rows):
        try:
            a = np.asarray(row, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            continue
        if a.shape == (width,):
            arr[j], good[j] = a, True
    return arr, good


def _floats(values: list) -> np.ndarray:
    """1-D float64 of Python numbers; NaN where one does not convert (an int beyond float range)."""
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        out = np.full(len(values), np.nan)
        for j, v in enumerate(values):
            try:
                out[j] = float(v)
            except (TypeError, ValueError, OverflowError):
                pass
        return out


def _parse_chunk(cands: list, k: int, require_keypoints: bool):
    """keypoints (n, k, 3), boxes (n, 4) and per record a parsed dict (as `_parse_annotation`
    returns, without the arrays) or None where the vectorised checks cannot vouch for it."""
    n = len(cands)
    ok = [True] * n
    boxes, kps, areas, nks = [], [], [], []
    area_absent, nk_given = [], [True] * n
    crowds, segms = [], []
    extents = []
    poly_vals: list = []
    poly_len: list = []
    poly_owner: list = []
    zero_box, zero_kp = [1.0, 1.0, 1.0, 1.0], [0] * (3 * k)
    for j, (ann, img) in enumerate(cands):
        bbox = ann.get("bbox")
        if type(bbox) is not list or len(bbox) != 4:
            ok[j], bbox = False, zero_box
        boxes.append(bbox)
        crowd = ann.get("iscrowd", 0)
        if type(crowd) not in (int, bool, float) or crowd not in (0, 1):
            ok[j], crowd = False, 0
        crowd = bool(crowd)
        crowds.append(crowd)
        raw = ann.get("keypoints")
        if raw is None or (crowd and not raw):
            if require_keypoints and not crowd:
                ok[j] = False
            raw = zero_kp
        elif type(raw) is not list or len(raw) != 3 * k:
            ok[j], raw = False, zero_kp
        kps.append(raw)
        area = ann.get("area")
        if area is None:
            area_absent.append(j)  # filled from the box below
            areas.append(1.0)
        elif type(area) in _NUMBER_TYPES:
            areas.append(area)
        else:
            ok[j] = False
            areas.append(1.0)
        nk = ann.get("num_keypoints")
        if nk is None:
            nk_given[j] = False  # absent: counted
            nks.append(0.0)
        elif type(nk) in _NUMBER_TYPES:
            nks.append(nk)
        else:
            ok[j] = False
            nks.append(0.0)
        segm = ann.get("segmentation")
        if not segm:
            segm = None
        elif type(segm) is list:
            for poly in segm:
                if type(poly) is not list or len(poly) < 6 or len(poly) % 2:
                    ok[j] = False
                    break
                poly_vals.extend(poly)
                poly_len.append(len(poly))
                poly_owner.append(j)
        else:  # an RLE (crowds) or something else: `_parse_annotation` decides
            ok[j] = False
        segms.append(segm)
        extents.append(max(img["height"], img["width"]))
    ok = np.array(ok, bool)

    box, converted = _float_rows(boxes, 4)
    ok &= converted & np.isfinite(box).all(1) & (box[:, 2] > 0) & (box[:, 3] > 0)
    ok &= np.abs(np.nan_to_num(box, nan=0.0)).max(1) <= MAX_COORDINATE
    kp, converted = _float_rows(kps, 3 * k)
    ok &= converted & np.isfinite(kp).all(1)
    ok &= np.abs(np.nan_to_num(kp, nan=0.0)).max(1, initial=0.0) <= MAX_COORDINATE
    kp = kp.reshape(n, k, 3)
    vis = kp[:, :, 2]
    ok &= ((vis == 0) | (vis == 1) | (vis == 2)).all(1)
    labelled = np.count_nonzero(vis > 0, axis=1)

    area = _floats(areas)
    absent = np.array(area_absent, np.int64)
    with np.errstate(over="ignore"):  # an absurd box overflows to inf: refused just below
        area[absent] = box[absent, 2] * box[absent, 3]
    ok &= np.isfinite(area) & (area > 0) & (area <= MAX_COORDINATE ** 2)
    nk = _floats(nks)
    given = np.array(nk_given, bool)
    ok &= ~given | (np.isfinite(nk) & (nk >= 0) & ((nk == 0) == (labelled == 0)))

    if poly_vals:
        owner = np.array(poly_owner, np.int64)
        lengths = np.array(poly_len, np.int64)
        if not set(map(type, poly_vals)) <= _NUMBER_TYPES:  # a bool, string, None, list...: per record
            ok[owner] = False
        else:
            vals = _floats(poly_vals)
            extent = np.repeat(np.array(extents, np.float64)[owner], lengths)
            inside = np.isfinite(vals) & (vals >= -extent) & (vals <= 2 * extent)
            starts = np.r_[0, np.cumsum(lengths)[:-1]]
            ok[owner[~np.logical_and.reduceat(inside, starts)]] = False

    box_lists = box.tolist()
    area_list = area.tolist()
    labelled_list = labelled.tolist()
    parsed = [None if not good else
              {"area": area_list[j], "iscrowd": crowds[j], "segmentation": segms[j],
               "num_keypoints": labelled_list[j], "bbox_list": box_lists[j]}
              for j, good in enumerate(ok.tolist())]
    return kp, box, area, labelled, parsed


def _parse_annotations(cands: list, k: int, *, require_keypoints: bool = True):
    """`_parse_chunk` over all candidates: keypoints (N, k, 3), boxes (N, 4), areas (N,),
    labelled counts (N,), parsed-or-None."""
    kps, boxes, areas, counts, parsed = [np.zeros((0, k, 3))], [np.zeros((0, 4))], [np.zeros(0)], \
        [np.zeros(0, np.int64)], []
    for start in range(0, len(cands), _CHUNK):
        kp, box, area, labelled, p = _parse_chunk(cands[start:start + _CHUNK], k, require_keypoints)
        kps.append(kp)
        boxes.append(box)
        areas.append(area)
        counts.append(labelled.astype(np.int64))
        parsed.extend(p)
    return np.concatenate(kps), np.concatenate(boxes), np.concatenate(areas), np.concatenate(counts), parsed


def _is_id(value) -> bool:
    t = type(value)  # exact types first: JSON gives nothing else, and this runs per record
    return t is int or t is str or (isinstance(value, (int, str)) and not isinstance(value, bool))


def _check_image(img) -> None:
    if not isinstance(img, dict) or "id" not in img:
        raise _Bad("image record needs an 'id'")
    if not _is_id(img["id"]):
        raise _Bad(f"image 'id' must be an integer or a string, got {img['id']!r}")
    for key in ("width", "height"):
        v = img.get(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not _finite(v) or v <= 0 \
                or int(v) != v or v > MAX_COORDINATE:
            raise _Bad(f"'{key}' must be a positive integer up to {MAX_COORDINATE:g}, got {v!r}")


def load_coco_keypoints(ann_file, image_dir, *, min_keypoints: int = 0, include_empty: bool = True,
                        on_bad_record: str = "error", category_id: int | None = None,
                        check_files: bool = True) -> COCOSamples:
    """One `Sample` per image with all its non-crowd people of the keypoint category.

    keypoints (P, K, 3), boxes (P, 4) x, y, w, h; meta: image_id, file_name, width, height, areas (P,)
    as given (box area when a file has none), num_keypoints (P,) as given (counted when absent),
    ann_ids (P,), segments (all annotations of the image incl. crowds, for `ignore_mask`).
    People with fewer than `min_keypoints` labelled keypoints are left out of keypoints but stay in
    segments (so the mask still covers them). `include_empty=False` drops images without people.
    An image path escaping `image_dir` is always an error, whatever `on_bad_record` says.
    """
    if on_bad_record not in ("error", "skip"):
        raise ValueError(f"on_bad_record must be 'error' or 'skip', got {on_bad_record!r}")
    # The cyclic garbage collector would walk the whole parsed file (millions of lists and floats)
    # again and again while the Samples are built: a third of the load time on train2017. Nothing
    # here makes reference cycles, so reference counting frees everything; the collector is
    # paused for the load and restored after.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _load_coco_keypoints(ann_file, image_dir, min_keypoints=min_keypoints, include_empty=include_empty,
                                    on_bad_record=on_bad_record, category_id=category_id,
                                    check_files=check_files)
    finally:
        if collecting:
            gc.enable()


def _load_coco_keypoints(ann_file, image_dir, *, min_keypoints, include_empty, on_bad_record, category_id,
                         check_files) -> COCOSamples:
    ann_file, image_dir = Path(ann_file), Path(image_dir)
    data = read_json(ann_file, "COCO annotation file", COCOFormatError)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise COCOFormatError(f"{ann_file}: a COCO file needs 'images' and 'annotations' lists")
    categories = data.get("categories") or []
    if not isinstance(categories, list):
        raise COCOFormatError(f"{ann_file}: 'categories' must be a list, got {type(categories).__name__}")
    category = _pick_category(categories, category_id, ann_file)
    if not isinstance(category["keypoints"], list) or not all(isinstance(n, str) for n in category["keypoints"]):
        raise COCOFormatError(f"{ann_file}: category {category.get('id')!r}: 'keypoints' must be a list of names")
    names = tuple(category["keypoints"])
    k = len(names)
    skipped: list[str] = []

    def bad(record: str, message: str):
        text = f"{ann_file}: {record}: {message}"
        if on_bad_record == "error":
            raise COCORecordError(text)
        skipped.append(text)

    images: dict = {}
    by_file: dict = {}
    root = os.path.normpath(os.path.abspath(image_dir))
    for i, img in enumerate(data["images"]):
        try:
            _check_image(img)
            if img["id"] in images:
                raise _Bad("duplicate image id")
            path = _resolve_image(image_dir, img.get("file_name"), ann_file, root)
            if check_files and not path.is_file():
                raise _Bad(f"image file not found: {path}")
        except _Bad as e:
            bad(f"image #{i} (id {img.get('id')!r}, {img.get('file_name')!r})" if isinstance(img, dict)
                else f"image #{i}", str(e))
            continue
        images[img["id"]] = (img, path, [])
        by_file[path] = by_file.get(path, 0) + 1

    repeated = {p: n for p, n in by_file.items() if n > 1}
    if repeated:  # legal (e.g. merged files) but usually a mistake: people get split across samples
        first = next(iter(repeated))
        warnings.warn(f"{ann_file}: {len(repeated)} image file(s) listed under several image ids, e.g. "
                      f"{first.name} ({repeated[first]} times)", stacklevel=2)
    declared = {img.get("id") for img in data["images"] if isinstance(img, dict) and _is_id(img.get("id"))}
    # pass 1, in file order: record-level problems (saved, reported in pass 3 in file order) and
    # the annotations whose fields pass 2 checks in vectorised chunks
    seen_ids: set = set()
    steps: list = []  # per annotation of our category: (label, message) or (ann_id, entry, candidate row)
    cands: list = []
    ours = category["id"]
    for i, ann in enumerate(data["annotations"]):
        if type(ann) is not dict:
            steps.append((f"annotation #{i}", "not a JSON object"))
            continue
        if ann.get("category_id", ours) != ours:  # other categories: not ours
            continue
        ann_id = ann.get("id")
        if not _is_id(ann_id) or ann_id in seen_ids:
            steps.append((f"annotation id {ann_id!r}" if ann_id is not None else f"annotation #{i}",
                          "missing, non-integer or duplicate 'id'"))
            continue
        seen_ids.add(ann_id)
        image_id = ann.get("image_id")
        if not _is_id(image_id):
            steps.append((f"annotation id {ann_id!r}", f"'image_id' must be an integer or a string, got {image_id!r}"))
            continue
        entry = images.get(image_id)
        if entry is None:
            if image_id not in declared:
                steps.append((f"annotation id {ann_id!r}", f"unknown image_id {image_id!r}"))
            continue  # its image was skipped: counted once there
        steps.append((ann_id, entry, len(cands)))
        cands.append((ann, entry[0]))
    all_kp, all_box, all_area, all_nk, parsed = _parse_annotations(cands, k, require_keypoints=True)
    for step in steps:
        if len(step) == 2:
            bad(*step)
            continue
        ann_id, entry, row = step
        p = parsed[row]
        if p is None:  # not vouched for by the vectorised checks: the per-record parser decides
            ann, img = cands[row]
            try:
                full = _parse_annotation(ann, k, img, require_keypoints=True)
            except _Bad as e:
                bad(f"annotation id {ann_id!r} (image {img.get('file_name')!r})", str(e))
                continue
            all_kp[row], all_box[row] = full["keypoints"], full["bbox"]
            all_area[row], all_nk[row] = full["area"], full["num_keypoints"]
            p = {"area": full["area"], "iscrowd": full["iscrowd"], "segmentation": full["segmentation"],
                 "num_keypoints": full["num_keypoints"], "bbox_list": full["bbox"].tolist()}
        p["id"], p["row"] = ann_id, row
        entry[2].append(p)
    del cands, steps, parsed

    samples = []
    no_kp, no_box, no_area, no_nk = np.zeros((0, k, 3)), np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)
    for image_id, (img, path, anns) in images.items():
        people, segments = [], []
        for a in anns:
            person = -1
            if not a["iscrowd"] and a["num_keypoints"] >= min_keypoints:  # num_keypoints: the labelled count
                person = len(people)
                people.append(a)
            segments.append({"id": a["id"], "segmentation": a["segmentation"], "iscrowd": a["iscrowd"],
                             "num_keypoints": a["num_keypoints"], "area": a["area"],
                             "bbox": a["bbox_list"], "person": person})
        if not people and not include_empty:
            continue
        if people:
            rows = np.array([a["row"] for a in people], np.intp)  # one conversion, four row gathers
            kp, boxes, areas, counts = all_kp[rows], all_box[rows], all_area[rows], all_nk[rows]
        else:
            kp, boxes, areas, counts = no_kp.copy(), no_box.copy(), no_area.copy(), no_nk.copy()
        meta = {"image_id": image_id, "file_name": img["file_name"], "width": int(img["width"]),
                "height": int(img["height"]), "areas": areas, "num_keypoints": counts,
                "ann_ids": [a["id"] for a in people], "segments": segments,
                "crowd": [s for s in segments if s["iscrowd"]]}
        samples.append(Sample(keypoints=kp, image_path=path, boxes=boxes, meta=meta))
    return COCOSamples(samples, skipped=skipped, keypoint_names=names, category_id=category["id"],
                       ann_file=ann_file)


# --- masks ---------------------------------------------------------------------------------------

def segment_rle(segmentation, bbox, height: int, width: int) -> dict:
    """One merged RLE of a polygon list, an uncompressed or a compressed RLE; the box when there
    is no segmentation (custom files often have only boxes)."""
    if not segmentation:
        # the box, clipped to the image: the same mask, and no cost for a box far outside it
        x0, y0 = min(max(bbox[0], 0.0), width), min(max(bbox[1], 0.0), height)
        x1, y1 = min(max(bbox[0] + bbox[2], 0.0), width), min(max(bbox[1] + bbox[3], 0.0), height)
        if x1 <= x0 or y1 <= y0:
            return mask_utils.encode(np.zeros((height, width), np.uint8, order="F"))
        segmentation = [[x0, y0, x1, y0, x1, y1, x0, y1]]
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    try:  # checked again here (cheap next to the mask itself): in-memory segments reach this too
        runs = _rle_runs(segmentation, height, width)
    except _Bad as e:
        raise COCOFormatError(str(e)) from None
    runs = np.asarray(runs, dtype=np.int64)
    if len(runs) > 1 and not runs[1:].all():
        # an empty run after the first is legal but pycocotools' merge mishandles it (wrong runs,
        # then an endless loop): drop it and join its neighbours, the same mask
        value = np.arange(len(runs)) % 2
        keep = runs > 0
        runs, value = runs[keep], value[keep]
        starts = np.flatnonzero(np.r_[True, value[1:] != value[:-1]])
        runs = np.add.reduceat(runs, starts) if len(runs) else runs
        if len(runs) and value[0] == 1:
            runs = np.r_[0, runs]
        return mask_utils.frPyObjects({"size": [height, width], "counts": runs.tolist()}, height, width)
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation  # a valid compressed RLE: pycocotools decodes str counts directly


def _is_ignored(seg: dict, min_keypoints: int, min_area: float) -> bool:
    return (bool(seg["iscrowd"]) or seg.get("person", 0) < 0 or seg["num_keypoints"] < min_keypoints
            or seg["area"] <= min_area)


def ignore_mask(sample: Sample, *, min_keypoints: int = MASK_MIN_KEYPOINTS,
                min_area: float = MASK_MIN_AREA) -> np.ndarray:
    """(H, W) uint8, 1 where the loss must not look: crowds, people left out of `keypoints`, people
    with fewer than `min_keypoints` keypoints or area <= `min_area`.

    A plain union, so the result does not depend on annotation order (the reference subtracts
    earlier masks from each crowd, which does). A Sample with its own `ignore_mask` returns it."""
    if sample.ignore_mask is not None:
        return np.asarray(sample.ignore_mask, dtype=np.uint8)
    height, width = _image_size(sample)
    rles = []
    for s in sample.meta.get("segments", ()):
        if _is_ignored(s, min_keypoints, min_area):
            try:
                rles.append(segment_rle(s["segmentation"], s["bbox"], height, width))
            except COCOFormatError as e:
                raise COCOFormatError(f"image {sample.meta.get('image_id')!r}, annotation id {s.get('id')!r}: "
                                      f"{e}") from None
    if not rles:
        return np.zeros((height, width), np.uint8)
    merged = mask_utils.merge(rles, intersect=0) if len(rles) > 1 else rles[0]
    return np.ascontiguousarray(mask_utils.decode(merged), dtype=np.uint8)


def _image_size(sample: Sample) -> tuple[int, int]:
    if "height" in sample.meta and "width" in sample.meta:
        return int(sample.meta["height"]), int(sample.meta["width"])
    if sample.image is not None:
        return sample.image.shape[:2]
    raise ValueError("sample has no meta height/width and no image: cannot size its ignore mask")


_FILE_NAMES = 2  # the manifest's "file_names": caches written with `mask_file_name`


def mask_file_name(image_id) -> str:
    """The cache file of an image id: ``<id>.png`` for an integer id (COCO's ids, the name users
    see); a string id (legal here, but it could be ``"../x"`` or ``"/abs/x"``) becomes
    ``s_<its letters and digits, lowercased>_<hash>.png``: one file name, no folders, never the
    name of another id (the hash tells ids apart, also on case-insensitive file systems)."""
    if type(image_id) is int and len(str(image_id)) <= 40:
        return f"{image_id}.png"
    text = str(image_id)
    tag = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]
    digest = hashlib.sha256(f"{type(image_id).__name__}:{text}".encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"s_{tag}_{digest}.png" if tag else f"s_{digest}.png"


def _mask_path(out_dir: Path, image_id) -> Path:
    target = out_dir / mask_file_name(image_id)
    if target.parent != out_dir:  # cannot happen by construction; the guard keeps it that way
        raise COCOFormatError(f"image id {image_id!r} does not map to a file inside {out_dir}; refused")
    return target


def cache_ignore_masks(ann_file, image_dir, out_dir, *, min_keypoints: int = MASK_MIN_KEYPOINTS,
                       min_area: float = MASK_MIN_AREA, on_bad_record: str = "error") -> int:
    """Write one PNG (0/255, named by `mask_file_name`) for every image whose ignore mask is
    non-empty, plus a manifest naming the thresholds and every image covered, so an absent PNG
    means "empty mask" rather than "not cached". Returns the number of PNGs written.

    Every file written or deleted is a direct child of `out_dir`: names come from
    `mask_file_name`, and PNGs are written to a temporary name and renamed, so a symlink left in
    the folder is replaced, never written through."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = load_coco_keypoints(ann_file, image_dir, on_bad_record=on_bad_record, check_files=False)
    # a PNG already there is replaced or deleted only when an earlier run's manifest covers its
    # image (so it is ours); any other file of that name is the user's (--out = the image folder?)
    try:
        earlier = _manifest(out_dir)
    except COCOFormatError:  # a damaged manifest vouches for nothing
        earlier = None
    owned = earlier["image_ids"] if earlier is not None else set()
    targets = [_mask_path(out_dir, s.meta["image_id"]) for s in samples]
    for s, target in zip(samples, targets, strict=True):
        if (target.is_symlink() or target.exists()) and s.meta["image_id"] not in owned:
            raise FileExistsError(errno.EEXIST, f"{target} is in the way: no earlier mask cache in {out_dir} "
                                  "lists it, so it is not ours to replace; give --out an empty folder "
                                  "or an earlier mask-cache folder")
    written = 0
    for s, target in zip(samples, targets, strict=True):
        mask = ignore_mask(s, min_keypoints=min_keypoints, min_area=min_area)
        if mask.any():
            tmp = target.with_name(f".{target.stem}.tmp.png")
            tmp.unlink(missing_ok=True)
            if not cv2.imwrite(str(tmp), mask * 255):
                raise OSError(errno.EIO, f"could not write the mask {tmp}: is {out_dir} writable, with space left?")
            os.replace(tmp, target)
            written += 1
        elif target.is_symlink() or target.exists():
            target.unlink()  # stale mask from an earlier run with other thresholds (a link: only the link)
    manifest = {"ann_file": str(Path(ann_file).resolve()), "min_keypoints": min_keypoints,
                "min_area": min_area, "image_ids": [s.meta["image_id"] for s in samples], "written": written,
                "file_names": _FILE_NAMES}
    tmp = out_dir / f".{MASK_CACHE_MANIFEST}.tmp"
    tmp.unlink(missing_ok=True)  # (a link left there: only the link goes)
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, out_dir / MASK_CACHE_MANIFEST)
    return written


_MANIFESTS: dict = {}


def _manifest(cache_dir: Path):
    path = cache_dir / MASK_CACHE_MANIFEST
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    cached = _MANIFESTS.get(path)
    if cached is None or cached[0] != stamp:
        try:
            m = json.loads(path.read_text())
            m["image_ids"] = set(m["image_ids"])
            if not {"min_keypoints", "min_area"} <= m.keys():
                raise KeyError("thresholds")
        except (ValueError, TypeError, KeyError):
            raise COCOFormatError(f"{path}: not a mask-cache manifest (damaged?); rebuild the cache with "
                                  "`posekit data coco-masks`") from None
        cached = _MANIFESTS[path] = (stamp, m)
    return cached[1]


def load_ignore_mask(sample: Sample, cache_dir=None, *, min_keypoints: int = MASK_MIN_KEYPOINTS,
                     min_area: float = MASK_MIN_AREA) -> np.ndarray:
    """`ignore_mask`, read from a `cache_ignore_masks` folder when it covers this image with the same
    thresholds (no PNG there = empty mask); computed otherwise."""
    if cache_dir is not None and sample.ignore_mask is None and "image_id" in sample.meta:
        cache_dir = Path(cache_dir)
        m = _manifest(cache_dir)
        image_id = sample.meta["image_id"]
        # a cache from before `mask_file_name` named string ids "<id>.png": its missing file
        # would read as an empty mask, so such ids are computed instead
        named = m is not None and (m.get("file_names") == _FILE_NAMES or mask_file_name(image_id) == f"{image_id}.png")
        if named and m["min_keypoints"] == min_keypoints and m["min_area"] == min_area \
                and image_id in m["image_ids"]:
            height, width = _image_size(sample)
            png = _mask_path(cache_dir, sample.meta["image_id"])
            if not png.is_file():
                return np.zeros((height, width), np.uint8)
            mask = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
            if mask is None or mask.shape != (height, width):
                raise ValueError(f"{png}: unreadable or not {height}x{width}; rebuild the mask cache")
            return (mask > 0).astype(np.uint8)
    return ignore_mask(sample, min_keypoints=min_keypoints, min_area=min_area)


def coco17_to_openpose18(keypoints: np.ndarray) -> np.ndarray:
    """(P, 17, 3) COCO order -> (P, 18, 3) CMU order; the neck is the shoulders' midpoint, labelled
    only when both shoulders are (v > 0), else (0, 0, 0)."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.shape[-2:] != (17, 3):
        raise ValueError(f"expected (..., 17, 3) COCO keypoints, got {keypoints.shape}")
    return map_keypoints(keypoints, "coco17", "openpose18", has_visibility=True)
