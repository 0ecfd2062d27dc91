"""DeepLabCut labelled data (issue 23): the committed fixture was written by pandas + PyTables
exactly as DeepLabCut's GUI saves it (tests/fixtures/deeplabcut/make_fixture.py); posekit reads
the .h5 with h5py alone, the .csv too, single- and multi-animal, and converts it to COCO."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from posekit.cli import main
from posekit.data.formats.deeplabcut import (DLCFormatError, DLCRecordError, infer_flip_pairs, load_deeplabcut,
                                             read_collected_data)

FIX = Path(__file__).parent / "fixtures" / "deeplabcut"
POINTS = json.loads((FIX / "points.json").read_text())


def test_h5_written_by_pandas_reads_without_pandas_and_equals_the_csv():
    for project, scorer, video in (("single", "Alice", "mouse1"), ("multi", "Bob", "cage1")):
        folder = FIX / project / "labeled-data" / video
        h5 = read_collected_data(folder / f"CollectedData_{scorer}.h5")
        csv = read_collected_data(folder / f"CollectedData_{scorer}.csv")
        np.testing.assert_array_equal(np.isnan(h5["xy"]), np.isnan(csv["xy"]))
        np.testing.assert_allclose(h5["xy"], csv["xy"], equal_nan=True)
        assert h5["images"] == csv["images"] and h5["bodyparts"] == ["snout", "leftear", "rightear", "tailbase"]
        rows = POINTS[project]["videos"][video]
        want = np.array([np.array(v, dtype=float) for v in rows.values()]).reshape(h5["xy"].shape)
        np.testing.assert_allclose(h5["xy"], want, equal_nan=True)


def test_single_animal_project_gives_one_person_per_image_with_unlabelled_parts_at_zero():
    s = load_deeplabcut(FIX / "single" / "config.yaml")
    assert len(s) == 10 and all(x.num_people == 1 for x in s)
    img1 = next(x for x in s if x.meta["file_name"] == "labeled-data/mouse1/img001.png")
    assert img1.keypoints[0, 1].tolist() == [0, 0, 0]  # leftear not labelled
    assert s.skeleton.limbs == ((0, 1), (0, 2), (0, 3)) and s.skeleton.flip_pairs == ((1, 2),)
    box = img1.boxes[0]
    lab = img1.keypoints[0][img1.keypoints[0, :, 2] > 0, :2]
    assert (lab >= box[:2]).all() and (lab <= box[:2] + box[2:]).all()


def test_multi_animal_individuals_become_people_and_absent_ones_are_dropped():
    s = load_deeplabcut(FIX / "multi" / "labeled-data" / "cage1" / "CollectedData_Bob.h5")
    assert [x.num_people for x in s] == [2, 2, 1]
    assert s[2].meta["individuals"] == ["mus1"]


def test_flip_pairs_are_inferred_from_left_right_names():
    assert infer_flip_pairs(["nose", "left_ear", "right_ear", "LeftPaw", "RightPaw", "L_hip", "R_hip"]) == \
        ((1, 2), (3, 4), (5, 6))
    assert infer_flip_pairs(["head", "tail"]) == ()


def test_a_bad_csv_row_is_one_line_naming_file_and_row(tmp_path):
    shutil.copytree(FIX / "single", tmp_path / "p")
    csv = tmp_path / "p" / "labeled-data" / "mouse1" / "CollectedData_Alice.csv"
    lines = csv.read_text().splitlines()
    lines[4] = lines[4].replace(lines[4].split(",")[3], "abc")
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DLCFormatError, match=r"CollectedData_Alice.csv: row 5 \(labeled-data/mouse1/img001.png\)"):
        read_collected_data(csv)


def test_a_missing_image_is_skipped_and_listed_with_skip(tmp_path):
    shutil.copytree(FIX / "single", tmp_path / "p")
    (tmp_path / "p" / "labeled-data" / "mouse1" / "img002.png").unlink()
    with pytest.raises(DLCRecordError, match="row 3 .*image file not found"):
        load_deeplabcut(tmp_path / "p" / "config.yaml")
    s = load_deeplabcut(tmp_path / "p" / "config.yaml", on_bad_record="skip")
    assert len(s) == 9 and len(s.skipped) == 1 and "img002.png" in s.skipped[0]


def test_image_paths_leaving_the_project_are_refused(tmp_path):
    shutil.copytree(FIX / "single", tmp_path / "p")
    csv = tmp_path / "p" / "labeled-data" / "mouse1" / "CollectedData_Alice.csv"
    (tmp_path / "p" / "labeled-data" / "mouse1" / "CollectedData_Alice.h5").unlink()
    csv.write_text(csv.read_text().replace("labeled-data,mouse1,img000.png", "..,..,secret.png"))
    with pytest.raises(DLCFormatError, match="leaves the dataset root|refused"):
        load_deeplabcut(tmp_path / "p" / "config.yaml", on_bad_record="skip")


def test_deeplabcut_converts_to_coco_that_the_coco_reader_reads_back(tmp_path, capsys):
    assert main(["data", "convert", str(FIX / "multi" / "config.yaml"), "--to", "coco", str(tmp_path / "c")]) == 0
    from posekit.data.formats.coco import load_coco_keypoints
    back = load_coco_keypoints(tmp_path / "c" / "annotations" / "train.json", tmp_path / "c" / "images" / "train")
    src = load_deeplabcut(FIX / "multi" / "config.yaml")
    for a, b in zip(src, back):
        np.testing.assert_allclose(a.keypoints, b.keypoints)
    assert back.keypoint_names == ("snout", "leftear", "rightear", "tailbase")


def test_keypoints_family_builds_from_a_dlc_project_with_its_skeleton():
    from posekit.engine.recipes import load_config
    from posekit.families.base import build_task
    ann = str(FIX / "single" / "config.yaml")
    cfg = load_config("keypoints_synthetic", ["data.dataset=coco", "data.format=deeplabcut", f"data.train_ann={ann}",
                                              f"data.val_ann={ann}", "data.skeleton=auto", "data.input_size=64"])
    task = build_task(cfg)
    assert task.skeleton.flip_pairs == ((1, 2),)
    ds = task.build_datasets(("train",))["train"]
    assert len(ds) == 10 and ds[0]["target"].shape[0] == 4
