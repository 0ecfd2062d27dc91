"""Published weights, one entry each (torchvision's `WeightsEnum` idea): where the file is, how to
check it, how it maps onto a posekit model and what its authors report. No network code here:
`posekit.engine.weights` downloads, verifies, converts and caches; the models read the cache
paths from here so `model.args.pretrained=imagenet` and `posekit weights download` share them.

A name is `<model>.<tag>` (`openpose_vgg19.cmu`). The cache is torch hub's checkpoint folder
(`$TORCH_HOME/hub/checkpoints`, where torchvision keeps its files), or `$POSEKIT_HOME/weights`
when POSEKIT_HOME is set; converted posekit checkpoints live in its `posekit/` sub-folder.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["WeightsEntry", "cache_dir", "converted_path", "download_path", "get_weights", "is_weights_name",
           "list_weights", "offline_message", "register_weights"]

KINDS = ("model", "backbone")  # a whole pose model (a checkpoint is made) or ImageNet trunk weights


@dataclass(frozen=True)
class WeightsEntry:
    """One published weight file. `sha256` is the full hex digest when the source publishes one, or
    the 8+ hex prefix that torchvision file names carry (`vgg19-dcbb9e9d.pth`, checked as torch.hub
    does); `size` is the exact byte count where it is known. At least one of them is required."""

    name: str                      # "<model>.<tag>"
    model: str                     # a registered posekit model
    task: str                      # what it does, for `posekit weights list`
    filename: str                  # the file's name in the cache
    urls: tuple[str, ...]          # primary first, then mirrors
    converter: str                 # "cmu-openpose" (-> a posekit checkpoint) or "torchvision" (backbone)
    preprocessing: str             # the input convention the weights expect
    skeleton: str
    licence: str
    metric: str                    # the source's reported number, with its protocol
    recipe: str                    # the posekit recipe whose data/eval settings go with it
    source: str                    # paper / project page
    sha256: str | None = None
    size: int | None = None
    kind: str = "model"
    convert_overrides: tuple[str, ...] = field(default=())  # config overrides the converter applies
    approx_mb: float | None = None  # the source's rounded size, shown when the exact one is unknown

    def __post_init__(self):
        model, _, tag = self.name.partition(".")
        if not model or not tag or model != self.model:
            raise ValueError(f"weights name {self.name!r} must be '<model>.<tag>' with model {self.model!r}")
        if not self.urls:
            raise ValueError(f"weights {self.name}: give at least one URL")
        if self.sha256 is None and self.size is None:
            raise ValueError(f"weights {self.name}: give a sha256 or an exact size to check the file by")
        if self.sha256 is not None and (len(self.sha256) < 8 or any(c not in "0123456789abcdef" for c in self.sha256)):
            raise ValueError(f"weights {self.name}: sha256 must be lower-case hex (8+ digits), got {self.sha256!r}")
        if self.kind not in KINDS:
            raise ValueError(f"weights {self.name}: kind must be one of {KINDS}, got {self.kind!r}")

    def check_text(self) -> str:
        """What the file is checked by, for messages: 'sha256 ABC..., 209,267,595 bytes'."""
        parts = []
        if self.sha256:
            parts.append(f"sha256 {self.sha256}" if len(self.sha256) == 64 else f"sha256 starting {self.sha256}")
        if self.size is not None:
            parts.append(f"{self.size:,} bytes")
        return ", ".join(parts)

    def size_text(self) -> str:
        if self.size:
            return f"{self.size / 1e6:.1f} MB"
        return f"~{self.approx_mb:g} MB" if self.approx_mb else "?"


_WEIGHTS: dict[str, WeightsEntry] = {}


def register_weights(entry: WeightsEntry) -> WeightsEntry:
    if entry.name in _WEIGHTS and _WEIGHTS[entry.name] != entry:
        raise ValueError(f"weights {entry.name!r} are registered twice")
    _WEIGHTS[entry.name] = entry
    return entry


def list_weights() -> list[WeightsEntry]:
    return [_WEIGHTS[k] for k in sorted(_WEIGHTS)]


def is_weights_name(text) -> bool:
    return isinstance(text, str) and text in _WEIGHTS


def get_weights(name: str) -> WeightsEntry:
    try:
        return _WEIGHTS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_WEIGHTS), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown weights {name!r}.{hint} Known: {', '.join(sorted(_WEIGHTS))} "
                       "(posekit weights list)") from None


def cache_dir() -> Path:
    """$POSEKIT_HOME/weights when set, else torch hub's checkpoints folder ($TORCH_HOME/hub/checkpoints),
    the one torchvision downloads into."""
    home = os.environ.get("POSEKIT_HOME")
    if home:
        return Path(home).expanduser() / "weights"
    import torch
    return Path(torch.hub.get_dir()) / "checkpoints"


def download_path(entry: WeightsEntry) -> Path:
    """Where the verified file lives (and where to put it by hand when offline)."""
    return cache_dir() / entry.filename


def converted_path(entry: WeightsEntry) -> Path:
    """The posekit checkpoint made from a model entry's file."""
    return cache_dir() / "posekit" / f"{entry.name}.pt"


