"""A small regression task for exercising the trainer itself (resume, DDP, signals, NaN).

Its data augmentation draws from numpy's global RNG and its model uses dropout, so exact
resume really has to restore every RNG stream.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from posekit.config import Config, DataConfig, EvalConfig
from posekit.families import Evaluator, Task, register_task
from posekit.results import Results
from posekit.skeletons import landmarks


@dataclass
class TinyData(DataConfig):
    n_train: int = 48
    n_val: int = 16
    noise: float = 0.05
    nan_at_step: int | None = None  # produce a NaN loss from this step on (tests)


class TinyDataset(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int, noise: float, out: int = 4):
        rng = np.random.default_rng(seed)
        self.x = rng.normal(size=(n, 8)).astype(np.float32)
        w = np.random.default_rng(123).normal(size=(8, out)).astype(np.float32)
        self.y = np.tanh(self.x @ w)
        self.noise = noise

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        x = self.x[i] + self.noise * np.random.normal(size=8).astype(np.float32)  # global RNG on purpose
        return {"x": torch.from_numpy(x), "y": torch.from_numpy(self.y[i])}


class MSEEvaluator(Evaluator):
    def __init__(self):
        self.sq = []

    def update(self, split, results, batch):
        pred = np.stack([r.keypoints[0, :, 0] for r in results])
        self.sq.append((pred - batch["y"].double().cpu().numpy()) ** 2)

    def compute(self):
        return {"mse": float(np.concatenate(self.sq).mean())}


@register_task
class TinyTask(Task):
    """Predicts `out` numbers, shown as the x coordinates of `out` keypoints (so Results carry them)."""
    name = "tiny"
    DataConfig = TinyData
    EvalConfig = EvalConfig
    primary_metric = "mse"
    higher_is_better = False

    def check_config(self):
        self._steps = 0

    @property
    def skeleton(self):
        return landmarks(int(self.cfg.model.args.get("out", 4)))

    def build_model(self) -> nn.Module:
        args = self.cfg.model.args
        hidden, out = int(args.get("hidden", 32)), int(args.get("out", 4))
        return nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Dropout(float(args.get("dropout", 0.1))),
                             nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out))

    def build_datasets(self, splits=None):
        d = self.cfg.data
        out = int(self.cfg.model.args.get("out", 4))
        return {"train": TinyDataset(d.n_train, 1, d.noise, out), "val": TinyDataset(d.n_val, 2, 0.0, out)}

    def build_loss(self):
        nan_at = self.cfg.data.nan_at_step

        def loss(pred, batch):
            value = ((pred.float() - batch["y"]) ** 2).mean()
            if nan_at is not None and self._steps > nan_at:
                value = value * float("nan")
            return value, {"abs_err": float((pred.detach().float() - batch["y"]).abs().mean())}
        return loss

    def model_inputs(self, batch):
        return batch["x"]

    def training_step(self, model, batch):
        self._steps += 1
        return self.loss(model(batch["x"]), batch)

    def forward_decode(self, model, x, *, outputs=None):
        return {"values": model(x) if outputs is None else outputs}

    def decode_targets(self, batch):
        return {"values": batch["y"]}

    def postprocess(self, decoded, batch):
        values = decoded["values"].detach().double().cpu().numpy()
        kp = np.stack([values, np.zeros_like(values)], axis=-1)
        return [Results(keypoints=kp[i][None], scores=np.ones((1, kp.shape[1])), skeleton=self.skeleton)
                for i in range(len(kp))]

    def build_evaluator(self, datasets):
        return MSEEvaluator()


def tiny_config(tmp_path, **train) -> Config:
    from posekit.engine.recipes import config_from_dict
    raw = {"task": "tiny", "name": "tiny", "out_dir": str(tmp_path),
           "train": {"batch_size": 8, "lr": 1.0e-2, "max_steps": 10, "progress": False, "log_every": 1,
                     "tensorboard": False, **train}}
    return config_from_dict(raw)
