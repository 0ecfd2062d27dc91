"""BatchNorm synchronised across DDP processes on CPU (gloo), where torch's nn.SyncBatchNorm refuses
CPU tensors (torch 2.x: "SyncBatchNorm expected input tensor to be on GPU ..."; its kernels
batch_norm_stats/... have no CPU implementation).

In training mode every process normalises with the statistics of the *global* batch: one
all_reduce of per-channel (sum, sum of squares, count) in the forward, and one all_reduce of the
per-channel gradient sums in the backward, the same two collectives as CUDA SyncBatchNorm. So N
processes with the global batch split between them compute what one process computes on the whole
batch (up to float summation order). Eval mode is plain BatchNorm, no communication.

The layers stay instances of their BatchNorm class (the converted class subclasses it): state_dict
keys, `isinstance(m, nn.BatchNorm2d)` checks (frozen-BN logic, exporters) and EMA are unaffected.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _SyncBatchNormFunction(torch.autograd.Function):
    """Batch norm over the union of every process's batch (channel dim 1)."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, group):
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        x64 = x.detach().to(torch.float64)  # float64 sums: E[x^2] - E[x]^2 keeps float32 accuracy
        local = torch.cat([x64.sum(dims), (x64 * x64).sum(dims),
                           torch.tensor([x.numel() // max(c, 1)], dtype=torch.float64)])
        dist.all_reduce(local, group=group)
        n = float(local[2 * c])
        if n <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got {int(n)} across all "
                             f"processes (input size {list(x.shape)} here); use a larger train.batch_size")
        mean64 = local[:c] / n
        var64 = (local[c:2 * c] / n - mean64 * mean64).clamp_min(0.0)
        if running_mean is not None:
            running_mean.mul_(1.0 - momentum).add_(mean64.to(running_mean.dtype), alpha=momentum)
        if running_var is not None:
            running_var.mul_(1.0 - momentum).add_((var64 * (n / (n - 1))).to(running_var.dtype), alpha=momentum)
        compute = torch.promote_types(x.dtype, torch.float32)
        shape = [1, c] + [1] * (x.dim() - 2)
        mean = mean64.to(compute).view(shape)
        invstd = (var64 + eps).rsqrt().to(compute).view(shape)
        y = (x.to(compute) - mean) * invstd
        if weight is not None:
            y = y * weight.to(compute).view(shape)
        if bias is not None:
            y = y + bias.to(compute).view(shape)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.n, ctx.group, ctx.has_bias = n, group, bias is not None
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, mean, invstd = ctx.saved_tensors
        c, dims = x.shape[1], [0, *range(2, x.dim())]
        shape = mean.shape
        g = grad_out.to(mean.dtype)
        xhat = (x.to(mean.dtype) - mean) * invstd
        sum_dy = g.to(torch.float64).sum(dims)
        sum_dy_xhat = (g * xhat).to(torch.float64).sum(dims)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # the same graph runs on every rank, so every rank takes this branch (collective-safe)
            both = torch.cat([sum_dy, sum_dy_xhat])
            dist.all_reduce(both, group=ctx.group)
            mean_dy = (both[:c] / ctx.n).to(mean.dtype).view(shape)
            mean_dy_xhat = (both[c:] / ctx.n).to(mean.dtype).view(shape)
            scale = invstd * (weight.to(mean.dtype).view(shape) if weight is not None else 1.0)
            grad_x = ((g - mean_dy - xhat * mean_dy_xhat) * scale).to(x.dtype)
        # weight/bias gradients stay local: DDP averages them across ranks like every other parameter
        if weight is not None and ctx.needs_input_grad[1]:
            grad_w = sum_dy_xhat.to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = sum_dy.to(weight.dtype if weight is not None else x.dtype)
        return grad_x, grad_w, grad_b, None, None, None, None, None


def _sync_forward_eager(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative moving average, as nn.BatchNorm
            factor = 1.0 / float(bn.num_batches_tracked)
    track = bn.track_running_stats
    return _SyncBatchNormFunction.apply(x, bn.weight, bn.bias, bn.running_mean if track else None,
                                        bn.running_var if track else None, factor, bn.eps,
                                        getattr(bn, "sync_group", None))


_sync_forward = _sync_forward_eager  # wrapped by `convert` in torch.compiler.disable (see there)


class _CPUSyncMixin:
    """forward: synchronised statistics in training mode under an initialised process group of
    more than one process with CPU input; otherwise exactly the parent BatchNorm."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        group = getattr(self, "sync_group", None)
        if (self.training and input.device.type == "cpu" and dist.is_available() and dist.is_initialized()
                and dist.get_world_size(group) > 1):
            self._check_input_dim(input)
            return _sync_forward(self, input)
        return super().forward(input)


class CPUSyncBatchNorm1d(_CPUSyncMixin, nn.BatchNorm1d):
    pass


class CPUSyncBatchNorm2d(_CPUSyncMixin, nn.BatchNorm2d):
    pass


class CPUSyncBatchNorm3d(_CPUSyncMixin, nn.BatchNorm3d):
    pass


_SYNCED = {nn.BatchNorm1d: CPUSyncBatchNorm1d, nn.BatchNorm2d: CPUSyncBatchNorm2d, nn.BatchNorm3d: CPUSyncBatchNorm3d}


def convert(model: nn.Module, group=None) -> tuple[int, list[str]]:
    """Make every plain BatchNorm1d/2d/3d of `model` synchronised, in place (same objects, same
    parameters and buffers, so optimiser, EMA and state_dict keys are untouched). Returns
    (layers converted, names of BatchNorm layers left alone: subclasses with their own forward)."""
    global _sync_forward
    if _sync_forward is _sync_forward_eager:
        # collectives inside a custom Function stay out of compiled graphs; applied here, not as a
        # decorator, because torch.compiler.disable imports torch._dynamo (~0.9 s, ~140 MB), which
        # every process importing the engine (predict, eval) would otherwise pay for nothing
        _sync_forward = torch.compiler.disable(_sync_forward_eager)
    done, left = 0, []
    for name, m in model.named_modules():
        if type(m) in _SYNCED:
            m.__class__ = _SYNCED[type(m)]
            m.sync_group = group
            done += 1
        elif isinstance(m, _CPUSyncMixin):
            done += 1
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.SyncBatchNorm):
            left.append(name or type(m).__name__)
    return done, left
