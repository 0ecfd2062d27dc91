"""Typed recipes: YAML -> nested dataclasses, with `key=value` overrides checked against the types.

A recipe has the sections `model`, `data`, `train`, `eval`, `loss` plus top-level `task`,
`name`, `out_dir`. `data`, `eval` and `loss` are dataclasses declared by the task (each family
has its own options); `model.args` is checked against the model builder's signature when the
recipe is read. Every default lives in these dataclasses, nowhere else, and so does every
allowed range: a field declared with `option(default, gt=/ge=/lt=/le=/choices=/pattern=)` (or
listed in its class's `RANGES` mapping) is checked when the section is built, and a value
outside is one ConfigError naming the key and the range. Size-like keys also carry a sanity cap
`most=` (a number, or a callable when it depends on the machine) with a `why=`, so a typo such as
10000 workers is refused before anything is forked or allocated.

This module knows no task: `posekit.engine.recipes` reads a recipe, asks the task for its
sections and builds the `Config` with `build_dataclass` below.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

import yaml


class ConfigError(ValueError):
    """A recipe or override is wrong; the message names the key and the valid choices."""


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message is the one `pip install` line that
    adds it (the CLI shows it as a user error, not an internal one)."""


# which extra brings each optional top-level module (pyproject.toml [project.optional-dependencies])
EXTRA_OF_MODULE = {"torch": "train", "torchvision": "train", "pycocotools": "train", "scipy": "train",
                   "h5py": "train", "matplotlib": "train", "onnxruntime": "runtime", "onnx": "onnx",
                   "onnxscript": "onnx"}


def missing_extra(error: ImportError, what: str, hint: str | None = None) -> MissingExtraError | None:
    """A `MissingExtraError` naming the extra to install when `error` is a missing optional module
    (None for anything else). `what` says what needed it ("posekit train"); `hint` replaces the
    default note on what runs without the [train] extra."""
    name = (getattr(error, "name", None) or "").split(".")[0]
    if not isinstance(error, ModuleNotFoundError) or name not in EXTRA_OF_MODULE:
        return None
    extra = EXTRA_OF_MODULE[name]
    if hint is None:
        hint = "an exported .onnx file predicts without it (pip install 'posekit[runtime]')" if extra == "train" else ""
    return MissingExtraError(f"{what} needs {name}, which is not installed: pip install 'posekit[{extra}]'"
                             + (f"; {hint}" if hint else ""))


# ----------------------------------------------------------------------------------------------
# allowed values: every numeric or choice field declares them, checked when a section is built
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"

# upper bounds of size-like keys (issue 20): far above any real run, low enough that a typo is
# refused in the recipe instead of forking, allocating or looping for minutes
MAX_BATCH = 65536  # samples held in memory at once
MAX_STEPS = 10**9  # any step count (max_steps, warm-up, milestones, logging intervals)
MAX_PIXELS = 8192  # any image, crop or heatmap side
_PIXELS_WHY = "pixels per side; one image of that side already takes hundreds of MB"
MAX_SYNTHETIC = 10**7  # samples of a generated data set
_SYNTHETIC_WHY = "samples generated; a larger set is a typo"
MAX_KEYPOINTS_PER_PERSON = 1000  # as skeletons.MAX_KEYPOINTS (config sits below skeletons' import of it)
MAX_EPOCHS = 10**6
_BATCH_WHY = "a whole batch is held in memory at once"
_STEPS_WHY = "a larger step count is a typo"


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one: containers and
    `taskset` give fewer than the machine has)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def max_workers() -> int:
    """Upper bound of `train.num_workers`: 4 x the usable CPUs, at least 16, so the shipped recipes
    (up to 8 workers) and runs from a 4-CPU machine load anywhere."""
    return max(4 * usable_cpus(), 16)


def _workers_why() -> str:
    return (f"4 x the {usable_cpus()} CPUs this process may use, at least 16: each worker is a separate process "
            "with its own copy of the data pipeline, so more only cost memory")


