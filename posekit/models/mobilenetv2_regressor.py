"""MobileNetV2 + separable-convolution head regressing 24 dog keypoints (keras-io keypoint_detection).

Architecture (at a 224x224 input): torchvision MobileNetV2 `features` (width 1.0, 7x7x1280)
-> Dropout(0.3) -> separable conv 5x5 valid (depthwise over 1280 channels without bias,
pointwise 1280->48 with bias, ReLU; 3x3x48) -> separable conv 3x3 valid (48->48, sigmoid;
1x1x48) -> 24 (x, y) pairs in [0, 1] of the input. 2,320,144 parameters, 96,272 of them in the
head (Keras reports 2,354,256 because it also counts BatchNorm running statistics).

Other input sizes: the head needs a 7x7 feature grid, so any other grid is bilinearly resized
to 7x7 first (no parameters; identity at 224x224).

The model takes RGB float images in [0, 1] and normalises them itself with buffers that match
the backbone weights' convention (ImageNet mean/std for torchvision weights, x*2-1 for Keras
weights), so the convention travels with the checkpoint.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from posekit.models.openpose import load_state_file
from posekit.models.registry import online, register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEAD_GRID = 7  # the feature grid the head's two valid convolutions reduce to 1x1


class SeparableConv2d(nn.Sequential):
    """Keras SeparableConv2D: depthwise k x k (no bias) then pointwise 1x1 (with bias), 'valid' padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=True)


class MobileNetV2KeypointRegressor(nn.Module):
    """Backbone features -> separable-conv head -> (B, K, 2) normalised coordinates in [0, 1].

    Transfer learning: with `backbone_frozen` the backbone runs without gradients and its
    BatchNorm layers stay in inference mode even under `model.train()` (as a frozen Keras
    model does); `unfreeze_backbone()` starts the fine-tune phase. `unfreeze_at_step` records
    when the task's `on_step` hook should call it.
    """

    def __init__(self, *, num_keypoints: int = 24, width_mult: float = 1.0, dropout: float = 0.3,
                 normalization: str = "imagenet", freeze_backbone: bool = False,
                 unfreeze_at_step: int | None = None, finetune_bn_eval: bool = True):
        super().__init__()
        from torchvision.models import mobilenet_v2

        if normalization not in ("imagenet", "tf"):
            raise ValueError(f"normalization must be 'imagenet' (torchvision weights) or 'tf' (x*2-1, Keras "
                             f"weights), got {normalization!r}")
        self.num_keypoints = num_keypoints
        self.backbone = mobilenet_v2(weights=None, width_mult=width_mult).features
        feat = self.backbone[-1][0].out_channels  # 1280 at width 1.0
        out = 2 * num_keypoints
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            SeparableConv2d(feat, out, 5), nn.ReLU(inplace=True),
            SeparableConv2d(out, out, 3), nn.Sigmoid(),
        )
        if normalization == "imagenet":
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1))
        self.normalization = normalization
        self.unfreeze_at_step = unfreeze_at_step
        self.finetune_bn_eval = finetune_bn_eval
        self.backbone_frozen = False
        self.finetuning = False  # True once a frozen backbone has been unfrozen
        if freeze_backbone:
            self.freeze_backbone()

    # --- transfer-learning phases ----------------------------------------------------------
    def freeze_backbone(self) -> None:
        self.backbone_frozen = True
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.train(self.training)

    def defer_unfreeze(self) -> None:
        """Keep the backbone frozen (run under no_grad, BatchNorm in eval) but mark its parameters
        trainable, so an optimiser built now already holds them (at their lr_mult) and starts
        updating them as soon as `unfreeze_backbone()` lets gradients through."""
        if not self.backbone_frozen:
            return
        for p in self.backbone.parameters():
            p.requires_grad_(True)

    def unfreeze_backbone(self) -> None:
        """Fine-tune phase: backbone weights train; BatchNorm statistics stay frozen when
        `finetune_bn_eval` (the usual advice for small fine-tuning batches)."""
        if self.backbone_frozen:
            self.finetuning = True
        self.backbone_frozen = False
        for p in self.backbone.parameters():
            p.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and (self.backbone_frozen or (self.finetuning and self.finetune_bn_eval)):
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    # --- forward ----------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) RGB in [0, 1] -> (B, K, 2) (x, y) as fractions of W and H."""
        x = (images - self.pixel_mean) / self.pixel_std
        if self.backbone_frozen:
            with torch.no_grad():  # no gradients, hence no updates, whatever the optimiser holds
                x = self.backbone(x)
        else:
            x = self.backbone(x)
        if x.shape[-2:] != (HEAD_GRID, HEAD_GRID):
            x = F.interpolate(x, size=(HEAD_GRID, HEAD_GRID), mode="bilinear", align_corners=False)
        x = self.head(x)  # (B, 2K, 1, 1), channels ordered x0, y0, x1, y1, ...
        return x.flatten(1).view(x.shape[0], self.num_keypoints, 2)


