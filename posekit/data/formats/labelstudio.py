"""Label Studio JSON exports of keypoint projects, read as image Samples.

What differs from plain COCO:
  * the file is a list of tasks, one per image: `data.<var>` is the image as Label Studio serves
    it (`/data/upload/<project>/<hash>-name.jpg`, `/data/local-files/?d=sub/name.jpg`, a URL or
    a plain path), `annotations[]` the annotators' work (cancelled ones are ignored; the first
    remaining one is read);
  * each keypoint is its own result (`type: keypointlabels`), `value.x/.y` in PERCENT of
    `original_width/original_height`, its name in `value.keypointlabels[0]` (not an index);
    `value.hidden` marks a point the annotator flagged as not visible;
  * boxes are separate `rectanglelabels` results (percent too); a keypoint drawn while its box was
    selected carries `parentID` = the box's id. People are found: one person per task when it has
    at most one box and no parentID; else by parentID, a point without one going to the one box
    that contains it.
  * Label Studio has no visibility flag: a labelled point is v=2, a hidden one v=1, a missing one 0.

Keypoint order: a skeleton the user gives (its names), else the labelling config's
`<KeyPointLabels>` `<Label value=...>` list (`label_config.xml`, or `<export>.label_config.xml`
next to the JSON), else the order names first appear in the file. When the labels are not keypoint
names but one category label for every point (label-studio-converter's COCO import writes this,
MMPose's labelstudio2coco reads it), the points of a person are taken in result order, K at a time.

Image paths are resolved under `images_root` (default: the JSON's folder): the path after
`/data/` or `?d=`, then the bare file name, then the file name without Label Studio's 8-hex upload
prefix; nothing outside the root is read.
"""
from __future__ import annotations

import json
import os
import re
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from posekit.data.formats.coco import COCOSamples
from posekit.data.formats.deeplabcut import infer_flip_pairs
from posekit.data.formats.yolo import image_wh
from posekit.data.sample import person_boxes, BadRecordError, Sample, check_values, relative_path_problem
from posekit.skeletons import Skeleton

__all__ = ["LabelStudioFormatError", "LabelStudioRecordError", "read_label_config", "load_labelstudio",
           "labelstudio_skeleton", "labelstudio_config_of", "image_candidates"]

UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio prefixes uploaded files with 8 hex digits
IMAGE_KEYS = ("image", "img", "image_url", "url")


class LabelStudioFormatError(ValueError):
    """A Label Studio export is malformed; the message names the file (and task)."""


class LabelStudioRecordError(LabelStudioFormatError, BadRecordError):
    """One bad task (``on_bad_record="error"``)."""


def read_label_config(path) -> dict:
    """The labelling config's keypoint names (`<KeyPointLabels><Label value>`, in order), the
    image variable (`<Image value="$image">`) and the box labels, from the XML Label Studio shows
    under Settings > Labeling Interface > Code."""
    path = Path(path)
    text = path.read_bytes()
    if b"<!DOCTYPE" in text or b"<!ENTITY" in text:  # a labelling config has neither; entities can explode
        raise LabelStudioFormatError(f"{path}: has a DOCTYPE / entity declarations; refused")
    try:
        root = ET.fromstring(text)
    except (ET.ParseError, UnicodeDecodeError) as e:
        raise LabelStudioFormatError(f"{path}: not a Label Studio labelling config (XML): {e}") from None
    names = [lab.get("value") for kp in root.iter("KeyPointLabels") for lab in kp.iter("Label")]
    if not names or not all(names):
        raise LabelStudioFormatError(f"{path}: no <KeyPointLabels> with <Label value=...> entries")
    image = next((el.get("value", "") for el in root.iter("Image")), "")
    return {"keypoints": names, "image_var": image.lstrip("$") or None,
            "boxes": [lab.get("value") for r in root.iter("RectangleLabels") for lab in r.iter("Label")],
            "file": path}


def image_candidates(ref: str) -> list[str]:
    """Relative paths an image reference of a task may have under the image root, best first."""
    text = urllib.parse.unquote(str(ref))
    parsed = urllib.parse.urlparse(text)
    query = urllib.parse.parse_qs(parsed.query)
    out = []
    if "d" in query:
        out.append(query["d"][0])
    path = parsed.path
    if path.startswith("/data/") and "d" not in query:
        out.append(path[len("/data/"):])
    elif parsed.scheme in ("", "file") and not path.startswith("/") and path:
        out.append(path)
    elif parsed.scheme not in ("",) and path:
        out.append(path.lstrip("/"))
    base = os.path.basename(path if "d" not in query else query["d"][0])
    out += [base, UPLOAD_PREFIX.sub("", base)]
    seen = []
    for c in out:
        c = c.replace("\\", "/")
        if c and c not in seen and relative_path_problem(c) is None:
            seen.append(c)
    return seen


def _pct(value, key, where) -> float:
    v = value.get(key) if isinstance(value, dict) else None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BadRecordError(f"{where}: value.{key} must be a number (percent of the image), got {v!r}")
    return float(v)


