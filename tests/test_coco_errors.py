"""The Ronchi-Perona keypoint error taxonomy: constructed cases at the paper's thresholds, and
the shared COCO samples with predictions perturbed by a known error mix."""
import json

import numpy as np
import pytest

from posekit.metrics.coco_errors import (
    GOOD_KS,
    JITTER_KS,
    analyze_keypoint_errors,
    classify_keypoints,
    distance_at_similarity,
    keypoint_similarity,
    visible_count_bins,
)
from posekit.skeletons import get_skeleton

SK = get_skeleton("coco17")
SIG = SK.oks_sigmas()
FLIP = SK.flip_index


def _person(cx: float, scale: float = 100.0) -> np.ndarray:
    """A frontal stick person of height ~ 2 * scale centred at x = cx: left joints at +x, right at -x."""
    rng = np.random.default_rng(int(cx))
    base = np.array([[0, -90], [8, -95], [-8, -95], [16, -90], [-16, -90], [30, -60], [-30, -60],
                     [40, -20], [-40, -20], [45, 15], [-45, 15], [20, 20], [-20, 20], [22, 60], [-22, 60],
                     [24, 95], [-24, 95]], dtype=np.float64) * scale / 100
    kp = np.concatenate([base + [cx, 200] + rng.normal(0, 0.5, base.shape), np.full((17, 1), 2.0)], 1)
    return kp


AREA = 100.0 * 200.0


def _at_similarity(gt_joint: np.ndarray, ks: float, sigma: float, area: float = AREA) -> np.ndarray:
    return gt_joint[:2] + [float(distance_at_similarity(ks, area, [sigma])[0]), 0.0]


def test_keypoint_similarity_inverts_distance_at_similarity():
    gt = _person(300)
    for ks in (0.3, 0.5, 0.85, 0.99):
        pred = np.stack([_at_similarity(gt[j], ks, SIG[j]) for j in range(17)])
        assert np.allclose(keypoint_similarity(pred, gt, AREA, SIG), ks)


def test_flipped_left_right_pose_is_inversion_and_the_nose_stays_good():
    gt = _person(300)
    types, _, nearest = classify_keypoints(gt[FLIP], gt, AREA, SIG, FLIP)
    assert types[0] == "good"
    assert list(types[1:]) == ["inversion"] * 16
    assert [tuple(n) for n in nearest[1:]] == [(0, int(FLIP[j])) for j in range(1, 17)]


def test_keypoint_on_the_neighbouring_person_is_swap():
    me, neighbour = _person(300), _person(420)
    pred = me.copy()
    pred[9, :2] = neighbour[9, :2]  # left wrist put on the neighbour's left wrist
    pred[10, :2] = neighbour[9, :2] + [1.0, 0.0]  # right wrist on the neighbour's left one (a mirrored swap)
    types, _, nearest = classify_keypoints(pred, me, AREA, SIG, FLIP, others=[(neighbour, AREA)])
    assert types[9] == "swap" and tuple(nearest[9]) == (1, 9)
    assert types[10] == "swap" and tuple(nearest[10]) == (1, 9)
    assert set(np.delete(types, [9, 10])) == {"good"}


@pytest.mark.parametrize("ks, expected", [(0.99, "good"), (GOOD_KS + 1e-6, "good"), (GOOD_KS - 1e-6, "jitter"),
                                          (0.7, "jitter"), (JITTER_KS + 1e-6, "jitter"),
                                          (JITTER_KS - 1e-6, "miss"), (0.01, "miss")])
def test_similarity_thresholds_are_the_papers(ks, expected):
    gt = _person(300)
    pred = gt.copy()
    pred[13, :2] = _at_similarity(gt[13], ks, SIG[13])  # left knee, moved outward (away from the right one)
    types, best, _ = classify_keypoints(pred, gt, AREA, SIG, FLIP)
    assert types[13] == expected
    assert best[13] == pytest.approx(ks, abs=1e-9)


def test_far_off_keypoint_is_miss_and_unlabelled_joints_have_no_type():
    gt = _person(300)
    gt[4, 2] = 0  # right ear not labelled
    pred = gt.copy()
    pred[15, :2] += [500.0, 500.0]
    types, _, _ = classify_keypoints(pred, gt, AREA, SIG, FLIP)
    assert types[15] == "miss" and types[4] is None


def test_visible_count_bins_cover_every_count_once():
    assert visible_count_bins(17) == [(1, 5), (6, 10), (11, 15), (16, 17)]
    for k in (1, 5, 14, 68):
        covered = [c for lo, hi in visible_count_bins(k) for c in range(lo, hi + 1)]
        assert covered == list(range(1, k + 1))


def _two_person_gt(people) -> dict:
    anns = [{"id": i + 1, "image_id": 1, "category_id": 1, "keypoints": p.ravel().tolist(), "area": AREA,
             "bbox": [float(p[:, 0].min()), float(p[:, 1].min()), 100.0, 200.0], "iscrowd": 0,
             "num_keypoints": 17} for i, p in enumerate(people)]
    return {"images": [{"id": 1, "width": 800, "height": 400}], "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": list(SK.keypoints)}]}


