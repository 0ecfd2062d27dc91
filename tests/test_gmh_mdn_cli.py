"""GMH-MDN through the core: trainer checkpoints carry the statistics; `posekit lift` from JSON and images."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from posekit.engine.recipes import load_config

torch.set_num_threads(1)


def tiny_cfg(*extra):
    return load_config("configs/h36m_synthetic.yaml", ["model.args.width=32", "data.synthetic_train=600",
                                                       "data.synthetic_val=120", *extra])


# --- trainer integration and the `posekit lift` verb ----------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    pytest.importorskip("posekit.engine.trainer")
    from posekit.engine.trainer import train
    out = tmp_path_factory.mktemp("runs")
    cfg = tiny_cfg(f"out_dir={out}", "name=t", "train.max_steps=6", "train.val_every=3", "train.batch_size=32",
                   "train.progress=false", "train.tensorboard=false")
    run_dir = train(cfg)
    assert (run_dir / "best.pt").is_file()
    return run_dir / "best.pt"


def test_trainer_checkpoint_carries_statistics(checkpoint):
    from posekit.engine.predictor import Predictor, load_for_inference
    task, model, cfg = load_for_inference(checkpoint)
    assert task.name == "gmh_mdn" and model.codec.is_fitted
    assert model.codec.std_2d.min() > 1.0  # pixels, not the default ones
    assert task.codec is model.codec  # prepare() linked the checkpoint's statistics, not fresh ones
    # the Predictor lifts with them (rescaling uses the training mean pose from the checkpoint)
    from posekit.data.synthetic.h36m import synthetic_h36m
    pose = synthetic_h36m(1, seed=9).meta["poses_2d_17"][0].astype(float)
    res = Predictor(checkpoint)(pose, rescale=True)
    assert res.hypotheses.shape == (1, 5, 17, 3) and res.meta["rescaled_2d"] is True


def test_lift_cli_from_json(checkpoint, tmp_path):
    from posekit.cli import main
    from posekit.data.synthetic.h36m import synthetic_h36m
    pose = synthetic_h36m(2, seed=9).meta["poses_2d_17"].astype(float)
    (tmp_path / "poses.json").write_text(json.dumps({"skeleton": "h36m17", "poses": pose.tolist()}))
    (tmp_path / "one.json").write_text(json.dumps(pose[0].tolist()))
    out = tmp_path / "out"
    assert main(["lift", str(checkpoint), "--json", str(tmp_path / "poses.json"), str(tmp_path / "one.json"),
                 "--skeleton", "h36m17", "--out", str(out)]) == 0
    res = json.loads((out / "poses.json").read_text())
    assert np.asarray(res["hypotheses"]).shape == (2, 5, 17, 3)
    assert (out / "poses.png").is_file() and (out / "one.png").is_file()
    (tmp_path / "bad.json").write_text(json.dumps({"poses": [[1, 2, 3, 4]]}))
    assert main(["lift", str(checkpoint), "--json", str(tmp_path / "bad.json"), "--out", str(out)]) == 2
    assert main(["lift", str(checkpoint), "--image", str(tmp_path / "x.png"), "--out", str(out)]) == 2


def test_lift_cli_from_image_through_hourglass(checkpoint, tmp_path):
    """Image -> posekit Hourglass (MPII-16) -> H36M-17 -> 3-D hypotheses, on a real Human3.6M frame."""
    pytest.importorskip("posekit.families.hourglass")
    from posekit.cli import main
    from posekit.data.io import realdata_root
    from posekit.engine.trainer import train
    image = realdata_root() / "h36m" / "mmpose" / "S1" / "S1_Directions_1.54138969" / "S1_Directions_1.54138969_000001.jpg"
    if not image.is_file():
        pytest.skip("shared Human3.6M frame not available")
    hg_cfg = load_config("configs/mpii_synthetic.yaml", [f"out_dir={tmp_path}", "name=hg", "train.max_steps=1",
                                                         "train.batch_size=2", "data.synthetic_train_size=4",
                                                         "data.synthetic_val_size=2", "train.warmup_steps=0",
                                                         "train.progress=false", "train.tensorboard=false",
                                                         "eval.flip_test=false"])
    hg = train(hg_cfg) / "last.pt"
    out = tmp_path / "lift"
    assert main(["lift", str(checkpoint), "--image", str(image), "--hourglass", str(hg), "--box", "350,250,250,450",
                 "--out", str(out)]) == 0
    res = json.loads((out / "S1_Directions_1.54138969_000001_3d.json").read_text())
    assert np.asarray(res["hypotheses"]).shape == (1, 5, 17, 3)
    assert np.asarray(res["keypoints_2d"]).shape == (1, 17, 2) and res["meta"]["rescaled_2d"] is True
    assert (out / "S1_Directions_1.54138969_000001_3d.png").is_file()
    # a lifter checkpoint is not a hourglass: clear error
    assert main(["lift", str(checkpoint), "--image", str(image), "--hourglass", str(checkpoint),
                 "--out", str(out)]) == 2
