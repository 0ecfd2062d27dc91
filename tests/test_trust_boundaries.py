"""Files from elsewhere are data: a checkpoint that is a bare tensor or a list is one line for
every verb that loads one, weights paths stored in a checkpoint are never opened, `--set
imports=` is refused, the ONNX export cache is private and content-keyed (a planted graph is
never used), and `convert` refuses NaN weights."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

from posekit.cli import main
from posekit.config import config_to_dict
from posekit.engine.recipes import load_config
from posekit.families import build_task, get_task_class

SMALL = {"hourglass": ("data.input_size=64", "data.heatmap_size=16", "data.synthetic_image_size=96",
                       "model.name=hourglass2_small"),
         "dogs": ()}


def _config(family: str, tmp_path, *extra: str):
    cls = get_task_class(family)
    return load_config(cls.synthetic_recipe, [*cls.smoke_overrides, *SMALL.get(family, ()),
                                              f"out_dir={tmp_path}", "train.tensorboard=false", *extra])


def _checkpoint(family: str, path, *extra: str, seed: int = 0, args: dict | None = None):
    """An untrained but complete posekit checkpoint (no training: fast); `args` is written into the
    stored model.args after building, as a stranger's file could hold anything there."""
    cfg = _config(family, path.parent, *extra)
    torch.manual_seed(seed)
    model = build_task(cfg).build_model()
    stored = config_to_dict(cfg)
    stored["model"]["args"] = {**stored["model"]["args"], **(args or {})}
    torch.save({"model": model.state_dict(), "config": stored, "step": 0}, path)
    return path


