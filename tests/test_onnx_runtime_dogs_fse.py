"""Exported `dogs` and `fse` files through the numpy runtime (posekit.runtime): every crop rule of
the two families described in the metadata and reproduced pixel for pixel, the labelled-joint
scores and the fitted MAFL regressor applied outside the graph exactly as the families do, and a
hand-edited crop or buffers entry refused in one line naming the file."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from test_onnx_runtime_path import FORBID  # noqa: E402

from posekit.cli import main  # noqa: E402
from posekit.runtime.predict import RuntimeModel, crop_inputs  # noqa: E402

pytestmark = pytest.mark.usefixtures("private_tempdir")

# crop rules of the two families: (family, overrides on its smoke recipe)
DOGS = {"image": (), "bbox": ("data.crop=bbox",), "resize": ("data.crop=resize",),
        "faithful": ("data.faithful=true",)}
FSE = {"centred": ("data.resize=146", "data.crop_offset=null"),  # (146 - 128) // 2 = 9
       "offset5": ("data.resize=146", "data.crop_offset=5"),  # the CelebA recipe's
       "synthetic": ()}  # faces_synthetic: resize 128, offset 0 (the matrix of a plain stretch)
BOXES = [[5.0, 7.0, 40.0, 60.0], None, [-10.0, 20.5, 80.0, 30.0]]


def export_family(folder, family: str, *overrides: str, regressor: bool = False):
    """A family's smoke recipe (random weights: no training) exported to .onnx; for fse,
    `regressor` stores a fitted MAFL regressor as `posekit export` does after an evaluation."""
    import torch
    from posekit.engine.export import export_task
    from posekit.engine.recipes import load_config
    from posekit.families import build_task, get_task_class
    cls = get_task_class(family)
    torch.manual_seed(0)
    task = build_task(load_config(cls.synthetic_recipe, [*cls.smoke_overrides, *overrides]))
    model = task.build_model().eval()
    if regressor:
        w = np.random.default_rng(1).normal(0, 0.05, tuple(model.mafl_regressor.shape))
        w[-1] = np.tile([40.0, 50.0], 5)  # a bias near a face centre
        task.prepare(model, {})
        task._store_regressor(w)
    task.prepare(model, {})
    path = folder / f"{family}.onnx"
    export_task(task, model, path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(family, rule, regressor) -> (the .onnx file, the Task-path Predictor on it)."""
    cache: dict = {}

    def get(family: str, rule: str, regressor: bool = False):
        key = (family, rule, regressor)
        if key not in cache:
            from posekit.engine.predictor import Predictor
            overrides = (DOGS if family == "dogs" else FSE)[rule]
            path = export_family(tmp_path_factory.mktemp(f"{family}_{rule}"), family, *overrides, regressor=regressor)
            cache[key] = (path, Predictor(path))
        return cache[key]
    return get


