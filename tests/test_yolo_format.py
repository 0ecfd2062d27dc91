"""Ultralytics YOLO-pose datasets (issue 23): read as Ultralytics writes them, written back, and
converted COCO <-> YOLO exactly to the format's precision; bad labels are one line naming the file
and line; paths stay inside the dataset root."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from posekit.cli import main
from posekit.data.formats.convert import convert
from posekit.data.formats.registry import load_samples
from posekit.data.formats.yolo import YOLOFormatError, YOLORecordError, load_yolo_pose, yolo_skeleton
from posekit.skeletons import get_skeleton


def yolo_dataset(root, lines_by_image, *, kpt_shape=(4, 3), extra="", size=(80, 60)):
    """A dataset laid out as Ultralytics' docs show: images/train, labels/train, data.yaml."""
    for name, lines in lines_by_image.items():
        img = root / "images" / "train" / name
        img.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(img), np.zeros((size[1], size[0], 3), np.uint8))
        if lines is not None:
            lab = root / "labels" / "train" / (img.stem + ".txt")
            lab.parent.mkdir(parents=True, exist_ok=True)
            lab.write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text(
        f"path: .\ntrain: images/train\nval: images/train\nkpt_shape: [{kpt_shape[0]}, {kpt_shape[1]}]\n"
        "flip_idx: [0, 2, 1, 3]\nnames:\n  0: mouse\nkpt_names:\n  0: [snout, left_ear, right_ear, tail]\n" + extra)
    return root / "data.yaml"


LINE = "0 0.5 0.5 0.5 0.5 0.5 0.3 2 0.4 0.4 2 0.6 0.4 1 0 0 0"


def test_labels_become_pixel_keypoints_boxes_and_visibility(tmp_path):
    y = yolo_dataset(tmp_path, {"a.png": [LINE], "b.png": None})
    s = load_yolo_pose(y, "train")
    assert len(s) == 2 and s[1].num_people == 0  # no label file: a background image
    np.testing.assert_allclose(s[0].boxes[0], [20, 15, 40, 30])
    np.testing.assert_allclose(s[0].keypoints[0], [[40, 18, 2], [32, 24, 2], [48, 24, 1], [0, 0, 0]])
    assert s.keypoint_names == ("snout", "left_ear", "right_ear", "tail")


def test_skeleton_and_flip_pairs_come_from_the_yaml(tmp_path):
    y = yolo_dataset(tmp_path, {"a.png": [LINE]}, extra="skeleton: [[0, 1], [0, 2], [0, 3]]\n")
    sk = yolo_skeleton(y)
    assert sk.flip_pairs == ((1, 2),) and sk.limbs == ((0, 1), (0, 2), (0, 3))


def test_two_values_per_keypoint_take_zero_zero_as_unlabelled(tmp_path):
    y = yolo_dataset(tmp_path, {"a.png": ["0 0.5 0.5 0.5 0.5 0.5 0.3 0.4 0.4 0.6 0.4 0 0"]}, kpt_shape=(4, 2))
    kp = load_yolo_pose(y)[0].keypoints[0]
    assert kp[:, 2].tolist() == [2, 2, 2, 0]


@pytest.mark.parametrize("line, says", [
    ("0 0.5 0.5 0.5 0.5 0.5 0.3 2", "values, expected 17"),
    ("0 0.5 0.5 0.5 0.5 50 30 2 0.4 0.4 2 0.6 0.4 1 0 0 0", "normalised to [0, 1]"),
    ("0 0.5 0.5 0.5 0.5 0.5 0.3 7 0.4 0.4 2 0.6 0.4 1 0 0 0", "visibility must be 0"),
    ("0 0.5 0.5 nan 0.5 0.5 0.3 2 0.4 0.4 2 0.6 0.4 1 0 0 0", "non-finite"),
    ("x 0.5 0.5 0.5 0.5 0.5 0.3 2 0.4 0.4 2 0.6 0.4 1 0 0 0", "must be numbers"),
])
def test_a_bad_label_line_is_one_line_naming_file_and_line(tmp_path, line, says):
    y = yolo_dataset(tmp_path, {"a.png": [LINE, line]})
    with pytest.raises(YOLORecordError) as e:
        load_yolo_pose(y)
    msg = str(e.value)
    assert "labels/train/a.txt: line 2" in msg and says in msg and "\n" not in msg


def test_skip_drops_the_image_and_lists_it(tmp_path):
    y = yolo_dataset(tmp_path, {"a.png": [LINE], "b.png": ["0 1 2"]})
    s = load_yolo_pose(y, on_bad_record="skip")
    assert len(s) == 1 and len(s.skipped) == 1 and "b.txt: line 1" in s.skipped[0]


