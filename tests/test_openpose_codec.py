"""PAF codec targets at hand-computed cells, against a per-pixel loop, and flip-back."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from posekit.codecs.paf import PAFCodec, cell_centres, flip_back_paf, from_coco17, to_coco17
from posekit.skeletons import get_skeleton

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from openpose_reference_decoder import random_people

SK = get_skeleton("openpose18")


def centre(i):
    return 8 * i + 3.5  # input pixel of cell i's centre at stride 8


def person(points: dict) -> np.ndarray:
    kp = np.zeros((18, 3))
    for k, (x, y) in points.items():
        kp[k] = (x, y, 2)
    return kp


def test_heatmap_values_at_cells():
    codec = PAFCodec(input_size=(96, 64))  # 12 x 8 maps
    assert codec.map_size == (12, 8)
    kp = person({0: (centre(5), centre(3)), 2: (centre(1) + 4.0, centre(6))})
    heat, pafs = codec.encode(kp[None])
    assert heat.shape == (19, 8, 12) and pafs.shape == (38, 8, 12)
    assert heat.dtype == np.float32 and pafs.dtype == np.float32
    assert heat[0, 3, 5] == pytest.approx(1.0)
    assert heat[0, 3, 6] == pytest.approx(math.exp(-64 / 98), rel=1e-6)  # one cell = 8 px, sigma 7
    assert heat[0, 4, 6] == pytest.approx(math.exp(-128 / 98), rel=1e-6)
    assert heat[2, 6, 1] == pytest.approx(math.exp(-16 / 98), rel=1e-6)  # half a cell off
    assert heat[2, 6, 2] == pytest.approx(math.exp(-16 / 98), rel=1e-6)
    np.testing.assert_allclose(heat[18], 1 - heat[:18].max(0), atol=1e-7)
    assert heat[18, 3, 5] == pytest.approx(0.0, abs=1e-7) and heat[18, 0, 11] == pytest.approx(1.0, abs=1e-6)
    assert np.all(heat[[1] + list(range(3, 18))] == 0)  # unlabelled parts: empty maps
    assert np.all(pafs == 0)  # no limb has both endpoints


def test_heatmaps_max_over_people_and_empty():
    codec = PAFCodec(input_size=(96, 64))
    a = person({4: (centre(3), centre(3))})
    b = person({4: (centre(5), centre(3))})
    heat, _ = codec.encode(np.stack([a, b]))
    assert heat[4, 3, 4] == pytest.approx(math.exp(-64 / 98), rel=1e-6)  # max of two equal tails, not a sum
    assert heat[4, 3, 3] == pytest.approx(1.0) and heat[4, 3, 5] == pytest.approx(1.0)
    heat0, paf0 = codec.encode(np.zeros((0, 18, 3)))
    assert np.all(heat0[:18] == 0) and np.all(heat0[18] == 1) and np.all(paf0 == 0)


def test_paf_unit_vectors_on_and_off_the_limb():
    codec = PAFCodec(input_size=(96, 96))
    # limb 0 is neck (1) -> right hip (8): vertical, from cell (5, 2) to cell (5, 8)
    kp = person({1: (centre(5), centre(2)), 8: (centre(5), centre(8))})
    _, pafs = codec.encode(kp[None])
    px, py = pafs[0], pafs[1]
    on = np.zeros((12, 12), bool)
    on[2:9, 4:7] = True  # along 0..48 px, across <= 8 px (one cell each side)
    assert np.all(px == 0)
    np.testing.assert_array_equal(py, on.astype(np.float32))
    assert np.all(pafs[2:] == 0)
    # diagonal 3-4-5 limb 1 (8 -> 9): unit vector (0.6, 0.8) on the segment, zero beyond it
    kp = person({8: (centre(1), centre(1)), 9: (centre(7), centre(9))})
    _, pafs = codec.encode(kp[None])
    assert (pafs[2, 5, 4], pafs[3, 5, 4]) == (pytest.approx(0.6), pytest.approx(0.8))  # on the line
    assert (pafs[2, 1, 1], pafs[3, 1, 1]) == (pytest.approx(0.6), pytest.approx(0.8))  # the start point
    assert pafs[2, 0, 0] == 0 and pafs[2, 10, 8] == 0  # behind the start, beyond the end
    assert pafs[2, 5, 7] == 0  # 19.2 px across the line (> paf_width 8)
    # an unlabelled endpoint removes the limb
    kp[9, 2] = 0
    _, pafs = codec.encode(kp[None])
    assert np.all(pafs == 0)


def test_paf_averaged_where_people_overlap():
    codec = PAFCodec(input_size=(96, 96))
    a = person({1: (centre(1), centre(5)), 8: (centre(9), centre(5))})  # limb 0 pointing +x
    b = person({1: (centre(5), centre(1)), 8: (centre(5), centre(9))})  # limb 0 pointing +y
    _, pafs = codec.encode(np.stack([a, b]))
    assert (pafs[0, 5, 5], pafs[1, 5, 5]) == (pytest.approx(0.5), pytest.approx(0.5))
    assert (pafs[0, 5, 2], pafs[1, 5, 2]) == (pytest.approx(1.0), pytest.approx(0.0))  # only a
    c = person({1: (centre(9), centre(5)), 8: (centre(1), centre(5))})  # a reversed: the average cancels
    _, pafs = codec.encode(np.stack([a, c]))
    assert pafs[0, 5, 5] == pytest.approx(0.0) and pafs[1, 5, 5] == pytest.approx(0.0)


def naive_encode(kp, input_size, stride=8, sigma=7.0, width=8.0):
    """Per-pixel loops straight from the definition."""
    w, h = input_size[0] // stride, input_size[1] // stride
    heat = np.zeros((19, h, w))
    pafs = np.zeros((38, h, w))
    count = np.zeros((19, h, w))
    for y in range(h):
        for x in range(w):
            px, py = x * stride + (stride - 1) / 2, y * stride + (stride - 1) / 2
            for p in kp:
                for k in range(18):
                    if p[k, 2] > 0:
                        g = math.exp(-((px - p[k, 0]) ** 2 + (py - p[k, 1]) ** 2) / (2 * sigma ** 2))
                        heat[k, y, x] = max(heat[k, y, x], g)
                for i, (a, b) in enumerate(SK.limbs):
                    if p[a, 2] > 0 and p[b, 2] > 0:
                        dx, dy = p[b, 0] - p[a, 0], p[b, 1] - p[a, 1]
                        length = math.hypot(dx, dy)
                        if length == 0:
                            continue
                        ux, uy = dx / length, dy / length
                        along = (px - p[a, 0]) * ux + (py - p[a, 1]) * uy
                        across = abs((px - p[a, 0]) * uy - (py - p[a, 1]) * ux)
                        if 0 <= along <= length and across <= width:
                            pafs[2 * i, y, x] += ux
                            pafs[2 * i + 1, y, x] += uy
                            count[i, y, x] += 1
    heat[18] = 1 - heat[:18].max(0)
    for i in range(19):
        pafs[2 * i: 2 * i + 2] /= np.maximum(count[i], 1)
    return heat, pafs


def test_encode_matches_per_pixel_definition():
    rng = np.random.default_rng(0)
    kp = random_people(rng, 4, (128, 96), height=(60, 110), drop_leaves=0.4)
    kp[1, 1, 2] = 0  # a missing neck removes all its limbs
    codec = PAFCodec(input_size=(128, 96))
    heat, pafs = codec.encode(kp)
    h_ref, p_ref = naive_encode(kp, (128, 96))
    np.testing.assert_allclose(heat, h_ref, atol=1e-6)
    np.testing.assert_allclose(pafs, p_ref, atol=1e-6)
    assert np.abs(pafs).max() > 0.5  # the people do draw limbs here


def test_encode_matches_per_pixel_definition_off_map_and_crowded():
    """The per-segment cell windows are clipped at the map border: people partly or wholly
    outside the input, tiny and huge people, and overlapping crowds still give the definition."""
    rng = np.random.default_rng(3)
    kp = random_people(rng, 9, (96, 64), height=(8, 200), drop_leaves=0.2)
    kp[:3, :, 0] += np.array([-60.0, 70.0, 400.0])[:, None]  # partly left, partly right, wholly outside
    kp[3, :, 1] -= 50.0
    kp[4, 2, :2] = kp[4, 1, :2]  # a zero-length limb draws nothing
    kp[5, 3, 2] = kp[5, 4, 2] = 2
    kp[5, 4, :2] = (1e12, 30.0)  # a limb to a point far off the map still draws its in-map cells
    codec = PAFCodec(input_size=(96, 64), sigma=5.0, paf_width=6.0)
    heat, pafs = codec.encode(kp)
    h_ref, p_ref = naive_encode(kp, (96, 64), sigma=5.0, width=6.0)
    np.testing.assert_allclose(heat, h_ref, atol=1e-6)
    np.testing.assert_allclose(pafs, p_ref, atol=1e-6)
    assert heat.dtype == pafs.dtype == np.float32


def flip_people(kp, width):
    out = kp[:, SK.flip_index].copy()
    out[..., 0] = width - 1 - out[..., 0]
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_flip_back_matches_encoding_of_flipped_people(seed):
    rng = np.random.default_rng(seed)
    size = (496, 368)  # width a multiple of the stride: the cell grid is mirror-symmetric
    kp = random_people(rng, 6, size, height=(100, 250), drop_leaves=0.3)
    codec = PAFCodec(input_size=size)
    heat, pafs = codec.encode(kp)
    heat_f, pafs_f = codec.encode(flip_people(kp, size[0]))
    p_back, h_back = codec.flip_back(pafs, heat)
    np.testing.assert_allclose(h_back, heat_f, atol=1e-5)
    np.testing.assert_allclose(p_back, pafs_f, atol=1e-5)
    assert np.abs(pafs_f).max() > 0.5
    # torch, batched, and an involution
    tp, th = flip_back_paf(torch.from_numpy(np.stack([pafs, pafs_f])), torch.from_numpy(np.stack([heat, heat_f])))
    assert torch.allclose(tp[0], torch.from_numpy(pafs_f), atol=1e-5)
    assert torch.allclose(th[1], torch.from_numpy(heat), atol=1e-5)
    tp2, th2 = flip_back_paf(tp, th[:, :18])  # 18-channel heatmaps (no background) also work
    assert torch.equal(tp2, torch.from_numpy(np.stack([pafs, pafs_f]))) and th2.shape[1] == 18


def test_cell_centres_and_coco_mapping():
    np.testing.assert_allclose(cell_centres(3, 8), [3.5, 11.5, 19.5])
    rng = np.random.default_rng(0)
    coco = np.concatenate([rng.uniform(0, 100, (2, 17, 2)), np.full((2, 17, 1), 2.0)], -1)
    coco[1, 5, 2] = 0  # no left shoulder: no neck
    op = from_coco17(coco)
    assert op.shape == (2, 18, 3)
    np.testing.assert_allclose(op[0, 1, :2], (coco[0, 5, :2] + coco[0, 6, :2]) / 2)
    assert op[1, 1, 2] == 0
    np.testing.assert_allclose(to_coco17(op), coco)
    assert to_coco17(torch.from_numpy(op)).shape == (2, 17, 3)


def test_bad_inputs():
    codec = PAFCodec(input_size=(64, 64))
    with pytest.raises(ValueError, match="keypoints"):
        codec.encode(np.zeros((2, 17, 3)))
    with pytest.raises(ValueError, match="positive"):
        PAFCodec(sigma=0)
    with pytest.raises(ValueError):
        flip_back_paf(np.zeros((36, 4, 4)), np.zeros((19, 4, 4)))
