"""The dogs Task end to end on tiny models: synthetic data, recipes, training steps, evaluation,
flip test, predict in the original frame, ONNX export with decoding in the graph, demo, trainer."""
from pathlib import Path

import numpy as np
import pytest
import torch

from posekit.config import config_from_dict, load_config
from posekit.data.synthetic_dogs import SyntheticDogs
from posekit.skeletons import get_skeleton
from posekit.tasks import get_task


ROOT = Path(__file__).resolve().parents[1]
SK = get_skeleton("stanford_extra24")


def tiny_cfg(**data):
    d = {"dataset": "synthetic", "synthetic_train_size": 16, "synthetic_val_size": 6, "input_size": 64,
         "synthetic_image_size": [96, 80]}
    d.update(data)
    return config_from_dict({"task": "dogs", "name": "dogs_test",
                             "model": {"name": "dogs_mobilenetv2", "args": {"width_mult": 0.35, "dropout": 0.0}},
                             "data": d, "train": {"batch_size": 4, "lr": 3e-3, "max_steps": 2},
                             "eval": {"batch_size": 4}})


def test_recipes_load():
    for name in ("dogs_mobilenetv2", "dogs_mobilenetv2_faithful", "dogs_synthetic"):
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        assert cfg.task == "dogs" and cfg.model.name == "dogs_mobilenetv2"
    faithful = load_config(ROOT / "configs" / "dogs_mobilenetv2_faithful.yaml")
    assert faithful.data.faithful and faithful.train.lr == 1e-4 and faithful.train.batch_size == 64
    assert faithful.train.max_epochs == 5 and faithful.model.args["freeze_backbone"]
    default = load_config(ROOT / "configs" / "dogs_mobilenetv2.yaml")
    assert default.train.lr_mult == {"backbone": 0.1} and default.model.args["unfreeze_at_step"]


def test_synthetic_dogs_are_reproducible_and_flagged():
    a, b = SyntheticDogs(8, seed=3), SyntheticDogs(8, seed=3)
    for i in range(8):
        sa, sb = a[i], b[i]
        assert np.array_equal(sa.image, sb.image) and np.array_equal(sa.keypoints, sb.keypoints)
        assert sa.image.shape == (128, 160, 3) and sa.image.dtype == np.uint8
        v = sa.keypoints[:, 2]
        assert set(np.unique(v)) <= {0.0, 1.0, 2.0}
        assert np.all(sa.keypoints[20:] == 0)  # like StanfordExtra: 20-23 unlabelled
        assert np.all(sa.keypoints[v == 0, :2] == 0)
        lab = sa.keypoints[v > 0, :2]
        x, y, w, h = sa.bbox
        assert np.all(lab >= [x - 1e-6, y - 1e-6]) and np.all(lab <= [x + w + 1e-6, y + h + 1e-6])
    assert not np.array_equal(a[0].image, SyntheticDogs(8, seed=4)[0].image)
    occluded = [s for s in (SyntheticDogs(40, seed=0, occlusion_prob=1.0)[i] for i in range(40))]
    assert sum((s.keypoints[:, 2] == 1).sum() for s in occluded) > 0
    assert all(np.array_equal(s.meta["occluded"][s.keypoints[:, 2] > 0], s.keypoints[s.keypoints[:, 2] > 0, 2] == 1)
               for s in occluded)
    full = SyntheticDogs(4, seed=0, label_all=True)[0]
    assert (full.keypoints[20:, 2] > 0).any()
    facing = {SyntheticDogs(30, seed=1)[i].meta["facing_right"] for i in range(30)}
    assert facing == {True, False}


