"""`posekit predict model.onnx` through the numpy runtime (posekit.runtime.predict): the same crops,
the same people and the same JSON as the Task-based path, and no torch or onnx import on the way."""
from __future__ import annotations

import argparse
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
from test_onnx_runtime_path import FORBID, tiny_posekit_onnx  # noqa: E402

from posekit.cli import main  # noqa: E402
from posekit.runtime.predict import RuntimeModel, box_crop_matrix, crop_inputs, crop_matrix, warp_crops  # noqa: E402

FAMILIES = ["keypoints", "hourglass", "openpose", "dogs", "fse"]
SMALLER = {"hourglass": ("data.input_size=64", "data.heatmap_size=16", "data.synthetic_image_size=96")}
pytestmark = pytest.mark.usefixtures("private_tempdir")  # the ONNX export cache stays in the module's folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """family -> (its one-step smoke checkpoint exported to .onnx, the Task-path Predictor on it)."""
    checkpoints = smoke_checkpoints(tmp_path_factory, SMALLER)
    cache: dict = {}

    def get(family):
        if family not in cache:
            from posekit.engine.predictor import Predictor
            path = Predictor(checkpoints(family), backend="onnxruntime").onnx_path
            cache[family] = (path, Predictor(path))
        return cache[family]
    return get


