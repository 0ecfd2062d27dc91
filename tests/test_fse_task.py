"""The FSE family: the MAFL regression protocol through the evaluator, the training step's warp
geometry, the validation loss, recipes, CelebA-minus-MAFL-test and the real-data loaders."""
import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from posekit.data.landmarks import celeba_minus_mafl_test
from posekit.engine.evaluation import evaluate
from posekit.engine.recipes import load_config
from posekit.families import build_task
from posekit.models import count_parameters
from posekit.ops.tps import TPSWarp
from posekit.results import Results

SMALL = ["data.synthetic_train_size=8", "data.synthetic_fit_size=12", "data.synthetic_val_size=6",
         "model.args.num_landmarks=5"]  # 2K >= 10: the protocol can be exact


def _task(overrides=(), recipe="faces_synthetic"):
    return build_task(load_config(recipe, [*SMALL, *overrides]))


def _batches(dataset, size=8):
    loader = torch.utils.data.DataLoader(dataset, batch_size=size, shuffle=False)
    return list(loader)


def test_regression_protocol_is_exact_for_affine_landmarks():
    """Discovered landmarks that are an exact affine function of the annotated points score ~0 NME;
    the mean-shape baseline beside them does not, and the regressor lands in the model buffer."""
    task = _task()
    datasets = task.build_datasets(("fit", "val"))
    model = task.build_model()
    task.prepare(model, {})
    rng = np.random.default_rng(3)
    mix, bias = rng.normal(size=(10, 2 * task.num_landmarks)), rng.normal(size=2 * task.num_landmarks) * 5
    evaluator = task.build_evaluator(datasets)
    for split in ("fit", "val"):
        for batch in _batches(datasets[split]):
            kps = batch["keypoints"].numpy()
            m = batch["matrix"].numpy()
            crop = (kps[..., :2].reshape(len(kps), 10) @ mix + bias).reshape(len(kps), -1, 2)
            a_inv = np.linalg.inv(m[:, :, :2])
            orig = np.einsum("nij,nkj->nki", a_inv, crop - m[:, None, :, 2])  # Results live in original pixels
            evaluator.update(split, [Results(keypoints=o[None], scores=np.ones((1, len(o))), skeleton=task.skeleton)
                                     for o in orig], batch)
    metrics = evaluator.compute()
    assert metrics["nme"] < 1e-6 and metrics["nme_fit"] < 1e-6
    assert metrics["nme_mean_shape"] > 3.0  # the faces vary: the baseline is far from 0
    assert metrics["fit_images"] == 12 and metrics["val_images"] == 6 and metrics["regressor_determined"] == 1
    assert float(model.mafl_regressor_fitted) == 1 and task.regressor.shape == (2 * task.num_landmarks + 1, 10)
    # a landmark set that ignores the face scores no better than the mean shape
    evaluator = task.build_evaluator(datasets)
    for split in ("fit", "val"):
        for batch in _batches(datasets[split]):
            noise = rng.normal(size=(len(batch["image"]), task.num_landmarks, 2)) * 20 + 64
            evaluator.update(split, [Results(keypoints=n[None], scores=np.ones((1, len(n))), skeleton=task.skeleton)
                                     for n in noise], batch)
    junk = evaluator.compute()
    assert junk["nme"] > 0.9 * junk["nme_mean_shape"]


def test_oracle_and_underdetermined_fit():
    """The oracle (annotated points repeated to K = 5) is exact through the regressor; with fewer fit
    images than 2K + 1 the min-norm fit still beats the mean shape and is flagged, or refuses."""
    k5 = ["model.args.num_landmarks=5"]
    exact = evaluate(_task(k5), None, _task(k5).build_datasets(("fit", "val")), oracle=True)
    assert exact["nme"] < 1e-6 and exact["regressor_determined"] == 1
    few = _task([*k5, "data.synthetic_fit_size=5"])
    datasets = few.build_datasets(("fit", "val"))
    oracle = evaluate(few, None, datasets, oracle=True)  # 5 < 2K + 1 = 11
    assert oracle["regressor_determined"] == 0 and np.isfinite(oracle["nme"])
    assert oracle["nme"] < oracle["nme_mean_shape"]
    with pytest.raises(ValueError, match="2K"):
        evaluate(_task([*k5, "data.synthetic_fit_size=5", "eval.underdetermined=error"]), None, datasets, oracle=True)


