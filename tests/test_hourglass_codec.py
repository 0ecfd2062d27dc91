"""Heatmap codec, flip test, heatmap loss (per-joint and spatial weights) and the MPII PCKh metric
on hand-computed cases."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from posekit.codecs.heatmap import HeatmapCodec, decode_heatmaps, flip_back_heatmaps
from posekit.engine.recipes import load_config
from posekit.families import build_task
from posekit.losses.heatmap import heatmap_loss
from posekit.metrics.mpii import mpii_pckh, pckh_table, torso_pck
from posekit.skeletons import get_skeleton

SK = get_skeleton("mpii16")
REPO = Path(__file__).resolve().parents[1]


# --- codec -------------------------------------------------------------------------------------
@pytest.mark.parametrize("refine, bound", [("shift", 0.36), ("dark", 0.01)])
def test_round_trip_error_below_half_cell(refine, bound):
    codec = HeatmapCodec((256, 256), (64, 64), 1.0, refine=refine)
    rng = np.random.default_rng(0)
    kp = rng.uniform(6, 249, size=(32, 16, 2))
    maps, weights = codec.encode(kp, np.ones((32, 16)))
    assert maps.shape == (32, 16, 64, 64) and maps.dtype == np.float32 and weights.all()
    dec, scores = codec.decode(maps)
    err_cells = np.linalg.norm(dec - kp, axis=-1) / 4.0
    assert err_cells.max() < 0.36 < 0.5
    # DARK blurs with zero padding (as MMPose), which pulls clean peaks within the kernel radius of
    # the border a few hundredths of a cell inward; elsewhere it is exact to a hundredth
    cells = (kp + 0.5) / 4.0 - 0.5
    interior = ((cells > 4) & (cells < 59)).all(axis=-1)
    assert interior.sum() > 400 and err_cells[interior].max() < bound
    assert np.all(scores > 0.6)


def test_encode_masks_invisible_and_outside_joints():
    codec = HeatmapCodec((128, 128), (32, 32), 1.0)
    kp = np.array([[10.0, 10.0], [50.0, 60.0], [-20.0, 5.0], [64.0, 200.0]])
    maps, weights = codec.encode(kp, np.array([1, 0, 1, 1]))
    assert weights.tolist() == [1, 0, 0, 0]
    assert maps[0].max() > 0.9 and not maps[1:].any()
    # the same joints as (K, 3) [x, y, v]: v > 0 is "annotated" (v = 1 occluded counts too)
    maps3, weights3 = codec.encode(np.concatenate([kp, [[2.0], [0.0], [1.0], [2.0]]], axis=1))
    np.testing.assert_array_equal(maps3, maps)
    np.testing.assert_array_equal(weights3, weights)
    batched, bw = codec.encode(np.stack([np.concatenate([kp, np.ones((4, 1))], axis=1)] * 2))
    assert batched.shape == (2, 4, 32, 32) and bw.tolist() == [[1, 1, 0, 0]] * 2  # all v = 1
    with pytest.raises(ValueError, match="K, 3"):
        codec.encode(kp)  # (K, 2) without visibility


def test_gaussian_peak_and_sigma():
    codec = HeatmapCodec((64, 64), (16, 16), sigma=1.5)
    # input pixel u maps to cell (u + 0.5) / 4 - 0.5: u = 21.5 -> cell 5 exactly
    maps, _ = codec.encode(np.array([[21.5, 21.5]]), np.array([1]))
    assert maps[0, 5, 5] == pytest.approx(1.0)
    assert maps[0, 5, 6] == pytest.approx(math.exp(-1 / (2 * 1.5 ** 2)), rel=1e-5)
    assert maps[0, 7, 5] == pytest.approx(math.exp(-4 / (2 * 1.5 ** 2)), rel=1e-5)


def test_quarter_shift_toward_higher_neighbour():
    heat = torch.zeros(1, 2, 8, 8)
    heat[0, 0, 3, 4] = 1.0
    heat[0, 0, 3, 5] = 0.5  # right neighbour higher -> +0.25 in x
    heat[0, 0, 2, 4] = 0.3  # upper neighbour higher -> -0.25 in y
    heat[0, 1, 0, 7] = 1.0  # corner: no neighbour on one side -> no shift
    heat[0, 1, 1, 7] = 0.9
    kp, scores = decode_heatmaps(heat, refine="shift")
    assert kp[0, 0].tolist() == [4.25, 2.75]
    assert kp[0, 1].tolist() == [7.0, 0.0]
    assert scores[0].tolist() == [1.0, 1.0]
    none, _ = decode_heatmaps(heat, refine="none")
    assert none[0, 0].tolist() == [4.0, 3.0]
    with pytest.raises(ValueError, match="refinement"):
        decode_heatmaps(heat, refine="softargmax")


def test_numpy_and_torch_decode_agree_and_single_sample():
    codec = HeatmapCodec((128, 128), (32, 32), 1.0, refine="dark")
    rng = np.random.default_rng(1)
    kp = rng.uniform(5, 120, size=(3, 16, 2))
    maps, _ = codec.encode(kp, np.ones((3, 16)))
    a, sa = codec.decode(maps)
    b, sb = codec.decode(torch.from_numpy(maps))
    assert isinstance(b, torch.Tensor)
    np.testing.assert_allclose(a, b.numpy(), atol=1e-4)
    single, ss = codec.decode(maps[1])
    assert single.shape == (16, 2) and ss.shape == (16,)
    np.testing.assert_allclose(single, a[1], atol=1e-5)


def test_heatmap_flip_matches_mirrored_keypoints_exactly():
    """Pixel-centre alignment: mirroring the input is exactly mirroring the heatmap (no 1-cell shift)."""
    codec = HeatmapCodec((128, 128), (32, 32), 1.0)
    rng = np.random.default_rng(2)
    kp = rng.uniform(4, 123, size=(2, 16, 2))
    mirrored = kp.copy()
    mirrored[..., 0] = 127 - kp[..., 0]  # x' = W - 1 - x on a flipped pixel array
    mirrored = mirrored[:, SK.flip_index]  # left/right labels swap
    maps, _ = codec.encode(kp, np.ones((2, 16)))
    maps_m, _ = codec.encode(mirrored, np.ones((2, 16)))
    back = flip_back_heatmaps(torch.from_numpy(maps_m), SK.flip_index).numpy()
    np.testing.assert_allclose(back, maps, atol=1e-6)


def test_flip_test_prediction_is_exactly_mirror_equivariant():
    """task.forward_decode (the one decode seam: last stack, flip test, decoding) on a mirrored
    input gives exactly the mirrored, left/right-swapped keypoints and the swapped scores."""
    torch.manual_seed(0)
    cfg = load_config(REPO / "configs" / "mpii_synthetic.yaml", ["eval.flip_test=true"])
    task = build_task(cfg)
    model = task.build_model().eval()
    plain_task = build_task(load_config(REPO / "configs" / "mpii_synthetic.yaml", ["eval.flip_test=false"]))
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        p = task.forward_decode(model, x)
        p_flipped = task.forward_decode(model, x.flip(-1))
        plain = plain_task.forward_decode(model, x)
    mirrored = p["keypoints"][:, SK.flip_index].clone()
    mirrored[..., 0] = 127 - mirrored[..., 0]  # x' = W - 1 - x on a flipped pixel array
    np.testing.assert_allclose(p_flipped["keypoints"].numpy(), mirrored.numpy(), atol=1e-4)
    np.testing.assert_allclose(p_flipped["scores"].numpy(), p["scores"][:, SK.flip_index].numpy(), atol=1e-5)
    # the flipped pass really contributes (the averaged heatmaps' peaks differ from one pass's)
    assert not torch.allclose(p["scores"], plain["scores"])
    # outputs= reuses the caller's forward pass of x: same result as running the network
    with torch.no_grad():
        again = task.forward_decode(model, x, outputs=model(x))
    torch.testing.assert_close(again["keypoints"], p["keypoints"])


# --- loss --------------------------------------------------------------------------------------
def test_mse_loss_hand_computed_and_masked():
    target = torch.zeros(2, 3, 4, 4)
    target[:, :, 1, 1] = 1.0
    out = torch.zeros(2, 2, 3, 4, 4)  # zero predictions: per-joint MSE = 1/16
    weights = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    total, per_stack = heatmap_loss(out, target, weights)
    assert per_stack.tolist() == pytest.approx([3 / 16 / 6, 3 / 16 / 6])  # 3 weighted joints of 6
    assert float(total) == pytest.approx(2 * 3 / 16 / 6)
    # a masked joint may be anything
    out2 = out.clone()
    out2[0, :, 2] = 5.0
    assert float(heatmap_loss(out2, target, weights)[0]) == pytest.approx(float(total))
    # stacks averaged instead of summed
    assert float(heatmap_loss(out, target, weights, stack_reduction="mean")[0]) == pytest.approx(3 / 16 / 6)
    with pytest.raises(ValueError, match="stack reduction"):
        heatmap_loss(out, target, weights, stack_reduction="max")
    perfect = target.unsqueeze(1).repeat(1, 2, 1, 1, 1)
    assert float(heatmap_loss(perfect, target, weights)[0]) == 0.0


def test_bce_loss_masked_and_errors():
    target = torch.rand(1, 2, 4, 4)
    out = torch.randn(1, 3, 2, 4, 4)
    w = torch.tensor([[1.0, 0.0]])
    total, _ = heatmap_loss(out, target, w, kind="bce")
    out2 = out.clone()
    out2[:, :, 1] = 100.0
    assert float(heatmap_loss(out2, target, w, kind="bce")[0]) == pytest.approx(float(total))
    with pytest.raises(ValueError, match="mse"):
        heatmap_loss(out, target, w, kind="l1")
    with pytest.raises(ValueError, match="target shape"):
        heatmap_loss(out, target[:, :1], w)


def test_spatial_weights_hand_computed():
    """(B, 1|K, H, W) weights: ones are the same as no weights; zeros remove their pixels' error
    (the mean still runs over all H x W pixels, the Torch MSECriterion normalisation)."""
    target = torch.zeros(1, 2, 4, 4)
    target[:, :, 1, 1] = 1.0  # zero prediction: error 1 at (1, 1)
    out = torch.zeros(1, 2, 2, 4, 4)  # 2 stacks
    out[..., 3, 3] = 2.0  # error 2^2 = 4 at (3, 3)
    total, per_stack = heatmap_loss(out, target)
    assert per_stack.tolist() == pytest.approx([5 / 16, 5 / 16]) and float(total) == pytest.approx(2 * 5 / 16)
    for ones in (torch.ones(1, 1, 4, 4), torch.ones(1, 2, 4, 4)):
        t, s = heatmap_loss(out, target, ones)
        assert float(t) == pytest.approx(float(total)) and s.tolist() == pytest.approx(per_stack.tolist())
    # a shared mask hiding the top-left 2x2 block removes the (1, 1) error of both joints
    mask = torch.ones(1, 1, 4, 4)
    mask[..., :2, :2] = 0
    t, s = heatmap_loss(out, target, mask)
    assert s.tolist() == pytest.approx([4 / 16, 4 / 16]) and float(t) == pytest.approx(2 * 4 / 16)
    # per-joint masks: joint 0 loses the (1, 1) error, joint 1 the (3, 3) error
    per_joint = torch.ones(1, 2, 4, 4)
    per_joint[0, 0, :2, :2] = 0
    per_joint[0, 1, 2:, 2:] = 0
    t, s = heatmap_loss(out, target, per_joint)
    assert s.tolist() == pytest.approx([(4 / 16 + 1 / 16) / 2] * 2) and float(t) == pytest.approx(5 / 16)
    assert float(heatmap_loss(out, target, per_joint, stack_reduction="mean")[0]) == pytest.approx(5 / 32)
    # whatever the network outputs under a zero mask does not matter (mse and bce)
    out2 = out.clone()
    out2[..., :2, :2] = 7.0
    assert float(heatmap_loss(out2, target, mask)[0]) == pytest.approx(2 * 4 / 16)
    bce = float(heatmap_loss(out, target, mask, kind="bce")[0])
    assert float(heatmap_loss(out2, target, mask, kind="bce")[0]) == pytest.approx(bce)
    assert float(heatmap_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 4),
                              kind="bce")[0]) == 0.0  # all masked: log 2 per pixel removed everywhere
    with pytest.raises(ValueError, match="spatial weights"):
        heatmap_loss(out, target, torch.ones(1, 3, 4, 4))
    with pytest.raises(ValueError, match="spatial weights"):
        heatmap_loss(out, target, torch.ones(1, 1, 2, 2))


# --- metrics -----------------------------------------------------------------------------------
def _case():
    """Two people, head sizes 10 and 20: errors chosen against the 0.5 / 0.1 thresholds."""
    gt = np.zeros((2, 16, 2))
    pred = np.zeros((2, 16, 2))
    ann = np.ones((2, 16), bool)
    head = np.array([10.0, 20.0])
    pred[0, :, 0] = 4.0  # person 0: every joint off by 4 (< 5 = 0.5 x 10) -> correct @0.5, wrong @0.1
    pred[1, :, 0] = 12.0  # person 1: off by 12 (> 10 = 0.5 x 20) -> wrong ...
    pred[1, 9, 0] = 10.0  # ... except head_top exactly on the threshold (<= counts)
    pred[1, 12, 0] = 1.0  # ... and r_shoulder off by 1 (<= 2 = 0.1 x 20: correct @0.1 too)
    ann[1, 15] = False  # l_wrist of person 1 not annotated: excluded
    pred[1, 15, 0] = 1000.0
    return pred, gt, ann, head


def test_pckh_hand_computed():
    pred, gt, ann, head = _case()
    res = mpii_pckh(pred, gt, ann, head, 0.5)
    assert res["per_joint"][0] == 50.0  # r_ankle: person 0 right, person 1 wrong
    assert res["per_joint"][9] == 100.0 and res["per_joint"][12] == 100.0
    assert res["per_joint"][15] == 100.0 and res["counts"][15] == 1
    # Mean over the 14 joints without pelvis (6) and thorax (7): counts 2 each except l_wrist (1) = 27;
    # correct = 14 (person 0) + head_top + r_shoulder (person 1) = 16
    assert res["mean"] == pytest.approx(100 * 16 / 27)
    table = pckh_table(pred, gt, ann, head)
    assert table["Head"] == 100.0  # head_top only
    assert table["Shoulder"] == pytest.approx((50.0 + 100.0) / 2)
    assert table["Wrist"] == pytest.approx((50.0 + 100.0) / 2)  # r_wrist 1/2, l_wrist 1/1
    assert table["Mean"] == pytest.approx(100 * 16 / 27)
    assert table["Mean@0.1"] == pytest.approx(100 * 1 / 27)  # only person 1's r_shoulder
    # pelvis and thorax errors do not move the Mean
    pred2 = pred.copy()
    pred2[0, [6, 7], 0] = 999.0
    assert pckh_table(pred2, gt, ann, head)["Mean"] == table["Mean"]


def test_pckh_needs_head_sizes_and_shapes():
    pred, gt, ann, head = _case()
    with pytest.raises(ValueError, match="head size"):
        mpii_pckh(pred, gt, ann, np.array([10.0, np.nan]))
    with pytest.raises(ValueError, match="16, 2"):
        mpii_pckh(pred[:, :14], gt[:, :14], ann[:, :14], head)
    nan_pred = pred.copy()
    nan_pred[0, 0] = np.nan  # a non-finite prediction is just wrong
    assert mpii_pckh(nan_pred, gt, ann, head)["per_joint"][0] == 0.0


def test_torso_pck_hand_computed():
    gt = np.zeros((1, 16, 2))
    gt[0, 13] = (0.0, 0.0)  # l_shoulder
    gt[0, 2] = (30.0, 40.0)  # r_hip: torso diagonal 50 -> threshold 10 at 0.2
    pred = gt.copy()
    pred[0, :8, 0] += 9.0
    pred[0, 8:, 0] += 11.0
    res = torso_pck(pred, gt, np.ones((1, 16), bool), 0.2)
    assert res["mean"] == pytest.approx(50.0)
    assert res["samples"] == 1


def test_flat_heatmap_is_not_a_confident_point():
    """Issue 12.12: a constant map used to decode to cell (0, 0) with score = its level (0.9 read
    as a confident joint). The score is the peak above the map's floor: 0 for a flat map; a map
    whose floor is <= 0 (targets, typical network output) keeps score = peak value."""
    heat = torch.full((1, 3, 8, 8), 0.9)
    heat[0, 1] = 0.0
    heat[0, 1, 4, 4] = 0.8  # a real peak on a zero floor
    heat[0, 2] = 0.25
    heat[0, 2, 2, 3] = 0.75  # a peak on a raised floor: its contrast
    for refine in ("none", "shift", "dark"):
        kp, scores = decode_heatmaps(heat, refine=refine)
        assert scores[0, 0] == 0.0
        assert scores[0, 1] == pytest.approx(0.8)
        assert scores[0, 2] == pytest.approx(0.5)
        assert torch.isfinite(kp).all()
    noisy = torch.randn(1, 2, 16, 16) * 0.05
    noisy[0, :, 5, 7] = 1.0
    _, s = decode_heatmaps(noisy)
    assert torch.allclose(s, torch.ones(1, 2))  # floor below 0: unchanged peak value


def _newton_step(peak_map: np.ndarray, log_map: np.ndarray, clip: float = np.inf) -> list[float]:
    """One Taylor (Newton) step of log_map at peak_map's argmax, in cells."""
    y, x = np.unravel_index(peak_map.argmax(), peak_map.shape)
    lg = log_map
    gx, gy = 0.5 * (lg[y, x + 1] - lg[y, x - 1]), 0.5 * (lg[y + 1, x] - lg[y - 1, x])
    hxx = lg[y, x + 1] - 2 * lg[y, x] + lg[y, x - 1]
    hyy = lg[y + 1, x] - 2 * lg[y, x] + lg[y - 1, x]
    hxy = 0.25 * (lg[y + 1, x + 1] - lg[y - 1, x + 1] - lg[y + 1, x - 1] + lg[y - 1, x - 1])
    off = np.clip(-np.linalg.solve(np.array([[hxx, hxy], [hxy, hyy]]), [gx, gy]), -clip, clip)
    return [x + off[0], y + off[1]]