def _fmt(x) -> str:
    return repr(x) if isinstance(x, str) else f"{x:g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class Check:
    """The allowed values of one config field: a numeric range (`gt`/`ge`/`lt`/`le`, applied to
    each item of a list or each value of a mapping), a list `length`, a set of `choices` with
    `aliases` mapped onto them before type checking (YAML reads `off` as False), or a regular
    expression `pattern`. None always passes when the field's type allows None."""
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    integer: bool = False  # items must be whole numbers (mapping values, e.g. steps)
    length: int | None = None
    choices: tuple | None = None
    aliases: dict | None = None
    pattern: str | None = None
    allowed: str | None = None  # how `pattern` reads in an error message
    # a sanity cap above the range: a value past it is a typo or would exhaust the machine
    # (workers forked, memory allocated), refused with `why`; either may be a callable (no
    # arguments) when it depends on the machine, e.g. `most=max_workers`
    most: Any = None
    why: Any = None

    def bound(self, name: str):
        """`gt`/`ge`/`lt`/`le`/`most` as a number (a callable bound is evaluated now)."""
        value = getattr(self, name)
        return value() if callable(value) else value

    def describe(self) -> str:
        """The allowed range in words, for error messages."""
        if self.choices is not None:
            return " | ".join(map(str, self.choices)) + (
                f" (also {', '.join(str(a) for a in self.aliases if isinstance(a, str))})" if self.aliases else "")
        if self.pattern is not None:
            return self.allowed or self.pattern
        gt, ge, lt, le = (self.bound(n) for n in ("gt", "ge", "lt", "le"))
        lo = f"> {_fmt(gt)}" if gt is not None else f">= {_fmt(ge)}" if ge is not None else ""
        hi = f"< {_fmt(lt)}" if lt is not None else f"<= {_fmt(le)}" if le is not None else ""
        if lo and hi:
            left = "(" if gt is not None else "["
            right = ")" if lt is not None else "]"
            a = gt if gt is not None else ge
            b = lt if lt is not None else le
            text = f"in {left}{_fmt(a)}, {_fmt(b)}{right}"
        else:
            text = lo or hi or "any finite number"
        if self.integer:
            text = f"a whole number {text}"
        if self.length is not None:
            text = f"{self.length} values, each {text}"
        return text

    def normalise(self, value):
        """Map an alias onto its choice (before the type check)."""
        if not self.aliases:
            return value
        probe = value.lower() if isinstance(value, str) else value
        if isinstance(probe, bool) or probe is None or isinstance(probe, str):
            for alias, target in self.aliases.items():
                if type(alias) is type(probe) and alias == probe:
                    return target
        return value

    def __call__(self, value, key: str):
        """`value` (already of the field's type) if allowed; ConfigError naming `key` otherwise."""
        if value is None:
            return value
        if self.choices is not None:
            probe = value.lower() if isinstance(value, str) else value
            if probe not in self.choices:
                raise ConfigError(f"config key '{key}' must be one of {self.describe()}, got {value!r}")
            return probe
        if self.pattern is not None:
            text = str(value).strip().lower()
            if not re.fullmatch(self.pattern, text):
                raise ConfigError(f"config key '{key}' must be {self.describe()}, got {value!r}")
            return text
        if isinstance(value, (list, tuple)):
            if self.length is not None and len(value) != self.length:
                raise ConfigError(f"config key '{key}' must be {self.describe()}, got {value!r}")
            items = list(value)
        elif isinstance(value, dict):  # e.g. lr_mult: YAML reads 1e-1 (no dot) as a string
            value = {k: _as_number(v) for k, v in value.items()}
            items = list(value.values())
        else:
            items = [value]
        for item in items:
            if not self._number_ok(item):
                raise ConfigError(f"config key '{key}' must be {self.describe()}, got {_short(value)}")
        most = self.bound("most")
        for item in items:
            if most is not None and item > most:
                why = self.why() if callable(self.why) else self.why
                raise ConfigError(f"config key '{key}' must be at most {_fmt(most)}, got {_short(value)}"
                                  + (f" ({why})" if why else ""))
        return value

    def _number_ok(self, x) -> bool:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or (isinstance(x, float) and not math.isfinite(x)):
            return False  # (math.isfinite of an int past float range raises OverflowError)
        if self.integer and float(x) != int(x):
            return False
        gt, ge, lt, le = (self.bound(n) for n in ("gt", "ge", "lt", "le"))
        return ((gt is None or x > gt) and (ge is None or x >= ge)
                and (lt is None or x < lt) and (le is None or x <= le))