def test_split_entries_outside_the_dataset_root_are_refused(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    y = yolo_dataset(root, {"a.png": [LINE]})
    y.write_text(y.read_text().replace("train: images/train", "train: ../../etc"))
    with pytest.raises(YOLOFormatError, match="outside the dataset root"):
        load_yolo_pose(y)
    (root / "list.txt").write_text("/etc/passwd\n")
    y.write_text(y.read_text().replace("train: ../../etc", "train: list.txt"))
    with pytest.raises(YOLOFormatError, match="line 1: image '/etc/passwd' lies outside"):
        load_yolo_pose(y)


def test_bad_yaml_fields_name_the_key(tmp_path):
    y = yolo_dataset(tmp_path, {"a.png": [LINE]})
    y.write_text(y.read_text().replace("flip_idx: [0, 2, 1, 3]", "flip_idx: [0, 2, 3, 1]"))
    with pytest.raises(YOLOFormatError, match="flip_idx"):
        load_yolo_pose(y)


def test_yolo_to_coco_to_yolo_round_trip_is_exact_to_the_written_decimals(tmp_path):
    rng = np.random.default_rng(0)
    lines = {}
    for i in range(5):
        pts = np.round(rng.uniform(0.05, 0.95, size=(4, 2)), 6)
        vals = [f"{v:.6f}" for xy in pts for v in (*xy, 2)]
        lines[f"{i}.png"] = ["0 0.500000 0.500000 0.900000 0.900000 " + " ".join(vals)]
    y = yolo_dataset(tmp_path / "src", lines, extra="skeleton: [[0, 3]]\n")
    convert(y, "coco", tmp_path / "coco")
    coco = json.loads((tmp_path / "coco" / "annotations" / "train.json").read_text())
    assert coco["categories"][0]["keypoints"] == ["snout", "left_ear", "right_ear", "tail"]
    for split in ("train", "val"):
        assert (tmp_path / "coco" / "annotations" / f"{split}.json").is_file()
    back = tmp_path / "coco" / "annotations" / "train.json"
    convert(back, "yolo", tmp_path / "yolo", images_dir=tmp_path / "coco" / "images" / "train",
            skeleton=yolo_skeleton(y))
    for name, src_lines in lines.items():
        stem = name.split(".")[0]
        written = (tmp_path / "yolo" / "labels" / "train" / f"{stem}.txt").read_text().split()
        np.testing.assert_allclose([float(v) for v in written], [float(v) for v in src_lines[0].split()], atol=1e-9)
    assert yolo_skeleton(tmp_path / "yolo" / "data.yaml").flip_pairs == ((1, 2),)


def test_real_coco_to_yolo_and_back_agrees_to_half_a_unit_of_the_last_decimal(tmp_path, realdata):
    src = realdata / "coco" / "test_coco.json"
    assert main(["data", "convert", str(src), "--images", str(realdata / "coco" / "images"), "--skeleton", "coco17",
                 "--to", "yolo", str(tmp_path / "y"), "--image-mode", "symlink"]) == 0
    assert main(["data", "convert", str(tmp_path / "y"), "--to", "coco", str(tmp_path / "c")]) == 0
    a = load_samples("coco", src, realdata / "coco" / "images")
    b = load_samples("coco", tmp_path / "c" / "annotations" / "train.json", tmp_path / "c" / "images" / "train")
    assert [s.num_people for s in a] == [s.num_people for s in b]
    for x, z in zip(a, b):
        bound = 0.5e-6 * max(x.meta["width"], x.meta["height"]) + 1e-9
        assert np.abs(x.keypoints - z.keypoints).max() <= bound
        np.testing.assert_allclose(x.boxes, z.boxes, atol=bound)
    assert yolo_skeleton(tmp_path / "y" / "data.yaml").flip_pairs == get_skeleton("coco17").flip_pairs
    assert all((realdata / "coco" / "images").iterdir())  # the sources are untouched


def test_convert_refuses_a_non_empty_output_folder(tmp_path, capsys):
    y = yolo_dataset(tmp_path / "src", {"a.png": [LINE]})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert main(["data", "convert", str(y), "--to", "coco", str(tmp_path / "out")]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_keypoints_family_trains_from_a_yolo_yaml_with_the_yaml_skeleton(tmp_path):
    from posekit.engine.recipes import load_config
    from posekit.families.base import build_task
    y = yolo_dataset(tmp_path, {f"{i}.png": [LINE] for i in range(3)})
    cfg = load_config("keypoints_synthetic", ["data.dataset=coco", "data.format=yolo", f"data.train_ann={y}",
                                              f"data.val_ann={y}", "data.skeleton=auto", "data.input_size=64"])
    task = build_task(cfg)
    assert task.skeleton.keypoints == ("snout", "left_ear", "right_ear", "tail")
    ds = task.build_datasets(("train", "val"))
    assert len(ds["train"]) == 3 and len(ds["val"]) == 3
    assert ds["train"][0]["target"].shape[0] == 4


@pytest.mark.slow  # a real (1-step) training run: ~30 s on the loaded 2-core machine
def test_training_on_yolo_with_skip_lists_the_bad_label_in_the_run_folder(tmp_path):
    from posekit.engine.recipes import load_config
    from posekit.engine.trainer import train
    lines = {f"{i}.png": [LINE] for i in range(4)}
    lines["bad.png"] = ["0 0.5 0.5"]
    y = yolo_dataset(tmp_path / "ds", lines)
    cfg = load_config("keypoints_synthetic", [
        "data.dataset=coco", "data.format=yolo", f"data.train_ann={y}", "data.val_ann=null", "data.skeleton=auto",
        "data.input_size=64", "data.on_bad_record=skip", "model.args.n_stacks=1", "model.args.n_feats=16",
        "train.batch_size=2", "train.max_steps=1", f"out_dir={tmp_path / 'runs'}"])
    run = train(cfg)
    logged = (run / "bad_records.txt").read_text()
    assert "labels/train/bad.txt: line 1" in logged and len(logged.strip().splitlines()) == 1
