"""The decoder's candidate-pair pruning is exact: the accepted limbs equal scoring every pair."""
import sys
from pathlib import Path

import numpy as np
import pytest

from posekit.codecs.paf import DecoderConfig, PAFCodec, _bilinear_xy, find_peaks, score_limbs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from openpose_reference_decoder import random_people  # noqa: E402


def score_every_pair(pafs, limbs, part, fx, fy, config):
    """The unpruned rule: every (A, B) pair of every limb, all samples, A-major order."""
    _, h, w = pafs.shape
    n = config.num_samples
    t = np.linspace(0.0, 1.0, n)
    size = h if config.dist_prior_axis == "height" else w
    out = []
    for i, (a, b) in enumerate(limbs):
        for pa in np.flatnonzero(part == a):
            for pb in np.flatnonzero(part == b):
                vx, vy = fx[pb] - fx[pa], fy[pb] - fy[pa]
                norm = max(np.hypot(vx, vy), 1e-6)
                sx, sy = _bilinear_xy(pafs, np.full(n, 2 * i), fx[pa] + t * vx, fy[pa] + t * vy)
                d = sx * vx / norm + sy * vy / norm
                score = d.mean() + min(config.dist_prior_factor * size / norm - 1.0, 0.0)
                if (d > config.sample_threshold).sum() > config.min_valid_fraction * n and score > 0:
                    out.append((i, pa, pb, score))
    return out


def crowd_maps(seed, people, noise, scale=1.0, input_size=(248, 184)):
    rng = np.random.default_rng(seed)
    codec = PAFCodec(input_size=input_size)
    kp = random_people(rng, people, input_size, height=(40.0, 120.0), drop_leaves=0.2)
    heat, pafs = codec.encode(kp)
    heat = heat + rng.normal(0, noise, heat.shape)
    pafs = scale * pafs + rng.normal(0, noise, pafs.shape)
    return codec, heat[:18].astype(np.float64), pafs.astype(np.float64)


def assert_same_as_every_pair(codec, heat, pafs, config):
    part, fx, fy, _ = find_peaks(heat, config, float(codec.stride))
    limb, ia, ib, score = score_limbs(pafs, codec.skeleton.limbs, part, fx, fy, config, 18)
    want = score_every_pair(pafs, codec.skeleton.limbs, part, fx, fy, config)
    assert [(int(a), int(b), int(c)) for a, b, c in zip(limb, ia, ib)] == [w[:3] for w in want]
    np.testing.assert_allclose(score, [w[3] for w in want], rtol=0, atol=1e-12)
    return len(want)


@pytest.mark.parametrize("preset", ["cmu", "mindspore"])
@pytest.mark.parametrize("seed", [0, 1])
def test_pruned_pairs_accept_exactly_what_scoring_every_pair_accepts(preset, seed):
    codec, heat, pafs = crowd_maps(seed, people=12, noise=0.03)
    assert assert_same_as_every_pair(codec, heat, pafs, DecoderConfig.preset(preset)) > 20


def test_length_bound_is_exact_when_the_fields_are_weaker_than_one():
    """PAF magnitudes < 1 switch the length bound on; long limbs near the bound must survive it."""
    codec, heat, pafs = crowd_maps(3, people=8, noise=0.01, scale=0.7)
    assert np.hypot(pafs[0::2], pafs[1::2]).max() < 1.0
    for factor in (0.5, 0.15, 0.05):  # small factors make the distance prior (and the bound) bite
        cfg = DecoderConfig(dist_prior_factor=factor, sample_threshold=0.02)
        assert_same_as_every_pair(codec, heat, pafs, cfg)


@pytest.mark.parametrize("shape", [(1, 9), (9, 1), (2, 2), (1, 1)])
def test_pruning_on_maps_one_or_two_cells_wide(shape):
    """Degenerate maps: the support table must follow the sampler's clamped corners."""
    rng = np.random.default_rng(7)
    codec = PAFCodec(input_size=(8 * shape[1], 8 * shape[0]))
    heat = rng.uniform(0, 1, (18,) + shape)
    pafs = rng.uniform(-1, 1, (38,) + shape)
    cfg = DecoderConfig(peak_threshold=0.0, smooth_sigma=0.0, sample_threshold=0.0, min_valid_fraction=0.5)
    assert_same_as_every_pair(codec, heat, pafs, cfg)


def test_noise_only_fields_accept_what_every_pair_accepts():
    """Strong noise everywhere: pruning keeps little, and what it drops would have been rejected."""
    codec, heat, pafs = crowd_maps(5, people=6, noise=0.2)
    assert_same_as_every_pair(codec, heat, pafs, DecoderConfig(max_peaks=20))


def test_weak_fields_just_above_the_sample_threshold_keep_their_limbs():
    """Fields of magnitude 0.08 against a 0.05 threshold: the support table must not drop them."""
    codec, heat, pafs = crowd_maps(4, people=6, noise=0.002, scale=0.08)
    cfg = DecoderConfig(dist_prior_factor=10.0)
    assert assert_same_as_every_pair(codec, heat, pafs, cfg) >= 10


def test_pruning_skips_most_pairs_in_a_crowd():
    """What makes the decoder near-linear: in a 30-person crowd few pairs reach bilinear scoring."""
    from posekit.codecs.paf import _candidate_pairs
    codec, heat, pafs = crowd_maps(6, people=30, noise=0.02, input_size=(496, 368))
    cfg = DecoderConfig()
    part, fx, fy, _ = find_peaks(heat, cfg, float(codec.stride))
    counts = np.bincount(part, minlength=18)
    starts = np.concatenate([[0], np.cumsum(counts)])
    every = sum(int(counts[a] * counts[b]) for a, b in codec.skeleton.limbs)
    kept = len(_candidate_pairs(pafs, codec.skeleton.limbs, counts, starts, fx, fy, cfg)[0])
    assert kept < 0.2 * every, (kept, every)
