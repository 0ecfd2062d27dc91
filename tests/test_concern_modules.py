"""The concerns split out of the keypoints family and posekit.viz: each lives in its layer, the old
import paths keep working, and the shared COCO helper scores only the images evaluated."""
import numpy as np
import pytest

from posekit.config import ConfigError
from posekit.data.sample import Sample
from posekit.metrics.coco import build_coco_gt, coco_keypoint_eval, coco_keypoint_eval_on
from posekit.skeletons.from_config import skeleton_from_config, skeleton_to_config


def test_old_import_paths_give_the_moved_objects():
    import posekit.viz as viz
    from posekit.data import detections
    from posekit.families import keypoints
    from posekit.metrics import topdown
    from posekit.viz import overlay, panels

    assert keypoints.detection_entries is detections.detection_entries
    assert keypoints.person_entries is detections.person_entries
    assert keypoints.oks_nms is topdown.oks_nms
    assert viz.draw_skeleton is overlay.draw_skeleton and viz.side_by_side is panels.side_by_side


def test_bad_record_error_is_one_class_for_io_and_sample():
    from posekit.data.errors import BadRecordError
    from posekit.data.io import BadRecordError as from_io
    from posekit.data.sample import BadRecordError as from_sample
    assert from_io is from_sample is BadRecordError and issubclass(BadRecordError, ValueError)


def test_skeleton_config_errors_name_the_key_and_take_the_callers_error_type():
    with pytest.raises(ConfigError, match=r"^data\.skeleton: "):
        skeleton_to_config("no_such_skeleton_xyz", error=ConfigError)
    with pytest.raises(ValueError, match=r"^model\.skeleton"):
        skeleton_to_config(42, key="model.skeleton")
    stored = skeleton_to_config("coco17")
    assert skeleton_from_config(stored).name == "coco17" and skeleton_to_config(skeleton_from_config(stored)) == stored


def _gt_two_images():
    rng = np.random.default_rng(0)
    samples = []
    for i in range(2):
        kp = np.concatenate([rng.uniform(20, 80, (1, 17, 2)), np.full((1, 17, 1), 2.0)], axis=-1)
        samples.append(Sample(keypoints=kp, boxes=[[10, 10, 80, 80]], meta={"image_id": i + 1}))
    return samples


def test_ap_on_evaluated_images_ignores_the_people_of_other_images():
    samples = _gt_two_images()
    gt = build_coco_gt(samples, skeleton="coco17")
    exact = [{"image_id": 1, "keypoints": samples[0].keypoints[0].ravel().tolist(), "score": 1.0}]
    only_first = coco_keypoint_eval_on(gt, exact, sigmas="coco17", image_ids=[1])
    assert only_first["AP"] == pytest.approx(1.0) and only_first["images"] == 1 and only_first["people"] == 1
    everything = coco_keypoint_eval_on(gt, exact, sigmas="coco17")  # image 2's person is missed
    assert everything["images"] == 2 and everything["people"] == 2
    assert everything["AP"] == pytest.approx(coco_keypoint_eval(gt, exact, sigmas="coco17")["AP"])
    assert everything["AP"] < 1.0
