"""CVAT "CVAT for images 1.1" XML exports of keypoints, read as image Samples.

(CVAT's "COCO Keypoints 1.0" export is plain COCO keypoints: read it with data.format=coco.)

The export is `annotations.xml` + `images/`. Each `<image name width height>` holds the shapes:
  * `<skeleton label="person">` (CVAT 2.3+): one person, its `<points label="nose" points="x,y"
    outside="0|1" occluded="0|1">` children one per keypoint (outside=1: not labelled, v=0;
    occluded=1: v=1; else v=2). The keypoint order and the limbs come from `<meta>`: the
    sub-labels whose `<parent>` is the skeleton label, in order, and the label's `<svg>` edges
    (`data-node-from`/`data-node-to` between `data-node-id`s named by `data-label-name`).
  * `<points label="nose" points="x,y">` shapes, one per keypoint label (older projects): the
    points sharing a `group_id` are one person; without group ids an image is one person.
    The keypoint order is the `<meta>` points labels (or a skeleton the user gives).
A `<box>` in the same group (or the only box of a one-person image) is the person's box; else the
labelled points' extent. Coordinates are CVAT's pixels (0,0 = top-left corner of the image).
Image paths are resolved under `images_root` (default: `images/` next to the XML) and never
outside it.
"""
from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from posekit.data.formats.coco import COCOSamples
from posekit.data.formats.deeplabcut import infer_flip_pairs
from posekit.data.formats.yolo import image_wh
from posekit.data.sample import person_boxes, BadRecordError, Sample, check_values, relative_path_problem
from posekit.skeletons import Skeleton

__all__ = ["CVATFormatError", "CVATRecordError", "read_cvat_meta", "load_cvat"]


class CVATFormatError(ValueError):
    """A CVAT XML export is malformed; the message names the file (and image)."""


class CVATRecordError(CVATFormatError, BadRecordError):
    """One bad image (``on_bad_record="error"``)."""


_ATTR = re.compile(r'([\w-]+)="([^"]*)"')


def _svg_limbs(svg: str, names: list[str]) -> list[tuple[int, int]]:
    """Limbs of a CVAT skeleton label from its `<svg>` text (edges between named nodes)."""
    node_name, edges = {}, []
    for tag in re.findall(r"<(?:circle|line)\b[^>]*>", svg or ""):
        a = dict(_ATTR.findall(tag))
        if tag.startswith("<circle") and "data-node-id" in a:
            node_name[a["data-node-id"]] = a.get("data-label-name")
        elif tag.startswith("<line") and "data-node-from" in a:
            edges.append((a["data-node-from"], a["data-node-to"]))
    limbs = []
    for f, t in edges:
        nf, nt = node_name.get(f), node_name.get(t)
        if nf in names and nt in names and nf != nt:
            limbs.append((names.index(nf), names.index(nt)))
    return limbs


def read_cvat_meta(root, path) -> dict:
    """{skeleton label: {"keypoints": [...], "limbs": [...]}} and the plain points labels, from `<meta>`."""
    labels = [lab for lab in root.iter("label") if lab.findtext("name")]
    skeletons, points = {}, []
    for lab in labels:
        name, kind, parent = lab.findtext("name"), lab.findtext("type"), lab.findtext("parent")
        if kind == "skeleton":
            skeletons[name] = {"keypoints": [], "svg": lab.findtext("svg") or ""}
        elif kind == "points" and not parent:
            points.append(name)
    for lab in labels:
        parent = lab.findtext("parent")
        if parent in skeletons:
            skeletons[parent]["keypoints"].append(lab.findtext("name"))
    for s in skeletons.values():
        s["limbs"] = _svg_limbs(s["svg"], s["keypoints"])
    return {"skeletons": skeletons, "points": points, "file": path}


def _xy(text, where):
    try:
        pts = [tuple(float(v) for v in p.split(",")) for p in (text or "").split(";") if p.strip()]
    except ValueError:
        raise BadRecordError(f"{where}: points={text!r} must be 'x,y' numbers") from None
    if len(pts) != 1 or len(pts[0]) != 2:
        raise BadRecordError(f"{where}: points={text!r}: posekit reads one 'x,y' point per keypoint label "
                             "(draw a skeleton, or one points shape per keypoint)")
    return pts[0]


def _box_of(el, where):
    try:
        x0, y0, x1, y1 = (float(el.get(k)) for k in ("xtl", "ytl", "xbr", "ybr"))
    except (TypeError, ValueError):
        raise BadRecordError(f"{where}: a <box> needs numeric xtl, ytl, xbr, ybr") from None
    return [x0, y0, x1 - x0, y1 - y0]


def _image_people(img, names, label, where):
    """(keypoints (P, K, 3), boxes) of one `<image>` element."""
    k = len(names)
    index = {n: i for i, n in enumerate(names)}
    groups: dict = {}
    boxes: dict = {}
    for e, el in enumerate(img):
        ewhere = f"{where} <{el.tag}> {e + 1}"
        gid = el.get("group_id")
        if el.tag == "box":
            boxes.setdefault(gid, []).append(_box_of(el, ewhere))
        elif el.tag == "skeleton" and (label is None or el.get("label") == label):
            kp = np.zeros((k, 3))
            for child in el.iter("points"):
                n = child.get("label")
                if n not in index:
                    raise BadRecordError(f"{ewhere}: skeleton point {n!r} is not among the keypoints {names}")
                if child.get("outside") == "1":
                    continue
                kp[index[n]] = (*_xy(child.get("points"), ewhere), 1.0 if child.get("occluded") == "1" else 2.0)
            groups[("skeleton", e, gid)] = kp
        elif el.tag == "points" and el.get("label") in index:
            key = ("points", gid)
            kp = groups.setdefault(key, np.zeros((k, 3)))
            i = index[el.get("label")]
            if kp[i, 2] > 0:
                hint = "give the shapes of each person a group" if gid is None else f"group {gid}"
                raise BadRecordError(f"{ewhere}: keypoint {el.get('label')!r} appears twice for one person ({hint})")
            if el.get("outside") != "1":
                kp[i] = (*_xy(el.get("points"), ewhere), 1.0 if el.get("occluded") == "1" else 2.0)
    kps, out_boxes = [], []
    for key, kp in groups.items():
        if not (kp[:, 2] > 0).any():
            continue
        gid = key[-1]
        cand = boxes.get(gid) if gid is not None else (boxes.get(None) if len(groups) == 1 else None)
        kps.append(kp)
        out_boxes.append(cand[0] if cand and len(cand) == 1 else None)
    kp = np.stack(kps) if kps else np.zeros((0, k, 3))
    check_values(kp, "keypoint coordinates", where)
    return kp, out_boxes


