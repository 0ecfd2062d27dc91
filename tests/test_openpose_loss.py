"""OpenPose loss on hand-built tensors: per-stage masked means (masked elements counted), sum over stages."""
import pytest
import torch

from posekit.losses.openpose import paf_loss


def tensors(b=2, s=2, h=4, w=6):
    pafs_t = torch.zeros(b, 38, h, w)
    heat_t = torch.zeros(b, 19, h, w)
    return pafs_t, heat_t, torch.zeros(b, s, 38, h, w), torch.zeros(b, s, 19, h, w)


def test_hand_computed_values():
    pafs_t, heat_t, pafs_p, heat_p = tensors()
    pafs_p[:, 0] = 1.0          # stage 1 PAF off by 1 everywhere
    heat_p[:, 1] = 2.0          # stage 2 heatmaps off by 2 everywhere
    heat_p[0, 0, 3, 1, 2] = 3.0  # one stage-1 heatmap element off by 3 (x=2: in the kept half)
    weight = torch.ones(2, 1, 4, 6)
    weight[:, :, :, 3:] = 0.0   # right half ignored
    total, stages = paf_loss(pafs_p, heat_p, pafs_t, heat_t, weight)
    assert stages.shape == (2,)
    # stage 1: PAF mean(W * 1) = 0.5 (mean includes masked elements); heatmap element at x=2 is kept: 9 / N
    n_heat = 2 * 19 * 4 * 6
    assert stages[0].item() == pytest.approx(0.5 + 9 / n_heat)
    assert stages[1].item() == pytest.approx(0.5 * 4.0)
    assert total.item() == pytest.approx(stages.sum().item())
    # without a weight everything counts
    _, stages_nw = paf_loss(pafs_p, heat_p, pafs_t, heat_t)
    assert stages_nw.tolist() == pytest.approx([1.0 + 9 / n_heat, 4.0])


def test_mask_zeroes_gradients_and_single_stage():
    pafs_t, heat_t, _, _ = tensors(b=1, s=1)
    pafs_p = torch.randn(1, 38, 4, 6, requires_grad=True)  # no stage axis: one stage
    heat_p = torch.randn(1, 19, 4, 6, requires_grad=True)
    weight = torch.ones(1, 1, 4, 6)
    weight[..., 0, :] = 0
    total, stages = paf_loss(pafs_p, heat_p, pafs_t, heat_t, weight)
    assert stages.shape == (1,)
    expect = (pafs_p[..., 1:, :] ** 2).sum() / pafs_p.numel() + (heat_p[..., 1:, :] ** 2).sum() / heat_p.numel()
    assert total.item() == pytest.approx(expect.item(), rel=1e-6)
    total.backward()
    assert torch.all(pafs_p.grad[..., 0, :] == 0) and torch.all(heat_p.grad[..., 0, :] == 0)
    assert pafs_p.grad[..., 1:, :].abs().sum() > 0


def test_shape_errors():
    pafs_t, heat_t, pafs_p, heat_p = tensors()
    with pytest.raises(ValueError, match="PAF target"):
        paf_loss(pafs_p, heat_p, pafs_t[:, :36], heat_t)
    with pytest.raises(ValueError, match="weight"):
        paf_loss(pafs_p, heat_p, pafs_t, heat_t, torch.ones(2, 19, 4, 6))
    with pytest.raises(ValueError, match="same B and S"):
        paf_loss(pafs_p, heat_p[:, :1], pafs_t, heat_t)
