"""OpenPose model: exact paper parameter count, small-variant shapes, normalisation, CMU and VGG weight loading."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from posekit.models.openpose import OpenPose, cmu_layer_names, convert_cmu_state_dict, openpose_small, openpose_vgg19
from posekit.models.registry import get_entry


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: small convs gain little from two, and a busy machine makes two much slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def paper_model():
    torch.manual_seed(0)
    return openpose_vgg19()


def test_paper_parameter_count(paper_model):
    m = paper_model
    assert n_params(m) == 52_311_446
    assert n_params(m.vgg) == 5_865_536
    assert n_params(m.vgg) + n_params(m.cpm) == 7_340_480
    assert n_params(m.stages[0]) == 1_046_841
    assert len(m.stages) == 6 and all(n_params(s) == 8_784_825 for s in m.stages[1:])
    # torchvision vgg19().features indices, so ImageNet weights load by index
    assert [i for i, layer in enumerate(m.vgg) if isinstance(layer, torch.nn.MaxPool2d)] == [4, 9, 18]
    assert len(m.vgg) == 23 and isinstance(m.vgg[21], torch.nn.Conv2d) and m.vgg[21].out_channels == 512


def test_registry_entries():
    for name, size in (("openpose_vgg19", (3, 368, 368)), ("openpose_small", (3, 184, 184))):
        entry = get_entry(name)
        assert (entry.family, entry.skeleton, entry.input_size) == ("openpose", "openpose18", size)


def test_small_variant_shapes_and_gradients():
    torch.manual_seed(0)
    m = openpose_small()
    assert 300_000 <= n_params(m) <= 1_000_000
    with torch.no_grad():
        pafs, heat = m(torch.randn(2, 3, 184, 184))
    assert pafs.shape == (2, 3, 38, 23, 23) and heat.shape == (2, 3, 19, 23, 23)
    pafs, heat = m(torch.randn(1, 3, 96, 96))
    (pafs.square().mean() + heat.square().mean()).backward()
    assert all(p.grad is not None for p in m.parameters())
    # non-square, non-default configuration
    m2 = OpenPose(num_stages=2, width=16, backbone_width=0.125, feature_channels=16, stage1_hidden=16, refine_kernel=5)
    p2, h2 = m2(torch.randn(1, 3, 128, 96))
    assert p2.shape == (1, 2, 38, 16, 12) and h2.shape == (1, 2, 19, 16, 12)


def test_small_variant_exact_counts_and_batch_norm():
    """782k plain; norm="batch" (the demo's) adds a BatchNorm (2 x channels) after every hidden conv,
    drops those convs' biases, and refuses weights made for the plain layout."""
    plain, bn = openpose_small(), openpose_small(norm="batch")
    assert n_params(plain) == 781_659 and n_params(bn) == 783_451
    hidden = [m for m in plain.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels not in (38, 19)]
    assert sum(m.out_channels for m in hidden) == n_params(bn) - n_params(plain)  # 2C BN - C bias per conv
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules()) == len(hidden)
    bn.train()
    pafs, heat = bn(torch.rand(2, 3, 96, 96))
    (pafs.square().mean() + heat.square().mean()).backward()
    assert all(p.grad is not None for p in bn.parameters())
    with pytest.raises(ValueError, match="norm"):
        convert_cmu_state_dict({}, model=bn)
    with pytest.raises(ValueError, match="norm"):
        OpenPose(norm="group")


def test_parameter_group_prefixes():
    m = openpose_small()
    names = [n for n, _ in m.named_parameters()]
    assert all(n.startswith(OpenPose.PARAM_GROUP_PREFIXES) for n in names)
    assert {n.split(".")[0] for n in names} == {"vgg", "cpm", "stages"}
    groups = m.parameter_groups(1e-4)
    assert [g["name"] for g in groups] == ["vgg", "cpm", "stages"]
    assert [g["lr"] for g in groups] == pytest.approx([2.5e-5, 2.5e-5, 1e-4])
    assert sum(len(g["params"]) for g in groups) == len(names)


