"""The config stored in a checkpoint or an exported file, rebuilt as data.

Shared by `engine.predictor` (checkpoints) and `engine.onnx_backend` (ONNX metadata): it lives
below both so that neither imports the other for it.
"""
from __future__ import annotations

from posekit.config import Config, ConfigError, deep_merge, parse_overrides
from posekit.engine.recipes import config_from_dict

__all__ = ["WEIGHT_ARGS", "WEIGHT_ARG_SUFFIXES", "config_from_stored", "inference_model_args", "is_weights_arg"]

# model.args that name files to read or weights to fetch: a stranger's checkpoint must not make
# posekit open a path of its choosing (its own state_dict replaces these weights right after)
WEIGHT_ARGS = ("pretrained", "weights", "checkpoint", "init_from")
WEIGHT_ARG_SUFFIXES = ("_weights", "_checkpoint", "_pretrained", "_init_from")


def is_weights_arg(name: str) -> bool:
    return name in WEIGHT_ARGS or name.endswith(WEIGHT_ARG_SUFFIXES)


def inference_model_args(name: str, args: dict) -> dict:
    """`model.args` of a stored config with every weights path / pretrained download set to its
    builder's default (None/False): a model rebuilt from a checkpoint or an export for inference
    gets its weights from the file, never from a path the file names. What such an argument
    implied is kept: openpose_vgg19 picks its input normalisation from `pretrained` when
    `normalization` is unset, so that choice is pinned first."""
    import inspect

    from posekit.models.registry import get_entry
    args = dict(args or {})
    try:
        params = get_entry(name).signature().parameters
    except KeyError:  # a user module's model: its own arguments are its business; paths still go
        params = {}
    norm = params.get("normalization")
    if norm is not None and norm.default is None and args.get("normalization") is None and (
            args.get("pretrained") or args.get("cmu_weights")):
        args["normalization"] = "imagenet" if args.get("pretrained") and not args.get("cmu_weights") else "cmu"
    for key in [k for k in args if is_weights_arg(k)]:
        default = params[key].default if key in params else None
        args[key] = None if default is inspect.Parameter.empty else default
    return args


def config_from_stored(raw, *, source: str, overrides: list[str] | None = None,
                       imports: list[str] | None = None) -> Config:
    """The Config stored in a checkpoint or an ONNX file. It is data: the `imports` it lists are
    never imported (a stranger's file must not run code); only `imports` given here are. Weights
    paths in its model.args are never followed (`inference_model_args`)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        raise ValueError(f"{source}: not a posekit checkpoint (no stored config)")
    if overrides:
        extra = parse_overrides(overrides)
        if "imports" in extra:
            raise ConfigError(f"{source}: imports cannot be set as an override (--set imports=...): the modules a "
                              "model needs are imported only when you say so in code: "
                              "Predictor(CHECKPOINT, imports=['my_module']) or load_for_inference(..., imports=[...]) "
                              "in Python, or `posekit eval CHECKPOINT imports=[my_module]`")
        raw = deep_merge(raw, extra)
    stored_imports = raw.get("imports") or []
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    raw = {**raw, "imports": list(imports or []), "model": {**model, "init_from": None}}
    try:
        cfg = config_from_dict(raw, source=source)
    except ConfigError as e:
        if stored_imports and "unknown task" in str(e):
            raise ConfigError(f"{e}; the file was made with user modules {stored_imports}: import them "
                              "yourself (Python) if you trust them") from None
        raise
    cfg.model.args = inference_model_args(cfg.model.name, cfg.model.args)
    return cfg
