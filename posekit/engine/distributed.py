"""torchrun environment -> DistributedDataParallel set-up. torchrun does the launching and the
multi-node rendezvous; this only reads its environment variables."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from posekit.engine import sync_batchnorm as _sync_bn


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    # a gloo group for the loop's host-side agreements (stop? a fatal record? who saw a NaN?) when
    # the main backend is NCCL: a flag all-reduced there would be a GPU tensor read back every step,
    # waiting for the whole queue; over gloo it is a CPU message and the GPU keeps running
    control: object | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class DeviceError(ValueError):
    """A device that this machine cannot give (the CLI prints it as one line, not an internal error)."""


def _asked(option: str, name: str) -> str:
    return f"{option} {name}" if option.startswith("-") else f"{option}={name}"


def pick_device(name: str, local_rank: int = 0, *, option: str = "train.device") -> torch.device:
    """`name` (auto | cpu | cuda | cuda:N | mps) -> a device this machine has. `option` is how the
    user asked for it (`train.device`, `--device`), so a refusal names what to change."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise DeviceError(f"unknown device {_asked(option, repr(name))}; use auto, cpu, cuda, cuda:N or mps") from None
    cpu = _asked(option, "cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"CUDA was asked for ({_asked(option, name)}) but torch.cuda.is_available() is False "
                              f"on this machine (a CPU-only torch build, or no usable GPU/driver); use {cpu}")
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
        count = torch.cuda.device_count()
        if device.index >= count:
            raise DeviceError(f"{_asked(option, name)} asks for GPU {device.index} but this machine has {count} "
                              f"(cuda:0..cuda:{count - 1}); pick one of them or use {cpu}")
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError(f"MPS was asked for ({_asked(option, name)}) but torch.backends.mps.is_available() is "
                          f"False on this machine; use {cpu}")
    return device


def setup(device_name: str = "auto") -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    control = None
    if world > 1 and dist.get_backend() != "gloo":
        control = dist.new_group(backend="gloo")  # collective: every rank creates it here
    return DistInfo(rank, local_rank, world, device, control)


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()  # without it gloo sometimes aborts at shutdown (see env.md)
        dist.destroy_process_group()


# device types torch's own nn.SyncBatchNorm accepts (torch/nn/modules/batchnorm.py)
_TORCH_SYNC_BN = ("cuda", "hpu", "xpu", torch._C._get_privateuse1_backend_name())


def sync_batchnorm(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """Under DDP, make `model`'s BatchNorm layers normalise with the statistics of the global batch,
    so N processes train what one process trains on the same global batch: torch's SyncBatchNorm
    on GPU, posekit's all_reduce version on CPU/gloo (torch's refuses CPU tensors). Where neither
    applies, warn once that BatchNorm statistics are per process. Eval-mode BatchNorm is unchanged
    and state_dict keys stay the same, so checkpoints load into the plain model."""
    if not info.enabled:
        return model
    found = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not found:
        return model
    world = info.world_size
    if device.type in _TORCH_SYNC_BN:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        done, left = len(found), []
    elif device.type == "cpu":
        done, left = _sync_bn.convert(model)
    else:
        done, left = 0, [n or type(m).__name__ for n, m in model.named_modules()
                         if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if info.is_main:
        if done:
            print(f"BatchNorm: {done} layer(s) use statistics synchronised across the {world} processes "
                  f"(as one process with the same global batch)", flush=True)
        if left:
            shown = ", ".join(left[:3]) + (f" and {len(left) - 3} more" if len(left) > 3 else "")
            warnings.warn(f"BatchNorm: {len(left)} layer(s) ({shown}) cannot be synchronised on {device.type} "
                          f"under DDP; each of the {world} processes normalises its own part of the batch, so "
                          f"the run is not the single-process run (train with one process, or on cpu/cuda)",
                          stacklevel=2)
    return model


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True if `flag` is set on any rank (keeps ranks agreeing on when to stop)."""
    if not info.enabled:
        return flag
    on_host = info.control is not None or info.device.type == "cpu"
    t = torch.tensor([1.0 if flag else 0.0], device="cpu" if on_host else info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=info.control)
    return bool(t.item() > 0)


def gather(obj, info: DistInfo) -> list:
    """`obj` of every rank, in rank order (picklable objects; e.g. the bad records each saw)."""
    if not info.enabled:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj, group=info.control)  # over gloo: no GPU round trip
    return out


def agree_or_raise(error: BaseException | None, info: DistInfo) -> None:
    """Raise on every rank when any rank failed (one rank's full disk must not leave the others
    waiting in the next collective): that rank re-raises its own error, the others say so."""
    if any_rank(error is not None, info):
        if error is not None:
            raise error
        raise RuntimeError("stopped because another process failed (its message is above)")