def _task_image_ref(task, image_var, where):
    data = task.get("data")
    if not isinstance(data, dict):
        raise BadRecordError(f"{where}: no 'data' mapping with the image")
    keys = [image_var] if image_var else [k for k in IMAGE_KEYS if k in data] or \
        [k for k, v in data.items() if isinstance(v, str)]
    if not keys or not isinstance(data.get(keys[0]), str):
        raise BadRecordError(f"{where}: no image in 'data' (keys {sorted(data)}); give the labelling config")
    return data[keys[0]]


def _pick_annotation(task, where):
    anns = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not anns:
        return None
    result = anns[0].get("result")
    if not isinstance(result, list):
        raise BadRecordError(f"{where}: annotation 'result' must be a list")
    return result


def _first_seen_names(tasks) -> list[str]:
    names = []
    for t in tasks:
        for a in (t.get("annotations") or []) if isinstance(t, dict) else []:
            for r in (a.get("result") or []) if isinstance(a, dict) else []:
                if isinstance(r, dict) and r.get("type") == "keypointlabels":
                    labs = (r.get("value") or {}).get("keypointlabels") or []
                    if labs and isinstance(labs[0], str) and labs[0] not in names:
                        names.append(labs[0])
    return names


def _people(results, names, where, wh):
    """(keypoints (P, K, 3), boxes (P, 4) or None per person) of one annotation's results."""
    k = len(names)
    index = {n: i for i, n in enumerate(names)}
    points, rects = [], {}
    for j, r in enumerate(results):
        if not isinstance(r, dict):
            continue
        rwhere = f"{where} result {j + 1}"
        kind = r.get("type")
        if kind not in ("keypointlabels", "rectanglelabels"):
            continue
        if r.get("image_rotation", 0) not in (0, 0.0, None):
            raise BadRecordError(f"{rwhere}: image_rotation={r['image_rotation']}; rotated images are not read "
                                 "(un-rotate in Label Studio and re-export)")
        w = r.get("original_width") or wh()[0]
        h = r.get("original_height") or wh()[1]
        if (w, h) != tuple(wh()):  # percent of another size: the points would land in the wrong place
            raise BadRecordError(f"{rwhere}: labelled on a {w}x{h} image, the image file is {wh()[0]}x{wh()[1]}; "
                                 "use the images that were labelled")
        v = r.get("value")
        x, y = _pct(v, "x", rwhere) * w / 100.0, _pct(v, "y", rwhere) * h / 100.0
        if kind == "rectanglelabels":
            if v.get("rotation", 0) not in (0, 0.0, None):
                raise BadRecordError(f"{rwhere}: a rotated box (rotation={v['rotation']}) is not read")
            rects[r.get("id", f"#{j}")] = [x, y, _pct(v, "width", rwhere) * w / 100.0,
                                          _pct(v, "height", rwhere) * h / 100.0]
            continue
        labs = v.get("keypointlabels")
        if not (isinstance(labs, list) and len(labs) == 1 and isinstance(labs[0], str)):
            raise BadRecordError(f"{rwhere}: value.keypointlabels must name one keypoint, got {labs!r}")
        points.append({"name": labs[0], "xy": (x, y), "vis": 1.0 if v.get("hidden") else 2.0,
                       "parent": r.get("parentID"), "where": rwhere})
    check_values([p["xy"] for p in points], "keypoint coordinates", where)
    check_values(list(rects.values()), "boxes", where)
    if not points:
        return np.zeros((0, k, 3)), None
    named = all(p["name"] in index for p in points)
    if not named and len({p["name"] for p in points}) > 1:
        bad = sorted({p["name"] for p in points if p["name"] not in index})
        raise BadRecordError(f"{where}: keypoint labels {bad} are not among the keypoints {names}")
    groups: dict = {}
    if named and len(rects) <= 1 and not any(p["parent"] for p in points):
        groups[next(iter(rects), None)] = points
    elif named:  # by parentID; a point without one goes to the one box that contains it
        for p in points:
            if p["parent"] is not None:
                if p["parent"] not in rects:
                    raise BadRecordError(f"{p['where']}: keypoint {p['name']!r} has parentID {p['parent']!r}, "
                                         "which is no box of this annotation")
                groups.setdefault(p["parent"], []).append(p)
                continue
            inside = [rid for rid, b in rects.items() if b[0] <= p["xy"][0] <= b[0] + b[2]
                      and b[1] <= p["xy"][1] <= b[1] + b[3]]
            if len(inside) != 1:
                raise BadRecordError(f"{p['where']}: keypoint {p['name']!r} lies in {len(inside)} of the "
                                     f"{len(rects)} boxes; link keypoints to their box (parentID) in Label Studio")
            groups.setdefault(inside[0], []).append(p)
    else:
        if len(points) % k:
            raise BadRecordError(f"{where}: {len(points)} keypoints all labelled {points[0]['name']!r} are not a "
                                 f"multiple of the {k} keypoints {names}")
        for i in range(0, len(points), k):
            run = points[i:i + k]
            for q, p in enumerate(run):
                p["name"] = names[q]
            xy = np.array([p["xy"] for p in run])
            owner = max(rects, default=None, key=lambda rid: sum(
                rects[rid][0] <= a <= rects[rid][0] + rects[rid][2] and rects[rid][1] <= b <= rects[rid][1] + rects[rid][3]
                for a, b in xy))
            if owner in groups:
                owner = f"run{i}"
            groups[owner] = run
    kps, boxes = [], []
    for rid, members in groups.items():
        kp = np.zeros((k, 3))
        for p in members:
            i = index[p["name"]]
            if kp[i, 2] > 0:
                raise BadRecordError(f"{p['where']}: keypoint {p['name']!r} is labelled twice for one person")
            if p["vis"] == 1.0 and p["xy"] == (0.0, 0.0):
                continue  # the converter's way to write a keypoint that was not labelled
            kp[i] = (*p["xy"], p["vis"])
        if not (kp[:, 2] > 0).any():
            continue
        kps.append(kp)
        boxes.append(rects.get(rid))
    return (np.stack(kps) if kps else np.zeros((0, k, 3))), boxes