@pytest.fixture()
def image_file(tmp_path):
    from posekit.data.io import write_image
    path = tmp_path / "in.png"
    write_image(path, np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    return path


@pytest.fixture()
def cache_home(tmp_path, monkeypatch):
    home = tmp_path / "cache_home"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


def _one_line_error(capsys, argv) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "internal error" not in err, err
    return err


# --- checkpoints that are not mappings ------------------------------------------------------------
PAYLOADS = {"tensor": (torch.zeros(3, 4), "a bare tensor of shape (3, 4)"),
            "list": ([torch.zeros(1), 2, "x"], "a list of 3 items")}


def _pose_file(tmp_path):
    """One 2-D pose in COCO-17 order (what `lift --json` reads)."""
    import json
    path = tmp_path / "pose.json"
    path.write_text(json.dumps({"skeleton": "coco17", "poses": [[[10.0 + i, 20.0 + 3 * i, 1.0] for i in range(17)]]}))
    return path


def _verbs(tmp_path, bad, image):
    recipe = get_task_class("hourglass").synthetic_recipe
    small = [*get_task_class("hourglass").smoke_overrides, *SMALL["hourglass"], f"out_dir={tmp_path / 'runs'}",
             "train.max_steps=1", "train.tensorboard=false"]
    return {
        "train.resume": ["train", recipe, *small, f"train.resume={bad}"],
        "model.init_from": ["train", recipe, *small, f"model.init_from={bad}"],
        "eval": ["eval", bad],
        "eval checkpoint=": ["eval", recipe, *small, f"checkpoint={bad}"],
        "predict": ["predict", bad, image, "--out", tmp_path / "pred"],
        "export": ["export", bad, "--out", tmp_path / "x.onnx"],
        "lift": ["lift", bad, "--json", _pose_file(tmp_path), "--out", tmp_path / "lift"],
        "convert": ["convert", "cmu-openpose", bad, "--out", tmp_path / "cmu.pt"],
    }


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
@pytest.mark.parametrize("verb", ["train.resume", "model.init_from", "eval", "eval checkpoint=", "predict",
                                  "export", "lift", "convert"])
def test_a_checkpoint_that_is_a_bare_tensor_or_list_is_one_line_for_every_verb(verb, payload, tmp_path, capsys,
                                                                                 image_file):
    value, words = PAYLOADS[payload]
    bad = tmp_path / "stranger.pt"
    torch.save(value, bad)
    err = _one_line_error(capsys, _verbs(tmp_path, bad, image_file)[verb])
    assert "stranger.pt" in err and words in err, err
    assert not (tmp_path / "cmu.pt").exists() and not (tmp_path / "x.onnx").exists()


def test_a_checkpoint_without_weights_or_config_names_what_is_missing(tmp_path, capsys, image_file):
    bad = tmp_path / "half.pt"
    torch.save({"config": {"task": "hourglass"}}, bad)
    err = _one_line_error(capsys, ["predict", bad, image_file, "--out", tmp_path / "out"])
    assert "half.pt" in err and "'model'" in err
    torch.save({"model": torch.zeros(2), "config": {}}, bad)
    err = _one_line_error(capsys, ["export", bad, "--out", tmp_path / "x.onnx"])
    assert "'model' entry is a bare tensor of shape (2,)" in err


# --- weights paths stored in a checkpoint -----------------------------------------------------------
def test_weights_paths_stored_in_a_checkpoint_are_never_opened(tmp_path, monkeypatch, image_file):
    """A checkpoint naming backbone_weights=<an existing file> behaves exactly as one naming a path
    that does not exist: neither is opened (torch.load sees only the checkpoint itself)."""
    from posekit.engine.predictor import Predictor
    planted = tmp_path / "secret.pt"
    torch.save({"features.0.0.weight": torch.zeros(1)}, planted)  # would fail loudly if loaded
    ckpts = [_checkpoint("dogs", tmp_path / f"dogs_{i}.pt", args={"backbone_weights": str(p), "pretrained": True})
             for i, p in enumerate([planted, tmp_path / "nonexistent.pt"])]
    opened = []
    real_load = torch.load

    def spy(f, *a, **k):
        opened.append(str(f))
        return real_load(f, *a, **k)
    monkeypatch.setattr(torch, "load", spy)
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    a, b = (Predictor(c)(image) for c in ckpts)
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    assert opened == [str(c) for c in ckpts]  # the checkpoints only: no weights file, no download
    assert Predictor(ckpts[0]).cfg.model.args["backbone_weights"] is None
    from posekit.engine.evaluation import config_from_checkpoint  # `posekit eval CKPT` too
    cfg = config_from_checkpoint(real_load(ckpts[0], map_location="cpu", weights_only=True), source=str(ckpts[0]))
    assert cfg.model.args["backbone_weights"] is None and cfg.model.args["pretrained"] is False


def test_inference_model_args_neutralise_every_weights_argument():
    from posekit.engine.predictor import inference_model_args
    assert inference_model_args("dogs_mobilenetv2", {"backbone_weights": "/x.pt", "pretrained": True, "dropout": 0.1}) \
        == {"backbone_weights": None, "pretrained": False, "dropout": 0.1}
    # openpose_vgg19 derives its input normalisation from `pretrained`: that choice is kept
    assert inference_model_args("openpose_vgg19", {"pretrained": "imagenet"}) == {"pretrained": None,
                                                                                  "normalization": "imagenet"}
    assert inference_model_args("openpose_vgg19", {"cmu_weights": "/c.pth"}) == {"cmu_weights": None,
                                                                                 "normalization": "cmu"}
    assert inference_model_args("not_registered", {"init_from": "a", "my_weights": "b", "width": 3}) \
        == {"init_from": None, "my_weights": None, "width": 3}


# --- predict --set imports= --------------------------------------------------------------------------
def test_predict_set_imports_is_refused_in_one_line(tmp_path, capsys, image_file):
    ckpt = _checkpoint("hourglass", tmp_path / "hg.pt")
    err = _one_line_error(capsys, ["predict", ckpt, image_file, "--out", tmp_path / "out", "--set", "imports=[os]"])
    assert "imports cannot be set as an override" in err and "Predictor(CHECKPOINT, imports=" in err
    assert not (tmp_path / "out").exists()


# --- the ONNX export cache -----------------------------------------------------------------------------
def test_onnx_cache_is_private_and_a_planted_graph_is_never_used(tmp_path, cache_home):
    pytest.importorskip("onnxruntime")
    import shutil

    from posekit.engine.predictor import Predictor, onnx_cache_path
    ckpt_a = _checkpoint("hourglass", tmp_path / "a.pt", seed=0)
    ckpt_b = _checkpoint("hourglass", tmp_path / "b.pt", seed=1)
    graph_a = Predictor(ckpt_a, backend="onnxruntime").onnx_path
    folder = graph_a.parent
    assert folder == cache_home / "posekit" / "onnx" and stat.S_IMODE(folder.stat().st_mode) == 0o700
    slot_b = onnx_cache_path(ckpt_b)
    shutil.copy(graph_a, slot_b)  # a valid posekit graph, but of other weights, in b's slot
    image = np.random.default_rng(2).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    got = Predictor(ckpt_b, backend="onnxruntime")(image)
    want_b, want_a = Predictor(ckpt_b)(image), Predictor(ckpt_a)(image)
    np.testing.assert_allclose(got.keypoints, want_b.keypoints, atol=1e-3)
    assert np.abs(want_a.keypoints - want_b.keypoints).max() > 1e-2  # the planted graph would have shown
    slot_b.write_bytes(b"not onnx")  # garbage in the slot: exported again, never loaded
    np.testing.assert_allclose(Predictor(ckpt_b, backend="onnxruntime")(image).keypoints, want_b.keypoints, atol=1e-3)


def test_a_cache_folder_others_may_write_is_refused(tmp_path, cache_home):
    from posekit.engine.predictor import onnx_cache_path
    ckpt = _checkpoint("hourglass", tmp_path / "hg.pt")
    folder = cache_home / "posekit" / "onnx"
    folder.mkdir(parents=True)
    os.chmod(folder, 0o777)
    with pytest.raises(PermissionError, match="not this user's own"):
        onnx_cache_path(ckpt)


# --- convert ----------------------------------------------------------------------------------------------
def test_convert_refuses_non_finite_weights_naming_the_tensor(tmp_path, capsys):
    weights = tmp_path / "body_pose_model.pth"
    torch.save({"conv1_1.weight": torch.zeros(64, 3, 3, 3), "conv1_1.bias": torch.tensor([0.0, float("nan")])},
               weights)
    err = _one_line_error(capsys, ["convert", "cmu-openpose", weights, "--out", tmp_path / "cmu.pt"])
    assert "'conv1_1.bias' holds NaN or inf" in err and "body_pose_model.pth" in err
    assert not (tmp_path / "cmu.pt").exists()
