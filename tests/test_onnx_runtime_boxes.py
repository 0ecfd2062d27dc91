"""Person boxes (--box, --boxes, `boxes=`) on the torch-free .onnx path: read by the numpy
`posekit.data.box_files`, one box or many per image, and the same people as the Task path."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from conftest import smoke_checkpoints  # noqa: E402
from test_onnx_runtime_path import FORBID  # noqa: E402

from posekit.cli import main  # noqa: E402

pytestmark = pytest.mark.usefixtures("private_tempdir")  # the ONNX export cache stays in the module's folder


@pytest.fixture(scope="module")
def keypoints_onnx(tmp_path_factory):
    """(the keypoints smoke checkpoint exported to .onnx, the Task-path Predictor on that file)."""
    from posekit.engine.predictor import Predictor
    path = Predictor(smoke_checkpoints(tmp_path_factory, {})("keypoints"), backend="onnxruntime").onnx_path
    return path, Predictor(path)


def _write_images(folder):
    """Three images named by COCO-style numeric stems (so detections match them by id)."""
    folder.mkdir()
    rng = np.random.default_rng(3)
    for n, (h, w) in enumerate(((120, 90), (80, 160), (100, 100))):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        cv2.circle(image, (w // 2, h // 3), min(h, w) // 5, (250, 240, 230), -1)
        cv2.imwrite(str(folder / f"{n + 1:012d}.png"), image)
    return folder


def _detections(path):
    """COCO detections: two people in image 1, one in image 2 (and a low score), none in image 3."""
    dets = [{"image_id": 1, "category_id": 1, "bbox": [5, 7, 40, 60], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [40, 30, 45, 80], "score": 0.7},
            {"image_id": 2, "category_id": 1, "bbox": [10, 5, 60, 70], "score": 0.8},
            {"image_id": 2, "category_id": 1, "bbox": [90, 5, 30, 30], "score": 0.1}]
    path.write_text(json.dumps(dets))
    return path


def _predict_both(args, tmp_path, monkeypatch):
    """`posekit predict ARGS` through the numpy runtime and through the Task path -> (runtime
    folder, task folder); asserts the first run took the runtime."""
    import posekit.cli.runtime_predict as runtime_cli
    real = runtime_cli.runtime_predictor_for
    taken = []
    monkeypatch.setattr(runtime_cli, "runtime_predictor_for", lambda a: taken.append(real(a)) or taken[-1])
    assert main(["predict", *args, "--out", str(tmp_path / "runtime"), "--no-progress"]) == 0
    assert taken and taken[0] is not None, "the .onnx run with boxes did not take the numpy runtime"
    monkeypatch.setattr(runtime_cli, "runtime_predictor_for", lambda a: None)
    assert main(["predict", *args, "--out", str(tmp_path / "task"), "--no-progress"]) == 0
    return tmp_path / "runtime", tmp_path / "task"


def _assert_same_json(got_dir, want_dir, names):
    for name in names:
        got = json.loads((got_dir / f"{name}.json").read_text())
        want = json.loads((want_dir / f"{name}.json").read_text())
        assert set(got) == set(want), name
        for key in ("keypoints", "scores", "person_scores", "boxes"):
            if key in want:
                assert np.shape(got[key]) == np.shape(want[key]), (name, key)
                np.testing.assert_allclose(np.asarray(got[key], float), np.asarray(want[key], float), atol=1e-4)


def test_boxes_file_on_the_onnx_path_gives_the_task_paths_people(keypoints_onnx, tmp_path, monkeypatch):
    path, _ = keypoints_onnx
    images = _write_images(tmp_path / "in")
    dets = _detections(tmp_path / "dets.json")
    runtime, task = _predict_both([str(path), str(images), "--boxes", str(dets), "--box-thr", "0.3"], tmp_path,
                                  monkeypatch)
    names = [f"{n:012d}" for n in (1, 2, 3)]
    _assert_same_json(runtime, task, names)
    first = json.loads((runtime / f"{names[0]}.json").read_text())
    assert np.shape(first["keypoints"])[0] == 2 and first["boxes"] == [[5, 7, 40, 60], [40, 30, 45, 80]]
    assert np.shape(json.loads((runtime / f"{names[1]}.json").read_text())["keypoints"])[0] == 1  # 0.1 < --box-thr
    assert np.shape(json.loads((runtime / f"{names[2]}.json").read_text())["keypoints"])[0] == 0  # no box: nobody


@pytest.mark.parametrize("boxes", [["5,7,40,60"], ["5,7,40,60", "30,20,50,70,0.5"]])
def test_box_options_on_the_onnx_path_give_the_task_paths_people(boxes, keypoints_onnx, tmp_path, monkeypatch):
    path, _ = keypoints_onnx
    images = _write_images(tmp_path / "in")
    args = [str(path), str(images)] + [a for b in boxes for a in ("--box", b)]
    runtime, task = _predict_both(args, tmp_path, monkeypatch)
    _assert_same_json(runtime, task, [f"{n:012d}" for n in (1, 2, 3)])
    people = np.shape(json.loads((runtime / f"{1:012d}.json").read_text())["keypoints"])[0]
    assert people == len(boxes)


def test_runtime_predictor_takes_boxes_as_predictor_does(keypoints_onnx):
    """None, one box and a list of boxes (an empty one too), as `Predictor(...)(images, boxes=)`."""
    from posekit.cli.runtime_predict import RuntimePredictor
    from posekit.runtime.predict import RuntimeModel
    path, task_predictor = keypoints_onnx
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((90, 70), (64, 128), (100, 100), (50, 60))]
    boxes = [None, [4.0, 5.0, 30.0, 50.0], [[1, 2, 30, 40, 0.9], [20, 10, 60, 50, 0.4]], []]
    got = RuntimePredictor(RuntimeModel(path, threads=1))(images, boxes=boxes, paths=["a", "b", "c", "d"])
    want = task_predictor(images, boxes=boxes)
    assert [len(r.keypoints) for r in got] == [1, 1, 2, 0] == [len(r.keypoints) for r in want]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.keypoints, w.keypoints, atol=1e-4)
        np.testing.assert_allclose(g.person_scores, w.person_scores, atol=1e-5)
        if w.boxes is not None:
            np.testing.assert_allclose(g.boxes, w.boxes)
    assert [r.path for r in got] == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="input 2: box"):
        RuntimePredictor(RuntimeModel(path, threads=1))(images[:3], boxes=[None, None, [1, 2, float("nan"), 4]])


def test_boxes_on_the_onnx_path_import_no_torch(keypoints_onnx, tmp_path):
    path, _ = keypoints_onnx
    images = _write_images(tmp_path / "in")
    dets = _detections(tmp_path / "dets.json")
    code = FORBID + textwrap.dedent(f"""
        from posekit.cli import main
        code = main(["predict", {str(path)!r}, {str(images)!r}, "--boxes", {str(dets)!r}, "--out",
                     {str(tmp_path / "out")!r}, "--threads", "1", "--no-progress"])
        assert "torch" not in sys.modules, "torch imported"
        sys.exit(code)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert np.shape(json.loads((tmp_path / "out" / f"{1:012d}.json").read_text())["keypoints"])[0] == 2
