"""2-process gloo DDP through torchrun on CPU: trains, ranks stay in sync, matches one process."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from posekit.engine.checkpoint import load_checkpoint

HERE = Path(__file__).parent


def test_torchrun_two_processes_match_single_process(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", str(HERE / "ddp_tiny.py"),
                          str(tmp_path / "ddp")], capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr
    sync = re.search(r"max parameter difference across 2 processes = ([0-9.e+-]+)", ddp.stdout)
    assert sync and float(sync.group(1)) == 0.0, ddp.stdout
    single = subprocess.run([sys.executable, str(HERE / "ddp_tiny.py"), str(tmp_path / "single")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    a = load_checkpoint(tmp_path / "ddp" / "tiny" / "last.pt")
    b = load_checkpoint(tmp_path / "single" / "tiny" / "last.pt")
    assert a["step"] == b["step"] == 12
    # the union of the ranks' batches is the single-process global batch and DDP averages the
    # gradients, so only float summation order separates the two runs
    diff = max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"])
    assert diff < 1e-5, diff
    import csv
    rows = list(csv.DictReader((tmp_path / "ddp" / "tiny" / "metrics.csv").open()))
    val = [float(r["val/mse"]) for r in rows if r.get("val/mse")]
    assert len(val) == 2 and val[1] < val[0]  # it trains
