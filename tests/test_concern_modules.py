"""The concerns split out of the keypoints family and posekit.viz: each lives in its layer, the old
import paths keep working, and the shared COCO helper scores only the images evaluated; the heatmap
geometry, flip tests, model keypoint count, OKS sigmas and detections-file checks the keypoints,
hourglass and OpenPose families now share."""
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


# --- data.formats.registry: a data section's files, read in any format and checked against its skeleton
def _pose_json_dataset(root, k: int = 5):
    """root/people.json (two records of one person with k labelled points) + root/images/."""
    import json

    from posekit.data.io import write_image
    (root / "images").mkdir()
    records = []
    for i in range(2):
        write_image(root / "images" / f"{i}.png", np.zeros((32, 32, 3), np.uint8))
        records.append({"image": f"{i}.png", "keypoints": [[4 + 3 * j, 6 + 2 * j, 2] for j in range(k)]})
    (root / "people.json").write_text(json.dumps(records))
    return root


def test_load_split_reads_relative_paths_under_root_and_refuses_another_keypoint_count(tmp_path):
    from posekit.data.formats.registry import load_samples, load_split
    from posekit.skeletons import get_skeleton
    root = _pose_json_dataset(tmp_path)
    samples = load_split("pose_json", "people.json", "images", get_skeleton("figure5"), split="val", root=root)
    direct = load_samples("pose_json", root / "people.json", root / "images")
    assert len(samples) == len(direct) == 2 and samples.skipped == [] and samples.keypoint_names == ()
    assert all(np.array_equal(a.keypoints, b.keypoints) and a.keypoints.shape == (1, 5, 3)
               for a, b in zip(samples, direct))
    with pytest.raises(ConfigError, match=r"^data\.val_ann: .*people\.json has 5 keypoints per person, "
                                          r"data\.skeleton 'coco17' has 17$"):
        load_split("pose_json", "people.json", "images", get_skeleton("coco17"), split="val", root=root)


def test_load_split_names_a_missing_file_or_folder_by_its_config_key(tmp_path):
    from posekit.data.formats.registry import load_split
    from posekit.skeletons import get_skeleton
    root, figure5 = _pose_json_dataset(tmp_path), get_skeleton("figure5")
    with pytest.raises(FileNotFoundError, match=r"^data\.train_ann: annotation file not found: .*nope\.json$"):
        load_split("pose_json", "nope.json", "images", figure5, root=root)
    with pytest.raises(FileNotFoundError, match=r"^data\.val_images: image folder not found: .*missing$"):
        load_split("coco", "people.json", "missing", figure5, split="val", root=root)
    with pytest.raises(ValueError, match=r"data\.format='voc'; valid: coco, yolo"):
        load_split("voc", "people.json", "images", figure5, root=root)


def test_load_split_warns_when_the_file_names_the_keypoints_otherwise(tmp_path):
    import json

    from posekit.data.formats.registry import load_split
    from posekit.data.io import write_image
    from posekit.skeletons import get_skeleton
    (tmp_path / "images").mkdir()
    write_image(tmp_path / "images" / "0.png", np.zeros((32, 32, 3), np.uint8))
    names = ["a", "b", "c", "d", "e"]
    coco = {"images": [{"id": 1, "file_name": "0.png", "width": 32, "height": 32}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 5,
                             "bbox": [2, 2, 20, 20], "area": 400,
                             "keypoints": [v for j in range(5) for v in (4 + 3 * j, 6 + 2 * j, 2)]}],
            "categories": [{"id": 1, "name": "thing", "keypoints": names, "skeleton": []}]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    with pytest.warns(RuntimeWarning, match=r"ann\.json: keypoint names \['a', 'b', 'c', 'd', 'e'\] differ from "
                                            r"data\.skeleton 'figure5' .*the order is taken as given"):
        samples = load_split("coco", "ann.json", "images", get_skeleton("figure5"), root=tmp_path)
    assert samples.keypoint_names == tuple(names) and samples[0].keypoints.shape == (1, 5, 3)


