"""Factorized Spatial Embeddings (Thewlis, Bilen, Vedaldi, ICCV 2017): the landmark network Phi.

Six 5x5 VALID convolutions (20, 48, 64, 80, 256, K channels; no bias, N(0, 0.02) init), each
followed by BatchNorm (TF decay 0.9 -> PyTorch momentum 0.1, eps 1e-3) and ReLU, the last
one included, so the scores are >= 0 before the spatial softmax (as in the reference); a 2x2
max-pool follows layer 1 only. 128 -> 124 -> 62 -> 58 -> 54 -> 50 -> 46 -> 42: K score maps
of 42x42. 794,452 trainable parameters at K = 8, 948,100 at K = 32.

The network takes RGB floats in [0, 1] and maps them to the reference's [-1, 1] itself.
`forward` returns raw score maps; `posekit.codecs.landmarks` turns them into distributions
and keypoints. Weight decay (5e-4 on the filters only in the reference) belongs to the
optimiser: `param_groups` separates the filters from the BatchNorm parameters.

`cell_centers` gives, for each output cell, the centre of its receptive field in input pixels
(pixel centres at integer coordinates), computed from the layer stack: cell i sits at
stride * i + offset (2 i + 22.5 for this network).
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn as nn

from posekit.models.registry import register_model

__all__ = ["FSENet", "cell_centers", "stack_geometry", "fse", "fse_small", "FSE_CHANNELS"]

FSE_CHANNELS = (20, 48, 64, 80, 256)  # hidden widths; the last layer has K channels
KERNEL = 5
BN_MOMENTUM = 0.1  # TF decay 0.9
BN_EPS = 1e-3


class FSENet(nn.Module):
    """The FSE landmark CNN: images (B, 3, S, S) in [0, 1] -> raw scores (B, K, m, m), m = (S - 4) // 2 - 20."""

    def __init__(self, *, num_landmarks: int = 8, channels: tuple[int, ...] = FSE_CHANNELS, input_size: int = 128,
                 in_channels: int = 3, normalize_input: bool = True):
        super().__init__()
        if num_landmarks < 1:
            raise ValueError(f"num_landmarks must be >= 1, got {num_landmarks}")
        if len(channels) != 5:
            raise ValueError(f"FSE has 5 hidden conv layers; channels must have 5 widths, got {channels}")
        layers: list[nn.Module] = []
        widths = (in_channels, *channels, num_landmarks)
        for i in range(6):
            conv = nn.Conv2d(widths[i], widths[i + 1], KERNEL, bias=False)
            nn.init.normal_(conv.weight, 0.0, 0.02)
            layers += [conv, nn.BatchNorm2d(widths[i + 1], eps=BN_EPS, momentum=BN_MOMENTUM), nn.ReLU(inplace=True)]
            if i == 0:
                layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.num_landmarks = num_landmarks
        self.input_size = int(input_size)
        self.normalize_input = normalize_input
        self.map_size = output_size(self.features, self.input_size)
        if self.map_size < 1:
            raise ValueError(f"input_size {input_size} is too small for the FSE stack (needs >= 46)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize_input:
            x = x * 2 - 1
        return self.features(x)

    def cell_centers(self, map_size: int | None = None) -> torch.Tensor:
        """(m*m, 2) receptive-field centres (x, y) in input pixels, row-major like the flattened maps."""
        stride, offset = stack_geometry(self.features)
        return _grid_centers(map_size or self.map_size, stride, offset)

    def param_groups(self, weight_decay: float = 5e-4) -> list[dict]:
        """Optimiser groups: decay on the conv filters only, as the reference's 5e-4 * sum(||W||^2 / 2)
        (torch Adam's coupled weight_decay adds exactly wd * W to the gradient)."""
        filters = [m.weight for m in self.modules() if isinstance(m, nn.Conv2d)]
        ids = {id(p) for p in filters}
        others = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": filters, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]


def _layer_params(module: nn.Module):
    """(kernel, stride, padding, dilation) along one axis of a conv/pool layer, or None for pointwise layers."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        def first(v):
            return int(v[0] if isinstance(v, (tuple, list)) else v)
        dilation = first(getattr(module, "dilation", 1))
        if isinstance(module, nn.MaxPool2d) and module.ceil_mode:
            raise ValueError("ceil_mode pooling is not supported by the geometry helper")
        return first(module.kernel_size), first(module.stride), first(module.padding), dilation
    if isinstance(module, (nn.BatchNorm2d, nn.ReLU, nn.Identity, nn.Dropout, nn.Dropout2d)):
        return None
    raise TypeError(f"stack_geometry does not know how {type(module).__name__} moves pixels")


def stack_geometry(layers) -> tuple[float, float]:
    """(stride, offset) such that output cell i's receptive field is centred on input pixel stride * i + offset.

    A layer with kernel k, stride s, padding p, dilation d centres output i on s * i - p + d (k - 1) / 2
    of its input; composing layers from the input side accumulates offset += step * that, step *= s."""
    stride, offset = 1.0, 0.0
    for module in layers:
        params = _layer_params(module)
        if params is None:
            continue
        k, s, p, d = params
        offset += stride * (d * (k - 1) / 2 - p)
        stride *= s
    return stride, offset


def output_size(layers, size: int) -> int:
    for module in layers:
        params = _layer_params(module)
        if params is not None:
            k, s, p, d = params
            size = (size + 2 * p - d * (k - 1) - 1) // s + 1
    return size


def _grid_centers(map_size: int | tuple[int, int], stride: float, offset: float) -> torch.Tensor:
    h, w = (map_size, map_size) if isinstance(map_size, int) else map_size
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([xs, ys], -1).reshape(-1, 2) * stride + offset


@lru_cache(maxsize=1)
def _default_geometry() -> tuple[float, float]:
    # channel widths do not move pixels; a 1-channel stack is enough to read the geometry
    return stack_geometry(FSENet(num_landmarks=1, channels=(1, 1, 1, 1, 1)).features)


def cell_centers(map_size: int | tuple[int, int] = 42, *, model: FSENet | None = None) -> torch.Tensor:
    """(H*W, 2) float32 (x, y) input-pixel centres of the receptive fields of an FSE score map's cells,
    row-major (index = row * W + col) like `scores.flatten(2)`; `model` reads another stack's geometry."""
    stride, offset = stack_geometry(model.features) if model is not None else _default_geometry()
    return _grid_centers(map_size, stride, offset)


@register_model(family="fse", skeleton="landmarks", input_size=(3, 128, 128))
def fse(*, num_landmarks: int = 8, input_size: int = 128) -> FSENet:
    """Factorized Spatial Embeddings landmark net (Thewlis et al. 2017), K score maps of 42x42 at 128x128."""
    return FSENet(num_landmarks=num_landmarks, input_size=input_size)


@register_model(family="fse", skeleton="landmarks", input_size=(3, 128, 128))
def fse_small(*, num_landmarks: int = 8, input_size: int = 128) -> FSENet:
    """Narrow FSE (8-16-16-16-32 channels) with the same geometry, for fast tests and demos."""
    return FSENet(num_landmarks=num_landmarks, channels=(8, 16, 16, 16, 32), input_size=input_size)
