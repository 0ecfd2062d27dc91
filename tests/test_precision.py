"""Precision, channels_last and torch.compile (engine/precision.py and their trainer wiring):
auto picks fp32 on CPU and bf16/fp16 on CUDA, emulated bf16 warns once, fp16 on CPU is a clear
error, bf16 losses match fp32 per family, channels_last trains to the same weights, and a
compiled run saves a checkpoint a plain model loads."""
from __future__ import annotations

import csv
import json
import warnings

import pytest
import torch

import tiny_task  # noqa: F401  (registers the "tiny" task)
from tiny_task import tiny_config
from posekit.engine import precision
from posekit.engine.checkpoint import load_checkpoint
from posekit.engine.evaluation import to_device
from posekit.engine.recipes import load_config
from posekit.engine.trainer import NonFiniteLossError, train
from posekit.families import build_task, get_task_class, list_tasks

FAMILIES = [n for n in list_tasks() if get_task_class(n).__module__.startswith("posekit.families.")]
CONV_FAMILIES = [n for n in FAMILIES if n != "gmh_mdn"]  # gmh_mdn is an MLP on 2-D keypoints


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set what the capability probes report: cpu_bf16(native=..., cuda=...)."""
    def set_(native: bool = False, cuda: bool = False):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
        monkeypatch.setattr(precision, "cuda_has_bf16", lambda device=None: cuda)
        monkeypatch.setattr(precision, "_warned", set())
    return set_


# ----------------------------------------------------------------------------------------------
# resolve_amp
@pytest.mark.parametrize("native", [False, True])
def test_auto_is_fp32_on_every_cpu(cpu_bf16, native):
    cpu_bf16(native=native)
    assert precision.resolve_amp("auto", "cpu") == "fp32"


@pytest.mark.parametrize("value", ["off", "none", "fp32", "OFF", False, None])
def test_fp32_spellings_are_one_precision(cpu_bf16, value):
    cpu_bf16()
    assert precision.resolve_amp(value, "cpu") == "fp32"
    assert precision.resolve_amp(value, "cuda") == "fp32"


def test_cuda_auto_prefers_bf16_then_fp16_with_the_scaler(cpu_bf16):
    cpu_bf16(cuda=True)
    assert precision.resolve_amp("auto", "cuda:0") == "bf16"
    assert precision.resolve_amp("fp16", "cuda") == "fp16"
    cpu_bf16(cuda=False)
    assert precision.resolve_amp("auto", torch.device("cuda")) == "fp16"
    assert precision.grad_scaler_enabled("fp16")
    assert not precision.grad_scaler_enabled("bf16") and not precision.grad_scaler_enabled("fp32")


def test_fp16_on_cpu_is_a_clear_error(cpu_bf16):
    cpu_bf16()
    with pytest.raises(ValueError, match="train.amp=bf16 or train.amp=fp32"):
        precision.resolve_amp("fp16", "cpu")
    with pytest.raises(ValueError, match="valid: auto, fp32"):
        precision.resolve_amp("fp8", "cpu")


def test_emulated_bf16_warns_once_with_the_measured_factor(cpu_bf16):
    cpu_bf16(native=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert precision.resolve_amp("bf16", "cpu") == "bf16"
        assert precision.resolve_amp("bf16", "cpu") == "bf16"
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1
    assert precision.EMULATED_BF16_SLOWDOWN in messages[0] and "train.amp=fp32" in messages[0]


def test_native_bf16_does_not_warn(cpu_bf16):
    cpu_bf16(native=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.resolve_amp("bf16", "cpu") == "bf16"


def test_cpu_probe_reads_the_isa(monkeypatch):
    probe = precision.cpu_has_native_bf16
    assert isinstance(probe(), bool)
    base = {k: v for k, v in torch.cpu.get_capabilities().items() if "bf16" not in k}
    try:
        for caps in ({**base, "avx512_bf16": True}, {**base, "amx_bf16": True}):
            monkeypatch.setattr(torch.cpu, "get_capabilities", lambda c=caps: c)
            probe.cache_clear()
            assert probe()
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():  # this machine: AVX2 only
            monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: dict(base))
            probe.cache_clear()
            assert not probe()
    finally:
        monkeypatch.undo()
        probe.cache_clear()


def test_autocast_contexts():
    x = torch.randn(4, 4)
    with precision.autocast("fp32", "cpu"):
        assert (x @ x).dtype == torch.float32
    with precision.autocast("bf16", "cpu"):
        assert (x @ x).dtype == torch.bfloat16


# ----------------------------------------------------------------------------------------------
# trainer wiring
def test_trainer_records_the_resolved_precision(tmp_path, capsys):
    train(tiny_config(tmp_path, performance=4))
    out = capsys.readouterr().out
    assert out.count("precision fp32") == 1  # printed once at start
    report = json.loads(next(line for line in out.splitlines()[::-1] if line.startswith("{")))
    assert report["amp"] == "fp32" and report["channels_last"] is False and report["compile"] is False


def test_trainer_fp32_spellings_train_identically(tmp_path):
    weights = []
    for i, value in enumerate(["fp32", False]):
        cfg = tiny_config(tmp_path / str(i), max_steps=3, val_every=3)
        cfg.train.amp = value  # False: what YAML makes of `off` before the config maps it
        weights.append(load_checkpoint(train(cfg) / "last.pt")["model"])
    for w in weights[1:]:
        assert all(torch.equal(w[k], weights[0][k]) for k in w)


def test_trainer_rejects_fp16_on_cpu(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=2)
    cfg.train.amp = "fp16"
    with pytest.raises(ValueError, match="train.amp=bf16 or train.amp=fp32"):
        train(cfg)


@pytest.mark.filterwarnings("ignore:train.amp=bf16")
def test_nan_message_suggests_a_value_that_works(tmp_path):
    """A run under AMP that diverges is told to try fp32, a value resolve_amp accepts."""
    run = train(tiny_config(tmp_path, max_steps=2, val_every=2, amp="bf16"))
    cfg = tiny_config(tmp_path, max_steps=6, val_every=2, resume=str(run), amp="bf16")
    cfg.data.nan_at_step = 1
    with pytest.raises(NonFiniteLossError, match="train.amp=fp32") as e:
        train(cfg)
    suggested = str(e.value).rsplit("train.amp=", 1)[1].split()[0].strip(".,")
    assert precision.resolve_amp(suggested, "cpu") == "fp32"


# ----------------------------------------------------------------------------------------------
# per family: bf16 loss parity and channels_last parity on one smoke batch
def _smoke_cfg(family, tmp_path, *extra):
    cls = get_task_class(family)
    return load_config(cls.synthetic_recipe, [*cls.smoke_overrides, f"out_dir={tmp_path}", f"name={family}",
                                              "train.batch_size=2", "train.progress=false",
                                              "train.tensorboard=false", "train.warmup_steps=0",
                                              "eval.max_samples=2", "eval.batch_size=2", *extra])


def _loss(task, model, batch, context=None):
    torch.manual_seed(0)  # dropout and in-step augmentation (fse's warps) draw the same numbers
    with context or precision.autocast("fp32", "cpu"):
        loss, _ = task.training_step(model, batch)
    return loss


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_and_channels_last_losses_match_fp32(family, tmp_path):
    cfg = _smoke_cfg(family, tmp_path)
    task = build_task(cfg)
    torch.manual_seed(0)
    model = task.build_model()
    datasets = task.build_datasets()
    task.prepare(model, datasets)
    batch = to_device(task.collate([datasets["train"][i] for i in range(2)]), torch.device("cpu"))
    model.train()
    ref = _loss(task, model, batch)
    assert torch.isfinite(ref)
    bf16 = _loss(task, model, batch, precision.autocast("bf16", "cpu"))
    assert float(bf16.detach()) == pytest.approx(float(ref.detach()), rel=5e-2, abs=5e-3)  # bf16 keeps 8 mantissa bits
    if family not in CONV_FAMILIES:
        return
    # channels_last: same loss and gradients; the decoder reads NHWC outputs too. Dropout masks
    # are drawn in memory order, so NHWC drops other elements: switch dropout off to compare
    for m in model.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.p = 0.0
    train_loss = _loss(task, model, batch).detach()
    model.eval()  # BatchNorm's batch statistics over 2 tiny images amplify rounding ~1e4x in
    ref = _loss(task, model, batch)  # backward; with running statistics the gradients compare
    ref.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.to(memory_format=torch.channels_last)
    cl_batch = precision.channels_last_inputs(batch)
    assert cl_batch["image"].is_contiguous(memory_format=torch.channels_last)
    cl = _loss(task, model, cl_batch)
    assert float(cl.detach()) == pytest.approx(float(ref.detach()), rel=1e-5, abs=1e-7)
    cl.backward()
    # one relative error over all gradients: biases in front of a BatchNorm get ~0 gradient in
    # exact arithmetic, so their own relative error is rounding noise over rounding noise
    flat = torch.cat([g.reshape(-1) for g in grads.values()])
    diff = torch.cat([(model.get_parameter(n).grad - g).reshape(-1) for n, g in grads.items()])
    assert float(diff.norm() / flat.norm()) < 3e-3  # fp32 reordering; a layout bug is O(1)
    with torch.no_grad():
        x = task.model_inputs(cl_batch)
        plain = task.forward_decode(model, x.contiguous())
        nhwc = task.forward_decode(model, x)
    for k in plain:
        torch.testing.assert_close(nhwc[k], plain[k], rtol=1e-3, atol=1e-4, msg=k)
    model.train()  # last: a training-mode pass moves the BatchNorm running statistics
    assert float(_loss(task, model, cl_batch).detach()) == pytest.approx(float(train_loss), rel=1e-4, abs=1e-6)


def test_channels_last_trains_to_the_same_losses(tmp_path):
    """dogs (MobileNetV2): a few trainer steps with and without channels_last log the same
    training and validation losses, with the weights really stored NHWC. No dropout: its masks
    are drawn in memory order. (Weights are not compared one by one: train-mode BatchNorm over
    a 2-image batch amplifies fp32 rounding in a few near-constant channels' gradients.)"""
    runs, rows = {}, {}
    for flag in ("false", "true"):
        cfg = _smoke_cfg("dogs", tmp_path / flag, "train.max_steps=4", "train.val_every=4", "train.log_every=1",
                         "model.args.dropout=0.0", f"train.channels_last={flag}")
        run = train(cfg)
        runs[flag] = load_checkpoint(run / "last.pt")["model"]
        with (run / "metrics.csv").open() as f:
            rows[flag] = list(csv.DictReader(f))
    plain, nhwc = runs["false"], runs["true"]
    convs = [k for k, v in plain.items() if v.dim() == 4]  # checkpoints keep the weights' layout
    assert convs and all(nhwc[k].is_contiguous(memory_format=torch.channels_last) for k in convs)
    assert not all(plain[k].is_contiguous(memory_format=torch.channels_last) for k in convs)
    for key in ("loss", "val/val_loss", "val/mean_px_error"):
        a = [float(r[key]) for r in rows["false"] if r.get(key)]
        b = [float(r[key]) for r in rows["true"] if r.get(key)]
        assert len(a) == len(b) > 0 and a == pytest.approx(b, rel=1e-2), key  # Adam amplifies it later
    # the first step sees the same weights: only the convolution's summation order differs
    assert float(rows["true"][0]["loss"]) == pytest.approx(float(rows["false"][0]["loss"]), rel=1e-5)


def test_channels_last_default_comes_from_the_task():
    class Conv:
        channels_last = True
    assert precision.resolve_channels_last(None, Conv()) is True
    assert precision.resolve_channels_last(False, Conv()) is False
    assert precision.resolve_channels_last(None, object()) is False
    assert precision.resolve_channels_last(True, object()) is True
    flat = {"image": torch.zeros(3, 4, 4), "y": torch.zeros(2, 3, 4, 4)}
    assert precision.channels_last_inputs(flat) is flat  # 3-D image: nothing to convert
    four = precision.channels_last_inputs({"image": torch.zeros(2, 3, 4, 4), "y": torch.zeros(2, 3, 4, 4)})
    assert four["image"].is_contiguous(memory_format=torch.channels_last) and four["y"].is_contiguous()


# ----------------------------------------------------------------------------------------------
# torch.compile
def _compiled_run(tmp_path, monkeypatch, backend, **model_args):
    monkeypatch.setattr(precision, "COMPILE_BACKEND", backend)
    torch._dynamo.reset()
    from torch._dynamo.utils import counters
    counters.clear()
    cfgs = [tiny_config(tmp_path / "compiled", max_steps=3, val_every=3, compile=True),
            tiny_config(tmp_path / "plain", max_steps=3, val_every=3)]
    for cfg in cfgs:
        cfg.model.args = dict(model_args)
    run = train(cfgs[0])
    assert counters["frames"]["ok"] > 0, "train.compile=true did not compile anything"
    plain = train(cfgs[1])
    return load_checkpoint(run / "last.pt")["model"], load_checkpoint(plain / "last.pt")["model"]


def _assert_plain_checkpoint(compiled, plain):
    assert list(compiled) == list(plain) and not any("_orig_mod" in k for k in compiled)
    model = build_task(tiny_config("unused")).build_model()
    model.load_state_dict(compiled)  # strict: a plain model loads the compiled run's checkpoint
    for k in plain:
        torch.testing.assert_close(compiled[k], plain[k], rtol=1e-4, atol=1e-5, msg=k)


def test_compile_option_is_wired(tmp_path, monkeypatch):
    _assert_plain_checkpoint(*_compiled_run(tmp_path, monkeypatch, "eager"))


@pytest.mark.slow  # inductor generates and builds C++ kernels: tens of seconds on 2 cores
def test_compiled_run_checkpoint_loads_in_a_plain_model(tmp_path, monkeypatch):
    # no dropout: inductor draws its masks from its own generator, not eager's stream
    _assert_plain_checkpoint(*_compiled_run(tmp_path, monkeypatch, "inductor", dropout=0.0))
    torch._dynamo.reset()


def test_plain_module_unwraps_compile():
    net = torch.nn.Linear(2, 2)
    wrapped = precision.compile_model(net, backend="eager")
    assert precision.plain_module(wrapped) is net and precision.plain_module(net) is net
    assert list(precision.plain_module(wrapped).state_dict()) == ["weight", "bias"]