def test_fixing_each_error_type_regains_the_ap_it_cost():
    """One person perfect, one with inverted arms: AP < 1, fixing inversions brings it back to 1;
    fixing the absent types gains nothing."""
    a, b = _person(200), _person(500)
    pred_b = b.copy()
    for j in (5, 7, 9):  # left shoulder, elbow, wrist swapped with the right ones
        pred_b[[j, FLIP[j]], :2] = b[[FLIP[j], j], :2]
    dets = [{"image_id": 1, "keypoints": a.ravel().tolist(), "score": 0.9},
            {"image_id": 1, "keypoints": pred_b.ravel().tolist(), "score": 0.8}]
    out = analyze_keypoint_errors(_two_person_gt([a, b]), dets, sigmas=SIG, flip_index=FLIP)
    assert out["matched"] == 2
    assert sum(out["counts"]["inversion"]) == 6 and sum(out["counts"]["good"]) == 34 - 6
    assert out["ap"]["AP"] < 0.9
    assert out["ap_fixed"]["inversion"]["AP"] == pytest.approx(1.0)
    assert out["ap_gain"]["inversion"] > 0.1
    assert out["ap_gain"]["jitter"] == out["ap_gain"]["swap"] == out["ap_gain"]["miss"] == 0.0
    assert out["ap_cumulative"][-1][1] == pytest.approx(1.0)
    json.dumps(out)  # JSON-ready for report.json


def test_missing_flip_index_is_one_clear_error():
    a = _person(200)
    with pytest.raises(ValueError, match="flip_index"):
        analyze_keypoint_errors(_two_person_gt([a]), [], sigmas=SIG)


# --- the shared COCO samples, predictions = GT perturbed by a known mix -------------------------
@pytest.fixture(scope="module")
def coco_gt(realdata):
    path = realdata / "coco" / "test_coco.json"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return json.loads(path.read_text())


def _others_min_distance(ann, anns, j, point):
    """Distance from `point` to the nearest labelled joint of any other person in the image."""
    best = np.inf
    for o in anns:
        if o["id"] == ann["id"] or o["image_id"] != ann["image_id"]:
            continue
        kp = np.asarray(o["keypoints"], dtype=np.float64).reshape(17, 3)
        lab = kp[kp[:, 2] > 0, :2]
        if len(lab):
            best = min(best, float(np.linalg.norm(lab - point, axis=1).min()))
    return best


def test_perturbed_coco_samples_give_the_known_error_mix(coco_gt):
    """Each scored person gets one jitter (ks 0.7), one miss (far off the image) and, where the
    left and right joints are far apart, one inversion (a swapped shoulder pair); a second person's
    wrist is put on a neighbour's wrist (a swap). The taxonomy must count exactly that."""
    anns = [a for a in coco_gt["annotations"] if not a.get("iscrowd")]
    scored = [a for a in anns if a["num_keypoints"] > 0]
    expected = {t: 0 for t in ("good", "jitter", "inversion", "swap", "miss")}
    dets, swap_done = [], False
    for n, ann in enumerate(scored):
        kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
        pred = kp.copy()
        labelled = set(np.flatnonzero(kp[:, 2] > 0).tolist())
        touched = set()
        # inversion: both shoulders labelled and far apart compared with the OKS scale
        left, right = 5, 6
        if {left, right} <= labelled:
            ks_cross = keypoint_similarity(kp[[right, left]], kp[[left, right]], ann["area"], SIG[[left, right]])
            if np.all(ks_cross < 0.2):
                pred[[left, right], :2] = kp[[right, left], :2]
                touched |= {left, right}
                expected["inversion"] += 2
        # jitter at ks 0.7 on the first free labelled joint, checked to be nowhere near anybody else
        for j in sorted(labelled - touched):
            point = _at_similarity(kp[j], 0.7, SIG[j], ann["area"])
            mirror_d = np.linalg.norm(kp[FLIP[j], :2] - point) if FLIP[j] != j and kp[FLIP[j], 2] > 0 else np.inf
            if _others_min_distance(ann, anns, j, point) > 60 and mirror_d > 60:
                pred[j, :2] = point
                touched.add(j)
                expected["jitter"] += 1
                break
        # a miss: the last free labelled joint, far off the image
        j = max(labelled - touched)
        pred[j, :2] = [-5000.0, -5000.0]
        touched.add(j)
        expected["miss"] += 1
        # a swap: a wrist of this person onto another person's wrist (once)
        if not swap_done:
            for o in anns:
                okp = np.asarray(o["keypoints"], dtype=np.float64).reshape(17, 3)
                if o["image_id"] == ann["image_id"] and o["id"] != ann["id"] and okp[9, 2] > 0:
                    w = next((w for w in (9, 10) if w in labelled - touched), None)
                    if w is not None and np.linalg.norm(okp[9, :2] - kp[w, :2]) > 80:
                        pred[w, :2] = okp[9, :2]
                        touched.add(w)
                        expected["swap"] += 1
                        swap_done = True
                        break
        expected["good"] += len(labelled - touched)
        dets.append({"image_id": ann["image_id"], "keypoints": pred.ravel().tolist(), "score": 1.0 - 0.01 * n})
    assert swap_done and expected["inversion"] > 0
    out = analyze_keypoint_errors(coco_gt, dets, sigmas=SIG, flip_index=FLIP)
    assert out["matched"] == len(scored)
    got = {t: sum(c) for t, c in out["counts"].items()}
    assert got == expected
    # each matched detection is matched to the person it was made from
    made_from = {n: a["id"] for n, a in enumerate(scored)}
    assert all(d["gt_id"] == made_from[d["result"]] for d in out["detections"])
    # fixing an error never costs AP, fixing them in turn never goes down, and every present type gains
    assert all(gain >= -1e-12 for gain in out["ap_gain"].values())
    steps = [out["ap"]["AP"]] + [ap for _, ap in out["ap_cumulative"]]
    assert all(b >= a - 1e-12 for a, b in zip(steps, steps[1:])) and steps[-1] > steps[0]
    assert all(out["ap_gain"][t] > 0 for t in ("inversion", "miss"))
    assert sum(p["people"] for p in out["ap_by_visible"].values()) == len(scored)
