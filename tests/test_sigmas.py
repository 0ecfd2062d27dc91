"""`posekit data sigmas`: OKS sigmas from repeated annotations (issue 23).

Annotators are simulated with known per-keypoint noise (each annotation = truth + isotropic
Gaussian noise with E|d|^2 = sigma^2 x area, COCO's definition); the estimate must recover
those sigmas inside its own 95 % interval, and files without repeats must say what is needed.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from posekit.cli import main
from posekit.engine.data_tools import sigmas_from_files
from posekit.metrics.sigmas import estimate_sigmas

TRUE = np.array([0.026, 0.035, 0.079, 0.107, 0.062])
NAMES = ["nose", "left_eye", "right_eye", "left_hip", "right_hip"]


def simulate(n_people=400, annotators=2, seed=0):
    """(truth, [annotations per annotator]) with the noise COCO's sigma defines."""
    rng = np.random.default_rng(seed)
    truth, boxes, areas = [], [], []
    for _ in range(n_people):
        side = rng.uniform(40, 200)
        x0, y0 = rng.uniform(0, 400, size=2)
        truth.append(np.stack([x0 + rng.uniform(0, side, len(TRUE)), y0 + rng.uniform(0, side, len(TRUE))], -1))
        boxes.append([x0, y0, side, side])
        areas.append(side * side)
    truth = np.array(truth)
    per_axis = TRUE / np.sqrt(2)  # E|d|^2 = 2 per_axis^2 s^2 = sigma^2 s^2
    out = []
    for _ in range(annotators):
        noise = rng.normal(size=truth.shape) * per_axis[None, :, None] * np.sqrt(areas)[:, None, None]
        out.append(truth + noise)
    return truth, out, np.array(boxes), np.array(areas)


def coco_file(path, points, boxes, areas):
    images = [{"id": i + 1, "file_name": f"{i:05d}.jpg", "width": 640, "height": 640} for i in range(len(points))]
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": list(map(float, b)), "area": float(a),
             "iscrowd": 0, "num_keypoints": len(TRUE),
             "keypoints": np.concatenate([p, np.full((len(TRUE), 1), 2.0)], 1).ravel().tolist()}
            for i, (p, b, a) in enumerate(zip(points, boxes, areas))]
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "person", "keypoints": NAMES}]}))
    return path


def test_simulated_annotators_recover_the_known_sigmas_within_the_interval():
    _, (a, b, c), _, areas = simulate(annotators=3)
    groups = [np.stack([np.concatenate([x[i], np.full((len(TRUE), 1), 2.0)], 1) for x in (a, b, c)])
              for i in range(len(areas))]
    est = estimate_sigmas(groups, areas)
    assert np.all(est.low <= TRUE) and np.all(TRUE <= est.high), (est.low, est.sigmas, est.high)
    np.testing.assert_allclose(est.sigmas, TRUE, rtol=0.1)
    assert est.people.tolist() == [400] * len(TRUE) and est.pairs.tolist() == [1200] * len(TRUE)


def test_two_annotator_files_give_the_sigmas_and_a_yaml_line_to_paste(tmp_path, capsys):
    _, (a, b), boxes, areas = simulate()
    fa = coco_file(tmp_path / "a.json", a, boxes, areas)
    fb = coco_file(tmp_path / "b.json", b, boxes, areas)
    res = sigmas_from_files([fa, fb])
    np.testing.assert_allclose(res["sigmas"], TRUE, rtol=0.12)
    assert res["pairs"] == [400] * len(TRUE)
    assert main(["data", "sigmas", str(fa), str(fb), "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("sigmas: ["))
    import yaml
    pasted = yaml.safe_load(line)["sigmas"]
    np.testing.assert_allclose(pasted, res["sigmas"], atol=5e-5)
    assert json.loads((tmp_path / "s.json").read_text())["keypoints"] == NAMES


def test_unlabelled_points_are_left_out_of_the_pairs():
    _, (a, b), _, areas = simulate(n_people=50)
    groups = []
    for i in range(50):
        g = np.stack([np.concatenate([x[i], np.full((len(TRUE), 1), 2.0)], 1) for x in (a, b)])
        g[1, 0, 2] = 0 if i % 2 else 2  # the second annotator skipped the nose on odd people
        groups.append(g)
    est = estimate_sigmas(groups, areas)
    assert est.pairs[0] == 25 and est.pairs[1] == 50


def test_a_file_without_repeats_says_what_is_needed(tmp_path, capsys):
    truth, _, boxes, areas = simulate(n_people=5)
    f = coco_file(tmp_path / "single.json", truth, boxes, areas)
    assert main(["data", "sigmas", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no person is annotated more than once" in err and "a.json b.json" in err


def test_repeats_inside_one_file_are_matched_by_box_overlap(tmp_path):
    _, (a, b), boxes, areas = simulate(n_people=200)
    f = coco_file(tmp_path / "both.json", np.concatenate([a, b]), np.concatenate([boxes, boxes]),
                  np.concatenate([areas, areas]))
    data = json.loads(f.read_text())
    for ann in data["annotations"][200:]:  # the repeats annotate the same images
        ann["image_id"] -= 200
    data["images"] = data["images"][:200]
    f.write_text(json.dumps(data))
    res = sigmas_from_files([f])
    assert res["repeated_people"] == 200
    np.testing.assert_allclose(res["sigmas"], TRUE, rtol=0.15)


def test_too_few_repeated_people_for_a_keypoint_gives_no_number():
    g = np.zeros((2, 2, 3))
    g[:, :, :2] = [[1, 1], [2, 2]]
    g[:, 0, 2] = 2
    est = estimate_sigmas([g], [100.0])
    assert np.isnan(est.sigmas).all()  # one person is not enough for any keypoint
    with pytest.raises(ValueError, match="area must be positive"):
        estimate_sigmas([g], [0.0])
