"""The command line as a user runs it: help, models, train/eval/resume, errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).parent
ENV = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "2"}


def posekit(*args, cwd=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "posekit", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"posekit {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.mark.parametrize("verb", ["train", "eval", "predict", "export", "models", "demo", "bench"])
def test_every_verb_has_help_with_examples(verb, capsys):
    from posekit.cli import main
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: posekit " + verb in out and "examples:" in out


def test_models_json():
    rows = json.loads(posekit("models", "--json").stdout)
    assert rows, "no models registered"
    for row in rows:
        assert {"name", "family", "params", "trainable_params", "skeleton"} <= set(row)
        assert row["params"] >= row["trainable_params"] > 0
    table = posekit("models").stdout
    assert all(r["name"] in table for r in rows)


@pytest.fixture
def tiny_recipe(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"imports": ["tiny_task"], "task": "tiny", "name": "cli", "out_dir": str(tmp_path),
                                    "train": {"batch_size": 8, "max_steps": 4, "val_every": 2, "progress": False}}))
    return path


def test_train_eval_resume_via_cli(tiny_recipe, tmp_path):
    posekit("train", tiny_recipe, "train.lr=0.01")
    run = tmp_path / "cli"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["lr"] == 0.01 and saved["imports"] == ["tiny_task"]
    out = posekit("eval", tiny_recipe, f"checkpoint={run / 'best.pt'}", "--json", tmp_path / "m.json").stdout
    assert "mse" in out and json.loads((tmp_path / "m.json").read_text())["mse"] > 0
    posekit("train", tiny_recipe, "train.max_steps=8", f"train.resume={run}")
    import torch
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 8


def test_cli_errors_are_one_clear_line(tiny_recipe):
    proc = posekit("train", tiny_recipe, "train.lrr=1", check=False)
    assert proc.returncode == 2
    assert "unknown config key 'train.lrr'" in proc.stderr and "valid keys" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = posekit("train", tiny_recipe, "train.max_steps=many", check=False)
    assert proc.returncode == 2 and "'train.max_steps' expects int" in proc.stderr
    proc = posekit("eval", tiny_recipe, "checkpoint=/nonexistent/best.pt", check=False)
    assert proc.returncode == 2 and "checkpoint not found: /nonexistent/best.pt" in proc.stderr
    proc = posekit("predict", "/nonexistent.pt", "x.jpg", "--out", "o", check=False)
    assert proc.returncode == 2 and "not found" in proc.stderr


def test_bench_lists_benchmarks():
    out = posekit("bench", cwd=HERE.parent).stdout
    assert "trainer_overhead" in out


def test_predict_folder_and_video_and_export_with_a_real_family(tmp_path):
    """A real checkpoint (a 2-step hourglass) through `predict` on a folder and a video, then `export`."""
    import cv2
    import numpy as np
    from posekit.engine.recipes import load_config
    from posekit.engine.trainer import train
    cfg = load_config(HERE.parent / "configs" / "mpii_synthetic.yaml",
                      [f"out_dir={tmp_path}", "name=hg", "train.max_steps=2", "train.progress=false",
                       "data.synthetic_train_size=16", "data.synthetic_val_size=4", "data.synthetic_image_size=160"])
    ckpt = train(cfg) / "last.pt"
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"im{i}.jpg"), rng.integers(0, 255, (120, 90, 3), dtype=np.uint8))
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for _ in range(3):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    out = tmp_path / "preds"
    printed = posekit("predict", ckpt, folder, video, "--out", out, "--box", "10,10,60,90").stdout
    assert "5 prediction(s)" in printed
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["clip_000000.png", "clip_000001.png", "clip_000002.png", "im0.png", "im1.png"]
    data = json.loads((out / "im0.json").read_text())
    assert np.array(data["keypoints"]).shape == (1, 16, 2) and data["skeleton"] == "mpii16"
    import posekit as api  # the same checkpoint through the Python API
    result = api.Predictor(ckpt)(np.zeros((120, 90, 3), np.uint8), boxes=[[10, 10, 60, 90]])
    assert isinstance(result, api.Results) and result.keypoints.shape == (1, 16, 2)
    assert result.plot().shape == (120, 90, 3)
    printed = posekit("export", ckpt, "--format", "onnx", "--out", tmp_path / "hg.onnx").stdout
    assert (tmp_path / "hg.onnx").is_file() and "max abs difference" in printed
    diff = float(printed.rsplit("max abs difference", 1)[1].split()[0])
    assert diff < 1e-3


def test_a_checkpoint_never_imports_the_modules_it_names(tmp_path):
    """A stranger's checkpoint that lists `imports` must not make posekit import them."""
    import sys

    import tiny_task
    from posekit.engine.checkpoint import load_checkpoint, save_checkpoint
    from posekit.engine.predictor import load_for_inference
    from posekit.engine.trainer import train
    run = train(tiny_task.tiny_config(tmp_path, max_steps=2, val_every=2))
    ckpt = load_checkpoint(run / "last.pt")
    (tmp_path / "evil_module_posekit_test.py").write_text("raise SystemExit('attacker code ran')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        ckpt["config"]["imports"] = ["evil_module_posekit_test"]
        save_checkpoint(ckpt, tmp_path / "evil.pt")
        task, _, cfg = load_for_inference(tmp_path / "evil.pt")
        assert task.name == "tiny" and cfg.imports == [] and "evil_module_posekit_test" not in sys.modules
    finally:
        sys.path.remove(str(tmp_path))
