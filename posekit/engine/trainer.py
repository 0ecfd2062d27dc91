"""The one training loop for every family.

Read `_train` top to bottom: set-up (devices, seeds, task, model, data, optimiser, schedule),
resume, then the loop, whose body is in one place: forward, backward, update, log, stop,
validate, save. AMP, DDP, EMA, clipping and the bad-record checks are a few visible lines;
resume, validation, checkpoints and the NaN guard are named helpers above it taking one `Run`
(the state a checkpoint saves). No host-device sync per step: the NaN guard (`LossWatch`)
reads the losses at log/validation/save steps, before anything is written. last.pt holds what
an exact resume needs; best.pt only the inference weights (EMA when kept), config and metadata.
The family-specific parts come from the `Task` (posekit/families/base.py).

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
import itertools
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
                                       load_matching, non_finite, rng_state, save_checkpoint, set_rng_state,
                                       slim_checkpoint)
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
# the state the loop updates, and the named helpers it calls
@dataclasses.dataclass
class Run:
    """What the loop and its helpers share: the set-up (fixed once training starts) and the
    training state a checkpoint saves. Helpers take this one object instead of closing over
    the loop's variables."""
    cfg: Config
    task: Task
    info: distributed.DistInfo
    device: torch.device
    amp: str  # "fp32" | "bf16" | "fp16", resolved for the device
    run_dir: Path
    datasets: dict
    can_validate: bool
    saves: bool  # False in performance mode: nothing is written
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: AveragedModel | None
    log: MetricsLog | None = None
    bad_log: robust.BadRecordLog = dataclasses.field(default_factory=lambda: robust.BadRecordLog(None))
    step: int = 0
    epoch: int = 0
    best: float | None = None
    start_time: float = 0.0  # time.time() minus the time trained before a resume (train.max_time)
    ema_updates: int = 0  # host copy of ema.n_averaged: reading the device one would sync each step
    last_good: tuple[Path, int, str] | None = None  # (path, step, note) of the last finite last.pt


def init_weights_from(model: nn.Module, cfg: Config, info: distributed.DistInfo) -> None:
    """model.init_from: copy the tensors that fit (a fine-tune from another skeleton keeps the
    backbone); a file of which nothing fits is refused unless model.init_allow_no_match."""
    from posekit.engine.weights import resolve_checkpoint
    source = load_checkpoint(resolve_checkpoint(cfg.model.init_from))  # a path or a weights name
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


def resume_state(run: Run, resume_from: Path) -> tuple[float, int]:
    """Load last.pt into the run (weights, optimiser, schedule, scaler, EMA, RNG, position);
    returns (seconds already trained, batches of the epoch already trained). A slim best.pt
    (weights only) is refused in one line."""
    t = run.cfg.train
    ckpt = load_checkpoint(resume_from, map_location=run.device)
    held = ckpt.get("config", {}).get("task") if isinstance(ckpt.get("config"), dict) else None
    if held == run.cfg.task and "optimizer" not in ckpt and isinstance(ckpt.get("model"), dict):
        raise ValueError(f"train.resume={t.resume}: {resume_from} holds inference weights only (best.pt and "
                         f"`posekit export --format pt` keep no optimiser state); resume from "
                         f"{resume_from.parent / 'last.pt'}, or start a new run from these weights with "
                         f"model.init_from={resume_from}")
    if held != run.cfg.task or "optimizer" not in ckpt:
        raise ValueError(f"train.resume={t.resume}: {resume_from} is not a training checkpoint of task "
                         f"{run.cfg.task} (it holds {describe(ckpt)})")
    try:
        run.model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"train.resume={t.resume}: the weights in {resume_from} ({describe(ckpt)}) do not "
                         f"fit this model: {str(e).splitlines()[0]}") from None
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.scaler.load_state_dict(ckpt["scaler"])
    if run.ema is not None and ckpt.get("ema") is not None:
        run.ema.load_state_dict(ckpt["ema"])
        run.ema_updates = int(run.ema.n_averaged)
    run.step, run.epoch, best = ckpt["step"], ckpt["epoch"], ckpt.get("best")
    run.best = best if best is not None and math.isfinite(best) else None  # NaN is never a best score
    run.last_good = (resume_from, run.step, "")
    set_rng_state(ckpt["rng"])
    return float(ckpt.get("elapsed", 0.0)), int(ckpt["batch_in_epoch"])


