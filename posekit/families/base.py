"""The family contract: the one interface between a model family and the generic engine.

A family is one `Task` subclass in `posekit/families/<name>.py`, registered with `@register_task`.
It is built from the resolved `Config` (`Task(cfg)`): no state is set later by call order.
The engine (trainer, the one eval loop, the predictor, export, the demo) calls only the hooks
below, and every hook a family may have is declared here with its default.

Data path:     file -> Sample -> pipeline (augment + codec.encode) -> batch -> `loss`
Decode path:   `model_inputs(batch)` -> `forward_decode` (network, flip test, codec decode: the
               part that goes into an ONNX graph) -> `postprocess` (out of the graph: back to the
               original image, grouping people) -> list[Results] -> evaluator / user
Oracle:        `decode_targets(batch)` gives what `forward_decode` would give if the network had
               output the encoded ground truth: the codec's ceiling on that data.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn as nn

from posekit.config import DataConfig, EvalConfig, LossConfig

if TYPE_CHECKING:  # pragma: no cover
    from posekit.config import Config
    from posekit.results import Results
    from posekit.skeletons import Skeleton


@dataclass
class ExportSpec:
    """What `posekit export` needs from a family: example inputs of the graph and the names of
    its inputs and outputs (the graph itself is `forward_decode`)."""
    example_inputs: tuple
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict


class Evaluator:
    """Accumulates a family's predictions and computes its metrics; one per evaluation run.

    `update` is called once per batch with the split's name (a family may score more than one
    split, e.g. fit a regressor on one and score another), the `Results` of that batch and the
    batch itself (ground truth, meta). `compute` returns scalar metrics (plus, optionally, a
    printable "table" string)."""

    def update(self, split: str, results: list["Results"], batch: dict) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, Any]:
        raise NotImplementedError

    def check(self, datasets: dict) -> None:
        """Raise a one-line error when these datasets cannot be scored (e.g. PCKh without head
        sizes). The trainer calls it before the first step, so such a run fails at start rather
        than at its first validation; `compute` still checks for itself."""


class Task:
    """Base class of a family. Override what the family needs; every hook is listed here."""

    name: str = ""
    DataConfig: type = DataConfig  # the family's `data:` section (a dataclass deriving DataConfig)
    EvalConfig: type = EvalConfig  # its `eval:` section
    LossConfig: type = LossConfig  # its `loss:` section
    primary_metric: str = "loss"  # key of the evaluator's dict used to pick best.pt
    higher_is_better: bool = False
    eval_splits: tuple[str, ...] = ("val",)  # the splits the eval loop scores, in this order
    # the family's synthetic recipe (trains with no download: demo, contract test) and the
    # overrides that shrink it to a seconds-long smoke run
    synthetic_recipe: str = ""
    smoke_overrides: tuple[str, ...] = ()
    demo_share: float = 1.0  # its share of `posekit demo`'s training-time budget
    # some parameters get no gradient for a while (a backbone frozen until a fine-tune step):
    # DDP must then look for unused parameters every step
    find_unused_parameters: bool = False
    # channels_last memory format when train.channels_last is unset (on where it measured faster)
    channels_last: bool = False

    def __init__(self, cfg: "Config"):
        self.cfg = cfg
        self.check_config()
        self.loss = self.build_loss()

    def check_config(self) -> None:
        """Reject inconsistent settings early, naming the key (called by __init__)."""

    @property
    def skeleton(self) -> "Skeleton":
        raise NotImplementedError

    # --- building -----------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        from posekit.models import create_model
        return create_model(self.cfg.model.name, **self.cfg.model.args)

    def build_datasets(self, splits: tuple[str, ...] | None = None) -> dict[str, torch.utils.data.Dataset]:
        """Named splits ("train", "val", ...). `splits` asks for a subset, so `posekit eval` need
        not build a large training set; a family may ignore it and build all."""
        raise NotImplementedError

    def build_loss(self) -> Callable:
        """The objective from the `loss:` section, `loss(outputs, batch) -> (loss, logs)`; built
        once by __init__ as `self.loss`, used by training and by the eval loop's validation loss."""
        raise NotImplementedError

    def collate(self, items: list[dict]) -> dict:
        return torch.utils.data.default_collate(items)

    def prepare(self, model: nn.Module | None, datasets: dict) -> None:
        """Link data-dependent state between task and model: before training (`datasets` has
        "train": e.g. fit normalisation statistics into model buffers), after loading a checkpoint
        (`datasets` empty), and for the oracle (`model` None)."""

    # --- training -----------------------------------------------------------------------
    def model_inputs(self, batch: dict) -> torch.Tensor:
        """The network's input tensor from a batch (on the model's device)."""
        return batch["image"].float().div(255.0) if batch["image"].dtype == torch.uint8 else batch["image"].float()

    def training_step(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """Forward + loss, and named extra values to log. `model` may be DDP-wrapped: call it, don't
        reach into it. Keep the extra values detached tensors, never `float()`/`.item()` them: the
        trainer reads them only at log steps, so no step waits for the GPU to finish."""
        return self.loss(model(self.model_inputs(batch)), batch)

    def on_step(self, model: nn.Module, step: int) -> None:
        """Before each optimisation step (e.g. unfreeze a backbone at a given step)."""

    # --- the one decode seam ------------------------------------------------------------
    def forward_decode(self, model: nn.Module, x: torch.Tensor, *, outputs=None) -> dict[str, torch.Tensor]:
        """Network input -> decoded tensors (flip test included): the graph `posekit export` writes,
        and what eval and predict use. `outputs`: the network's outputs for `x` when the caller
        already has them (the eval loop computes the validation loss from them)."""
        raise NotImplementedError

    def decode_targets(self, batch: dict) -> dict[str, torch.Tensor]:
        """The oracle: the batch's encoded targets decoded by the codec, in `forward_decode`'s format."""
        raise NotImplementedError

    def postprocess(self, decoded: dict[str, torch.Tensor], batch: dict) -> list["Results"]:
        """Decoded tensors of a batch -> one `Results` per sample in its original image frame
        (inverse affine, person grouping: whatever stays outside the graph). `batch` holds the
        per-sample meta (matrices, images) from the pipeline or `prepare_inputs`."""
        raise NotImplementedError

    def build_evaluator(self, datasets: dict) -> Evaluator:
        """The metric, given the evaluated splits (ground-truth files, action names live there)."""
        raise NotImplementedError

    # --- use ----------------------------------------------------------------------------
    def prepare_inputs(self, inputs: list, *, boxes: list | None = None, **options) -> dict:
        """Raw inputs (RGB uint8 images, or 2-D poses for a lifter) -> a batch for
        `model_inputs`/`postprocess`, built by the same code as the evaluation pipeline."""
        raise NotImplementedError

    def sample_inputs(self, datasets: dict, count: int = 2) -> list:
        """Raw inputs like a user's (RGB images; 2-D poses for a lifter), taken from the
        evaluation split: the demo, the contract test and benchmarks feed them to predict."""
        dataset = datasets[self.eval_splits[-1]]
        source = getattr(dataset, "source", dataset)
        return [source[i].load().image for i in range(min(count, len(source)))]

    def export_spec(self) -> ExportSpec:
        raise NotImplementedError

    def demo(self, predict: Callable[..., list["Results"]], datasets: dict, out_dir: Path) -> list[Path]:
        """Family-specific demo pictures; return their paths. `predict(inputs, **options)` runs the
        trained model (prepare_inputs -> forward_decode -> postprocess). The default [] lets the
        engine draw "ground truth | prediction" for a few validation samples (whole images
        with every person when the items are the people of images)."""
        return []


_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a `name`")
    _TASKS[cls.name] = cls
    return cls


def get_task_class(name: str) -> type[Task]:
    try:
        return _TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {sorted(_TASKS)}") from None


def build_task(cfg: "Config") -> Task:
    return get_task_class(cfg.task)(cfg)


def list_tasks() -> list[str]:
    return sorted(_TASKS)
