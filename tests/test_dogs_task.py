"""The dogs Task end to end on tiny models: synthetic data, recipes, training steps, evaluation,
flip test, predict in the original frame, ONNX export with decoding in the graph, demo, trainer.

Pixel centres sit at integer coordinates (a W-px side is centred on (W - 1) / 2): expected
original-frame positions below are 0.5 px lower than under the old x + w/2 centre convention."""
from pathlib import Path

import numpy as np
import pytest
import torch

from posekit.data.synthetic.dogs import SyntheticDogs
from posekit.engine.evaluation import evaluate, predict
from posekit.engine.recipes import config_from_dict, load_config
from posekit.families import build_task, get_task_class
from posekit.families.dogs import DogsTask
from posekit.skeletons import get_skeleton


ROOT = Path(__file__).resolve().parents[1]
SK = get_skeleton("stanford_extra24")


def tiny_cfg(eval=None, **data):
    d = {"dataset": "synthetic", "synthetic_train_size": 16, "synthetic_val_size": 6, "input_size": 64,
         "synthetic_image_size": [96, 80]}
    d.update(data)
    return config_from_dict({"task": "dogs", "name": "dogs_test",
                             "model": {"name": "dogs_mobilenetv2", "args": {"width_mult": 0.35, "dropout": 0.0}},
                             "data": d, "train": {"batch_size": 4, "lr": 3e-3, "max_steps": 2},
                             "eval": {"batch_size": 4, **(eval or {})}})


def tiny_task(eval=None, **data) -> DogsTask:
    return build_task(tiny_cfg(eval, **data))


def test_recipes_load():
    for name in ("dogs_mobilenetv2", "dogs_mobilenetv2_faithful", "dogs_synthetic"):
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        assert cfg.task == "dogs" and cfg.model.name == "dogs_mobilenetv2"
    faithful = load_config(ROOT / "configs" / "dogs_mobilenetv2_faithful.yaml")
    assert faithful.data.faithful and faithful.train.lr == 1e-4 and faithful.train.batch_size == 64
    assert faithful.train.max_epochs == 5 and faithful.model.args["freeze_backbone"]
    default = load_config(ROOT / "configs" / "dogs_mobilenetv2.yaml")
    assert default.train.lr_mult == {"backbone": 0.1} and default.model.args["unfreeze_at_step"]
    # data.scale_range is now a crop-side multiplier: the old zoom [0.75, 1.25] is side [0.8, 1.333]
    assert default.data.scale_range == pytest.approx([1 / 1.25, 1 / 0.75], abs=1e-3)
    for cfg in (default, faithful):
        task = build_task(cfg)  # every recipe builds its Task (check_config accepts it)
        assert isinstance(task, DogsTask) and get_task_class(cfg.task) is DogsTask


def test_synthetic_dogs_are_reproducible_and_flagged():
    a, b = SyntheticDogs(8, seed=3), SyntheticDogs(8, seed=3)
    for i in range(8):
        sa, sb = a[i], b[i]
        assert np.array_equal(sa.image, sb.image) and np.array_equal(sa.keypoints, sb.keypoints)
        assert sa.image.shape == (128, 160, 3) and sa.image.dtype == np.uint8
        # a Sample with one dog: keypoints (1, 24, 3), boxes (1, 4)
        assert sa.keypoints.shape == (1, 24, 3) and sa.boxes.shape == (1, 4)
        kp = sa.keypoints[0]
        v = kp[:, 2]
        assert set(np.unique(v)) <= {0.0, 1.0, 2.0}
        assert np.all(kp[20:] == 0)  # like StanfordExtra: 20-23 unlabelled
        assert np.all(kp[v == 0, :2] == 0)
        lab = kp[v > 0, :2]
        x, y, w, h = sa.boxes[0]
        assert np.all(lab >= [x - 1e-6, y - 1e-6]) and np.all(lab <= [x + w + 1e-6, y + h + 1e-6])
    assert not np.array_equal(a[0].image, SyntheticDogs(8, seed=4)[0].image)
    occluded = [s for s in (SyntheticDogs(40, seed=0, occlusion_prob=1.0)[i] for i in range(40))]
    assert sum((s.keypoints[:, 2] == 1).sum() for s in occluded) > 0
    assert all(np.array_equal(s.meta["occluded"][s.keypoints[0, :, 2] > 0],
                              s.keypoints[0, s.keypoints[0, :, 2] > 0, 2] == 1)
               for s in occluded)
    full = SyntheticDogs(4, seed=0, label_all=True)[0]
    assert (full.keypoints[0, 20:, 2] > 0).any()
    facing = {SyntheticDogs(30, seed=1)[i].meta["facing_right"] for i in range(30)}
    assert facing == {True, False}


