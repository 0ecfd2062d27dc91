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


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_node_agents_restart_a_killed_worker_and_resume_on_their_own(tmp_path):
    """Two torchrun agents (--nnodes=2, c10d rendezvous on 127.0.0.1) train like two nodes. The
    rank-1 worker is SIGKILLed mid-run; torchrun (--max-restarts=1) restarts the workers, which
    find the run's last.pt (train.resume=auto) and finish. The result matches an uninterrupted
    single-process run within DDP tolerance, and metrics.csv logs every step once."""
    import signal
    import time
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "imports": ["test_faults"], "task": "tiny_faults", "name": "two_nodes", "model": {"args": {"dropout": 0.0}},
        "data": {"announce": True, "sleep": 0.05},
        "train": {"batch_size": 8, "max_steps": 24, "val_every": 12, "save_every": 4, "lr": 5.0e-3, "log_every": 1,
                  "progress": False, "tensorboard": False, "resume": "auto"}}))
    port = _free_port()
    agents = [subprocess.Popen([torchrun, "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
                                f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=faults", "--max-restarts=1",
                                "-m", "posekit", "train", str(recipe), f"out_dir={tmp_path / 'ddp'}"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=HERE.parent)
              for _ in range(2)]
    t0 = time.time()
    single = subprocess.run([sys.executable, "-m", "posekit", "train", str(recipe), f"out_dir={tmp_path / 'one'}",
                             "data.sleep=0", "data.announce=false"], capture_output=True, text=True, env=env,
                            timeout=600)
    assert single.returncode == 0, single.stdout + single.stderr
    killed, outputs = None, ["", ""]
    import selectors
    sel = selectors.DefaultSelector()
    for i, a in enumerate(agents):
        sel.register(a.stdout, selectors.EVENT_READ, i)
    open_streams = 2
    while open_streams:
        assert time.time() - t0 < 900, "".join(outputs)
        for key, _ in sel.select(timeout=5):
            line = key.fileobj.readline()
            if not line:
                sel.unregister(key.fileobj)
                open_streams -= 1
                continue
            outputs[key.data] += line
            words = line.split()
            if (killed is None and len(words) == 8 and words[0] == "STEP" and words[3] == "1" and words[7] == "0"
                    and int(words[1]) >= 10):
                killed = int(words[1])
                os.kill(int(words[5]), signal.SIGKILL)  # the rank-1 worker, first incarnation
    for a in agents:
        a.wait(timeout=120)
    out = "".join(outputs)
    assert killed is not None, out
    assert all(a.returncode == 0 for a in agents), out
    assert "resumed from" in out and "restart 1" in out, out
    assert "max parameter difference across 2 processes = 0" in out
    run = tmp_path / "ddp" / "two_nodes"
    a, b = load_checkpoint(run / "last.pt"), load_checkpoint(tmp_path / "one" / "two_nodes" / "last.pt")
    assert a["step"] == b["step"] == 24
    diff = max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"])
    assert diff < 1e-5, diff
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows if r.get("loss")] == list(range(1, 25))
    print(f"two-node fault run: killed at step {killed}, {time.time() - t0:.0f} s")