def test_skeleton_setting_takes_auto_from_the_files_and_a_yaml_from_root(tmp_path):
    from posekit.data.formats.registry import skeleton_setting
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nkpt_shape: [3, 3]\n"
                                        "flip_idx: [0, 2, 1]\nnames: {0: face}\n"
                                        "kpt_names: {0: [nose, left_eye, right_eye]}\n")
    auto = skeleton_setting("auto", "yolo", "data.yaml", root=tmp_path)  # train_ann relative to root
    assert auto["keypoints"] == ["nose", "left_eye", "right_eye"] and [list(p) for p in auto["flip_pairs"]] == [[1, 2]]
    _pose_json_dataset(tmp_path)
    with pytest.raises(ConfigError, match=r"^data\.skeleton=auto needs files that declare a skeleton .*this "
                                          r"pose_json file declares none"):
        skeleton_setting("auto", "pose_json", "people.json", root=tmp_path)
    (tmp_path / "sk.yaml").write_text("name: tri\nkeypoints: [nose, left_eye, right_eye]\nflip_pairs: [[1, 2]]\n")
    assert skeleton_setting("sk.yaml", "coco", None, root=tmp_path)["name"] == "tri"  # not in the cwd: under root
    with pytest.raises(ConfigError, match=r"^data\.skeleton: skeleton file not found: other\.yaml"):
        skeleton_setting("other.yaml", "coco", None, root=tmp_path)
    assert skeleton_setting("coco17", "coco", None) == skeleton_to_config("coco17")


# --- viz.comparison: "ground truth | prediction" of a whole image ---------------------------------------
def test_truth_and_prediction_draws_each_side_on_the_upscaled_image_at_the_scaled_points():
    from posekit.skeletons import Skeleton
    from posekit.viz.comparison import truth_and_prediction
    skeleton = Skeleton("tri", ("a", "b", "c"), (), ((0, 1),))
    image = np.zeros((96, 64, 3), np.uint8)
    truth = np.array([[[10, 20, 2], [12, 22, 2], [50, 80, 0]]], float)  # c unlabelled
    pred = np.array([[[40, 60], [42, 62], [20, 80]]], float)
    picture = truth_and_prediction(image, truth, pred, np.array([[0.9, 0.9, 0.01]]), skeleton,
                                   captions=("truth", "prediction"))
    assert not image.any()  # the caller's image is drawn on a copy
    bar = picture.shape[0] - 384  # 96 px upscaled x4 to 384 under a caption bar; 256 px wide panels, 6 px gap
    assert bar > 0 and picture.shape[1] == 2 * 256 + 6
    left, right = picture[bar:, :256], picture[bar:, 262:]

    def at(panel, x, y):  # a point in image pixels -> its pixel in the x4 panel (pixel centres kept)
        return panel[int(round((y + 0.5) * 4 - 0.5)), int(round((x + 0.5) * 4 - 0.5))]
    assert at(left, 10, 20).any() and not at(left, 50, 80).any()  # a labelled joint drawn, the unlabelled not
    assert at(right, 40, 60).any() and not at(right, 20, 80).any()  # scores <= 0.05 are not drawn
    assert not at(left, 40, 60).any() and not at(right, 10, 20).any()  # each side draws only its own people


