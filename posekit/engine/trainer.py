"""The one training loop for every family.

Read top to bottom: set-up (devices, seeds, task, model, data, optimiser, schedule), resume,
then the loop. AMP, DDP, EMA, resume, clipping and checkpoints are each a few visible lines.
The family-specific parts come from the `Task` (posekit/tasks.py).

    single process:  posekit train configs/mpii_hourglass4.yaml train.max_steps=1000
    2 GPUs:          torchrun --nproc_per_node=2 -m posekit train configs/...
    2 nodes:         torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d \
                         --rdzv_endpoint=HOST:29500 -m posekit train configs/...
    survive kills:   torchrun --max-restarts=3 ... -m posekit train configs/... train.resume=auto

What it promises when things go wrong (kills, full disks, NaN, bad records, reused run
folders) is in docs/reliability.md.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import json
import math
import os
import random
import signal
import socket
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler

from posekit.config import Config, ConfigError, config_to_dict, validate
from posekit.data import robust
from posekit.data.sample import BadRecordError
from posekit.engine import distributed, precision
from posekit.engine.checkpoint import (DiskFullError, describe, inference_state_dict, is_disk_full, load_checkpoint,
                                       load_matching, non_finite, rng_state, save_checkpoint, set_rng_state)
from posekit.engine.evaluation import evaluate, to_device
from posekit.engine.recipes import save_config
from posekit.families import Task, build_task
from posekit.metrics import metric_unit


class NonFiniteLossError(ValueError):
    """The loss or the weights became NaN/inf; nothing was saved, the last good checkpoint is left
    untouched. One line naming the step, that checkpoint and the likely cause (a ValueError, so
    the command line prints just that line)."""


# the files that make a folder a run's: a new run never writes into a folder holding them
RUN_FILES = ("config.yaml", "metrics.csv", "last.pt", "best.pt")
# |value| above this in a batch is not data (a joint at 1e308): the NaN stop blames the data
ABSURD_VALUE = 1e12


def resolve_run(cfg: Config) -> tuple[Config, Path | None]:
    """(the config whose run_dir is where this run writes, the checkpoint to resume from or None).

    train.resume=auto resumes from this run's last.pt when there is one (a torchrun restart),
    else starts fresh. Resuming writes into the checkpoint's own folder. A fresh run refuses a
    folder holding a previous run's files unless train.exist_ok."""
    t = cfg.train
    resume = None
    if t.resume == "auto":
        resume = cfg.run_dir / "last.pt" if (cfg.run_dir / "last.pt").is_file() else None
    elif t.resume:
        resume = Path(t.resume) / "last.pt" if Path(t.resume).is_dir() else Path(t.resume)
        if not resume.is_file():
            raise FileNotFoundError(f"train.resume={t.resume}: checkpoint not found: {resume}")
    if resume is not None:
        run_dir = resume.parent
        if run_dir.resolve() != cfg.run_dir.resolve():
            cfg = dataclasses.replace(cfg, out_dir=str(run_dir.parent), name=run_dir.name)
        return cfg, resume
    found = [f for f in RUN_FILES if (cfg.run_dir / f).exists()]
    if t.resume == "auto":  # a restart killed before its first checkpoint left only these
        found = [f for f in found if f not in ("config.yaml", "metrics.csv")]
    if found and not t.exist_ok and not t.performance:
        raise ConfigError(f"run folder {cfg.run_dir} holds a previous run ({', '.join(found)}); pass "
                          f"train.exist_ok=true to reuse it or train.resume={cfg.run_dir} to continue")
    return cfg, None


