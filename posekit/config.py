"""Typed recipes: YAML -> nested dataclasses, with `key=value` overrides checked against the types.

A recipe has the sections `model`, `data`, `train`, `eval`, `loss` plus top-level `task`,
`name`, `out_dir`. `data`, `eval` and `loss` are dataclasses declared by the task (each family
has its own options); `model.args` is checked against the model builder's signature when the
model is built. Every default lives in these dataclasses, nowhere else.

This module knows no task: `posekit.engine.recipes` reads a recipe, asks the task for its
sections and builds the `Config` with `build_dataclass` below.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A recipe or override is wrong; the message names the key and the valid choices."""


@dataclass
class ModelConfig:
    name: str = ""
    args: dict = field(default_factory=dict)
    # start from these weights; tensors whose shape differs (a new head) keep their fresh init
    init_from: str | None = None
    # an init_from checkpoint whose tensors match none of the model's is an error unless this is set
    init_allow_no_match: bool = False


@dataclass
class TrainConfig:
    batch_size: int = 16
    max_steps: int | None = None
    max_epochs: int | None = None
    max_time: float | None = None  # seconds
    optimizer: str = "adam"  # adam | adamw | sgd | rmsprop
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd momentum / rmsprop momentum
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    rmsprop_alpha: float = 0.99
    # per-parameter-group learning rates: {name prefix: lr multiplier}; 0 freezes the group
    lr_mult: dict = field(default_factory=dict)
    # {name prefix: steps}: that group's lr stays 0 for its first steps (OpenPose: VGG for 2000)
    lr_hold: dict = field(default_factory=dict)
    schedule: str = "constant"  # constant | step | exp | cosine
    milestones: list[int] = field(default_factory=list)  # step schedule
    gamma: float = 0.1  # step: factor at each milestone; exp: factor per decay_steps
    decay_steps: int = 1000  # exp schedule
    staircase: bool = True  # exp schedule: decay in steps (TF staircase) or continuously
    min_lr_ratio: float = 0.0  # cosine floor
    warmup_steps: int = 0
    grad_clip: float | None = None  # max global grad norm
    ema_decay: float | None = None  # e.g. 0.999; None disables EMA
    # auto: the fastest correct precision for the device (fp32 on CPUs without native bf16);
    # fp32 (also off/none) | bf16 | fp16 (fp16 uses a GradScaler, CUDA only)
    amp: str = "auto"
    channels_last: bool | None = None  # None: the family's default (Task.channels_last)
    compile: bool = False  # torch.compile the training model (pays off only on long runs)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    num_workers: int = 0
    log_every: int = 10
    val_every: int | None = None  # steps; None = once per epoch (and at the end)
    save_every: int | None = None  # steps between last.pt writes; None = at each validation
    resume: str | None = None  # a run dir, a checkpoint file, or "auto" (this run's last.pt when it exists)
    exist_ok: bool = False  # a new run may write into an existing run folder (otherwise refused)
    performance: int = 0  # >0: run this many steps, print samples/s, save nothing
    tensorboard: bool = True  # used when tensorboard is installed
    progress: bool = True


@dataclass
class DataConfig:
    """Base of every task's data section."""
    dataset: str = "synthetic"
    root: str | None = None
    # a record that cannot be read: skip (counted, listed) or error; None = skip when training,
    # error when evaluating
    on_bad_record: str | None = None


@dataclass
class EvalConfig:
    """Base of every task's eval section."""
    batch_size: int = 16
    max_samples: int | None = None


@dataclass
class LossConfig:
    """Base of every task's loss section (a family adds its own options)."""


@dataclass
class Config:
    task: str = ""
    # modules to import before the task is looked up: how a user's own Task/dataset plugs in
    imports: list[str] = field(default_factory=list)
    name: str = "run"
    out_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: Any = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: Any = field(default_factory=EvalConfig)
    loss: Any = field(default_factory=LossConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


# ----------------------------------------------------------------------------------------------
def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value, tp, key: str):
    """Return `value` converted to `tp`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key '{key}' expects {' | '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin in (list, tuple):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' expects a list, got {value!r} ({type(value).__name__})")
        (inner,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' expects a mapping, got {value!r} ({type(value).__name__})")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"config key '{key}' expects bool, got {value!r} ({type(value).__name__})")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}' expects int, got {value!r} (bool)")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
                if f.is_integer():
                    return int(f)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}' expects int, got {value!r} ({type(value).__name__})")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}' expects float, got {value!r} (bool)")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}' expects float, got {value!r} ({type(value).__name__})")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}' expects str, got {value!r} ({type(value).__name__})")
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, key)
    raise ConfigError(f"config key '{key}': unsupported type {tp}")


def build_dataclass(cls, data: dict | None, prefix: str = ""):
    """Instantiate dataclass `cls` from a mapping; unknown keys and wrong types are ConfigErrors."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix or cls.__name__}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f"section '{prefix}'" if prefix else "the top level"
        raise ConfigError(f"unknown config key '{_join(prefix, unknown[0])}' in {where}; valid keys: {sorted(fields)}")
    kwargs = {k: _coerce(v, hints[k], _join(prefix, k)) for k, v in data.items()}
    return cls(**kwargs)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def parse_overrides(overrides: list[str]) -> dict:
    """`["train.lr=1e-3", "model.args.n_stacks=2"]` -> nested dict. Values are parsed as YAML."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of '{part}'")
        node[parts[-1]] = value
    return out


def deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = deep_merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)
