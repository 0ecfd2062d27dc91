"""`posekit predict` never harms, drops or misreads what it is given: outputs never replace an
input (same path, hard link, symlink, a video mid-read), detections that match no image say so,
`--out` is a folder, boxes outside the image and wrong detector weights are one line, a video in
a folder is predicted, and the video codec is H.264 where OpenCV can write it."""
from __future__ import annotations

import json
import logging
import os

import cv2
import numpy as np
import pytest
import torch

from conftest import smoke_checkpoints

from posekit.cli import main

SMALLER = ["eval.flip_test=false", "data.input_size=64", "data.heatmap_size=16", "data.synthetic_image_size=96"]

pytestmark = pytest.mark.usefixtures("private_tempdir")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return smoke_checkpoints(tmp_path_factory, {"hourglass": SMALLER})("hourglass")


def _image(path, seed=0, size=(48, 64)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8))
    return path


def _video(path, frames=4):
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


def _predict(*args) -> int:
    return main(["predict", *map(str, args)])


def _frames(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    return n


# --- outputs never replace an input ---------------------------------------------------------------
def test_predict_never_overwrites_its_input_image(ckpt, tmp_path, capsys):
    photo = _image(tmp_path / "photo.png")
    before = photo.read_bytes()
    assert _predict(ckpt, photo, "--out", tmp_path) == 0
    assert photo.read_bytes() == before
    assert (tmp_path / "photo_2.png").is_file() and (tmp_path / "photo_2.json").is_file()
    out = capsys.readouterr()
    assert "would replace an input" in out.err and "1 output(s) renamed" in out.out


def test_predict_into_the_input_folder_keeps_every_input(ckpt, tmp_path, monkeypatch):
    photos = [_image(tmp_path / f"p{i}.png", seed=i) for i in range(2)]
    before = [p.read_bytes() for p in photos]
    monkeypatch.chdir(tmp_path)
    assert _predict(ckpt, ".", "--out", ".", "--no-progress") == 0
    assert [p.read_bytes() for p in photos] == before
    assert sorted(p.name for p in tmp_path.glob("*_2.png")) == ["p0_2.png", "p1_2.png"]


def test_predict_never_destroys_a_video_it_reads(ckpt, tmp_path):
    clip = _video(tmp_path / "clip.mp4")
    before = clip.read_bytes()
    assert _predict(ckpt, clip, "--out", tmp_path, "--box", "4,4,40,40", "--batch-size", "2") == 0
    assert clip.read_bytes() == before and _frames(clip) == 4
    assert _frames(tmp_path / "clip_2.mp4") == 4
    assert len((tmp_path / "clip_2.jsonl").read_text().splitlines()) == 4


@pytest.mark.parametrize("link", ["hard", "symbolic"])
def test_predict_never_writes_through_a_link_to_its_input(ckpt, tmp_path, link):
    photo = _image(tmp_path / "in" / "photo.png")
    before = photo.read_bytes()
    (tmp_path / "out").mkdir()
    (os.link if link == "hard" else os.symlink)(photo, tmp_path / "out" / "photo.png")
    assert _predict(ckpt, photo, "--out", tmp_path / "out") == 0
    assert photo.read_bytes() == before and (tmp_path / "out" / "photo.png").read_bytes() == before
    assert (tmp_path / "out" / "photo_2.png").is_file()


# --- boxes ----------------------------------------------------------------------------------------
def test_detections_whose_ids_match_no_image_say_so(ckpt, tmp_path, capsys):
    _image(tmp_path / "in" / "000000000001.png")
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([{"image_id": 785, "category_id": 1, "bbox": [2, 2, 30, 30], "score": 0.9}]))
    assert _predict(ckpt, tmp_path / "in", "--out", tmp_path / "out", "--boxes", dets) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no image_id matched" in err and "--images-json" in err
    assert not list(tmp_path.rglob("*.json"))[1:]  # refused before predicting: only dets.json is there


def test_no_input_getting_a_box_exits_non_zero(ckpt, tmp_path, capsys):
    _image(tmp_path / "000000000001.png")
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [2, 2, 30, 30], "score": 0.1}]))
    assert _predict(ckpt, tmp_path / "000000000001.png", "--out", tmp_path / "out", "--boxes", dets) == 1
    assert "no input got a box" in capsys.readouterr().err


def test_out_naming_a_file_is_refused_not_made_a_folder(ckpt, tmp_path, capsys):
    photo = _image(tmp_path / "photo.png")
    assert _predict(ckpt, photo, "--out", tmp_path / "result.png") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out is a folder" in err
    assert not (tmp_path / "result.png").exists()
    assert _predict(ckpt, photo, "--out", photo) == 2  # an existing file
    assert "is a file" in capsys.readouterr().err