def update_ema(run: Run) -> None:
    """torch's AveragedModel.update_parameters (EMA of parameters and buffers) without its two
    per-step reads of the device counter `n_averaged`: the first update copies, later ones lerp
    by 1 - decay, grouped by device and dtype as torch groups them (same numbers)."""
    ema, model = run.ema, run.model
    pairs = zip(itertools.chain(ema.module.parameters(), ema.module.buffers()),
                itertools.chain(model.parameters(), model.buffers()))
    with torch.no_grad():
        if run.ema_updates == 0:
            for averaged, current in pairs:
                averaged.detach().copy_(current.detach().to(averaged.device))
        else:
            groups: dict[tuple, tuple[list, list]] = {}
            for averaged, current in pairs:
                group = groups.setdefault((averaged.device, averaged.dtype), ([], []))
                group[0].append(averaged.detach())
                group[1].append(current.detach().to(averaged.device))
            average = get_ema_multi_avg_fn(run.cfg.train.ema_decay)
            for averaged, current in groups.values():
                average(averaged, current, None)
        ema.n_averaged += 1
    run.ema_updates += 1


def training_checkpoint(run: Run, resume_at: tuple[int, int]) -> dict:
    """last.pt: everything an exact resume needs. `resume_at` = (epoch, batch) where it continues."""
    return {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
            "ema": run.ema.state_dict() if run.ema is not None else None, "rng": rng_state(),
            "step": run.step, "epoch": resume_at[0], "batch_in_epoch": resume_at[1], "best": run.best,
            "elapsed": time.time() - run.start_time, "config": config_to_dict(run.cfg)}


def save(run: Run, name: str, resume_at: tuple[int, int], note: str = "") -> None:
    """Write last.pt (full) or best.pt (slim: the inference weights, EMA when kept, with config
    and metadata; no optimiser) on rank 0. `note`: said of last.pt in a later NaN stop's
    message (a NaN validation)."""
    if not run.info.is_main or not run.saves:
        return
    state = training_checkpoint(run, resume_at)
    save_checkpoint(slim_checkpoint(state) if name == "best.pt" else state, run.run_dir / name)
    if name == "last.pt":
        run.last_good = (run.run_dir / name, run.step, note)


def ensure_finite_weights(run: Run) -> None:
    """Before anything is saved: weights (and EMA) NaN/inf stop the run; replicas are identical
    under DDP, so every rank decides the same."""
    bad = non_finite(run.model.state_dict()) + (non_finite(run.ema.state_dict()) if run.ema is not None else [])
    if bad:
        raise NonFiniteLossError(f"the weights became non-finite by step {run.step} (epoch {run.epoch}; first: "
                                 f"{bad[0]}); nothing saved; {_last_good(run.last_good)}; "
                                 f"{_divergence_advice(run.cfg, run.amp)}")


def on_every_rank(run: Run, action, *args) -> None:
    """Run `action` (a save; rank 0 does the writing) so that an error on one rank (a full disk)
    stops every rank, not just that one; also the barrier after it."""
    error = None
    try:
        action(*args)
    except Exception as e:
        error = e
    distributed.agree_or_raise(error, run.info)


def save_last(run: Run, watch: LossWatch, resume_at: tuple[int, int]) -> None:
    watch.check(run)
    ensure_finite_weights(run)
    on_every_rank(run, save, run, "last.pt", resume_at)


def validate_and_save(run: Run, watch: LossWatch, resume_at: tuple[int, int]) -> None:
    """last.pt first (a validation that fails never loses the steps since the last save), then
    the metric, its log row and validation.json, then best.pt when it improved. Without
    validation data: last.pt only."""
    watch.check(run)
    ensure_finite_weights(run)
    on_every_rank(run, _validate_on_main, run, resume_at)


