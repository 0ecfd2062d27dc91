"""The one training loop for every family.

Read top to bottom: set-up (devices, seeds, task, model, data, optimiser, schedule), resume,
then the loop. AMP, DDP, EMA, resume, clipping and checkpoints are each a few visible lines.
The family-specific parts come from the `Task` (posekit/tasks.py).

    single process:  posekit train configs/mpii_hourglass4.yaml train.max_steps=1000
    2 GPUs:          torchrun --nproc_per_node=2 -m posekit train configs/...
    2 nodes:         torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d \
                         --rdzv_endpoint=HOST:29500 -m posekit train configs/...
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler

from posekit.config import Config, config_to_dict
from posekit.engine import distributed
from posekit.engine.checkpoint import (inference_state_dict, load_checkpoint, load_matching, rng_state,
                                       save_checkpoint, set_rng_state)
from posekit.engine.evaluation import evaluate, to_device
from posekit.engine.recipes import save_config
from posekit.families import Task, build_task


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is left untouched."""


# ----------------------------------------------------------------------------------------------
# pieces the loop uses
def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """Parameter groups from `train.lr_mult` ({name prefix: multiplier}, longest prefix wins;
    0 freezes). Norm and bias parameters get no weight decay."""
    t = cfg.train
    prefixes = sorted(t.lr_mult, key=len, reverse=True)
    holds = sorted(t.lr_hold, key=len, reverse=True)
    groups: dict[tuple[float, int, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        mult = next((float(t.lr_mult[p]) for p in prefixes if name.startswith(p)), 1.0)
        hold = next((int(t.lr_hold[p]) for p in holds if name.startswith(p)), 0)
        if mult == 0.0:
            param.requires_grad_(False)
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1
        groups.setdefault((mult, hold, no_decay), []).append(param)
    if not groups:
        raise ValueError("no trainable parameters: check train.lr_mult (0 freezes a group)")
    param_groups = [{"params": ps, "lr": t.lr * mult, "weight_decay": 0.0 if no_decay else t.weight_decay,
                     "lr_mult": mult, "hold_steps": hold} for (mult, hold, no_decay), ps in groups.items()]
    if t.optimizer == "adam":
        return torch.optim.Adam(param_groups, lr=t.lr, betas=tuple(t.betas), eps=t.eps)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=t.lr, betas=tuple(t.betas), eps=t.eps)
    if t.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=t.lr, momentum=t.momentum, nesterov=t.momentum > 0)
    if t.optimizer == "rmsprop":
        return torch.optim.RMSprop(param_groups, lr=t.lr, alpha=t.rmsprop_alpha, eps=t.eps, momentum=t.momentum)
    raise ValueError(f"train.optimizer={t.optimizer!r}; valid: adam, adamw, sgd, rmsprop")


def lr_factor(step: int, cfg: Config, total_steps: int | None) -> float:
    """Multiplier of every group's base lr at `step`: linear warm-up, then the schedule."""
    t = cfg.train
    warm = min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps else 1.0
    if t.schedule == "constant":
        f = 1.0
    elif t.schedule == "step":
        f = t.gamma ** sum(step >= m for m in t.milestones)
    elif t.schedule == "exp":  # TF exponential_decay: gamma ** (step / decay_steps), optionally floored
        e = step / t.decay_steps
        f = t.gamma ** (math.floor(e) if t.staircase else e)
    elif t.schedule == "cosine":
        if not total_steps:
            raise ValueError("schedule=cosine needs train.max_steps or train.max_epochs")
        p = min(1.0, max(0, step - t.warmup_steps) / max(1, total_steps - t.warmup_steps))
        f = t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))
    else:
        raise ValueError(f"train.schedule={t.schedule!r}; valid: constant, step, exp, cosine")
    return warm * f