def _short(value) -> str:
    """repr of a value cut to 80 characters (an int of a million digits stays one short line)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _as_number(x):
    if isinstance(x, str):
        try:
            f = float(x)
        except ValueError:
            return x
        return int(f) if f.is_integer() and "." not in x and "e" not in x.lower() else f
    return x


def option(default=dataclasses.MISSING, *, default_factory=dataclasses.MISSING, **check):
    """A dataclass field with its allowed values: `lr: float = option(1e-3, gt=0)`. Families use it
    in their own `data`/`eval`/`loss` sections (or list them in a `RANGES` class mapping)."""
    return field(default=default, default_factory=default_factory, metadata={"check": Check(**check)})


def field_checks(cls) -> dict[str, Check]:
    """{field name: Check} of a config dataclass: field metadata, then `RANGES` class mappings
    ({name: Check(...)}) of the class and its bases (a subclass overrides its base)."""
    checks: dict[str, Check] = {}
    for klass in reversed(cls.__mro__):  # base first: a field a family redeclares with only a new
        # default (`batch_size: int = 32`) keeps its base's range instead of losing it (issue 20)
        if dataclasses.is_dataclass(klass):
            checks.update({f.name: f.metadata["check"] for f in dataclasses.fields(klass)
                           if isinstance(f.metadata.get("check"), Check)})
        for name, chk in (vars(klass).get("RANGES") or {}).items():
            checks[name] = chk if isinstance(chk, Check) else Check(**chk)
    return checks


def validate(obj, prefix: str = ""):
    """Check every field of a built config dataclass (and nested ones) against its allowed values;
    for configs made in Python rather than from a recipe. Returns `obj`."""
    checks = field_checks(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = _join(prefix, f.name)
        if f.name in checks:
            setattr(obj, f.name, checks[f.name](checks[f.name].normalise(value), key))
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate(value, key)
    if isinstance(obj, Config):
        check_run_name(obj.name)
    return obj


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
    batch_size: int = option(16, ge=1, most=MAX_BATCH, why=_BATCH_WHY)
    max_steps: int | None = option(None, ge=1, most=MAX_STEPS, why=_STEPS_WHY)
    max_epochs: int | None = option(None, ge=1, most=MAX_EPOCHS, why="a larger epoch count is a typo")
    max_time: float | None = option(None, gt=0)  # seconds
    optimizer: str = option("adam", choices=("adam", "adamw", "sgd", "rmsprop"))
    lr: float = option(1e-3, gt=0)
    weight_decay: float = option(0.0, ge=0)
    momentum: float = option(0.9, ge=0, lt=1)  # sgd momentum / rmsprop momentum
    betas: list[float] = option(default_factory=lambda: [0.9, 0.999], length=2, ge=0, lt=1)
    eps: float = option(1e-8, gt=0)
    rmsprop_alpha: float = option(0.99, ge=0, lt=1)
    # per-parameter-group learning rates: {name prefix: lr multiplier}; 0 freezes the group
    lr_mult: dict = option(default_factory=dict, ge=0)
    # {name prefix: steps}: that group's lr stays 0 for its first steps (OpenPose: VGG for 2000)
    lr_hold: dict = option(default_factory=dict, ge=0, most=MAX_STEPS, integer=True, why=_STEPS_WHY)
    schedule: str = option("constant", choices=("constant", "step", "exp", "cosine"))
    milestones: list[int] = option(default_factory=list, ge=0, most=MAX_STEPS, why=_STEPS_WHY)  # step schedule
    gamma: float = option(0.1, gt=0)  # step: factor at each milestone; exp: factor per decay_steps
    decay_steps: int = option(1000, ge=1, most=MAX_STEPS, why=_STEPS_WHY)  # exp schedule
    staircase: bool = True  # exp schedule: decay in steps (TF staircase) or continuously
    min_lr_ratio: float = option(0.0, ge=0, le=1)  # cosine floor
    warmup_steps: int = option(0, ge=0, most=MAX_STEPS, why=_STEPS_WHY)
    grad_clip: float | None = option(None, gt=0)  # max global grad norm; None: no clipping
    ema_decay: float | None = option(None, gt=0, lt=1)  # e.g. 0.999; None disables EMA
    # auto: the fastest correct precision for the device (fp32 on CPUs without native bf16);
    # fp32 (also off/none/false, stored as fp32) | bf16 | fp16 (fp16 uses a GradScaler, CUDA only)
    amp: str = option("auto", choices=("auto", "fp32", "bf16", "fp16"),
                      aliases={"off": "fp32", "none": "fp32", "false": "fp32", False: "fp32", None: "fp32"})
    channels_last: bool | None = None  # None: the family's default (Task.channels_last)
    compile: bool = False  # torch.compile the training model (pays off only on long runs)
    device: str = option("auto", pattern=DEVICE_PATTERN, allowed="auto | cpu | cuda | cuda:N | mps")
    seed: int = option(0, ge=0, le=2**32 - 1)  # numpy's global seed takes 32 bits
    num_workers: int = option(0, ge=0, most=max_workers, why=_workers_why)  # DataLoader worker processes
    log_every: int = option(10, ge=1, most=MAX_STEPS, why=_STEPS_WHY)
    val_every: int | None = option(None, ge=1, most=MAX_STEPS, why=_STEPS_WHY)  # steps; None = once per epoch (and at the end)
    save_every: int | None = option(None, ge=1, most=MAX_STEPS, why=_STEPS_WHY)  # steps between last.pt writes; None = at each validation
    resume: str | None = None  # a run dir, a checkpoint file, or "auto" (this run's last.pt when it exists)
    exist_ok: bool = False  # a new run may write into an existing run folder (otherwise refused)
    performance: int = option(0, ge=0, most=MAX_STEPS, why=_STEPS_WHY)  # >0: run this many steps, print samples/s, save nothing
    tensorboard: bool = True  # used when tensorboard is installed
    progress: bool = True


@dataclass
class DataConfig:
    """Base of every task's data section."""
    dataset: str = "synthetic"
    root: str | None = None
    # a record that cannot be read: skip (counted, listed) or error; None = skip when training,
    # error when evaluating
    on_bad_record: str | None = option(None, choices=("skip", "error"))
    # the size-like options families declare under these names (a family without one is unaffected):
    # a typo there allocates images, heatmaps or synthetic sets without bound (issue 20)
    RANGES = {
        **{name: Check(ge=1, most=MAX_PIXELS, why=_PIXELS_WHY)
           for name in ("input_size", "heatmap_size", "resize", "synthetic_image_size")},
        "crop_offset": Check(ge=0, most=MAX_PIXELS, why=_PIXELS_WHY),
        **{name: Check(ge=1, most=MAX_SYNTHETIC, why=_SYNTHETIC_WHY)
           for name in ("synthetic_train_size", "synthetic_val_size", "synthetic_fit_size", "synthetic_train",
                        "synthetic_val")},
        "train_repeat": Check(ge=1, most=10_000, why="each repeat is another pass of the records per epoch"),
        "tps_grid": Check(ge=2, most=64, why="control points per side of the warp; the TPS system grows as its 4th power"),
        "pool": Check(ge=1, most=64, why="the pooling window in map cells"),
        "miss_num": Check(ge=0, most=64, why="joints dropped per sample"),
        "val_gap": Check(ge=0, most=MAX_STEPS, why="frames between the training part and the validation tail"),
        "min_keypoints": Check(ge=0, most=MAX_KEYPOINTS_PER_PERSON, why="a skeleton has at most that many keypoints"),
    }


