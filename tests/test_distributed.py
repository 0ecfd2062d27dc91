"""2-process gloo DDP through torchrun on CPU, launched as users do (`torchrun -m posekit train`):
it trains, ranks stay in sync, and it matches one process with the same global batch."""
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from posekit.engine.checkpoint import load_checkpoint

HERE = Path(__file__).parent


def test_torchrun_two_processes_match_single_process(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    recipe = tmp_path / "tiny.yaml"
    # no augmentation noise and no dropout: nothing random differs between ranks, so DDP must
    # reproduce the single-process run up to float summation order
    recipe.write_text(yaml.safe_dump({
        "imports": ["tiny_task"], "task": "tiny", "name": "tiny", "model": {"args": {"dropout": 0.0}},
        "data": {"noise": 0.0}, "train": {"batch_size": 8, "max_steps": 12, "val_every": 6, "lr": 5.0e-3,
                                          "progress": False}}))
    ddp = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "posekit", "train", str(recipe),
                          f"out_dir={tmp_path / 'ddp'}"], capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr
    assert "max parameter difference across 2 processes = 0" in ddp.stdout, ddp.stdout
    single = subprocess.run([sys.executable, "-m", "posekit", "train", str(recipe), f"out_dir={tmp_path / 'one'}"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    a = load_checkpoint(tmp_path / "ddp" / "tiny" / "last.pt")
    b = load_checkpoint(tmp_path / "one" / "tiny" / "last.pt")
    assert a["step"] == b["step"] == 12
    diff = max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"])
    assert diff < 1e-5, diff
    rows = list(csv.DictReader((tmp_path / "ddp" / "tiny" / "metrics.csv").open()))
    val = [float(r["val/mse"]) for r in rows if r.get("val/mse")]
    assert len(val) == 2 and val[1] < val[0]  # it trains


def test_torchrun_with_a_real_family_recipe(tmp_path):
    """The GMH-MDN synthetic recipe (BatchNorm, dropout, dataset statistics in buffers) under 2 processes."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    recipe = HERE.parent / "configs" / "h36m_synthetic.yaml"
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "posekit", "train", str(recipe),
                           f"out_dir={tmp_path}", "train.max_steps=20", "train.val_every=10", "model.args.width=64",
                           "data.synthetic_train=512", "data.synthetic_val=64", "train.progress=false"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "max parameter difference across 2 processes = 0" in proc.stdout
    assert proc.stdout.count("run saved in") == 1  # rank 0 speaks for the run
    ckpt = load_checkpoint(tmp_path / "h36m_synthetic" / "last.pt")
    assert ckpt["step"] == 20 and ckpt["config"]["train"]["batch_size"] == 64