def autocast(cfg: Config, device: torch.device):
    """bf16 autocast on CPU or CUDA; fp16 (CUDA only) pairs with the GradScaler."""
    amp = cfg.train.amp
    if amp in ("auto", "off", "none", "fp32", False, None):  # auto: refined in engine/precision.py
        return contextlib.nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("train.amp=fp16 needs CUDA; use train.amp=bf16 on CPU")
    if amp not in ("bf16", "fp16"):
        raise ValueError(f"train.amp={amp!r}; valid: off, bf16, fp16")
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker init: distinct, reproducible numpy/random streams per worker (for user
    datasets that still draw from the global RNGs; posekit's pipelines use `item_rng`)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def preserved_rng():
    """Evaluation must not shift the training RNG streams (keeps resume exact)."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


class _Resumable(torch.utils.data.Sampler):
    """The epoch's DistributedSampler order, starting `skip` indices in (mid-epoch resume)."""

    def __init__(self, sampler: DistributedSampler, skip: int = 0):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        return iter(list(self.sampler)[self.skip:])

    def __len__(self):
        return len(self.sampler) - self.skip


class MetricsLog:
    """metrics.csv (one row per log step and per validation) and TensorBoard when installed.

    Rows are appended; the file is rewritten only when a row brings a new column (the first
    validation), so logging stays O(1) per row however long the run."""

    def __init__(self, run_dir: Path, tensorboard: bool):
        self.path = run_dir / "metrics.csv"
        self.rows: list[dict] = []
        if self.path.is_file():  # resuming: keep the history
            with self.path.open() as f:
                self.rows = list(csv.DictReader(f))
        self.keys: list[str] = list(self.rows[0]) if self.rows else []
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(run_dir / "tb"))
            except ImportError:
                pass

    def add(self, row: dict) -> None:
        self.rows.append(row)
        new = [k for k in row if k not in self.keys]
        if new or not self.path.is_file():
            self.keys += new
            tmp = self.path.with_suffix(".csv.tmp")
            with tmp.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.keys)
                w.writeheader()
                w.writerows(self.rows)
            tmp.replace(self.path)
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.keys).writerow(row)
        if self.writer is not None:
            for k, v in row.items():
                if k not in ("step", "epoch") and isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, int(row["step"]))

    def close(self):
        if self.writer is not None:
            self.writer.close()


def _log_lines(msg: str, info: distributed.DistInfo) -> None:
    if info.is_main:
        print(msg, flush=True)


# ----------------------------------------------------------------------------------------------
def train(cfg: Config) -> Path:
    """Train `cfg`; returns the run directory (config.yaml, metrics.csv, curves.png, last.pt, best.pt)."""
    t = cfg.train
    info = distributed.setup(t.device)
    try:
        return _train(cfg, info)
    finally:
        distributed.cleanup(info)