# --- the keypoints family's choices, declared on its config sections (posekit.config.option) ---------
@pytest.mark.parametrize("overrides, message", [
    (["data.dataset=voc"], "config key 'data.dataset' must be one of coco | pose_json | synthetic, got 'voc'"),
    (["data.codec=maps"], "config key 'data.codec' must be one of auto | heatmap | regression, got 'maps'"),
    (["eval.refine=udp"], "config key 'eval.refine' must be one of none | shift | dark, got 'udp'"),
    (["loss.kind=l1"], "config key 'loss.kind' must be one of mse | bce, got 'l1'"),
    (["loss.stack_reduction=max"], "config key 'loss.stack_reduction' must be one of sum | mean, got 'max'"),
    (["data.mean=[0.5,0.5]", "data.std=[0.2,0.2,0.2]"], "config key 'data.mean' must be 3 values"),
    (["data.mean=[0.5,0.5,0.5]", "data.std=[0.2,0.2,0]"], "config key 'data.std' must be 3 values, each > 0"),
])
def test_keypoints_choices_are_refused_when_the_recipe_loads(overrides, message):
    from posekit.engine.recipes import load_config
    with pytest.raises(ConfigError, match=r"keypoints_synthetic\.yaml: " + message.replace("|", r"\|")
                       .replace("[", r"\[").replace("(", r"\(")):
        load_config("keypoints_synthetic", overrides)


def test_keypoints_mean_and_std_come_together():
    from posekit.engine.recipes import load_config
    from posekit.families.base import build_task
    with pytest.raises(ConfigError, match=r"^data\.mean and data\.std must be set together"):
        build_task(load_config("keypoints_synthetic", ["data.mean=[0.5,0.5,0.5]"]))
    task = build_task(load_config("keypoints_synthetic", ["data.mean=[0.5,0.5,0.5]", "data.std=[0.2,0.2,0.2]"]))
    assert task.cfg.data.std == [0.2, 0.2, 0.2]


# --- shared by the keypoints and hourglass families: heatmap geometry, flip test, model arguments -----
def test_heatmap_grid_is_input_over_the_stride_and_refuses_another_multiple_per_axis():
    from posekit.codecs.heatmap import heatmap_grid
    assert heatmap_grid(256) == (64, 64) and heatmap_grid([192, 256]) == (48, 64)
    assert heatmap_grid(256, 32) == (32, 32) and heatmap_grid([64, 96], [16, 24]) == (16, 24)
    with pytest.raises(ValueError, match=r"^data\.input_size=256 must be a multiple of data\.heatmap_size=60 "
                                         r"\(e\.g\. data\.heatmap_size=64\)$"):
        heatmap_grid(256, 60)
    with pytest.raises(ConfigError, match=r"^data\.input_size=\[64, 96\] must be a multiple of data\.heatmap_size="
                                          r"\[16, 16\], the same multiple in width and height "
                                          r"\(e\.g\. data\.heatmap_size=\[16, 24\]\)$"):
        heatmap_grid([64, 96], [16, 16], error=ConfigError)  # x4 across, x6 down: no single stride


def test_check_heatmap_model_refuses_an_input_its_pooling_cannot_halve_and_another_heatmap_stride():
    from types import SimpleNamespace

    from posekit.codecs.heatmap import HeatmapCodec, check_heatmap_model
    hourglass = SimpleNamespace(stride=4, n_low=2)  # input divisible by 4 x 2**2 = 16
    check_heatmap_model(hourglass, HeatmapCodec((64, 96), (16, 24)), "hg")
    with pytest.raises(ValueError, match=r"^data\.input_size=72 must be divisible by 16 for hg "
                                         r"\(stride 4 x 2\*\*n_low\)$"):
        check_heatmap_model(hourglass, HeatmapCodec((72, 72), (18, 18)), "hg")
    with pytest.raises(ConfigError, match=r"^data\.heatmap_size=32 must be data\.input_size / 4 = 16 for hg$"):
        check_heatmap_model(hourglass, HeatmapCodec((64, 64), (32, 32)), "hg", error=ConfigError)
    check_heatmap_model(SimpleNamespace(), HeatmapCodec((36, 36), (9, 9)), "plain")  # stride 4, no pooling


