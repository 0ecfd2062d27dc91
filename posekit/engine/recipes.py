"""Recipes: a YAML file (or a dict) -> a typed `Config`, with the task's own sections.

The task decides the types of `data`, `eval` and `loss`; everything else is in posekit.config.
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import yaml

from posekit.config import (Config, ConfigError, ModelConfig, TrainConfig, _coerce, build_dataclass, config_to_dict,
                            deep_merge, parse_overrides)
from posekit.families import get_task_class

__all__ = ["resolve_config_path", "config_from_dict", "load_config", "save_config", "config_to_dict"]


def resolve_config_path(path_or_name: str | Path) -> Path:
    """A YAML path, or a recipe name found in ./configs or the repository's configs/."""
    p = Path(path_or_name)
    if p.is_file():
        return p
    candidates = [Path("configs") / f"{p.name}.yaml", Path(__file__).resolve().parents[2] / "configs" / f"{p.stem}.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"config not found: {path_or_name} (looked for a file and in {[str(c.parent) for c in candidates]})")


def config_from_dict(raw: dict, *, source: str = "<dict>") -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a recipe must be a mapping")
    imports = _coerce(raw.get("imports") or [], list[str], "imports")
    for module in imports:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"{source}: imports: cannot import {module!r}: {e}") from None
    task_name = raw.get("task")
    if not task_name:
        raise ConfigError(f"{source}: the recipe needs a top-level 'task' (e.g. task: hourglass)")
    try:
        task = get_task_class(task_name)
    except KeyError as e:
        raise ConfigError(f"{source}: {e.args[0]}") from None
    allowed = {f.name for f in dataclasses.fields(Config)}
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        raise ConfigError(f"{source}: unknown config key '{unknown[0]}' at the top level; valid keys: {sorted(allowed)}")
    try:
        return Config(task=str(task_name), imports=imports, name=_coerce(raw.get("name", "run"), str, "name"),
                      out_dir=_coerce(raw.get("out_dir", "runs"), str, "out_dir"),
                      model=build_dataclass(ModelConfig, raw.get("model"), "model"),
                      data=build_dataclass(task.DataConfig, raw.get("data"), "data"),
                      train=build_dataclass(TrainConfig, raw.get("train"), "train"),
                      eval=build_dataclass(task.EvalConfig, raw.get("eval"), "eval"),
                      loss=build_dataclass(task.LossConfig, raw.get("loss"), "loss"))
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def load_config(path_or_name: str | Path, overrides: list[str] | None = None) -> Config:
    path = resolve_config_path(path_or_name)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if overrides:
        raw = deep_merge(raw, parse_overrides(overrides))
    return config_from_dict(raw, source=str(path))


def save_config(cfg: Config, path: str | Path) -> None:
    from posekit.engine.checkpoint import atomic_write_text
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