def _validate_on_main(run: Run, resume_at: tuple[int, int]) -> None:
    task = run.task
    save(run, "last.pt", resume_at)
    if not (run.can_validate and run.info.is_main):
        return
    eval_model = run.ema.module if run.ema is not None else run.model
    with preserved_rng(), autocast(run.cfg, run.device):
        metrics = evaluate(task, eval_model, run.datasets)
    run.model.train()
    score = float(metrics[task.primary_metric])
    # NaN never counts as best, and never blocks a later finite score from becoming best
    improved = math.isfinite(score) and (run.best is None or (score > run.best if task.higher_is_better
                                                               else score < run.best))
    if improved:
        run.best = score
    elif not math.isfinite(score):
        print(f"step {run.step}: validation {task.primary_metric}={score}: not a score; best.pt not updated",
              flush=True)
    note = "" if math.isfinite(score) else f"; its validation scored {task.primary_metric}={score}"
    scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    run.log.add({"step": run.step, "epoch": run.epoch, **{f"val/{k}": v for k, v in scalars.items()}})
    # the headline numbers; per-joint ones ("name/joint") are in metrics.csv
    print(f"step {run.step}: " + "  ".join(f"{k}={v:.4g}{' ' + metric_unit(k) if metric_unit(k) else ''}"
                                           for k, v in scalars.items() if "/" not in k), flush=True)
    _write_validation_json(run.run_dir / "validation.json", run.step, run.epoch, scalars)
    if improved or note:  # what last.pt says of best / of a NaN score changed
        save(run, "last.pt", resume_at, note)
    if improved:
        save(run, "best.pt", resume_at)
    plot_curves(run.log, run.run_dir / "curves.png", task)


def report_bad_records(run: Run, epoch_bad: list, epoch: int) -> None:
    """End of an epoch (or of the run): every rank's replaced records, counted and listed."""
    records = [r for rank in distributed.gather(epoch_bad, run.info) for r in rank]
    epoch_bad.clear()
    if records and run.info.is_main:
        run.bad_log.add(records)
        print(robust.summary(epoch, records, run.bad_log.path), flush=True)


def log_row(run: Run, loss: torch.Tensor, logs: dict, grad_norm, rate: float) -> dict:
    """A metrics.csv row: the one place per log step where the step's numbers leave the device."""
    row = {"step": run.step, "epoch": run.epoch, "loss": float(loss.item()),
           "lr": run.optimizer.param_groups[0]["lr"], "samples_per_s": rate,
           "time": time.time() - run.start_time, **{k: float(v) for k, v in logs.items()}}
    if grad_norm is not None:
        row["grad_norm"] = float(grad_norm)
    return row


class LossWatch:
    """The NaN guard without a host-device sync per step. Each step's loss (a detached device
    scalar) is kept with its step, epoch and dataset indices; `check` reads them all at once
    where the loop syncs anyway (a log row, a save, a validation, the end, an error), and every
    save is preceded by a check, so a non-finite update is never saved. The steps after the bad
    one ran on NaN weights but are discarded with the run. A stop re-fetches the bad step's
    batch (an item is a pure function of (epoch, index), data/robust.py) to say whether the
    data or the optimisation is to blame. Ranks agree on the earliest bad step."""

    MAX_PENDING = 1000  # a read at least this often, so the list stays small on runs that never log

    def __init__(self, items: robust.TrainingItems, collate):
        self.items, self.collate = items, collate
        self.pending: list[tuple[int, int, list, torch.Tensor]] = []  # (step, epoch, indices, loss)

    def record(self, run: Run, loss: torch.Tensor, step: int, epoch: int, indices: list) -> None:
        self.pending.append((step, epoch, indices, loss.detach()))
        if len(self.pending) >= self.MAX_PENDING:
            self.check(run)

    def check(self, run: Run, *, agree: bool = True) -> None:
        """Raise NonFiniteLossError when any step since the last check had a non-finite loss.
        `agree=False`: this rank's steps only (on an error path, where the other ranks may not
        reach a collective)."""
        pending, self.pending = self.pending, []
        mine = None
        if pending:
            finite = torch.isfinite(torch.stack([p[3].float() for p in pending])).tolist()  # the one read
            mine = next((p for p, ok in zip(pending, finite) if not ok), None)
        firsts = distributed.gather(mine[0] if mine else None, run.info) if agree else [mine and mine[0]]
        bad_steps = [s for s in firsts if s is not None]
        if not bad_steps:
            return
        first = min(bad_steps)
        if mine is None or mine[0] != first:
            raise NonFiniteLossError(f"another process's loss became non-finite at step {first}; stopped without "
                                     f"saving; {_last_good(run.last_good)} (its message says why)")
        step, epoch, indices, loss = mine
        what = f"the loss is {float(loss.float())}"
        data = self._diagnose(epoch, indices)
        if data:
            raise NonFiniteLossError(f"data problem in batch at step {step} (epoch {epoch}): {data}; {what}; "
                                     f"stopped without saving; {_last_good(run.last_good)}; fix or drop those "
                                     f"records before resuming")
        raise NonFiniteLossError(f"{what} at step {step} (epoch {epoch}); stopped without saving; "
                                 f"{_last_good(run.last_good)}; {_divergence_advice(run.cfg, run.amp)}")

    def _diagnose(self, epoch: int, indices: list) -> str | None:
        try:
            packed = self.collate([self.items[(epoch, i)] for i in indices])
        except Exception:  # the diagnosis must never hide the NaN stop itself
            return None
        return diagnose_batch(packed.batch, packed.indices) if packed.batch is not None else None


