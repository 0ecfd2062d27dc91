"""Recipes: a YAML file (or a dict) -> a typed `Config`, with the task's own sections.

The task decides the types of `data`, `eval` and `loss`; everything else is in posekit.config.
The recipes posekit ships live inside the package (`posekit/configs/`, package data), so a
wheel install runs them by name; the checkout's top-level `configs/` points at the same folder.
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import yaml

from posekit.config import (Config, ConfigError, ModelConfig, TrainConfig, _coerce, build_dataclass, check_run_name,
                            config_to_dict, deep_merge, parse_overrides)
from posekit.families import get_task_class
from posekit.models import check_model_args, list_models

__all__ = ["RECIPES_DIR", "list_recipes", "resolve_config_path", "config_from_dict", "load_config", "save_config",
           "config_to_dict"]

RECIPES_DIR = Path(__file__).resolve().parents[1] / "configs"  # posekit/configs, shipped in the wheel


def list_recipes() -> list[str]:
    """Names of the recipes shipped with posekit (`posekit train NAME` runs one)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def resolve_config_path(path_or_name: str | Path) -> Path:
    """A YAML path, or a recipe name (`mpii_synthetic`, `mpii_synthetic.yaml` or
    `configs/mpii_synthetic.yaml`) found in ./configs or in the recipes shipped with posekit."""
    p = Path(path_or_name)
    if p.is_file():
        return p
    # a bare name, or configs/NAME(.yaml) as the docs write it: look in ./configs, then the package
    bare = len(p.parts) == 1 or (len(p.parts) == 2 and p.parts[0] == "configs")
    if bare and p.suffix in ("", ".yaml", ".yml"):
        name = p.stem if p.suffix else p.name
        for folder in (Path("configs"), RECIPES_DIR):
            for suffix in (".yaml", ".yml"):
                candidate = folder / f"{name}{suffix}"
                if candidate.is_file():
                    return candidate
    raise FileNotFoundError(f"config not found: {path_or_name} (not a file, and not a recipe in ./configs or "
                            f"{RECIPES_DIR}; shipped recipes: {', '.join(list_recipes())})")


def _kind(value) -> str:
    return "a list" if isinstance(value, list) else "empty" if value is None else f"a {type(value).__name__} ({value!r:.40})"


def config_from_dict(raw: dict, *, source: str = "<dict>") -> Config:
    """Build and check a `Config` (types, allowed ranges, run name) from a recipe mapping."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a recipe must be a mapping of sections (task:, model:, train: ...), "
                          f"got {_kind(raw)}")
    imports = _coerce(raw.get("imports") or [], list[str], "imports")
    for module in imports:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"{source}: imports: cannot import {module!r}: {e}") from None
    task_name = raw.get("task")
    if not task_name:
        raise ConfigError(f"{source}: the recipe needs a top-level 'task' (e.g. task: hourglass)")
    if not isinstance(task_name, str):
        raise ConfigError(f"{source}: config key 'task' expects a task name, got {task_name!r}")
    try:
        task = get_task_class(task_name)
    except KeyError as e:
        raise ConfigError(f"{source}: {e.args[0]}") from None
    allowed = {f.name for f in dataclasses.fields(Config)}
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        raise ConfigError(f"{source}: unknown config key '{unknown[0]}' at the top level; valid keys: {sorted(allowed)}")
    try:
        cfg = Config(task=str(task_name), imports=imports,
                     name=check_run_name(_coerce(raw.get("name", "run"), str, "name")),
                     out_dir=_coerce(raw.get("out_dir", "runs"), str, "out_dir"),
                     model=build_dataclass(ModelConfig, raw.get("model"), "model"),
                     data=build_dataclass(task.DataConfig, raw.get("data"), "data"),
                     train=build_dataclass(TrainConfig, raw.get("train"), "train"),
                     eval=build_dataclass(task.EvalConfig, raw.get("eval"), "eval"),
                     loss=build_dataclass(task.LossConfig, raw.get("loss"), "loss"))
        if cfg.model.name in list_models():  # model.args typed against the builder, before any training
            cfg.model.args = check_model_args(cfg.model.name, cfg.model.args)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


def read_recipe(path_or_name: str | Path) -> tuple[Path, dict]:
    """(path, raw mapping) of a recipe file; YAML errors, non-mappings and absurd nesting are
    one-line ConfigErrors naming the file."""
    path = resolve_config_path(path_or_name)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise ConfigError(f"{path}: the YAML is nested too deeply to be a recipe") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text (UTF-8) YAML file: {e.reason} at byte {e.start}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections (task:, model:, train: ...), "
                          f"got {_kind(raw)}")
    return path, raw


def load_config(path_or_name: str | Path, overrides: list[str] | None = None) -> Config:
    path, raw = read_recipe(path_or_name)
    if overrides:
        raw = deep_merge(raw, parse_overrides(overrides))
    try:
        return config_from_dict(raw, source=str(path))
    except RecursionError:
        raise ConfigError(f"{path}: the recipe is nested too deeply") from None


def save_config(cfg: Config, path: str | Path) -> None:
    from posekit.engine.checkpoint import atomic_write_text
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