def test_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    task = tiny_task(augment=False)
    model = task.build_model()
    datasets = task.build_datasets()
    assert sorted(datasets) == ["train", "val"]
    train, val = datasets["train"], datasets["val"]
    assert len(train) == 16 and len(val) == 6
    batch = task.collate([train[i] for i in range(4)])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(25):
        model.train()
        task.on_step(model, step)
        loss, logs = task.training_step(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert 0 < logs["labelled_frac"] <= 20 / 24
    assert losses[-1] < 0.3 * losses[0], losses
    metrics = evaluate(task, model, datasets)
    assert task.primary_metric in metrics and task.higher_is_better
    assert 0 <= metrics["pck"] <= 100 and metrics["mean_px_error"] > 0 and metrics["num_samples"] == 6
    # the WLDO protocol beside it, from the synthetic silhouettes' areas, on the same percent scale
    assert 0 <= metrics["pck_seg"] <= 100 and metrics["pck_seg_images"] == 6
    assert {"pck_seg/legs", "pck_seg/tail", "pck_seg/face"} <= set(metrics)
    assert metrics["val_loss"] > 0  # the eval loop's validation loss (was "loss")


class ConstantPose(torch.nn.Module):
    def __init__(self, pose):
        super().__init__()
        self.register_buffer("pose", torch.as_tensor(pose, dtype=torch.float32))

    def forward(self, x):
        return self.pose.expand(x.shape[0], -1, -1)


def test_flip_test_mirrors_and_swaps():
    pose = np.random.default_rng(0).uniform(0.1, 0.9, size=(24, 2))
    model = ConstantPose(pose)
    images = torch.rand(2, 3, 64, 64)
    plain = tiny_task(eval={"flip_test": False}).forward_decode(model, images)["keypoints"].numpy()
    assert np.allclose(plain[0], pose * 64, atol=1e-4)
    both = tiny_task(eval={"flip_test": True}).forward_decode(model, images)["keypoints"].numpy()
    mirrored = pose[SK.flip_index] * 64
    mirrored[:, 0] = 63 - mirrored[:, 0]
    assert np.allclose(both[1], (pose * 64 + mirrored) / 2, atol=1e-4)


def test_predict_returns_results_in_the_original_frame():
    task = tiny_task()
    img = np.zeros((90, 150, 3), np.uint8)
    pose = np.full((24, 2), 0.5)
    pose[0] = [0.25, 0.75]
    model = ConstantPose(pose)
    model.dummy = torch.nn.Parameter(torch.zeros(1))  # predict asks the parameters for the device
    res = predict(task, model, [img, img])
    assert len(res) == 2 and res[0].keypoints.shape == (1, 24, 2) and res[0].image is img
    # letterbox: the 150 px side spans the 64 px input; the input's centre pixel 31.5 is the image
    # centre (74.5, 44.5) (pixel centres at integer coordinates); a decoded 0.25 is input pixel 16
    f = 150 / 64
    assert np.allclose(res[0].keypoints[0, 0], [74.5 + (0.25 * 64 - 31.5) * f, 44.5 + (0.75 * 64 - 31.5) * f],
                       atol=1e-3)
    assert res[0].scores[0, :20].tolist() == [1.0] * 20 and res[0].scores[0, 20:].tolist() == [0.0] * 4
    boxed = predict(tiny_task(crop="bbox", bbox_margin=0.0), model, [img], boxes=[[10, 20, 40, 20]])[0]
    # the box centre (10 + 20 - 0.5, 20 + 10 - 0.5) is input pixel 31.5; a decoded 0.5 is pixel 32
    assert np.allclose(boxed.keypoints[0, 16], [29.5 + 0.5 * 40 / 64] * 2, atol=1e-3)
    assert np.allclose(boxed.boxes, [[10, 20, 40, 20]])
    # a given box wins over the letterbox of the default crop: the same centre
    boxed_default = predict(tiny_task(bbox_margin=0.0), model, [img], boxes=[[10, 20, 40, 20]])[0]
    assert np.allclose(boxed_default.keypoints[0, 16], [29.5 + 0.5 * 40 / 64] * 2, atol=1e-3)
    assert res[0].plot().shape == img.shape


def test_export_onnx_outputs_original_pixels(tmp_path):
    """The graph is `forward_decode` (network + decoding: keypoints in input pixels); the inverse
    affine to the original image is `postprocess`, outside the graph, run on ONNX's outputs."""
    pytest.importorskip("onnxruntime")
    from posekit.data.transforms import crop_affine, warp_image
    from posekit.engine.export import export_task

    task = tiny_task()
    torch.manual_seed(0)
    model = task.build_model().eval()
    report = export_task(task, model, tmp_path / "dogs.onnx")
    assert report["max_abs_diff"] < 1e-2  # pixels of the 64 px input
    assert report["outputs"] == ["keypoints"]
    # the graph's output, taken back to the original frame, equals predict()'s keypoints
    import onnxruntime as ort
    img = (np.random.default_rng(1).uniform(0, 255, (90, 150, 3))).astype(np.uint8)
    expected = predict(task, model, [img])[0].keypoints[0]
    # the letterbox of a 150x90 image, centred on (74.5, 44.5) (was (75, 45))
    m = crop_affine((74.5, 44.5), (150, 150), (64, 64))
    crop = warp_image(img, m, (64, 64), border_value=(124, 116, 104)).transpose(2, 0, 1)[None]
    batch = task.prepare_inputs([img])  # what predict() feeds: the same crop and matrix
    assert np.array_equal(batch["image"].numpy(), crop) and np.allclose(batch["matrix"].numpy()[0], m)
    x = crop.astype(np.float32) / 255
    sess = ort.InferenceSession(str(tmp_path / "dogs.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["image"]
    out = sess.run(None, {"image": x})[0]
    assert out.shape == (1, 24, 2)
    original = task.postprocess({"keypoints": torch.from_numpy(out)}, batch)[0].keypoints[0]
    assert np.allclose(original, expected, atol=1e-2)
    # and the batch dimension is dynamic
    assert sess.run(None, {"image": np.concatenate([x, x, x])})[0].shape == (3, 24, 2)


def test_real_data_datasets_and_demo(realdata, tmp_path):
    if not (realdata / "stanford_extra" / "StanfordExtra_sample.json").is_file():
        pytest.skip("StanfordExtra samples absent")
    from posekit.engine.demo import demo_pictures

    task = tiny_task(dataset="stanford_extra", crop="bbox")
    datasets = task.build_datasets()
    train, val = datasets["train"], datasets["val"]
    assert len(train) + len(val) == 18 and len(val) == 3  # seeded 85/15
    all_sets = tiny_task(dataset="stanford_extra", train_on_all=True).build_datasets()
    assert len(all_sets["train"]) == len(all_sets["val"]) == 18
    torch.manual_seed(0)
    model = task.build_model()
    paths = demo_pictures(task, model, datasets, tmp_path)
    assert len(paths) == 3 and all(p.is_file() and p.stat().st_size > 0 for p in paths)
    with pytest.raises(ValueError, match="data.dataset"):
        tiny_task(dataset="coco").build_datasets()


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
    # the checkpoint loads for inference and predicts in the original frame
    from posekit.engine.predictor import Predictor, load_for_inference
    task, model, loaded = load_for_inference(Path(run_dir) / "last.pt")
    assert isinstance(task, DogsTask) and not model.training and loaded.data.input_size == 64
    img = np.zeros((90, 150, 3), np.uint8)
    res = Predictor(Path(run_dir) / "last.pt")(img, boxes=[10, 20, 40, 20])
    assert res.keypoints.shape == (1, 24, 2) and np.isfinite(res.keypoints).all()
