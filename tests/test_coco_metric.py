"""COCO OKS AP: hand-computed OKS on tiny cases, edge cases, and agreement with pycocotools run directly."""
import contextlib
import io

import numpy as np
import pytest

from posekit.data.sample import Sample
from posekit.metrics.coco import SUMMARY_NAMES, build_coco_gt, coco_keypoint_eval, estimate_sigmas, oks
from posekit.skeletons import Skeleton, get_skeleton

# pycocotools 2.0.x calls np.array(copy=False) on decode; harmless under numpy 2
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10
AREA = 100.0 * 100.0  # > 96^2: a "large" person


def _person(k=17, seed=0):
    rng = np.random.default_rng(seed)
    kp = np.zeros((k, 3))
    kp[:, :2] = rng.uniform(100, 200, size=(k, 2))
    kp[:, 2] = 2
    return kp


def _gt(kps, *, area=AREA, names=None):
    k = kps[0].shape[0]
    anns = [{"id": i + 1, "image_id": 1, "category_id": 1, "keypoints": kp.ravel().tolist(), "num_keypoints": k,
             "area": area, "bbox": [90, 90, 120, 120], "iscrowd": 0} for i, kp in enumerate(kps)]
    return {"images": [{"id": 1, "width": 640, "height": 480, "file_name": "a.jpg"}], "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": names or [f"k{i}" for i in range(k)]}]}


def _res(kp, score=1.0, image_id=1):
    return {"image_id": image_id, "category_id": 1, "keypoints": np.asarray(kp).ravel().tolist(), "score": score}


def test_perfect_detection():
    gt = _person()
    stats = coco_keypoint_eval(_gt([gt]), [_res(gt)])
    assert tuple(stats) == SUMMARY_NAMES
    assert stats["AP"] == pytest.approx(1.0) and stats["AR"] == pytest.approx(1.0)
    assert stats["AP_L"] == pytest.approx(1.0)
    assert stats["AP_M"] == -1.0  # no medium GT: pycocotools' "undefined"


@pytest.mark.parametrize("shift", [3.0, 7.0, 12.0])
def test_shifted_detection_hand_oks(shift):
    gt = _person()
    det = gt.copy()
    det[:, 0] += shift
    # OKS by hand: every keypoint is labelled and d_i = shift
    k = 2 * COCO_SIGMAS
    hand = np.mean(np.exp(-shift ** 2 / (2 * AREA * k ** 2)))
    assert oks(det, gt, AREA, COCO_SIGMAS) == pytest.approx(hand, rel=1e-9)
    thresholds = np.linspace(0.5, 0.95, 10)
    expected_ap = np.mean(hand >= thresholds)  # one GT, one detection: precision 1 or 0 per threshold
    stats = coco_keypoint_eval(_gt([gt]), [_res(det)])
    assert stats["AP"] == pytest.approx(expected_ap)
    assert stats["AP50"] == pytest.approx(float(hand >= 0.5))
    assert stats["AP75"] == pytest.approx(float(hand >= 0.75))
    assert stats["AR"] == pytest.approx(expected_ap)
    assert 0.0 < expected_ap < 1.0  # every case falls between two thresholds


def test_unlabelled_keypoints_do_not_count():
    gt = _person()
    gt[10:, 2] = 0
    det = gt.copy()
    det[10:, :2] += 500.0  # way off, but only where the GT has no label
    assert coco_keypoint_eval(_gt([gt]), [_res(det)])["AP"] == pytest.approx(1.0)


def test_two_people_false_positive_ordering():
    a, b = _person(seed=1), _person(seed=2)
    b[:, :2] += 300
    far = a.copy()
    far[:, :2] += 1000
    # a confident miss ranked above two hits: precision at recall 1 is 2/3
    stats = coco_keypoint_eval(_gt([a, b]), [_res(far, 0.9), _res(a, 0.8), _res(b, 0.7)])
    assert stats["AR"] == pytest.approx(1.0)
    assert 0.6 < stats["AP"] < 0.7


def test_zero_results_and_bad_input():
    gt = _gt([_person()])
    stats = coco_keypoint_eval(gt, [])
    assert all(v == 0.0 for v in stats.values())
    with pytest.raises(ValueError, match="not in the ground truth"):
        coco_keypoint_eval(gt, [_res(_person(), image_id=99)])
    with pytest.raises(ValueError, match="51 finite numbers"):
        coco_keypoint_eval(gt, [{"image_id": 1, "keypoints": [1, 2, 3], "score": 1.0}])
    with pytest.raises(ValueError, match="score"):
        coco_keypoint_eval(gt, [{"image_id": 1, "keypoints": _person().ravel().tolist()}])
    with pytest.raises(FileNotFoundError):
        coco_keypoint_eval("/nonexistent/gt.json", [])


