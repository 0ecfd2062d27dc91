"""Person boxes for top-down models from a torchvision detector (boxes given in a file or on the
command line are read by `posekit.data.box_files`, which needs no torch).

    detector = PersonDetector("fasterrcnn")     # torchvision weights, fetched by torchvision
    rows = detector([image])[0]                 # (N, 5) x, y, w, h, score (persons only), as box files give
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from posekit.data.box_files import PERSON

# the torchvision builders, by the name `--detector` takes
DETECTORS = {
    "fasterrcnn": "fasterrcnn_resnet50_fpn",
    "fasterrcnn_v2": "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet": "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_320": "fasterrcnn_mobilenet_v3_large_320_fpn",
}


def _looks_like_path(text: str) -> bool:
    """A --detector-weights value meant as a file (a folder part or a weights-file suffix), not a
    torchvision weights name such as DEFAULT or COCO_V1."""
    return "/" in text or "\\" in text or Path(text).suffix.lower() in (".pt", ".pth", ".bin", ".ckpt",
                                                                      ".safetensors", ".tar")


def _load_local_weights(model: torch.nn.Module, path: Path, what: str) -> None:
    """Load a state-dict file into `model`; a file of another architecture is one line naming the
    keys that differ (the first few of each kind, and how many)."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated, or pickled objects beyond tensors
        raise ValueError(f"{path}: cannot read it as a state dict for {what} ({type(e).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        from posekit.engine.checkpoint import describe_held
        held = describe_held(state) if not isinstance(state, dict) else "a mapping whose values are not all tensors"
        raise ValueError(f"{path}: expected a state dict (name -> tensor) for {what}; it holds {held}")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        def few(keys):
            return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
        parts = [f"{len(v)} {label} ({few(v)})" for label, v in
                 (("missing", missing), ("unexpected", unexpected), ("with another shape", shapes)) if v]
        raise ValueError(f"{path}: not a state dict of {what}: keys differ: {'; '.join(parts)}")
    model.load_state_dict(state)


class PersonDetector:
    """A torchvision Faster R-CNN that returns person boxes.

    weights: "DEFAULT" (torchvision's COCO weights, downloaded and cached by torchvision's own
    mechanism), another torchvision weights name, a local state-dict file, or None (random
    initialisation: only for testing the wiring offline)."""

    def __init__(self, name: str = "fasterrcnn", *, weights: str | None = "DEFAULT", score_threshold: float = 0.5,
                 device: str = "cpu", **kwargs):
        import torchvision.models.detection as detection
        if name not in DETECTORS:
            raise ValueError(f"unknown detector {name!r}; valid: {', '.join(DETECTORS)}")
        if not math.isfinite(score_threshold) or not 0 <= score_threshold <= 1:
            raise ValueError(f"detector score threshold must be in [0, 1], got {score_threshold}")
        builder = getattr(detection, DETECTORS[name])
        self.name, self.score_threshold = name, float(score_threshold)
        kwargs.setdefault("box_score_thresh", min(0.05, self.score_threshold))
        local = weights is not None and str(weights).lower() != "none" and Path(str(weights)).is_file()
        if weights is not None and not local and _looks_like_path(str(weights)):
            raise FileNotFoundError(f"detector {name}: weights file not found: {weights}")
        if weights is None or str(weights).lower() == "none" or local:
            model = builder(weights=None, weights_backbone=None, **kwargs)
            if local:
                _load_local_weights(model, Path(str(weights)), f"detector {name} ({DETECTORS[name]})")
        else:
            try:
                model = builder(weights=str(weights), weights_backbone=None, **kwargs)
            except (KeyError, ValueError) as e:
                raise ValueError(f"detector {name}: unknown weights {weights!r} ({e})") from None
            except (OSError, RuntimeError) as e:  # offline, or a broken download
                raise ValueError(f"detector {name}: cannot get torchvision weights {weights!r} ({e}); when offline, "
                                 "put them in the torch hub cache or pass a local state-dict file") from None
        from posekit.engine import distributed
        self.device = distributed.pick_device(device, option="--device")
        self.model = model.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """RGB uint8 images -> per image (N, 5) person boxes x, y, w, h, score, best first."""
        tensors = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).float().div(255.0).to(self.device)
                   for im in images]
        out = []
        for det in self.model(tensors) if tensors else []:
            keep = (det["labels"] == PERSON) & (det["scores"] >= self.score_threshold)
            xyxy = det["boxes"][keep].double().cpu().numpy()
            scores = det["scores"][keep].double().cpu().numpy()
            rows = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2], scores[:, None]], axis=1)
            rows = rows[(rows[:, 2] > 0) & (rows[:, 3] > 0)]
            out.append(rows[np.argsort(-rows[:, 4], kind="stable")])
        return out