# --- backbone weights ---------------------------------------------------------------------------
def _imagenet_weights_entry():
    from torchvision.models import MobileNet_V2_Weights
    return MobileNet_V2_Weights.IMAGENET1K_V1


def _cached_imagenet_file() -> Path:
    """Where torchvision's MobileNetV2 ImageNet file is cached: the `posekit weights` cache
    ($POSEKIT_HOME/weights, else $TORCH_HOME/hub/checkpoints, where torchvision itself looks)."""
    from posekit.models.weights import download_path, get_weights
    return download_path(get_weights("dogs_mobilenetv2.imagenet"))


def _strip_to_features(state: dict, source: str) -> dict:
    """Accept a full torchvision mobilenet_v2 state dict, a features-only one, or a posekit
    dogs checkpoint; return the `features` keys without prefix."""
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not state:
        raise ValueError(f"backbone weights {source}: expected a state dict, got {type(state).__name__}")
    out = {}
    for key, value in state.items():
        k = key[len("module."):] if key.startswith("module.") else key
        for prefix in ("features.", "backbone."):
            if k.startswith(prefix):
                out[k[len(prefix):]] = value
                break
        else:
            if k.split(".")[0].isdigit():
                out[k] = value
    if not out:
        raise ValueError(f"backbone weights {source}: no MobileNetV2 feature tensors found (keys like "
                         f"'features.0.0.weight'); first keys: {list(state)[:5]}")
    return out


def load_backbone_weights(model: MobileNetV2KeypointRegressor, *, pretrained: bool = False,
                          backbone_weights: str | None = None) -> str:
    """Fill the backbone; returns where the weights came from ('file', 'cache', 'download', 'random').

    `backbone_weights` (a local state-dict path) wins over `pretrained`. `pretrained` uses the
    TORCH_HOME cache, then a download when the host is reachable; otherwise it warns and keeps
    the random init - it never raises inside a download.
    """
    if backbone_weights:
        path = Path(backbone_weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"backbone_weights file not found: {path}")
        state = load_state_file(path, "backbone_weights")
        _load_features(model, _strip_to_features(state, str(path)), str(path))
        return "file"
    if not pretrained:
        return "random"
    cached = _cached_imagenet_file()
    if cached.is_file():
        state = load_state_file(cached, "cached ImageNet backbone weights")
        _load_features(model, _strip_to_features(state, str(cached)), str(cached))
        return "cache"
    if online():
        try:
            state = _imagenet_weights_entry().get_state_dict(progress=False, model_dir=str(cached.parent),
                                                             check_hash=True, weights_only=True)
            _load_features(model, _strip_to_features(state, "torchvision IMAGENET1K_V1"), "torchvision IMAGENET1K_V1")
            return "download"
        except Exception as e:  # network errors of every kind end in the same fallback
            reason = f"download failed ({type(e).__name__}: {e})"
    else:
        reason = "no network"
    from posekit.models.weights import get_weights, offline_message
    warnings.warn(f"dogs_mobilenetv2: pretrained=True but {offline_message(get_weights('dogs_mobilenetv2.imagenet'), reason)}"
                  "; until then the backbone keeps its RANDOM initialisation (or pass backbone_weights=PATH).",
                  RuntimeWarning, stacklevel=3)
    return "random"


def _load_features(model: MobileNetV2KeypointRegressor, state: dict, source: str) -> None:
    try:
        result = model.backbone.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        first = str(e).strip().splitlines()[1:2] or [str(e)[:200]]
        raise ValueError(f"backbone weights {source} do not match this MobileNetV2 (width_mult?): {first[0].strip()}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"backbone weights {source} do not match this MobileNetV2 (width_mult?): "
                         f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")


@register_model(family="dogs", skeleton="stanford_extra24", input_size=(3, 224, 224), output="regression")
def dogs_mobilenetv2(*, num_keypoints: int = 24, width_mult: float = 1.0, dropout: float = 0.3,
                     pretrained: bool = False, backbone_weights: str | None = None,
                     normalization: str = "imagenet", freeze_backbone: bool = False,
                     unfreeze_at_step: int | None = None, finetune_bn_eval: bool = True) -> MobileNetV2KeypointRegressor:
    """MobileNetV2 features + separable-conv head regressing dog keypoints (keras-io keypoint_detection)."""
    model = MobileNetV2KeypointRegressor(num_keypoints=num_keypoints, width_mult=width_mult, dropout=dropout,
                                 normalization=normalization, freeze_backbone=freeze_backbone,
                                 unfreeze_at_step=unfreeze_at_step, finetune_bn_eval=finetune_bn_eval)
    model.weights_source = load_backbone_weights(model, pretrained=pretrained, backbone_weights=backbone_weights)
    return model