def test_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    task = get_task("dogs")
    cfg = tiny_cfg(augment=False)
    model = task.build_model(cfg)
    train, val = task.build_datasets(cfg)
    assert len(train) == 16 and len(val) == 6
    batch = task.collate([train[i] for i in range(4)])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(25):
        model.train()
        task.on_step(model, step, cfg)
        loss, logs = task.training_step(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert 0 < logs["labelled_frac"] <= 20 / 24
    assert losses[-1] < 0.3 * losses[0], losses
    metrics = task.evaluate(model, val, cfg)
    assert task.primary_metric in metrics and task.higher_is_better
    assert 0 <= metrics["pck"] <= 1 and metrics["mean_px_error"] > 0 and metrics["num_samples"] == 6


class ConstantPose(torch.nn.Module):
    def __init__(self, pose):
        super().__init__()
        self.register_buffer("pose", torch.as_tensor(pose, dtype=torch.float32))

    def forward(self, x):
        return self.pose.expand(x.shape[0], -1, -1)


def test_flip_test_mirrors_and_swaps():
    task = get_task("dogs")
    pose = np.random.default_rng(0).uniform(0.1, 0.9, size=(24, 2))
    model = ConstantPose(pose)
    images = torch.rand(2, 3, 64, 64)
    plain = task._forward_pixels(model, images, flip_test=False).numpy()
    assert np.allclose(plain[0], pose * 64, atol=1e-4)
    both = task._forward_pixels(model, images, flip_test=True).numpy()
    mirrored = pose[SK.flip_index] * 64
    mirrored[:, 0] = 63 - mirrored[:, 0]
    assert np.allclose(both[1], (pose * 64 + mirrored) / 2, atol=1e-4)


def test_predict_returns_results_in_the_original_frame():
    task = get_task("dogs")
    cfg = tiny_cfg()
    img = np.zeros((90, 150, 3), np.uint8)
    pose = np.full((24, 2), 0.5)
    pose[0] = [0.25, 0.75]
    model = ConstantPose(pose)
    model.dummy = torch.nn.Parameter(torch.zeros(1))  # predict asks the parameters for the device
    res = task.predict(model, [img, img], cfg)
    assert len(res) == 2 and res[0].keypoints.shape == (1, 24, 2) and res[0].image is img
    # letterbox: the 150 px side spans the 64 px input, centred vertically
    assert np.allclose(res[0].keypoints[0, 0], [0.25 * 150, 45 + (0.75 - 0.5) * 150], atol=1e-3)
    assert res[0].scores[0, :20].tolist() == [1.0] * 20 and res[0].scores[0, 20:].tolist() == [0.0] * 4
    boxed = task.predict(model, [img], tiny_cfg(crop="bbox", bbox_margin=0.0), boxes=[[10, 20, 40, 20]])[0]
    assert np.allclose(boxed.keypoints[0, 16], [30, 30], atol=1e-3)  # the box centre
    assert res[0].plot().shape == img.shape


def test_export_onnx_outputs_original_pixels(tmp_path):
    pytest.importorskip("onnxruntime")
    from posekit.data.transforms import crop_affine, invert_affine
    from posekit.export.onnx import export_onnx

    task = get_task("dogs")
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = task.build_model(cfg).eval()
    module, inputs, in_names, out_names, dyn = task.export_module(model, cfg)
    report = export_onnx(module, inputs, tmp_path / "dogs.onnx", input_names=in_names, output_names=out_names,
                         dynamic_axes=dyn)
    assert report["max_abs_diff"] < 1e-2  # pixels of a 640 px image
    # the graph's output equals predict()'s keypoints for the same image
    import onnxruntime as ort
    img = (np.random.default_rng(1).uniform(0, 255, (90, 150, 3))).astype(np.uint8)
    expected = task.predict(model, [img], cfg)[0].keypoints[0]
    from posekit.data.transforms import warp_image
    m = crop_affine((75, 45), (150, 150), (64, 64))
    x = warp_image(img, m, (64, 64), border_value=(124, 116, 104)).transpose(2, 0, 1)[None].astype(np.float32) / 255
    sess = ort.InferenceSession(str(tmp_path / "dogs.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"image": x, "inv_matrix": invert_affine(m)[None].astype(np.float32)})[0]
    assert out.shape == (1, 24, 2)
    assert np.allclose(out[0], expected, atol=1e-2)


def test_real_data_datasets_and_demo(realdata, tmp_path):
    if not (realdata / "stanford_extra" / "StanfordExtra_sample.json").is_file():
        pytest.skip("StanfordExtra samples absent")
    task = get_task("dogs")
    cfg = tiny_cfg(dataset="stanford_extra", crop="bbox")
    train, val = task.build_datasets(cfg)
    assert len(train) + len(val) == 18 and len(val) == 3  # seeded 85/15
    all_cfg = tiny_cfg(dataset="stanford_extra", train_on_all=True)
    train_all, val_all = task.build_datasets(all_cfg)
    assert len(train_all) == len(val_all) == 18
    torch.manual_seed(0)
    model = task.build_model(cfg)
    paths = task.demo(model, val, cfg, tmp_path)
    assert len(paths) == 3 and all(p.is_file() and p.stat().st_size > 0 for p in paths)
    with pytest.raises(ValueError, match="data.dataset"):
        task.build_datasets(tiny_cfg(dataset="coco"))


def test_trainer_integration(tmp_path):
    trainer = pytest.importorskip("posekit.engine.trainer")
    cfg = tiny_cfg()
    cfg.out_dir = str(tmp_path)
    cfg.train.progress = False
    cfg.train.tensorboard = False
    cfg.model.args.update({"freeze_backbone": True, "unfreeze_at_step": 1})
    cfg.train.lr_mult = {"backbone": 0.1}
    run_dir = trainer.train(cfg)
    assert (Path(run_dir) / "last.pt").is_file()
