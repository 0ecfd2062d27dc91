"""Slim best.pt, weights-only export, one-copy inference loading, and the NaN guard without a
host-device sync per step (issue 25)."""
import pytest
import torch
import torch.nn as nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import tiny_task  # noqa: F401  (registers the "tiny" task)
from tiny_task import tiny_config
from posekit.cli import main
from posekit.engine import trainer
from posekit.engine.checkpoint import inference_state_dict, load_checkpoint
from posekit.engine.predictor import load_for_inference
from posekit.engine.trainer import NonFiniteLossError, train

TRAINING_ONLY = ("optimizer", "scheduler", "scaler", "rng", "ema", "batch_in_epoch")


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    """6 steps with EMA, validated at 3 and 6 (the tiny metric improves: best.pt at step 6)."""
    return train(tiny_config(tmp_path_factory.mktemp("ema"), max_steps=6, val_every=3, ema_decay=0.9))


def test_best_pt_holds_the_ema_weights_config_and_metadata_but_no_optimiser(ema_run):
    best, last = load_checkpoint(ema_run / "best.pt"), load_checkpoint(ema_run / "last.pt")
    assert not set(TRAINING_ONLY) & set(best), sorted(best)
    assert best["kind"] == "inference" and best["weights"] == "ema" and best["config"]["task"] == "tiny"
    assert {"step", "epoch", "best"} <= set(best)
    assert set(TRAINING_ONLY) <= set(last)  # last.pt keeps what resume needs
    if best["step"] == last["step"]:
        want = inference_state_dict(last)  # the EMA weights, "module." stripped
        assert set(best["model"]) == set(want) and all(torch.equal(best["model"][k], want[k]) for k in want)
    assert (ema_run / "best.pt").stat().st_size < (ema_run / "last.pt").stat().st_size


def test_slim_best_pt_and_fat_last_pt_predict_the_same_ema_weights(ema_run):
    best = load_checkpoint(ema_run / "best.pt")
    last = load_checkpoint(ema_run / "last.pt")
    assert best["step"] == last["step"] == 6, "the fixture's metric should improve at step 6"
    x = torch.randn(5, 8)
    outs = []
    for path in (ema_run / "best.pt", ema_run / "last.pt"):
        _, model, _ = load_for_inference(path)
        with torch.no_grad():
            outs.append(model(x))
    assert torch.equal(outs[0], outs[1])


def test_resume_from_best_pt_is_refused_in_one_line_naming_last_pt(ema_run, tmp_path):
    cfg = tiny_config(tmp_path, max_steps=12, val_every=3, ema_decay=0.9, resume=str(ema_run / "best.pt"))
    with pytest.raises(ValueError) as e:
        train(cfg)
    msg = str(e.value)
    assert "\n" not in msg and "holds inference weights only" in msg
    assert f"resume from {ema_run / 'last.pt'}" in msg and f"model.init_from={ema_run / 'best.pt'}" in msg


def test_init_from_a_slim_best_pt_starts_from_its_weights(ema_run, tmp_path):
    cfg = tiny_config(tmp_path, max_steps=1, val_every=1, lr=1e-12)
    cfg.model.init_from = str(ema_run / "best.pt")
    run = train(cfg)
    got, want = load_checkpoint(run / "last.pt")["model"], load_checkpoint(ema_run / "best.pt")["model"]
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)


def test_export_pt_writes_a_weights_only_file_that_predicts_like_its_source(ema_run, tmp_path, capsys):
    out = tmp_path / "tiny.weights.pt"
    assert main(["export", str(ema_run / "last.pt"), "--format", "pt", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"exported {out} (weights only:" in said
    slim = load_checkpoint(out)
    assert not set(TRAINING_ONLY) & set(slim) and slim["weights"] == "ema"
    x = torch.randn(3, 8)
    with torch.no_grad():
        a = load_for_inference(out)[1](x)
        b = load_for_inference(ema_run / "last.pt")[1](x)
    assert torch.equal(a, b)
    assert out.stat().st_size < (ema_run / "last.pt").stat().st_size


def test_export_pt_never_writes_over_the_checkpoint_it_reads(ema_run, tmp_path, capsys):
    src = tmp_path / "copy.pt"
    src.write_bytes((ema_run / "last.pt").read_bytes())
    before = src.read_bytes()
    assert main(["export", str(src), "--format", "pt", "--out", str(src)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is the checkpoint being exported" in err[0]
    assert src.read_bytes() == before


def test_inference_loading_makes_the_mapped_weights_the_models_own(ema_run):
    """No second copy: the model's parameters are the checkpoint's tensors (assign), not copies
    of them into freshly initialised ones."""
    _, model, _ = load_for_inference(ema_run / "best.pt")
    want = load_checkpoint(ema_run / "best.pt")["model"]
    own = model.state_dict()
    assert set(own) == set(want) and all(torch.equal(own[k], want[k]) for k in want)
    assert all(not p.requires_grad or p.is_leaf for p in model.parameters())


def test_ema_update_matches_torchs_averaged_model_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 2))
    ours = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    ref = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    run = trainer.Run.__new__(trainer.Run)
    run.ema, run.model, run.ema_updates = ours, model, 0
    run.cfg = tiny_config("/tmp", ema_decay=0.9)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(4):
        model(torch.randn(8, 4)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        trainer.update_ema(run)
        ref.update_parameters(model)
    a, b = ours.state_dict(), ref.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def test_nan_guard_reads_the_losses_only_at_log_and_save_steps(tmp_path, monkeypatch):
    reads = []
    real = trainer.LossWatch.check

    def counted(self, run, **kw):
        reads.append((run.step, len(self.pending)))
        return real(self, run, **kw)
    monkeypatch.setattr(trainer.LossWatch, "check", counted)
    train(tiny_config(tmp_path, max_steps=20, val_every=10, log_every=5))
    # log steps 5, 10, 15, 20 and the validations at 10 and 20: never once per step
    assert [s for s, _ in reads] == [5, 10, 10, 15, 20, 20]
    assert reads[0][1] == 5  # five steps' losses read at once


def test_deferred_nan_guard_names_the_first_bad_step_and_saves_nothing_after_it(tmp_path):
    run = train(tiny_config(tmp_path, max_steps=4, val_every=4, log_every=4))
    good = load_checkpoint(run / "last.pt")["model"]
    cfg = tiny_config(tmp_path, max_steps=20, val_every=10, log_every=10, resume=str(run))
    cfg.data.nan_at_step = 2  # the resumed run's 3rd step (step 7) is the first NaN loss
    with pytest.raises(NonFiniteLossError) as e:
        train(cfg)
    msg = str(e.value)
    assert "the loss is nan at step 7 (epoch" in msg and f"the last good checkpoint is {run / 'last.pt'} (step 4)" in msg
    after = load_checkpoint(run / "last.pt")
    assert after["step"] == 4 and all(torch.equal(good[k], after["model"][k]) for k in good)
    steps = [int(r.split(",")[0]) for r in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert max(steps) == 4  # no row logged past the NaN


def test_inference_loading_reads_legacy_format_checkpoints_that_cannot_be_mapped(ema_run, tmp_path):
    legacy = tmp_path / "legacy.pt"
    torch.save(load_checkpoint(ema_run / "best.pt"), legacy, _use_new_zipfile_serialization=False)
    x = torch.randn(2, 8)
    with torch.no_grad():
        a = load_for_inference(legacy)[1](x)
        b = load_for_inference(ema_run / "best.pt")[1](x)
    assert torch.equal(a, b)
