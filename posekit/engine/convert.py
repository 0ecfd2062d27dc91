"""Import weights trained elsewhere as posekit checkpoints, so `posekit eval/predict/export` use them.

    posekit convert cmu-openpose body_pose_model.pth --out runs/cmu/cmu_openpose.pt
"""
from __future__ import annotations

from pathlib import Path

import torch

from posekit.config import config_to_dict
from posekit.engine.checkpoint import describe_held, non_finite, save_checkpoint
from posekit.engine.recipes import load_config
from posekit.families import build_task

CONVERTERS = ("cmu-openpose",)


def convert_cmu_openpose(weights: str | Path, out: str | Path, *, recipe: str = "coco_openpose",
                         overrides: list[str] | None = None) -> Path:
    """CMU's COCO body model (the widely used PyTorch conversion: a state dict with keys
    `conv1_1.weight` ... `Mconv7_stage6_L2.bias`) -> a posekit checkpoint of `openpose_vgg19` with
    CMU's input normalisation (BGR, x/256 - 0.5) and the recipe's data/eval settings."""
    from posekit.models.openpose import convert_cmu_state_dict

    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"CMU weights not found: {weights}")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with code in it, a truncated file, not torch at all
        why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot load {weights} as a state dict: {why}") from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        held = describe_held(state) if not isinstance(state, dict) else "a mapping whose values are not all tensors"
        raise ValueError(f"{weights}: not a state dict (name -> tensor): it holds {held}; give the PyTorch "
                         "conversion of CMU's COCO body model (body_pose_model.pth)")
    bad = non_finite(state)
    if bad:  # a checkpoint of NaN weights would predict nothing, silently
        raise ValueError(f"{weights}: tensor {bad[0]!r} holds NaN or inf values"
                         f"{f' (and {len(bad) - 1} more tensors)' if len(bad) > 1 else ''}; the file is corrupt: "
                         "download or convert it again (nothing was written)")
    cfg = load_config(recipe, ["model.name=openpose_vgg19", "model.args={normalization: cmu}", *(overrides or [])])
    task = build_task(cfg)
    model = task.build_model()
    model.load_state_dict(convert_cmu_state_dict(state, model=model))
    return save_checkpoint({"model": model.state_dict(), "config": config_to_dict(cfg), "step": 0,
                            "source": f"converted from {weights.name} (CMU COCO body model)"}, out)
