"""Checkpoints written atomically and loaded safely.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed
over the old one: a process killed mid-write leaves the previous checkpoint intact. Loading
uses `torch.load(weights_only=True)`, so a checkpoint can never run code.
"""
from __future__ import annotations

import errno
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch


class DiskFullError(OSError, ValueError):
    """The disk filled up while writing `path`; what was there before is intact. Also a
    ValueError, so the command line prints it as one line."""

    def __init__(self, path: str | Path, what: str = "the previous checkpoint is intact"):
        super().__init__(f"no space left on device while writing {path}; {what}")
        self.errno, self.path = errno.ENOSPC, str(path)  # not `filename`: it would change str(self)


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def _atomic_write(path: str | Path, write) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(path, _intact(path)) from None
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if is_disk_full(e):  # the temporary file is gone, the old `path` untouched
            raise DiskFullError(path, _intact(path)) from None
        raise
    return path


def _intact(path: Path) -> str:
    return "the previous checkpoint is intact" if path.suffix == ".pt" else f"the previous {path.name} is intact"


def atomic_write_text(path: str | Path, text: str) -> Path:
    return _atomic_write(path, lambda f: f.write(text.encode()))


class _SeenErrors:
    """A file object that remembers the OSError of a failed write: torch.save's zip writer turns
    it into "RuntimeError: [enforce fail at inline_container.cc...] file write failed", losing
    the errno that says the disk is full."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name):
        return getattr(self.f, name)


def _disk_nearly_full(path: Path, margin: int = 1 << 20) -> bool:
    try:
        st = os.statvfs(path.parent)
    except (OSError, AttributeError):  # no statvfs on Windows
        return False
    return st.f_bavail * st.f_frsize < margin


def save_checkpoint(state: dict, path: str | Path) -> Path:
    path = Path(path)

    def write(f):
        seen = _SeenErrors(f)
        try:
            torch.save(state, seen)
        except RuntimeError as e:
            if seen.error is not None:  # the real cause, so a full disk is reported as one
                raise seen.error from None
            if "write" in str(e) and _disk_nearly_full(path):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
            raise
    return _atomic_write(path, write)


def load_checkpoint(path: str | Path, map_location="cpu", *, require: tuple[str, ...] = (),
                    mmap: bool = False) -> dict:
    """The checkpoint at `path` (a file, or a run folder's last.pt), loaded with weights_only.
    Anything but a mapping (a bare tensor, a list) is a one-line ValueError saying what the file
    holds, as is a mapping without the entries in `require` (or with one of the wrong kind):
    callers then never index into something that is not a checkpoint.

    `mmap=True` (inference): tensors are mapped from the file, not read into memory, so a model
    loaded with `load_state_dict(assign=True)` holds the only copy of its weights (and the
    optimiser state of an old fat checkpoint is never read). Files torch cannot map (the legacy
    pre-1.6 format) are read as usual."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap or None)
        except (RuntimeError, ValueError) as e:
            if not mmap or "mmap" not in str(e):
                raise
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, not a checkpoint, or an unsafe pickle
        text = str(e)
        if "Weights only load failed" in text or "weights_only" in text:
            # torch's advice here is to pass weights_only=False: never, for a file from elsewhere
            why = "it holds Python objects beyond tensors and plain values, which posekit never unpickles"
        else:
            why = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        raise ValueError(f"cannot load checkpoint {path}: {why}") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: not a posekit checkpoint: it holds {describe_held(ckpt)}, not a mapping of "
                         "named entries ('model', 'config', ...); give a checkpoint written by posekit train or "
                         "posekit convert")
    missing = [k for k in require if k not in ckpt]
    if missing:
        keys = ", ".join(map(str, list(ckpt)[:6])) + (", ..." if len(ckpt) > 6 else "")
        raise ValueError(f"{path}: not a posekit checkpoint: no {', '.join(repr(k) for k in missing)} entry "
                         f"(it holds {len(ckpt)} entries{': ' + keys if keys else ''}); give a checkpoint written "
                         "by posekit train or posekit convert")
    for key in require:
        kind = _ENTRY_KINDS.get(key)
        if kind is not None and not isinstance(ckpt[key], kind) or (kind is int and isinstance(ckpt[key], bool)):
            raise ValueError(f"{path}: not a posekit checkpoint: its {key!r} entry is {describe_held(ckpt[key])}, "
                             f"not {'a mapping' if kind is dict else 'an integer'}")
    return ckpt


# what a checkpoint entry must be when a caller requires it
_ENTRY_KINDS = {"model": dict, "ema": dict, "config": dict, "optimizer": dict, "scheduler": dict, "scaler": dict,
                "step": int, "epoch": int, "batch_in_epoch": int}