class StopSignals:
    """SIGINT/SIGTERM: the loop finishes its step, saves last.pt and exits cleanly. Also guards
    torch's SIGCHLD handler, which raises (mid-step) when a DataLoader worker dies: with a stop
    pending that is expected and is reported by `batches` instead."""

    def __init__(self):
        self.received: list[int] = []
        self.previous: dict = {}

    def __enter__(self) -> StopSignals:
        self.previous = {s: signal.signal(s, lambda n, f: self.received.append(n))
                         for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def guard_sigchld(self) -> None:
        chld = getattr(signal, "SIGCHLD", None)  # none on Windows
        if chld is None or chld in self.previous or not callable(signal.getsignal(chld)):
            return
        torch_handler = self.previous[chld] = signal.getsignal(chld)
        signal.signal(chld, lambda n, f: None if self.received else torch_handler(n, f))

    def __exit__(self, *exc) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h)


def batches(loader: DataLoader, signals: StopSignals, workers_lost: list[str]):
    """The epoch's batches. A worker that dies while a stop signal is pending (killed before
    seed_worker made it ignore SIGTERM) ends the epoch early instead of failing the run: the
    main process's state is that of the last finished step, and is saved."""
    try:
        it = iter(loader)
        signals.guard_sigchld()
        yield from it
    except RuntimeError as e:
        if not signals.received:
            raise
        workers_lost.append(" ".join(str(e).split()))


def shut_down_workers(loader: DataLoader) -> None:
    """However the run ends (an error too): workers ignore SIGTERM, so one left to interpreter
    exit would block multiprocessing's final join forever (its terminate() is SIGTERM). Done
    while SIGCHLD is still guarded: one killed at the signal must not make torch's handler
    raise once it is back."""
    if getattr(loader, "_iterator", None) is not None:
        with contextlib.suppress(Exception):
            loader._iterator._shutdown_workers()