def _images():
    """RGB images of several sizes and aspect ratios (textured, so crops differ pixel by pixel)."""
    rng = np.random.default_rng(0)
    out = []
    for h, w in ((120, 90), (64, 160), (97, 97)):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        cv2.circle(image, (w // 2, h // 3), min(h, w) // 5, (250, 240, 230), -1)
        out.append(image)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_crop_matrices_and_crops_equal_the_family_prepare_inputs(family, exported):
    path, task_predictor = exported(family)
    model = RuntimeModel(path, threads=1)
    images = _images()
    cases = [None] * len(images)
    if model.takes_boxes:
        cases = [[5.0, 7.0, 40.0, 60.0], None, [-10.0, 20.5, 80.0, 30.0]]
    batch = task_predictor.task.prepare_inputs(images, boxes=cases if model.takes_boxes else None)
    want_m = batch["matrix"].double().numpy()
    got_m = model.matrices(images, cases)
    np.testing.assert_allclose(got_m, want_m, atol=1e-6, rtol=0)
    crops, matrices = crop_inputs(model.crop, images, cases)
    np.testing.assert_array_equal(matrices, got_m)
    np.testing.assert_array_equal(crops, batch["image"].numpy())
    if model.crop["without_box"]["mode"] != "resize_crop":  # the affine rules are one warp of each image
        np.testing.assert_array_equal(warp_crops(images, got_m, model.input_size, model.pad_value), crops)


@pytest.mark.parametrize("family", FAMILIES)
def test_runtime_results_equal_the_task_path(family, exported):
    path, task_predictor = exported(family)
    model = RuntimeModel(path, threads=1)
    images = _images()
    boxes = [[5.0, 7.0, 40.0, 60.0], None, [3.0, 2.0, 50.0, 70.0]] if model.takes_boxes else None
    want = task_predictor(images, boxes=boxes)
    got = model(images, boxes)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g["keypoints"].shape == w.keypoints.shape
        np.testing.assert_allclose(g["keypoints"], w.keypoints, atol=1e-4, rtol=0)
        np.testing.assert_allclose(g["scores"], w.scores, atol=1e-6, rtol=0)
        if g["person_scores"] is not None:
            np.testing.assert_allclose(g["person_scores"], w.person_scores, atol=1e-6, rtol=0)
        if w.boxes is not None:
            np.testing.assert_allclose(g["boxes"], w.boxes, atol=1e-9, rtol=0)
        assert set(g.get("meta") or {}) == set(w.meta)  # fse: mafl5 when a regressor was fitted


def _write_inputs(folder):
    folder.mkdir()
    for n, image in enumerate(_images()):
        cv2.imwrite(str(folder / f"img{n}.png"), image[..., ::-1])
    return folder


@pytest.mark.parametrize("family", FAMILIES)
def test_cli_json_is_the_same_through_the_runtime_and_the_task_path(family, exported, tmp_path, monkeypatch, capsys):
    path, _ = exported(family)
    inputs = _write_inputs(tmp_path / "in")
    assert main(["predict", str(path), str(inputs), "--out", str(tmp_path / "runtime"), "--no-progress"]) == 0
    import posekit.cli.runtime_predict as runtime_cli
    taken = []
    real = runtime_cli.runtime_predictor_for
    monkeypatch.setattr(runtime_cli, "runtime_predictor_for", lambda args: taken.append(real(args)) or None)
    assert main(["predict", str(path), str(inputs), "--out", str(tmp_path / "task"), "--no-progress"]) == 0
    assert taken and taken[0] is not None  # the first run took the numpy runtime; this one the Task path
    for n in range(3):
        got = json.loads((tmp_path / "runtime" / f"img{n}.json").read_text())
        want = json.loads((tmp_path / "task" / f"img{n}.json").read_text())
        assert set(got) == set(want)
        assert got["skeleton"] == want["skeleton"] and got["image_size"] == want["image_size"]
        assert got["path"] == want["path"]
        for key in ("keypoints", "scores", "person_scores", "boxes"):
            if key in want:
                np.testing.assert_allclose(np.asarray(got[key], float), np.asarray(want[key], float), atol=1e-4)
        assert (tmp_path / "runtime" / f"img{n}.png").stat().st_size > 0


@pytest.mark.parametrize("family", ["keypoints", "openpose", "dogs", "fse"])
def test_cli_predict_onnx_runs_with_torch_and_onnx_imports_refused(family, exported, tmp_path):
    path, _ = exported(family)
    image = tmp_path / "one.jpg"
    cv2.imwrite(str(image), _images()[0][..., ::-1])
    code = FORBID + textwrap.dedent(f"""
        from posekit.cli import main
        code = main(["predict", {str(path)!r}, {str(image)!r}, "--out", {str(tmp_path / "out")!r}, "--threads", "1"])
        assert "torch" not in sys.modules and "onnx" not in sys.modules, "heavy module imported"
        sys.exit(code)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    data = json.loads((tmp_path / "out" / "one.json").read_text())
    assert data["image_size"] == [90, 120] and data["path"] == str(image)
    assert (tmp_path / "out" / "one.png").stat().st_size > 0
    assert "(onnxruntime)" in run.stdout


def _args(**over):
    base = dict(checkpoint="m.onnx", box=None, boxes=None, detector=None, track=False, overrides=[], backend="auto",
                device="cpu", threads=1)
    return argparse.Namespace(**{**base, **over})


@pytest.mark.parametrize("option", [{"detector": "fasterrcnn"},
                                    {"track": True}, {"overrides": ["eval.flip_test=false"]}, {"device": "cuda"},
                                    {"checkpoint": "m.pt"}])
def test_options_only_the_task_path_has_send_the_run_there(option, exported):
    from posekit.cli.runtime_predict import runtime_predictor_for
    path, _ = exported("keypoints")
    assert runtime_predictor_for(_args(checkpoint=str(path))) is not None
    over = {**option}
    if over.get("checkpoint") is None:
        over["checkpoint"] = str(path)
    assert runtime_predictor_for(_args(**over)) is None


def _meta(task="keypoints", **over):
    """Metadata as `posekit export` writes it for a 64 px top-down file (decoded), with `over`."""
    meta = {"task": task, "config": {"task": task, "data": {"input_size": 64}, "eval": {"batch_size": 2}},
            "crop": {"input_size": [64, 64], "without_box": {"mode": "image"}, "with_box": {"mode": "box", "padding": 1.25}},
            "input": {"kind": "image"}, "outputs": ["keypoints", "scores"], "skeleton": {"name": "x", "keypoints": ["a"]}}
    if task == "openpose":
        meta.update(outputs=["pafs", "heatmaps"], crop={**meta["crop"], "without_box": {"mode": "letterbox_top_left"},
                                                        "with_box": None})
    for key, value in over.items():
        meta[key] = value(meta) if callable(value) else value
    return meta


def test_families_crop_rules_and_inconsistent_metadata_go_to_the_task_path():
    assert RuntimeModel.supports(_meta("keypoints"), ["keypoints", "scores"])
    assert RuntimeModel.supports(_meta("hourglass"))
    assert RuntimeModel.supports(_meta("openpose"), ["pafs", "heatmaps"])
    refused = {
        "a family without a runtime": _meta("walrus"),
        "a lifter": _meta("gmh_mdn", crop=None),
        "a family-specific crop": _meta(crop=lambda m: {**m["crop"], "without_box": {"mode": "custom"}}),
        "a family-specific box crop": _meta(crop=lambda m: {**m["crop"], "with_box": {"mode": "custom"}}),
        "config size unlike the crop's": _meta(config=lambda m: {**m["config"], "data": {"input_size": 10**9}}),
        "config of another task": _meta(config=lambda m: {**m["config"], "task": "hourglass"}),
        "config not a mapping": _meta(config=[1, 2]),
        "state outside the graph": _meta(buffers={"x": {}}),
        "outputs missing": _meta(outputs=None),
        "input of the wrong type": _meta(input="big"),
        "a bad batch size": _meta(config=lambda m: {**m["config"], "eval": {"batch_size": 0}}),
    }
    for what, meta in refused.items():
        assert not RuntimeModel.supports(meta), what
    assert not RuntimeModel.supports(_meta(), ["a", "b"])  # the graph's outputs are not those recorded


def test_a_box_crop_is_mmposes_rule_and_a_bad_box_is_one_line():
    m = box_crop_matrix([10, 20, 30, 60], 1.25, (48, 64))  # aspect 0.75: a 45 x 60 region grown by 1.25
    centre = np.array([10 + 15 - 0.5, 20 + 30 - 0.5, 1.0])
    np.testing.assert_allclose(m @ centre, [23.5, 31.5], atol=1e-12)
    np.testing.assert_allclose(m[0, 0], 48 / (60 * 0.75 * 1.25), atol=1e-12)
    with pytest.raises(ValueError, match="positive w, h"):
        box_crop_matrix([0, 0, 0, 10], 1.0, (64, 64))
    with pytest.raises(ValueError, match="family-specific"):
        crop_matrix({"input_size": [8, 8], "without_box": {"mode": "custom"}}, 10, 10)


def test_metadata_the_runtime_cannot_read_is_one_line_naming_the_file(tmp_path):
    props = {"posekit.task": "keypoints", "posekit.kind": "top-down", "posekit.config": json.dumps({"eval": {}}),
             "posekit.crop": json.dumps({"without_box": {"mode": "image"}, "with_box": None}),
             "posekit.outputs": json.dumps(["y"])}
    path = tiny_posekit_onnx(tmp_path / "bad.onnx", props)
    with pytest.raises(ValueError, match=r"bad\.onnx: a keypoints export .* runs through the Task path") as e:
        RuntimeModel(path, threads=1)
    assert "\n" not in str(e.value)


# openpose18 parts of a standing figure, in units of its height / 2 (y down), centred on the hips
FIGURE = [(0, -.8), (0, -.6), (-.2, -.6), (-.25, -.3), (-.28, 0), (.2, -.6), (.25, -.3), (.28, 0), (-.12, .05),
          (-.13, .45), (-.14, .85), (.12, .05), (.13, .45), (.14, .85), (-.05, -.85), (.05, -.85), (-.1, -.82),
          (.1, -.82)]


class MapsSession:
    """Stands in for the onnxruntime session: returns fixed decoded maps whatever the input."""

    def __init__(self, outputs: dict):
        self.outputs = outputs

    def run(self, names, feed):
        return [self.outputs[n] for n in ("pafs", "heatmaps")]


def test_openpose_people_from_real_maps_are_those_of_the_family_postprocess(exported):
    """A person encoded by the family's own PAF codec: the runtime (crop, grouping, inverse
    letterbox) finds it, where the Task's postprocess puts it."""
    import torch
    path, task_predictor = exported("openpose")
    task = task_predictor.task
    model = RuntimeModel(path, threads=1)
    w, h = model.input_size
    people = np.array([[(0.5 * w + 0.45 * h * dx, 0.5 * h + 0.45 * h * dy, 2.0) for dx, dy in FIGURE]])
    heatmaps, pafs = task.codec.encode(people)
    image = _images()[1]  # 64 x 160: letterboxed, so the inverse affine is not the identity
    model.session = MapsSession({"pafs": pafs[None], "heatmaps": heatmaps[None]})
    got = model([image])[0]
    batch = task.prepare_inputs([image])
    want = task.postprocess({"pafs": torch.from_numpy(pafs[None]), "heatmaps": torch.from_numpy(heatmaps[None])},
                            batch)[0]
    assert len(got["keypoints"]) == 1 == len(want)
    np.testing.assert_allclose(got["keypoints"], want.keypoints, atol=1e-6)
    np.testing.assert_allclose(got["scores"], want.scores, atol=1e-6)
    np.testing.assert_allclose(got["person_scores"], want.person_scores, atol=1e-6)
    s = image.shape[1] / w  # the letterbox scale back to the image: the left figure's neck lands there
    shoulders_mid = got["keypoints"][0, 5:7].mean(0)  # COCO shoulders (5, 6) are openpose18 parts 5 and 2
    np.testing.assert_allclose(shoulders_mid, (people[0, [2, 5], :2].mean(0) + 0.5) * s - 0.5, atol=s * 8)


def test_a_video_runs_through_the_runtime_frame_by_frame(exported, tmp_path, monkeypatch):
    from posekit.data.video import VideoWriter
    import posekit.cli.runtime_predict as runtime_cli
    path, _ = exported("hourglass")
    frames = _images()[0]
    with VideoWriter(tmp_path / "clip.mp4", fps=10) as writer:
        for n in range(5):
            writer.write(np.roll(frames, 3 * n, axis=1))
    taken = []
    real = runtime_cli.runtime_predictor_for
    monkeypatch.setattr(runtime_cli, "runtime_predictor_for", lambda args: taken.append(real(args)) or taken[-1])
    assert main(["predict", str(path), str(tmp_path / "clip.mp4"), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert taken and taken[0] is not None
    lines = [json.loads(line) for line in (tmp_path / "out" / "clip.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(5))
    assert all(np.isfinite(np.asarray(line["keypoints"], float)).all() for line in lines)
    assert (tmp_path / "out" / "clip.mp4").stat().st_size > 0
