"""Input normalisation carried by the model itself, so a checkpoint or an ONNX graph takes RGB
in [0, 1] whatever statistics the model was trained with."""
from __future__ import annotations

import torch

__all__ = ["attach_normalization"]


def attach_normalization(model: torch.nn.Module, mean, std) -> torch.nn.Module:
    """Make `model` see (x - mean) / std for its [0, 1] input, inside its own forward: a model
    with `pixel_mean`/`pixel_std` buffers (the MobileNetV2 regressor) gets them replaced; any other
    gets such buffers plus a forward pre-hook. Checkpoints and ONNX graphs then carry it."""
    mean_t = torch.tensor([float(v) for v in mean]).view(1, 3, 1, 1)
    std_t = torch.tensor([float(v) for v in std]).view(1, 3, 1, 1)
    own = getattr(model, "pixel_mean", None)
    if torch.is_tensor(own) and torch.is_tensor(getattr(model, "pixel_std", None)) and own.numel() == 3:
        with torch.no_grad():
            model.pixel_mean.copy_(mean_t.view_as(model.pixel_mean))
            model.pixel_std.copy_(std_t.view_as(model.pixel_std))
        return model
    model.register_buffer("pixel_mean", mean_t)
    model.register_buffer("pixel_std", std_t)
    model.register_forward_pre_hook(_normalize_input)
    return model


def _normalize_input(module, args):
    x = args[0]
    return ((x - module.pixel_mean.to(x.dtype)) / module.pixel_std.to(x.dtype), *args[1:])
