"""The one Results type: validation, plot, COCO dicts, save."""
import json

import numpy as np
import pytest

from posekit.results import Results


def _two_people():
    kp = np.zeros((2, 17, 2))
    kp[0, :, 0], kp[0, :, 1] = np.linspace(10, 90, 17), 40
    kp[1] = kp[0] + [0, 30]
    scores = np.ones((2, 17))
    scores[1, 3] = 0.0
    return Results(kp, scores, "coco17", image=np.zeros((100, 100, 3), np.uint8))


def test_plot_draws_on_a_copy():
    r = _two_people()
    overlay = r.plot(score_threshold=0.1)
    assert overlay.shape == (100, 100, 3) and overlay.any()
    assert not r.image.any()  # source untouched
    assert tuple(overlay[40, 10]) != (0, 0, 0)  # a joint was drawn where it should be


def test_to_coco_and_save(tmp_path):
    r = _two_people()
    dets = r.to_coco(image_id=7)
    assert len(dets) == 2 and dets[0]["image_id"] == 7 and len(dets[0]["keypoints"]) == 51
    assert dets[0]["keypoints"][:3] == [10.0, 40.0, 1.0]
    assert dets[1]["score"] == pytest.approx(16 / 17)
    r.save(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["skeleton"] == "coco17" and np.array(data["keypoints"]).shape == (2, 17, 2)
    r.save(tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 0
    with pytest.raises(ValueError, match="unsupported extension"):
        r.save(tmp_path / "r.txt")


def test_bad_shapes_are_clear():
    with pytest.raises(ValueError, match="has 16 joints, skeleton 'coco17' has 17"):
        Results(np.zeros((1, 16, 2)), np.ones((1, 16)), "coco17")
    with pytest.raises(ValueError, match="needs an image"):
        Results(np.zeros((1, 17, 2)), np.ones((1, 17)), "coco17").plot()


def test_3d_hypotheses_plot():
    hyp = np.random.default_rng(0).normal(size=(1, 5, 17, 3)) * 100
    r = Results(hyp[:, 0], np.ones((1, 17)), "h36m17", hypotheses=hyp, hypothesis_weights=np.full((1, 5), 0.2),
                keypoints_2d=np.random.rand(1, 17, 2) * 100)
    img = r.plot()
    assert img.ndim == 3 and img.shape[2] == 3
    with pytest.raises(ValueError, match="2-D"):
        r.to_coco()


def test_plot_draws_the_box_when_known_threshold_and_labels():
    kp = np.zeros((1, 17, 2))
    kp[0, :, 0], kp[0, :, 1] = np.linspace(60, 140, 17), 100
    scores = np.ones((1, 17))
    scores[0, 0] = 0.05  # the nose, at (60, 100), is unsure
    image = np.zeros((200, 200, 3), np.uint8)
    r = Results(kp, scores, "coco17", boxes=np.array([[40, 60, 120, 80]]), image=image)
    with_box = r.plot(score_threshold=0.1)
    assert with_box[60, 100].any() and with_box[140, 100].any()  # top and bottom edges of the box
    assert not r.plot(boxes=False, score_threshold=0.1)[60, 100].any()
    assert not with_box[100, 60].any()  # the nose is below the threshold: not drawn
    assert r.plot(score_threshold=0.01)[100, 60].any()
    above = (slice(75, 94), slice(62, 150))  # where names go, above the row of joints
    assert r.plot(labels=True, boxes=False)[above].any() and not r.plot(boxes=False)[above].any()


def test_save_passes_plot_options(tmp_path):
    r = _two_people()
    r.save(tmp_path / "thr.png", score_threshold=2.0)  # nothing clears it: a blank picture
    from posekit.data.io import read_image
    assert not read_image(tmp_path / "thr.png").any()


def test_json_is_strict_a_missing_joint_is_null(tmp_path):
    """A joint that was not found (NaN) is written as null: no NaN token, which JSON readers refuse."""
    import json

    import numpy as np

    from posekit.results import Results
    kp = np.zeros((1, 16, 2))
    kp[0, 3] = np.nan
    res = Results(keypoints=kp, scores=np.full((1, 16), 0.5), skeleton="mpii16", meta={"err": float("inf")})
    text = res.save(tmp_path / "r.json").read_text()

    def refuse(token):
        raise ValueError(f"non-strict JSON token {token}")
    data = json.loads(text, parse_constant=refuse)
    assert data["keypoints"][0][3] == [None, None] and data["meta"]["err"] is None
