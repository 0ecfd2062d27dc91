"""Faults injected into real training runs, and what must hold afterwards (docs/reliability.md).

SIGKILL at random moments + `train.resume=auto` (bit-exact weights, consistent metrics.csv);
a full disk (a small tmpfs, root only); NaN/absurd data and a diverging learning rate; bad
records (a zero-byte image, every record bad); persistent DataLoader workers. The tasks below
are the tiny regression task with one fault each; subprocesses import this file to get them.
"""
from __future__ import annotations

import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import tiny_task
from tiny_task import TinyData, TinyDataset, TinyTask, tiny_config
from posekit.data.io import read_image
from posekit.data.robust import TrainingItems
from posekit.data.sample import BadRecordError
from posekit.engine.checkpoint import load_checkpoint
from posekit.engine.trainer import NonFiniteLossError, train
from posekit.families import register_task

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


# ----------------------------------------------------------------------------------------------
# the tiny task with faults
@dataclass
class FaultData(TinyData):
    sleep: float = 0.0  # seconds per step (lets a test kill the run mid-way)
    announce: bool = False  # print "STEP n ..." before each step
    huge: list[int] = field(default_factory=list)  # these samples' x holds 1e30 (absurd but finite)
    nan_target: list[int] = field(default_factory=list)  # these samples' y is NaN
    image_dir: str | None = None  # each sample also reads image_dir/<index>.png (zero-byte = a bad record)
    nan_first_val: bool = False  # the first validation scores NaN (a metric of an untrained model)
    pid: bool = False  # items carry the worker's pid (are workers persistent?)


class FaultDataset(TinyDataset):
    def __init__(self, n, seed, noise, out, d: FaultData):
        super().__init__(n, seed, noise, out)
        self.d = d
        for i in d.huge:
            self.x[i, 0] = 1e30
        for i in d.nan_target:
            self.y[i] = np.nan

    def __getitem__(self, i):
        item = super().__getitem__(i)
        if self.d.image_dir is not None:
            image = read_image(Path(self.d.image_dir) / f"{i}.png")
            item["x"] = item["x"] + float(image[0, 0, 0]) * 0.0
        if self.d.pid:
            item["pid"] = torch.tensor(os.getpid())
        return item


class NaNOnceEvaluator(tiny_task.MSEEvaluator):
    calls = 0

    def compute(self):
        NaNOnceEvaluator.calls += 1
        return {"mse": float("nan")} if NaNOnceEvaluator.calls == 1 else super().compute()


@register_task
class FaultTask(TinyTask):
    name = "tiny_faults"
    DataConfig = FaultData
    pids: list = []  # (epoch-ordered) worker pids seen by training_step

    def build_datasets(self, splits=None):
        d = self.cfg.data
        out = int(self.cfg.model.args.get("out", 4))
        return {"train": FaultDataset(d.n_train, 1, d.noise, out, d), "val": TinyDataset(d.n_val, 2, 0.0, out)}

    def on_step(self, model, step):
        if self.cfg.data.announce:  # "STEP n rank r pid p restart k"
            print(f"STEP {step} rank {os.environ.get('RANK', 0)} pid {os.getpid()} restart "
                  f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', 0)}", flush=True)
        if self.cfg.data.sleep:
            time.sleep(self.cfg.data.sleep)

    def training_step(self, model, batch):
        if "pid" in batch:
            FaultTask.pids.append(set(batch.pop("pid").tolist()))
        return super().training_step(model, batch)

    def build_evaluator(self, datasets):
        return NaNOnceEvaluator() if self.cfg.data.nan_first_val else super().build_evaluator(datasets)


def fault_config(tmp_path, data=None, **train):
    cfg = tiny_config(tmp_path, **train)
    cfg.task = "tiny_faults"
    cfg.data = FaultData(**(data or {}))
    return cfg


def _weights(path):
    return load_checkpoint(path)["model"]


def _same(a, b) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def _rows(run: Path) -> tuple[list[dict], list[dict]]:
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    return [r for r in rows if r.get("loss")], [r for r in rows if r.get("val/mse")]


def _consistent(run: Path, last_step: int, log_every: int = 1) -> list[dict]:
    """metrics.csv after any number of kills: every step logged exactly once, in order."""
    train_rows, val_rows = _rows(run)
    steps = [int(r["step"]) for r in train_rows]
    assert steps == list(range(log_every, last_step + 1, log_every)), steps
    val_steps = [int(r["step"]) for r in val_rows]
    assert val_steps == sorted(set(val_steps)), val_steps
    return train_rows


# ----------------------------------------------------------------------------------------------
# SIGKILL at random moments, resumed by train.resume=auto
def _recipe(tmp_path: Path, name: str, **train) -> Path:
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(yaml.safe_dump({
        "imports": ["test_faults"], "task": "tiny_faults", "name": name, "out_dir": str(tmp_path / "runs"),
        "data": {"sleep": 0.02, "announce": True},
        "train": {"batch_size": 8, "lr": 1.0e-2, "max_steps": 30, "val_every": 10, "save_every": 3, "log_every": 1,
                  "progress": False, "tensorboard": False, "resume": "auto", **train}}))
    return recipe


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}


