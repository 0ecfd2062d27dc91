"""The one evaluation loop of every family, and the oracle (the codec's ceiling, no network).

    for each split the task scores:  loader -> model_inputs -> model -> validation loss
                                     -> forward_decode -> postprocess -> evaluator.update
    metrics = evaluator.compute() + val_loss

`max_samples` means one thing everywhere: that many samples spread evenly over the split.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn

from posekit.families.base import Task
from posekit.models import unwrap


def to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def spread_subset(dataset, max_samples: int | None):
    """`max_samples` indices spread evenly over the dataset (all of it when None or larger)."""
    n = len(dataset)
    if not max_samples or max_samples >= n:
        return dataset
    return torch.utils.data.Subset(dataset, np.linspace(0, n - 1, max_samples).round().astype(int).tolist())


def _device(model: nn.Module | None) -> torch.device:
    if model is None:
        return torch.device("cpu")
    param = next(unwrap(model).parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def evaluate(task: Task, model: nn.Module | None, datasets: dict, *, oracle: bool = False,
             max_samples: int | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """Metrics of `model` (or, with `oracle`, of the ground truth through the codec's round trip)
    on the task's evaluation splits. The model is put in eval mode and restored afterwards."""
    missing = [s for s in task.eval_splits if datasets.get(s) is None]
    if missing:
        raise ValueError(f"evaluation needs the split(s) {missing}; the recipe's data gives {sorted(datasets)}")
    empty = [s for s in task.eval_splits if len(datasets[s]) == 0]
    if empty:
        raise ValueError(f"the evaluation split(s) {empty} are empty")
    if oracle:
        task.prepare(None, datasets)
    net = None if oracle else unwrap(model)
    was_training = bool(net is not None and net.training)
    if net is not None:
        net.eval()
    device = _device(net)
    max_samples = task.cfg.eval.max_samples if max_samples is None else max_samples
    batch_size = max(1, batch_size or task.cfg.eval.batch_size)
    evaluator = task.build_evaluator(datasets)
    loss_sum, loss_n = 0.0, 0
    try:
        for split in task.eval_splits:
            loader = torch.utils.data.DataLoader(spread_subset(datasets[split], max_samples), batch_size=batch_size,
                                                 shuffle=False, collate_fn=task.collate)
            for batch in loader:
                batch = to_device(batch, device)
                if oracle:
                    decoded = task.decode_targets(batch)
                else:
                    x = task.model_inputs(batch)
                    outputs = net(x)
                    if task.loss is not None and split == task.eval_splits[-1]:
                        value, _ = task.loss(outputs, batch)
                        loss_sum, loss_n = loss_sum + float(value) * len(x), loss_n + len(x)
                    decoded = task.forward_decode(net, x, outputs=outputs)
                evaluator.update(split, task.postprocess(decoded, batch), batch)
    finally:
        if was_training:
            net.train()
    metrics = evaluator.compute()
    if loss_n:
        metrics["val_loss"] = loss_sum / loss_n
    return metrics


@torch.no_grad()
def predict(task: Task, model: nn.Module, inputs: list, *, boxes=None, batch_size: int | None = None,
            **options) -> list:
    """Raw inputs -> one `Results` each: prepare_inputs -> forward_decode -> postprocess, in
    batches. `options` go to the family's prepare_inputs (e.g. a lifter's skeleton)."""
    net = unwrap(model)
    was_training = net.training
    net.eval()
    device = _device(net)
    step = max(1, batch_size or task.cfg.eval.batch_size)
    out = []
    try:
        for start in range(0, len(inputs), step):
            chunk = inputs[start:start + step]
            chunk_boxes = None if boxes is None else boxes[start:start + step]
            batch = task.prepare_inputs(chunk, boxes=chunk_boxes, **options)
            batch = to_device(batch, device)
            decoded = task.forward_decode(net, task.model_inputs(batch))
            out += task.postprocess(decoded, batch)
    finally:
        net.train(was_training)
    return out


def evaluate_checkpoint(cfg, checkpoint: str | None = None, *, oracle: bool = False) -> dict[str, Any]:
    """`posekit eval`: a checkpoint (or, with `oracle`, no model at all) on the recipe's
    evaluation splits. Only the splits the task scores are built (plus "train" for the
    oracle, whose codec may need training-set statistics)."""
    from posekit.engine import distributed
    from posekit.engine.checkpoint import inference_state_dict, load_checkpoint
    from posekit.families import build_task

    task = build_task(cfg)
    splits = tuple(dict.fromkeys(task.eval_splits + (("train",) if oracle else ())))
    datasets = task.build_datasets(splits)
    if oracle:
        return evaluate(task, None, datasets, oracle=True)
    if not checkpoint:
        raise ValueError("posekit eval: give the weights as checkpoint=PATH (or --oracle to score the codec)")
    model = task.build_model()
    model.load_state_dict(inference_state_dict(load_checkpoint(checkpoint)))
    model.to(distributed.pick_device(cfg.train.device)).eval()
    task.prepare(model, {})
    return evaluate(task, model, datasets)