def test_hourglass_task_keeps_its_heatmap_messages():
    from posekit.engine.recipes import load_config
    from posekit.families.base import build_task
    with pytest.raises(ValueError, match=r"^data\.input_size=256 must be a multiple of data\.heatmap_size=60"):
        build_task(load_config("mpii_synthetic", ["data.input_size=256", "data.heatmap_size=60"]))
    task = build_task(load_config("mpii_synthetic", ["data.input_size=64", "data.heatmap_size=32",
                                                     "model.args.n_stacks=1", "model.args.n_feats=16"]))
    with pytest.raises(ValueError, match=r"^data\.heatmap_size=32 must be data\.input_size / 4 = 16 for hourglass"):
        task.build_model()


def test_flip_test_heatmaps_average_the_mirrored_inputs_maps_mirrored_back_and_swapped():
    import torch

    from posekit.codecs.heatmap import flip_test_heatmaps, heatmaps_of
    calls = []

    def model(x):  # (N, 2 stacks, 3 joints, H, W): the last stack is the input's first 3 channels
        calls.append(x)
        return torch.stack([torch.zeros_like(x[:, :3]), x[:, :3]], dim=1)

    x = torch.rand(2, 3, 4, 5)
    flip_index = [0, 2, 1]  # joints 1 and 2 are a left/right pair
    got = flip_test_heatmaps(model, x, None, flip_index, flip=True)
    # the mirrored input's maps, mirrored back, are the input's own with the pair swapped
    torch.testing.assert_close(got, 0.5 * (x + x[:, flip_index]))
    assert len(calls) == 2 and torch.equal(calls[1], x.flip(-1))
    given = model(x)
    calls.clear()
    torch.testing.assert_close(flip_test_heatmaps(model, x, given, flip_index, flip=False, logits=True),
                               torch.sigmoid(x))
    assert calls == []  # outputs already computed and no flip test: the model is not run again
    assert torch.equal(heatmaps_of(x), x)  # (N, K, H, W) maps are taken as they are


def test_with_keypoint_count_sets_the_builders_argument_and_refuses_another():
    from posekit.models.registry import model_entry, with_keypoint_count
    assert with_keypoint_count("hourglass2_small", {"n_feats": 16}, 5, "figure5") == {"n_feats": 16, "num_joints": 5}
    assert with_keypoint_count("dogs_mobilenetv2", {"num_keypoints": 5}, 5, "figure5") == {"num_keypoints": 5}
    with pytest.raises(ConfigError, match=r"^model\.args\.num_joints=16 but data\.skeleton 'figure5' has 5 keypoints "
                                          r"\(leave it unset: it follows the skeleton\)$"):
        with_keypoint_count("hourglass2_small", {"num_joints": 16}, 5, "figure5")
    with pytest.raises(ConfigError, match=r"^model 'openpose_small' takes no keypoint count \(num_joints or "
                                          r"num_keypoints\)"):
        with_keypoint_count("openpose_small", {}, 5, "figure5")
    with pytest.raises(ConfigError, match=r"^model\.name: unknown model 'hourglas8'\. Did you mean"):
        model_entry("hourglas8")


def test_oks_sigmas_for_takes_the_recipes_then_the_skeletons_then_one_default_with_a_warning():
    import warnings

    from posekit.metrics.sigmas import DEFAULT_SIGMA, oks_sigmas_for
    from posekit.skeletons import Skeleton, get_skeleton
    coco, bare = get_skeleton("coco17"), Skeleton("tri", ("a", "b", "c"), (), ())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither of these warns
        assert oks_sigmas_for(bare, [0.1, 0.2, 0.3]).tolist() == [0.1, 0.2, 0.3]
        assert np.array_equal(oks_sigmas_for(coco), coco.oks_sigmas())
    with pytest.warns(RuntimeWarning, match=r"skeleton 'tri' declares no OKS sigmas: OKS AP uses "
                                            r"eval\.default_sigma=0\.07 for every keypoint"):
        assert oks_sigmas_for(bare).tolist() == [DEFAULT_SIGMA] * 3
    for wrong in ([0.1, 0.2], [0.1, 0.2, 0.0]):
        with pytest.raises(ConfigError, match=r"^eval\.sigmas must be 3 positive numbers \(one per keypoint of "
                                              r"'tri'\)"):
            oks_sigmas_for(bare, wrong, error=ConfigError)


