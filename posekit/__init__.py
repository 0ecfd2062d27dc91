"""posekit: a pure-pip PyTorch toolkit for keypoint and pose estimation.

    from posekit import load_config, train, Predictor
    run_dir = train(load_config("configs/mpii_synthetic.yaml", ["train.max_steps=200"]))
    results = Predictor(run_dir / "best.pt")(image)      # list[Results]
"""
from posekit.config import Config, load_config  # noqa: F401
from posekit.results import Results  # noqa: F401
from posekit.skeletons import Skeleton, get_skeleton  # noqa: F401

__version__ = "0.1.0"


def train(cfg):
    """Train a `Config`; returns the run directory. See posekit.engine.trainer."""
    from posekit.engine.trainer import train as _train
    return _train(cfg)


class Predictor:
    """Load a checkpoint once, then call it on RGB images (or a lifter's 2-D poses)."""

    def __init__(self, checkpoint, *, device: str = "cpu", overrides: list[str] | None = None):
        from posekit.engine.trainer import load_for_inference
        self.task, self.model, self.cfg = load_for_inference(checkpoint, overrides, device=device)

    def __call__(self, inputs, **kwargs):
        single = not isinstance(inputs, list)
        results = self.task.predict(self.model, [inputs] if single else inputs, self.cfg, **kwargs)
        return results[0] if single else results