class _ContentMaps(nn.Module):
    """Score maps that follow the image content: map k is a large multiple of channel k sampled at
    the FSE cells' receptive-field centres. No parameters to learn; a dummy one keeps optimisers happy."""

    def __init__(self, centers, beta=60.0):
        super().__init__()
        self.register_buffer("grid", ((2 * centers + 1) / 128 - 1).reshape(1, 42, 42, 2))
        self.beta = beta
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return F.grid_sample(x, self.grid.expand(len(x), -1, -1, -1), align_corners=False) * self.beta + self.dummy


def _blob_batch(b=2):
    """Three Gaussian dots, one per channel, away from the borders."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:128, 0:128]
    images = np.zeros((b, 3, 128, 128), np.float32)
    for i in range(b):
        for c in range(3):
            cx, cy = 22.5 + 2 * rng.integers(5, 30, 2)  # on cell centres
            images[i, c] = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 1.5 ** 2))
    return {"image": torch.from_numpy((images * 255).round().astype(np.uint8))}


def test_training_step_alignment_is_zero_for_content_following_maps():
    """x' = x shifted by (6, -4) px (3 and 2 cells): maps that follow the content align exactly when the
    known warp maps x's centres into x' (in pixels), and are (3^2 + 2^2) cells^2 off under a wrong warp."""
    task = _task(["model.args.num_landmarks=3"])
    model = _ContentMaps(task.centers)
    shift = torch.tensor([[[1.0, 0, -6], [0, 1, 4]]]).expand(2, -1, -1)  # sampling map: source = q - (6, -4)
    task._sample_warp = lambda b, device, **kw: TPSWarp.from_pixel_affine(shift[:b], (128, 128))
    loss, logs = task.training_step(model, _blob_batch())
    assert logs["align"] < 0.05, logs
    assert torch.isfinite(loss)
    # the same maps judged with the identity warp: off by exactly the shift
    task._sample_warp = lambda b, device, **kw: TPSWarp.identity(b)
    x = _blob_batch()["image"].float() / 255
    shifted = TPSWarp.from_pixel_affine(shift, (128, 128)).warp_image(x)
    _, logs = task._objective(model(x), model(shifted), TPSWarp.identity(2))
    assert logs["align"] == pytest.approx(13.0, abs=0.2)


def test_training_step_learns_and_val_loss_is_deterministic():
    task = _task()
    datasets = task.build_datasets()
    torch.manual_seed(0)
    model = task.build_model()
    batch = next(iter(torch.utils.data.DataLoader(datasets["train"], batch_size=4)))
    loss, logs = task.training_step(model, batch)
    loss.backward()
    assert set(logs) == {"align", "div_a", "div_b"}
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    task.prepare(model, datasets)
    first = evaluate(task, model, datasets, max_samples=4)
    second = evaluate(task, model, datasets, max_samples=4)
    assert first["val_loss"] == second["val_loss"] and np.isfinite(first["val_loss"])
    item = datasets["val"][1]
    assert item["warped"].shape == item["image"].shape and item["warped_centers"].shape == (42 * 42, 2)
    assert not torch.equal(item["warped"], item["image"])


@pytest.mark.parametrize("recipe,k", [("faces_synthetic", 8), ("celeba_fse", 8), ("celeba_fse_k30", 30)])
def test_recipes_load(recipe, k):
    cfg = load_config(recipe)
    task = build_task(cfg)
    assert task.num_landmarks == k and task.skeleton.name == f"landmarks{k}"
    if recipe.startswith("celeba"):
        assert cfg.train.lr == 1e-4 and cfg.train.betas == [0.5, 0.999] and cfg.train.batch_size == 32
        assert cfg.train.weight_decay == 5e-4 and cfg.train.max_epochs == 200
        model = task.build_model()
        trainable = {8: 794_452, 30: 794_452 + (30 - 8) * (256 * 25 + 2)}[k]
        assert count_parameters(model)[0] == trainable


def _write_celeba(root, names, test):
    (root / "img_align_celeba").mkdir(parents=True)
    (root / "MAFL").mkdir()
    lines = [str(len(names)), " ".join(("lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x "
                                        "leftmouth_y rightmouth_x rightmouth_y").split())]
    for i, n in enumerate(names):
        lines.append(f"{n}  69 {110 + i}  108 111   89 134   72 152  105 152")
        cv2.imwrite(str(root / "img_align_celeba" / n), np.full((218, 178, 3), 40 * i, np.uint8))
    (root / "list_landmarks_align_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "MAFL" / "testing.txt").write_text("\n".join(test))
    (root / "MAFL" / "training.txt").write_text("\n".join(n for n in names if n not in test))


def test_celeba_training_set_excludes_mafl_test(tmp_path):
    names = [f"{i:06d}.jpg" for i in range(1, 7)]
    _write_celeba(tmp_path, names, ["000002.jpg", "000005.jpg"])
    got = [s.meta["image_id"] for s in celeba_minus_mafl_test(tmp_path)]
    assert got == ["000001.jpg", "000003.jpg", "000004.jpg", "000006.jpg"]
    task = build_task(load_config("celeba_fse", [f"data.root={tmp_path}", "data.eval_dataset=mafl"]))
    datasets = task.build_datasets()
    assert [s.meta["image_id"] for s in datasets["train"].source] == got
    assert [s.meta["image_id"] for s in datasets["val"].source] == ["000002.jpg", "000005.jpg"]
    assert len(datasets["fit"]) == 4
    (tmp_path / "img_align_celeba" / "000004.jpg").unlink()
    with pytest.raises(FileNotFoundError):
        build_task(load_config("celeba_fse", [f"data.root={tmp_path}", "data.skip_missing_images=false"])
                   ).build_datasets(("train",))["train"][2]
    assert len(celeba_minus_mafl_test(tmp_path, skip_missing_images=True)) == 3


def test_real_celeba_and_mtfl_through_the_family(realdata):
    task = build_task(load_config("celeba_fse"))
    datasets = task.build_datasets()
    train = datasets["train"]
    assert [s.meta["image_id"] for s in train.source] == ["000003.jpg", "000006.jpg", "000007.jpg"]
    item = train[0]
    assert item["image"].shape == (3, 128, 128) and item["image"].dtype == torch.uint8
    # 000003.jpg: lefteye (76, 112) in 178x218 -> 146^2 (area resize) -> crop at (5, 5)
    expect = np.array([(76 + 0.5) * 146 / 178 - 0.5 - 5, (112 + 0.5) * 146 / 218 - 0.5 - 5])
    np.testing.assert_allclose(item["keypoints"][0, :2].numpy(), expect, atol=1e-4)
    assert (item["keypoints"][:, 2] == 2).all()
    assert len(datasets["fit"]) == 20 and len(datasets["val"]) == 20
    assert datasets["val"][0]["image"].shape == (3, 128, 128)  # 150x150 AFLW faces -> same crop
    # MAFL on the excerpt: 000003 is the one MAFL-train face with landmarks; no test face has them
    mafl = build_task(load_config("celeba_fse", ["data.eval_dataset=mafl"])).build_datasets(("fit", "val"))
    assert [s.meta["image_id"] for s in mafl["fit"].source] == ["000003.jpg"] and len(mafl["val"]) == 0


def test_eval_oracle_on_real_samples(realdata, capsys):
    """`posekit eval configs/celeba_fse.yaml --oracle`: the recipe's defaults read the shared samples."""
    from posekit.cli import main
    assert main(["eval", "configs/celeba_fse.yaml", "--oracle"]) in (0, None)
    printed = dict(line.split() for line in capsys.readouterr().out.splitlines() if len(line.split()) == 2)
    assert float(printed["nme"]) < 1e-6 and float(printed["val_images"]) == 20
    assert float(printed["nme_mean_shape"]) > 5


