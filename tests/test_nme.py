"""Unsupervised-landmark evaluation: linear regressor to the annotated points, inter-ocular NME."""
import numpy as np
import pytest

from posekit.metrics.nme import apply_regressor, fit_landmark_regressor, interocular_nme, mean_shape_baseline


def _faces(n, rng):
    base = np.array([[40.0, 50], [80, 50], [60, 70], [45, 90], [75, 90]])
    return base + rng.normal(0, 4, size=(n, 5, 2))


def test_exact_affine_relation_gives_zero_error():
    rng = np.random.default_rng(0)
    annotated = _faces(60, rng)
    mix = rng.normal(size=(10, 16))  # discovered = an affine function of the 10 annotated coordinates (K = 8)
    discovered = (annotated.reshape(60, 10) @ mix + rng.normal(size=16)).reshape(60, 8, 2)
    w = fit_landmark_regressor(discovered[:40], annotated[:40])
    assert w.shape == (17, 10)
    pred = apply_regressor(w, discovered[40:])
    assert np.abs(pred - annotated[40:]).max() < 1e-8
    assert interocular_nme(pred, annotated[40:]) < 1e-8


def test_tiny_least_squares_case_solved_by_hand():
    # one discovered point on a 2x2 design, one annotated point whose x is 0, 2, 1, 4:
    # x = 2.5 dx + 1.5 dy - 0.25 (main effects of the factorial design), residuals +-0.25
    discovered = np.array([[[0.0, 0]], [[1, 0]], [[0, 1]], [[1, 1]]])
    annotated = np.array([[[0.0, 7]], [[2, 7]], [[1, 7]], [[4, 7]]])
    w = fit_landmark_regressor(discovered, annotated)
    assert np.allclose(w[:, 0], [2.5, 1.5, -0.25])
    assert np.allclose(w[:, 1], [0, 0, 7])
    pred = apply_regressor(w, discovered)
    assert np.allclose(pred[:, 0, 0], [-0.25, 2.25, 1.25, 3.75])


def test_interocular_nme_by_hand():
    gt = np.array([[[0.0, 0], [10, 0], [5, 5], [2, 8], [8, 8]]])
    assert interocular_nme(gt + [1.0, 0], gt) == pytest.approx(10.0)  # 1 px everywhere / 10 px -> 10 %
    pred = gt.copy()
    pred[0, 2] += [0, 5]  # one point 5 px off: mean error 1 px -> 10 %
    assert interocular_nme(pred, gt) == pytest.approx(10.0)
    two = np.concatenate([gt, gt * 2])
    per = interocular_nme(two + [2.0, 0], two, per_image=True)
    assert np.allclose(per, [20.0, 10.0])
    with pytest.raises(ValueError, match="inter-ocular"):
        interocular_nme(gt, np.zeros_like(gt))


def test_mean_shape_baseline_and_regressor_beats_it():
    rng = np.random.default_rng(1)
    gt = np.array([[[0.0, 0], [10, 0], [5, 5], [2, 8], [8, 8]]])
    assert mean_shape_baseline(np.repeat(gt, 3, 0), gt + [0, 2.0]) == pytest.approx(20.0)
    annotated = _faces(300, rng)
    discovered = annotated[:, [0, 1, 2, 3, 4, 2, 0, 1]] * 0.5 + rng.normal(0, 0.5, size=(300, 8, 2))
    w = fit_landmark_regressor(discovered[:200], annotated[:200])
    nme = interocular_nme(apply_regressor(w, discovered[200:]), annotated[200:])
    assert nme < 0.5 * mean_shape_baseline(annotated[:200], annotated[200:])


def test_shape_errors():
    with pytest.raises(ValueError, match="need N >= 2K"):
        fit_landmark_regressor(np.zeros((5, 8, 2)), np.zeros((5, 5, 2)))
    with pytest.raises(ValueError, match=r"\(N, K, 2\)"):
        fit_landmark_regressor(np.zeros((5, 8)), np.zeros((5, 5, 2)))
    w = fit_landmark_regressor(np.random.default_rng(0).normal(size=(20, 2, 2)), np.zeros((20, 5, 2)))
    with pytest.raises(ValueError, match="expects 4"):
        apply_regressor(w, np.zeros((3, 3, 2)))
