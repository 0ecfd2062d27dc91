"""The hourglass Task end to end: recipes (the typed `loss:` section), training steps, the one eval
loop with an oracle model (100 % PCKh through flip test, forward_decode and the inverse affine in
postprocess) and the codec oracle, predict, ONNX export parity of the decode graph, demo."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from posekit.codecs.heatmap import flip_back_heatmaps
from posekit.config import ConfigError
from posekit.engine.evaluation import evaluate, predict
from posekit.engine.recipes import load_config
from posekit.families import build_task, get_task_class
from posekit.losses.heatmap import heatmap_loss
from posekit.skeletons import get_skeleton

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
    assert isinstance(build_task(cfg), get_task_class("hourglass"))
    if recipe == "mpii_hourglass4.yaml":  # the seed's config.cfg
        t = cfg.train
        assert (t.optimizer, t.lr, t.rmsprop_alpha, t.batch_size) == ("rmsprop", 2.5e-4, 0.9, 4)
        assert (t.schedule, t.gamma, t.decay_steps, t.staircase) == ("exp", 0.96, 2000, True)
        assert cfg.model.args["dropout"] == 0.2
        assert (cfg.loss.kind, cfg.loss.stack_reduction) == ("bce", "mean")  # the seed's loss
    elif recipe == "mpii_hourglass8.yaml":
        assert (cfg.loss.kind, cfg.loss.stack_reduction) == ("mse", "sum")  # Newell
    else:
        assert (cfg.loss.kind, cfg.loss.stack_reduction) == ("mse", "sum")


def test_bad_options_are_clear():
    with pytest.raises(ConfigError, match="data.sigmaa"):
        _cfg("data.sigmaa=2")
    with pytest.raises(ConfigError, match="data.loss"):  # the loss moved to its own section
        _cfg("data.loss=mse")
    with pytest.raises(ValueError, match="loss.kind"):
        build_task(_cfg("loss.kind=l2"))
    with pytest.raises(ValueError, match="loss.stack_reduction"):
        build_task(_cfg("loss.stack_reduction=max"))
    with pytest.raises(ValueError, match="eval.refine"):
        build_task(_cfg("eval.refine=softargmax"))
    with pytest.raises(ValueError, match="data.dataset"):
        build_task(_cfg("data.dataset=coco")).build_datasets()
    with pytest.raises(ValueError, match="heatmap_size"):
        build_task(_cfg("data.heatmap_size=64")).build_model()


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_training_steps_reduce_the_loss(loss):
    torch.manual_seed(0)
    cfg = _cfg(f"loss.kind={loss}", "data.augment=false")
    task = build_task(cfg)
    model = task.build_model()
    datasets = task.build_datasets()
    assert set(datasets) == {"train", "val"} and len(datasets["train"]) == 16 and len(datasets["val"]) == 6
    train = datasets["train"]
    task.prepare(model, datasets)
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


def test_loss_section_configures_the_objective():
    """`loss.kind` / `loss.stack_reduction` reach task.loss, which is heatmap_loss on the batch."""
    torch.manual_seed(0)
    tasks = {(k, r): build_task(_cfg(f"loss.kind={k}", f"loss.stack_reduction={r}", "data.augment=false"))
             for k in ("mse", "bce") for r in ("sum", "mean")}
    train = tasks["mse", "sum"].build_datasets(("train",))["train"]
    batch = tasks["mse", "sum"].collate([train[i] for i in range(2)])
    outputs = torch.randn(2, 2, 16, 32, 32)
    for (kind, reduction), task in tasks.items():
        value, logs = task.loss(outputs, batch)
        expected, per_stack = heatmap_loss(outputs, batch["target"].float(), batch["target_weight"].float(),
                                           kind=kind, stack_reduction=reduction)
        assert float(value) == pytest.approx(float(expected))
        assert logs["loss_last_stack"] == pytest.approx(float(per_stack[-1]))
    for kind in ("mse", "bce"):  # 2 stacks: the sum is twice the mean
        assert float(tasks[kind, "sum"].loss(outputs, batch)[0]) == pytest.approx(
            2 * float(tasks[kind, "mean"].loss(outputs, batch)[0]))


class Oracle(nn.Module):
    """Returns the ground-truth heatmaps of each crop it was registered with (and the mirrored
    heatmaps for a mirrored crop): decoding + flip test + inverse affine must then give PCKh 100."""

    def __init__(self, items, stacks=2):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.table = {}
        for it in items:
            img = torch.as_tensor(it["image"]).float().div(255.0)  # what model_inputs hands the network
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


PCKH_KEYS = ("pckh@0.1", "pckh/head", "pckh/shoulder", "pckh/elbow", "pckh/wrist", "pckh/hip", "pckh/knee",
             "pckh/ankle")


def test_evaluate_oracle_synthetic_is_perfect():
    cfg = _cfg()
    task = build_task(cfg)
    datasets = task.build_datasets()
    val = datasets["val"]
    oracle = Oracle([val[i] for i in range(len(val))])
    metrics = evaluate(task, oracle, datasets)
    assert metrics["pckh"] == 100.0 and metrics["pck_torso@0.2"] == 100.0
    assert metrics["samples"] == 6 and metrics["val_loss"] == 0.0
    for key in PCKH_KEYS:
        assert key in metrics
    # the codec oracle (no network: decode_targets) scores the encoded ground truth the same
    codec = evaluate(task, None, datasets, oracle=True)
    assert codec["pckh"] == 100.0 and codec["pck_torso@0.2"] == 100.0 and codec["samples"] == 6
    assert "val_loss" not in codec
    for key in PCKH_KEYS:
        assert key in codec


def test_evaluate_oracle_on_real_mpii_is_perfect(realdata):
    if not (realdata / "mpii" / "mmpose" / "images").is_dir():
        pytest.skip("MPII samples not present")
    cfg = load_config(REPO / "configs" / "mpii_hourglass4.yaml",
                      [f"data.root={realdata / 'mpii'}", "data.train_file=mmpose/test_mpii.json",
                       "data.val_file=pose_hg_train/valid.h5", "data.image_dir=mmpose/images",
                       "data.skip_missing_images=true", "eval.refine=dark", "loss.kind=mse"])
    task = build_task(cfg)
    datasets = task.build_datasets()
    train, val = datasets["train"], datasets["val"]
    assert len(train) == 5 and len(val) == 5  # 2953 valid.h5 people have no image here
    oracle = Oracle([val[i] for i in range(5)])
    metrics = evaluate(task, oracle, datasets)
    assert metrics["pckh"] == 100.0 and metrics["pckh@0.1"] == 100.0 and metrics["pckh_samples"] == 5
    codec = evaluate(task, None, datasets, oracle=True)
    assert codec["pckh"] == 100.0 and codec["pckh@0.1"] == 100.0 and codec["pckh_samples"] == 5


def _predict_setup():
    torch.manual_seed(0)
    cfg = _cfg()
    task = build_task(cfg)
    model = task.build_model().eval()
    img = np.random.default_rng(0).integers(0, 255, (90, 140, 3), dtype=np.uint8)
    return task, model, img


def test_predict_box_or_whole_image():
    task, model, img = _predict_setup()
    whole, boxed = predict(task, model, [img, img], boxes=[None, [30, 10, 40, 60]])
    assert whole.keypoints.shape == (1, 16, 2) and whole.scores.shape == (1, 16)
    assert boxed.boxes.tolist() == [[30, 10, 40, 60]]
    # keypoints come back in image pixels: inside the crop square around the box (side 60 x 1.25)
    assert np.all(np.abs(boxed.keypoints[0] - [49.5, 39.5]) <= 37.5 + 1)
    assert np.all(np.abs(whole.keypoints[0] - [69.5, 44.5]) <= 70 + 1)
    assert whole.plot().shape == img.shape
    with pytest.raises(ValueError, match="positive w, h"):
        predict(task, model, [img], boxes=[[0, 0, -5, 10]])


def test_predict_whole_image_reports_the_whole_image_box():
    task, model, img = _predict_setup()
    (whole,) = predict(task, model, [img], boxes=[None])
    assert whole.boxes.tolist() == [[0, 0, 140, 90]]


@pytest.mark.parametrize("refine, flip", [("shift", True), ("dark", False)])
def test_export_parity_with_decoding_in_graph(tmp_path, refine, flip):
    pytest.importorskip("onnxruntime")
    from posekit.engine.export import DecodeGraph, export_task

    torch.manual_seed(0)
    cfg = _cfg(f"eval.refine={refine}", f"eval.flip_test={flip}")
    task = build_task(cfg)
    model = task.build_model().eval()
    spec = task.export_spec()
    assert spec.input_names == ["images"] and spec.output_names == ["keypoints", "scores"]
    report = export_task(task, model, tmp_path / "hg.onnx")
    assert report["outputs"] == ["keypoints", "scores"] and (tmp_path / "hg.onnx").is_file()
    assert report["max_abs_diff"] < 1e-3
    module = DecodeGraph(task, model, spec.output_names).eval()
    with torch.no_grad():
        kp, sc = module(*spec.example_inputs)
        direct = task.forward_decode(model, *spec.example_inputs)
    assert kp.shape == (2, 16, 2) and sc.shape == (2, 16)
    assert float(kp.min()) >= -0.5 and float(kp.max()) <= 128  # crop pixels
    torch.testing.assert_close(kp, direct["keypoints"])
    torch.testing.assert_close(sc, direct["scores"])


def test_demo_writes_overlays(tmp_path):
    from posekit.engine.demo import demo_pictures

    cfg = _cfg()
    task = build_task(cfg)
    model = task.build_model().eval()
    datasets = task.build_datasets()
    paths = demo_pictures(task, model, datasets, tmp_path)
    assert len(paths) == 4 and all(p.is_file() and p.stat().st_size > 1000 for p in paths)


def test_trainer_integration(tmp_path):
    from posekit.engine.evaluation import evaluate_checkpoint
    from posekit.engine.trainer import train

    cfg = _cfg(f"out_dir={tmp_path}", "name=hg", "train.max_steps=2", "train.batch_size=4", "train.val_every=2",
               "train.progress=false", "train.tensorboard=false", "train.warmup_steps=0")
    run = train(cfg)
    assert (run / "best.pt").is_file()
    metrics = evaluate_checkpoint(cfg, run / "best.pt")
    assert 0.0 <= metrics["pckh"] <= 100.0
    assert evaluate_checkpoint(cfg, oracle=True)["pckh"] == 100.0  # `posekit eval --oracle`: no checkpoint


def test_absent_joints_masked_or_trained_to_zero():
    """loss.absent_joints: `mask` (default) gives an absent joint's map no loss; `zero` trains it
    towards the all-zero map the codec gives it, as Newell's code does. Hand-computed on one
    sample, one stack, two 2x2 maps: joint 0 present (target all 1, output all 0), joint 1 absent
    (target all 0, output all 2)."""
    outputs = torch.zeros(1, 1, 16, 2, 2)
    target = torch.zeros(1, 16, 2, 2)
    target[0, 0] = 1.0
    outputs[0, 0, 1] = 2.0
    weight = torch.zeros(1, 16)
    weight[0, 0] = 1.0
    batch = {"target": target, "target_weight": weight}
    masked = build_task(_cfg()).loss(outputs, batch)[0]
    zero = build_task(_cfg("loss.absent_joints=zero")).loss(outputs, batch)[0]
    # the mean over joints and pixels: mask sees only joint 0's error 1; zero also joint 1's 4
    assert float(masked) == pytest.approx(1.0 / 16)
    assert float(zero) == pytest.approx((1.0 + 4.0) / 16)
    with pytest.raises(ValueError, match="loss.absent_joints"):
        build_task(_cfg("loss.absent_joints=ignore"))


def test_absent_joints_zero_pulls_absent_maps_down():
    """One training step on real pipeline items: with `zero` an unlabelled joint's map gets a
    gradient towards zero; with `mask` it gets none."""
    grads = {}
    for mode in ("mask", "zero"):
        task = build_task(_cfg(f"loss.absent_joints={mode}"))
        item = task.build_datasets()["val"][0]
        batch = task.collate([item])
        absent = int(np.flatnonzero(batch["target_weight"][0].numpy() == 0)[0]) if \
            (batch["target_weight"] == 0).any() else None
        if absent is None:  # make one joint absent, as an unlabelled MPII joint is
            absent = 3
            batch["target_weight"][0, absent] = 0.0
            batch["target"][0, absent] = 0.0
        outputs = torch.full((1, 2) + tuple(batch["target"].shape[1:]), 0.5, requires_grad=True)
        task.loss(outputs, batch)[0].backward()
        grads[mode] = outputs.grad[0, :, absent]
    assert torch.count_nonzero(grads["mask"]) == 0
    assert (grads["zero"] > 0).all()  # d/dy (y - 0)^2 > 0 at y = 0.5: pushed down