def test_normalize_conventions():
    rgb = np.zeros((1, 3, 2, 2), np.uint8)
    rgb[0, 0], rgb[0, 1], rgb[0, 2] = 200, 100, 50  # R, G, B
    cmu = OpenPose(num_stages=1, width=8, backbone_width=0.125, feature_channels=8, stage1_hidden=8)
    out = cmu.normalize(rgb)
    assert out.dtype == torch.float32
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([50 / 256 - 0.5, 100 / 256 - 0.5, 200 / 256 - 0.5]))  # BGR
    # already-BGR input is not flipped again
    assert torch.allclose(cmu.normalize(rgb[:, ::-1].copy(), channel_order="bgr"), out)
    ms = OpenPose(num_stages=1, width=8, backbone_width=0.125, feature_channels=8, stage1_hidden=8,
                  normalization="mindspore")
    assert torch.allclose(ms.normalize(torch.tensor(rgb))[0, :, 1, 1], torch.tensor([50, 100, 200]) / 255 - 0.5)
    im = OpenPose(num_stages=1, width=8, backbone_width=0.125, feature_channels=8, stage1_hidden=8,
                  normalization="imagenet")
    expect = (torch.tensor([200.0, 100, 50]) / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor(
        [0.229, 0.224, 0.225])
    assert torch.allclose(im.normalize(rgb.astype(np.float32))[0, :, 0, 0], expect, atol=1e-6)
    with pytest.raises(ValueError, match="normalization"):
        OpenPose(normalization="bgr")
    with pytest.raises(ValueError, match="3, H, W"):
        cmu.normalize(np.zeros((2, 2, 3)))


# --- CMU weights -----------------------------------------------------------------------------------------
def cmu_layers():
    """(name, in, out, kernel, relu) of CMU's pose_deploy.prototxt (COCO body), written out independently."""
    vgg = [("conv1_1", 3, 64), ("conv1_2", 64, 64), ("conv2_1", 64, 128), ("conv2_2", 128, 128),
           ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256), ("conv3_4", 256, 256),
           ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3_CPM", 512, 256), ("conv4_4_CPM", 256, 128)]
    layers = [(n, i, o, 3, True) for n, i, o in vgg]
    for b, out in ((1, 38), (2, 19)):
        layers += [(f"conv5_{j}_CPM_L{b}", 128, 128, 3, True) for j in (1, 2, 3)]
        layers += [(f"conv5_4_CPM_L{b}", 128, 512, 1, True), (f"conv5_5_CPM_L{b}", 512, out, 1, False)]
    for t in range(2, 7):
        for b, out in ((1, 38), (2, 19)):
            layers += [(f"Mconv1_stage{t}_L{b}", 185, 128, 7, True)]
            layers += [(f"Mconv{j}_stage{t}_L{b}", 128, 128, 7, True) for j in (2, 3, 4, 5)]
            layers += [(f"Mconv6_stage{t}_L{b}", 128, 128, 1, True), (f"Mconv7_stage{t}_L{b}", 128, out, 1, False)]
    return layers


def fake_cmu_state(seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, cin, cout, k, _ in cmu_layers():
        state[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g) * (2.0 / (cin * k * k)) ** 0.5
        state[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.1
    return state


def cmu_forward(state, x):
    """Plain functional CMU network straight from the CMU-named tensors."""
    spec = {n: (k, relu) for n, _, _, k, relu in cmu_layers()}

    def conv(name, x):
        k, relu = spec[name]
        y = F.conv2d(x, state[f"{name}.weight"], state[f"{name}.bias"], padding=k // 2)
        return F.relu(y) if relu else y

    for name in ("conv1_1", "conv1_2", "pool", "conv2_1", "conv2_2", "pool", "conv3_1", "conv3_2", "conv3_3",
                 "conv3_4", "pool", "conv4_1", "conv4_2", "conv4_3_CPM", "conv4_4_CPM"):
        x = F.max_pool2d(x, 2, 2) if name == "pool" else conv(name, x)
    feat = x
    outs = []
    for t in range(1, 7):
        inp = feat if t == 1 else torch.cat([outs[-1][0], outs[-1][1], feat], 1)
        branch = []
        for b in (1, 2):
            y = inp
            names = [f"conv5_{j}_CPM_L{b}" for j in range(1, 6)] if t == 1 else \
                [f"Mconv{j}_stage{t}_L{b}" for j in range(1, 8)]
            for name in names:
                y = conv(name, y)
            branch.append(y)
        outs.append(branch)
    return torch.stack([o[0] for o in outs], 1), torch.stack([o[1] for o in outs], 1)


def test_convert_cmu_state_dict_places_every_tensor(paper_model):
    state = fake_cmu_state()
    assert len(state) == 2 * len(cmu_layer_names(paper_model)) == 2 * (12 + 10 + 5 * 14)
    converted = convert_cmu_state_dict(state)
    assert set(converted) == set(paper_model.state_dict())
    paper_model.load_state_dict(converted, strict=True)
    by_name = dict(paper_model.named_parameters())
    # spot checks of the hand-derived placement, then every tensor through the module path
    assert torch.equal(by_name["vgg.21.weight"], state["conv4_2.weight"])
    assert torch.equal(by_name["cpm.2.bias"], state["conv4_4_CPM.bias"])
    assert torch.equal(by_name["stages.0.paf.8.weight"], state["conv5_5_CPM_L1.weight"])
    assert torch.equal(by_name["stages.5.heat.12.bias"], state["Mconv7_stage6_L2.bias"])
    assert torch.equal(by_name["stages.2.paf.0.weight"], state["Mconv1_stage3_L1.weight"])
    for cmu, ours in cmu_layer_names(paper_model):
        assert torch.equal(by_name[f"{ours}.weight"], state[f"{cmu}.weight"])

    x = torch.randn(1, 3, 48, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = paper_model.forward_normalized(x), cmu_forward(state, x)
    for a, b in zip(got, want):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


def test_convert_cmu_prefixes_and_errors():
    state = fake_cmu_state()
    prefixed = {("model0." if k.startswith("conv") and "CPM_L" not in k else "model1_1.") + k: v
                for k, v in state.items()}
    assert set(convert_cmu_state_dict(prefixed)) == set(convert_cmu_state_dict(state))
    broken = dict(state)
    del broken["Mconv3_stage4_L2.bias"]
    broken["conv6_1.weight"] = torch.zeros(1)
    broken["conv1_1.weight"] = torch.zeros(64, 3, 5, 5)
    with pytest.raises(ValueError) as err:
        convert_cmu_state_dict(broken)
    msg = str(err.value)
    assert "Mconv3_stage4_L2.bias" in msg and "conv6_1.weight" in msg and "conv1_1.weight: (64, 3, 5, 5)" in msg


def test_vgg19_weights_from_local_file(tmp_path):
    g = torch.Generator().manual_seed(3)
    ref = OpenPose(num_stages=1)
    state = {f"features.{i}.{s}": torch.randn(p.shape, generator=g)
             for i, layer in enumerate(ref.vgg) if isinstance(layer, torch.nn.Conv2d)
             for s, p in (("weight", layer.weight), ("bias", layer.bias))}
    state["features.23.weight"] = torch.zeros(512, 512, 3, 3)  # conv4_3: not part of the trunk
    state["classifier.0.weight"] = torch.zeros(4, 4)
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    m = openpose_vgg19(pretrained=str(path), num_stages=1)
    assert m.weights_source == "file" and m.normalization == "imagenet"
    assert torch.equal(m.vgg[0].weight, state["features.0.weight"])
    assert torch.equal(m.vgg[21].bias, state["features.21.bias"])
    with pytest.raises(FileNotFoundError):
        openpose_vgg19(pretrained=str(tmp_path / "missing.pth"), num_stages=1)
    torch.save({"features.0.weight": state["features.0.weight"]}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="missing"):
        openpose_vgg19(pretrained=str(tmp_path / "partial.pth"), num_stages=1)