def test_box_wholly_outside_the_image_is_refused(ckpt, tmp_path, capsys):
    photo = _image(tmp_path / "photo.png")  # 64 x 48
    assert _predict(ckpt, photo, "--out", tmp_path / "out", "--box", "500,10,20,20") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "wholly outside" in err and "64x48" in err
    assert _predict(ckpt, photo, "--out", tmp_path / "out", "--box=-10,-10,20,20") == 0  # overlapping: kept


# --- detector weights -----------------------------------------------------------------------------
def test_detector_weights_of_another_architecture_name_the_keys(ckpt, tmp_path, capsys):
    photo = _image(tmp_path / "photo.png")
    weights = tmp_path / "other.pt"
    torch.save({"layer.weight": torch.zeros(2, 2), "layer.bias": torch.zeros(2)}, weights)
    assert _predict(ckpt, photo, "--out", tmp_path / "out", "--detector", "fasterrcnn_mobilenet_320",
                    "--detector-weights", weights) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and len(err) < 600 and "keys differ" in err
    assert "2 unexpected (layer.weight, layer.bias)" in err and "missing" in err


def test_missing_detector_weights_file_is_file_not_found(ckpt, tmp_path, capsys):
    photo = _image(tmp_path / "photo.png")
    missing = tmp_path / "nope" / "det.pth"
    assert _predict(ckpt, photo, "--out", tmp_path / "out", "--detector", "fasterrcnn_mobilenet_320",
                    "--detector-weights", missing) == 2
    err = capsys.readouterr().err
    assert f"file not found: {missing}" in err and "unknown weights" not in err


# --- folders and video ----------------------------------------------------------------------------
def test_video_inside_a_folder_is_predicted_with_a_progress_bar_for_images(ckpt, tmp_path, capsys):
    _image(tmp_path / "in" / "a.png")
    _video(tmp_path / "in" / "sub" / "clip.mp4", frames=3)
    assert _predict(ckpt, tmp_path / "in", "--out", tmp_path / "out", "--box", "4,4,40,40") == 0
    assert (tmp_path / "out" / "a.png").is_file()
    assert _frames(tmp_path / "out" / "sub" / "clip.mp4") == 3
    assert len((tmp_path / "out" / "sub" / "clip.jsonl").read_text().splitlines()) == 3
    err = capsys.readouterr().err
    assert "image/s" in err and "/1 " in err  # the folder's progress bar (1 image), on stderr


def test_video_codec_is_h264_when_encodable_else_mp4v_with_one_note(tmp_path, monkeypatch, caplog):
    from posekit.data import video
    assert video.can_encode("mp4v") and not video.can_encode("ZZZZ")
    try:
        monkeypatch.setattr(video, "can_encode", lambda fourcc: fourcc == "avc1")
        video.default_fourcc.cache_clear()
        assert video.VideoWriter(tmp_path / "a.mp4").fourcc == "avc1"
        monkeypatch.setattr(video, "can_encode", lambda fourcc: False)
        video.default_fourcc.cache_clear()
        with caplog.at_level(logging.WARNING, logger="posekit"):
            assert video.VideoWriter(tmp_path / "b.mp4").fourcc == "mp4v"
            assert video.VideoWriter(tmp_path / "c.mp4").fourcc == "mp4v"
        assert sum("H.264" in r.getMessage() for r in caplog.records) == 1
    finally:
        video.default_fourcc.cache_clear()


def test_validation_detections_of_another_split_are_an_error(tmp_path):
    from posekit.data.synthetic.keypoints import SyntheticFigures
    from posekit.families.keypoints import detection_entries
    figures = SyntheticFigures(2, seed=5, image_size=64, min_people=1, max_people=1)
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([{"image_id": 785, "bbox": [0, 0, 5, 5], "score": 1.0, "category_id": 1}]))
    with pytest.raises(ValueError, match=r"dets\.json: no detection's image_id is an image of this split"):
        detection_entries(figures, path)


def test_picture_thresholds_are_range_checked_and_reach_the_drawing(tmp_path):
    """--kpt-thr / --person-thr outside [0, 1] are one line; a person under --person-thr is drawn
    greyed (Results.plot passes the threshold to the drawing)."""
    from posekit.cli import main
    from posekit.results import Results
    from posekit.skeletons import get_skeleton
    assert main(["predict", "nothing.pt", "x.png", "--person-thr", "1.5", "--out", str(tmp_path)]) == 2
    skeleton = get_skeleton("coco17")
    kps = np.stack([np.c_[np.linspace(20, 60, 17), np.linspace(10, 90, 17)] + 10 * p for p in range(2)])
    res = Results(keypoints=kps, scores=np.ones((2, 17)), skeleton=skeleton, person_scores=np.array([0.9, 0.1]),
                  image=np.zeros((120, 120, 3), np.uint8))
    confident = res.plot(person_threshold=0.0)
    greyed = res.plot(person_threshold=0.5)
    assert not np.array_equal(confident, greyed)
