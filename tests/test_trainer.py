"""The one trainer: artefacts, exact resume, limits, schedules, param groups, EMA, AMP, NaN, signals."""
import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tiny_task  # noqa: F401  (registers the "tiny" task)
from tiny_task import tiny_config
from posekit.config import ConfigError
from posekit.engine.recipes import config_from_dict
from posekit.engine.checkpoint import load_checkpoint
from posekit.engine.trainer import NonFiniteLossError, build_optimizer, lr_factor, train

REPO = Path(__file__).resolve().parents[1]


def _weights(path):
    return load_checkpoint(path)["model"]


def test_run_dir_artefacts(tmp_path):
    run = train(tiny_config(tmp_path, max_steps=6, val_every=3))
    for name in ("config.yaml", "metrics.csv", "curves.png", "last.pt", "best.pt"):
        assert (run / name).is_file(), name
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["step"] == 6
    assert set(ckpt) >= {"model", "optimizer", "scheduler", "scaler", "ema", "rng", "step", "config"}
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss,lr,samples_per_s")
    assert sum(1 for r in rows if ",,," in r) == 2  # two validation rows (steps 3 and 6)


@pytest.mark.parametrize("first", [4, 6])  # 6 steps = one epoch boundary exactly; 4 = mid-epoch
def test_resume_is_exact(tmp_path, first):
    straight = train(tiny_config(tmp_path / "a", max_steps=2 * first, val_every=3))
    part = train(tiny_config(tmp_path / "b", max_steps=first, val_every=3))
    resumed = train(tiny_config(tmp_path / "b", max_steps=2 * first, val_every=3, resume=str(part)))
    a, b = _weights(straight / "last.pt"), _weights(resumed / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from an uninterrupted run"
    assert load_checkpoint(resumed / "last.pt")["step"] == 2 * first


def test_limits_epochs_and_time(tmp_path):
    run = train(tiny_config(tmp_path / "e", max_steps=None, max_epochs=2))
    assert load_checkpoint(run / "last.pt")["step"] == 12  # 48 samples / batch 8 = 6 steps per epoch
    t0 = time.time()
    run = train(tiny_config(tmp_path / "t", max_steps=None, max_time=1.0, val_every=10_000))
    assert time.time() - t0 < 30
    assert load_checkpoint(run / "last.pt")["step"] > 0


def test_needs_a_limit(tmp_path):
    with pytest.raises(ValueError, match="set a limit"):
        train(tiny_config(tmp_path, max_steps=None))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    run = train(tiny_config(tmp_path, max_steps=4, val_every=2))
    good = _weights(run / "last.pt")
    cfg = tiny_config(tmp_path, max_steps=20, val_every=2, resume=str(run))
    cfg.data.nan_at_step = 1
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        train(cfg)
    after = _weights(run / "last.pt")
    assert all(torch.equal(good[k], after[k]) for k in good)


def test_schedules():
    cfg = config_from_dict({"task": "tiny", "train": {"schedule": "exp", "gamma": 0.96, "decay_steps": 2000}})
    assert lr_factor(1999, cfg, None) == 1.0 and lr_factor(2000, cfg, None) == pytest.approx(0.96)
    cfg.train.staircase = False
    assert lr_factor(1000, cfg, None) == pytest.approx(0.96 ** 0.5)
    cfg.train.schedule, cfg.train.milestones, cfg.train.gamma = "step", [10, 20], 0.1
    assert [lr_factor(s, cfg, None) for s in (9, 10, 25)] == pytest.approx([1, 0.1, 0.01])
    cfg.train.schedule, cfg.train.warmup_steps = "cosine", 10
    assert lr_factor(0, cfg, 110) == pytest.approx(0.1)
    assert lr_factor(60, cfg, 110) == pytest.approx(0.5)
    assert lr_factor(110, cfg, 110) == pytest.approx(0.0)
    cfg.train.schedule = "linear"
    with pytest.raises(ValueError, match="valid: constant, step, exp, cosine"):
        lr_factor(0, cfg, 10)


def test_param_group_learning_rates_and_freezing(tmp_path):
    cfg = tiny_config(tmp_path, lr=0.1, lr_mult={"0.": 0.0, "3.": 0.25}, weight_decay=1e-4)
    from posekit.families import build_task
    model = build_task(cfg).build_model()
    opt = build_optimizer(model, cfg)
    assert not model[0].weight.requires_grad  # frozen by multiplier 0
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert id(model[0].weight) not in lrs
    assert lrs[id(model[3].weight)] == pytest.approx(0.025) and lrs[id(model[5].weight)] == pytest.approx(0.1)
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decay[id(model[5].bias)] == 0.0 and decay[id(model[5].weight)] == 1e-4


def test_ema_and_bf16_autocast_and_grad_clip(tmp_path):
    run = train(tiny_config(tmp_path, max_steps=6, val_every=3, ema_decay=0.9, amp="bf16", grad_clip=0.5))
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["ema"] is not None
    from posekit.engine.checkpoint import inference_state_dict
    ema = inference_state_dict(ckpt)
    assert set(ema) == set(ckpt["model"])
    assert any(not torch.equal(ema[k], ckpt["model"][k]) for k in ema)  # EMA lags the raw weights
    assert "grad_norm" in (run / "metrics.csv").read_text().splitlines()[0]


def test_fp16_on_cpu_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        train(tiny_config(tmp_path, amp="fp16"))


def test_performance_mode_prints_samples_per_second(tmp_path, capsys):
    train(tiny_config(tmp_path, performance=5))
    out = capsys.readouterr().out
    assert '"samples_per_s"' in out and '"performance_steps": 3' in out
    assert not (tmp_path / "tiny" / "last.pt").exists()  # saves nothing


def test_init_from_keeps_matching_tensors_and_fresh_head(tmp_path):
    source = train(tiny_config(tmp_path / "src", max_steps=3))
    cfg = tiny_config(tmp_path / "dst", max_steps=1, lr_mult={"0.": 0.0})  # layer 0 frozen: stays as loaded
    cfg.model.args = {"out": 6}  # a different "skeleton": the last layer changes shape
    cfg.model.init_from = str(source / "last.pt")
    run = train(cfg)
    src, dst = _weights(source / "last.pt"), _weights(run / "last.pt")
    assert torch.equal(src["0.weight"], dst["0.weight"])
    assert dst["5.weight"].shape == (6, 32)


_SIGNAL_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
import tiny_task
from posekit.engine.trainer import train
cfg = tiny_task.tiny_config({out!r}, max_steps=10_000_000, val_every=10_000_000)
orig = tiny_task.TinyTask.training_step
def slow(self, model, batch):
    time.sleep(0.01)
    if getattr(self, "_steps", 0) == 5:
        print("READY", flush=True)
    return orig(self, model, batch)
tiny_task.TinyTask.training_step = slow
train(cfg)
print("CLEAN EXIT", flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_and_exits_cleanly(tmp_path, sig):
    script = _SIGNAL_SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=REPO)
    for line in proc.stdout:
        if "READY" in line:
            break
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "CLEAN EXIT" in out and "resume with" in out
    assert load_checkpoint(tmp_path / "tiny" / "last.pt")["step"] >= 5


_KILL_SCRIPT = """
import sys, torch
from posekit.engine.checkpoint import save_checkpoint
big = {{"w": torch.randn(4_000_000)}}
i = 0
while True:
    i += 1
    big["step"] = i
    save_checkpoint(big, {path!r})
    print(i, flush=True)
"""


def test_sigkill_while_writing_leaves_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "last.pt"
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT.format(path=str(path))],
                                stdout=subprocess.PIPE, text=True)
        first = proc.stdout.readline()  # at least one complete checkpoint exists
        assert first.strip()
        time.sleep(0.05 + 0.07 * attempt)  # land inside a later write
        proc.kill()
        proc.wait()
        ckpt = load_checkpoint(path)
        assert ckpt["w"].shape == (4_000_000,) and ckpt["step"] >= 1
    leftovers = [p for p in tmp_path.iterdir() if p.name != "last.pt"]
    # a killed writer may leave its temporary file behind, never a half-written last.pt
    assert all(p.name.startswith(".last.pt.") for p in leftovers)


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot load checkpoint .*bad.pt"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_lr_hold_keeps_a_group_still_then_trains_it(tmp_path):
    """train.lr_hold {prefix: N}: that group's lr is 0 for its first N steps (OpenPose's VGG)."""
    from posekit.engine.trainer import seed_everything
    from posekit.families import build_task
    cfg = tiny_config(tmp_path, max_steps=3, val_every=3, lr_hold={"0.": 3})
    seed_everything(cfg.train.seed)
    initial = build_task(cfg).build_model().state_dict()
    held = load_checkpoint(train(cfg) / "last.pt")["model"]
    assert torch.equal(held["0.weight"], initial["0.weight"]) and not torch.equal(held["3.weight"], initial["3.weight"])
    cfg = tiny_config(tmp_path / "b", max_steps=5, val_every=5, lr_hold={"0.": 3})
    trained = load_checkpoint(train(cfg) / "last.pt")["model"]
    assert not torch.equal(trained["0.weight"], initial["0.weight"])


