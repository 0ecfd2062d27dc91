"""`posekit predict` and the Python Predictor as users run them: many people per photo (box
lists, COCO detections, a torchvision detector), videos, folders with bad files, output names
that never collide, strict JSON, batching, .onnx files and the onnxruntime backend."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch

from conftest import smoke_checkpoints

from posekit.cli import main
from posekit.data.box_files import normalize_boxes
from posekit.engine.predictor import Predictor, results_json
from posekit.metrics.coco import topdown_person_scores
from posekit.results import Results

SMALLER = ["eval.flip_test=false", "data.input_size=64", "data.heatmap_size=16", "data.synthetic_image_size=96"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return smoke_checkpoints(tmp_path_factory, {"hourglass": SMALLER})


pytestmark = pytest.mark.usefixtures("private_tempdir")  # the ONNX export cache stays in the module's folder


def _image(path, seed=0, size=(96, 128)):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image[..., ::-1])
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _strict_load(path):
    def no_constants(token):
        raise AssertionError(f"{path}: non-strict JSON token {token}")
    return json.loads(path.read_text(), parse_constant=no_constants)


def _predict(*args) -> int:
    return main(["predict", *map(str, args)])


# --- many people per photo ------------------------------------------------------------------------
def test_box_list_gives_one_result_with_every_person(checkpoint, tmp_path, capsys):
    ckpt = checkpoint("hourglass")
    image = _image(tmp_path / "in" / "two.jpg")
    boxes = [[5.0, 4.0, 40.0, 80.0], [60.0, 10.0, 50.0, 70.0]]
    assert _predict(ckpt, tmp_path / "in" / "two.jpg", "--out", tmp_path / "out",
                    *sum((["--box", ",".join(map(str, b))] for b in boxes), [])) == 0
    got = _strict_load(tmp_path / "out" / "two.json")
    assert np.asarray(got["keypoints"]).shape == (2, 16, 2) and got["boxes"] == boxes
    predictor = Predictor(ckpt)
    singles = [predictor(image, boxes=b) for b in boxes]
    for p, single in enumerate(singles):
        np.testing.assert_allclose(got["keypoints"][p], single.keypoints[0], atol=1e-4)
        expected = topdown_person_scores(single.scores, np.ones(1))[0]  # box score 1
        assert got["person_scores"][p] == pytest.approx(float(expected), rel=1e-4, abs=1e-9)
    # the API: boxes with scores, person score = box score x mean keypoint score above 0.2 (MMPose)
    res = predictor(image, boxes=[b + [0.5] for b in boxes])
    assert len(res) == 2 and res.boxes.tolist() == boxes
    above = res.scores > 0.2
    mean = np.where(above.any(1), (res.scores * above).sum(1) / np.maximum(above.sum(1), 1), 0.0)
    np.testing.assert_allclose(res.person_scores, 0.5 * mean)
    empty = predictor(image, boxes=[])
    assert len(empty) == 0 and empty.keypoints.shape == (0, 16, 2)
    # one box keeps the single-person result of before
    assert len(predictor(image, boxes=boxes[0])) == 1


def test_coco_detections_by_numeric_stem_and_threshold(checkpoint, tmp_path, capsys):
    ckpt = checkpoint("hourglass")
    folder = tmp_path / "images"
    for n, image_id in enumerate((785, 40083, 7)):
        _image(folder / f"{image_id:012d}.jpg", seed=n)
    dets = [{"image_id": 785, "category_id": 1, "bbox": [5, 5, 40, 70], "score": 0.9},
            {"image_id": 785, "category_id": 1, "bbox": [50, 8, 40, 70], "score": 0.8},
            {"image_id": 785, "category_id": 1, "bbox": [20, 20, 30, 30], "score": 0.1},  # below --box-thr
            {"image_id": 40083, "category_id": 1, "bbox": [10, 10, 60, 60], "score": 0.95}]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    assert _predict(ckpt, folder, "--out", tmp_path / "out", "--boxes", tmp_path / "dets.json",
                    "--box-thr", "0.3") == 0
    captured = capsys.readouterr()
    assert len(_strict_load(tmp_path / "out" / "000000000785.json")["keypoints"]) == 2
    assert len(_strict_load(tmp_path / "out" / "000000040083.json")["keypoints"]) == 1
    # image 7 has no detection: an empty result, said once
    assert _strict_load(tmp_path / "out" / "000000000007.json")["keypoints"] == []
    assert captured.err.count("no box") == 1 and "000000000007" in captured.err
    assert "1 input(s) had no box" in captured.out


def test_box_file_by_name_and_images_json(checkpoint, tmp_path):
    ckpt = checkpoint("hourglass")
    _image(tmp_path / "a" / "cat.jpg")
    (tmp_path / "boxes.json").write_text(json.dumps({"cat.jpg": [[4, 4, 30, 60, 0.9], [40, 4, 30, 60, 0.2]]}))
    assert _predict(ckpt, tmp_path / "a", "--out", tmp_path / "o1", "--boxes", tmp_path / "boxes.json",
                    "--box-thr", "0") == 0
    assert np.asarray(_strict_load(tmp_path / "o1" / "cat.json")["person_scores"]).shape == (2,)
    # COCO ids through the images table of an annotation file
    (tmp_path / "dets.json").write_text(json.dumps([{"image_id": 3, "bbox": [4, 4, 30, 60], "score": 1.0}]))
    (tmp_path / "ann.json").write_text(json.dumps({"images": [{"id": 3, "file_name": "cat.jpg"}]}))
    assert _predict(ckpt, tmp_path / "a", "--out", tmp_path / "o2", "--boxes", tmp_path / "dets.json",
                    "--images-json", tmp_path / "ann.json") == 0
    assert _strict_load(tmp_path / "o2" / "cat.json")["boxes"] == [[4, 4, 30, 60]]


def test_the_shared_detections_file(checkpoint, realdata, tmp_path):
    """The standard top-down protocol file next to its COCO images: boxes above 0.3 each give a person."""
    coco = realdata / "coco"
    dets = json.loads((coco / "test_coco_det_AP_H_56.json").read_text())
    image = coco / "images" / "000000000785.jpg"
    assert _predict(checkpoint("hourglass"), image, "--out", tmp_path, "--boxes", coco / "test_coco_det_AP_H_56.json",
                    "--box-thr", "0.3", "--batch-size", "8") == 0
    want = sum(1 for d in dets if d["image_id"] == 785 and d["score"] >= 0.3)
    assert len(_strict_load(tmp_path / "000000000785.json")["keypoints"]) == want > 0


def test_detector_wiring_offline(checkpoint, tmp_path, capsys):
    """A torchvision Faster R-CNN with random weights (no download), its person logit raised so
    that it finds "people": its boxes become the persons of the result (local weights file)."""
    from posekit.engine.detector import PersonDetector
    image = _image(tmp_path / "in" / "p.jpg", size=(120, 160))
    torch.manual_seed(0)
    detector = PersonDetector("fasterrcnn_mobilenet_320", weights=None, score_threshold=0.5)
    assert detector([image])[0].shape[1] == 5  # random heads: person scores ~1/91, below 0.5
    detector.model.roi_heads.box_predictor.cls_score.bias.data[1] += 10.0
    (rows,) = detector([image])
    assert len(rows) > 3 and rows.shape[1] == 5 and np.isfinite(rows).all()
    assert (rows[:, 2:4] > 0).all() and (rows[:, 4] >= 0.5).all() and (np.diff(rows[:, 4]) <= 0).all()
    torch.save(detector.model.state_dict(), tmp_path / "det.pt")
    assert _predict(checkpoint("hourglass"), tmp_path / "in" / "p.jpg", "--out", tmp_path / "out", "--detector",
                    "fasterrcnn_mobilenet_320", "--detector-weights", tmp_path / "det.pt", "--box-thr", "0.5",
                    "--max-boxes", "3") == 0
    got = _strict_load(tmp_path / "out" / "p.json")
    assert len(got["keypoints"]) == 3
    np.testing.assert_allclose(got["boxes"], rows[:3, :4], atol=1e-3)
    np.testing.assert_allclose(got["meta"]["box_scores"], rows[:3, 4], atol=1e-5)
    with pytest.raises(ValueError, match="unknown detector"):
        PersonDetector("yolo", weights=None)


def test_bottom_up_ignores_boxes_with_a_note(checkpoint, tmp_path, capsys):
    ckpt = checkpoint("openpose")
    _image(tmp_path / "in" / "crowd.jpg")
    assert _predict(ckpt, tmp_path / "in", "--out", tmp_path / "a", "--box", "1,2,30,40") == 0
    assert "finds every person itself" in capsys.readouterr().err
    assert _predict(ckpt, tmp_path / "in", "--out", tmp_path / "b") == 0
    assert _strict_load(tmp_path / "a" / "crowd.json")["keypoints"] == _strict_load(tmp_path / "b" / "crowd.json")["keypoints"]


# --- bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("box", ["nan,1,2,3", "1,2,inf,4", "1,2,0,4", "1,2,-3,4", "1,2,3", "a,b,c,d"])
def test_bad_box_is_one_line(checkpoint, tmp_path, capsys, box):
    _image(tmp_path / "x.jpg")
    assert _predict(checkpoint("hourglass"), tmp_path / "x.jpg", "--out", tmp_path / "o", "--box", box) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("posekit predict: error: --box") and "\n" not in err
    with pytest.raises(ValueError, match="finite|positive"):
        normalize_boxes([float("nan"), 0, 10, 10])


def test_json_is_strict_non_finite_is_null():
    res = Results(keypoints=np.array([[[1.0, np.nan], [np.inf, 2.0]]]), scores=np.array([[0.5, np.nan]]),
                  skeleton=_two_joint_skeleton())
    text = json.dumps(results_json(res), allow_nan=False)
    data = json.loads(text)
    assert data["keypoints"] == [[[1.0, None], [None, 2.0]]] and data["scores"] == [[0.5, None]]


def _two_joint_skeleton():
    from posekit.skeletons import landmarks
    return landmarks(2)


def test_folder_with_a_bad_file_goes_on(checkpoint, tmp_path, capsys):
    folder = tmp_path / "imgs"
    _image(folder / "a.jpg")
    (folder / "b.jpg").write_bytes(b"")  # zero bytes
    (folder / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # corrupt
    _image(folder / "d.jpg", seed=3)
    assert _predict(checkpoint("hourglass"), folder, "--out", tmp_path / "out") == 1  # documented: some failed
    captured = capsys.readouterr()
    skipped = [line for line in captured.err.splitlines() if "skipped" in line]
    assert len(skipped) == 2 and any("b.jpg" in s for s in skipped) and any("c.png" in s for s in skipped)
    assert (tmp_path / "out" / "a.json").is_file() and (tmp_path / "out" / "d.json").is_file()
    assert "2 input(s) could not be read" in captured.out
    assert _predict(checkpoint("hourglass"), tmp_path / "missing.jpg", "--out", tmp_path / "o") == 2


def test_output_names_never_collide(checkpoint, tmp_path):
    ckpt = checkpoint("hourglass")
    _image(tmp_path / "x" / "img.jpg", seed=1)
    _image(tmp_path / "y" / "img.jpg", seed=2)
    assert _predict(ckpt, tmp_path / "x" / "img.jpg", tmp_path / "y" / "img.jpg", "--out", tmp_path / "o1") == 0
    a, b = _strict_load(tmp_path / "o1" / "img.json"), _strict_load(tmp_path / "o1" / "img_2.json")
    assert a["path"].endswith("x/img.jpg") and b["path"].endswith("y/img.jpg")
    assert (tmp_path / "o1" / "img.png").is_file() and (tmp_path / "o1" / "img_2.png").is_file()
    # a folder mirrors its sub-folders; same stem, other extension -> suffix
    folder = tmp_path / "tree"
    _image(folder / "img.jpg", seed=3)
    _image(folder / "img.png", seed=4)
    _image(folder / "sub" / "img.jpg", seed=5)
    assert _predict(ckpt, folder, "--out", tmp_path / "o2") == 0
    names = sorted(p.relative_to(tmp_path / "o2").as_posix() for p in (tmp_path / "o2").rglob("*.json"))
    assert names == ["img.json", "img_2.json", "sub/img.json"]
    assert _strict_load(tmp_path / "o2" / "img_2.json")["path"].endswith("img.png")  # sorted input order


def test_folder_is_batched(checkpoint, tmp_path, monkeypatch):
    ckpt = checkpoint("hourglass")
    folder = tmp_path / "many"
    images = [_image(folder / f"{i}.jpg", seed=i) for i in range(5)]
    calls = []
    original = Predictor.run

    def spy(self, items, **kw):
        calls.append(len(items))
        return original(self, items, **kw)
    monkeypatch.setattr(Predictor, "run", spy)
    assert _predict(ckpt, folder, "--out", tmp_path / "out", "--batch-size", "2") == 0
    assert calls == [2, 2, 1]
    monkeypatch.setattr(Predictor, "run", original)
    one = Predictor(ckpt)
    for i, image in enumerate(images):
        np.testing.assert_allclose(_strict_load(tmp_path / "out" / f"{i}.json")["keypoints"],
                                   one(image).keypoints, atol=1e-6)


# --- video ----------------------------------------------------------------------------------------
def test_video_gives_mp4_and_frame_json(checkpoint, tmp_path, capsys):
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(5):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    assert _predict(checkpoint("hourglass"), path, "--out", tmp_path / "out", "--batch-size", "2",
                    "--box", "4,4,40,40") == 0
    err = capsys.readouterr().err
    assert "clip.mp4" in err and "frame" in err  # the progress bar
    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (64, 48)
    cap.release()
    lines = (tmp_path / "out" / "clip.jsonl").read_text().splitlines()
    frames = [json.loads(line, parse_constant=lambda t: pytest.fail(t)) for line in lines]
    assert [f["frame"] for f in frames] == list(range(5))
    assert frames[1]["time_s"] == pytest.approx(0.1) and all(np.asarray(f["keypoints"]).shape == (1, 16, 2)
                                                            for f in frames)
    assert frames[0]["boxes"] == [[4, 4, 40, 40]]


def test_video_writer_roundtrip(tmp_path):
    from posekit.data.video import VideoReader, VideoWriter
    with VideoWriter(tmp_path / "v.mp4", fps=12) as w:
        for i in range(3):
            w.write(np.full((32, 40, 3), 40 * i, np.uint8))
        w.write(np.zeros((10, 10, 3), np.uint8))  # another size: resized to the first
    reader = VideoReader(tmp_path / "v.mp4")
    assert reader.frame_count == 4 and reader.size == (40, 32) and reader.fps == pytest.approx(12)
    frames = list(reader)
    assert len(frames) == 4 and frames[0].shape == (32, 40, 3)
    assert abs(float(frames[2].mean()) - 80) < 8
    with pytest.raises(ValueError):
        VideoWriter(tmp_path / "bad.mp4").write(np.zeros((4, 4), np.uint8))
    (tmp_path / "not.mp4").write_bytes(b"nope")
    with pytest.raises(ValueError, match="cannot open video"):
        VideoReader(tmp_path / "not.mp4")


# --- onnx / backends ----------------------------------------------------------------------------
def test_predict_onnx_file_and_backend_flag(checkpoint, tmp_path, capsys):
    ckpt = checkpoint("hourglass")
    _image(tmp_path / "in" / "p.jpg")
    assert main(["export", str(ckpt), "--out", str(tmp_path / "hg.onnx")]) == 0
    assert "metadata" in capsys.readouterr().out
    assert _predict(ckpt, tmp_path / "in", "--out", tmp_path / "pt", "--box", "5,5,50,60") == 0
    assert _predict(tmp_path / "hg.onnx", tmp_path / "in", "--out", tmp_path / "onnx", "--box", "5,5,50,60") == 0
    assert "(onnxruntime)" in capsys.readouterr().out
    assert _predict(ckpt, tmp_path / "in", "--out", tmp_path / "ort", "--backend", "onnxruntime",
                    "--box", "5,5,50,60") == 0
    ref = np.asarray(_strict_load(tmp_path / "pt" / "p.json")["keypoints"])
    for other in ("onnx", "ort"):
        np.testing.assert_allclose(_strict_load(tmp_path / other / "p.json")["keypoints"], ref, atol=1e-3)


def test_lifter_takes_pose_json(checkpoint, tmp_path):
    ckpt = checkpoint("gmh_mdn")
    task = Predictor(ckpt).task
    (pose,) = task.sample_inputs(task.build_datasets(("val",)), 1)
    (tmp_path / "pose.json").write_text(json.dumps({"skeleton": "h36m16", "keypoints": pose["keypoints"].tolist()}))
    assert _predict(ckpt, tmp_path / "pose.json", "--out", tmp_path / "out", "--box", "1,1,5,5") == 0
    got = _strict_load(tmp_path / "out" / "pose.json")
    assert np.asarray(got["hypotheses"]).shape[-2:] == (17, 3)
    assert all(math.isfinite(v) for v in np.asarray(got["keypoints"]).ravel())


def test_box_file_errors_name_file_and_record(tmp_path):
    from posekit.data.box_files import load_box_file
    (tmp_path / "d.json").write_text('[{"image_id": 1, "bbox": [1, 2, 3, 4], "score": 1},'
                                     ' {"image_id": 1, "bbox": [1, 2, NaN, 4], "score": 1}]')
    with pytest.raises(ValueError, match=r"d.json: record 1: bbox must be 4 finite"):
        load_box_file(tmp_path / "d.json")
    (tmp_path / "m.json").write_text('{"a.jpg": [[1, 2, 0, 4]]}')
    with pytest.raises(ValueError, match=r"m.json: 'a.jpg'\[0\]"):
        load_box_file(tmp_path / "m.json")
    (tmp_path / "s.json").write_text('"boxes"')
    with pytest.raises(ValueError, match="s.json: expected COCO detections"):
        load_box_file(tmp_path / "s.json")
    (tmp_path / "ok.json").write_text('[{"image_id": 5, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 0.5}]')
    boxes = load_box_file(tmp_path / "ok.json")
    assert boxes.lookup("dir/000005.jpg").tolist() == [[1, 2, 3, 4, 0.5]] and boxes.lookup("6.jpg") is None
    assert load_box_file(tmp_path / "ok.json", category_id=1).lookup("5.jpg") is None
