"""COCO OKS keypoint AP/AR through pycocotools, for annotation files and in-memory GT dicts.

OKS = sum_i exp(-d_i^2 / (2 s^2 k_i^2)) [v_i > 0] / sum_i [v_i > 0], s^2 = GT area, k_i = 2 sigma_i;
AP averages over OKS thresholds .50:.05:.95 with up to 20 detections per image. The numbers are
pycocotools' own (its stdout is swallowed); this module only builds inputs and guards the edge
cases it crashes on (no detections, GT dicts without num_keypoints/area, custom K).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path

import numpy as np

from posekit.runtime.predict import topdown_person_scores  # noqa: F401  (one implementation: the deploy layer's)
from posekit.skeletons import Skeleton, get_skeleton

__all__ = ["SUMMARY_NAMES", "build_coco_gt", "coco_keypoint_eval", "coco_keypoint_eval_on", "estimate_sigmas", "keypoint_gt",
           "oks"]

SUMMARY_NAMES = ("AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AR75", "AR_M", "AR_L")


def _load_gt(gt) -> dict:
    if isinstance(gt, (str, Path)):
        path = Path(gt)
        if not path.is_file():
            raise FileNotFoundError(f"COCO ground-truth file not found: {path}")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON: {e}") from None
    if isinstance(gt, dict):
        return copy.deepcopy(gt)
    raise TypeError(f"gt must be a COCO annotation file path or dict, got {type(gt).__name__}")


def _keypoint_category(dataset: dict) -> dict:
    cats = [c for c in dataset.get("categories", []) if c.get("keypoints")]
    if len(cats) != 1:
        raise ValueError(f"the GT must have exactly one category with a 'keypoints' list, found {len(cats)}")
    return cats[0]


def _complete_gt(dataset: dict, k: int) -> None:
    """Fill what COCOeval needs but hand-made GT dicts often lack (num_keypoints, area, iscrowd, bbox)."""
    for ann in dataset["annotations"]:
        raw = ann.get("keypoints")
        kp = np.asarray(np.zeros(3 * k) if raw is None or len(raw) == 0 else raw, dtype=np.float64).reshape(-1, 3)
        if kp.shape[0] != k:
            raise ValueError(f"GT annotation {ann.get('id')}: {kp.shape[0]} keypoints, expected {k}")
        ann.setdefault("keypoints", kp.ravel().tolist())
        labelled = int(np.count_nonzero(kp[:, 2] > 0))
        # COCOeval trusts both fields: a truthy iscrowd ("no" too) makes a GT a crowd, so it must be
        # 0/1. num_keypoints == 0 with labelled keypoints is COCO's way to have a person ignored
        # (the keypoints family marks people it did not score so); files are checked by the reader
        nk = ann.setdefault("num_keypoints", labelled)
        if isinstance(nk, bool) or not isinstance(nk, (int, float)) or not np.isfinite(nk) or nk < 0:
            raise ValueError(f"GT annotation {ann.get('id')!r}: 'num_keypoints' must be a count, got {nk!r}")
        crowd = ann.setdefault("iscrowd", 0)
        if type(crowd) not in (int, bool, float) or crowd not in (0, 1):
            raise ValueError(f"GT annotation {ann.get('id')!r}: 'iscrowd' must be 0 or 1, got {crowd!r}")
        if "bbox" not in ann:
            lab = kp[kp[:, 2] > 0]
            if len(lab):
                x0, y0 = lab[:, :2].min(0)
                x1, y1 = lab[:, :2].max(0)
                ann["bbox"] = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
            else:
                ann["bbox"] = [0.0, 0.0, 0.0, 0.0]
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
    for i, ann in enumerate(dataset["annotations"]):
        ann.setdefault("id", i + 1)


def _resolve_sigmas(sigmas, k: int) -> np.ndarray:
    if sigmas is None:
        if k != 17:
            raise ValueError(f"{k} keypoints: pass sigmas (an array or a Skeleton); COCO's 17 defaults do not apply")
        sigmas = get_skeleton("coco17")
    if isinstance(sigmas, (str, Skeleton)):
        sigmas = get_skeleton(sigmas).oks_sigmas()
    sigmas = np.asarray(sigmas, dtype=np.float64)
    if sigmas.shape != (k,) or not np.all(np.isfinite(sigmas)) or np.any(sigmas <= 0):
        raise ValueError(f"sigmas must be {k} positive numbers, got shape {sigmas.shape}")
    return sigmas


def _check_results(results, image_ids: set, category_id, k: int) -> list[dict]:
    out = []
    for i, r in enumerate(results):
        r = dict(r)
        if r.get("image_id") not in image_ids:
            raise ValueError(f"result #{i}: image_id {r.get('image_id')!r} is not in the ground truth")
        r.setdefault("category_id", category_id)
        kp = np.asarray(r.get("keypoints", ()), dtype=np.float64)
        if kp.size != 3 * k or not np.all(np.isfinite(kp)):
            raise ValueError(f"result #{i}: 'keypoints' must be {3 * k} finite numbers, got {kp.size}")
        score = r.get("score")
        if not isinstance(score, (int, float, np.floating, np.integer)) or not math.isfinite(float(score)):
            raise ValueError(f"result #{i}: 'score' must be a finite number, got {score!r}")
        r["keypoints"], r["score"] = kp.ravel().tolist(), float(score)
        out.append(r)
    return out


def keypoint_gt(gt, sigmas=None) -> tuple[dict, dict, int, np.ndarray]:
    """A COCO keypoint GT (file or dict) checked for its lists and its one keypoint category:
    (dataset, category, K, the K sigmas), what every keypoint scoring starts from."""
    dataset = _load_gt(gt)
    for key in ("images", "annotations"):
        if not isinstance(dataset.get(key), list):
            raise ValueError(f"the GT needs an '{key}' list")
    category = _keypoint_category(dataset)
    k = len(category["keypoints"])
    return dataset, category, k, _resolve_sigmas(sigmas, k)


def coco_keypoint_eval(gt, results: list[dict], *, sigmas=None, max_dets: int = 20) -> dict:
    """The standard 10-number keypoint summary {AP, AP50, AP75, AP_M, AP_L, AR, AR50, AR75, AR_M, AR_L}.

    gt: a COCO keypoint annotation file or dict (one keypoint category). results: COCO result dicts
    {image_id, keypoints (3K flat), score[, category_id]}. sigmas: K values, a Skeleton or its name;
    defaults to COCO's for K = 17. No results gives AP = AR = 0 (pycocotools' loadRes would crash);
    an area range without GT gives -1, as pycocotools reports it."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset, category, k, sig = keypoint_gt(gt, sigmas)
    _complete_gt(dataset, k)
    image_ids = {img["id"] for img in dataset["images"]}
    dets = _check_results(results, image_ids, category["id"], k)

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        if not dets:
            return dict.fromkeys(SUMMARY_NAMES, 0.0)
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        ev.params.kpt_oks_sigmas = sig
        ev.params.maxDets = [max_dets]
        ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(SUMMARY_NAMES, ev.stats, strict=True)}