# ----------------------------------------------------------------------------------------------
# run folders, resume rules (issue 12)
def test_a_new_run_never_writes_into_a_previous_runs_folder(tmp_path):
    first = train(tiny_config(tmp_path, max_steps=3, val_every=3))
    before = {n: (first / n).read_bytes() for n in ("last.pt", "best.pt", "metrics.csv")}
    with pytest.raises(ConfigError, match=r"run folder .*tiny holds a previous run .*pass train.exist_ok=true to "
                                          r"reuse it or train.resume=.*tiny to continue"):
        train(tiny_config(tmp_path, max_steps=5, val_every=5))
    assert all((first / n).read_bytes() == b for n, b in before.items())  # untouched
    again = train(tiny_config(tmp_path, max_steps=2, val_every=2, exist_ok=True))  # asked for: a fresh run there
    steps = [int(r["step"]) for r in csv.DictReader((again / "metrics.csv").open()) if r["loss"]]
    assert steps == [1, 2]  # the old run's rows are gone, not interleaved
    assert load_checkpoint(again / "best.pt")["step"] == 2


def test_resuming_a_finished_run_trains_and_writes_nothing(tmp_path, capsys):
    run = train(tiny_config(tmp_path, max_steps=4, val_every=2))
    before = {n: (run / n).read_bytes() for n in ("last.pt", "best.pt", "metrics.csv", "config.yaml")}
    for _ in range(2):
        assert train(tiny_config(tmp_path, max_steps=4, val_every=2, resume=str(run))) == run
        assert "is already complete (step 4 of 4)" in capsys.readouterr().out
    assert all((run / n).read_bytes() == b for n, b in before.items())
    timed = train(tiny_config(tmp_path / "t", max_steps=None, max_time=0.5, val_every=10_000))
    step = load_checkpoint(timed / "last.pt")["step"]
    train(tiny_config(tmp_path / "t", max_steps=None, max_time=0.5, val_every=10_000, resume="auto"))
    assert "already complete" in capsys.readouterr().out and load_checkpoint(timed / "last.pt")["step"] == step


