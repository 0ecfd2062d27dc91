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
from posekit.tasks import Task, register_task


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


@register_task
class TinyTask(Task):
    name = "tiny"
    DataConfig = TinyData
    EvalConfig = EvalConfig
    primary_metric = "mse"
    higher_is_better = False

    def build_model(self, cfg: Config) -> nn.Module:
        hidden = int(cfg.model.args.get("hidden", 32))
        out = int(cfg.model.args.get("out", 4))
        return nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Dropout(float(cfg.model.args.get("dropout", 0.1))), nn.Linear(hidden, hidden),
                             nn.ReLU(), nn.Linear(hidden, out))

    def build_datasets(self, cfg: Config):
        d = cfg.data
        out = int(cfg.model.args.get("out", 4))
        return TinyDataset(d.n_train, 1, d.noise, out), TinyDataset(d.n_val, 2, 0.0, out)

    def training_step(self, model, batch):
        self._steps = getattr(self, "_steps", 0) + 1
        pred = model(batch["x"])
        loss = ((pred.float() - batch["y"]) ** 2).mean()
        if self._cfg_nan is not None and self._steps > self._cfg_nan:
            loss = loss * float("nan")
        return loss, {"abs_err": float((pred.detach().float() - batch["y"]).abs().mean())}

    _cfg_nan = None

    def prepare(self, model, train_set, cfg):
        self._cfg_nan = cfg.data.nan_at_step

    @torch.no_grad()
    def evaluate(self, model, dataset, cfg):
        x = torch.from_numpy(dataset.x).to(next(model.parameters()).device)
        pred = model(x).float().cpu().numpy()
        return {"mse": float(((pred - dataset.y) ** 2).mean())}


def tiny_config(tmp_path, **train) -> Config:
    from posekit.config import config_from_dict
    raw = {"task": "tiny", "name": "tiny", "out_dir": str(tmp_path),
           "train": {"batch_size": 8, "lr": 1.0e-2, "max_steps": 10, "progress": False, "log_every": 1,
                     "tensorboard": False, **train}}
    return config_from_dict(raw)
