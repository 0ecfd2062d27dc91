"""Checkpoint -> task + model -> `Results` for images, folders, videos or 2-D poses.

    predictor = Predictor("runs/mpii/best.pt")
    results = predictor(image)                    # one Results
    results = predictor([img1, img2], boxes=[b1, None])
"""
from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from posekit.config import Config, ConfigError, deep_merge, parse_overrides
from posekit.engine import distributed
from posekit.engine.checkpoint import inference_state_dict, load_checkpoint
from posekit.engine.evaluation import predict
from posekit.engine.recipes import config_from_dict
from posekit.families import Task, build_task


def load_for_inference(checkpoint_path: str | Path, overrides: list[str] | None = None,
                       device: str = "cpu", imports: list[str] | None = None) -> tuple[Task, nn.Module, Config]:
    """(task, model in eval mode with the best available weights (EMA when trained with it),
    config) from a checkpoint file; `overrides` change the stored config (e.g. eval.flip_test)."""
    ckpt = load_checkpoint(checkpoint_path)
    raw = ckpt.get("config")
    if not isinstance(raw, dict):
        raise ValueError(f"{checkpoint_path}: not a posekit checkpoint (no 'config' entry)")
    if overrides:
        raw = deep_merge(raw, parse_overrides(overrides))
    # a checkpoint is data: it never names code to import (a user's task module is imported by
    # the user's own recipe or `imports=` override, never because a stranger's file lists it)
    stored_imports = raw.get("imports") or []
    raw = {**raw, "imports": list(imports or []), "model": {**raw["model"], "init_from": None}}
    try:
        cfg = config_from_dict(raw, source=str(checkpoint_path))
    except ConfigError as e:
        if stored_imports and "unknown task" in str(e):
            raise ConfigError(f"{e}; the checkpoint was trained with user modules {stored_imports}: import them "
                              "yourself (Python) if you trust them") from None
        raise
    task = build_task(cfg)
    model = task.build_model()
    model.load_state_dict(inference_state_dict(ckpt))
    model = model.to(distributed.pick_device(device)).eval()
    task.prepare(model, {})
    return task, model, cfg


class Predictor:
    """Load a checkpoint once, then call it on RGB images (or a lifter's 2-D poses)."""

    def __init__(self, checkpoint, *, device: str = "cpu", overrides: list[str] | None = None):
        self.task, self.model, self.cfg = load_for_inference(checkpoint, overrides, device=device)

    def __call__(self, inputs, *, boxes=None, paths: list[str] | None = None, **options):
        """inputs: one input or a list (RGB uint8 arrays or image paths; 2-D poses for a lifter).
        boxes: one person box [x, y, w, h] (or None = the whole image) per input, for top-down
        models. Returns one `Results` per input (a single one for a single input)."""
        from posekit.data.io import read_image

        single = not isinstance(inputs, list)
        items = [inputs] if single else list(inputs)
        names = list(paths) if paths else [None] * len(items)
        for i, item in enumerate(items):
            if isinstance(item, (str, Path)):
                names[i] = names[i] or str(item)
                items[i] = read_image(item)
        if single and boxes is not None and not isinstance(boxes[0], (list, tuple)) and boxes[0] is not None:
            boxes = [boxes]
        results = predict(self.task, self.model, items, boxes=boxes, **options)
        for res, name in zip(results, names):
            if name is not None:
                res.path = name
        return results[0] if single else results