def _posekit(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "posekit", "train", *map(str, args)], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.parametrize("n_kills,workers", [(2, 1), pytest.param(6, 2, marks=pytest.mark.slow)])
def test_sigkill_at_random_moments_then_resume_auto_is_bit_exact(tmp_path, n_kills, workers):
    """SIGKILLs at random steps (and random points inside a step: forward, save, validation),
    each followed by the same command (train.resume=auto), as a supervisor would; with
    persistent DataLoader workers. Final weights bit-exact vs an uninterrupted run, every step
    logged once with the uninterrupted run's loss. (benchmarks/bench_faults.py: 20 kills.)"""
    rnd = random.Random(20261201 + n_kills)
    straight = _posekit(_recipe(tmp_path, "straight", num_workers=workers))
    killed = _recipe(tmp_path, "killed", num_workers=workers)
    kills, at = 0, 0
    while kills < n_kills:
        target = rnd.randint(at + 1, 26)
        proc = _posekit(killed)
        for line in proc.stdout:
            if line.startswith(f"STEP {target} "):
                time.sleep(rnd.uniform(0.0, 0.03))
                proc.kill()
                break
        proc.wait(timeout=120)
        assert proc.returncode == -signal.SIGKILL, f"run ended before the kill at step {target}"
        kills += 1
        at = load_checkpoint(tmp_path / "runs" / "killed" / "last.pt")["step"] if (
            tmp_path / "runs" / "killed" / "last.pt").is_file() else 0
    final = _posekit(killed)
    out, _ = final.communicate(timeout=300)
    assert final.returncode == 0, out
    assert "resumed from" in out
    out, _ = straight.communicate(timeout=300)
    assert straight.returncode == 0, out
    a, b = tmp_path / "runs" / "straight", tmp_path / "runs" / "killed"
    assert load_checkpoint(b / "last.pt")["step"] == 30
    assert _same(_weights(a / "last.pt"), _weights(b / "last.pt")), "resumed weights differ"
    assert _same(_weights(a / "best.pt"), _weights(b / "best.pt"))
    ra, rb = _consistent(a, 30), _consistent(b, 30)
    assert [r["loss"] for r in ra] == [r["loss"] for r in rb]
    # (a finished run started again trains nothing: test_trainer.py::test_resuming_a_finished_run_*)


