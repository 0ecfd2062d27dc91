"""Stacked Hourglass architecture: exact parameter counts, shapes, options, clear errors."""
import pytest
import torch
import torch.nn as nn

from posekit.models import count_parameters, create_model, get_entry, list_models
from posekit.models.hourglass import Residual, StackedHourglass


@pytest.mark.parametrize("name, expected", [("hourglass8", 25_434_112), ("hourglass4", 12_858_304)])
def test_exact_parameter_counts(name, expected):
    total, trainable = count_parameters(create_model(name))
    assert total == expected and trainable == expected


def test_registered_with_family_and_skeleton():
    names = list_models("hourglass")
    assert {"hourglass8", "hourglass4", "hourglass2_small"} <= set(names)
    entry = get_entry("hourglass8")
    assert entry.skeleton == "mpii16" and entry.input_size == (3, 256, 256)
    assert get_entry("hourglass2_small").input_size == (3, 128, 128)


def test_small_forward_backward_all_stacks():
    model = create_model("hourglass2_small")
    x = torch.rand(2, 3, 128, 128)
    out = model(x)
    assert out.shape == (2, 2, 16, 32, 32)
    out[:, 0].sum().backward()  # intermediate supervision reaches the stem through stack 0
    assert model.stem[0].weight.grad is not None and model.stem[0].weight.grad.abs().sum() > 0
    # the last stack's head gets no gradient from stack 0's output
    assert model.heads[1].weight.grad is None or model.heads[1].weight.grad.abs().sum() == 0


def test_residual_is_preactivation_bottleneck():
    block = Residual(64, 128)
    convs = [m for m in block.body if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(1, 1), (3, 3), (1, 1)]
    assert [c.out_channels for c in convs] == [64, 64, 128]
    assert isinstance(block.body[0], nn.BatchNorm2d)  # BN-ReLU before every conv
    assert isinstance(block.skip, nn.Conv2d)  # width change -> 1x1 skip
    assert isinstance(Residual(64, 64).skip, nn.Identity)


def test_tiny_variant_fewer_layers_more_parameters():
    regular = StackedHourglass(n_stacks=2, n_feats=64, n_low=3)
    tiny = StackedHourglass(n_stacks=2, n_feats=64, n_low=3, tiny=True)
    n_conv = lambda m: sum(isinstance(x, nn.Conv2d) for x in m.modules())  # noqa: E731
    assert n_conv(tiny) < n_conv(regular)
    assert count_parameters(tiny)[0] > count_parameters(regular)[0]  # 3x3 at full width, as the spec notes
    assert len(tiny.stem) == len(regular.stem) - 1  # the stem's middle residual is dropped
    assert tiny(torch.rand(1, 3, 128, 128)).shape == (1, 2, 16, 32, 32)


def test_depth_option_and_input_size_check():
    model = StackedHourglass(n_stacks=1, n_feats=32, n_low=5).eval()  # the TF reference's off-by-one depth
    assert model(torch.rand(1, 3, 128, 128)).shape == (1, 1, 16, 32, 32)
    with pytest.raises(ValueError, match="divisible by 128"):
        model(torch.rand(1, 3, 96, 96))


def test_dropout_and_bad_arguments():
    model = create_model("hourglass2_small", dropout=0.2)
    assert any(isinstance(m, nn.Dropout) and m.p == 0.2 for m in model.modules())
    with pytest.raises(ValueError, match="dropout"):
        create_model("hourglass2_small", dropout=1.5)
    with pytest.raises(TypeError, match="unknown argument"):
        create_model("hourglass2_small", n_stack=3)
