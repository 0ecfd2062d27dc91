"""posekit: a pure-pip PyTorch toolkit for keypoint and pose estimation.

    from posekit import load_config, train, Predictor
    run_dir = train(load_config("configs/mpii_synthetic.yaml", ["train.max_steps=200"]))
    results = Predictor(run_dir / "best.pt")(image)      # Results
"""
from posekit.config import Config  # noqa: F401
from posekit.results import Results  # noqa: F401
from posekit.skeletons import Skeleton, get_skeleton  # noqa: F401

from posekit._version import __version__  # noqa: F401


def load_config(path_or_name, overrides=None) -> Config:
    """A recipe (a YAML path, or the name of a recipe shipped with posekit) with `key=value`
    overrides -> a typed, range-checked Config."""
    from posekit.engine.recipes import load_config as _load
    return _load(path_or_name, overrides)


def train(cfg):
    """Train a `Config`; returns the run directory. See posekit.engine.trainer."""
    from posekit.engine.trainer import train as _train
    return _train(cfg)


def Predictor(checkpoint, **kwargs):  # noqa: N802  (reads like the class it returns)
    """Load a checkpoint once, then call it on RGB images (or a lifter's 2-D poses)."""
    from posekit.engine.predictor import Predictor as _Predictor
    return _Predictor(checkpoint, **kwargs)