def load_cvat(path, images_root=None, *, on_bad_record: str = "error", label=None,
              keypoint_names=None) -> COCOSamples:
    """Samples of a CVAT for images 1.1 XML (see the module docstring). `label` picks the skeleton
    label when the export has several; `keypoint_names` (from a skeleton YAML) fixes the order of
    plain points labels. The list carries `.skeleton`."""
    if on_bad_record not in ("error", "skip"):
        raise ValueError(f"on_bad_record must be 'error' or 'skip', got {on_bad_record!r}")
    path = Path(path)
    if path.is_dir():
        path = path / "annotations.xml"
    if not path.is_file():
        raise FileNotFoundError(f"CVAT annotations file not found: {path}")
    text = path.read_bytes()
    if b"<!DOCTYPE" in text[:1 << 16] or b"<!ENTITY" in text[:1 << 16]:  # CVAT writes neither; entities can explode
        raise CVATFormatError(f"{path}: has a DOCTYPE / entity declarations, which CVAT never writes; refused")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise CVATFormatError(f"{path}: not XML: {e}") from None
    if root.tag != "annotations":
        raise CVATFormatError(f"{path}: root <{root.tag}>; a CVAT for images export has <annotations>")
    if root.find("track") is not None and root.find("image") is None:
        raise CVATFormatError(f"{path}: a 'CVAT for video' export (tracks); export as 'CVAT for images 1.1'")
    meta = read_cvat_meta(root.find("meta") if root.find("meta") is not None else root, path)
    sk = meta["skeletons"]
    limbs = []
    if sk:
        if label is None and len(sk) > 1:
            raise CVATFormatError(f"{path}: skeleton labels {sorted(sk)}; pick one (data.category / --category)")
        label = label if label is not None else next(iter(sk))
        if label not in sk:
            raise CVATFormatError(f"{path}: no skeleton label {label!r}; labels: {sorted(sk)}")
        names, limbs = sk[label]["keypoints"], sk[label]["limbs"]
    else:
        names = meta["points"]
        label = None
    if keypoint_names:
        if sk and list(keypoint_names) != list(names) and sorted(keypoint_names) != sorted(names):
            raise CVATFormatError(f"{path}: skeleton {label!r} has keypoints {names}; the skeleton given has "
                                  f"{list(keypoint_names)}")
        by_name = [(names[a], names[b]) for a, b in limbs]
        names = list(keypoint_names)
        limbs = [(names.index(a), names.index(b)) for a, b in by_name]
    if not names:
        names = []
        for el in root.iter("points"):
            if el.get("label") and el.get("label") not in names:
                names.append(el.get("label"))
    if not names:
        raise CVATFormatError(f"{path}: no skeleton and no points labels; nothing to read as keypoints")
    base = os.path.normpath(os.path.abspath(images_root if images_root is not None else path.parent / "images"))
    samples, skipped = [], []
    for n, img in enumerate(root.iter("image")):
        name = img.get("name")
        where = f"{path}: <image> {n + 1} ({name})"
        try:
            problem = relative_path_problem(name)
            if problem:
                raise CVATFormatError(f"{where}: {problem}; refused")
            full = os.path.normpath(os.path.join(base, name))
            if os.path.commonpath([base, full]) != base:
                raise CVATFormatError(f"{where}: image path leaves the image folder {base}; refused")
            try:
                w, h = int(img.get("width")), int(img.get("height"))
            except (TypeError, ValueError):
                raise BadRecordError(f"{where}: width and height must be integers") from None
            kp, boxes = _image_people(img, names, label, where)
            if not os.path.isfile(full):
                raise BadRecordError(f"{where}: image file not found: {full}")
            if image_wh(Path(full)) != (w, h):
                fw, fh = image_wh(Path(full))
                raise BadRecordError(f"{where}: labelled on a {w}x{h} image, the image file is {fw}x{fh}; "
                                     "use the images that were labelled")
        except BadRecordError as e:
            if on_bad_record == "error":
                raise CVATRecordError(str(e)) from None
            skipped.append(str(e))
            continue
        box_arr = person_boxes(kp, boxes)  # a person without a box: its labelled points' extent
        samples.append(Sample(keypoints=kp, image_path=Path(full), boxes=box_arr,
                              meta={"image_id": len(samples) + 1, "file_name": name, "width": w, "height": h,
                                    "areas": box_arr[:, 2] * box_arr[:, 3]}))
    out = COCOSamples(samples, skipped=skipped, keypoint_names=tuple(names), category_id=1, ann_file=path)
    out.skeleton = Skeleton(name=f"cvat_{label or path.parent.name}"[:64], keypoints=tuple(names),
                            flip_pairs=infer_flip_pairs(names), limbs=tuple(limbs))
    return out