def test_resume_auto_and_the_checkpoints_own_folder(tmp_path, capsys):
    run = train(tiny_config(tmp_path, max_steps=3, val_every=3, resume="auto"))  # nothing to resume: fresh
    assert load_checkpoint(run / "last.pt")["step"] == 3 and "resumed" not in capsys.readouterr().out
    train(tiny_config(tmp_path, max_steps=5, val_every=5, resume="auto"))
    assert "resumed from" in capsys.readouterr().out and load_checkpoint(run / "last.pt")["step"] == 5
    cfg = tiny_config(tmp_path, max_steps=7, val_every=7, resume=str(run / "last.pt"))
    cfg.name = "another_name"  # resuming writes into the checkpoint's run, not a new folder
    assert train(cfg).resolve() == run.resolve()
    assert load_checkpoint(run / "last.pt")["step"] == 7 and not (tmp_path / "another_name").exists()


def test_resume_trims_metrics_rows_logged_after_the_checkpoint(tmp_path):
    run = train(tiny_config(tmp_path, max_steps=6, val_every=3))
    with (run / "metrics.csv").open("a") as f:  # what a SIGKILL after step 6's rows leaves behind
        f.write("7,1,0.5,0.01,1,1,0.1\n8,1,0.5")  # (the last one half-written)
    ckpt = load_checkpoint(run / "last.pt")
    ckpt["step"] = 4  # a run whose last checkpoint is at step 4 (rows 5-8 came after it)
    torch.save(ckpt, run / "last.pt")
    train(tiny_config(tmp_path, max_steps=8, val_every=100, resume=str(run)))
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    steps = [int(r["step"]) for r in rows if r["loss"]]
    assert steps == list(range(1, 9)), steps
    assert [int(r["step"]) for r in rows if r["val/mse"]] == [3, 8]


def test_init_from_matching_nothing_is_an_error_naming_the_file(tmp_path):
    from posekit.engine.checkpoint import save_checkpoint
    other = save_checkpoint({"model": {"backbone.conv.weight": torch.zeros(3, 3)},
                             "config": {"task": "hourglass", "model": {"name": "hourglass4"}}}, tmp_path / "hg.pt")
    cfg = tiny_config(tmp_path / "dst", max_steps=1)
    cfg.model.init_from = str(other)
    with pytest.raises(ValueError, match=r"init_from=.*hg.pt: no tensor matches this model \(the file holds task "
                                         r"hourglass, model hourglass4; this run is task tiny.*init_allow_no_match"):
        train(cfg)
    cfg.model.init_allow_no_match = True
    assert load_checkpoint(train(cfg) / "last.pt")["step"] == 1


def test_resume_from_another_tasks_checkpoint_is_a_clear_error(tmp_path):
    from posekit.engine.checkpoint import save_checkpoint
    other = save_checkpoint({"model": {}, "optimizer": {}, "config": {"task": "dogs", "model": {"name": "m"}}},
                            tmp_path / "x" / "last.pt")
    with pytest.raises(ValueError, match="not a training checkpoint of task tiny .*holds task dogs, model m"):
        train(tiny_config(tmp_path, resume=str(other)))


def test_empty_validation_split_is_an_error_and_a_missing_one_is_announced(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"validation split\(s\) \['val'\] of task tiny are empty"):
        train(config_from_dict({"task": "tiny", "out_dir": str(tmp_path), "data": {"n_val": 0},
                                "train": {"batch_size": 8, "max_steps": 2, "progress": False}}))
    from tiny_task import TinyTask
    original = TinyTask.build_datasets
    TinyTask.build_datasets = lambda self, splits=None: {"train": original(self)["train"]}
    try:
        run = train(tiny_config(tmp_path / "noval", max_steps=2, val_every=1))
    finally:
        TinyTask.build_datasets = original
    assert "training without validation" in capsys.readouterr().out
    assert (run / "last.pt").is_file() and not (run / "best.pt").exists()
