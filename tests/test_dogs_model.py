"""dogs_mobilenetv2: exact parameter counts, head shape, freezing phases, backbone weight loading."""
import urllib.error
import warnings

import pytest
import torch

from posekit.models import count_parameters, create_model
from posekit.models import mobilenetv2_regressor as dogs_models


def test_parameter_counts_match_the_spec():
    model = create_model("dogs_mobilenetv2")
    assert count_parameters(model) == (2_320_144, 2_320_144)
    frozen = create_model("dogs_mobilenetv2", freeze_backbone=True)
    assert count_parameters(frozen) == (2_320_144, 96_272)
    # Keras' 2,354,256 = ours + the BatchNorm running mean/var (17,056 channels x 2)
    bn_stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert 2_320_144 + bn_stats == 2_354_256
    head = model.head
    assert sum(p.numel() for p in head[1].parameters()) == 93_488
    assert sum(p.numel() for p in head[3].parameters()) == 2_784


def test_forward_shapes_and_range():
    model = create_model("dogs_mobilenetv2").eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 224, 224))
    assert out.shape == (2, 24, 2)
    assert float(out.detach().min()) >= 0 and float(out.detach().max()) <= 1
    # other input sizes: the feature grid is resized to the head's 7x7
    small = create_model("dogs_mobilenetv2", width_mult=0.35).eval()
    assert small(torch.rand(1, 3, 96, 96)).shape == (1, 24, 2)
    assert small(torch.rand(1, 3, 256, 256)).shape == (1, 24, 2)


def test_frozen_backbone_keeps_bn_in_eval_and_gets_no_gradients():
    model = create_model("dogs_mobilenetv2", width_mult=0.35, freeze_backbone=True).train()
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not bn.training for bn in bns)
    assert model.head.training
    before = bns[0].running_mean.clone()
    model(torch.rand(2, 3, 64, 64)).sum().backward()
    assert torch.equal(before, bns[0].running_mean)  # statistics untouched
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.head.parameters())


def test_fine_tune_phase_through_task_hooks():
    from posekit.engine.recipes import config_from_dict
    from posekit.engine.trainer import build_optimizer
    from posekit.families import build_task

    cfg = config_from_dict({"task": "dogs", "model": {"name": "dogs_mobilenetv2", "args": {
        "width_mult": 0.35, "freeze_backbone": True, "unfreeze_at_step": 3}},
        "train": {"lr": 1e-3, "lr_mult": {"backbone": 0.1}}})
    task = build_task(cfg)
    # the frozen-then-unfrozen backbone gets no gradients for a while: DDP must know
    assert task.find_unused_parameters
    model = task.build_model()
    assert isinstance(model, dogs_models.MobileNetV2KeypointRegressor)
    task.prepare(model, {})  # before the optimiser is built, as the trainer does (DogsTask.prepare needs no data)
    opt = build_optimizer(model, cfg)
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    lrs = [g["lr"] for g in opt.param_groups if any(id(p) in backbone_ids for p in g["params"])]
    assert lrs and all(lr == pytest.approx(1e-4) for lr in lrs)  # in the optimiser, at the lower rate
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert backbone_ids <= held
    w0 = model.backbone[0][0].weight.detach().clone()
    for step in range(5):
        model.train()
        task.on_step(model, step)
        opt.zero_grad()
        model(torch.rand(2, 3, 64, 64)).square().mean().backward()
        opt.step()
        if step < 3:
            assert torch.equal(w0, model.backbone[0][0].weight), f"backbone moved while frozen (step {step})"
    assert not model.backbone_frozen
    assert not torch.equal(w0, model.backbone[0][0].weight)
    # finetune_bn_eval: BatchNorm statistics stay frozen during fine-tuning
    model.train()
    assert all(not m.training for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))


def _torchvision_state(width=1.0):
    from torchvision.models import mobilenet_v2
    torch.manual_seed(123)
    return mobilenet_v2(weights=None, width_mult=width).state_dict()


def test_backbone_weights_from_local_file(tmp_path):
    state = _torchvision_state(0.35)
    path = tmp_path / "mnv2.pth"
    torch.save(state, path)
    model = create_model("dogs_mobilenetv2", width_mult=0.35, backbone_weights=str(path))
    assert model.weights_source == "file"
    assert torch.equal(model.backbone[0][0].weight, state["features.0.0.weight"])
    assert torch.equal(model.backbone[18][1].running_var, state["features.18.1.running_var"])
    # a features-only state dict works too
    feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    torch.save(feats, tmp_path / "feats.pth")
    m2 = create_model("dogs_mobilenetv2", width_mult=0.35, backbone_weights=str(tmp_path / "feats.pth"))
    assert torch.equal(m2.backbone[3].conv[0][0].weight, state["features.3.conv.0.0.weight"])


def test_backbone_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_model("dogs_mobilenetv2", backbone_weights=str(tmp_path / "nope.pth"))
    torch.save(_torchvision_state(0.35), tmp_path / "narrow.pth")
    with pytest.raises(ValueError, match="do not match"):
        create_model("dogs_mobilenetv2", backbone_weights=str(tmp_path / "narrow.pth"))
    torch.save({"fc.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="no MobileNetV2 feature tensors"):
        create_model("dogs_mobilenetv2", backbone_weights=str(tmp_path / "other.pth"))


def test_pretrained_from_torch_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(dogs_models, "online", lambda *a, **k: pytest.fail("must not touch the network"))
    cached = dogs_models._cached_imagenet_file()
    assert str(cached).startswith(str(tmp_path))
    cached.parent.mkdir(parents=True)
    state = _torchvision_state(1.0)
    torch.save(state, cached)
    model = create_model("dogs_mobilenetv2", pretrained=True)
    assert model.weights_source == "cache"
    assert torch.equal(model.backbone[0][0].weight, state["features.0.0.weight"])


def test_pretrained_offline_warns_and_keeps_random_init(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(dogs_models, "online", lambda *a, **k: False)
    with pytest.warns(RuntimeWarning, match="RANDOM initialisation"):
        model = create_model("dogs_mobilenetv2", width_mult=0.35, pretrained=True)
    assert model.weights_source == "random"

    class Failing:
        url = "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"

        def get_state_dict(self, **kwargs):
            raise urllib.error.URLError("connection refused")

    monkeypatch.setattr(dogs_models, "online", lambda *a, **k: True)
    monkeypatch.setattr(dogs_models, "_imagenet_weights_entry", lambda: Failing())
    with pytest.warns(RuntimeWarning, match="download failed"):
        model = create_model("dogs_mobilenetv2", width_mult=0.35, pretrained=True)
    assert model.weights_source == "random"


def test_normalization_buffers_travel_with_state_dict():
    m = create_model("dogs_mobilenetv2", width_mult=0.35, normalization="tf")
    sd = m.state_dict()
    assert torch.allclose(sd["pixel_mean"].flatten(), torch.tensor([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="normalization"):
        create_model("dogs_mobilenetv2", normalization="caffe")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_model("dogs_mobilenetv2", width_mult=0.35)  # plain build: no warning