@dataclass
class EvalConfig:
    """Base of every task's eval section."""
    batch_size: int = option(16, ge=1, most=MAX_BATCH, why=_BATCH_WHY)
    max_samples: int | None = option(None, ge=1, most=MAX_STEPS, why="a larger sample count is a typo")
    RANGES = {"max_people": Check(ge=1, most=1000, why="people kept per image, COCO keeps 20")}


def check_batch_size(value, key: str = "eval.batch_size") -> int:
    """`value` if it is a whole number in eval.batch_size's range; ConfigError naming `key` otherwise.
    For batch sizes passed in Python (evaluate(..., batch_size=0)) rather than read from a recipe,
    so 0 or None-like values are refused instead of silently replaced by a default."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"config key '{key}' expects int, got {value!r} ({type(value).__name__})")
    return field_checks(EvalConfig)["batch_size"](value, key)


def size_wh(value, key: str) -> tuple[int, int]:
    """A recipe's image size, one number S (S x S) or [W, H], as (W, H); a list of another length is
    a ConfigError naming `key`."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ConfigError(f"{key} must be one number S (S x S) or [W, H], got {list(value)}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


@dataclass
class LossConfig:
    """Base of every task's loss section (a family adds its own options)."""


@dataclass
class Config:
    task: str = ""
    # modules to import before the task is looked up: how a user's own Task/dataset plugs in
    imports: list[str] = field(default_factory=list)
    name: str = "run"  # the run folder inside out_dir: a relative path without '..'
    out_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: Any = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: Any = field(default_factory=EvalConfig)
    loss: Any = field(default_factory=LossConfig)

    @property
    def run_dir(self) -> Path:
        """`out_dir/name`, refused when `name` would lead outside `out_dir`."""
        return Path(self.out_dir) / check_run_name(self.name)


