"""Exported ONNX files stand on their own: the metadata they carry (read back with onnx), the
onnxruntime backend of `Predictor` equal to the PyTorch path for every family, the export
cache of `backend="onnxruntime"`, and docs/deploy.md's numpy + cv2 + onnxruntime recipe."""
from __future__ import annotations

import dataclasses
import json
import os

import cv2
import numpy as np
import onnx
import pytest
import torch

from conftest import smoke_checkpoints

from posekit.config import config_to_dict
from posekit.engine.evaluation import to_device
from posekit.engine.onnx_backend import OnnxRuntimeModel, load_onnx, read_metadata
from posekit.engine.predictor import Predictor, load_for_inference, onnx_cache_path
from posekit.families import get_task_class, list_tasks

FAMILIES = [n for n in list_tasks() if get_task_class(n).__module__.startswith("posekit.families.")]
# smaller inputs where the smoke recipe is large (speed only: any family works without)
SMALLER = {"hourglass": ("data.input_size=64", "data.heatmap_size=16", "data.synthetic_image_size=96")}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A one-step checkpoint of a family's smoke recipe, trained once per module."""
    return smoke_checkpoints(tmp_path_factory, SMALLER)


@pytest.fixture(scope="module")
def exported(checkpoint):
    """The family's checkpoint exported by `backend="onnxruntime"` (cached: one export each)."""
    return lambda family: Predictor(checkpoint(family), backend="onnxruntime").onnx_path


pytestmark = pytest.mark.usefixtures("private_tempdir")  # the ONNX export cache stays in the module's folder


def _props(path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_backend_matches_pytorch(family, checkpoint, tmp_path):
    ckpt = checkpoint(family)
    torch_pred = Predictor(ckpt)
    task = torch_pred.task
    inputs = task.sample_inputs(task.build_datasets(), 2)
    expected = torch_pred(inputs)

    # exported on the fly (cached in the temp folder), then run by onnxruntime
    ort_pred = Predictor(ckpt, backend="onnxruntime")  # = exported(family)
    assert ort_pred.backend == "onnxruntime" and ort_pred.model is None
    assert ort_pred.onnx_path == onnx_cache_path(ckpt) and ort_pred.onnx_path.is_file()
    got = ort_pred(inputs)
    assert len(got) == len(expected)
    for a, b in zip(expected, got):
        assert a.keypoints.shape == b.keypoints.shape and a.skeleton.name == b.skeleton.name
        scale = 1.0 if not a.is_3d else 1e2  # lifters answer in millimetres
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-3 * scale)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        if a.hypotheses is not None:
            np.testing.assert_allclose(a.hypotheses, b.hypotheses, atol=1e-1)
            np.testing.assert_allclose(a.hypothesis_weights, b.hypothesis_weights, atol=1e-4)

    # the metadata, read back with onnx: everything needed to run the file without a recipe
    props = _props(ort_pred.onnx_path)
    for key in ("version", "task", "config", "skeleton", "input", "normalization", "crop", "outputs", "kind"):
        assert f"posekit.{key}" in props, key
    import posekit
    assert props["posekit.version"] == posekit.__version__ and props["posekit.task"] == family
    stored = json.loads(props["posekit.config"])
    want = config_to_dict(task.cfg)
    want["model"]["init_from"] = None
    assert stored == json.loads(json.dumps(want))
    sk = json.loads(props["posekit.skeleton"])
    assert sk["name"] == task.skeleton.name and sk["keypoints"] == list(task.skeleton.keypoints)
    assert [tuple(p) for p in sk["flip_pairs"]] == list(task.skeleton.flip_pairs)
    assert [tuple(p) for p in sk["limbs"]] == list(task.skeleton.limbs)
    spec = task.export_spec()
    assert json.loads(props["posekit.outputs"]) == spec.output_names
    inp = json.loads(props["posekit.input"])
    assert inp["name"] == spec.input_names[0] and inp["size"] == list(spec.example_inputs[0].shape[-2:])
    crop = json.loads(props["posekit.crop"])
    kind = props["posekit.kind"]
    if family == "gmh_mdn":
        assert kind == "lifting" and crop is None and "posekit.buffers" in props  # its normalisation statistics
    elif family in ("hourglass", "dogs"):
        assert kind == "top-down" and crop["with_box"]["mode"] == "box"
        assert crop["with_box"]["padding"] == pytest.approx(1.25 if family == "hourglass" else 1.2)
    elif family == "openpose":
        assert kind == "bottom-up" and crop["with_box"] is None


