"""The OpenPose family end to end: the real-data oracle chain, flip test, CMU weight import,
bad records, and prediction on a photo."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from posekit.cli import main
from posekit.codecs.paf import flip_back_paf
from posekit.engine.evaluation import evaluate, evaluate_checkpoint, predict
from posekit.engine.predictor import load_for_inference
from posekit.engine.recipes import load_config
from posekit.families import build_task
from posekit.models import create_model
from posekit.models.openpose import cmu_layer_names


def test_oracle_on_the_real_coco_samples_proves_the_chain(realdata):
    """GT -> neck + CMU order -> heatmaps/PAFs -> peaks, limbs, people -> COCO-17 -> OKS AP."""
    cfg = load_config("coco_openpose", [f"data.root={realdata / 'coco'}"])
    metrics = evaluate_checkpoint(cfg, oracle=True)
    assert metrics["AP"] >= 0.95 and metrics["AP50"] == 1.0
    assert metrics["images"] == 4 and metrics["people"] == 12  # 14 people, 2 without keypoints
    # the seed's decoder thresholds are stricter: still a high ceiling
    ms = evaluate_checkpoint(load_config("coco_openpose", [f"data.root={realdata / 'coco'}", "eval.preset=mindspore"]),
                             oracle=True)
    assert 0.9 <= ms["AP"] <= metrics["AP"] + 1e-9


def _small_task(tmp_path, *extra):
    cfg = load_config("coco_synthetic", ["data.synthetic_train_size=4", "data.synthetic_val_size=2",
                                         "data.input_size=64", "data.synthetic_image_size=96", *extra])
    return build_task(cfg)


def test_flip_test_is_mirror_equivariant(tmp_path):
    """With eval.flip_test the decoded maps of a mirrored image are exactly the mirrored maps."""
    task = _small_task(tmp_path, "eval.flip_test=true")
    torch.manual_seed(0)
    model = task.build_model().eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a = task.forward_decode(model, x)
        b = task.forward_decode(model, x.flip(-1))
    pafs, heats = flip_back_paf(b["pafs"], b["heatmaps"], skeleton="openpose18")
    assert torch.allclose(pafs, a["pafs"], atol=1e-5) and torch.allclose(heats, a["heatmaps"], atol=1e-5)


def test_cmu_weights_import_through_the_cli(tmp_path, realdata):
    """A state dict with CMU's layer names and shapes -> `posekit convert` -> a checkpoint that
    eval/predict/export load, with CMU's normalisation and every tensor in place."""
    model = create_model("openpose_vgg19")
    ours = model.state_dict()
    state = {}
    for cmu, name in cmu_layer_names(model):
        for suffix in ("weight", "bias"):
            state[f"{cmu}.{suffix}"] = torch.randn_like(ours[f"{name}.{suffix}"]) * 0.01
    weights = tmp_path / "body_pose_model.pth"
    torch.save(state, weights)
    out = tmp_path / "cmu.pt"
    assert main(["convert", "cmu-openpose", str(weights), "--out", str(out)]) == 0
    task, loaded, cfg = load_for_inference(out)
    assert task.name == "openpose" and loaded.normalization == "cmu"
    loaded_state = loaded.state_dict()
    for cmu, name in cmu_layer_names(loaded):
        assert torch.equal(loaded_state[f"{name}.weight"], state[f"{cmu}.weight"])
    # a photo in, COCO-17 people out (random weights: any number of people, all finite)
    from posekit.data.io import read_image
    image = read_image(next((realdata / "coco" / "images").glob("*.jpg")))
    (res,) = predict(task, loaded, [image])
    assert res.skeleton.name == "coco17" and np.isfinite(res.keypoints).all()
    # a file that is not CMU's model is a one-line error naming what is missing
    torch.save({"conv1_1.weight": state["conv1_1.weight"]}, tmp_path / "partial.pth")
    assert main(["convert", "cmu-openpose", str(tmp_path / "partial.pth"), "--out", str(tmp_path / "x.pt")]) == 2


def _coco_file(tmp_path, realdata, mutate):
    raw = json.loads((realdata / "coco" / "test_coco.json").read_text())
    mutate(raw)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(raw))
    return path


def test_bad_records_error_or_are_counted(tmp_path, realdata):
    def break_one(raw):
        raw["annotations"][0]["keypoints"] = raw["annotations"][0]["keypoints"][:-3]  # 16 keypoints
    ann = _coco_file(tmp_path, realdata, break_one)
    base = [f"data.root={realdata / 'coco'}", f"data.train_ann={ann}", f"data.val_ann={ann}"]
    with pytest.raises(ValueError, match=r"ann\.json.*annotation"):
        build_task(load_config("coco_openpose", base)).build_datasets()
    task = build_task(load_config("coco_openpose", [*base, "data.on_bad_record=skip"]))
    datasets = task.build_datasets()
    assert len(datasets["train"].source.skipped) == 1
    assert len(datasets["val"]) == 4  # the image stays, without the broken person


def test_trained_synthetic_model_evaluates_and_draws_every_person(tmp_path):
    task = _small_task(tmp_path)
    torch.manual_seed(0)
    model = task.build_model()
    datasets = task.build_datasets()
    metrics = evaluate(task, model, datasets)
    assert 0.0 <= metrics["AP"] <= 1.0 and metrics["images"] == 2
    oracle = evaluate(task, None, datasets, oracle=True)
    assert oracle["AP"] > metrics["AP"]  # the codec's ceiling is above an untrained network


def test_multi_scale_test_averages_resized_maps(tmp_path):
    task = _small_task(tmp_path)
    torch.manual_seed(0)
    model = task.build_model().eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        single = task.forward_decode(model, x)
        twice = _small_task(tmp_path, "eval.scales=[1.0,1.0]").forward_decode(model, x)
        multi = _small_task(tmp_path, "eval.scales=[0.5,1.0,2.0]", "eval.flip_test=true").forward_decode(model, x)
        big = model(torch.nn.functional.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False))
    assert torch.allclose(single["pafs"], twice["pafs"]) and torch.allclose(single["heatmaps"], twice["heatmaps"])
    assert multi["pafs"].shape == single["pafs"].shape == (1, 38, 8, 8)
    assert not torch.allclose(multi["heatmaps"], single["heatmaps"])
    assert big[1].shape[-2:] == (16, 16)  # the x2 scale ran at 128 px and was resized back to 8 x 8
    with pytest.raises(ValueError, match="eval.scales"):
        _small_task(tmp_path, "eval.scales=[]")
