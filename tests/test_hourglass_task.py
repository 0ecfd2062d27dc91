"""The hourglass Task end to end: recipes, training steps, evaluation with an oracle model (100 %
PCKh through flip test, decoding and the inverse affine), predict, ONNX export parity, demo."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from posekit.codecs.heatmap import flip_back_heatmaps
from posekit.config import ConfigError, load_config
from posekit.skeletons import get_skeleton
from posekit.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
SK = get_skeleton("mpii16")
SMALL = ["data.synthetic_train_size=16", "data.synthetic_val_size=6", "data.synthetic_image_size=160",
         "eval.batch_size=8"]


def _cfg(*overrides, path="mpii_synthetic.yaml"):
    return load_config(REPO / "configs" / path, list(SMALL) + list(overrides))


@pytest.mark.parametrize("recipe, model", [("mpii_hourglass8.yaml", "hourglass8"),
                                           ("mpii_hourglass4.yaml", "hourglass4"),
                                           ("mpii_synthetic.yaml", "hourglass2_small")])
def test_recipes_load(recipe, model):
    cfg = load_config(REPO / "configs" / recipe)
    assert cfg.task == "hourglass" and cfg.model.name == model
    if recipe == "mpii_hourglass4.yaml":  # the seed's config.cfg
        t = cfg.train
        assert (t.optimizer, t.lr, t.rmsprop_alpha, t.batch_size) == ("rmsprop", 2.5e-4, 0.9, 4)
        assert (t.schedule, t.gamma, t.decay_steps, t.staircase) == ("exp", 0.96, 2000, True)
        assert cfg.model.args["dropout"] == 0.2


def test_bad_options_are_clear():
    with pytest.raises(ConfigError, match="data.sigmaa"):
        _cfg("data.sigmaa=2")
    task = get_task("hourglass")
    with pytest.raises(ValueError, match="data.loss"):
        task.build_datasets(_cfg("data.loss=l2"))
    with pytest.raises(ValueError, match="data.dataset"):
        task.build_datasets(_cfg("data.dataset=coco"))
    with pytest.raises(ValueError, match="heatmap_size"):
        task.build_model(_cfg("data.heatmap_size=64"))


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_training_steps_reduce_the_loss(loss):
    torch.manual_seed(0)
    np.random.seed(0)
    cfg = _cfg(f"data.loss={loss}", "data.augment=false")
    task = get_task("hourglass")
    model = task.build_model(cfg)
    train, val = task.build_datasets(cfg)
    task.prepare(model, train, cfg)
    batch = task.collate([train[i] for i in range(4)])
    assert batch["image"].shape == (4, 3, 128, 128) and batch["target"].shape == (4, 16, 32, 32)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    losses = []
    for _ in range(6):
        loss_value, logs = task.training_step(model, batch)
        opt.zero_grad()
        loss_value.backward()
        opt.step()
        losses.append(float(loss_value.detach()))
    assert "loss_last_stack" in logs
    assert losses[-1] < (0.7 if loss == "mse" else 0.9) * losses[0]


class Oracle(nn.Module):
    """Returns the ground-truth heatmaps of each crop it was registered with (and the mirrored
    heatmaps for a mirrored crop): decoding + flip test + inverse affine must then give PCKh 100."""

    def __init__(self, items, stacks=2):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.table = {}
        for it in items:
            img = torch.as_tensor(it["image"])
            t = torch.as_tensor(it["target"])
            self.table[self._key(img)] = t
            self.table[self._key(img.flip(-1))] = flip_back_heatmaps(t[None], SK.flip_index)[0]
        self.stacks = stacks

    @staticmethod
    def _key(img):
        return round(float((img.double() * torch.arange(img.numel(), dtype=torch.float64).view(img.shape).cos()).sum()), 4)

    def forward(self, x):
        maps = torch.stack([self.table[self._key(img)] for img in x])
        return maps[:, None].repeat(1, self.stacks, 1, 1, 1) + 0 * self.dummy


def test_evaluate_oracle_synthetic_is_perfect():
    cfg = _cfg()
    task = get_task("hourglass")
    _, val = task.build_datasets(cfg)
    oracle = Oracle([val[i] for i in range(len(val))])
    metrics = task.evaluate(oracle, val, cfg)
    assert metrics["pckh"] == 100.0 and metrics["pck_torso@0.2"] == 100.0
    assert metrics["samples"] == 6 and metrics["val_loss"] == 0.0
    for key in ("pckh@0.1", "pckh_head", "pckh_shoulder", "pckh_elbow", "pckh_wrist", "pckh_hip", "pckh_knee",
                "pckh_ankle"):
        assert key in metrics


def test_evaluate_oracle_on_real_mpii_is_perfect(realdata):
    if not (realdata / "mpii" / "mmpose" / "images").is_dir():
        pytest.skip("MPII samples not present")
    cfg = load_config(REPO / "configs" / "mpii_hourglass4.yaml",
                      [f"data.root={realdata / 'mpii'}", "data.train_file=mmpose/test_mpii.json",
                       "data.val_file=pose_hg_train/valid.h5", "data.image_dir=mmpose/images",
                       "data.skip_missing_images=true", "eval.refine=dark", "data.loss=mse"])
    task = get_task("hourglass")
    train, val = task.build_datasets(cfg)
    assert len(train) == 5 and len(val) == 5  # 2953 valid.h5 people have no image here
    oracle = Oracle([val[i] for i in range(5)])
    metrics = task.evaluate(oracle, val, cfg)
    assert metrics["pckh"] == 100.0 and metrics["pckh@0.1"] == 100.0 and metrics["pckh_samples"] == 5


def test_predict_box_or_whole_image():
    torch.manual_seed(0)
    cfg = _cfg()
    task = get_task("hourglass")
    model = task.build_model(cfg).eval()
    img = np.random.default_rng(0).integers(0, 255, (90, 140, 3), dtype=np.uint8)
    whole, boxed = task.predict(model, [img, img], cfg, boxes=[None, [30, 10, 40, 60]])
    assert whole.keypoints.shape == (1, 16, 2) and whole.scores.shape == (1, 16)
    assert whole.boxes.tolist() == [[0, 0, 140, 90]]
    # keypoints come back in image pixels: inside the crop square around the box (side 60 x 1.25)
    assert np.all(np.abs(boxed.keypoints[0] - [49.5, 39.5]) <= 37.5 + 1)
    assert np.all(np.abs(whole.keypoints[0] - [69.5, 44.5]) <= 70 + 1)
    assert whole.plot().shape == img.shape
    with pytest.raises(ValueError, match="positive w, h"):
        task.predict(model, [img], cfg, boxes=[[0, 0, -5, 10]])


@pytest.mark.parametrize("refine, flip", [("shift", True), ("dark", False)])
def test_export_parity_with_decoding_in_graph(tmp_path, refine, flip):
    pytest.importorskip("onnxruntime")
    from posekit.export.onnx import export_onnx

    torch.manual_seed(0)
    cfg = _cfg(f"eval.refine={refine}", f"eval.flip_test={flip}")
    task = get_task("hourglass")
    model = task.build_model(cfg).eval()
    module, example, inputs, outputs, dyn = task.export_module(model, cfg)
    report = export_onnx(module, example, tmp_path / "hg.onnx", input_names=inputs, output_names=outputs,
                         dynamic_axes=dyn)
    assert outputs == ["keypoints", "scores"]
    assert report["max_abs_diff"] < 1e-3
    with torch.no_grad():
        kp, sc = module(*example)
    assert kp.shape == (2, 16, 2) and sc.shape == (2, 16)
    assert float(kp.min()) >= -0.5 and float(kp.max()) <= 128  # crop pixels


def test_demo_writes_overlays(tmp_path):
    cfg = _cfg()
    task = get_task("hourglass")
    model = task.build_model(cfg).eval()
    _, val = task.build_datasets(cfg)
    paths = task.demo(model, val, cfg, tmp_path)
    assert len(paths) == 4 and all(p.is_file() and p.stat().st_size > 1000 for p in paths)


def test_trainer_integration(tmp_path):
    from posekit.engine.trainer import evaluate_checkpoint, train

    cfg = _cfg(f"out_dir={tmp_path}", "name=hg", "train.max_steps=2", "train.batch_size=4", "train.val_every=2",
               "train.progress=false", "train.tensorboard=false", "train.warmup_steps=0")
    run = train(cfg)
    assert (run / "best.pt").is_file()
    metrics = evaluate_checkpoint(cfg, run / "best.pt")
    assert 0.0 <= metrics["pckh"] <= 100.0