def labelstudio_config_of(export: Path) -> Path | None:
    """The labelling config saved beside an export: `<export stem>.label_config.xml` (what
    label-studio-converter writes) or `label_config.xml`."""
    for cand in (export.with_name(export.stem + ".label_config.xml"), export.with_name("label_config.xml")):
        if cand.is_file():
            return cand
    return None


def labelstudio_skeleton(names, *, name: str = "labelstudio") -> Skeleton:
    """Keypoint names with left/right flip pairs inferred from the names (no limbs: Label Studio
    has none); a skeleton YAML overrides it."""
    return Skeleton(name=name, keypoints=tuple(names), flip_pairs=infer_flip_pairs(names))


def load_labelstudio(path, images_root=None, *, on_bad_record: str = "error", label_config=None,
                     keypoint_names=None) -> COCOSamples:
    """Samples of a Label Studio JSON export (see the module docstring). `keypoint_names` (from a
    skeleton) or `label_config` fix the keypoint order. The list carries `.skeleton`."""
    if on_bad_record not in ("error", "skip"):
        raise ValueError(f"on_bad_record must be 'error' or 'skip', got {on_bad_record!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Label Studio export not found: {path}")
    try:
        tasks = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LabelStudioFormatError(f"{path}: not JSON: {e}") from None
    if isinstance(tasks, dict) and "data" in tasks:
        tasks = [tasks]
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise LabelStudioFormatError(f"{path}: a Label Studio JSON export is a list of tasks "
                                     "(Export > JSON; JSON-MIN and CSV drop the keypoint names)")
    if label_config is None:
        label_config = labelstudio_config_of(path)
    cfg = read_label_config(label_config) if label_config else None
    if cfg and not keypoint_names and len(cfg["keypoints"]) == 1:
        raise LabelStudioFormatError(
            f"{cfg['file']}: <KeyPointLabels> has one label {cfg['keypoints'][0]!r}, a category rather than keypoint "
            "names; give a skeleton (data.skeleton / --skeleton) listing the keypoints in the order they were placed")
    names = list(keypoint_names) if keypoint_names else (cfg["keypoints"] if cfg else _first_seen_names(tasks))
    if not names:
        raise LabelStudioFormatError(f"{path}: no keypointlabels results and no keypoint names; give the "
                                     "labelling config or a skeleton")
    root = os.path.normpath(os.path.abspath(images_root if images_root is not None else path.parent))
    samples, skipped = [], []
    for n, task in enumerate(tasks):
        where = f"{path}: task {n + 1}" + (f" (id {task['id']})" if "id" in task else "")
        try:
            ref = _task_image_ref(task, cfg["image_var"] if cfg else None, where)
            where = f"{where} ({ref})"
            results = _pick_annotation(task, where)
            if results is None:
                continue  # not labelled yet (or every annotation cancelled)
            full = None
            tried = image_candidates(ref)
            for c in tried:
                f = os.path.normpath(os.path.join(root, c))
                if os.path.commonpath([root, f]) == root and os.path.isfile(f):
                    full = f
                    break
            if full is None:
                raise BadRecordError(f"{where}: image not found under {root} (tried {', '.join(tried) or 'nothing'})")
            size = []

            def wh():
                if not size:
                    size.extend(image_wh(Path(full)))
                return size

            kp, boxes = _people(results, names, where, wh)
        except BadRecordError as e:
            if on_bad_record == "error":
                raise LabelStudioRecordError(str(e)) from None
            skipped.append(str(e))
            continue
        w, h = wh()
        box_arr = person_boxes(kp, boxes)  # a person without a box: its labelled points' extent
        samples.append(Sample(keypoints=kp, image_path=Path(full), boxes=box_arr,
                              meta={"image_id": len(samples) + 1, "file_name": os.path.relpath(full, root),
                                    "width": w, "height": h, "areas": box_arr[:, 2] * box_arr[:, 3],
                                    "task_id": task.get("id")}))
    out = COCOSamples(samples, skipped=skipped, keypoint_names=tuple(names), category_id=1, ann_file=path)
    out.skeleton = labelstudio_skeleton(names, name=f"labelstudio_{path.stem}"[:64])
    return out
