"""A plain decorator registry of model builders (timm/torchvision style).

A builder is a keyword-only function returning an `nn.Module`. Registering records its family,
skeleton and default input size next to it, so `posekit models` lists everything without
building anything; exact parameter counts come from building on PyTorch's "meta" device (no
memory, no initialisation work), only when asked for.
"""
from __future__ import annotations

import functools
import inspect
import os
import threading
import time
import typing
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from posekit.config import ConfigError, _coerce


class ModelArgumentError(ConfigError, TypeError):
    """`model.args` do not fit the builder (unknown name or wrong type); names the model and its
    valid arguments. A ConfigError (one line on the command line) and a TypeError (as Python's
    own error for a bad keyword would be)."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    family: str
    skeleton: str
    input_size: tuple[int, ...]
    description: str
    output: str | None = None  # one of OUTPUT_KINDS, for the families that take any model; None: family-specific

    def signature(self) -> inspect.Signature:
        return inspect.signature(self.builder)

    def arguments(self) -> dict[str, str]:
        """{argument: "type = default"} of the builder, for messages and `posekit models --json`."""
        hints = _hints(self.builder)
        out = {}
        for p in self.signature().parameters.values():
            if p.kind == p.VAR_KEYWORD:
                continue
            tp = hints.get(p.name, p.annotation)
            text = "" if tp is inspect.Parameter.empty else getattr(tp, "__name__", None) or str(tp)
            out[p.name] = text.replace("typing.", "") + ("" if p.default is p.empty else f" = {p.default!r}")
        return out

    def parameter_counts(self) -> tuple[int, int]:
        """(total, trainable) parameters at the default arguments (cached; built on the meta device)."""
        return _parameter_counts(self.name)

    def describe_arguments(self) -> str:
        return ", ".join(f"{k}: {v}" for k, v in self.arguments().items()) or "(none)"


_MODELS: dict[str, ModelEntry] = {}
# what a model returns, so a family for any model (keypoints) picks the codec that decodes it:
# heatmap: (B, [stacks,] K, H, W) maps; regression: (B, K, 2) coordinates in [0, 1] of the input
OUTPUT_KINDS = ("heatmap", "regression")


def register_model(*, family: str, skeleton: str, input_size: tuple[int, ...], description: str = "",
                   output: str | None = None):
    """Decorator: `@register_model(family="hourglass", skeleton="mpii16", input_size=(3, 256, 256),
    output="heatmap")`; `output` (one of OUTPUT_KINDS) when the model's output has a generic decoder."""
    if output is not None and output not in OUTPUT_KINDS:
        raise ValueError(f"register_model: output={output!r}; valid: {', '.join(OUTPUT_KINDS)} or None")

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
        _MODELS[name] = ModelEntry(name, builder, family, skeleton, tuple(input_size), doc, output)
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
        close = difflib.get_close_matches(str(name), list(_MODELS), n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise KeyError(f"unknown model {name!r}.{hint} Registered: {sorted(_MODELS)}") from None


def _hints(builder) -> dict:
    try:
        return typing.get_type_hints(builder)
    except Exception:  # an annotation that does not evaluate: no type checking for that builder
        return {}


def check_model_args(name: str, kwargs: dict) -> dict:
    """`kwargs` for model `name`'s builder, converted to its annotated types (so YAML's "false"
    string is False for a bool argument, "3" is 3 for an int); an unknown argument or a value of
    the wrong type is a ModelArgumentError naming the model and its valid arguments."""
    entry = get_entry(name)
    params = entry.signature().parameters
    accepts_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    unknown = [k for k in kwargs if k not in params]
    if unknown and not accepts_any:
        raise ModelArgumentError(f"model {name!r} got unknown argument(s) {unknown} (model.args); valid: "
                                 f"{entry.describe_arguments()}")
    hints = _hints(entry.builder)
    out = {}
    for key, value in kwargs.items():
        tp = hints.get(key)
        if tp is None or tp is typing.Any:
            out[key] = value
            continue
        try:
            out[key] = _coerce(value, tp, f"model.args.{key}")
        except ConfigError as e:
            raise ModelArgumentError(f"{e} (model {name!r}; valid arguments: {entry.describe_arguments()})") from None
        if key in params:
            _check_int_argument(name, key, out[key], params[key].default)
    return out


# an int model argument far past its default is a typo; sizes are checked exactly by the meta build
MAX_INT_ARGUMENT = 2**24
MAX_COUNT_ARGUMENT = 10**9  # arguments defaulting to 0 or None are counts or steps (unfreeze_at_step)


def _check_int_argument(name: str, key: str, value, default) -> None:
    """Refuse an absurd whole number for an int argument: below 1 when the builder's default is a
    positive int (a size or a count: 0 layers is meaningless), negative when it defaults to 0 or
    None, or beyond a sanity cap. One ModelArgumentError naming model.args.KEY."""
    if isinstance(value, bool) or not isinstance(value, int):
        return
    positive = isinstance(default, int) and not isinstance(default, bool) and default >= 1
    if not positive and not (default is None or default == 0):
        return  # a negative default: the builder gives negative values a meaning of its own
    low, high = (1, MAX_INT_ARGUMENT) if positive else (0, MAX_COUNT_ARGUMENT)
    if not low <= value <= high:
        shown = str(value) if abs(value) < 10**30 else f"an integer of {len(str(abs(value)))} digits"
        raise ModelArgumentError(f"model.args.{key} must be in [{low}, {high}] for model {name!r} (default "
                                 f"{default}), got {shown}")


# the meta-device pre-check of create_model: a build past these is refused before any allocation
MAX_MODULES = 50_000  # the largest registered model has about 1,600 modules
MAX_META_BUILD_S = 30.0
TRAINING_MEMORY_FACTOR = 4  # weights + gradients + two Adam moments


def physical_memory_bytes() -> int | None:
    """This machine's RAM (psutil when installed, else sysconf); None where neither answers."""
    try:
        import psutil
        return int(psutil.virtual_memory().total)
    except ImportError:
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


class _TooLarge(BaseException):  # not an Exception: a builder's own `except Exception` cannot swallow it
    pass


def model_bytes(name: str, kwargs: dict) -> tuple[int, int] | None:
    """(bytes, parameters) of model `name`'s parameters and buffers at `kwargs`, measured by building
    it on the meta device (shapes only: no memory, no initialisation). Only numeric arguments are
    passed, so no weights are loaded or downloaded (booleans and strings barely change the size).
    None when the builder cannot build on meta (the real build then reports any problem itself).
    A build that would create more than MAX_MODULES modules, run past MAX_META_BUILD_S or recurse
    without end is a ModelArgumentError: that is the model.args asking for an absurd network."""
    entry = get_entry(name)
    numeric = {k: v for k, v in kwargs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    me, start, count = threading.get_ident(), time.monotonic(), [0]

    def guard(module, sub_name, submodule):  # called for every submodule registered anywhere
        if threading.get_ident() == me:
            count[0] += 1
            if count[0] > MAX_MODULES or time.monotonic() - start > MAX_META_BUILD_S:
                raise _TooLarge()

    handle = nn.modules.module.register_module_module_registration_hook(guard)
    try:
        with torch.device("meta"):
            model = entry.builder(**numeric)
    except _TooLarge:
        raise ModelArgumentError(f"model {name!r} with model.args {_args_text(kwargs)} would have more than "
                                 f"{MAX_MODULES:,} modules (or take over {MAX_META_BUILD_S:g} s to build); "
                                 "choose smaller model.args") from None
    except RecursionError:
        raise ModelArgumentError(f"model {name!r} with model.args {_args_text(kwargs)} nests too deeply to "
                                 "build; choose smaller model.args") from None
    except Exception:
        return None
    finally:
        handle.remove()
    tensors = [*model.parameters(), *model.buffers()]
    params = sum(p.numel() for p in model.parameters())
    return sum(t.numel() * t.element_size() for t in tensors), params


def _args_text(kwargs: dict) -> str:
    text = repr(kwargs)
    return text if len(text) <= 200 else text[:197] + "..."


def check_model_size(name: str, kwargs: dict) -> None:
    """Refuse, before allocating anything, a model whose weights and buffers times
    TRAINING_MEMORY_FACTOR exceed this machine's RAM: one ModelArgumentError naming model.args and
    the size in GB (the alternative is an OOM kill minutes later)."""
    measured = model_bytes(name, kwargs)
    ram = physical_memory_bytes()
    if measured is None or ram is None:
        return
    size, params = measured
    if size * TRAINING_MEMORY_FACTOR > ram:
        raise ModelArgumentError(
            f"model {name!r} with model.args {_args_text(kwargs)} holds {_bytes_text(size)} of weights and buffers "
            f"({params:,} parameters); training needs about {TRAINING_MEMORY_FACTOR}x that and this machine has "
            f"{_bytes_text(ram)} of RAM: choose smaller model.args")


def _bytes_text(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; unknown keyword arguments or values of the wrong type are an
    error naming the valid ones, a model too large for this machine's memory is refused before
    anything is allocated (`check_model_size`), and a builder's own ValueError names the model."""
    entry = get_entry(name)
    kwargs = check_model_args(name, kwargs)
    check_model_size(name, kwargs)
    try:
        return entry.builder(**kwargs)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"model {name!r} with args {kwargs}: {e}") from None


KEYPOINT_COUNT_ARGS = ("num_joints", "num_keypoints")  # how a builder takes the keypoint count


def model_entry(name: str) -> ModelEntry:
    """`get_entry` for a recipe's model.name: an unknown name is a ConfigError naming the key."""
    try:
        return get_entry(name)
    except KeyError as e:
        raise ConfigError(f"model.name: {e.args[0]}") from None


def output_kind(name: str, codec: str = "auto") -> str:
    """The kind of output (OUTPUT_KINDS) model `name` is decoded as: `codec` (data.codec) when set,
    else the kind the model registered; a model that registered none is a ConfigError asking for it."""
    if codec != "auto":
        return codec
    entry = model_entry(name)
    if entry.output is None:
        raise ConfigError(f"model {entry.name!r} (family {entry.family!r}): set data.codec=heatmap (outputs "
                          "(B, [stacks,] K, H, W) maps) or data.codec=regression (outputs (B, K, 2) in [0, 1])")
    return entry.output


def with_keypoint_count(name: str, args: dict, num_keypoints: int, skeleton_name: str) -> dict:
    """`args` (model.args) with model `name`'s keypoint-count argument (the first of
    KEYPOINT_COUNT_ARGS its builder takes) set to `num_keypoints`, the count of data.skeleton
    `skeleton_name`: a family for any skeleton sets it rather than asking the user to repeat it. A
    builder that takes none, or model.args giving another count, is a ConfigError."""
    params = model_entry(name).signature().parameters
    names = [a for a in KEYPOINT_COUNT_ARGS if a in params]
    if not names:
        raise ConfigError(f"model {name!r} takes no keypoint count ({' or '.join(KEYPOINT_COUNT_ARGS)}); "
                          "the keypoints task sets it from data.skeleton")
    given = args.get(names[0])
    if given is not None and int(given) != num_keypoints:
        raise ConfigError(f"model.args.{names[0]}={given} but data.skeleton {skeleton_name!r} has {num_keypoints} "
                          "keypoints (leave it unset: it follows the skeleton)")
    return {**args, names[0]: num_keypoints}


def list_models(family: str | None = None) -> list[str]:
    _load_families()
    return sorted(n for n, e in _MODELS.items() if family is None or e.family == family)


def list_families() -> list[str]:
    """Families that have at least one registered model."""
    _load_families()
    return sorted({e.family for e in _MODELS.values()})


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts; BatchNorm running statistics are buffers, not counted."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


@functools.lru_cache(maxsize=None)
def _parameter_counts(name: str) -> tuple[int, int]:
    entry = get_entry(name)
    try:  # shapes only: parameters on the meta device take no memory and no initialisation time
        with torch.device("meta"):
            model = entry.builder()
    except Exception:  # a builder doing real tensor work at construction: build it for real
        model = entry.builder()
    return count_parameters(model)


def model_table(family: str | None = None, *, params: bool = False) -> list[dict]:
    """One row per registered model: family, skeleton, input size, description and the builder's
    arguments (static, nothing built); with `params`, its exact parameter counts at default
    arguments. An unknown `family` is a ValueError listing the families."""
    if family is not None and family not in list_families():
        raise ValueError(f"unknown family {family!r}; families with models: {', '.join(list_families())}")
    rows = []
    for name in list_models(family):
        entry = _MODELS[name]
        row = {"name": name, "family": entry.family, "skeleton": entry.skeleton,
               "input_size": list(entry.input_size), "output": entry.output, "description": entry.description,
               "args": entry.arguments()}
        if params:
            row["params"], row["trainable_params"] = entry.parameter_counts()
        rows.append(row)
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