# ----------------------------------------------------------------------------------------------
# disk full
@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (root only; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(disk: Path, leave: int) -> Path:
    """Fill `disk` so that about `leave` bytes stay free."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with filler.open("wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


@pytest.mark.parametrize("leave", [0, 500, 2_000, 6_000, 12_000, 24_000, 40_000])
def test_disk_full_is_one_line_and_keeps_the_previous_checkpoint(small_disk, tmp_path, leave):
    """7 levels of free space, so the disk fills during each of the writes (config.yaml,
    metrics.csv, bad_records.txt, validation.json, curves.png, the zip writer of torch.save)."""
    settings = {"batch_size": 8, "max_steps": 12, "val_every": 6, "save_every": 2, "log_every": 1,
                "progress": False, "tensorboard": False, "resume": "auto"}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"imports": ["test_faults"], "task": "tiny_faults", "name": "full",
                                      "out_dir": str(small_disk), "train": settings}))
    cfg = fault_config(small_disk, **{**settings, "max_steps": 4})
    cfg.name = "full"
    run = train(cfg)
    good = load_checkpoint(run / "last.pt")
    filler = _fill(small_disk, leave=leave)  # at most room for the logs, not for a checkpoint
    full = subprocess.run([sys.executable, "-m", "posekit", "train", str(recipe)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert full.returncode == 2, full.stdout + full.stderr
    err = full.stderr.strip().splitlines()
    assert len(err) == 1 and "no space left on device while writing" in err[0], full.stderr
    assert "is intact" in err[0]
    after = load_checkpoint(run / "last.pt")  # still loadable, still the old one
    assert after["step"] == good["step"] == 4 and _same(after["model"], good["model"])
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    filler.unlink()
    cfg = fault_config(small_disk, **settings)
    cfg.name = "full"
    train(cfg)  # the same run, resumed once there is room again
    assert load_checkpoint(run / "last.pt")["step"] == 12
    _consistent(run, 12)


# ----------------------------------------------------------------------------------------------
# NaN and absurd values
def test_absurd_data_value_is_blamed_on_the_data_in_one_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "imports": ["test_faults"], "task": "tiny_faults", "name": "huge", "out_dir": str(tmp_path),
        "data": {"huge": list(range(48))},  # a joint at 1e30 in every sample: the first batch has one
        "train": {"batch_size": 8, "max_steps": 6, "progress": False, "tensorboard": False}}))
    proc = subprocess.run([sys.executable, "-m", "posekit", "train", str(recipe)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert "data problem in batch at step 1" in err[0] and "batch['x'] holds absurd values" in err[0]
    assert "no checkpoint has been saved yet" in err[0]
    assert not (tmp_path / "huge" / "last.pt").exists()


def test_nan_target_names_the_samples_and_the_real_last_checkpoint(tmp_path):
    run = train(fault_config(tmp_path, max_steps=3, val_every=3))
    cfg = fault_config(tmp_path, {"nan_target": [5]}, max_steps=12, val_every=1000, resume=str(run))
    with pytest.raises(NonFiniteLossError) as e:
        train(cfg)
    msg = str(e.value)
    assert "\n" not in msg
    assert "data problem in batch at step" in msg and "batch['y'] holds non-finite" in msg
    assert "dataset index [5]" in msg
    assert f"the last good checkpoint is {run / 'last.pt'} (step 3)" in msg
    assert load_checkpoint(run / "last.pt")["step"] == 3


def test_divergence_suggests_working_settings_and_saves_no_nan_weights(tmp_path):
    """RMSprop at lr 1e38 (its first step moves each weight by 10 lr): the weights are inf after
    step 1. Nothing non-finite is saved, and the message proposes concrete values, not the
    data (it is finite)."""
    cfg = fault_config(tmp_path, max_steps=4, val_every=1, optimizer="rmsprop", lr=1e38)
    with pytest.raises(NonFiniteLossError) as e:
        train(cfg)
    msg = str(e.value)
    assert "weights became non-finite" in msg and "no checkpoint has been saved yet" in msg
    assert "training diverged" in msg and "train.lr=1e+37" in msg and "train.grad_clip=1.0" in msg
    assert not (tmp_path / "tiny" / "last.pt").exists() and not (tmp_path / "tiny" / "best.pt").exists()


def test_nan_first_validation_does_not_freeze_best(tmp_path):
    NaNOnceEvaluator.calls = 0
    run = train(fault_config(tmp_path, {"nan_first_val": True}, max_steps=6, val_every=2))
    best = load_checkpoint(run / "best.pt")
    assert best["step"] > 2 and np.isfinite(best["best"])
    scores = [float(r["val/mse"]) for r in _rows(run)[1]]
    assert np.isnan(scores[0]) and best["best"] == min(scores[1:])


# ----------------------------------------------------------------------------------------------
# bad records
def _images(folder: Path, n: int, bad: set[int]) -> Path:
    import cv2
    folder.mkdir(parents=True, exist_ok=True)
    img = np.full((4, 4, 3), 100, np.uint8)
    for i in range(n):
        if i in bad:
            (folder / f"{i}.png").write_bytes(b"")  # a zero-byte image
        else:
            cv2.imwrite(str(folder / f"{i}.png"), img)
    return folder


def test_zero_byte_image_is_skipped_listed_and_resume_passes_it(tmp_path, capsys):
    images = _images(tmp_path / "img", 48, {7, 30})
    data = {"image_dir": str(images)}
    straight = train(fault_config(tmp_path / "a", data, max_steps=12, val_every=12, num_workers=2))
    out = capsys.readouterr().out
    assert "epoch 0: 2 bad record(s) skipped" in out and "epoch 1: 2 bad record(s) skipped" in out
    listed = (straight / "bad_records.txt").read_text().splitlines()
    assert len(listed) == 2 and {line.split("\t")[0] for line in listed} == {"7", "30"}  # once each
    assert all("7.png" in line or "30.png" in line for line in listed)
    # stopped mid-epoch, resumed: not stopped by the same record, same weights as straight through
    part = train(fault_config(tmp_path / "b", data, max_steps=4, val_every=12))
    resumed = train(fault_config(tmp_path / "b", data, max_steps=12, val_every=12, resume=str(part)))
    assert _same(_weights(straight / "last.pt"), _weights(resumed / "last.pt"))
    assert len((resumed / "bad_records.txt").read_text().splitlines()) == 2


def test_bad_record_error_mode_and_all_bad(tmp_path):
    images = _images(tmp_path / "img", 48, {3})
    cfg = fault_config(tmp_path / "e", {"image_dir": str(images)}, max_steps=12, num_workers=1)
    cfg.data.on_bad_record = "error"
    with pytest.raises(BadRecordError, match=r"bad record at index 3: .*3\.png.*on_bad_record=error") as e:
        train(cfg)
    assert "\n" not in str(e.value)
    every = _images(tmp_path / "all", 48, set(range(48)))
    with pytest.raises(BadRecordError, match="is every record of the training set bad"):
        train(fault_config(tmp_path / "x", {"image_dir": str(every)}, max_steps=12))


# ----------------------------------------------------------------------------------------------
# the loader: persistent workers, one seed per item
def test_workers_persist_across_epochs_and_change_nothing(tmp_path):
    FaultTask.pids = []
    w2 = train(fault_config(tmp_path / "w2", {"pid": True}, max_steps=18, val_every=18, num_workers=2))
    per_epoch = [set().union(*FaultTask.pids[i:i + 6]) for i in (0, 6, 12)]
    assert per_epoch[0] == per_epoch[1] == per_epoch[2] and os.getpid() not in per_epoch[0]  # the same workers
    w0 = train(fault_config(tmp_path / "w0", max_steps=18, val_every=18, num_workers=0))
    assert _same(_weights(w2 / "last.pt"), _weights(w0 / "last.pt"))  # 0 or 2 workers: same run


def test_items_are_seeded_by_epoch_and_index_only():
    items = TrainingItems(TinyDataset(8, 1, 0.5), seed=3)
    a, again, other_epoch = items[(0, 5)], items[(0, 5)], items[(1, 5)]
    _ = torch.rand(3), np.random.rand(3)  # the global streams' position does not matter
    assert torch.equal(a.value["x"], again.value["x"]) and torch.equal(a.value["x"], items[(0, 5)].value["x"])
    assert not torch.equal(a.value["x"], other_epoch.value["x"])  # a new augmentation each epoch
    state = np.random.get_state()[1].copy()
    items[(2, 1)]
    assert np.array_equal(state, np.random.get_state()[1])  # the caller's RNG did not move
