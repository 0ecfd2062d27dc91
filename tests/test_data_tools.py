"""`posekit data show` and `data stats` (issue 23): every family's pipeline drawn as the model sees
it, the drawn keypoints where the targets put them (left/right swapped on flips), and counts
that match the data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from posekit.cli import main
from posekit.data import robust
from posekit.data.io import read_image
from posekit.engine import data_tools
from posekit.engine.recipes import load_config
from posekit.families.base import get_task_class, list_tasks

FIX = Path(__file__).parent / "fixtures" / "deeplabcut"


def _smoke(family):
    cls = get_task_class(family)
    keep = [o for o in cls.smoke_overrides if o.startswith("data.") and "batch_size" not in o]
    return cls.synthetic_recipe, keep


@pytest.mark.parametrize("family", [n for n in list_tasks()  # the package's, not tests' toy tasks
                                    if get_task_class(n).__module__.startswith("posekit.families.")])
def test_show_draws_every_family_augmented_and_plain(family, tmp_path):
    recipe, overrides = _smoke(family)
    assert main(["data", "show", recipe, *overrides, "--n", "3", "--out", str(tmp_path)]) == 0
    aug, plain = read_image(tmp_path / "train_augmented.png"), read_image(tmp_path / "train_plain.png")
    assert aug.shape == plain.shape and aug.shape[0] >= 256 and aug.std() > 5
    assert json.loads((tmp_path / "train_items.json").read_text())["family"] == family


def test_drawn_keypoints_sit_on_the_decoded_targets_flips_included():
    cfg = load_config("keypoints_synthetic", ["data.synthetic_train_size=24", "data.input_size=64",
                                              "data.synthetic_image_size=96"])
    task, ds = data_tools._task_and_split(cfg, "train")
    flips = 0
    for i in range(len(ds)):
        with robust.seeded(robust.item_seed(0, 0, i)):
            item = ds[i]
        kp = data_tools._crop_keypoints(item, ds, task)[0]
        decoded = task.decode_targets(task.collate([item]))["keypoints"][0].numpy()
        ok = (item["target_weight"].numpy().reshape(-1) > 0) & (kp[:, 2] > 0)
        assert np.abs(kp[ok, :2] - decoded[ok]).max() < 2.5  # one heatmap cell (stride 4) with shift refinement
        flips += int(np.linalg.det(item["matrix"].numpy()[:, :2]) < 0)
    assert flips > 0  # some item was mirrored, and its labels still matched


def test_unaugmented_copy_turns_augmentation_off_and_leaves_the_pipeline_alone():
    cfg = load_config("keypoints_synthetic", ["data.synthetic_train_size=4", "data.input_size=64"])
    task, ds = data_tools._task_and_split(cfg, "train")
    plain = data_tools._unaugmented(ds)
    assert plain.augment is None and ds.augment is not None
    a, b = plain[0], plain[0]
    assert torch.equal(a["image"], b["image"])


def test_stats_counts_images_people_and_labelled_joints_of_a_dlc_project(tmp_path, capsys):
    ann = str(FIX / "single" / "config.yaml")
    args = ["keypoints_synthetic", "data.dataset=coco", "data.format=deeplabcut", f"data.train_ann={ann}",
            f"data.val_ann={ann}", "data.skeleton=auto"]
    assert main(["data", "stats", *args, "--json", str(tmp_path / "s.json")]) == 0
    st = json.loads((tmp_path / "s.json").read_text())
    assert st["images"] == 10 and st["people"] == 10
    per = {r["name"]: r["labelled"] for r in st["per_keypoint"]}  # img001 of each video lacks its leftear
    assert per == {"snout": 10, "leftear": 8, "rightear": 10, "tailbase": 10}
    assert st["unreadable_images"] == [] and st["skipped_records"] == []
    out = capsys.readouterr().out
    assert "10 images, 10 people" in out and "leftear" in out


def test_stats_lists_records_the_reader_skipped(tmp_path):
    import shutil
    shutil.copytree(FIX / "single", tmp_path / "p")
    (tmp_path / "p" / "labeled-data" / "mouse2" / "img000.png").unlink()
    ann = str(tmp_path / "p" / "config.yaml")
    cfg = load_config("keypoints_synthetic", ["data.dataset=coco", "data.format=deeplabcut", f"data.train_ann={ann}",
                                              "data.skeleton=auto", "data.on_bad_record=skip"])
    st = data_tools.dataset_stats(cfg, "train")
    assert st["images"] == 9 and len(st["skipped_records"]) == 1 and "image file not found" in st["skipped_records"][0]


def test_show_of_a_split_the_recipe_lacks_is_one_line(tmp_path, capsys):
    ann = str(FIX / "single" / "config.yaml")
    assert main(["data", "show", "keypoints_synthetic", "data.dataset=coco", "data.format=deeplabcut",
                 f"data.train_ann={ann}", "data.val_ann=null", "data.skeleton=auto", "split=val", "--out",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "split 'val' is not built" in err
