"""Training precision, memory format and compilation: the three speed knobs of `train:`.

`train.amp` (default "auto") picks the fastest *correct* precision for the device:

    device                              auto    explicit values
    CPU without native bf16 (AVX2)      fp32    bf16 works but is emulated: warned once (measured
                                                11-22x slower than fp32 per training step here)
    CPU with native bf16 (AVX512-BF16,  fp32    bf16 runs natively, no warning; auto stays fp32
      AMX-BF16, oneDNN bf16 ISA)                because no posekit family has been measured
                                                faster there: opt in with train.amp=bf16
    CUDA with bf16 (Ampere and later)   bf16    fp16 (+ GradScaler), fp32
    CUDA without bf16                   fp16    fp16 pairs with the GradScaler (loss scaling)
    fp16 on CPU                         --      an error: use train.amp=bf16 or train.amp=fp32

"off", "none", "fp32", False and None all mean fp32 (YAML reads `off` as False).

`train.channels_last` (None: the family's `Task.channels_last`) stores conv weights and the
4-D image input as NHWC, which oneDNN and cuDNN convolve faster for many conv nets. Training
step time NHWC / NCHW on this 2-core CPU (fp32, 1 thread, medians of paired alternating
blocks): dogs (MobileNetV2) 0.60-0.68, faces (FSE) 0.83-0.96, mpii (hourglass) 0.94-0.98,
coco (OpenPose) 0.93-1.03. Dropout draws its masks in memory order, so NHWC runs drop other
elements than NCHW runs (same statistics, not the same numbers).

`train.compile=true` wraps the training model in `torch.compile`. It pays only on long runs:
on a 2-core AVX2 CPU (torch 2.14) the first step compiles for 41-117 s, after which inference
takes 0.64x the eager time but a training step about 1.0x, so on CPU it is rarely worth it;
on CUDA the fused kernels usually shorten steps. Checkpoints always hold the plain module's
keys (no `_orig_mod.` prefix): the trainer compiles a wrapper and saves the module beneath it.
"""
from __future__ import annotations

import contextlib
import functools
import warnings

import torch
import torch.nn as nn

PRECISIONS = ("fp32", "bf16", "fp16")
_FP32_ALIASES = ("off", "none", "fp32", "false", "no", "0")
# bf16 autocast / fp32 step time on a CPU without native bf16 (2-core AMD EPYC, AVX2, torch
# 2.14.1, 1 thread, `posekit train <recipe> train.performance=6`, paired alternating runs):
# mpii_synthetic (hourglass2_small) 20.5 and 22.1x, dogs_synthetic (mobilenetv2) 10.8 and 20.1x
EMULATED_BF16_SLOWDOWN = "11-22x"
# torch.compile's backend; tests set "eager" to check the wiring without minutes of compiling
COMPILE_BACKEND = "inductor"

_warned: set[str] = set()


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16, AMX-BF16, or what oneDNN calls
    its bf16 ISA, e.g. on Arm with BF16 extensions). Without it, bf16 autocast is emulated."""
    caps: dict = {}
    try:
        caps = torch.cpu.get_capabilities()
    except Exception:  # older torch or an unknown architecture: probe the other ways
        pass
    if caps.get("avx512_bf16") or caps.get("amx_bf16"):
        return True
    try:
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return True
    except Exception:
        pass
    return False


def cuda_has_bf16(device: torch.device | None = None) -> bool:
    """Whether the CUDA device runs bf16 natively (compute capability 8.0+)."""
    try:
        if not torch.cuda.is_available():
            return False
        if device is not None and device.index is not None:
            with torch.cuda.device(device):
                return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # a torch without `including_emulation`
        return bool(torch.cuda.is_bf16_supported())
    except Exception:
        return False


def _normalise(amp) -> str:
    if amp is None or amp is False:
        return "fp32"
    if amp is True:
        return "auto"
    value = str(amp).strip().lower()
    if value in _FP32_ALIASES:
        return "fp32"
    if value in ("auto", "bf16", "fp16"):
        return value
    raise ValueError(f"train.amp={amp!r}; valid: auto, fp32 (or off, none), bf16, fp16")


def resolve_amp(amp, device: torch.device | str) -> str:
    """`train.amp` on `device` -> "fp32" | "bf16" | "fp16" (see the module docstring's table).
    Warns once per process for emulated bf16 on a CPU; raises ValueError for fp16 on a CPU."""
    device = torch.device(device)
    value = _normalise(amp)
    if device.type == "cuda":
        if value == "auto":
            return "bf16" if cuda_has_bf16(device) else "fp16"
        return value
    if value == "fp16":
        raise ValueError(f"train.amp=fp16 needs CUDA (this run is on {device.type}); "
                         f"use train.amp=bf16 or train.amp=fp32")
    if value == "auto":
        return "fp32"
    if value == "bf16" and device.type == "cpu" and not cpu_has_native_bf16() and "bf16" not in _warned:
        _warned.add("bf16")
        warnings.warn(f"train.amp=bf16: this CPU has no native bf16 (no AVX512-BF16/AMX), so autocast "
                      f"emulates it, measured {EMULATED_BF16_SLOWDOWN} slower per step than fp32; "
                      f"train.amp=fp32 (or auto) is faster here", RuntimeWarning, stacklevel=2)
    return value


def autocast(precision: str, device: torch.device | str):
    """The autocast context of a resolved precision (a no-op context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(torch.device(device).type, dtype=dtype)


def grad_scaler_enabled(precision: str) -> bool:
    """Loss scaling guards fp16's narrow exponent; bf16 has fp32's range and needs none."""
    return precision == "fp16"


def resolve_channels_last(value: bool | None, task) -> bool:
    """`train.channels_last`, or the family's `channels_last` attribute when it is unset."""
    return bool(getattr(task, "channels_last", False)) if value is None else bool(value)


def channels_last_inputs(batch: dict) -> dict:
    """The batch with its 4-D `image` tensor in channels_last (other entries untouched: targets
    and masks keep the layout the loss reads them in). Elementwise ops in `model_inputs`
    (`.float().div(255)`) keep the layout, so the network sees NHWC."""
    image = batch.get("image") if isinstance(batch, dict) else None
    if isinstance(image, torch.Tensor) and image.dim() == 4:
        return {**batch, "image": image.contiguous(memory_format=torch.channels_last)}
    return batch


def compile_model(model: nn.Module, backend: str | None = None) -> nn.Module:
    """`torch.compile(model)`; the returned wrapper shares the parameters of `model`, so save
    `model.state_dict()` (or `plain_module(compiled)`), never the wrapper's."""
    return torch.compile(model, backend=backend or COMPILE_BACKEND)


def plain_module(model: nn.Module) -> nn.Module:
    """The module under torch.compile's and DDP's wrappers (its state_dict has the plain keys)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def describe(precision: str, channels_last: bool, compiled: bool, device: torch.device | str) -> str:
    """The one line the trainer prints at start."""
    dev = torch.device(device)
    native = ""
    if dev.type == "cpu":
        native = " (CPU native bf16)" if cpu_has_native_bf16() else " (CPU without native bf16)"
    return (f"precision {precision}{native}, channels_last {'on' if channels_last else 'off'}, "
            f"compile {'on' if compiled else 'off'}")
