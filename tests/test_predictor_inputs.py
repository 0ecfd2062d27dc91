"""What an image is at the Predictor API (uint8 RGB (H, W, 3), or float RGB in [0, 1]), refused
otherwise with one line saying what was given, `bgr=True` for cv2.imread arrays, the same rules on
the onnxruntime backend; and a device the machine lacks is one line for predict, eval and train."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import smoke_checkpoints

from posekit.cli import main
from posekit.engine import distributed
from posekit.engine.predictor import ImageInputError, Predictor, as_rgb_image

SMALLER = ("data.input_size=64", "data.heatmap_size=16", "data.synthetic_image_size=96")
NO_CUDA = not torch.cuda.is_available()

pytestmark = pytest.mark.usefixtures("private_tempdir")  # the ONNX export cache stays in the module's folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return smoke_checkpoints(tmp_path_factory, {"hourglass": SMALLER})("hourglass")


@pytest.fixture(scope="module")
def predictor(checkpoint):
    return Predictor(checkpoint)


@pytest.fixture(scope="module")
def image(predictor):
    task = predictor.task
    return task.sample_inputs(task.build_datasets(), 1)[0]


def _same(a, b):
    np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-4)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def one_line(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "internal error" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_predictor_refuses_float_images_in_0_255(predictor, image):
    with pytest.raises(ImageInputError) as e:
        predictor(image.astype(np.float32))
    msg = str(e.value)
    assert "\n" not in msg
    assert "float32" in msg and str(tuple(image.shape)) in msg  # what was given: dtype, shape...
    assert f"..{float(image.max()):g}" in msg                     # ...and its value range
    assert "[0, 1]" in msg and "uint8" in msg and "astype(np.uint8)" in msg  # what is expected


def test_predictor_takes_float_images_in_0_1_as_uint8(predictor, image):
    _same(predictor(image.astype(np.float32) / 255.0), predictor(image))
    _same(predictor(image.astype(np.float64) / 255.0), predictor(image))


def test_predictor_bgr_true_matches_rgb_input(checkpoint, predictor, image):
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    expected = predictor(image)
    _same(predictor(bgr, bgr=True), expected)
    _same(Predictor(checkpoint, bgr=True)(bgr), expected)                 # set once in the constructor
    _same(Predictor(checkpoint, bgr=True)(image, bgr=False), expected)    # a call overrides it
    assert not np.allclose(predictor(bgr).keypoints, expected.keypoints, atol=1e-4)  # it matters


def test_predictor_never_modifies_the_callers_array(predictor, image):
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    before = bgr.copy()
    predictor(bgr, bgr=True)
    np.testing.assert_array_equal(bgr, before)


def test_predictor_drops_alpha_and_replicates_grey(predictor, image):
    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 7, np.uint8)], axis=2)
    _same(predictor(rgba), predictor(image))
    grey = image[:, :, 1]
    _same(predictor(grey), predictor(np.repeat(grey[:, :, None], 3, axis=2)))
    _same(predictor(grey[:, :, None]), predictor(grey))


@pytest.mark.parametrize("bad, needles", [
    (lambda im: (im.astype(np.uint16) * 257), ["uint16", "(image // 257).astype(np.uint8)"]),
    (lambda im: im.astype(np.int64), ["int64", "astype(np.uint8)"]),
    (lambda im: np.ascontiguousarray(im.transpose(2, 0, 1)), ["channels-first", "transpose(1, 2, 0)"]),
    (lambda im: im[None], ["list(images)"]),
    (lambda im: im[:, :, :2], ["(H, W, 3)"]),
    (lambda im: np.where(im > 100, np.nan, im / 255.0), ["NaN"]),
    (lambda im: im.astype(np.float32) / 127.5 - 1.0, ["[0, 1]", "values -1.."]),
    (lambda im: torch.from_numpy(im).permute(2, 0, 1), ["torch", "permute(1, 2, 0)"]),
    (lambda im: im[:0], ["shape (0,"]),
])
def test_predictor_refuses_what_is_not_an_image_with_one_line(predictor, image, bad, needles):
    with pytest.raises(ImageInputError) as e:
        predictor(bad(image))
    msg = str(e.value)
    assert "\n" not in msg and "expected uint8 RGB (H, W, 3)" in msg, msg
    for needle in needles:
        assert needle in msg, msg


def test_predictor_names_the_input_in_a_list(predictor, image):
    with pytest.raises(ImageInputError, match=r"^input 1: got a float32 array"):
        predictor([image, image.astype(np.float32)])


def test_onnxruntime_backend_takes_images_by_the_same_rules(checkpoint, predictor, image):
    pytest.importorskip("onnxruntime")
    ort = Predictor(checkpoint, backend="onnxruntime")
    with pytest.raises(ImageInputError, match="float32"):
        ort(image.astype(np.float32))
    expected = ort(image)
    _same(ort(image[:, :, ::-1].copy(), bgr=True), expected)
    _same(ort(image.astype(np.float32) / 255.0), expected)
    _same(Predictor(ort.onnx_path, bgr=True)(image[:, :, ::-1].copy()), expected)  # an .onnx file


def test_as_rgb_image_keeps_uint8_rgb_without_a_copy(image):
    assert as_rgb_image(image) is image or np.shares_memory(as_rgb_image(image), image)
    assert as_rgb_image(np.ones((2, 3, 3))).tolist() == np.full((2, 3, 3), 255).tolist()


@pytest.mark.skipif(not NO_CUDA, reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_one_line(checkpoint, tmp_path, capsys, image):
    from posekit.data.io import write_image
    photo = tmp_path / "photo.png"
    write_image(photo, image)
    one_line(capsys, ["predict", str(checkpoint), str(photo), "--out", str(tmp_path / "out"), "--device", "cuda"],
             "CUDA was asked for (--device cuda)", "torch.cuda.is_available() is False", "use --device cpu")
    one_line(capsys, ["eval", str(checkpoint), "train.device=cuda"],
             "CUDA was asked for (train.device=cuda)", "use train.device=cpu")
    with pytest.raises(distributed.DeviceError, match=r"^CUDA was asked for \(--device cuda:1\)"):
        Predictor(checkpoint, device="cuda:1")


@pytest.mark.skipif(not NO_CUDA, reason="needs a machine without CUDA")
def test_train_device_cuda_without_cuda_is_one_line(capsys, tmp_path):
    from posekit.families import get_task_class
    cls = get_task_class("hourglass")
    one_line(capsys, ["train", cls.synthetic_recipe, *cls.smoke_overrides, f"out_dir={tmp_path}",
                      "train.max_steps=1", "train.device=cuda"],
             "posekit train: error: CUDA was asked for (train.device=cuda)", "use train.device=cpu")


def test_unknown_device_name_is_a_device_error():
    with pytest.raises(distributed.DeviceError, match="unknown device --device 'gpu0'; use auto, cpu"):
        distributed.pick_device("gpu0", option="--device")
    assert distributed.pick_device("cpu") == torch.device("cpu")
