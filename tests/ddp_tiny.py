"""Run the tiny task under torchrun (or alone) with a given global batch; used by test_distributed."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import tiny_task  # noqa: E402

from posekit.engine.trainer import train  # noqa: E402

out = sys.argv[1]
cfg = tiny_task.tiny_config(out, max_steps=12, batch_size=8, val_every=6, lr=5.0e-3)
cfg.data.noise = 0.0  # no per-rank randomness: DDP must then reproduce the single-process run
cfg.model.args = {"dropout": 0.0}
train(cfg)