def test_folder_dataset_trains_without_labels(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((90, 120, 3), 60 * i, np.uint8))
    task = build_task(load_config("celeba_fse", ["data.dataset=folder", f"data.root={tmp_path}",
                                                     "data.eval_dataset=auto"]))
    datasets = task.build_datasets()
    assert set(datasets) == {"train"} and len(datasets["train"]) == 3
    assert (datasets["train"][0]["keypoints"][:, 2] == 0).all()


def test_predict_outputs_and_bad_config():
    task = _task(["model.args.num_landmarks=6"])
    model = task.build_model().eval()
    batch = task.prepare_inputs([np.zeros((128, 128, 3), np.uint8), np.full((100, 160, 3), 200, np.uint8)])
    decoded = task.forward_decode(model, task.model_inputs(batch))
    assert decoded["keypoints"].shape == (2, 6, 2) and decoded["scores"].shape == (2, 6)
    results = task.postprocess(decoded, batch)
    assert results[1].skeleton.name == "landmarks6" and "mafl5" not in results[1].meta
    task.regressor = np.zeros((13, 10))
    task.regressor[-1] = np.arange(10)  # a constant regressor: the crop point (2k, 2k + 1)
    res = task.postprocess(decoded, batch)[1]
    assert np.allclose(res.meta["mafl5"][1], [(2 + 0.5) * 160 / 128 - 0.5, (3 + 0.5) * 100 / 128 - 0.5])
    with pytest.raises(ValueError, match="data.warp"):
        _task(["data.warp=bogus"])