class RunLock:
    """An exclusive lock on a run folder, held for the whole run: two trainings writing into one
    folder would interleave metrics.csv and lose one run's weights. A POSIX lock (`lockf`) on
    `.posekit.lock` (which holds the owner's pid and host, for the refusal message); the kernel
    drops it when its holder dies, so a SIGKILLed run leaves no stale lock, only a file the next
    run reuses. Not `flock`: forked DataLoader workers would share a flock and, orphaned by a
    SIGKILL, hold it for seconds, failing the `train.resume=auto` restart; POSIX locks are not
    inherited (and work on NFS). They do not exclude the same process: two trainings in one
    Python process are not caught. Under DDP only rank 0 takes it. Windows has no fcntl: no lock."""

    NAME = ".posekit.lock"

    def __init__(self, run_dir: Path):
        self.run_dir, self.path, self.file = run_dir, run_dir / self.NAME, None
        self.made_dir = False

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # Windows: no flock; two runs into one folder are not caught there
            return self
        if not self.run_dir.is_dir():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.made_dir = True
        for _ in range(10):  # retried only when another run removed the file between open and lock
            try:
                # unbuffered: a write refused by a full disk is not retried (and raised) at close()
                f = open(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644), "r+b", buffering=0)
            except OSError as e:
                if is_disk_full(e):
                    raise DiskFullError(self.path, "nothing of this run was written") from None
                raise
            try:
                fcntl.lockf(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = " ".join(f.read(500).decode(errors="replace").split()) or "another process"
                f.close()
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise ConfigError(f"run folder {self.run_dir} is in use by another training ({holder}; "
                                  f"lock file {self.path}): wait for it to finish, or give this run another "
                                  f"name=/out_dir=") from None
            try:
                same = os.fstat(f.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # we locked a file its previous holder has just removed: take the new one
                f.close()
                continue
            try:  # who holds it, for the refusal message; the lock itself needs no disk space
                f.seek(0)
                f.truncate()
                f.write(f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())
            except OSError:
                with contextlib.suppress(OSError):
                    f.truncate(0)
            self.file = f
            return self
        raise ConfigError(f"run folder {self.run_dir}: cannot take its lock file {self.path} (it keeps being "
                          f"replaced); is another training starting there?")

    def release(self) -> None:
        """Removed while still held (so no other run can hold the removed file), then closed."""
        if self.file is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        self.file.close()
        self.file = None
        if self.made_dir:  # a run that stopped before writing anything leaves no empty folder
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()


def diagnose_batch(batch, indices: list) -> str | None:
    """What is wrong with a batch's numbers (non-finite or absurd values), naming the key and
    the dataset indices of the samples; None when every float in it is plausible."""
    problems: list[str] = []

    def visit(name: str, v) -> None:
        if isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel():
            v = v.detach()
            finite = torch.isfinite(v)
            bad = ~finite | (v.abs() > ABSURD_VALUE)
            if not bool(bad.any()):
                return
            kind = ("non-finite values (NaN/inf)" if not bool(finite.all())
                    else f"absurd values (|x| up to {float(v.abs().max()):.3g})")
            at = ""
            if v.ndim and len(v) == len(indices):
                rows = bad.reshape(len(v), -1).any(1).nonzero().flatten().tolist()
                at = f" in the sample(s) at dataset index {[indices[i] for i in rows[:5]]}"
            problems.append(f"batch[{name!r}] holds {kind}{at}" if name else f"the batch holds {kind}{at}")
        elif isinstance(v, dict):
            for k, x in v.items():
                visit(f"{name}.{k}" if name else str(k), x)
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                visit(f"{name}[{i}]", x)

    visit("", batch)
    return "; ".join(problems[:3]) or None


def _last_good(last_good: tuple[Path, int, str] | None) -> str:
    """(path, step, note): the latest checkpoint saved with finite weights."""
    if last_good is None:
        return "no checkpoint has been saved yet"
    return f"the last good checkpoint is {last_good[0]} (step {last_good[1]}{last_good[2]})"


def _divergence_advice(cfg: Config, amp: str) -> str:
    t = cfg.train
    tips = [f"train.lr={t.lr / 10:g} (now {t.lr:g})", "train.grad_clip=1.0" if not t.grad_clip
            else f"train.grad_clip={t.grad_clip / 10:g} (now {t.grad_clip:g})"]
    if amp != "fp32":
        tips.append("train.amp=fp32")
    return "the batch's inputs and targets are finite, so training diverged: resume with " + ", ".join(tips)


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
    """The autocast of `train.amp` resolved for `device` (engine/precision.py: auto -> fp32 on
    CPU, bf16 or fp16 on CUDA); fp16 pairs with the GradScaler."""
    return precision.autocast(precision.resolve_amp(cfg.train.amp, device), device)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker init: distinct numpy/random streams per worker. Training items do not
    depend on them (each is fetched under its own seed, data/robust.py); this keeps code outside
    an item (a dataset's own start-up) from drawing the same numbers in every worker.

    Workers ignore SIGINT/SIGTERM: Slurm, Kubernetes and Ctrl-C signal the whole process group,
    and torch's worker handler dies on a SIGTERM not sent by its parent, which turned the
    pre-emption into "DataLoader worker killed" with nothing saved. The main process stops the
    run (saves last.pt) and then shuts its workers down itself."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
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


class MetricsLog:
    """metrics.csv (one row per log step and per validation) and TensorBoard when installed.

    Rows are appended; the file is rewritten only when a row brings a new column (the first
    validation), so logging stays O(1) per row however long the run. `keep_until`: the step of
    the checkpoint a run resumes from; rows past it (logged after that checkpoint, before a
    SIGKILL or a full disk) are dropped, so the resumed run does not log those steps twice.
    0 starts the file afresh (a new run in a reused folder)."""

    def __init__(self, run_dir: Path, tensorboard: bool, keep_until: int | None = None):
        self.path = run_dir / "metrics.csv"
        self.rows: list[dict] = []
        if self.path.is_file():  # resuming: keep the history
            with self.path.open(newline="") as f:
                self.rows = [{k: v for k, v in r.items() if k is not None} for r in csv.DictReader(f)]
            if keep_until is not None:
                self.rows = [r for r in self.rows if _row_step(r) is not None and _row_step(r) <= keep_until]
                self._rewrite(list(self.rows[0]) if self.rows else [])  # also heals a half-written last line
        self.keys: list[str] = list(self.rows[0]) if self.rows else []
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(run_dir / "tb"))
            except ImportError:
                pass

    def _rewrite(self, keys: list[str]) -> None:
        if not self.rows:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_suffix(".csv.tmp")
        try:
            with tmp.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=keys)
                w.writeheader()
                w.writerows(self.rows)
            tmp.replace(self.path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if is_disk_full(e):
                raise DiskFullError(self.path) from None
            raise

    def add(self, row: dict) -> None:
        self.rows.append(row)
        new = [k for k in row if k not in self.keys]
        if new or not self.path.is_file():
            self.keys += new
            self._rewrite(self.keys)
        else:
            try:
                with self.path.open("a", newline="") as f:
                    csv.DictWriter(f, fieldnames=self.keys).writerow(row)
            except OSError as e:  # a half-written row is trimmed when the run resumes
                if is_disk_full(e):
                    raise DiskFullError(self.path) from None
                raise
        if self.writer is not None:
            for k, v in row.items():
                if k not in ("step", "epoch") and isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, int(row["step"]))

    def close(self):
        if self.writer is not None:
            self.writer.close()


def plot_curves(log: MetricsLog, path: Path, task: Task) -> None:
    from posekit.viz import plot_training_curves
    try:
        plot_training_curves(log.rows, path, metric_keys=[f"val/{task.primary_metric}"])
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(path, "the previous checkpoint is intact") from None
        raise


def _row_step(row: dict) -> int | None:
    try:
        return int(float(row.get("step") or "nan"))
    except (TypeError, ValueError, OverflowError):
        return None


def _write_validation_json(path: Path, step: int, epoch: int, metrics: dict) -> None:
    """The latest validation's scalars with their units (`units`: metric -> unit, "" = a plain
    number), so a reader never has to guess whether 0.7 is a fraction or a percent."""
    doc = {"step": step, "epoch": epoch, "metrics": {k: (v if math.isfinite(v) else None) for k, v in metrics.items()},
           "units": {k: metric_unit(k) for k in metrics}}
    tmp = path.with_suffix(".json.tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if is_disk_full(e):
            raise DiskFullError(path, "the previous validation.json and checkpoint are intact") from None
        raise


def _check_validation(task: Task, datasets: dict) -> None:
    """The evaluator built on the validation split before the first step: what it cannot score
    (e.g. PCKh without head sizes) stops the run at start, in one line, not an epoch in."""
    evaluator = task.build_evaluator(datasets)
    check = getattr(evaluator, "check", None)
    if check is not None:
        try:
            check(datasets)
        except ValueError as e:
            raise ValueError(f"validation cannot run on this data: {' '.join(str(e).split())}") from None


def _log_lines(msg: str, info: distributed.DistInfo) -> None:
    if info.is_main:
        print(msg, flush=True)


# ----------------------------------------------------------------------------------------------
def train(cfg: Config) -> Path:
    """Train `cfg`; returns the run directory (config.yaml, metrics.csv, curves.png, last.pt, best.pt)."""
    validate(cfg)  # ranges, for a Config built or changed in Python rather than read from a recipe
    t = cfg.train
    info = distributed.setup(t.device)
    try:
        with contextlib.ExitStack() as held:  # the run folder's lock, released however the run ends
            return _train(cfg, info, held)
    finally:
        distributed.cleanup(info)


def _train(cfg: Config, info: distributed.DistInfo, held: contextlib.ExitStack) -> Path:
    t = cfg.train
    task: Task = build_task(cfg)
    device = info.device
    seed_everything(t.seed)  # same seed on every rank: identical initial weights

    # --- model and data --------------------------------------------------------------------
    model = task.build_model()
    error, resume_from = None, None
    try:  # where this run writes, what it resumes from (config errors came first); ranks agree
        cfg, resume_from = resolve_run(cfg)
    except (ConfigError, FileNotFoundError) as e:
        error = e
    distributed.agree_or_raise(error, info)
    t, run_dir = cfg.train, cfg.run_dir
    if info.is_main and not t.performance:  # one training per run folder (performance mode writes nothing)
        try:
            held.callback(RunLock(run_dir).acquire().release)
        except (ConfigError, OSError) as e:
            error = e
    distributed.agree_or_raise(error, info)
    if cfg.model.init_from:
        source = load_checkpoint(cfg.model.init_from)
        try:
            weights = inference_state_dict(source)
        except (KeyError, AttributeError):
            raise ValueError(f"model.init_from={cfg.model.init_from}: holds no model weights") from None
        report = load_matching(model, weights)
        this = f"this run is task {cfg.task}, model {cfg.model.name or '(the task default)'}"
        if not report["loaded"] and not cfg.model.init_allow_no_match:
            raise ValueError(f"model.init_from={cfg.model.init_from}: no tensor matches this model (the file holds "
                             f"{describe(source)}; {this}); set model.init_allow_no_match=true to start from "
                             f"fresh weights anyway")
        other = source.get("config", {}).get("task") if isinstance(source.get("config"), dict) else None
        _log_lines(f"init_from {cfg.model.init_from}"
                   f"{f' ({describe(source)})' if other and other != cfg.task else ''}: "
                   f"{len(report['loaded'])} tensors loaded, "
                   f"fresh: {report['shape_mismatch'] + report['missing'] or 'none'}", info)
    datasets = task.build_datasets()
    train_set = datasets["train"]
    # the records the readers dropped while loading (data.on_bad_record=skip): counted and
    # listed with the ones replaced during training, never dropped silently
    read_skipped = {split: robust.reader_skipped(ds) for split, ds in datasets.items() if ds is not None}
    # validation: an empty split is a mistake (a silently skipped validation picks no best.pt);
    # a split the recipe leaves out means training without validation, said once
    empty = [s for s in task.eval_splits if datasets.get(s) is not None and len(datasets[s]) == 0]
    if empty:
        raise ValueError(f"the validation split(s) {empty} of task {cfg.task} are empty: give validation data, "
                         f"or leave the split out of the recipe to train without validation")
    can_validate = all(datasets.get(s) is not None for s in task.eval_splits)
    if not can_validate and not t.performance:
        missing = [s for s in task.eval_splits if datasets.get(s) is None]
        _log_lines(f"no validation data (split(s) {missing} not given): training without validation; "
                   f"last.pt is saved, best.pt is not", info)
    task.prepare(model, datasets)
    if can_validate and not t.performance:
        # what validation needs of its data is checked now, not at the first validation an epoch in
        _check_validation(task, datasets)
    channels_last = precision.resolve_channels_last(t.channels_last, task)
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
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
        fits = len(train_set) // info.world_size * info.world_size
        raise ValueError(f"the training set has {len(train_set)} samples, fewer than one batch of {t.batch_size}: "
                         f"set train.batch_size<={fits}" if fits else
                         f"the training set has {len(train_set)} samples, fewer than the {info.world_size} processes: "
                         f"give more training data")
    total_steps = t.max_steps or (t.max_epochs * steps_per_epoch if t.max_epochs else None)
    if total_steps is None and t.max_time is None and not t.performance:
        raise ValueError("set a limit: train.max_steps, train.max_epochs or train.max_time")

    optimizer = build_optimizer(model, cfg)
    # one schedule for every group; a group in train.lr_hold keeps lr 0 for its first steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [
        (lambda s, h=g["hold_steps"]: 0.0 if s < h else lr_factor(s, cfg, total_steps)) for g in optimizer.param_groups])
    amp = precision.resolve_amp(t.amp, device)  # "fp32" | "bf16" | "fp16"
    _log_lines(precision.describe(amp, channels_last, t.compile, device), info)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.grad_scaler_enabled(amp))
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay), use_buffers=True) \
        if t.ema_decay else None

    # --- resume ----------------------------------------------------------------------------
    step, epoch, skip, best, trained_s, last_good = 0, 0, 0, None, 0.0, None
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from, map_location=device)
        held = ckpt.get("config", {}).get("task") if isinstance(ckpt.get("config"), dict) else None
        if held != cfg.task or "optimizer" not in ckpt:
            raise ValueError(f"train.resume={t.resume}: {resume_from} is not a training checkpoint of task "
                             f"{cfg.task} (it holds {describe(ckpt)})")
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError) as e:
            raise ValueError(f"train.resume={t.resume}: the weights in {resume_from} ({describe(ckpt)}) do not "
                             f"fit this model: {str(e).splitlines()[0]}") from None
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.load_state_dict(ckpt["ema"])
        step, epoch, skip, best = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"], ckpt.get("best")
        best = best if best is not None and math.isfinite(best) else None  # NaN is never a best score
        trained_s, last_good = float(ckpt.get("elapsed", 0.0)), (resume_from, step, "")
        set_rng_state(ckpt["rng"])
        complete = not t.performance and ((total_steps is not None and step >= total_steps)
                                          or (t.max_time is not None and trained_s >= t.max_time))
        if complete:  # resume honours the run's limits: nothing trained, nothing overwritten
            limit = f"step {step} of {total_steps}" if total_steps is not None else f"{trained_s:.0f} s of {t.max_time:g} s"
            _log_lines(f"run {run_dir} is already complete ({limit}); nothing to train (raise train.max_steps, "
                       f"train.max_epochs or train.max_time to train further)", info)
            return run_dir
        _log_lines(f"resumed from {resume_from} at step {step} (epoch {epoch})", info)

    model = distributed.sync_batchnorm(model, device, info)  # global-batch BN statistics under DDP (CPU too)
    train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                      find_unused_parameters=task.find_unused_parameters) if info.enabled else model
    if t.compile:  # checkpoints save `model` (plain keys), never this wrapper
        train_model = precision.compile_model(train_model)

    performance = t.performance > 0
    log, bad_log = None, robust.BadRecordLog(None)
    if info.is_main and not performance:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume_from is None:  # a fresh run in a reused folder (exist_ok, or auto before any checkpoint)
            for name in ("last.pt", "best.pt", "bad_records.txt", "curves.png", "validation.json"):
                (run_dir / name).unlink(missing_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        log = MetricsLog(run_dir, t.tensorboard, keep_until=step)
        bad_log = robust.BadRecordLog(run_dir / "bad_records.txt")
    for split, messages in read_skipped.items():
        if messages and info.is_main:
            bad_log.add([(split, m) for m in messages])
            where = f" (all listed in {bad_log.path})" if bad_log.path is not None else ""
            _log_lines(f"{split} data: {len(messages)} bad record(s) skipped while reading (the first: "
                       f"{messages[0]}){where}", info)

    def checkpoint(name: str, resume_at: tuple[int, int], note: str = "") -> None:
        """`resume_at` = (epoch, batch) where a resumed run continues; `note`: said of it in a
        later NaN stop's message (a NaN validation)."""
        nonlocal last_good
        if not info.is_main or performance:
            return
        save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                         "ema": ema.state_dict() if ema is not None else None, "rng": rng_state(),
                         "step": step, "epoch": resume_at[0], "batch_in_epoch": resume_at[1], "best": best,
                         "elapsed": time.time() - start_time, "config": config_to_dict(cfg)}, run_dir / name)
        if name == "last.pt":
            last_good = (run_dir / name, step, note)

    def ensure_finite() -> None:
        """Before anything is saved: weights (and EMA) NaN/inf stop the run; replicas are
        identical under DDP, so every rank decides the same."""
        bad = non_finite(model.state_dict()) + (non_finite(ema.state_dict()) if ema is not None else [])
        if bad:
            raise NonFiniteLossError(f"the weights became non-finite by step {step} (epoch {epoch}; first: {bad[0]}); "
                                     f"nothing saved; {_last_good(last_good)}; {_divergence_advice(cfg, amp)}")

    def validate(resume_at: tuple[int, int]) -> None:
        ensure_finite()
        error = None
        try:
            _validate(resume_at)
        except Exception as e:  # e.g. a full disk on rank 0: every rank stops, not just that one
            error = e
        distributed.agree_or_raise(error, info)  # also the barrier after validation

    def _validate(resume_at: tuple[int, int]) -> None:
        nonlocal best
        if can_validate and info.is_main:
            # saved first: a validation that fails (its data, a bug) never loses the steps since the last save
            checkpoint("last.pt", resume_at)
            eval_model = ema.module if ema is not None else model
            with preserved_rng(), autocast(cfg, device):
                metrics = evaluate(task, eval_model, datasets)
            model.train()
            score = float(metrics[task.primary_metric])
            # NaN never counts as best, and never blocks a later finite score from becoming best
            improved = math.isfinite(score) and (best is None or (score > best if task.higher_is_better
                                                                   else score < best))
            if improved:
                best = score
            elif not math.isfinite(score):
                print(f"step {step}: validation {task.primary_metric}={score}: not a score; best.pt not updated",
                      flush=True)
            note = "" if math.isfinite(score) else f"; its validation scored {task.primary_metric}={score}"
            log.add({"step": step, "epoch": epoch, **{f"val/{k}": float(v) for k, v in metrics.items()
                                                        if isinstance(v, (int, float))}})
            # the headline numbers; per-joint ones ("name/joint") are in metrics.csv
            scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
            print(f"step {step}: " + "  ".join(f"{k}={v:.4g}{' ' + metric_unit(k) if metric_unit(k) else ''}"
                                               for k, v in scalars.items() if "/" not in k), flush=True)
            _write_validation_json(run_dir / "validation.json", step, epoch, scalars)
            if improved or note:  # what last.pt says of best / of a NaN score changed
                checkpoint("last.pt", resume_at, note)
            if improved:
                checkpoint("best.pt", resume_at)
            plot_curves(log, run_dir / "curves.png", task)
        else:
            checkpoint("last.pt", resume_at)

    def report_bad_records(epoch: int) -> None:
        """End of an epoch (or of the run): every rank's replaced records, counted and listed."""
        records = [r for rank in distributed.gather(epoch_bad, info) for r in rank]
        epoch_bad.clear()
        if records and info.is_main:
            bad_log.add(records)
            print(robust.summary(epoch, records, bad_log.path), flush=True)

    # SIGINT/SIGTERM: finish the current step, save, exit cleanly
    stop_signal: list[int] = []
    previous = {s: signal.signal(s, lambda n, f: stop_signal.append(n)) for s in (signal.SIGINT, signal.SIGTERM)}

    # --- the loop --------------------------------------------------------------------------
    model.train()
    # time already trained (a resumed run keeps counting toward train.max_time)
    start_time, last_log_time, seen_since_log = time.time() - trained_s, time.time(), 0
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
    # one loader for the whole run (workers persist across epochs); every item is fetched under
    # a seed of (train.seed, epoch, index), so workers, epochs and resumes change nothing
    # (data/robust.py), and a bad record is replaced by another sample, counted and listed
    items = robust.TrainingItems(train_set, seed=t.seed, on_bad_record=getattr(cfg.data, "on_bad_record", None))
    order = robust.EpochOrder(sampler)
    loader = DataLoader(items, batch_size=per_rank, sampler=order, drop_last=True, num_workers=t.num_workers,
                        collate_fn=robust.Collate(task.collate), worker_init_fn=seed_worker,
                        generator=torch.Generator().manual_seed(t.seed * 1_000_003 + info.rank),
                        pin_memory=device.type == "cuda", persistent_workers=t.num_workers > 0)
    epoch_bad: list = []
    log_error = None
    workers_lost: list[str] = []

    def batches():
        """The epoch's batches. A worker that dies while a stop signal is pending (killed before
        seed_worker made it ignore SIGTERM) ends the epoch early instead of failing the run: the
        main process's state is that of the last finished step, and is saved."""
        try:
            it = iter(loader)
            guard_sigchld()
            while True:
                try:
                    packed = next(it)
                except StopIteration:
                    return
                yield packed
        except RuntimeError as e:
            if not stop_signal:
                raise
            workers_lost.append(" ".join(str(e).split()))

    def guard_sigchld() -> None:
        """torch's SIGCHLD handler raises, wherever the main process is (mid-step), when a worker
        dies; with a stop signal pending that is expected: the loader reports it at the next
        batch instead (see batches())."""
        chld = getattr(signal, "SIGCHLD", None)  # none on Windows
        if chld is None or chld in previous or not callable(signal.getsignal(chld)):
            return
        torch_handler = previous[chld] = signal.getsignal(chld)
        signal.signal(chld, lambda n, f: None if stop_signal else torch_handler(n, f))

    def said_stopped() -> None:
        lost = f" (DataLoader workers lost: {workers_lost[0]})" if workers_lost else ""
        _log_lines(f"signal {stop_signal[0]}: saved {run_dir / 'last.pt'} at step {step}{lost}; "
                   f"resume with train.resume={run_dir}", info)

    try:
        while not done:
            order.set_epoch(epoch, skip * per_rank)
            batch_in_epoch = skip
            skip = 0
            for packed in batches():
                epoch_bad += packed.bad
                if packed.bad and info.is_main:
                    bad_log.add(packed.bad)  # listed at once: a SIGKILL before the epoch ends loses none
                if distributed.any_rank(packed.fatal is not None, info):
                    raise BadRecordError(packed.fatal or "another process stopped on a bad record (see its message)")
                batch = packed.batch
                task.on_step(model, step)
                batch = to_device(batch, device)
                if channels_last:
                    batch = precision.channels_last_inputs(batch)
                with autocast(cfg, device):
                    loss, logs = task.training_step(train_model, batch)
                if distributed.any_rank(not bool(torch.isfinite(loss.detach())), info):
                    data = diagnose_batch(batch, packed.indices)
                    what = f"the loss is {float(loss.detach().float())}"
                    if data:
                        raise NonFiniteLossError(f"data problem in batch at step {step + 1} (epoch {epoch}): {data}; "
                                                 f"{what}; stopped without saving; {_last_good(last_good)}; fix or "
                                                 f"drop those records before resuming")
                    raise NonFiniteLossError(f"{what} at step {step + 1} (epoch {epoch}); stopped without saving; "
                                             f"{_last_good(last_good)}; {_divergence_advice(cfg, amp)}")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                grad_norm = None
                if t.grad_clip:
                    scaler.unscale_(optimizer)
                    grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip))
                try:
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    if ema is not None:
                        ema.update_parameters(model)
                except RuntimeError as e:  # e.g. Adam's lr / (1 - beta1**t) past float32 (train.lr=1e38)
                    if "overflow" not in str(e):
                        raise
                    raise NonFiniteLossError(f"the weight update at step {step + 1} (epoch {epoch}) overflowed "
                                             f"float32 ({' '.join(str(e).split())}); stopped without saving; "
                                             f"{_last_good(last_good)}; {_divergence_advice(cfg, amp)}") from None
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
                        try:
                            log.add(row)
                        except OSError as e:  # rank 0 only: raised on every rank at the stop check below
                            log_error = e
                    if progress:
                        progress.set_postfix(loss=f"{row['loss']:.4g}", lr=f"{row['lr']:.2e}",
                                             sps=f"{rate:.1f}")
                    last_log_time, seen_since_log = now, 0

                out_of_time = t.max_time is not None and time.time() - start_time >= t.max_time
                stop = distributed.any_rank(bool(stop_signal) or out_of_time or log_error is not None, info)
                if stop:
                    distributed.agree_or_raise(log_error, info)
                finished = (total_steps is not None and step >= total_steps) or stop
                resume_at = (epoch + 1, 0) if batch_in_epoch >= steps_per_epoch else (epoch, batch_in_epoch)
                if finished or step % val_every == 0:
                    validate(resume_at)
                    last_log_time, seen_since_log = time.time(), 0  # samples/s excludes validation
                elif save_every and step % save_every == 0:
                    ensure_finite()
                    error = None
                    try:
                        checkpoint("last.pt", resume_at)
                    except Exception as e:
                        error = e
                    distributed.agree_or_raise(error, info)
                if finished:
                    report_bad_records(epoch)
                    if stop_signal:
                        said_stopped()
                    done = True
                    break
            if workers_lost and not done:  # stopped by a signal that also took the workers
                ensure_finite()
                error = None
                try:
                    checkpoint("last.pt", (epoch + 1, 0) if batch_in_epoch >= steps_per_epoch
                               else (epoch, batch_in_epoch))
                except Exception as e:
                    error = e
                distributed.agree_or_raise(error, info)
                report_bad_records(epoch)
                said_stopped()
                done = True
            if not done:
                report_bad_records(epoch)
                epoch += 1
    finally:
        if getattr(loader, "_iterator", None) is not None:  # however the run ends (an error too):
            # workers ignore SIGTERM, so one left to interpreter exit would block multiprocessing's
            # final join forever (its terminate() is SIGTERM)
            # workers shut down while SIGCHLD is still guarded: one killed at the signal must not
            # make torch's handler raise once it is back
            with contextlib.suppress(Exception):
                loader._iterator._shutdown_workers()
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
                               "processes": info.world_size, "device": str(device), "amp": amp,
                               "channels_last": channels_last, "compile": t.compile}), info)
    elif info.is_main and log is not None:
        plot_curves(log, run_dir / "curves.png", task)
    return run_dir