def _dark_blur_everywhere_reference(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Numpy DARK as MMPose defines it: zero-pad, Gaussian-blur the whole map, crop, rescale to the
    original max, log, one Newton step at the argmax. (N, H, W) -> (N, 2) cells."""
    radius = max(1, math.ceil(3 * sigma))
    t = np.arange(-radius, radius + 1)
    g = np.exp(-t ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    out = []
    for m in maps:
        raw = np.clip(m, 0, None).astype(np.float64)
        b = np.apply_along_axis(lambda v: np.convolve(v, g, "valid"), 1, np.pad(raw, radius))
        b = np.apply_along_axis(lambda v: np.convolve(v, g, "valid"), 0, b)
        b *= raw.max() / b.max()
        out.append(_newton_step(raw, np.log(np.clip(b, 1e-10, None))))
    return np.array(out)


def _raw_border_dark(maps: np.ndarray) -> np.ndarray:
    """The previous border behaviour, for comparison: the step on the unsmoothed log map."""
    return np.array([_newton_step(m, np.log(np.clip(m, 1e-10, None)).astype(np.float64), clip=1.0) for m in maps])


def test_dark_smooths_near_the_border_like_mmpose():
    """DARK blurs the whole map (zero padding, as MMPose's gaussian_blur), border included: on noisy
    maps with peaks 1-2 cells from the border the refined error beats the raw-log Taylor step the
    codec used there before, and matches a numpy blur-everywhere reference."""
    rng = np.random.default_rng(0)
    n, size, sigma = 200, 64, 1.0
    d = rng.uniform(1, 2, n)
    cx = np.where(rng.random(n) < 0.5, d, size - 1 - d)
    centre = np.stack([cx, rng.uniform(10, 50, n)], axis=-1)
    codec = HeatmapCodec((size, size), (size, size), sigma, refine="dark")  # stride 1: cells = pixels
    maps, weights = codec.encode(centre[:, None], np.ones((n, 1)))
    assert weights.all()
    maps = (maps + rng.normal(0, 0.05, maps.shape)).astype(np.float32)
    decoded, _ = codec.decode(maps)
    ours = np.linalg.norm(decoded[:, 0] - centre, axis=-1)
    reference = _dark_blur_everywhere_reference(maps[:, 0], sigma)
    np.testing.assert_allclose(decoded[:, 0], reference, atol=1e-3)
    raw = np.linalg.norm(_raw_border_dark(maps[:, 0]) - centre, axis=-1)
    assert ours.mean() < 0.75 * raw.mean()


def test_encode_trains_partial_gaussian_up_to_three_sigma_outside():
    """As MMPose: a visible joint just outside the crop (x = -3 on 192x256, i.e. cell -1.125 at
    stride 4) keeps weight 1 and its truncated Gaussian; one beyond 3 sigma gets weight 0."""
    codec = HeatmapCodec((192, 256), (48, 64), sigma=2.0)
    kp = np.array([[-3.0, 100.0], [-40.0, 100.0], [100.0, 300.0], [100.0, 100.0]])
    maps, weights = codec.encode(kp, np.ones(4))
    assert weights.tolist() == [1, 0, 0, 1]
    row = round((100 + 0.5) / 4 - 0.5)
    assert maps[0, row, 0] == pytest.approx(math.exp(-(1.125 ** 2 + (row - 24.625) ** 2) / 8), rel=1e-4)
    assert maps[0, :, 0].max() > 0.8 and maps[0].argmax() % 48 == 0  # peak on the border column
    assert not maps[1].any() and not maps[2].any()