def _train(cfg: Config, info: distributed.DistInfo) -> Path:
    t = cfg.train
    task: Task = build_task(cfg)
    run_dir = cfg.run_dir
    device = info.device
    seed_everything(t.seed)  # same seed on every rank: identical initial weights

    # --- model and data --------------------------------------------------------------------
    model = task.build_model()
    if cfg.model.init_from:
        report = load_matching(model, inference_state_dict(load_checkpoint(cfg.model.init_from)))
        _log_lines(f"init_from {cfg.model.init_from}: {len(report['loaded'])} tensors loaded, "
                   f"fresh: {report['shape_mismatch'] + report['missing'] or 'none'}", info)
    datasets = task.build_datasets()
    train_set = datasets["train"]
    can_validate = all(datasets.get(s) is not None for s in task.eval_splits)
    task.prepare(model, datasets)
    model.to(device)
    if t.batch_size % info.world_size:
        raise ValueError(f"train.batch_size={t.batch_size} (global) must be divisible by the "
                         f"{info.world_size} processes")
    per_rank = t.batch_size // info.world_size
    # one sampler for 1 or N processes: with a shared seed the union of the ranks' batches is
    # exactly the single-process global batch
    sampler = DistributedSampler(train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                 seed=t.seed, drop_last=True)
    steps_per_epoch = len(sampler) // per_rank
    if steps_per_epoch == 0:
        raise ValueError(f"the training set has {len(train_set)} samples, fewer than one batch of {t.batch_size}")
    total_steps = t.max_steps or (t.max_epochs * steps_per_epoch if t.max_epochs else None)
    if total_steps is None and t.max_time is None and not t.performance:
        raise ValueError("set a limit: train.max_steps, train.max_epochs or train.max_time")

    optimizer = build_optimizer(model, cfg)
    # one schedule for every group; a group in train.lr_hold keeps lr 0 for its first steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [
        (lambda s, h=g["hold_steps"]: 0.0 if s < h else lr_factor(s, cfg, total_steps)) for g in optimizer.param_groups])
    scaler = torch.amp.GradScaler(device.type, enabled=t.amp == "fp16")
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay), use_buffers=True) \
        if t.ema_decay else None

    # --- resume ----------------------------------------------------------------------------
    step, epoch, skip, best = 0, 0, 0, None
    if t.resume:
        ckpt = load_checkpoint(t.resume, map_location=device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.load_state_dict(ckpt["ema"])
        step, epoch, skip, best = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"], ckpt.get("best")
        set_rng_state(ckpt["rng"])
        _log_lines(f"resumed from {t.resume} at step {step} (epoch {epoch})", info)

    if info.enabled and device.type == "cuda":  # SyncBatchNorm works on GPU modules only
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                      find_unused_parameters=task.find_unused_parameters) if info.enabled else model

    performance = t.performance > 0
    log = None
    if info.is_main and not performance:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        log = MetricsLog(run_dir, t.tensorboard)

    def checkpoint(name: str, resume_at: tuple[int, int]) -> None:
        """`resume_at` = (epoch, batch) where a resumed run continues."""
        if not info.is_main or performance:
            return
        save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                         "ema": ema.state_dict() if ema is not None else None, "rng": rng_state(),
                         "step": step, "epoch": resume_at[0], "batch_in_epoch": resume_at[1], "best": best,
                         "config": config_to_dict(cfg)}, run_dir / name)

    def validate(resume_at: tuple[int, int]) -> None:
        nonlocal best
        if can_validate and info.is_main:
            eval_model = ema.module if ema is not None else model
            with preserved_rng(), autocast(cfg, device):
                metrics = evaluate(task, eval_model, datasets)
            model.train()
            score = float(metrics[task.primary_metric])
            improved = best is None or (score > best if task.higher_is_better else score < best)
            if improved:
                best = score
            log.add({"step": step, "epoch": epoch, **{f"val/{k}": float(v) for k, v in metrics.items()
                                                        if isinstance(v, (int, float))}})
            # the headline numbers; per-joint ones ("name/joint") are in metrics.csv
            print(f"step {step}: " + "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()
                                               if isinstance(v, (int, float)) and "/" not in k), flush=True)
            checkpoint("last.pt", resume_at)
            if improved:
                checkpoint("best.pt", resume_at)
            from posekit.viz import plot_training_curves
            plot_training_curves(log.rows, run_dir / "curves.png", metric_keys=[f"val/{task.primary_metric}"])
        else:
            checkpoint("last.pt", resume_at)
        if info.enabled:
            torch.distributed.barrier()

    # SIGINT/SIGTERM: finish the current step, save, exit cleanly
    stop_signal: list[int] = []
    previous = {s: signal.signal(s, lambda n, f: stop_signal.append(n)) for s in (signal.SIGINT, signal.SIGTERM)}

    # --- the loop --------------------------------------------------------------------------
    model.train()
    start_time, last_log_time, seen_since_log = time.time(), time.time(), 0
    val_every = t.val_every or steps_per_epoch
    save_every = t.save_every
    progress = None
    if info.is_main and t.progress:
        from tqdm import tqdm
        progress = tqdm(total=t.performance or total_steps, initial=0 if performance else step,
                        desc=cfg.name, dynamic_ncols=True, leave=False, mininterval=1.0)
    perf_start, perf_steps = None, 0
    perf_warmup = min(2, t.performance)  # the first steps warm up allocators and caches: not timed
    done = False
    try:
        while not done:
            sampler.set_epoch(epoch)
            # worker seeds depend on (seed, rank, epoch) only, never on the global RNG's position
            loader_rng = torch.Generator().manual_seed(t.seed * 1_000_003 + epoch * 1009 + info.rank)
            loader = DataLoader(train_set, batch_size=per_rank, sampler=_Resumable(sampler, skip * per_rank),
                                drop_last=True, num_workers=t.num_workers, collate_fn=task.collate,
                                worker_init_fn=seed_worker, generator=loader_rng,
                                pin_memory=device.type == "cuda", persistent_workers=False)
            batch_in_epoch = skip
            skip = 0
            for batch in loader:
                task.on_step(model, step)
                batch = to_device(batch, device)
                with autocast(cfg, device):
                    loss, logs = task.training_step(train_model, batch)
                if distributed.any_rank(not bool(torch.isfinite(loss.detach())), info):
                    raise NonFiniteLossError(
                        f"loss is {loss.item()} at step {step} (epoch {epoch}); stopped without saving. "
                        f"The last good checkpoint is {run_dir / 'last.pt'}: resume from it with a lower "
                        f"train.lr, train.grad_clip or train.amp=off")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                grad_norm = None
                if t.grad_clip:
                    scaler.unscale_(optimizer)
                    grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip))
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(model)
                step += 1
                batch_in_epoch += 1
                seen_since_log += t.batch_size

                if performance:
                    perf_steps += 1
                    if perf_steps == perf_warmup:
                        perf_start = time.time()
                    if progress:
                        progress.update(1)
                    if perf_steps >= t.performance:
                        done = True
                        break
                    continue

                if progress:
                    progress.update(1)
                if step % t.log_every == 0 or step == total_steps:
                    now = time.time()
                    rate = seen_since_log / max(now - last_log_time, 1e-9)
                    row = {"step": step, "epoch": epoch, "loss": float(loss.item()),
                           "lr": optimizer.param_groups[0]["lr"], "samples_per_s": rate,
                           "time": now - start_time, **{k: float(v) for k, v in logs.items()}}
                    if grad_norm is not None:
                        row["grad_norm"] = grad_norm
                    if log is not None:
                        log.add(row)
                    if progress:
                        progress.set_postfix(loss=f"{row['loss']:.4g}", lr=f"{row['lr']:.2e}",
                                             sps=f"{rate:.1f}")
                    last_log_time, seen_since_log = now, 0

                out_of_time = t.max_time is not None and time.time() - start_time >= t.max_time
                stop = distributed.any_rank(bool(stop_signal) or out_of_time, info)
                finished = (total_steps is not None and step >= total_steps) or stop
                resume_at = (epoch + 1, 0) if batch_in_epoch >= steps_per_epoch else (epoch, batch_in_epoch)
                if finished or step % val_every == 0:
                    validate(resume_at)
                    last_log_time, seen_since_log = time.time(), 0  # samples/s excludes validation
                elif save_every and step % save_every == 0:
                    checkpoint("last.pt", resume_at)
                if finished:
                    if stop_signal:
                        _log_lines(f"signal {stop_signal[0]}: saved {run_dir / 'last.pt'} at step {step}; "
                                   f"resume with train.resume={run_dir}", info)
                    done = True
                    break
            if not done:
                epoch += 1
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if progress:
            progress.close()
        if log is not None:
            log.close()

    if info.enabled:  # DDP keeps replicas identical; verify instead of assuming
        flat = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])
        hi, lo = flat.clone(), flat.clone()
        torch.distributed.all_reduce(hi, op=torch.distributed.ReduceOp.MAX)
        torch.distributed.all_reduce(lo, op=torch.distributed.ReduceOp.MIN)
        _log_lines(f"ranks in sync: max parameter difference across {info.world_size} processes = "
                   f"{float((hi - lo).max()):.3g}", info)
    if performance:
        elapsed = time.time() - perf_start if perf_start else float("nan")
        n = perf_steps - perf_warmup if perf_start else 0
        rate = n * t.batch_size / elapsed if n else float("nan")
        _log_lines(json.dumps({"performance_steps": n, "seconds": round(elapsed, 3),
                               "samples_per_s": round(rate, 2), "global_batch": t.batch_size,
                               "processes": info.world_size, "device": str(device), "amp": t.amp}), info)
    elif info.is_main and log is not None:
        from posekit.viz import plot_training_curves
        plot_training_curves(log.rows, run_dir / "curves.png", metric_keys=[f"val/{task.primary_metric}"])
    return run_dir