def describe_held(obj) -> str:
    """What a loaded file (or entry) holds, in words, for messages: "a bare tensor of shape (3, 4)",
    "a list of 3 items", "a str"."""
    if isinstance(obj, torch.Tensor):
        return f"a bare tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of {len(obj)} item{'s' if len(obj) != 1 else ''}"
    if isinstance(obj, dict):
        return f"a mapping of {len(obj)} entries"
    return "nothing (None)" if obj is None else f"a {type(obj).__name__}"


def rng_state() -> dict:
    """Every RNG the trainer depends on, in types `weights_only` loading accepts."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2],
             "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
             "numpy_has_gauss": int(np_state[3]), "numpy_gauss": float(np_state[4])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def describe(checkpoint: dict) -> str:
    """What a checkpoint holds, in words ("task hourglass, model hourglass4"), for error messages."""
    config = checkpoint.get("config") if isinstance(checkpoint.get("config"), dict) else {}
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    if not config.get("task"):
        return "no posekit task (no stored config)"
    return f"task {config['task']}, model {model.get('name') or '(the task default)'}"


def non_finite(state_dict: dict) -> list[str]:
    """Names of the floating tensors of `state_dict` holding NaN or inf."""
    return [k for k, v in state_dict.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def inference_state_dict(checkpoint: dict) -> dict:
    """The weights to use for evaluation/prediction: the EMA weights when training kept them
    (a bare state dict, as other tools save, is taken as it is)."""
    if "model" not in checkpoint and checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint
    if checkpoint.get("ema") is not None:
        # AveragedModel keys are "module.<name>" plus its own "n_averaged" counter
        return {k[len("module."):]: v for k, v in checkpoint["ema"].items() if k.startswith("module.")}
    return checkpoint["model"]


def slim_checkpoint(checkpoint: dict) -> dict:
    """What inference needs of a checkpoint (best.pt, `posekit export --format pt`): the weights
    to use (the EMA weights when training kept them, stored as plain `model`), the config and
    the run's metadata; no optimiser, scheduler, scaler, RNG or raw weights beside the EMA ones.
    Every loader reads it like a full checkpoint; resuming from it is refused (use last.pt)."""
    kept = {k: checkpoint[k] for k in ("config", "step", "epoch", "best", "elapsed") if k in checkpoint}
    return {"model": inference_state_dict(checkpoint), **kept, "kind": "inference",
            "weights": "ema" if checkpoint.get("ema") is not None else checkpoint.get("weights", "model")}


def export_weights(source: str | Path, out: str | Path) -> dict:
    """`posekit export --format pt`: `source` (any posekit checkpoint, fat or slim) written as a
    slim one (`slim_checkpoint`) at `out`, atomically; never over `source` itself."""
    source, out = Path(source), Path(out)
    ckpt = load_checkpoint(source, require=("model", "config"), mmap=True)
    src_file = source / "last.pt" if source.is_dir() else source
    if out.exists() and out.resolve() == src_file.resolve():
        raise ValueError(f"--out {out} is the checkpoint being exported; give another path")
    slim = slim_checkpoint(ckpt)
    if not all(isinstance(v, torch.Tensor) for v in slim["model"].values()):
        raise ValueError(f"{source}: not a posekit checkpoint: its weights are not a mapping of tensors")
    save_checkpoint(slim, out)
    return {"path": str(out), "tensors": len(slim["model"]), "mb": out.stat().st_size / 1e6,
            "source_mb": src_file.stat().st_size / 1e6}


def assign_weights(model: torch.nn.Module, state_dict: dict) -> bool:
    """Make `state_dict`'s tensors the model's own (`load_state_dict(assign=True)`: no second
    copy, which with a mapped checkpoint means the weights are read once) when that is safe:
    exactly the model's keys, shapes and dtypes. False (nothing changed) otherwise: the caller
    copies instead, or reports the mismatch."""
    own = model.state_dict()
    if set(own) != set(state_dict) or any(
            not isinstance(state_dict[k], torch.Tensor) or state_dict[k].shape != v.shape
            or state_dict[k].dtype != v.dtype or state_dict[k].device != v.device for k, v in own.items()):
        return False
    model.load_state_dict(state_dict, assign=True)
    return True


def load_matching(model: torch.nn.Module, state_dict: dict) -> dict:
    """Copy tensors whose name and shape match; report the rest (e.g. a new head for another skeleton)."""
    own = model.state_dict()
    loaded, mismatched = [], []
    for k, v in state_dict.items():
        if k in own and own[k].shape == v.shape:
            own[k] = v
            loaded.append(k)
        elif k in own:
            mismatched.append(f"{k} {tuple(v.shape)} -> {tuple(own[k].shape)}")
    model.load_state_dict(own)
    missing = [k for k in own if k not in state_dict]
    return {"loaded": loaded, "shape_mismatch": mismatched, "missing": missing}
