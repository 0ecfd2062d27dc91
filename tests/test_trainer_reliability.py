"""The trainer under faults from issue 20: a run folder used by two trainings at once, SIGTERM
to the process group with DataLoader workers (pre-emption), an overflowing learning rate."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from test_faults import _fill, small_disk  # noqa: F401, F811 (a fixture)
from tiny_task import tiny_config
from posekit.config import ConfigError
from posekit.engine.checkpoint import load_checkpoint
from posekit.engine.trainer import NonFiniteLossError, RunLock, train

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


_HOLD = """
from pathlib import Path
from posekit.engine.trainer import RunLock
lock = RunLock(Path({run!r})).acquire()
print("HELD", flush=True)
input()
lock.release()
"""


def test_a_second_training_into_a_locked_run_folder_is_refused_naming_the_holder(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=2, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD.format(run=str(cfg.run_dir))], cwd=REPO, env=_env(),
                              stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    try:  # another training (process) holds the folder
        assert holder.stdout.readline().strip() == "HELD"
        with pytest.raises(ConfigError, match=rf"run folder .* is in use by another training \(pid {holder.pid} on host"):
            train(cfg)
        assert not (cfg.run_dir / "last.pt").exists() and not (cfg.run_dir / "metrics.csv").exists()
    finally:
        holder.communicate("\n", timeout=30)
    run = train(cfg)  # free again: trains, and leaves no lock file behind
    assert (run / "last.pt").is_file() and not (run / RunLock.NAME).exists()


def test_a_lock_file_left_by_a_dead_run_does_not_block_resume_auto(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=2, resume="auto")
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / RunLock.NAME).write_text("pid 999999 on host gone\n")  # a SIGKILLed run's leftover
    run = train(cfg)
    assert load_checkpoint(run / "last.pt")["step"] == 2


@pytest.mark.parametrize("setting", [{"optimizer": "adam"}, {"ema_decay": 0.99}, {"amp": "bf16"}])
def test_an_overflowing_learning_rate_is_the_divergence_stop_not_an_internal_error(tmp_path, setting):
    cfg = tiny_config(tmp_path, max_steps=4, lr=1e38, **setting)
    with pytest.raises(NonFiniteLossError, match=r"overflowed float32 .*stopped without saving.*train\.lr="):
        train(cfg)
    assert not (cfg.run_dir / "last.pt").exists()


def _recipe(tmp_path: Path, workers: int) -> Path:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "imports": ["test_faults"], "task": "tiny_faults", "name": "pre", "out_dir": str(tmp_path / "runs"),
        "data": {"sleep": 0.02, "announce": True},
        "train": {"batch_size": 8, "lr": 1.0e-2, "max_steps": 400, "val_every": 1000, "log_every": 1,
                  "progress": False, "tensorboard": False, "num_workers": workers}}))
    return recipe


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}


@pytest.mark.parametrize("workers", [0, 2, 4])
def test_sigterm_to_the_process_group_saves_last_pt_and_exits_0_with_workers(tmp_path, workers):
    """What Slurm and Kubernetes do on pre-emption: SIGTERM to every process of the group,
    the DataLoader workers included."""
    if shutil.which("setsid") is None:
        pytest.skip("needs setsid (util-linux)")
    recipe = _recipe(tmp_path, workers)
    proc = subprocess.Popen(["setsid", sys.executable, "-m", "posekit", "train", str(recipe)], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("STEP 6 "):
            break
    os.killpg(proc.pid, signal.SIGTERM)  # setsid: the child leads its own group
    out, _ = proc.communicate(timeout=120)
    out = "".join(seen) + out
    assert proc.returncode == 0, out
    assert "resume with train.resume=" in out and "internal error" not in out, out
    run = tmp_path / "runs" / "pre"
    at = load_checkpoint(run / "last.pt")["step"]
    assert 6 <= at < 400
    more = yaml.safe_load(recipe.read_text())
    more["train"].update(max_steps=at + 3, resume=str(run), num_workers=0)
    recipe.write_text(yaml.safe_dump(more))
    again = subprocess.run([sys.executable, "-m", "posekit", "train", str(recipe)], cwd=REPO, env=_env(),
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resumed from {run / 'last.pt'} at step {at}" in again.stdout
    assert load_checkpoint(run / "last.pt")["step"] == at + 3


def test_sigterm_while_workers_die_anyway_still_saves(tmp_path):
    """A worker that dies at the signal (killed before it could ignore SIGTERM): the main
    process still saves its last finished step and exits as documented."""
    if shutil.which("pgrep") is None:
        pytest.skip("needs pgrep")
    recipe = _recipe(tmp_path, 2)
    proc = subprocess.Popen([sys.executable, "-m", "posekit", "train", str(recipe)], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if line.startswith("STEP 6 "):
            break
    kids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert kids, "no DataLoader workers found"
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.01)
    for k in kids:
        os.kill(int(k), signal.SIGKILL)  # dies however it handles SIGTERM
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "internal error" not in out and "resume with" in out, out
    assert load_checkpoint(tmp_path / "runs" / "pre" / "last.pt")["step"] >= 6


def test_torch_save_failing_on_a_full_disk_is_disk_full_not_a_zip_writer_error(small_disk):  # noqa: F811
    """torch.save's zip writer reports a failed write as "RuntimeError: [enforce fail at
    inline_container.cc...]"; save_checkpoint sees the real errno and says the disk is full."""
    import torch

    from posekit.engine.checkpoint import DiskFullError, save_checkpoint
    save_checkpoint({"w": torch.zeros(10)}, small_disk / "last.pt")
    _fill(small_disk, leave=20_000)
    with pytest.raises(DiskFullError, match=r"no space left on device while writing .*last\.pt; the previous "
                                            r"checkpoint is intact"):
        save_checkpoint({"w": torch.randn(20_000)}, small_disk / "last.pt")
    assert torch.equal(load_checkpoint(small_disk / "last.pt")["w"], torch.zeros(10))
    assert [p.name for p in small_disk.iterdir() if p.name != "filler"] == ["last.pt"]


def test_a_validation_file_with_no_record_is_refused_at_start(tmp_path, realdata):
    """An empty data.val_file used to mean training with no validation and no best.pt, silently."""
    from posekit.engine.recipes import load_config
    from posekit.families import build_task
    (tmp_path / "empty.json").write_text("[]")
    mpii = realdata / "mpii" / "mmpose"
    cfg = load_config("mpii_hourglass4", ["data.dataset=mpii", f"data.root={mpii}", "data.train_file=test_mpii.json",
                                          f"data.val_file={tmp_path / 'empty.json'}", "data.image_dir=images"])
    with pytest.raises(ValueError, match=r"data.val_file .*empty.json holds no record"):
        build_task(cfg).build_datasets()
