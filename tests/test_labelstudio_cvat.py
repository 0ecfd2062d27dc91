"""Label Studio and CVAT keypoint exports (issue 23). The fixtures are written the way the tools
write them (tests/fixtures/labelstudio/make_fixture.py, tests/fixtures/cvat/make_fixture.py);
`from_converter.json` was written by label-studio-converter itself from `coco_source.json`.
Both fixtures hold the same three people (points.json), so every reader must give the same pixels."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from posekit.cli import main
from posekit.data.formats.coco import load_coco_keypoints
from posekit.data.formats.cvat import CVATFormatError, CVATRecordError, load_cvat
from posekit.data.formats.labelstudio import (LabelStudioFormatError, LabelStudioRecordError, image_candidates,
                                              load_labelstudio)
from posekit.data.formats.registry import guess_format, load_samples, source_skeleton

LS = Path(__file__).parent / "fixtures" / "labelstudio"
CV = Path(__file__).parent / "fixtures" / "cvat"
TRUTH = json.loads((LS / "points.json").read_text())
NAMES = TRUTH["names"]


def _assert_truth(samples):
    """The samples hold exactly the fixture's people: pixels, visibility (v=1 hidden/occluded,
    0 unlabelled) and boxes, image by image."""
    by_name = {Path(s.meta["file_name"]).name: s for s in samples}
    assert sorted(by_name) == sorted(TRUTH["truth"])
    for name, people in TRUTH["truth"].items():
        s = by_name[name]
        assert (s.meta["width"], s.meta["height"]) == tuple(TRUTH["sizes"][name])
        np.testing.assert_allclose(s.keypoints, np.array([p["kp"] for p in people], dtype=float), atol=1e-9)
        np.testing.assert_allclose(s.boxes, np.array([p["box"] for p in people], dtype=float), atol=1e-9)


def _edit_export(tmp_path, fn, name="export.json"):
    tasks = json.loads((LS / "export.json").read_text())
    fn(tasks)
    shutil.copy(LS / "export.label_config.xml", tmp_path / (Path(name).stem + ".label_config.xml"))
    (tmp_path / name).write_text(json.dumps(tasks))
    return tmp_path / name


# ---------------------------------------------------------------- Label Studio

def test_labelstudio_percent_coordinates_become_pixels_and_parentid_makes_people():
    s = load_labelstudio(LS / "export.json", LS / "images")
    _assert_truth(s)
    assert len(s) == 2 and s.skipped == []  # the unlabelled task is not an image to train on
    assert s.keypoint_names == tuple(NAMES)  # from export.label_config.xml, found beside the export
    assert s.skeleton.flip_pairs == ((1, 2), (3, 4))


def test_labelstudio_cancelled_annotation_is_ignored_and_the_next_one_read():
    tasks = json.loads((LS / "export.json").read_text())
    assert tasks[0]["annotations"][0]["was_cancelled"] is True and tasks[0]["annotations"][0]["result"] == []
    s = load_labelstudio(LS / "export.json", LS / "images")
    assert next(x for x in s if x.meta["task_id"] == 1).num_people == 2


def test_labelstudio_converter_output_reads_in_order_with_a_skeleton_and_equals_its_coco_source():
    s = load_labelstudio(LS / "from_converter.json", LS / "images", keypoint_names=NAMES)
    _assert_truth(s)
    coco = load_coco_keypoints(LS / "coco_source.json", LS / "images")
    for a, b in zip(sorted(s, key=lambda x: x.meta["file_name"]), sorted(coco, key=lambda x: x.meta["file_name"])):
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-9)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-9)


def test_labelstudio_one_category_label_asks_for_a_skeleton_in_one_line():
    with pytest.raises(LabelStudioFormatError) as e:
        load_labelstudio(LS / "from_converter.json", LS / "images")
    msg = str(e.value)
    assert "\n" not in msg and "from_converter.label_config.xml" in msg and "'person'" in msg and "skeleton" in msg


def test_labelstudio_without_parentid_keypoints_go_to_the_box_that_contains_them(tmp_path):
    def strip(tasks):
        for t in tasks:
            for a in t["annotations"]:
                for r in a["result"]:
                    r.pop("parentID", None)
    _assert_truth(load_labelstudio(_edit_export(tmp_path, strip), LS / "images"))


def test_labelstudio_keypoint_in_no_box_is_one_line_naming_task_and_result(tmp_path):
    def move(tasks):
        for r in tasks[0]["annotations"][1]["result"]:
            r.pop("parentID", None)
        kp = next(r for r in tasks[0]["annotations"][1]["result"] if r["type"] == "keypointlabels")
        kp["value"]["x"] = 99.0
    with pytest.raises(LabelStudioRecordError) as e:
        load_labelstudio(_edit_export(tmp_path, move), LS / "images")
    msg = str(e.value)
    assert "\n" not in msg and "export.json: task 1 (id 1)" in msg and "result 2" in msg and "parentID" in msg


def test_labelstudio_bad_value_is_one_line_and_skip_lists_it_and_keeps_the_rest(tmp_path):
    def spoil(tasks):
        tasks[1]["annotations"][0]["result"][1]["value"]["x"] = "12%"
    path = _edit_export(tmp_path, spoil)
    with pytest.raises(LabelStudioRecordError, match=r"export.json: task 2 \(id 2\).*result 2: value.x must be a "
                                                     r"number") as e:
        load_labelstudio(path, LS / "images")
    assert "\n" not in str(e.value)
    s = load_labelstudio(path, LS / "images", on_bad_record="skip")
    assert len(s) == 1 and len(s.skipped) == 1 and "task 2" in s.skipped[0]


def test_labelstudio_rotated_image_is_refused_not_misread(tmp_path):
    def rotate(tasks):
        tasks[1]["annotations"][0]["result"][0]["image_rotation"] = 90
    with pytest.raises(LabelStudioRecordError, match="image_rotation=90"):
        load_labelstudio(_edit_export(tmp_path, rotate), LS / "images")


def test_labelstudio_image_reference_never_leaves_the_image_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside.png").write_bytes((LS / "images" / "park.png").read_bytes())

    def escape(tasks):
        tasks[1]["data"]["image"] = "/data/local-files/?d=../outside.png"
    with pytest.raises(LabelStudioRecordError, match="image not found under"):
        load_labelstudio(_edit_export(tmp_path, escape), root)
    assert image_candidates("/data/local-files/?d=../outside.png") == ["outside.png"]


def test_labelstudio_image_references_map_to_paths_under_the_root():
    assert image_candidates("/data/upload/1/3f2a9c1d-street.png") == \
        ["upload/1/3f2a9c1d-street.png", "3f2a9c1d-street.png", "street.png"]
    assert image_candidates("/data/local-files/?d=shots%2Fa%20b.jpg") == ["shots/a b.jpg", "a b.jpg"]
    assert image_candidates("s3://bucket/set/x.jpg") == ["set/x.jpg", "x.jpg"]
    assert image_candidates("sub/x.jpg") == ["sub/x.jpg", "x.jpg"]


def test_labelstudio_keypoint_label_not_in_the_skeleton_names_it(tmp_path):
    def rename(tasks):
        tasks[1]["annotations"][0]["result"][1]["value"]["keypointlabels"] = ["snout"]
    with pytest.raises(LabelStudioRecordError, match=r"task 2.*\['snout'\] are not among the keypoints"):
        load_labelstudio(_edit_export(tmp_path, rename), LS / "images")


# ---------------------------------------------------------------- CVAT

def test_cvat_skeleton_export_reads_outside_occluded_and_limbs_from_the_svg():
    s = load_cvat(CV / "skeleton" / "annotations.xml")
    _assert_truth(s)
    assert s.keypoint_names == tuple(NAMES)
    assert s.skeleton.limbs == ((0, 1), (0, 2), (0, 3), (0, 4)) and s.skeleton.flip_pairs == ((1, 2), (3, 4))


def test_cvat_points_shapes_grouped_by_group_id_read_the_same_people():
    _assert_truth(load_cvat(CV / "points"))  # a folder: its annotations.xml and images/


def test_cvat_points_without_groups_in_a_two_person_image_is_one_line_asking_for_groups(tmp_path):
    shutil.copytree(CV / "points", tmp_path / "p")
    xml = tmp_path / "p" / "annotations.xml"
    xml.write_text(xml.read_text().replace(' group_id="1"', "").replace(' group_id="2"', ""))
    with pytest.raises(CVATRecordError) as e:
        load_cvat(xml)
    msg = str(e.value)
    assert "\n" not in msg and "<image> 1 (street.png)" in msg and "appears twice" in msg and "group" in msg
    s = load_cvat(xml, on_bad_record="skip")
    assert len(s) == 1 and s[0].meta["file_name"] == "park.png" and len(s.skipped) == 1


def test_cvat_bad_point_is_one_line_naming_file_and_image(tmp_path):
    shutil.copytree(CV / "skeleton", tmp_path / "s")
    xml = tmp_path / "s" / "annotations.xml"
    xml.write_text(xml.read_text().replace('points="32.00,8.00"', 'points="32.00;8.00"', 1))
    with pytest.raises(CVATRecordError, match=r"annotations.xml: <image> 2 \(park.png\) <skeleton> 2: "
                                              r"points='32.00;8.00'") as e:
        load_cvat(xml)
    assert "\n" not in str(e.value)


def test_cvat_image_name_leaving_the_image_folder_is_refused_even_with_skip(tmp_path):
    shutil.copytree(CV / "skeleton", tmp_path / "s")
    xml = tmp_path / "s" / "annotations.xml"
    xml.write_text(xml.read_text().replace('name="park.png"', 'name="../../park.png"'))
    with pytest.raises(CVATFormatError, match="leaves the dataset root; refused"):
        load_cvat(xml, on_bad_record="skip")


def test_cvat_video_export_is_refused_with_what_to_export_instead(tmp_path):
    xml = tmp_path / "annotations.xml"
    xml.write_text('<annotations><version>1.1</version><track id="0" label="person"></track></annotations>')
    with pytest.raises(CVATFormatError, match="CVAT for video.*export as 'CVAT for images 1.1'"):
        load_cvat(xml)


def test_cvat_several_skeleton_labels_ask_which_one(tmp_path):
    shutil.copytree(CV / "skeleton", tmp_path / "s")
    xml = tmp_path / "s" / "annotations.xml"
    text = xml.read_text()
    dog = "<label>\n          <name>dog</name>\n          <type>skeleton</type>\n        </label>\n        <label>"
    xml.write_text(text.replace("<label>", dog, 1))
    with pytest.raises(CVATFormatError, match=r"skeleton labels \['dog', 'person'\]; pick one"):
        load_cvat(xml)
    _assert_truth(load_cvat(xml, label="person"))


# ---------------------------------------------------------------- registry and convert

def test_formats_are_guessed_from_the_files():
    assert guess_format(LS / "export.json") == "labelstudio"
    assert guess_format(LS / "from_converter.json") == "labelstudio"
    assert guess_format(LS / "coco_source.json") == "coco"
    assert guess_format(CV / "skeleton" / "annotations.xml") == "cvat"


def test_registry_reads_both_and_declares_their_skeletons():
    _assert_truth(load_samples("labelstudio", LS / "export.json", LS / "images"))
    _assert_truth(load_samples("cvat", CV / "skeleton" / "annotations.xml", CV / "skeleton" / "images"))
    assert source_skeleton("labelstudio", LS / "export.json").keypoints == tuple(NAMES)
    assert source_skeleton("cvat", CV / "skeleton" / "annotations.xml").limbs == ((0, 1), (0, 2), (0, 3), (0, 4))


@pytest.mark.parametrize("src,extra", [(LS / "export.json", ["--images", str(LS / "images")]),
                                       (CV / "skeleton" / "annotations.xml", [])])
def test_data_convert_to_coco_reads_back_the_same_people(tmp_path, src, extra):
    out = tmp_path / "coco"
    assert main(["data", "convert", str(src), "--to", "coco", str(out), *extra]) == 0
    back = load_coco_keypoints(out / "annotations" / "train.json", out / "images" / "train")
    _assert_truth(back)
    assert back.keypoint_names == tuple(NAMES)


@pytest.mark.parametrize("fmt,ann,images", [("labelstudio", LS / "export.json", LS / "images"),
                                            ("cvat", CV / "skeleton" / "annotations.xml", CV / "skeleton" / "images")])
def test_keypoints_family_trains_from_the_export_with_its_declared_skeleton(fmt, ann, images):
    from posekit.engine.recipes import load_config
    from posekit.families.base import build_task
    cfg = load_config("keypoints_synthetic", ["data.dataset=coco", f"data.format={fmt}", f"data.train_ann={ann}",
                                              f"data.train_images={images}", f"data.val_ann={ann}",
                                              f"data.val_images={images}", "data.skeleton=auto", "data.input_size=64"])
    task = build_task(cfg)
    assert task.skeleton.keypoints == tuple(NAMES) and task.skeleton.flip_pairs == ((1, 2), (3, 4))
    ds = task.build_datasets(("train",))["train"]
    assert len(ds) == 3 and ds[0]["target"].shape[0] == len(NAMES)  # one item per person


def test_data_convert_with_a_skeleton_reads_category_labelled_points_in_order(tmp_path):
    from posekit.data.formats.convert import convert
    from posekit.skeletons import Skeleton
    sk = Skeleton(name="five", keypoints=tuple(NAMES), flip_pairs=((1, 2), (3, 4)))
    report = convert(LS / "from_converter.json", "coco", tmp_path / "c", images_dir=LS / "images", skeleton=sk)
    assert report["from"] == "labelstudio" and report["people"] == 3 and report["flip_pairs"] == 2
    _assert_truth(load_coco_keypoints(tmp_path / "c" / "annotations" / "train.json", tmp_path / "c" / "images" / "train"))


def test_cli_prints_a_bad_export_as_one_error_line(tmp_path, capsys):
    def spoil(tasks):
        tasks[1]["annotations"][0]["result"][1]["value"]["keypointlabels"] = []
    path = _edit_export(tmp_path, spoil)
    assert main(["data", "convert", str(path), "--images", str(LS / "images"), "--to", "coco", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("posekit data: error: ") and "task 2" in err
    assert not (tmp_path / "o" / "annotations").exists()


def test_labelstudio_points_labelled_on_another_image_size_are_refused(tmp_path):
    def resize(tasks):
        for r in tasks[1]["annotations"][0]["result"]:
            r["original_width"], r["original_height"] = 128, 96
    with pytest.raises(LabelStudioRecordError, match="labelled on a 128x96 image, the image file is 64x48"):
        load_labelstudio(_edit_export(tmp_path, resize), LS / "images")


def test_cvat_image_of_another_size_than_labelled_is_a_bad_record(tmp_path):
    shutil.copytree(CV / "skeleton", tmp_path / "s")
    xml = tmp_path / "s" / "annotations.xml"
    xml.write_text(xml.read_text().replace('width="64" height="48"', 'width="128" height="96"'))
    with pytest.raises(CVATRecordError, match=r"\(park.png\): labelled on a 128x96 image, the image file is 64x48"):
        load_cvat(xml)


def test_xml_with_entity_declarations_is_refused_before_parsing(tmp_path):
    bomb = ('<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY x "xxxxxxxxxx"><!ENTITY y "&x;&x;&x;&x;&x;&x;&x;&x;">]>\n'
            '<annotations><version>&y;</version></annotations>\n')
    (tmp_path / "annotations.xml").write_text(bomb)
    with pytest.raises(CVATFormatError, match="DOCTYPE / entity declarations, which CVAT never writes; refused"):
        load_cvat(tmp_path / "annotations.xml")
    path = _edit_export(tmp_path, lambda tasks: None)
    (tmp_path / "export.label_config.xml").write_text(bomb.replace("annotations", "View"))
    with pytest.raises(LabelStudioFormatError, match="entity declarations; refused"):
        load_labelstudio(path, LS / "images")


def test_labelstudio_points_missing_their_parentid_join_the_box_that_contains_them(tmp_path):
    def drop_some(tasks):
        for r in tasks[0]["annotations"][1]["result"][::2]:
            r.pop("parentID", None)
    _assert_truth(load_labelstudio(_edit_export(tmp_path, drop_some), LS / "images"))


def test_labelstudio_parentid_naming_no_box_is_one_line(tmp_path):
    def dangle(tasks):
        tasks[1]["annotations"][0]["result"][2]["parentID"] = "gone"
    with pytest.raises(LabelStudioRecordError, match=r"task 2 .*result 3: keypoint 'left_eye' has parentID 'gone'"):
        load_labelstudio(_edit_export(tmp_path, dangle), LS / "images")


def test_cvat_converts_to_yolo_with_flip_idx_and_limbs_and_reads_back_the_same_people(tmp_path):
    from posekit.data.formats.yolo import load_yolo_pose, yolo_skeleton
    out = tmp_path / "y"
    assert main(["data", "convert", str(CV / "skeleton" / "annotations.xml"), "--to", "yolo", str(out)]) == 0
    sk = yolo_skeleton(out / "data.yaml")
    assert sk.keypoints == tuple(NAMES) and sk.flip_pairs == ((1, 2), (3, 4)) and len(sk.limbs) == 4
    back = load_yolo_pose(out / "data.yaml", "train")
    by_name = {Path(s.meta["file_name"]).name: s for s in back}
    for name, people in TRUTH["truth"].items():  # 6 decimals of the normalised value
        np.testing.assert_allclose(by_name[name].keypoints, np.array([p["kp"] for p in people], float), atol=1e-3)


def test_keypoints_family_reads_a_category_labelled_export_in_its_skeletons_order(tmp_path):
    """label-studio-converter's kind of export labels every point with the category: the family
    passes its skeleton's names, so training needs no `data convert` first."""
    from posekit.engine.recipes import load_config
    from posekit.families.base import build_task
    sk = tmp_path / "five.yaml"
    sk.write_text(f"name: five\nkeypoints: {list(NAMES)}\nflip_pairs: [[1, 2], [3, 4]]\n")
    ann = LS / "from_converter.json"
    cfg = load_config("keypoints_synthetic", ["data.dataset=coco", "data.format=labelstudio", f"data.train_ann={ann}",
                                              f"data.train_images={LS / 'images'}", f"data.val_ann={ann}",
                                              f"data.val_images={LS / 'images'}", f"data.skeleton={sk}",
                                              "data.input_size=64"])
    task = build_task(cfg)
    ds = task.build_datasets(("train",))["train"]
    assert len(ds) == 3  # the three people of points.json, one item each
    images = ds.source.images
    _assert_truth([images[i] for i in range(len(images))])
