"""Every registered model: builds with defaults, runs forward at its declared input size, and its
parameter counts match what `posekit models` reports; builders are keyword-only."""
import pytest
import torch

from posekit.models import count_parameters, create_model, get_entry, list_models
from posekit.models.registry import register_model

SMALL = 6_000_000  # forward+backward at the declared input for models this size or less (CPU time)
# the papers' / references' exact counts (see each model card); every paper model is listed
EXPECTED_PARAMS = {"dogs_mobilenetv2": 2_320_144, "hourglass8": 25_434_112, "hourglass4": 12_858_304,
                   "gmh_mdn": 4_498_682, "openpose_vgg19": 52_311_446, "fse": 794_452}


def test_every_paper_model_is_registered():
    assert set(EXPECTED_PARAMS) <= set(list_models())


@pytest.mark.parametrize("name", list_models())
def test_build_and_forward(name):
    entry = get_entry(name)
    torch.manual_seed(0)
    model = create_model(name)
    total, trainable = count_parameters(model)
    assert total > 0 and 0 < trainable <= total
    if name in EXPECTED_PARAMS:
        assert total == EXPECTED_PARAMS[name]
    if total > SMALL:  # large: one no-grad forward of one small image (a multiple of 64 px)
        model.eval()
        shape = entry.input_size if len(entry.input_size) != 3 else (entry.input_size[0], 128, 128)
        with torch.no_grad():
            out = model(torch.randn(1, *shape))
        tensors = [t for t in (out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list))
                               else [out]) if isinstance(t, torch.Tensor)]
        assert tensors and all(torch.isfinite(t).all() for t in tensors)
        return
    x = torch.randn(2, *entry.input_size)
    model.train()
    out = model(x)
    tensors = [t for t in (out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else [out])
               if isinstance(t, torch.Tensor) and t.is_floating_point()]
    assert tensors and all(torch.isfinite(t).all() for t in tensors)
    sum(t.float().mean() for t in tensors).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_unknown_model_and_argument_errors():
    with pytest.raises(KeyError, match="unknown model 'hourglas4'.*Did you mean"):
        create_model("hourglas4")
    name = list_models()[0]
    with pytest.raises(TypeError, match="unknown argument"):
        create_model(name, definitely_not_an_argument=1)


def test_builders_must_be_keyword_only():
    with pytest.raises(TypeError, match="keyword-only"):
        @register_model(family="x", skeleton="coco17", input_size=(3, 8, 8))
        def positional_builder(width=1):  # pragma: no cover
            return torch.nn.Identity()


@pytest.mark.parametrize("name", ["hourglass2_small", "dogs_mobilenetv2"])
def test_registered_output_kind_is_what_the_model_returns(name):
    """`output=` is what lets the keypoints family decode any registered model (data.codec: auto)."""
    from posekit.models.registry import output_kind
    entry = get_entry(name)
    k = entry.signature().parameters["num_joints" if "num_joints" in entry.signature().parameters
                                     else "num_keypoints"].default
    with torch.no_grad():
        out = create_model(name).eval()(torch.rand(1, *entry.input_size))
    if output_kind(name) == "heatmap":  # (B, [stacks,] K, H, W) maps
        assert out.dim() in (4, 5) and out.shape[-3] == k
    else:  # (B, K, 2) coordinates in [0, 1] of the input
        assert output_kind(name) == "regression" and out.shape == (1, k, 2)


def test_output_kind_asks_for_a_codec_when_the_model_registered_none():
    from posekit.config import ConfigError
    from posekit.models.registry import model_table, output_kind
    assert output_kind("openpose_small", "heatmap") == "heatmap"  # data.codec set: the user's word
    with pytest.raises(ConfigError, match="model 'openpose_small' .*set data.codec=heatmap"):
        output_kind("openpose_small")
    assert {r["name"]: r["output"] for r in model_table("hourglass")}["hourglass8"] == "heatmap"
    with pytest.raises(ValueError, match="output='maps'; valid: heatmap, regression"):
        register_model(family="x", skeleton="coco17", input_size=(3, 8, 8), output="maps")