def _images():
    """RGB images smaller and larger than the inputs, of several aspect ratios, textured."""
    rng = np.random.default_rng(0)
    out = []
    for h, w in ((120, 90), (40, 160), (218, 178)):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        cv2.circle(image, (w // 2, h // 3), min(h, w) // 5, (250, 240, 230), -1)
        out.append(image)
    return out


@pytest.mark.parametrize("rule", list(DOGS))
def test_dogs_crops_equal_the_family_prepare_inputs_in_every_crop_rule_with_and_without_boxes(rule, exported):
    path, task_predictor = exported("dogs", rule)
    model = RuntimeModel(path, threads=1)
    images = _images()
    for boxes in (None, BOXES):
        batch = task_predictor.task.prepare_inputs(images, boxes=boxes)
        np.testing.assert_allclose(model.matrices(images, boxes or [None] * 3), batch["matrix"].double().numpy(),
                                   atol=1e-9, rtol=0)
        crops, matrices = crop_inputs(model.crop, images, boxes)
        np.testing.assert_array_equal(crops, batch["image"].numpy())
    want = {"image": ("image", "box"), "bbox": ("image", "box"), "resize": ("resize", None),
            "faithful": ("resize", None)}[rule]
    assert (model.crop["without_box"]["mode"], (model.crop["with_box"] or {}).get("mode")) == want
    assert model.takes_boxes == (want[1] == "box")


def test_a_stretched_dog_crop_pads_its_edges_with_the_family_value(exported):
    """A stretch shows no border outright, but bilinear edges blend it in: the description finds
    the family's ImageNet-mean pad (the faithful recipe's black), not a default."""
    from posekit.data.formats.stanford_extra import PAD_VALUE
    assert RuntimeModel(exported("dogs", "resize")[0], threads=1).pad_value == list(PAD_VALUE)
    assert RuntimeModel(exported("dogs", "faithful")[0], threads=1).pad_value == [0, 0, 0]


@pytest.mark.parametrize("rule", list(FSE))
def test_fse_crop_is_the_family_area_resize_then_slice_centred_or_at_its_offset(rule, exported):
    path, task_predictor = exported("fse", rule)
    model = RuntimeModel(path, threads=1)
    want = {"centred": (146, 9), "offset5": (146, 5), "synthetic": (128, 0)}[rule]
    wb = model.crop["without_box"]
    assert (wb["mode"], wb["resize"], wb["offset"]) == ("resize_crop", *want)
    assert model.crop["with_box"] is None and not model.takes_boxes
    images = _images()
    batch = task_predictor.task.prepare_inputs(images)
    crops, matrices = crop_inputs(model.crop, images)
    np.testing.assert_allclose(matrices, batch["matrix"].double().numpy(), atol=1e-12, rtol=0)
    np.testing.assert_allclose(model.matrices(images, [None] * 3), matrices, atol=1e-12, rtol=0)
    np.testing.assert_array_equal(crops, batch["image"].numpy())


@pytest.mark.parametrize("family, rule, regressor", [("dogs", "image", False), ("dogs", "resize", False),
                                                     ("fse", "offset5", True), ("fse", "centred", False)])
def test_runtime_results_equal_the_task_path_scores_boxes_and_mafl5(family, rule, regressor, exported):
    from posekit.skeletons.builtin import STANFORD_EXTRA_LABELLED
    path, task_predictor = exported(family, rule, regressor)
    model = RuntimeModel(path, threads=1)
    images = _images()
    boxes = BOXES if model.takes_boxes else None
    want = task_predictor(images, boxes=boxes)
    got = model(images, boxes)
    assert len(got) == len(want) == 3
    for g, w in zip(got, want):
        np.testing.assert_allclose(g["keypoints"], w.keypoints, atol=1e-4, rtol=0)
        np.testing.assert_allclose(g["scores"], w.scores, atol=1e-6, rtol=0)
        assert (g["boxes"] is None) == (w.boxes is None)
        if w.boxes is not None:
            np.testing.assert_allclose(g["boxes"], w.boxes, atol=1e-9, rtol=0)
        assert set(g.get("meta", {})) == set(w.meta)
        if regressor:
            np.testing.assert_allclose(g["meta"]["mafl5"], w.meta["mafl5"], atol=1e-4, rtol=0)
            assert np.asarray(g["meta"]["mafl5"]).shape == (5, 2)
    if family == "dogs":
        mask = np.zeros(24)
        mask[list(STANFORD_EXTRA_LABELLED)] = 1.0
        assert all(np.array_equal(g["scores"][0], mask) for g in got)
    else:
        assert ("mafl5" in got[0]["meta"]) == regressor


def _write_inputs(folder):
    folder.mkdir()
    for n, image in enumerate(_images()):
        cv2.imwrite(str(folder / f"img{n}.png"), image[..., ::-1])
    return folder


@pytest.mark.parametrize("family, rule, options", [("dogs", "bbox", []), ("dogs", "image", ["--box", "5,7,40,60"]),
                                                   ("fse", "offset5", [])])
def test_cli_json_is_the_same_through_the_runtime_and_the_task_path(family, rule, options, exported, tmp_path,
                                                                    monkeypatch):
    path, _ = exported(family, rule, family == "fse")
    inputs = _write_inputs(tmp_path / "in")
    assert main(["predict", str(path), str(inputs), "--out", str(tmp_path / "runtime"), "--no-progress",
                 *options]) == 0
    import posekit.cli.runtime_predict as runtime_cli
    taken = []
    real = runtime_cli.runtime_predictor_for
    monkeypatch.setattr(runtime_cli, "runtime_predictor_for", lambda args: taken.append(real(args)) or None)
    assert main(["predict", str(path), str(inputs), "--out", str(tmp_path / "task"), "--no-progress", *options]) == 0
    assert taken and taken[0] is not None  # the first run took the numpy runtime; this one the Task path
    for n in range(3):
        got = json.loads((tmp_path / "runtime" / f"img{n}.json").read_text())
        want = json.loads((tmp_path / "task" / f"img{n}.json").read_text())
        assert set(got) == set(want)
        if options:
            assert np.allclose(got["boxes"], [[5, 7, 40, 60]])
        assert got["skeleton"] == want["skeleton"] and got["image_size"] == want["image_size"]
        for key in ("keypoints", "scores", "boxes"):
            if key in want:
                np.testing.assert_allclose(np.asarray(got[key], float), np.asarray(want[key], float), atol=1e-4)
        if family == "fse":
            np.testing.assert_allclose(got["meta"]["mafl5"], want["meta"]["mafl5"], atol=1e-4)


@pytest.mark.parametrize("family, rule", [("dogs", "image"), ("fse", "offset5")])
def test_cli_predict_onnx_runs_with_the_training_packages_refused(family, rule, exported, tmp_path):
    path, _ = exported(family, rule, family == "fse")
    image = tmp_path / "one.jpg"
    cv2.imwrite(str(image), _images()[0][..., ::-1])
    code = FORBID + textwrap.dedent(f"""
        from posekit.cli import main
        code = main(["predict", {str(path)!r}, {str(image)!r}, "--out", {str(tmp_path / "out")!r}, "--threads", "1"])
        heavy = [m for m in ("torch", "onnx", "scipy", "torchvision", "matplotlib", "h5py", "pycocotools")
                 if m in sys.modules]
        assert not heavy, heavy
        sys.exit(code)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "(onnxruntime)" in run.stdout
    data = json.loads((tmp_path / "out" / "one.json").read_text())
    assert data["image_size"] == [90, 120] and len(data["keypoints"][0]) == (24 if family == "dogs" else 5)
    assert family == "dogs" or len(data["meta"]["mafl5"]) == 5


def _edited(path, folder, **entries):
    """A copy of an exported file with some posekit metadata entries replaced (JSON values)."""
    from posekit.engine.onnx_backend import write_metadata
    copy = folder / f"edited_{path.name}"
    shutil.copyfile(path, copy)
    write_metadata(copy, {f"posekit.{k}": json.dumps(v) for k, v in entries.items()})
    return copy


def test_a_tampered_crop_or_buffers_entry_is_one_line_naming_the_file(exported, tmp_path, capsys):
    from posekit.runtime.onnx import open_session, read_metadata
    path, _ = exported("fse", "offset5", True)
    meta = read_metadata(open_session(path, threads=1), str(path))
    crop, buffers = meta["crop"], meta["buffers"]
    wrong_offset = {**crop, "without_box": {**crop["without_box"], "offset": 7}}
    not_a_size = {**crop, "without_box": {**crop["without_box"], "resize": "146"}}
    short = {**buffers, "mafl_regressor": {**buffers["mafl_regressor"], "data": buffers["mafl_regressor"]["data"][:-1]}}
    text = {**buffers, "mafl_regressor": {**buffers["mafl_regressor"],
                                          "data": ["x"] * len(buffers["mafl_regressor"]["data"])}}
    cases = [("crop", wrong_offset, r"posekit\.crop\.without_box \(resize 146, offset 7\) is not the crop"),
             ("crop", not_a_size, r"posekit\.crop\.without_box \(resize '146'"),
             ("buffers", short, r"posekit\.buffers\['mafl_regressor'\] is not 110 finite float numbers of shape \[11, 10\]"),
             ("buffers", text, r"posekit\.buffers\['mafl_regressor'\] is not 110 finite float numbers of shape \[11, 10\]")]
    folder = tmp_path / "edited"
    folder.mkdir()
    image = tmp_path / "one.png"
    cv2.imwrite(str(image), _images()[0])
    for n, (key, value, message) in enumerate(cases):
        edited = _edited(path, folder, **{key: value}).rename(folder / f"case{n}.onnx")
        with pytest.raises(ValueError, match=rf"case{n}\.onnx: metadata {message}") as e:
            RuntimeModel(edited, threads=1)
        assert "\n" not in str(e.value)
        assert main(["predict", str(edited), str(image), "--out", str(tmp_path / f"out{n}")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("posekit predict: error: ") and f"case{n}.onnx" in err and "\n" not in err, err


def test_describe_crop_writes_a_mode_only_when_the_runtime_reproduces_its_pixels(exported):
    """A family whose matrix is a known rule's but whose pixels are not (one pixel changed) is
    described as "custom", which the runtime leaves to the Task path."""
    from posekit.engine.onnx_backend import describe_crop
    _, task_predictor = exported("dogs", "image")
    task = task_predictor.task
    assert describe_crop(task)["without_box"]["mode"] == "image"

    def off_by_one(images, boxes=None, **options):
        batch = task.prepare_inputs(images, boxes=boxes)
        batch["image"][:, 0, 32, 32] ^= 1
        return batch
    described = describe_crop(SimpleNamespace(prepare_inputs=off_by_one))
    assert described["without_box"]["mode"] == "custom" and described["with_box"]["mode"] == "custom"
    meta = {"task": "dogs", "config": {"task": "dogs", "data": {"input_size": 64}}, "crop": described,
            "input": {"kind": "image"}, "outputs": ["keypoints"], "skeleton": {"name": "stanford_extra24",
                                                                             "keypoints": ["a"]}}
    assert not RuntimeModel.supports(meta)
    assert RuntimeModel.supports({**meta, "crop": describe_crop(task)})


def test_which_dogs_and_fse_files_the_runtime_takes():
    """An FSE file described by an older export as a bilinear stretch, with a box rule, or with
    buffers the runtime does not apply goes to the Task path; dogs files need only keypoints."""
    crop = {"input_size": [128, 128], "without_box": {"mode": "resize_crop", "resize": 146, "offset": 5},
            "with_box": None}
    fse = {"task": "fse", "config": {"task": "fse", "data": {"input_size": 128}}, "crop": crop,
           "input": {"kind": "image"}, "outputs": ["keypoints", "scores"], "skeleton": {"keypoints": ["a"]},
           "buffers": {"mafl_regressor": {}, "mafl_regressor_fitted": {}}}
    assert RuntimeModel.supports(fse)
    assert not RuntimeModel.supports({**fse, "crop": {**crop, "without_box": {"mode": "resize"}}})
    assert not RuntimeModel.supports({**fse, "crop": {**crop, "with_box": {"mode": "box", "padding": 1.0}}})
    assert not RuntimeModel.supports({**fse, "buffers": {"codec.mean_2d": {}}})
    dogs = {**fse, "task": "dogs", "config": {"task": "dogs", "data": {"input_size": 128}}, "outputs": ["keypoints"],
            "crop": {**crop, "without_box": {"mode": "image"}, "with_box": {"mode": "box", "padding": 1.2}}}
    assert not RuntimeModel.supports(dogs)  # a dogs file has no state outside the graph
    dogs.pop("buffers")
    assert RuntimeModel.supports(dogs)
    assert not RuntimeModel.supports({**dogs, "crop": {**crop, "with_box": None}})  # FSE's crop is not the dogs'
