"""The one evaluation loop of every family, and the oracle (the codec's ceiling, no network).

    for each split the task scores:  loader -> model_inputs -> model -> validation loss
                                     -> forward_decode -> postprocess -> evaluator.update
    metrics = evaluator.compute() + val_loss

`max_samples` means one thing everywhere: that many samples spread evenly over the split.
"""
from __future__ import annotations

from pathlib import Path
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
             max_samples: int | None = None, batch_size: int | None = None, recorder=None) -> dict[str, Any]:
    """Metrics of `model` (or, with `oracle`, of the ground truth through the codec's round trip)
    on the task's evaluation splits. The model is put in eval mode and restored afterwards.
    `recorder` (engine.report.ReportRecorder) sees the evaluator and every batch's Results, for --report."""
    missing = [s for s in task.eval_splits if datasets.get(s) is None]
    if missing:
        raise ValueError(f"evaluation needs the split(s) {missing}; the recipe's data gives {sorted(datasets)}")
    empty = [s for s in task.eval_splits if len(datasets[s]) == 0]
    if empty:
        raise ValueError(f"the evaluation split(s) {empty} are empty")
    if oracle:
        # an eval never reads the training split: a codec that needs data statistics (the lifter's
        # normalisation) fits them on the split it scores; the round trip does not depend on them
        task.prepare(None, {"train": datasets[task.eval_splits[0]], **datasets})
    net = None if oracle else unwrap(model)
    was_training = bool(net is not None and net.training)
    if net is not None:
        net.eval()
    device = _device(net)
    max_samples = task.cfg.eval.max_samples if max_samples is None else max_samples
    from posekit.config import check_batch_size  # 0 is refused, never silently replaced by 1 or the default
    batch_size = (check_batch_size(task.cfg.eval.batch_size) if batch_size is None
                  else check_batch_size(batch_size, "batch_size"))
    evaluator = task.build_evaluator(datasets)
    if recorder is not None:
        recorder.attach(task, evaluator)
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
                results = task.postprocess(decoded, batch)
                evaluator.update(split, results, batch)
                if recorder is not None:
                    recorder.update(split, results, batch)
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
    from posekit.config import check_batch_size  # 0 is refused, never silently replaced by 1 or the default
    step = (check_batch_size(task.cfg.eval.batch_size) if batch_size is None
            else check_batch_size(batch_size, "batch_size"))
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


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's `best.pt` (its `last.pt` when no best was kept)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
        raise FileNotFoundError(f"checkpoint not found: {p} is a folder without best.pt or last.pt")
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    return p


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint at `path` (a file or a run folder), loaded safely; an unreadable file is one
    short ValueError (the loader's long explanation stays in the exception chain)."""
    from posekit.engine.checkpoint import load_checkpoint
    p = find_checkpoint(path)
    try:
        ckpt = load_checkpoint(p)
    except ValueError as e:
        if "cannot load checkpoint" not in str(e):
            raise
        raise ValueError(f"{p}: not a readable checkpoint (truncated or corrupt, or not a PyTorch checkpoint "
                         "of tensors; POSEKIT_DEBUG=1 shows the loader's error)") from e
    if not isinstance(ckpt, dict):
        raise ValueError(f"{p}: not a posekit checkpoint (it holds a {type(ckpt).__name__}, not a mapping)")
    return ckpt


def config_from_checkpoint(ckpt: dict, overrides: list[str] | None = None, *, source: str = "<checkpoint>"):
    """The `Config` stored in a checkpoint with the user's `key=value` overrides. A checkpoint is
    data: the modules its config lists under `imports` are never imported; only an `imports=`
    override given by the user is (the rule of `engine.predictor.load_for_inference`)."""
    from posekit.config import ConfigError, deep_merge, parse_overrides
    from posekit.engine.recipes import config_from_dict
    raw = ckpt.get("config")
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: not a posekit checkpoint (no stored config); evaluate it with a recipe: "
                         f"posekit eval RECIPE checkpoint={source}")
    extra = parse_overrides(list(overrides or []))
    user_imports = extra.pop("imports", [])
    stored_imports = raw.get("imports") or []
    raw = deep_merge(stored_for_this_machine(raw), extra)
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    raw = {**raw, "imports": user_imports, "model": {**model, "init_from": None}}
    try:
        cfg = config_from_dict(raw, source=source)
    except ConfigError as e:
        if stored_imports and "unknown task" in str(e):
            raise ConfigError(f"{e}; the checkpoint was trained with user modules {stored_imports}: pass "
                              f"imports=[{', '.join(map(str, stored_imports))}] if you trust them") from None
        raise
    from posekit.engine.predictor import inference_model_args  # weights paths a checkpoint names are never followed
    cfg.model.args = inference_model_args(cfg.model.name, cfg.model.args)
    return cfg