def coco_keypoint_eval_on(gt: dict, results: list[dict], *, sigmas=None, image_ids=None) -> dict:
    """`coco_keypoint_eval` over the images evaluated (`image_ids`; default every image of `gt`),
    plus what a reader checks the number against: "images" scored and "people" (non-crowd GT
    with labelled keypoints). The bottom-up and the top-down COCO evaluators both end here."""
    if image_ids is not None:
        ids = set(image_ids)
        gt = {**gt, "images": [im for im in gt["images"] if im["id"] in ids],
              "annotations": [a for a in gt["annotations"] if a["image_id"] in ids]}
    metrics = coco_keypoint_eval(gt, results, sigmas=sigmas)  # (its summary reads maxDets 20)
    people = sum(1 for a in gt["annotations"] if not a.get("iscrowd") and a.get("num_keypoints", 0) > 0)
    images = len(ids) if image_ids is not None else len(gt["images"])
    return {**metrics, "images": float(images), "people": float(people)}


def oks(pred: np.ndarray, gt: np.ndarray, area: float, sigmas) -> float:
    """OKS of one prediction (K, 2+) against one GT (K, 3), as COCOeval computes it for a GT with
    labelled keypoints (a reference for tests and debugging)."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    sig = _resolve_sigmas(sigmas, gt.shape[0])
    vis = gt[:, 2] > 0
    if not vis.any():
        raise ValueError("OKS is undefined for a GT without labelled keypoints")
    d2 = ((pred[:, :2] - gt[:, :2]) ** 2).sum(1)
    e = d2 / (2 * sig) ** 2 / (area + np.spacing(1)) / 2
    return float(np.exp(-e)[vis].sum() / vis.sum())


def build_coco_gt(samples, *, skeleton, category_id: int = 1, include_crowd: bool = True) -> dict:
    """A COCO keypoint GT dict from Samples (synthetic or converted data).

    Image ids come from meta["image_id"] (else the sample's position); the area (the OKS scale) from
    meta["areas"], else from the boxes, else it is an error: a silently guessed scale changes AP.
    Crowd regions in meta["segments"] become iscrowd annotations, as in real COCO files."""
    sk = get_skeleton(skeleton)
    k = sk.num_keypoints
    images, annotations, used = [], [], set()
    next_id = 1
    for i, s in enumerate(samples):
        kp = np.asarray(s.keypoints, dtype=np.float64)
        if kp.shape[1:] != (k, 3):
            raise ValueError(f"sample {i}: keypoints {kp.shape}, skeleton {sk.name!r} has {k} keypoints")
        image_id = s.meta.get("image_id", i)
        if image_id in used:
            raise ValueError(f"sample {i}: duplicate image_id {image_id!r}")
        used.add(image_id)
        img = {"id": image_id, "file_name": str(s.image_path.name) if s.image_path else f"{image_id}"}
        if "width" in s.meta and "height" in s.meta:
            img["width"], img["height"] = int(s.meta["width"]), int(s.meta["height"])
        elif s.image is not None:
            img["height"], img["width"] = (int(v) for v in s.image.shape[:2])
        images.append(img)
        areas = s.meta.get("areas")
        ann_ids = s.meta.get("ann_ids")
        for p in range(len(kp)):
            if areas is not None and len(areas) == len(kp):
                area = float(areas[p])
            elif s.boxes is not None and len(s.boxes) == len(kp):
                area = float(s.boxes[p, 2] * s.boxes[p, 3])
            else:
                raise ValueError(f"sample {i}: no meta['areas'] and no boxes for its {len(kp)} people; "
                                 "the OKS scale is unknown")
            if s.boxes is not None and len(s.boxes) == len(kp):
                bbox = [float(v) for v in s.boxes[p]]
            else:
                lab = kp[p][kp[p, :, 2] > 0]
                lo, hi = (lab[:, :2].min(0), lab[:, :2].max(0)) if len(lab) else (np.zeros(2), np.zeros(2))
                bbox = [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]
            annotations.append({
                "id": int(ann_ids[p]) if ann_ids is not None and len(ann_ids) == len(kp) else next_id,
                "image_id": image_id, "category_id": category_id, "keypoints": kp[p].ravel().tolist(),
                "num_keypoints": int(np.count_nonzero(kp[p, :, 2] > 0)), "area": area, "bbox": bbox,
                "iscrowd": 0})
            next_id += 1
        if include_crowd:
            for seg in s.meta.get("segments", ()):
                if seg.get("iscrowd"):
                    annotations.append({"id": seg.get("id", next_id), "image_id": image_id,
                                        "category_id": category_id, "keypoints": [0.0] * (3 * k),
                                        "num_keypoints": 0, "area": float(seg["area"]),
                                        "bbox": [float(v) for v in seg["bbox"]], "iscrowd": 1,
                                        "segmentation": seg["segmentation"]})
                    next_id += 1
    ids = [a["id"] for a in annotations]
    if len(set(ids)) != len(ids):  # mixed sources: renumber rather than let pycocotools overwrite
        for j, a in enumerate(annotations):
            a["id"] = j + 1
    category = {"id": category_id, "name": "person" if sk.name == "coco17" else sk.name,
                "supercategory": sk.name, "keypoints": list(sk.keypoints),
                "skeleton": [[a + 1, b + 1] for a, b in sk.limbs]}
    return {"images": images, "annotations": annotations, "categories": [category]}


def estimate_sigmas(annotations: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """Per-keypoint OKS sigmas from repeated annotations, COCO's definition sigma_i^2 = E[d_i^2 / s^2].

    annotations: (R, N, K, 3) R annotators x N instances; areas: (N,) the scale s^2 of each
    instance. d_i is each annotation's distance to the mean of the labelled ones for that instance."""
    ann = np.asarray(annotations, dtype=np.float64)
    areas = np.asarray(areas, dtype=np.float64)
    if ann.ndim != 4 or ann.shape[-1] != 3 or ann.shape[0] < 2 or areas.shape != (ann.shape[1],):
        raise ValueError("annotations must be (R >= 2, N, K, 3) and areas (N,)")
    vis = ann[..., 2] > 0
    count = vis.sum(0)  # (N, K)
    mean = (ann[..., :2] * vis[..., None]).sum(0) / np.maximum(count, 1)[..., None]
    d2 = ((ann[..., :2] - mean) ** 2).sum(-1) / areas[None, :, None]
    use = vis & (count >= 2)[None]
    n = use.sum((0, 1))
    if np.any(n == 0):
        raise ValueError(f"keypoints {np.flatnonzero(n == 0).tolist()} are never labelled twice; cannot estimate")
    # mean of d^2 around the sample mean underestimates the spread by (c-1)/c per instance
    correction = (count / np.maximum(count - 1, 1))[None]
    return np.sqrt((d2 * correction * use).sum((0, 1)) / n)
