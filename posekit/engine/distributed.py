"""torchrun environment -> DistributedDataParallel set-up. torchrun does the launching and the
multi-node rendezvous; this only reads its environment variables."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

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
    return DistInfo(rank, local_rank, world, device)


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()  # without it gloo sometimes aborts at shutdown (see env.md)
        dist.destroy_process_group()


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True if `flag` is set on any rank (keeps ranks agreeing on when to stop)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather(obj, info: DistInfo) -> list:
    """`obj` of every rank, in rank order (picklable objects; e.g. the bad records each saw)."""
    if not info.enabled:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def agree_or_raise(error: BaseException | None, info: DistInfo) -> None:
    """Raise on every rank when any rank failed (one rank's full disk must not leave the others
    waiting in the next collective): that rank re-raises its own error, the others say so."""
    if any_rank(error is not None, info):
        if error is not None:
            raise error
        raise RuntimeError("stopped because another process failed (its message is above)")
