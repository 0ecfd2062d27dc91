"""`posekit predict` never deletes what the run did not create, and a boxes file (or `--box`,
`--images-json`) with a bad value is one line naming the file and the record (issue 20)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import smoke_checkpoints
from test_predict_safety import _video as _safety_video

from posekit.cli import main
from posekit.data.sample import BadRecordError
from posekit.data.box_files import load_box_file

SMALLER = ["eval.flip_test=false", "data.input_size=64", "data.heatmap_size=16", "data.synthetic_image_size=96"]

pytestmark = pytest.mark.usefixtures("private_tempdir")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return smoke_checkpoints(tmp_path_factory, {"hourglass": SMALLER})("hourglass")


def _video(path, frames=3):
    return _safety_video(path, frames)


def _decodes_nothing(path):
    """An .mp4 that OpenCV opens but decodes no frame from (its index cut short)."""
    data = _video(path.parent / "whole.tmp.mp4", frames=4).read_bytes()
    (path.parent / "whole.tmp.mp4").unlink()
    path.write_bytes(data[:-200])
    cap = cv2.VideoCapture(str(path))
    opened, decoded = cap.isOpened(), cap.isOpened() and cap.read()[0]
    cap.release()
    if not opened or decoded:
        pytest.skip("this OpenCV build reads a cut mp4 differently: no opens-but-decodes-nothing video to test")
    return path


def _predict(*args) -> int:
    return main(["predict", *map(str, args)])


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# --- a video that decodes no frame ---------------------------------------------------------------
def test_video_that_decodes_no_frame_never_deletes_an_earlier_result(ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert _predict(ckpt, _video(tmp_path / "good" / "clip.mp4"), "--out", out, "--box", "4,4,40,40") == 0
    before = {name: (out / name).read_bytes() for name in ("clip.mp4", "clip.jsonl")}
    capsys.readouterr()
    broken = _decodes_nothing(tmp_path / "broken" / "clip.mp4")  # the same stem: its outputs are out/clip.*
    assert _predict(ckpt, broken, "--out", out, "--box", "4,4,40,40") == 1
    assert {name: (out / name).read_bytes() for name in before} == before
    assert _files(out) == ["clip.jsonl", "clip.mp4"]  # no partial file left behind
    err = [line for line in capsys.readouterr().err.splitlines() if "posekit predict" in line]
    assert err == [f"posekit predict: skipped: {broken}: the video opens but no frame could be decoded (empty, "
                   "truncated, or a codec OpenCV lacks): nothing was written for it"]


def test_video_that_decodes_no_frame_beside_its_output_keeps_the_input(ckpt, tmp_path, capsys):
    broken = _decodes_nothing(tmp_path / "clip.mp4")
    data = broken.read_bytes()
    assert _predict(ckpt, broken, "--out", tmp_path, "--box", "4,4,40,40") == 1
    assert broken.read_bytes() == data and _files(tmp_path) == ["clip.mp4"]
    assert "could not be read and were skipped" in capsys.readouterr().out


def test_video_in_a_folder_that_decodes_no_frame_leaves_no_folder_behind(ckpt, tmp_path, capsys):
    _video(tmp_path / "in" / "good.mp4")
    _decodes_nothing(tmp_path / "in" / "sub" / "bad.mp4")
    assert _predict(ckpt, tmp_path / "in", "--out", tmp_path / "out", "--box", "4,4,40,40") == 1
    assert _files(tmp_path / "out") == ["good.jsonl", "good.mp4"]  # out/sub was made for bad.mp4 and removed
    assert "1 prediction(s) written" in capsys.readouterr().out


def test_video_writer_touches_its_path_only_when_a_frame_was_written(tmp_path):
    from posekit.data.video import VideoReader, VideoWriter
    earlier = tmp_path / "v.mp4"
    earlier.write_bytes(b"an earlier result")
    with VideoWriter(earlier):
        pass  # no frame
    assert earlier.read_bytes() == b"an earlier result"
    with pytest.raises(RuntimeError), VideoWriter(earlier) as w:
        w.write(np.zeros((16, 16, 3), np.uint8))
        raise RuntimeError("interrupted mid-video")
    assert earlier.read_bytes() == b"an earlier result" and _files(tmp_path) == ["v.mp4"]
    with VideoWriter(earlier) as w:
        w.write(np.zeros((16, 16, 3), np.uint8))
        assert earlier.read_bytes() == b"an earlier result"  # the frames go to a partial file first
    assert len(list(VideoReader(earlier))) == 1 and _files(tmp_path) == ["v.mp4"]


# --- boxes files: every bad value is one line naming the file and the record --------------------
def _record(**change):
    rec = {"image_id": 785, "category_id": 1, "bbox": [10, 20, 30, 40], "score": 0.9}
    rec.update(change)
    return {k: v for k, v in rec.items() if v != "DROP"}


@pytest.mark.parametrize("field, raw, says", [
    ("image_id", "785.9", "image_id must be an integer (an id is never rounded), got 785.9"),
    ("image_id", "true", "image_id must be an integer"),
    ("image_id", "null", "image_id must be an integer"),
    ("image_id", "Infinity", "got Infinity (NaN and Infinity are not JSON numbers)"),
    ("bbox", "[10, 20, Infinity, 40]", "bbox must be 4 finite numbers [x, y, w, h], got [10, 20, Infinity, 40] (NaN and"),
    ("bbox", "[1e308, 20, 30, 40]", "bbox must be 4 finite numbers within +-1000000 px"),
    ("bbox", "[10, 20, 0, 40]", "positive w, h"),
    ("bbox", '["10", 20, 30, 40]', "bbox must be 4 finite numbers [x, y, w, h]"),
    ("bbox", "[10, 20, 30]", "bbox must be 4 finite numbers [x, y, w, h]"),
    ("score", "NaN", "score must be a number in [0, 1] (or absent), got NaN"),
    ("score", "1.5", "score must be a number in [0, 1]"),
    ("category_id", "null", "category_id must be an integer"),
    ("category_id", '"person"', "category_id must be an integer"),
])
def test_boxes_file_bad_value_is_refused_naming_file_and_record(tmp_path, field, raw, says):
    good = json.dumps(_record())
    bad = json.dumps(_record(**{field: "@@"})).replace('"@@"', raw)
    path = tmp_path / "dets.json"
    path.write_text(f"[{good}, {bad}]")
    with pytest.raises(BadRecordError) as e:
        load_box_file(path)
    assert str(e.value).startswith(f"{path}: record 1: ") and says in str(e.value)
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_boxes_file_accepts_integral_and_digit_ids_and_keeps_their_values(tmp_path):
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([_record(image_id=785.0), _record(image_id="785", score="DROP"),
                                _record(image_id=786, bbox=[1, 2, 3, 4, 0.25], score="DROP")]))
    boxes = load_box_file(path)
    assert sorted(boxes.by_id) == [785, 786]
    assert boxes.lookup("000000000785.jpg").tolist() == [[10, 20, 30, 40, 0.9], [10, 20, 30, 40, 1.0]]
    assert boxes.lookup("786.png").tolist() == [[1, 2, 3, 4, 0.25]]
    assert boxes.lookup("²³.jpg") is None  # str.isdigit() says yes, int() refuses: no id, and no crash


def test_boxes_of_several_categories_keep_person_with_a_note_or_are_refused(tmp_path):
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([_record(), _record(category_id=3, bbox=[0, 0, 5, 5]), _record(category_id="DROP")]))
    boxes = load_box_file(path)
    assert boxes.lookup("785.jpg").tolist() == [[10, 20, 30, 40, 0.9]] * 2  # person, and the one with no category
    assert len(boxes.notes) == 1 and "keeping COCO's person (category_id 1), 1 of 3 box(es) dropped" in boxes.notes[0]
    assert len(load_box_file(path, category_id="all").lookup("785.jpg")) == 3
    assert load_box_file(path, category_id=3).lookup("785.jpg")[:, 2].tolist() == [5, 30]
    path.write_text(json.dumps([_record(category_id=2), _record(category_id=3)]))
    with pytest.raises(ValueError, match=r"dets\.json: boxes of 2 categories \(2, 3\) and none is COCO's person"):
        load_box_file(path)
    path.write_text(json.dumps([_record(category_id=18)]))  # one category (e.g. dogs): every box, no note
    assert len(load_box_file(path).lookup("785.jpg")) == 1 and not load_box_file(path).notes


def test_images_json_bad_id_or_file_name_is_one_line_naming_it(tmp_path):
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([_record()]))
    images = tmp_path / "images.json"
    for entry, says in ((1, "images[1]: id must be an integer (an id is never rounded), got 785.9"),
                        (2, "images[1]: file_name must be a file name, got None"),
                        (3, "images[1]: file_name 'a.jpg' is listed with id 1 and id 785")):
        bad = {1: {"id": 785.9, "file_name": "b.jpg"}, 2: {"id": 785, "file_name": None},
               3: {"id": 785, "file_name": "a.jpg"}}[entry]
        images.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}, bad]}))
        with pytest.raises(BadRecordError, match=rf"^{images}: " + says.replace("[", r"\[").replace("]", r"\]")
                           .replace("(", r"\(").replace(")", r"\)")):
            load_box_file(dets, images_json=images)
    images.write_text('{"images": [{"id": 785, "file_name": "photo.jpg"}], "info": {"x": NaN}}')
    assert load_box_file(dets, images_json=images).lookup("dir/photo.jpg").tolist() == [[10, 20, 30, 40, 0.9]]


def test_real_coco_detections_still_read_unchanged(realdata):
    raw = json.loads((realdata / "coco" / "test_coco_det_AP_H_56.json").read_text())
    boxes = load_box_file(realdata / "coco" / "test_coco_det_AP_H_56.json")
    assert sum(len(v) for v in boxes.by_id.values()) == len(raw) and not boxes.notes
    first = boxes.lookup("000000000785.jpg")[0]
    want = next(r for r in raw if r["image_id"] == 785)
    assert first.tolist() == [*want["bbox"], want["score"]]


# --- through the command line: one line, exit 2, never "internal error" ------------------------
def test_predict_with_a_bad_boxes_file_says_one_line_naming_file_and_record(ckpt, tmp_path, capsys):
    photo = tmp_path / "000000000785.png"
    cv2.imwrite(str(photo), np.zeros((48, 64, 3), np.uint8))
    dets = tmp_path / "dets.json"
    dets.write_text('[{"image_id": 785.9, "category_id": 1, "bbox": [2, 2, 30, 30], "score": 0.9}]')
    assert _predict(ckpt, photo, "--out", tmp_path / "out", "--boxes", dets) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"posekit predict: error: {dets}: record 0: image_id must be an integer (an id is never "
                   "rounded), got 785.9")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("box, says", [
    ("1e308,0,10,10", "--box must be within +-1000000 px"),
    ("inf,0,10,10", "--box must be finite numbers"),
    ("0,0,10,10,1.5", "--box: the score (5th value) must be in [0, 1]"),
    ("0,0,-1,10", "--box must have positive w and h"),
])
def test_predict_bad_box_value_is_one_line_before_the_model_loads(tmp_path, capsys, box, says):
    fake = tmp_path / "model.pt"
    fake.write_bytes(b"never loaded: --box is checked first")
    photo = tmp_path / "p.png"
    cv2.imwrite(str(photo), np.zeros((8, 8, 3), np.uint8))
    assert _predict(fake, photo, "--out", tmp_path / "out", f"--box={box}") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("posekit predict: error: ") and says in err


def test_box_category_takes_an_id_or_all_and_refuses_other_text(tmp_path, capsys):
    from posekit.cli import build_parser
    parse = build_parser().parse_args
    assert parse(["predict", "m.pt", "x.png", "--out", "o", "--box-category", "all"]).box_category == "all"
    assert parse(["predict", "m.pt", "x.png", "--out", "o", "--box-category", "3"]).box_category == 3
    with pytest.raises(SystemExit) as e:  # argparse: usage and one error line, exit 2
        _predict("m.pt", "x.png", "--out", tmp_path, "--box-category", "person")
    assert e.value.code == 2
    assert "--box-category: expected an integer COCO category id or 'all', got 'person'" in capsys.readouterr().err


def test_predict_with_detections_of_several_categories_keeps_person_and_says_so(ckpt, tmp_path, capsys):
    photo = tmp_path / "000000000785.png"
    cv2.imwrite(str(photo), np.zeros((48, 64, 3), np.uint8))
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([_record(bbox=[2, 2, 30, 30]), _record(category_id=3, bbox=[1, 1, 5, 5])]))
    assert _predict(ckpt, photo, "--out", tmp_path / "out", "--boxes", dets) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert notes == [f"posekit predict: note: {dets}: boxes of 2 categories (1, 3): keeping COCO's person "
                     "(category_id 1), 1 of 2 box(es) dropped (--box-category ID keeps another, --box-category all "
                     "keeps every box)"]
    assert json.loads((tmp_path / "out" / "000000000785.json").read_text())["boxes"] == [[2, 2, 30, 30]]
