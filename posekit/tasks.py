"""The small interface between the one trainer and a model family.

A family is one `Task` subclass (in `posekit/families/<family>.py`), registered with
`@register_task`. The trainer only calls the methods below; everything family-specific
(datasets, codecs, losses, metrics, decoding, drawing) stays behind them.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from posekit.config import DataConfig, EvalConfig

if TYPE_CHECKING:  # pragma: no cover
    from posekit.config import Config
    from posekit.results import Results


class Task:
    """Base class: override what the family needs. Methods receive the resolved `Config`."""

    name: str = ""
    DataConfig: type = DataConfig  # the family's `data:` section (a dataclass deriving DataConfig)
    EvalConfig: type = EvalConfig  # the family's `eval:` section
    primary_metric: str = "loss"  # key of evaluate()'s dict used to pick best.pt
    higher_is_better: bool = False
    # set in prepare() when some parameters get no gradient for a while (e.g. a backbone frozen
    # until a fine-tune step): DDP then looks for unused parameters every step
    find_unused_parameters: bool = False

    # --- building -----------------------------------------------------------------------
    def build_model(self, cfg: "Config") -> nn.Module:
        from posekit.models import create_model
        return create_model(cfg.model.name, **cfg.model.args)

    def build_datasets(self, cfg: "Config") -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset | None]:
        """(train, val). Items are dicts of tensors/arrays; the default collate stacks them."""
        raise NotImplementedError

    def build_eval_dataset(self, cfg: "Config") -> torch.utils.data.Dataset | None:
        """The data `posekit eval` scores; override to skip building a large training set."""
        return self.build_datasets(cfg)[1]

    def collate(self, items: list[dict]) -> dict:
        return torch.utils.data.default_collate(items)

    def prepare(self, model: nn.Module, train_set, cfg: "Config") -> None:
        """Hook before training starts (e.g. store dataset normalisation statistics in model buffers)."""

    # --- training -----------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Forward + loss. `model` may be DDP-wrapped: call it, don't reach into it.
        Returns (scalar loss, extra scalar logs)."""
        raise NotImplementedError

    def on_step(self, model: nn.Module, step: int, cfg: "Config") -> None:
        """Called before each optimisation step (e.g. unfreeze a backbone at a given step)."""

    # --- evaluation and use -------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset, cfg: "Config") -> dict[str, float]:
        """Metrics on `dataset` (model in eval mode, not DDP-wrapped). Must include primary_metric."""
        raise NotImplementedError

    def predict(self, model: nn.Module, inputs: list[Any], cfg: "Config", **kwargs) -> list["Results"]:
        """Decode model outputs for raw inputs (RGB uint8 images for image models) into Results
        in the input's own frame."""
        raise NotImplementedError

    def export_module(self, model: nn.Module, cfg: "Config") -> tuple[nn.Module, tuple, list[str], list[str], dict]:
        """(module with decoding inside the graph, example inputs, input names, output names,
        dynamic axes) for ONNX export."""
        raise NotImplementedError

    def demo(self, model: nn.Module, dataset, cfg: "Config", out_dir: Path) -> list[Path]:
        """Write a few prediction overlays for the demo; return their paths."""
        return []


_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a `name`")
    _TASKS[cls.name] = cls
    return cls


def get_task(name: str) -> Task:
    import posekit.families  # noqa: F401  (registers the families)
    try:
        return _TASKS[name]()
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {sorted(_TASKS)}") from None


def list_tasks() -> list[str]:
    import posekit.families  # noqa: F401
    return sorted(_TASKS)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker init: distinct, reproducible numpy/random streams per worker."""
    import random
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