def check_replicas_in_sync(run: Run) -> None:
    """DDP keeps replicas identical; verify instead of assuming."""
    flat = torch.cat([p.detach().float().reshape(-1) for p in run.model.parameters()])
    hi, lo = flat.clone(), flat.clone()
    torch.distributed.all_reduce(hi, op=torch.distributed.ReduceOp.MAX)
    torch.distributed.all_reduce(lo, op=torch.distributed.ReduceOp.MIN)
    _log_lines(f"ranks in sync: max parameter difference across {run.info.world_size} processes = "
               f"{float((hi - lo).max()):.3g}", run.info)


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

    # --- where the run writes, model and data ----------------------------------------------
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
        init_weights_from(model, cfg, info)
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

    # --- optimiser, schedule, AMP, EMA -----------------------------------------------------
    optimizer = build_optimizer(model, cfg)
    # one schedule for every group; a group in train.lr_hold keeps lr 0 for its first steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [
        (lambda s, h=g["hold_steps"]: 0.0 if s < h else lr_factor(s, cfg, total_steps)) for g in optimizer.param_groups])
    amp = precision.resolve_amp(t.amp, device)  # "fp32" | "bf16" | "fp16"
    _log_lines(precision.describe(amp, channels_last, t.compile, device), info)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.grad_scaler_enabled(amp))
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay), use_buffers=True) \
        if t.ema_decay else None
    performance = t.performance > 0
    run = Run(cfg=cfg, task=task, info=info, device=device, amp=amp, run_dir=run_dir, datasets=datasets,
              can_validate=can_validate, saves=not performance, model=model, optimizer=optimizer,
              scheduler=scheduler, scaler=scaler, ema=ema)

    # --- resume ----------------------------------------------------------------------------
    trained_s, skip = 0.0, 0
    if resume_from is not None:
        trained_s, skip = resume_state(run, resume_from)
        complete = not performance and ((total_steps is not None and run.step >= total_steps)
                                        or (t.max_time is not None and trained_s >= t.max_time))
        if complete:  # resume honours the run's limits: nothing trained, nothing overwritten
            limit = (f"step {run.step} of {total_steps}" if total_steps is not None
                     else f"{trained_s:.0f} s of {t.max_time:g} s")
            _log_lines(f"run {run_dir} is already complete ({limit}); nothing to train (raise train.max_steps, "
                       f"train.max_epochs or train.max_time to train further)", info)
            return run_dir
        _log_lines(f"resumed from {resume_from} at step {run.step} (epoch {run.epoch})", info)

    # --- DDP, compile ----------------------------------------------------------------------
    model = run.model = distributed.sync_batchnorm(model, device, info)  # global-batch BN statistics under DDP
    train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                      find_unused_parameters=task.find_unused_parameters) if info.enabled else model
    if t.compile:  # checkpoints save `model` (plain keys), never this wrapper
        train_model = precision.compile_model(train_model)

    # --- the run folder: config, metrics, bad records --------------------------------------
    if info.is_main and not performance:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume_from is None:  # a fresh run in a reused folder (exist_ok, or auto before any checkpoint)
            for name in ("last.pt", "best.pt", "bad_records.txt", "curves.png", "validation.json"):
                (run_dir / name).unlink(missing_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        run.log = MetricsLog(run_dir, t.tensorboard, keep_until=run.step)
        run.bad_log = robust.BadRecordLog(run_dir / "bad_records.txt")
    for split, messages in read_skipped.items():
        if messages and info.is_main:
            run.bad_log.add([(split, m) for m in messages])
            where = f" (all listed in {run.bad_log.path})" if run.bad_log.path is not None else ""
            _log_lines(f"{split} data: {len(messages)} bad record(s) skipped while reading (the first: "
                       f"{messages[0]}){where}", info)

    # --- data loading: one loader for the whole run ----------------------------------------
    # workers persist across epochs; every item is fetched under a seed of (train.seed, epoch,
    # index), so workers, epochs and resumes change nothing (data/robust.py), and a bad record
    # is replaced by another sample, counted and listed
    items = robust.TrainingItems(train_set, seed=t.seed, on_bad_record=getattr(cfg.data, "on_bad_record", None))
    collate = robust.Collate(task.collate)
    order = robust.EpochOrder(sampler)
    loader = DataLoader(items, batch_size=per_rank, sampler=order, drop_last=True, num_workers=t.num_workers,
                        collate_fn=collate, worker_init_fn=seed_worker,
                        generator=torch.Generator().manual_seed(t.seed * 1_000_003 + info.rank),
                        pin_memory=device.type == "cuda", persistent_workers=t.num_workers > 0)

    # --- the loop --------------------------------------------------------------------------
    model.train()
    run.start_time = time.time() - trained_s  # a resumed run keeps counting toward train.max_time
    last_log_time, seen_since_log = time.time(), 0
    val_every, save_every = t.val_every or steps_per_epoch, t.save_every
    progress = None
    if info.is_main and t.progress:
        from tqdm import tqdm
        progress = tqdm(total=t.performance or total_steps, initial=0 if performance else run.step,
                        desc=cfg.name, dynamic_ncols=True, leave=False, mininterval=1.0)
    perf_start, perf_steps = None, 0
    perf_warmup = min(2, t.performance)  # the first steps warm up allocators and caches: not timed
    watch = LossWatch(items, collate)  # the NaN guard, read at log/save/validation steps
    epoch_bad: list = []
    workers_lost: list[str] = []
    log_error = None
    done = False
    signals = StopSignals()
    try:
        with signals:
            try:
                while not done:
                    order.set_epoch(run.epoch, skip * per_rank)
                    batch_in_epoch, skip = skip, 0
                    for packed in batches(loader, signals, workers_lost):
                        # bad records: listed at once (a SIGKILL before the epoch ends loses none)
                        epoch_bad += packed.bad
                        if packed.bad and info.is_main:
                            run.bad_log.add(packed.bad)
                        if distributed.any_rank(packed.fatal is not None, info):
                            raise BadRecordError(packed.fatal or "another process stopped on a bad record "
                                                 "(see its message)")
                        task.on_step(model, run.step)
                        batch = to_device(packed.batch, device)
                        if channels_last:
                            batch = precision.channels_last_inputs(batch)

                        # forward, backward, update (no host-device sync: the loss is checked later)
                        with autocast(cfg, device):
                            loss, logs = task.training_step(train_model, batch)
                        watch.record(run, loss, run.step + 1, run.epoch, packed.indices)
                        optimizer.zero_grad(set_to_none=True)
                        scaler.scale(loss).backward()
                        grad_norm = None
                        if t.grad_clip:
                            scaler.unscale_(optimizer)
                            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)  # a tensor
                        try:
                            scaler.step(optimizer)
                        except RuntimeError as e:  # Adam's lr / (1 - beta1**t) past float32 (train.lr=1e38)
                            if "overflow" not in str(e):
                                raise
                            watch.check(run)  # an earlier NaN loss is the cause to report
                            raise NonFiniteLossError(
                                f"the weight update at step {run.step + 1} (epoch {run.epoch}) overflowed float32 "
                                f"({' '.join(str(e).split())}); stopped without saving; {_last_good(run.last_good)}; "
                                f"{_divergence_advice(cfg, amp)}") from None
                        scaler.update()
                        scheduler.step()
                        if ema is not None:
                            update_ema(run)
                        run.step += 1
                        batch_in_epoch += 1
                        seen_since_log += t.batch_size
                        if progress:
                            progress.update(1)

                        if performance:  # samples/s of the steps alone: no logging, nothing saved
                            perf_steps += 1
                            if perf_steps == perf_warmup:
                                perf_start = time.time()
                            if perf_steps >= t.performance:
                                watch.check(run)
                                done = True
                                break
                            continue

                        # log
                        if run.step % t.log_every == 0 or run.step == total_steps:
                            watch.check(run)  # no row is logged past a non-finite loss
                            now = time.time()
                            rate = seen_since_log / max(now - last_log_time, 1e-9)
                            row = log_row(run, loss, logs, grad_norm, rate)
                            if run.log is not None:
                                try:
                                    run.log.add(row)
                                except OSError as e:  # rank 0 only: raised on every rank at the stop check
                                    log_error = e
                            if progress:
                                progress.set_postfix(loss=f"{row['loss']:.4g}", lr=f"{row['lr']:.2e}",
                                                     sps=f"{rate:.1f}")
                            last_log_time, seen_since_log = now, 0

                        # stop (signal, time limit, a failed log write), validate, save
                        out_of_time = t.max_time is not None and time.time() - run.start_time >= t.max_time
                        stop = distributed.any_rank(bool(signals.received) or out_of_time or log_error is not None,
                                                    info)
                        if stop:
                            distributed.agree_or_raise(log_error, info)
                        finished = (total_steps is not None and run.step >= total_steps) or stop
                        resume_at = (run.epoch + 1, 0) if batch_in_epoch >= steps_per_epoch \
                            else (run.epoch, batch_in_epoch)
                        if finished or run.step % val_every == 0:
                            validate_and_save(run, watch, resume_at)
                            last_log_time, seen_since_log = time.time(), 0  # samples/s excludes validation
                        elif save_every and run.step % save_every == 0:
                            save_last(run, watch, resume_at)
                        if finished:
                            done = True
                            break

                    # the epoch ended: by its last batch, a stop, or a signal that also took the workers
                    if workers_lost and not done:
                        save_last(run, watch, (run.epoch + 1, 0) if batch_in_epoch >= steps_per_epoch
                                  else (run.epoch, batch_in_epoch))
                        done = True
                    report_bad_records(run, epoch_bad, run.epoch)
                    if not done:
                        run.epoch += 1
                if signals.received:
                    lost = f" (DataLoader workers lost: {workers_lost[0]})" if workers_lost else ""
                    _log_lines(f"signal {signals.received[0]}: saved {run_dir / 'last.pt'} at step {run.step}{lost}; "
                               f"resume with train.resume={run_dir}", info)
            except Exception as e:
                if not isinstance(e, NonFiniteLossError):
                    watch.check(run, agree=False)  # a NaN loss before the error is its likely cause: said first
                raise
            finally:
                shut_down_workers(loader)
    finally:
        if progress:
            progress.close()
        if run.log is not None:
            run.log.close()

    if info.enabled:
        check_replicas_in_sync(run)
    if performance:
        elapsed = time.time() - perf_start if perf_start else float("nan")
        n = perf_steps - perf_warmup if perf_start else 0
        rate = n * t.batch_size / elapsed if n else float("nan")
        _log_lines(json.dumps({"performance_steps": n, "seconds": round(elapsed, 3),
                               "samples_per_s": round(rate, 2), "global_batch": t.batch_size,
                               "processes": info.world_size, "device": str(device), "amp": amp,
                               "channels_last": channels_last, "compile": t.compile}), info)
    elif info.is_main and run.log is not None:
        plot_curves(run.log, run_dir / "curves.png", task)
    return run_dir