def test_detection_entries_read_a_relative_file_under_root_and_name_the_key_of_a_missing_one(tmp_path):
    import json

    from posekit.data.detections import detection_entries
    from posekit.data.synthetic.keypoints import SyntheticFigures
    figures = SyntheticFigures(1, seed=5, image_size=128, min_people=1, max_people=1)
    box = list(figures.peek(0).boxes[0])
    (tmp_path / "dets.json").write_text(json.dumps([{"image_id": 1, "bbox": box, "score": 0.8}]))
    entries = detection_entries(figures, "dets.json", root=tmp_path, key="data.val_detections")
    assert [(e[0], e[1], e[4]) for e in entries] == [(0, 0, 0.8)]  # matched to the GT person it covers
    with pytest.raises(FileNotFoundError, match=r"^data\.val_detections: detections file not found: .*other\.json$"):
        detection_entries(figures, "other.json", root=tmp_path, key="data.val_detections")
    with pytest.raises(FileNotFoundError, match=r"^detections file not found: "):
        detection_entries(figures, tmp_path / "other.json")


def test_size_wh_reads_one_side_or_width_and_height():
    from posekit.config import size_wh
    assert size_wh(256, "data.input_size") == (256, 256) and size_wh([192, 256], "data.input_size") == (192, 256)
    with pytest.raises(ConfigError, match=r"^data\.heatmap_size must be one number S \(S x S\) or \[W, H\], got "
                                          r"\[1, 2, 3\]$"):
        size_wh([1, 2, 3], "data.heatmap_size")


def test_openpose_checks_its_files_against_cocos_17_keypoints_like_the_keypoints_family(tmp_path):
    from posekit.engine.recipes import load_config
    from posekit.families.base import build_task
    _pose_json_dataset(tmp_path)  # images/ + a 5-keypoint file
    import json
    records = json.loads((tmp_path / "people.json").read_text())
    coco = {"images": [{"id": i + 1, "file_name": r["image"], "width": 32, "height": 32} for i, r in enumerate(records)],
            "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 5,
                             "bbox": [2, 2, 20, 20], "area": 400, "keypoints": sum(r["keypoints"], [])}
                            for i, r in enumerate(records)],
            "categories": [{"id": 1, "name": "person", "keypoints": list("abcde"), "skeleton": []}]}
    (tmp_path / "five.json").write_text(json.dumps(coco))
    base = ["data.dataset=coco", f"data.root={tmp_path}", "data.train_images=images", "data.val_ann=null"]
    task = build_task(load_config("coco_synthetic", [*base, "data.train_ann=five.json"]))
    with pytest.raises(ConfigError, match=r"^data\.train_ann: .*five\.json has 5 keypoints per person, OpenPose's "
                                          r"COCO skeleton 'coco17' has 17$"):
        task.build_datasets()
    task = build_task(load_config("coco_synthetic", [*base, "data.train_ann=nothing.json"]))
    with pytest.raises(FileNotFoundError, match=r"^data\.train_ann: annotation file not found: .*nothing\.json$"):
        task.build_datasets()


