"""FSE landmark network: parameter counts, geometry, receptive-field centres, registry."""
import pytest
import torch
import torch.nn as nn

from posekit.models import count_parameters, create_model, list_models
from posekit.models.fse import FSENet, cell_centers, stack_geometry


def test_parameter_counts_match_the_reference():
    for k, expected in ((8, 794_452), (32, 948_100)):
        model = create_model("fse", num_landmarks=k)
        assert count_parameters(model) == (expected, expected)
    bn_stats = sum(b.numel() for n, b in create_model("fse").named_buffers() if "running" in n)
    assert bn_stats == 952


def test_layers_follow_the_reference():
    model = create_model("fse")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [c.out_channels for c in convs] == [20, 48, 64, 80, 256, 8]
    assert all(c.bias is None and c.kernel_size == (5, 5) and c.padding == (0, 0) for c in convs)
    assert all(b.momentum == pytest.approx(0.1) and b.eps == pytest.approx(1e-3) for b in bns)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 1
    assert isinstance(model.features[3], nn.MaxPool2d)  # right after conv1 -> BN -> ReLU
    big = convs[4].weight.detach()  # 512,000 draws: the N(0, 0.02) init is measurable
    assert abs(float(big.std()) - 0.02) < 0.0005 and abs(float(big.mean())) < 0.0005
    groups = model.param_groups(5e-4)
    assert len(groups[0]["params"]) == 6 and groups[0]["weight_decay"] == 5e-4
    assert sum(p.numel() for g in groups for p in g["params"]) == 794_452


def test_forward_shape_and_non_negative_scores():
    model = create_model("fse_small", num_landmarks=5)
    out = model(torch.rand(2, 3, 128, 128))
    assert out.shape == (2, 5, 42, 42) and model.map_size == 42
    assert (out >= 0).all()  # the last layer has BN + ReLU too, as in the reference
    assert create_model("fse", num_landmarks=3, input_size=96).map_size == 26  # 92, 46, then -4 five times
    with pytest.raises(ValueError, match="too small"):
        FSENet(input_size=36)


def test_cell_centres_from_the_layer_stack():
    stride, offset = stack_geometry(create_model("fse").features)
    assert (stride, offset) == (2.0, 22.5)
    c = cell_centers(42)
    assert c.shape == (42 * 42, 2)
    assert torch.allclose(c[0], torch.tensor([22.5, 22.5]))
    assert torch.allclose(c[1], torch.tensor([24.5, 22.5]))  # row-major: x moves first
    assert torch.allclose(c[42], torch.tensor([22.5, 24.5]))
    assert torch.allclose(c[-1], torch.tensor([104.5, 104.5]))  # symmetric about the 128 image centre 63.5
    # padding and strides are honoured by the generic helper
    assert stack_geometry([nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, stride=2)]) == (2.0, 1.0)


def test_cell_centres_match_empirical_receptive_fields():
    torch.manual_seed(0)
    model = FSENet(num_landmarks=2, channels=(2, 3, 3, 3, 3), input_size=64).eval()
    # positive weights + positive inputs: every ReLU is active, so gradients reach the whole field
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.abs_()
    m = model.map_size
    centres = model.cell_centers().reshape(m, m, 2)
    for i, j in ((0, 0), (3, 7), (m - 1, m - 2)):
        support = torch.zeros(64, 64, dtype=torch.bool)
        for _ in range(6):  # max-pool routes through one pixel of four; a few inputs cover the whole field
            x = (torch.rand(1, 3, 64, 64) + 0.1).requires_grad_()
            model(x)[0, :, i, j].sum().backward()
            support |= x.grad[0].abs().sum(0) > 0
        ys, xs = torch.nonzero(support, as_tuple=True)
        assert int(xs.max() - xs.min()) + 1 == 46  # receptive field 46 px wide
        empirical = torch.tensor([(xs.min() + xs.max()) / 2.0, (ys.min() + ys.max()) / 2.0])
        assert torch.allclose(empirical, centres[i, j]), (i, j, empirical, centres[i, j])


def test_registry_entries():
    assert {"fse", "fse_small"} <= set(list_models(family="fse"))
    with pytest.raises(TypeError, match="unknown argument"):
        create_model("fse", landmarks=8)
