"""The COCO keypoint error taxonomy of Ronchi & Perona ("Benchmarking and Error Diagnosis in
Multi-Instance Pose Estimation", ICCV 2017), as its reference code (coco-analyze) defines it.

Each detection is matched to a GT person the COCOeval way at the localization threshold
OKS = 0.1. Every labelled keypoint of a matched detection gets the keypoint similarity
ks = exp(-d^2 / (2 s^2 k^2)) (k = 2 sigma, s^2 = GT area) against its own GT joint, the mirrored
joint of the same person (left <-> right) and every joint of the other people in the image
(theirs mirrored too); the best of them decides its type:

    good       best is its own joint, ks >= 0.85
    jitter     best is its own joint, 0.5 <= ks < 0.85
    inversion  best is the mirrored joint of its own person, ks >= 0.5
    swap       best is a joint of another person, ks >= 0.5
    miss       ks < 0.5 everywhere

The AP gained by fixing a type is pycocotools' AP of the detections with that type's keypoints
corrected, minus the original AP. A fixed keypoint is put, on the GT joint's row, at the
distance where its similarity is the boundary of the class it should have been in: a jitter at
ks = 0.85 (just good), a miss at ks = 0.5 (just jitter), an inversion or a swap at the similarity
it had with the wrong joint (only the identity is wrong, not the localization). This is
coco-analyze's correction; its pixel offsets drop the factor 2 of k = 2 sigma, here they do not,
so a fixed keypoint lands exactly on the boundary.
"""
from __future__ import annotations

import contextlib
import copy
import io
import math

import numpy as np

from posekit.metrics.coco import (
    _check_results,
    _complete_gt,
    coco_keypoint_eval,
    keypoint_gt,
)

__all__ = ["ERROR_TYPES", "FIXABLE_ERRORS", "GOOD_KS", "JITTER_KS", "LOCALIZATION_OKS", "analyze_keypoint_errors",
           "classify_keypoints", "keypoint_similarity", "visible_count_bins"]

ERROR_TYPES = ("good", "jitter", "inversion", "swap", "miss")
FIXABLE_ERRORS = ("miss", "swap", "inversion", "jitter")  # the paper's order of cumulative fixes
JITTER_KS = 0.5  # below it a keypoint is no longer near the joint it was matched to
GOOD_KS = 0.85  # at or above it a keypoint is good
LOCALIZATION_OKS = 0.1  # detections matched to GT people at this OKS are analysed


def keypoint_similarity(pred: np.ndarray, gt: np.ndarray, area: float, sigmas) -> np.ndarray:
    """Per-keypoint similarity (K,) of pred (K, 2+) to gt (K, 3), as inside COCO's OKS; NaN where the
    GT joint is unlabelled."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    sig = np.asarray(sigmas, dtype=np.float64)
    d2 = ((pred[:, :2] - gt[:, :2]) ** 2).sum(-1)
    ks = np.exp(-d2 / (2 * sig) ** 2 / (float(area) + np.spacing(1)) / 2)
    return np.where(gt[:, 2] > 0, ks, np.nan)


def distance_at_similarity(ks: np.ndarray, area: float, sigmas) -> np.ndarray:
    """The distance from a GT joint at which its keypoint similarity is `ks` (the inverse of the above)."""
    ks = np.clip(np.asarray(ks, dtype=np.float64), np.spacing(1), 1.0)
    return np.sqrt(-2.0 * np.log(ks) * float(area) * (2 * np.asarray(sigmas, dtype=np.float64)) ** 2)


def classify_keypoints(pred: np.ndarray, gt: np.ndarray, area: float, sigmas, flip_index,
                       others: list[tuple[np.ndarray, float]] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Types of one detection's keypoints against its matched GT person.

    pred (K, 2+); gt (K, 3) and area: the matched person; others: (keypoints (K, 3), area) of the
    image's other people; flip_index: the skeleton's left/right permutation. Returns (types (K,)
    object array of ERROR_TYPES names, None where the GT joint is unlabelled; best ks (K,); the
    joint each keypoint is nearest to as (person, joint) (K, 2), person 0 = its own)."""
    flip = np.asarray(flip_index, dtype=int)
    gt = np.asarray(gt, dtype=np.float64)
    people = [(gt, float(area))] + [(np.asarray(o, dtype=np.float64), float(a)) for o, a in others]
    k = gt.shape[0]
    # rows: own, own mirrored, then each other person and its mirror (ties go to the earlier row)
    rows, owner = [], []
    for p, (kp, a) in enumerate(people):
        for mirrored in (False, True):
            target = kp[flip] if mirrored else kp
            rows.append(keypoint_similarity(pred, target, a, sigmas))
            owner.append((p, mirrored))
    ks = np.stack(rows)  # (R, K)
    filled = np.where(np.isnan(ks), -1.0, ks)
    best_row = filled.argmax(0)
    best = filled.max(0)
    types = np.full(k, None, dtype=object)
    nearest = np.zeros((k, 2), dtype=int)
    for j in range(k):
        p, mirrored = owner[best_row[j]]
        nearest[j] = (p, flip[j] if mirrored else j)
        if gt[j, 2] <= 0:
            continue
        if best[j] < JITTER_KS:
            types[j] = "miss"
        elif p == 0 and not mirrored:
            types[j] = "good" if best[j] >= GOOD_KS else "jitter"
        elif p == 0:
            types[j] = "inversion"
        else:
            types[j] = "swap"
    return types, np.where(best < 0, np.nan, best), nearest