def test_truth_and_prediction_scales_each_axis_as_the_upscale_rounded_it():
    """A 104 x 128 image upscales to 384 x 473 (the width rounded from 472.6): x scales by 473 / 128,
    y by 384 / 104, so a joint at x = 120 is drawn at column 445 (one scale for both would put it at
    444); the nearest upscale keeps the image's pixels as blocks."""
    from posekit.skeletons import Skeleton
    from posekit.viz.comparison import truth_and_prediction
    skeleton = Skeleton("one", ("a",), (), ())
    image = np.zeros((104, 128, 3), np.uint8)
    image[0, 0] = 200
    truth = np.array([[[120.0, 50.0, 2]]])
    picture = truth_and_prediction(image, truth, truth[..., :2], np.ones((1, 1)), skeleton, interpolation="nearest",
                                   color_by_person=None, gap=None)
    bar = picture.shape[0] - 384
    assert picture.shape[1] == 2 * 473 + 7  # gap None: max(6, 473 // 60)
    for panel in (picture[bar:, :473], picture[bar:, 480:]):
        assert (panel[:4, :4] == 200).all() and not panel[4, :4].any() and not panel[:4, 4].any()  # a 4 px block
        rows, cols = np.nonzero(panel[20:].any(-1))  # the joint's dot, below the block
        assert abs(cols.mean() - 445) < 0.3 and abs(rows.mean() + 20 - 186) < 0.3


def test_flip_test_coordinates_average_the_mirrored_inputs_joints_swapped_and_mirrored_back():
    import torch

    from posekit.codecs.regression import RegressionCodec, flip_test_coordinates
    h, w = 5, 8

    def regressor(x):  # joint k at channel k's brightest pixel, as fractions of the input (a mirror-fair model)
        flat = x.flatten(2).argmax(-1)
        return torch.stack([(flat % w).float() / w, (flat // w).float() / h], dim=-1)

    x = torch.zeros(1, 3, h, w)
    for k, (col, row) in enumerate([(1, 2), (3, 0), (6, 4)]):
        x[0, k, row, col] = 1.0
    codec, flip_index = RegressionCodec((w, h)), [0, 2, 1]
    plain = flip_test_coordinates(regressor, x, None, codec, flip_index, flip=False)
    assert plain[0].tolist() == [[1, 2], [3, 0], [6, 4]]  # crop pixels
    flipped = flip_test_coordinates(regressor, x, regressor(x), codec, flip_index, flip=True)
    torch.testing.assert_close(flipped, 0.5 * (plain + plain[:, flip_index]))  # the pair's joints swapped


def test_topdown_augment_from_a_data_section_is_newells_with_its_translate():
    from types import SimpleNamespace

    from posekit.data.topdown import TopDownAugment
    from posekit.families.keypoints import KeypointsDataConfig
    assert TopDownAugment.from_data_config(KeypointsDataConfig(translate=0.1)) == TopDownAugment(
        scale=(0.75, 1.25), rotation=30.0, rotation_prob=0.5, translate=0.1, flip_prob=0.5, channel_scale=0.2)
    no_translate = SimpleNamespace(scale_factor=0.5, rotation=10.0, rotation_prob=0.4, flip=False, color_scale=0.0)
    assert TopDownAugment.from_data_config(no_translate) == TopDownAugment(scale=(0.5, 1.5), rotation=10.0,
                                                                           rotation_prob=0.4)


def test_person_crops_give_one_entry_per_box_with_its_score_and_image():
    from posekit.data.detections import person_crops
    first, second, third = (np.full((8, 8, 3), v, np.uint8) for v in (1, 2, 3))
    crops, boxes, scores, owner = person_crops([first, second, third], [None, [[0, 0, 4, 4, 0.5], [1, 1, 2, 2, 0.9]], []])
    assert [c[0, 0, 0] for c in crops] == [1, 2, 2] and owner == [0, 1, 1] and scores == [1.0, 0.5, 0.9]
    assert boxes[0] is None and [list(b) for b in boxes[1:]] == [[0, 0, 4, 4], [1, 1, 2, 2]]  # no person on the third
    assert person_crops([first], None)[1] == [None]  # no boxes: the whole image
    assert person_crops([first], [[1, 1, 2, 2]])[2] == [1.0]  # a box without a score scores 1
    with pytest.raises(ValueError, match=r"^got 1 box entries for 2 images \(one entry per image\)$"):
        person_crops([first, second], [None])
