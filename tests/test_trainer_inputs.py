"""What the trainer does with what it is handed: records the readers dropped are counted and
listed, validation that cannot work on its data stops the run at start, a too-small training
set names the batch size to use, and every logged metric carries its unit."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import tiny_task  # noqa: F401  (registers the "tiny" task)
from tiny_task import tiny_config
from posekit.data.formats.coco import COCORecordError
from posekit.data.robust import reader_skipped
from posekit.engine.checkpoint import load_checkpoint
from posekit.engine.recipes import load_config
from posekit.engine.trainer import train
from posekit.metrics import metric_unit

REPO = Path(__file__).resolve().parents[1]
SMALL_KEYPOINTS = ["data.input_size=64", "data.heatmap_size=16", "model.args.n_stacks=1", "model.args.n_feats=16",
                   "train.batch_size=2", "train.max_steps=2", "train.val_every=2", "train.log_every=1",
                   "train.num_workers=0", "train.warmup_steps=0", "eval.batch_size=8", "eval.flip_test=false"]


def _broken_coco(tmp_path: Path, realdata: Path) -> Path:
    """The shared COCO file plus an image whose file is missing, one zero-area box and one NaN keypoint."""
    raw = json.loads((realdata / "coco" / "test_coco.json").read_text())
    raw["images"].append({"id": 999, "file_name": "no_such_photo.jpg", "width": 640, "height": 480})
    ann = {a["id"]: a for a in raw["annotations"]}
    ann[442619]["bbox"] = [280.0, 44.0, 0.0, 346.0]  # zero width
    ann[437295]["keypoints"][0] = float("nan")
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(raw))  # Python writes NaN as the (non-standard) literal NaN
    return path


def _keypoints_config(tmp_path, realdata, ann, *extra):
    return load_config(REPO / "configs" / "coco_keypoints.yaml", [
        f"data.root={realdata / 'coco'}", f"data.train_ann={ann}", "data.train_images=images",
        "data.val_ann=test_coco.json", "data.val_images=images", f"out_dir={tmp_path / 'runs'}", *SMALL_KEYPOINTS,
        *extra])


def test_coco_records_dropped_while_reading_are_counted_and_listed(tmp_path, realdata, capsys):
    ann = _broken_coco(tmp_path, realdata)
    run = train(_keypoints_config(tmp_path, realdata, ann))
    listed = (run / "bad_records.txt").read_text().splitlines()
    assert len(listed) == 3, listed
    assert all(line.startswith("train\t") and "broken.json" in line for line in listed)
    text = "\n".join(listed)
    assert "no_such_photo.jpg" in text and "annotation id 442619" in text and "annotation id 437295" in text
    out = capsys.readouterr().out
    assert "train data: 3 bad record(s) skipped while reading" in out and "bad_records.txt" in out
    assert (run / "last.pt").is_file()


def test_coco_bad_record_with_on_bad_record_error_stops_naming_file_and_record(tmp_path, realdata):
    ann = _broken_coco(tmp_path, realdata)
    with pytest.raises(COCORecordError) as caught:
        train(_keypoints_config(tmp_path, realdata, ann, "data.on_bad_record=error"))
    message = str(caught.value)
    assert "\n" not in message and "broken.json" in message and "no_such_photo.jpg" in message


def test_openpose_reader_skips_reach_the_trainers_report(tmp_path, realdata):
    """The generic path: the skipped list is found on whatever the family wraps its reader in."""
    from posekit.families import build_task
    ann = _broken_coco(tmp_path, realdata)
    cfg = load_config(REPO / "configs" / "coco_openpose.yaml", [
        f"data.root={realdata / 'coco'}", f"data.train_ann={ann}", f"data.val_ann={ann}",
        "data.on_bad_record=skip"])
    datasets = build_task(cfg).build_datasets()
    found = reader_skipped(datasets["train"])
    assert len(found) == 3 and all("broken.json" in m for m in found)


def test_validation_that_cannot_score_its_data_fails_at_start(tmp_path, realdata):
    """hourglass on a JSON without head boxes: PCKh cannot be computed; said before any step."""
    mpii = realdata / "mpii" / "mmpose"
    cfg = load_config(REPO / "configs" / "mpii_hourglass4.yaml", [
        f"data.root={mpii}", "data.dataset=mpii", "data.train_file=test_mpii.json", "data.val_file=test_mpii.json",
        "data.image_dir=images", f"out_dir={tmp_path / 'runs'}", "train.max_steps=2", "train.batch_size=2",
        "train.num_workers=0"])
    with pytest.raises(ValueError, match=r"^validation cannot run on this data: PCKh needs head sizes") as caught:
        train(cfg)
    assert "\n" not in str(caught.value)
    assert not list((tmp_path / "runs").rglob("last.pt"))  # nothing trained


def test_last_checkpoint_is_written_before_validating(tmp_path, monkeypatch):
    """A validation that fails still leaves the steps trained so far in last.pt."""
    import posekit.engine.trainer as trainer

    def failing(*args, **kwargs):
        raise RuntimeError("validation broke")

    monkeypatch.setattr(trainer, "evaluate", failing)
    cfg = tiny_config(tmp_path, max_steps=6, val_every=3)
    with pytest.raises(RuntimeError, match="validation broke"):
        train(cfg)
    (last,) = (tmp_path).rglob("last.pt")
    assert load_checkpoint(last)["step"] == 3


def test_training_set_smaller_than_a_batch_names_the_batch_size_to_use(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=2, batch_size=64)
    n = cfg.data.n_train
    with pytest.raises(ValueError, match=rf"training set has {n} samples, fewer than one batch of 64: "
                                         rf"set train\.batch_size<={n}$"):
        train(cfg)


def test_logged_metrics_carry_their_units_and_the_json_records_them(tmp_path, realdata, capsys):
    run = train(_keypoints_config(tmp_path, realdata, "test_coco.json"))
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("step 2: "))
    assert " (0-1)" in line and line.split("AP=")[1].split()[1] == "(0-1)"
    doc = json.loads((run / "validation.json").read_text())
    assert doc["step"] == 2 and doc["units"]["AP"] == "(0-1)" and doc["units"]["pck"] == "%"
    ap = doc["metrics"]["AP"]
    assert ap is None or (0.0 <= ap <= 1.0 and not math.isnan(ap))  # a fraction, never rescaled


@pytest.mark.parametrize("name, unit", [("pckh", "%"), ("pckh@0.1", "%"), ("pck/head", "%"), ("pck_torso@0.2", "%"),
                                        ("AP", "(0-1)"), ("AP_M", "(0-1)"), ("p1_best_j16", "mm"), ("nme", "%"),
                                        ("pckh_samples", ""), ("pck_seg_images", ""), ("something_new", "")])
def test_each_metric_name_has_its_declared_unit(name, unit):
    assert metric_unit(name) == unit