def test_cached_export_is_reused_and_renewed(checkpoint):
    ckpt = checkpoint("hourglass")
    first = Predictor(ckpt, backend="onnxruntime").onnx_path
    stamp = first.stat().st_mtime_ns
    assert Predictor(ckpt, backend="onnxruntime").onnx_path == first and first.stat().st_mtime_ns == stamp
    assert onnx_cache_path(ckpt, ["eval.flip_test=false"]) != first  # other settings: another export
    st = ckpt.stat()
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same bytes: the same export
    try:
        assert onnx_cache_path(ckpt) == first
    finally:
        os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert onnx_cache_path(checkpoint("dogs")) != first  # other weights: another export


def test_onnx_file_runs_without_checkpoint_or_recipe(checkpoint, exported, tmp_path):
    import shutil
    path = shutil.copy(exported("hourglass"), tmp_path / "hg.onnx")  # away from the checkpoint
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    box = [20.0, 10.0, 50.0, 70.0]
    a = Predictor(path)(image, boxes=box)
    b = Predictor(checkpoint("hourglass"))(image, boxes=box)
    np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-3)
    assert a.skeleton.name == "mpii16" and a.boxes.tolist() == [box]
    with pytest.raises(ValueError, match="onnxruntime"):
        Predictor(path, backend="torch")