def test_results_are_not_mutated_and_gt_dict_untouched():
    gt = _gt([_person()])
    gt["annotations"][0].pop("num_keypoints")  # hand-made GT: filled in on a copy
    res = [_res(_person())]
    before = [dict(r) for r in res]
    assert coco_keypoint_eval(gt, res)["AP"] == pytest.approx(1.0)
    assert res == before and "num_keypoints" not in gt["annotations"][0]


def test_custom_keypoint_count_uses_skeleton_sigmas():
    sk = Skeleton(name="five_test", keypoints=("a", "b", "c", "d", "e"), sigmas=(.05, .05, .05, .05, .05))
    gt = _person(5)
    det = gt.copy()
    det[:, 1] += 6.0
    hand = np.exp(-36.0 / (2 * AREA * (2 * 0.05) ** 2))
    stats = coco_keypoint_eval(_gt([gt]), [_res(det)], sigmas=sk)
    assert stats["AP"] == pytest.approx(np.mean(hand >= np.linspace(0.5, 0.95, 10)))
    with pytest.raises(ValueError, match="pass sigmas"):
        coco_keypoint_eval(_gt([gt]), [_res(det)])
    with pytest.raises(ValueError, match="5 positive numbers"):
        coco_keypoint_eval(_gt([gt]), [_res(det)], sigmas=[0.1] * 4)


def test_build_coco_gt_from_samples():
    kps = np.stack([_person(seed=3), _person(seed=4)])
    kps[1, :, :2] += 250
    s1 = Sample(keypoints=kps, boxes=[[90, 90, 120, 120], [340, 340, 120, 120]], meta={"image_id": 11})
    s2 = Sample(keypoints=_person(seed=5)[None], meta={"image_id": 12, "areas": [5000.0]})
    gt = build_coco_gt([s1, s2], skeleton="coco17")
    assert [a["area"] for a in gt["annotations"]] == [14400.0, 14400.0, 5000.0]
    assert gt["categories"][0]["keypoints"] == list(get_skeleton("coco17").keypoints)
    res = [_res(kps[0], image_id=11), _res(kps[1], image_id=11), _res(s2.keypoints[0], image_id=12)]
    assert coco_keypoint_eval(gt, res)["AP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="OKS scale is unknown"):
        build_coco_gt([Sample(keypoints=_person()[None])], skeleton="coco17")
    with pytest.raises(ValueError, match="17 keypoints"):
        build_coco_gt([Sample(keypoints=_person(5)[None], meta={"areas": [1.0]})], skeleton="coco17")


def test_agrees_with_pycocotools_on_real_file(realdata):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    path = realdata / "coco" / "test_coco.json"
    if not path.is_file():
        pytest.skip("COCO sample absent")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    rng = np.random.default_rng(0)
    results = []
    for ann in coco.dataset["annotations"]:
        if ann["num_keypoints"] == 0:
            continue
        kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
        for _ in range(2):  # a good and a noisy copy of each person
            noisy = kp.copy()
            noisy[:, :2] += rng.normal(0, rng.uniform(1, 15), size=(17, 2))
            noisy[:, 2] = 1
            results.append({"image_id": ann["image_id"], "category_id": 1, "keypoints": noisy.ravel().tolist(),
                            "score": float(rng.uniform())})
    ours = coco_keypoint_eval(path, results)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco, coco.loadRes([dict(r) for r in results]), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    np.testing.assert_allclose([ours[n] for n in SUMMARY_NAMES], ev.stats, atol=1e-12)
    assert 0.2 < ours["AP"] < 0.99
    # the same GT rebuilt from our reader's Samples gives the same numbers
    from posekit.data.formats.coco import load_coco_keypoints
    samples = load_coco_keypoints(path, realdata / "coco" / "images")
    rebuilt = coco_keypoint_eval(build_coco_gt(samples, skeleton="coco17"), results)
    np.testing.assert_allclose([rebuilt[n] for n in SUMMARY_NAMES], ev.stats, atol=1e-12)


def test_estimate_sigmas_recovers_annotator_noise():
    rng = np.random.default_rng(0)
    n, r, k = 400, 5, 3
    areas = rng.uniform(2000, 20000, size=n)
    true = rng.uniform(0, 500, size=(n, k, 2))
    c = np.array([0.02, 0.05, 0.08])  # per-coordinate noise std / sqrt(area)
    ann = np.zeros((r, n, k, 3))
    ann[..., :2] = true + rng.normal(size=(r, n, k, 2)) * c[None, None, :, None] * np.sqrt(areas)[None, :, None, None]
    ann[..., 2] = 2
    # sigma^2 = E[d^2 / s^2] with d the 2-D distance: 2 c^2
    np.testing.assert_allclose(estimate_sigmas(ann, areas), np.sqrt(2) * c, rtol=0.05)
