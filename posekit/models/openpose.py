"""OpenPose body model (Cao et al., CVPR 2017, arXiv 1611.08050): VGG19 trunk + multi-stage PAF/heatmap CNN.

Layout of the paper/CMU COCO model (stride 8, 368x368 -> 46x46 maps), 52,311,446 parameters:

- `vgg`: VGG19 conv1_1 ... conv4_2 with ReLU, max-pools after conv1_2, conv2_2, conv3_4. The
  Sequential uses torchvision's `vgg19().features` indices 0..22, so ImageNet weights load by
  index (`features.21.weight` -> `vgg.21.weight`).
- `cpm`: conv4_3_CPM (512->256) and conv4_4_CPM (256->128), both 3x3 + ReLU; output F.
- `stages[0]`: two branches (PAF 38 ch, heatmaps 19 ch), each 3 x conv3x3(128) -> conv1x1(512)
  -> conv1x1(out).
- `stages[1:]`: input concat(PAF, heatmaps, F) (185 ch, PAF first); each branch 5 x conv7x7(128)
  -> conv1x1(128) -> conv1x1(out).
- Every conv has a bias and a ReLU except the last one of each branch.

The three attribute names double as parameter-group prefixes (`vgg.`, `cpm.`, `stages.`), so a
trainer can give the trunk its own learning rate (MindSpore: lr/4 for vgg and cpm).

`forward` takes posekit's image input (RGB in [0, 1]) and applies the weights' input convention,
`model.normalization`, inside the graph (`forward_normalized` skips it):

- "cmu": RGB->BGR, x/256 - 0.5 (CMU caffe model and its PyTorch conversions),
- "mindspore": RGB->BGR, x/255 - 0.5 (MindSpore training code),
- "imagenet": RGB, (x/255 - mean)/std (what torchvision's ImageNet VGG19 weights expect).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from posekit.models.registry import online, register_model

__all__ = [
    "NORMALIZATIONS",
    "OpenPose",
    "cmu_layer_names",
    "convert_cmu_state_dict",
    "load_vgg19_weights",
    "openpose_small",
    "openpose_vgg19",
]

NORMALIZATIONS = ("cmu", "mindspore", "imagenet")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# VGG19 up to conv4_2 ("M" = 2x2 max-pool); layer names as in the CMU prototxt
_VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512)
_VGG_NAMES = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv3_4",
              "conv4_1", "conv4_2")


def _conv_relu(in_ch: int, out_ch: int, kernel: int, norm: str) -> list[nn.Module]:
    """conv (same padding) -> [BatchNorm] -> ReLU; with BatchNorm the conv has no bias."""
    if norm == "batch":
        return [nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True)]
    return [nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2), nn.ReLU(inplace=True)]


def _branch(in_ch: int, width: int, kernel: int, n_convs: int, hidden: int, out_ch: int,
            norm: str = "none") -> nn.Sequential:
    """n_convs x conv(kernel, width) -> conv1x1(hidden) -> conv1x1(out_ch); ReLU after all but the last."""
    layers: list[nn.Module] = []
    c = in_ch
    for _ in range(n_convs):
        layers += _conv_relu(c, width, kernel, norm)
        c = width
    layers += [*_conv_relu(c, hidden, 1, norm), nn.Conv2d(hidden, out_ch, 1)]
    return nn.Sequential(*layers)


class PAFStage(nn.Module):
    """One stage: the PAF branch (CMU "L1") and the heatmap branch ("L2") read the same input."""

    def __init__(self, in_ch: int, *, width: int, kernel: int, n_convs: int, hidden: int, paf_ch: int, heat_ch: int,
                 norm: str = "none"):
        super().__init__()
        self.paf = _branch(in_ch, width, kernel, n_convs, hidden, paf_ch, norm)
        self.heat = _branch(in_ch, width, kernel, n_convs, hidden, heat_ch, norm)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.paf(x), self.heat(x)


class OpenPose(nn.Module):
    """Multi-stage PAF network. forward(x (B,3,H,W) normalised) -> (pafs (B,S,2L,H/8,W/8), heatmaps (B,S,K+1,H/8,W/8)).

    `backbone_width` scales every VGG/conv4_3_CPM channel count (1.0 = VGG19); `feature_channels`
    is F (conv4_4_CPM output); `width`, `refine_kernel`, `refine_convs` shape stages 2..S;
    `stage1_hidden` is stage 1's 1x1 width (512 in the paper). `norm="batch"` puts a BatchNorm
    after every hidden conv (not in the paper or CMU's weights: it makes a small model trained from
    scratch learn several times faster, which the CPU demo needs). Defaults give the paper model.
    """

    PARAM_GROUP_PREFIXES = ("vgg.", "cpm.", "stages.")

    def __init__(self, *, num_parts: int = 18, num_limbs: int = 19, width: int = 128, num_stages: int = 6,
                 backbone_width: float = 1.0, feature_channels: int = 128, stage1_hidden: int = 512,
                 refine_kernel: int = 7, refine_convs: int = 5, normalization: str = "cmu", norm: str = "none"):
        super().__init__()
        if norm not in ("none", "batch"):
            raise ValueError(f"norm must be 'none' or 'batch', got {norm!r}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        if num_stages < 1:
            raise ValueError(f"num_stages must be >= 1, got {num_stages}")
        if refine_kernel % 2 != 1:
            raise ValueError(f"refine_kernel must be odd (same padding), got {refine_kernel}")
        self.num_parts, self.num_limbs, self.num_stages = num_parts, num_limbs, num_stages
        self.paf_channels, self.heatmap_channels = 2 * num_limbs, num_parts + 1
        self.normalization, self.norm = normalization, norm
        self.stride = 8

        def scaled(c: int) -> int:
            return max(4, round(c * backbone_width))

        layers: list[nn.Module] = []
        c = 3
        for v in _VGG_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += _conv_relu(c, scaled(v), 3, norm)
                c = scaled(v)
        self.vgg = nn.Sequential(*layers)
        self.cpm = nn.Sequential(*_conv_relu(c, scaled(256), 3, norm), *_conv_relu(scaled(256), feature_channels, 3, norm))
        p, h = self.paf_channels, self.heatmap_channels
        stages = [PAFStage(feature_channels, width=width, kernel=3, n_convs=3, hidden=stage1_hidden,
                           paf_ch=p, heat_ch=h, norm=norm)]
        for _ in range(num_stages - 1):
            stages.append(PAFStage(feature_channels + p + h, width=width, kernel=refine_kernel, n_convs=refine_convs,
                                   hidden=width, paf_ch=p, heat_ch=h, norm=norm))
        self.stages = nn.ModuleList(stages)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He init for hidden convs; the last conv of each branch starts small (std 0.01, as the CMU
        prototxt fills all new layers) so every stage's initial output is near zero."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for stage in self.stages:
            for branch in (stage.paf, stage.heat):
                nn.init.normal_(branch[-1].weight, std=0.01)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB images in [0, 1] (B, 3, H, W), posekit's model input for every image family: the
        input convention of the weights (`normalization`) is applied here, inside the graph, so
        a checkpoint or an ONNX file carries it."""
        return self.forward_normalized(self.normalize(images * 255.0))

    def forward_normalized(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network on an already normalised input (CMU's own convention when converted)."""
        f = self.cpm(self.vgg(x))
        paf, heat = self.stages[0](f)
        pafs, heats = [paf], [heat]
        for stage in self.stages[1:]:
            paf, heat = stage(torch.cat([paf, heat, f], dim=1))
            pafs.append(paf)
            heats.append(heat)
        return torch.stack(pafs, dim=1), torch.stack(heats, dim=1)

    def normalize(self, images, *, channel_order: str = "rgb") -> torch.Tensor:
        """(…, 3, H, W) images with values 0..255 (uint8 or float, numpy or torch) -> normalised float
        tensor on the model's device, per `self.normalization`. `channel_order`: of the given images."""
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        x = torch.as_tensor(images)
        if x.dim() < 3 or x.shape[-3] != 3:
            raise ValueError(f"images must be (..., 3, H, W), got shape {tuple(x.shape)}")
        param = next(self.parameters(), None)
        device = param.device if param is not None and param.device.type != "meta" else x.device
        x = x.to(device=device, dtype=torch.float32)
        want = "rgb" if self.normalization == "imagenet" else "bgr"
        if want != channel_order:
            x = x.flip(-3)
        if self.normalization == "cmu":
            return x / 256.0 - 0.5
        if self.normalization == "mindspore":
            return x / 255.0 - 0.5
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(3, 1, 1)
        return (x / 255.0 - mean) / std

    def parameter_groups(self, lr: float, *, vgg_mult: float = 0.25, cpm_mult: float = 0.25) -> list[dict]:
        """Optimiser parameter groups {vgg, cpm, stages} with MindSpore's lr multipliers by default."""
        return [{"name": "vgg", "params": list(self.vgg.parameters()), "lr": lr * vgg_mult},
                {"name": "cpm", "params": list(self.cpm.parameters()), "lr": lr * cpm_mult},
                {"name": "stages", "params": list(self.stages.parameters()), "lr": lr}]


# --- CMU caffemodel (PyTorch conversion) <-> this model -------------------------------------------------
def _conv_modules(seq: nn.Sequential) -> list[str]:
    return [name for name, m in seq.named_children() if isinstance(m, nn.Conv2d)]


def cmu_layer_names(model: OpenPose) -> list[tuple[str, str]]:
    """(CMU layer name, this model's module path) for every conv, in network order.

    CMU: conv1_1..conv4_2, conv4_3_CPM, conv4_4_CPM; stage 1 conv5_{1..5}_CPM_L{1,2}; stage t>=2
    Mconv{1..7}_stage{t}_L{1,2}; L1 = PAF branch, L2 = heatmap branch.
    """
    pairs = [(n, f"vgg.{i}") for n, i in zip(_VGG_NAMES, _conv_modules(model.vgg))]
    pairs += [(n, f"cpm.{i}") for n, i in zip(("conv4_3_CPM", "conv4_4_CPM"), _conv_modules(model.cpm))]
    for t, stage in enumerate(model.stages, start=1):
        for branch, tag in (("paf", "L1"), ("heat", "L2")):
            convs = _conv_modules(getattr(stage, branch))
            for j, i in enumerate(convs, start=1):
                cmu = f"conv5_{j}_CPM_{tag}" if t == 1 else f"Mconv{j}_stage{t}_{tag}"
                pairs.append((cmu, f"stages.{t - 1}.{branch}.{i}"))
    return pairs


def convert_cmu_state_dict(state: dict, *, model: OpenPose | None = None) -> dict:
    """Rename a PyTorch conversion of CMU's COCO body model (keys `conv1_1.weight`, ...,
    `Mconv7_stage6_L2.bias`) to this model's state-dict keys.

    Any prefix before the layer name (`module.`, Hzzone's `model0.`/`model1_1.` blocks) is dropped.
    Checks against `model` (default: the paper architecture, built on the meta device) and raises
    ValueError listing every missing key, unexpected key and shape mismatch.
    """
    if model is None:
        with torch.device("meta"):
            model = OpenPose()
    if model.norm != "none":
        raise ValueError(f"CMU's weights have no normalisation layers; this model has norm={model.norm!r}")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    target = model.state_dict()
    rename = {}
    for cmu, ours in cmu_layer_names(model):
        for suffix in ("weight", "bias"):
            rename[f"{cmu}.{suffix}"] = f"{ours}.{suffix}"
    out, seen, unexpected, mismatched = {}, set(), [], []
    for key, value in state.items():
        short = ".".join(str(key).split(".")[-2:])
        ours = rename.get(short)
        if ours is None or short in seen:  # unknown, or a second copy under another prefix
            unexpected.append(str(key))
            continue
        seen.add(short)
        if tuple(value.shape) != tuple(target[ours].shape):
            mismatched.append(f"{key}: {tuple(value.shape)} vs {ours} {tuple(target[ours].shape)}")
            continue
        out[ours] = value
    missing = [cmu for cmu in rename if cmu not in seen]
    if missing or unexpected or mismatched:
        raise ValueError("CMU state dict does not match this OpenPose model: "
                         f"missing {missing}, unexpected {unexpected}, shape mismatches {mismatched}")
    return out


# --- ImageNet VGG19 weights ------------------------------------------------------------------------------
def _vgg_features_only(state: dict, source: str, model: OpenPose) -> dict:
    """Keep VGG conv tensors up to conv4_2 from a torchvision vgg19 state dict (`features.N.*`), a
    features-only one (`N.*`) or a posekit one (`vgg.N.*`)."""
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    wanted = {f"{i}.{s}" for i in _conv_modules(model.vgg) for s in ("weight", "bias")}
    out = {}
    for key, value in state.items():
        k = key.removeprefix("module.")
        for prefix in ("features.", "vgg."):
            if k.startswith(prefix):
                k = k[len(prefix):]
                break
        if k in wanted:
            out[k] = value
    if set(out) != wanted:
        raise ValueError(f"VGG19 weights {source}: missing {sorted(wanted - set(out))[:6]} "
                         f"(expected torchvision vgg19 keys like 'features.0.weight'); first keys: {list(state)[:5]}")
    return out


def load_state_file(path: str | Path, what: str) -> dict:
    """A state dict (name -> tensor, or a checkpoint holding one under "model") from a local file,
    loaded with weights_only; anything else is one ValueError saying what the file holds."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated, or pickled objects beyond tensors
        raise ValueError(f"{what} {path}: cannot read it as a state dict ({type(e).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        held = (f"a bare tensor of shape {tuple(state.shape)}" if isinstance(state, torch.Tensor)
                else f"a {type(state).__name__} of {len(state)} items" if isinstance(state, (list, tuple))
                else "a mapping whose values are not all tensors" if isinstance(state, dict)
                else f"a {type(state).__name__}")
        raise ValueError(f"{what} {path}: not a state dict (name -> tensor): it holds {held}")
    return state


def load_vgg19_weights(model: OpenPose, pretrained: str) -> str:
    """Fill `model.vgg` from a local torchvision VGG19 state-dict path, or "imagenet" (TORCH_HOME cache,
    then torchvision's download when online; otherwise a warning and random init). Returns the source."""
    if model.norm != "none":
        raise ValueError(f"torchvision's VGG19 weights fit the plain trunk only; this model has norm={model.norm!r}")
    if pretrained != "imagenet":
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"VGG19 weights file not found: {path} (or pass pretrained='imagenet')")
        state = load_state_file(path, "VGG19 weights")
        source = "file"
    else:
        from torchvision.models import VGG19_Weights

        from posekit.models.weights import cache_dir, download_path, get_weights, offline_message
        entry = VGG19_Weights.IMAGENET1K_V1
        listed = get_weights("openpose_vgg19.imagenet")  # the same cache and message as `posekit weights`
        cached = download_path(listed)
        if cached.is_file():
            state, source, path = load_state_file(cached, "VGG19 weights"), "cache", cached
        elif online():
            state = entry.get_state_dict(progress=False, model_dir=str(cache_dir()), check_hash=True,
                                         weights_only=True)
            source, path = "download", entry.url
        else:
            warnings.warn(f"openpose: {offline_message(listed, 'no network')}; until then the trunk keeps its "
                          "RANDOM initialisation (or pass pretrained=PATH).", RuntimeWarning, stacklevel=3)
            return "random"
    try:
        model.vgg.load_state_dict(_vgg_features_only(state, str(path), model), strict=True)
    except RuntimeError as e:
        raise ValueError(f"VGG19 weights {path} do not fit this trunk (backbone_width != 1?): "
                         f"{str(e).strip().splitlines()[-1]}") from None
    return source


@register_model(family="openpose", skeleton="openpose18", input_size=(3, 368, 368))
def openpose_vgg19(*, num_stages: int = 6, width: int = 128, pretrained: str | None = None,
                   cmu_weights: str | None = None, normalization: str | None = None) -> OpenPose:
    """OpenPose (Cao et al. 2017) COCO body model: VGG19 trunk + 6 PAF/heatmap stages, 52.3 M parameters.

    pretrained: a local torchvision VGG19 state-dict path, or "imagenet" (torchvision's weights
    mechanism, only when online or cached). cmu_weights: a local PyTorch conversion of CMU's COCO
    body model (see `convert_cmu_state_dict`). normalization defaults to "imagenet" with
    `pretrained`, else "cmu".
    """
    if normalization is None:
        normalization = "imagenet" if pretrained and not cmu_weights else "cmu"
    model = OpenPose(num_stages=num_stages, width=width, normalization=normalization)
    model.weights_source = "random"
    if pretrained:
        model.weights_source = load_vgg19_weights(model, pretrained)
    if cmu_weights:
        path = Path(cmu_weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"CMU weights file not found: {path}")
        state = load_state_file(path, "CMU weights")
        model.load_state_dict(convert_cmu_state_dict(state, model=model), strict=True)
        model.weights_source = "cmu"
    return model


@register_model(family="openpose", skeleton="openpose18", input_size=(3, 184, 184))
def openpose_small(*, num_stages: int = 3, width: int = 32, backbone_width: float = 0.25,
                   feature_channels: int = 32, refine_kernel: int = 3,
                   normalization: str = "mindspore", norm: str = "none") -> OpenPose:
    """Small OpenPose for tests and CPU demos: quarter-width VGG-like trunk, 3 stages of 32-ch 3x3 convs
    (782k parameters; norm="batch" adds BatchNorm after every hidden conv, as the demo trains it)."""
    return OpenPose(num_stages=num_stages, width=width, backbone_width=backbone_width,
                    feature_channels=feature_channels, stage1_hidden=2 * width, refine_kernel=refine_kernel,
                    normalization=normalization, norm=norm)