def visible_count_bins(k: int) -> list[tuple[int, int]]:
    """Bins of the number of labelled keypoints for "AP by visible keypoints": four of equal width
    (COCO's 17: 1-5, 6-10, 11-15, 16-17)."""
    width = max(1, math.ceil(k / 4))
    return [(lo, min(lo + width - 1, k)) for lo in range(1, k + 1, width)]


def _match(dataset: dict, dets: list[dict], sigmas: np.ndarray, max_dets: int) -> dict[int, int]:
    """Result index -> GT annotation id, COCOeval's greedy matching at OKS = LOCALIZATION_OKS over
    all sizes; matches to ignored GT (crowds, unscored people) are left out."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(dataset)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        ev.params.kpt_oks_sigmas = sigmas
        ev.params.maxDets = [max_dets]
        ev.params.iouThrs = np.array([LOCALIZATION_OKS])
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
        ev.params.imgIds = sorted({img["id"] for img in dataset["images"]})
        ev.evaluate()
    ignored = {a["id"] for a in dataset["annotations"] if a.get("iscrowd") or a.get("num_keypoints", 0) == 0}
    order = {d["id"]: n for n, d in enumerate(coco_dt.dataset["annotations"])}  # loadRes numbers them in order
    matches = {}
    for e in ev.evalImgs:
        if e is None:
            continue
        for dind, did in enumerate(e["dtIds"]):
            gid = int(e["dtMatches"][0][dind])
            if gid and gid not in ignored:
                matches[order[did]] = gid
    return matches


def _summary(dataset: dict, dets: list[dict], sigmas, max_dets: int) -> dict:
    return coco_keypoint_eval(dataset, dets, sigmas=sigmas, max_dets=max_dets)


def analyze_keypoint_errors(gt, results: list[dict], *, sigmas=None, flip_index=None, keypoint_names=None,
                            max_dets: int = 20) -> dict:
    """The taxonomy over a COCO GT (file or dict) and its result dicts (as `coco_keypoint_eval`).

    Returns a JSON-ready dict: "counts" {type: per-keypoint counts (K,)} over the labelled joints of
    matched detections; "detections" per matched result (result index, image_id, gt_id, types);
    "ap" the summary of the original results, "ap_fixed" / "ap_gain" {type: summary / AP gain when
    only that type is fixed}, "ap_cumulative" [(type, AP)] fixing miss, swap, inversion, jitter in
    turn (the paper's figure); "ap_by_size" {medium, large} and "ap_by_visible" {"lo-hi": AP} with
    the people outside each bin ignored (None where a bin has nobody)."""
    dataset, category, k, sig = keypoint_gt(gt, sigmas)
    names = list(keypoint_names or category["keypoints"])
    if len(names) != k:
        raise ValueError(f"keypoint_names has {len(names)} names, the GT has {k} keypoints")
    if flip_index is None:
        raise ValueError("analyze_keypoint_errors needs the skeleton's flip_index (left/right pairs) for inversions")
    flip = np.asarray(flip_index, dtype=int)
    if flip.shape != (k,) or sorted(flip.tolist()) != list(range(k)):
        raise ValueError(f"flip_index must be a permutation of {k} keypoints, got {flip.tolist()}")
    _complete_gt(dataset, k)
    image_ids = {img["id"] for img in dataset["images"]}
    dets = _check_results(results, image_ids, category["id"], k)

    counts = {t: np.zeros(k, dtype=int) for t in ERROR_TYPES}
    detections = []
    fixes = {t: {} for t in FIXABLE_ERRORS}  # type -> {result index: (joint, corrected xy)}
    if dets:
        by_id = {a["id"]: a for a in dataset["annotations"]}
        by_image: dict = {}
        for a in dataset["annotations"]:
            if not a.get("iscrowd"):
                by_image.setdefault(a["image_id"], []).append(a)
        for n, gid in sorted(_match(dataset, dets, sig, max_dets).items()):
            ann = by_id[gid]
            own = np.asarray(ann["keypoints"], dtype=np.float64).reshape(k, 3)
            others = [(np.asarray(a["keypoints"], dtype=np.float64).reshape(k, 3), float(a["area"]))
                      for a in by_image.get(ann["image_id"], ()) if a["id"] != gid]
            pred = np.asarray(dets[n]["keypoints"], dtype=np.float64).reshape(k, 3)
            types, best, _ = classify_keypoints(pred, own, ann["area"], sig, flip, others)
            for j, t in enumerate(types):
                if t is None:
                    continue
                counts[t][j] += 1
                if t == "good":
                    continue
                target = {"jitter": GOOD_KS, "miss": JITTER_KS}.get(t, best[j])
                shift = float(distance_at_similarity(target, ann["area"], sig[j:j + 1])[0])
                fixes[t].setdefault(n, []).append((j, own[j, 0] + shift, own[j, 1]))
            detections.append({"result": int(n), "image_id": ann["image_id"], "gt_id": gid,
                               "types": [t for t in types]})

    def fixed(kinds) -> list[dict]:
        out = copy.deepcopy(dets)
        for t in kinds:
            for n, joints in fixes[t].items():
                for j, x, y in joints:
                    out[n]["keypoints"][3 * j], out[n]["keypoints"][3 * j + 1] = float(x), float(y)
        return out

    base = _summary(dataset, dets, sig, max_dets)
    ap_fixed = {t: _summary(dataset, fixed([t]), sig, max_dets) for t in FIXABLE_ERRORS}
    cumulative = [(t, _summary(dataset, fixed(FIXABLE_ERRORS[:i + 1]), sig, max_dets)["AP"])
                  for i, t in enumerate(FIXABLE_ERRORS)]
    by_visible = {}
    for lo, hi in visible_count_bins(k):
        binned = copy.deepcopy(dataset)
        inside = 0
        for a in binned["annotations"]:
            labelled = int(np.count_nonzero(np.asarray(a["keypoints"]).reshape(k, 3)[:, 2] > 0))
            if a.get("iscrowd") or a["num_keypoints"] == 0:
                continue
            if lo <= labelled <= hi:
                inside += 1
            else:
                a["num_keypoints"] = 0  # COCOeval ignores it: detections on it are neither TP nor FP
        by_visible[f"{lo}-{hi}"] = {"AP": _summary(binned, dets, sig, max_dets)["AP"] if inside else None,
                                    "people": inside}
    labelled_total = sum(int(c.sum()) for c in counts.values())
    return {
        "keypoint_names": names,
        "thresholds": {"localization_oks": LOCALIZATION_OKS, "jitter_ks": JITTER_KS, "good_ks": GOOD_KS},
        "counts": {t: c.tolist() for t, c in counts.items()},
        "fractions": {t: (float(c.sum()) / labelled_total if labelled_total else 0.0) for t, c in counts.items()},
        "matched": len(detections), "results": len(dets),
        "detections": detections,
        "ap": base,
        "ap_fixed": ap_fixed,
        "ap_gain": {t: ap_fixed[t]["AP"] - base["AP"] for t in FIXABLE_ERRORS},
        "ap_cumulative": [[t, ap] for t, ap in cumulative],
        "ap_by_size": {"medium": _none_if_missing(base["AP_M"]), "large": _none_if_missing(base["AP_L"])},
        "ap_by_visible": by_visible,
    }


def _none_if_missing(value: float):
    """pycocotools reports -1 for an area range without GT."""
    return None if value < 0 else float(value)