def test_stored_imports_are_never_imported(exported, tmp_path, monkeypatch):
    """A file is data: the `imports` in its stored config do not run."""
    path = tmp_path / "hg.onnx"
    marker = tmp_path / "imported.txt"
    (tmp_path / "evil_posekit_module.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    m = onnx.load(str(exported("hourglass")))
    for p in m.metadata_props:
        if p.key == "posekit.config":
            cfg = json.loads(p.value)
            cfg["imports"] = ["evil_posekit_module"]
            p.value = json.dumps(cfg)
    onnx.save(m, str(path))
    Predictor(path)
    assert not marker.exists()


def test_not_a_posekit_onnx_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(ValueError, match="bad.onnx"):
        read_metadata(bad)
    with pytest.raises(FileNotFoundError):
        read_metadata(tmp_path / "missing.onnx")


def test_openpose_grouping_runs_on_either_backend(checkpoint):
    """The decoder outside the graph (peaks, PAF matching, people) gets the same maps from
    onnxruntime as from PyTorch, and groups the same people (permissive thresholds so an
    untrained net yields some)."""
    ckpt = checkpoint("openpose")
    tp = Predictor(ckpt)
    op = Predictor(ckpt, backend="onnxruntime")
    inputs = tp.task.sample_inputs(tp.task.build_datasets(("val",)), 2)
    batch = tp.task.prepare_inputs(inputs)
    x = tp.task.model_inputs(to_device(batch, torch.device("cpu")))
    with torch.no_grad():
        ref = tp.task.forward_decode(tp.model, x)
    got = OnnxRuntimeModel(op.onnx_path)(x)
    for name in ("pafs", "heatmaps"):
        np.testing.assert_allclose(ref[name].numpy(), got[name].numpy(), atol=1e-4)
    loose = dict(peak_threshold=float(ref["heatmaps"][:, :-1].quantile(0.9)), min_parts=1, min_mean_score=0.0,
                 sample_threshold=-1.0, min_valid_fraction=0.0)
    for p in (tp, op):
        p.task.decoder = dataclasses.replace(p.task.decoder, **loose)
    a, b = tp(inputs), op(inputs)
    assert sum(len(r) for r in a) > 0
    for ra, rb in zip(a, b):
        assert len(ra) == len(rb)
        np.testing.assert_allclose(ra.keypoints, rb.keypoints, atol=1e-2)


def test_lifter_onnx_takes_poses(checkpoint, exported):
    ckpt = checkpoint("gmh_mdn")
    task, model, _ = load_for_inference(ckpt)
    path = exported("gmh_mdn")
    otask, _, _, meta = load_onnx(path)
    assert otask.codec is not None and otask.codec.is_fitted  # statistics restored from the metadata
    assert meta["input"]["kind"] == "keypoints_2d"
    poses = task.sample_inputs(task.build_datasets(("val",)), 2)
    a = Predictor(ckpt)(poses, rescale=True)
    b = Predictor(path)(poses, rescale=True)
    for ra, rb in zip(a, b):
        np.testing.assert_allclose(ra.hypotheses, rb.hypotheses, atol=1e-1)
    assert not Predictor(path).takes_images and not Predictor(path).takes_boxes


# --- docs/deploy.md, mirrored: numpy + cv2 + onnxruntime, no posekit ------------------------------
def deploy_topdown(onnx_path, image_rgb, box=None):
    """The code of docs/deploy.md ("Top-down model"), line for line."""
    import onnxruntime as ort
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    crop = json.loads(meta["posekit.crop"])
    out_names = json.loads(meta["posekit.outputs"])
    in_w, in_h = crop["input_size"]

    h, w = image_rgb.shape[:2]
    a = in_w / in_h
    if box is None:  # the whole image, letterboxed ("without_box": "image")
        cx, cy, region_w = w / 2 - 0.5, h / 2 - 0.5, max(w, h * a)
    else:  # the box grown to the aspect ratio, times padding
        x, y, bw, bh = box
        cx, cy = x + bw / 2 - 0.5, y + bh / 2 - 0.5
        region_w = crop["with_box"]["padding"] * max(bw, bh * a)
    sx = sy = in_w / region_w
    m = np.array([[sx, 0.0, (in_w - 1) / 2 - sx * cx], [0.0, sy, (in_h - 1) / 2 - sy * cy]])
    patch = cv2.warpAffine(image_rgb, m, (in_w, in_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=tuple(crop["pad_value"]))
    x = (patch.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
    outputs = dict(zip(out_names, session.run(None, {session.get_inputs()[0].name: x})))
    kp = outputs["keypoints"][0]  # (K, 2) in network-input pixels
    inv = cv2.invertAffineTransform(m)
    keypoints = kp @ inv[:, :2].T + inv[:, 2]
    scores = outputs["scores"][0] if "scores" in outputs else None
    return keypoints, scores


@pytest.mark.parametrize("family", ["hourglass", "dogs"])
def test_deploy_doc_recipe_matches_predictor(family, exported):
    path = exported(family)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (100, 140, 3), dtype=np.uint8)
    predictor = Predictor(path)
    for box in (None, [30.0, 12.0, 44.0, 70.0], [-10.0, 50.0, 60.0, 60.0]):
        kp, scores = deploy_topdown(path, image, box)
        ref = predictor(image, boxes=box)
        np.testing.assert_allclose(kp, ref.keypoints[0], atol=1e-3)
        if scores is not None:
            np.testing.assert_allclose(scores, ref.scores[0], atol=1e-5)


def _config_edit(edit):
    def apply(props):
        cfg = json.loads(props["posekit.config"])
        edit(cfg)
        props["posekit.config"] = json.dumps(cfg)
    return apply


TAMPERED = {  # name: (edit of the metadata, words of the one-line error)
    "config missing": (lambda p: p.pop("posekit.config"), "no posekit.config metadata"),
    "config not JSON": (lambda p: p.update({"posekit.config": "{not json"}), "posekit.config is not valid JSON"),
    "config of the wrong type": (lambda p: p.update({"posekit.config": "[1, 2]"}), "posekit.config is a list"),
    "input of the wrong type": (lambda p: p.update({"posekit.input": '"big"'}), "posekit.input is a str"),
    "task unknown": (_config_edit(lambda c: c.update(task="nope")), "unknown task 'nope'"),
    "size absurd": (_config_edit(lambda c: c["data"].update(input_size=10**9)), "data.input_size' must be at most"),
    "outputs missing": (lambda p: p.pop("posekit.outputs"), "posekit.outputs is missing"),
    "outputs renamed": (lambda p: p.update({"posekit.outputs": '["a", "b"]'}), "the graph's outputs"),
    "buffers unknown": (lambda p: p.update({"posekit.buffers": '{"x": {"dtype": "load"}}'}), "buffer 'x'"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_tampered_onnx_metadata_is_one_line_never_an_internal_error(case, exported, tmp_path, capsys):
    from posekit.cli import main
    from posekit.data.io import write_image
    edit, words = TAMPERED[case]
    m = onnx.load(str(exported("hourglass")))
    props = {p.key: p.value for p in m.metadata_props}
    edit(props)
    del m.metadata_props[:]
    onnx.helper.set_model_props(m, props)
    path = tmp_path / "tampered.onnx"
    onnx.save(m, str(path))
    with pytest.raises(ValueError, match="tampered.onnx"):
        Predictor(path)
    write_image(tmp_path / "in.png", np.zeros((40, 50, 3), np.uint8))
    assert main(["predict", str(path), str(tmp_path / "in.png"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "internal error" not in err and words in err, err
