"""A plain decorator registry of model builders (timm/torchvision style).

A builder is a keyword-only function returning an `nn.Module`. Registering records its family,
skeleton and default input size next to it, so `posekit models` can list everything without
chasing strings through configs.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch.nn as nn


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    family: str
    skeleton: str
    input_size: tuple[int, ...]
    description: str

    def signature(self) -> inspect.Signature:
        return inspect.signature(self.builder)


_MODELS: dict[str, ModelEntry] = {}


def register_model(*, family: str, skeleton: str, input_size: tuple[int, ...], description: str = ""):
    """Decorator: `@register_model(family="hourglass", skeleton="mpii16", input_size=(3, 256, 256))`."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        sig = inspect.signature(builder)
        positional = [p.name for p in sig.parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if positional:
            raise TypeError(f"model builder {builder.__name__} must be keyword-only; positional: {positional}")
        name = builder.__name__
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        doc = description or (inspect.getdoc(builder) or "").split("\n")[0]
        _MODELS[name] = ModelEntry(name, builder, family, skeleton, tuple(input_size), doc)
        return builder

    return wrap


def _load_families() -> None:
    # importing the package registers every family's builders
    import posekit.models  # noqa: F401


def get_entry(name: str) -> ModelEntry:
    _load_families()
    try:
        return _MODELS[name]
    except KeyError:
        import difflib
        close = difflib.get_close_matches(name, list(_MODELS), n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise KeyError(f"unknown model {name!r}.{hint} Registered: {sorted(_MODELS)}") from None


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; unknown keyword arguments are an error naming the valid ones."""
    entry = get_entry(name)
    params = entry.signature().parameters
    accepts_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    unknown = [k for k in kwargs if k not in params]
    if unknown and not accepts_any:
        raise TypeError(f"model {name!r} got unknown argument(s) {unknown}; valid: {sorted(params)}")
    return entry.builder(**kwargs)


def list_models(family: str | None = None) -> list[str]:
    _load_families()
    return sorted(n for n, e in _MODELS.items() if family is None or e.family == family)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts; BatchNorm running statistics are buffers, not counted."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def model_table() -> list[dict]:
    """One row per registered model with its parameter counts at default arguments."""
    rows = []
    for name in list_models():
        entry = _MODELS[name]
        model = entry.builder()
        total, trainable = count_parameters(model)
        rows.append({"name": name, "family": entry.family, "params": total, "trainable_params": trainable,
                     "skeleton": entry.skeleton, "input_size": list(entry.input_size),
                     "description": entry.description})
    return rows


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel (or torch.compile) wrapper, or the model itself."""
    return getattr(model, "module", getattr(model, "_orig_mod", model))


def online(host: str = "download.pytorch.org", port: int = 443, timeout: float = 3.0) -> bool:
    """A quick reachability probe of torchvision's weight server, so an offline machine warns and
    keeps a random initialisation instead of hanging in a download."""
    import socket
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