def offline_message(entry: WeightsEntry, why: str) -> str:
    """The one line said whenever the file cannot be fetched: the URL, the check, the exact path."""
    return (f"cannot download weights {entry.name} ({why}); download {entry.urls[0]} yourself "
            f"({entry.check_text()}) and put it at {download_path(entry)}, then run the command again")


# --- entries ---------------------------------------------------------------------------------------------
# CMU's COCO body model (pose_iter_440000.caffemodel) as converted to PyTorch by Hzzone/pytorch-openpose,
# the copy every ControlNet annotator uses. sha256: the Hugging Face LFS object id of
# lllyasviel/Annotators@982e7ed (LFS ids are the file's sha256); size as Hugging Face lists it.
_ANNOTATORS = "lllyasviel/Annotators/resolve/982e7edaec38759d914a963c48c4726685de7d96/body_pose_model.pth"
register_weights(WeightsEntry(
    name="openpose_vgg19.cmu", model="openpose_vgg19", task="multi-person 2-D body (COCO-17 out)",
    filename="body_pose_model.pth",
    urls=(f"https://huggingface.co/{_ANNOTATORS}", f"https://hf-mirror.com/{_ANNOTATORS}"),
    sha256="25a948c16078b0f08e236bda51a385d855ef4c153598947c28c0d47ed94bb746", size=209_267_595,
    converter="cmu-openpose",
    preprocessing="BGR, x/256 - 0.5, 368 px high (applied inside the model: normalization=cmu)",
    skeleton="openpose18 (mapped to coco17 for AP)", licence="CMU OpenPose academic/non-commercial licence",
    metric="COCO test-dev AP 61.8 (Cao et al. CVPR 2017, CMU's multi-scale search)",
    recipe="coco_openpose", source="https://arxiv.org/abs/1611.08050"))

# torchvision's ImageNet trunks the recipes name (model.args.pretrained=imagenet): the file names carry
# the first 8 hex digits of their sha256, which torch.hub checks; torchvision gives no exact size.
register_weights(WeightsEntry(
    name="openpose_vgg19.imagenet", model="openpose_vgg19", task="VGG19 ImageNet trunk (backbone only)",
    filename="vgg19-dcbb9e9d.pth", urls=("https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",),
    sha256="dcbb9e9d", converter="torchvision", kind="backbone", approx_mb=548.1,
    preprocessing="RGB, ImageNet mean/std (normalization=imagenet)", skeleton="openpose18",
    licence="BSD-3-Clause (torchvision)", metric="ImageNet-1K top-1 72.376 (torchvision VGG19_Weights.IMAGENET1K_V1)",
    recipe="coco_openpose", source="https://pytorch.org/vision/stable/models.html"))
register_weights(WeightsEntry(
    name="dogs_mobilenetv2.imagenet", model="dogs_mobilenetv2", task="MobileNetV2 ImageNet trunk (backbone only)",
    filename="mobilenet_v2-b0353104.pth", urls=("https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",),
    sha256="b0353104", converter="torchvision", kind="backbone", approx_mb=13.6,
    preprocessing="RGB, ImageNet mean/std (normalization=imagenet)", skeleton="stanford_extra24",
    licence="BSD-3-Clause (torchvision)",
    metric="ImageNet-1K top-1 71.878 (torchvision MobileNet_V2_Weights.IMAGENET1K_V1)",
    recipe="dogs_mobilenetv2", source="https://pytorch.org/vision/stable/models.html"))