def stored_for_this_machine(raw: dict) -> dict:
    """A checkpoint's stored config, with what only fit the machine it was trained on brought within
    this one's bounds: a run with 32 DataLoader workers on a 64-CPU node is still evaluated (and
    predicted) on a laptop, where `train.num_workers` is capped (evaluation never forks them)."""
    from posekit.config import max_workers
    train = raw.get("train")
    workers = train.get("num_workers") if isinstance(train, dict) else None
    if isinstance(workers, int) and not isinstance(workers, bool) and workers > max_workers():
        raw = {**raw, "train": {**train, "num_workers": max_workers()}}
    return raw


def _check_checkpoint_fits(ckpt: dict, cfg, source: str) -> None:
    """A checkpoint of another task or model than the recipe's is refused, naming both."""
    held = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    held_task = held.get("task")
    held_model = (held.get("model") or {}).get("name") if isinstance(held.get("model"), dict) else None
    other_task = bool(held_task) and held_task != cfg.task
    other_model = bool(held_model) and bool(cfg.model.name) and held_model != cfg.model.name
    if other_task or other_model:
        raise ValueError(f"{source} holds task {held_task!r} with model {held_model!r}, but the recipe is task "
                         f"{cfg.task!r} with model {cfg.model.name or '(the task default)'!r}: evaluate it with its "
                         f"own recipe, or with none (posekit eval {source})")


def _load_weights(model: nn.Module, state_dict: dict, cfg, source: str) -> None:
    """load_state_dict with a one-line error when the weights do not fit the built model."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError:
        own = model.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state_dict.items()
                  if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
        first = (shapes or missing or unexpected or ["?"])[0]
        raise ValueError(f"{source}: its weights do not fit model {cfg.model.name or cfg.task!r} with args "
                         f"{cfg.model.args}: {len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} "
                         f"of another shape (first: {first}); was it trained with other model.args?") from None


def evaluate_checkpoint(cfg=None, checkpoint: str | None = None, *, oracle: bool = False,
                        overrides: list[str] | None = None, recorder=None) -> dict[str, Any]:
    """`posekit eval`: a checkpoint (or, with `oracle`, no model at all) on the evaluation splits
    of `cfg`, the recipe. Without a recipe the checkpoint's own stored config is used, with
    `overrides` applied (e.g. data.root on this machine). Only the splits the task scores are
    built: an eval never reads (or needs the files of) the training split, the oracle included."""
    from posekit.engine import distributed
    from posekit.engine.checkpoint import inference_state_dict
    from posekit.families import build_task

    if cfg is None and not checkpoint:
        raise ValueError("posekit eval: give a recipe, a checkpoint, or both (RECIPE checkpoint=PATH)")
    ckpt = read_checkpoint(checkpoint) if checkpoint and not (oracle and cfg is not None) else None
    source = str(checkpoint)
    if cfg is None:
        cfg = config_from_checkpoint(ckpt, overrides, source=source)
    elif ckpt is not None:
        _check_checkpoint_fits(ckpt, cfg, source)
    task = build_task(cfg)
    datasets = task.build_datasets(tuple(task.eval_splits))
    if oracle:
        return evaluate(task, None, datasets, oracle=True, recorder=recorder)
    if ckpt is None:
        raise ValueError("posekit eval: give the weights as checkpoint=PATH (or --oracle to score the codec)")
    model = task.build_model()
    try:
        state = inference_state_dict(ckpt)
    except KeyError:
        raise ValueError(f"{source}: not a posekit checkpoint (no 'model' weights)") from None
    _load_weights(model, state, cfg, source)
    model.to(distributed.pick_device(cfg.train.device)).eval()
    task.prepare(model, {})
    return evaluate(task, model, datasets, recorder=recorder)
