"""posekit: a pure-pip PyTorch toolkit for keypoint and pose estimation.

    from posekit import load_config, train, Predictor
    run_dir = train(load_config("configs/mpii_synthetic.yaml", ["train.max_steps=200"]))
    results = Predictor(run_dir / "best.pt")(image)      # Results
"""
from posekit.config import Config  # noqa: F401
from posekit.results import Results  # noqa: F401
from posekit.skeletons import Skeleton, get_skeleton  # noqa: F401

from posekit._version import __version__  # noqa: F401


def _engine(module: str, what: str):
    """posekit.engine.<module>, or the one `pip install` line when PyTorch is not installed (a
    deploy install: `posekit[runtime]` runs .onnx files through `posekit.runtime.RuntimeModel`)."""
    import importlib

    from posekit.config import missing_extra
    try:
        return importlib.import_module(f"posekit.engine.{module}")
    except ImportError as e:
        error = missing_extra(e, what)
        if error is None:
            raise
        raise error from None


def load_config(path_or_name, overrides=None) -> Config:
    """A recipe (a YAML path, or the name of a recipe shipped with posekit) with `key=value`
    overrides -> a typed, range-checked Config."""
    return _engine("recipes", "posekit.load_config").load_config(path_or_name, overrides)


def train(cfg):
    """Train a `Config`; returns the run directory. See posekit.engine.trainer."""
    return _engine("trainer", "posekit.train").train(cfg)


def Predictor(checkpoint, **kwargs):  # noqa: N802  (reads like the class it returns)
    """Load a checkpoint once, then call it on RGB images (or a lifter's 2-D poses)."""
    return _engine("predictor", "posekit.Predictor").Predictor(checkpoint, **kwargs)
