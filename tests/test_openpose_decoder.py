"""OpenPose decoder: identical to the plain-loop reference, exact round trip, no people from empty or flat maps."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from posekit.codecs.paf import DecoderConfig, PAFCodec, decode_people, to_coco17

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from openpose_reference_decoder import random_people, reference_decode

PRESETS = ("cmu", "mindspore")


def noisy_maps(seed, n_people, size=(496, 368), noise=0.02):
    rng = np.random.default_rng(seed)
    kp = random_people(rng, n_people, size, height=(100, 250), drop_leaves=0.3)
    heat, pafs = PAFCodec(input_size=size).encode(kp)
    heat = heat + rng.normal(0, noise, heat.shape)
    pafs = pafs + rng.normal(0, noise, pafs.shape)
    return kp, heat, pafs


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("seed,n_people", [(0, 2), (1, 6), (2, 10), (3, 14)])
def test_vectorised_decoder_equals_reference(preset, seed, n_people):
    _, heat, pafs = noisy_maps(seed, n_people)
    cfg = DecoderConfig.preset(preset)
    kps, scores = decode_people(heat, pafs, config=cfg)
    ref_kps, ref_scores = reference_decode(heat, pafs, config=cfg)
    assert len(kps) > 0
    assert kps.shape == ref_kps.shape and scores.shape == ref_scores.shape
    np.testing.assert_allclose(kps, ref_kps, rtol=0, atol=1e-9)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-12, atol=1e-9)


def test_reference_equality_with_heavy_clutter():
    """Overlapping crowd, PAF noise and spurious peaks: exercises person merges and conflicting rows."""
    rng = np.random.default_rng(9)
    size = (160, 128)
    kp = random_people(rng, 12, size, height=(60, 150), max_angle=40)
    heat, pafs = PAFCodec(input_size=size).encode(kp)
    heat = heat + rng.normal(0, 0.03, heat.shape)
    pafs = pafs + rng.normal(0, 0.12, pafs.shape)
    stats = {}
    configs = [DecoderConfig.preset(p) for p in PRESETS] + [DecoderConfig(max_peaks=6, min_parts=2,
                                                                          min_mean_score=0.0)]
    for cfg in configs:
        kps, scores = decode_people(heat, pafs, config=cfg)
        ref_kps, ref_scores = reference_decode(heat, pafs, config=cfg, stats=stats)
        assert kps.shape == ref_kps.shape and len(kps) > 0
        np.testing.assert_allclose(kps, ref_kps, atol=1e-9)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-9)
    assert stats.get("merge", 0) > 0 and stats.get("conflict", 0) > 0 and stats.get("skip", 0) > 0


def match(people_gt, decoded):
    """For each GT person the decoded person with the smallest worst-part error (inf if parts differ)."""
    errs = []
    for p in people_gt:
        lab = p[:, 2] > 0
        best = np.inf
        for d in decoded:
            if np.array_equal(d[:, 2] > 0, lab):
                best = min(best, np.abs(d[lab, :2] - p[lab, :2]).max())
        errs.append(best)
    return np.array(errs)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("seed", range(4))
def test_round_trip_recovers_every_person(preset, seed):
    size = (640, 384)
    rng = np.random.default_rng(100 + seed)
    kp = random_people(rng, 3, size, height=(260, 340), columns=True, drop_leaves=0.3)
    heat, pafs = PAFCodec(input_size=size).encode(kp)
    kps, scores = decode_people(heat, pafs, stride=8.0, config=DecoderConfig.preset(preset))
    assert len(kps) == 3  # no extra people, none split
    assert np.all(match(kp, kps) < 1.0)  # sub-cell refinement: well under a pixel on exact Gaussians
    assert np.all(np.diff(scores) <= 0)
    assert np.all(kps[kps[..., 2] == 0] == 0)  # missing parts are (0, 0, 0)
    coco = to_coco17(kps)
    assert coco.shape == (3, 17, 3) and np.array_equal(coco[:, 0], kps[:, 0]) and np.array_equal(coco[:, 5], kps[:, 5])


def test_round_trip_with_noise_and_torch_input():
    size = (640, 384)
    rng = np.random.default_rng(5)
    kp = random_people(rng, 3, size, height=(260, 340), columns=True)
    heat, pafs = PAFCodec(input_size=size).encode(kp)
    heat = heat + rng.normal(0, 0.01, heat.shape)
    pafs = pafs + rng.normal(0, 0.01, pafs.shape)
    kps, _ = decode_people(torch.from_numpy(heat), torch.from_numpy(pafs))
    kps18, _ = decode_people(heat[:18], pafs)  # no background channel
    np.testing.assert_array_equal(kps, kps18)
    assert len(kps) == 3 and np.all(match(kp, kps) < 2.0)


def test_empty_and_constant_maps_give_no_people():
    h, w = 46, 62
    for preset in PRESETS:
        cfg = DecoderConfig.preset(preset)
        kps, scores = decode_people(np.zeros((19, h, w)), np.zeros((38, h, w)), config=cfg)
        assert kps.shape == (0, 18, 3) and scores.shape == (0,)
        # flat maps everywhere above threshold, and a PAF agreeing with every horizontal pair
        flat_paf = np.zeros((38, h, w))
        flat_paf[0::2] = 1.0
        kps, _ = decode_people(np.full((19, h, w), 0.9), flat_paf, config=cfg)
        assert len(kps) == 0
        kps, _ = decode_people(np.full((19, h, w), 0.04), flat_paf, config=cfg)  # below the peak threshold
        assert len(kps) == 0


def test_peaks_without_pafs_make_no_people():
    size = (496, 368)
    kp = random_people(np.random.default_rng(0), 5, size)
    heat, pafs = PAFCodec(input_size=size).encode(kp)
    assert len(decode_people(heat, np.zeros_like(pafs))[0]) == 0
    assert len(decode_people(heat, pafs)[0]) >= 4


def test_presets_and_errors():
    cmu, ms = DecoderConfig.preset("cmu"), DecoderConfig.preset("mindspore")
    assert cmu == DecoderConfig()
    assert (cmu.peak_threshold, cmu.smooth_sigma, cmu.min_parts, cmu.min_mean_score) == (0.1, 3.0, 4, 0.4)
    assert (ms.peak_threshold, ms.smooth_sigma, ms.min_parts, ms.min_mean_score) == (0.05, 2.5, 3, 0.2)
    assert ms.no_new_person_limbs == (9, 13) and ms.limb_order is None and cmu.limb_order == "tree"
    with pytest.raises(ValueError, match="preset"):
        DecoderConfig.preset("hzzone")
    with pytest.raises(ValueError, match="expected heatmaps"):
        decode_people(np.zeros((19, 8, 8)), np.zeros((38, 8, 9)))