def check_run_name(name: str, key: str = "name") -> str:
    """`name` if it is a plain relative path (no '..', '.', empty part or absolute root), so the
    run folder `out_dir/name` can never be outside `out_dir`; ConfigError otherwise."""
    text = str(name)
    parts = text.replace("\\", "/").split("/")
    if (not text.strip() or text.startswith(("/", "\\", "~")) or PureWindowsPath(text).drive or "\0" in text
            or any(p in ("", ".", "..") for p in parts)):
        raise ConfigError(f"config key '{key}' must be a plain relative folder name inside out_dir "
                          f"(no '..', no absolute path), got {text!r}")
    return text


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
            try:
                return float(value)
            except OverflowError:  # an int beyond float range (1 followed by 400 zeros)
                raise ConfigError(f"config key '{key}' expects float, got an integer too large for a float "
                                  f"({len(str(abs(value)))} digits)") from None
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
    checks = field_checks(cls)
    kwargs = {}
    for k, v in data.items():
        check = checks.get(k)
        if check is not None:
            v = check.normalise(v)
            if check.choices is not None and isinstance(v, bool):  # YAML's on/yes/true
                raise ConfigError(f"config key '{_join(prefix, k)}' must be one of {check.describe()}, got {v!r}")
        v = _coerce(v, hints[k], _join(prefix, k))
        kwargs[k] = check(v, _join(prefix, k)) if check is not None else v
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
