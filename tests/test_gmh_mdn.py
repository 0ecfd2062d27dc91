"""GMH-MDN: model, codec, loss, metrics, synthetic data, Task (the family contract: one eval loop,
predict, the codec oracle), export of the decode graph, demo (no real data needed)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from posekit.codecs.mdn import INPUT_JOINTS, MDNCodec, to_root_relative_17
from posekit.engine.evaluation import evaluate, predict
from posekit.engine.recipes import load_config
from posekit.families import build_task
from posekit.losses.mdn import MDNLoss, dirichlet_prior, mdn_nll, mixture_log_likelihood
from posekit.metrics.mpjpe import (best_of_m, hypothesis_errors, mpjpe, p_mpjpe, per_action_mean, procrustes_align,
                                   select_hypothesis)
from posekit.models import count_parameters, create_model
from posekit.models.gmh_mdn import MaxNormLinear

torch.set_num_threads(1)


def tiny_cfg(*extra):
    return load_config("configs/h36m_synthetic.yaml", ["model.args.width=32", "data.synthetic_train=600",
                                                       "data.synthetic_val=120", *extra])


def rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


# --- model ----------------------------------------------------------------------------------------
def test_parameter_count_matches_paper():
    model = create_model("gmh_mdn")
    assert count_parameters(model) == (4_498_682, 4_498_682)
    bn_stats = sum(b.numel() for n, b in model.named_buffers() if "running_" in n)
    assert bn_stats == 10_240
    assert count_parameters(create_model("gmh_mdn", max_norm=True))[1] == 4_498_682


def test_forward_shapes_and_mixture_constraints():
    model = create_model("gmh_mdn", width=64).eval()
    out = model(torch.randn(3, 16, 2))  # unfitted statistics: inputs already z-scored
    assert out["means"].shape == (3, 5, 48) and out["sigmas"].shape == (3, 5) and out["weights"].shape == (3, 5)
    assert torch.all(out["sigmas"] > 0)
    torch.testing.assert_close(out["weights"].sum(1), torch.ones(3))
    # the flat (B, 32) layout is the same input
    x = torch.randn(2, 16, 2)
    torch.testing.assert_close(model(x)["means"], model(x.reshape(2, 32))["means"])


def test_means_use_reference_kernel_fastest_layout():
    model = create_model("gmh_mdn", width=16).eval()
    with torch.no_grad():
        model.mu_head.weight.zero_()
        bias = torch.arange(48 * 5, dtype=torch.float32)
        model.mu_head.bias.copy_(bias)
    means = model(torch.zeros(1, 16, 2))["means"][0]  # (5, 48)
    # reference: mu reshaped to [48, 5] -> element (d, m) is flat index d * 5 + m
    assert means[2, 7].item() == 7 * 5 + 2


def test_max_norm_clips_whole_matrix_in_forward():
    torch.manual_seed(0)
    layer = MaxNormLinear(32, 64, max_norm=True)
    norm = layer.weight.norm()
    assert norm > 1
    x = torch.randn(4, 32)
    expected = x @ (layer.weight / norm).T + layer.bias
    torch.testing.assert_close(layer(x), expected)
    with torch.no_grad():
        layer.weight.mul_(0.5 / norm)  # already inside the ball: untouched
    torch.testing.assert_close(layer(x), x @ layer.weight.T + layer.bias)
    assert create_model("gmh_mdn", width=16, max_norm=True).alpha_head.__class__ is torch.nn.Linear


def test_missing_joints_are_zero_in_normalised_space():
    model = create_model("gmh_mdn", width=32).eval()
    model.codec.fit(np.random.default_rng(0).normal(500, 80, (50, 16, 2)), np.random.default_rng(1).normal(0, 300, (50, 16, 3)))
    x = torch.as_tensor(np.random.default_rng(2).normal(500, 80, (2, 16, 2)), dtype=torch.float32)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, 3] = True
    at_mean = x.clone()
    at_mean[:, 3] = model.codec.mean_2d.reshape(16, 2)[3]
    nan_input = x.clone()
    nan_input[:, 3] = float("nan")
    ref = model(at_mean)["means"]
    torch.testing.assert_close(model(x, mask=mask)["means"], ref)
    torch.testing.assert_close(model(nan_input)["means"], ref)
    assert not torch.allclose(model(x)["means"], ref)


# --- codec ----------------------------------------------------------------------------------------
def test_normalisation_round_trip_and_checkpoint_buffers():
    rng = np.random.default_rng(0)
    x2, y3 = rng.normal(500, 90, (200, 16, 2)), rng.normal(0, 250, (200, 16, 3))
    codec = MDNCodec()
    codec.fit(x2, y3)
    z = codec.normalize_3d(torch.as_tensor(y3))
    torch.testing.assert_close(z.mean(0), torch.zeros(48, dtype=z.dtype), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(48, dtype=z.dtype), atol=1e-5, rtol=0)
    back = codec.denormalize_3d(z).reshape(200, 16, 3)
    np.testing.assert_allclose(back.numpy(), y3, atol=1e-3)
    zx = codec.normalize_2d(torch.as_tensor(x2, dtype=torch.float32))
    np.testing.assert_allclose(codec.denormalize_2d(zx).reshape(200, 16, 2).numpy(), x2, atol=1e-3)
    # the statistics travel in the state dict
    model = create_model("gmh_mdn", width=16)
    model.codec.fit(x2, y3)
    state = model.state_dict()
    assert {"codec.mean_2d", "codec.std_2d", "codec.mean_3d", "codec.std_3d", "codec.fitted"} <= set(state)
    fresh = create_model("gmh_mdn", width=16)
    assert not fresh.codec.is_fitted
    fresh.load_state_dict(state)
    assert fresh.codec.is_fitted
    torch.testing.assert_close(fresh.codec.std_3d, model.codec.std_3d)


def test_codec_rejects_wrong_shapes_and_constant_dims():
    codec = MDNCodec()
    with pytest.raises(ValueError, match="expected 16x2"):
        codec.fit(np.zeros((10, 17, 2)), np.zeros((10, 16, 3)))
    codec.fit(np.ones((10, 16, 2)), np.random.default_rng(0).normal(size=(10, 16, 3)))
    assert torch.all(codec.std_2d == 1)  # constant dimension: left unscaled, no division by zero


def test_decode_puts_root_back_and_picks_largest_weight():
    codec = MDNCodec()
    codec.fit(np.random.default_rng(0).normal(size=(20, 16, 2)), np.random.default_rng(1).normal(0, 100, (20, 16, 3)))
    means = torch.randn(2, 5, 48)
    weights = torch.softmax(torch.randn(2, 5), 1)
    dec = codec.decode(means, torch.ones(2, 5), weights)
    assert dec["hypotheses"].shape == (2, 5, 17, 3)
    assert torch.all(dec["hypotheses"][:, :, 0] == 0)
    best = weights.argmax(1)
    torch.testing.assert_close(dec["keypoints"], dec["hypotheses"][torch.arange(2), best])
    torch.testing.assert_close(dec["hypotheses"][:, :, 1:].reshape(2, 5, 48), codec.denormalize_3d(means))
    t16 = np.ones((3, 16, 3))
    assert to_root_relative_17(t16).shape == (3, 17, 3) and np.all(to_root_relative_17(t16)[:, 0] == 0)
    assert torch.equal(to_root_relative_17(torch.ones(3, 16, 3))[:, 1:], torch.ones(3, 16, 3))


# --- loss -----------------------------------------------------------------------------------------
def test_nll_matches_hand_computed_mixture():
    # D = 2, M = 2: p(y) = sum_m a_m (2 pi s_m^2)^-1 exp(-|y - mu_m|^2 / (2 s_m^2))
    y = torch.tensor([[1.0, 2.0]])
    mu = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])
    s = torch.tensor([[1.0, 2.0]])
    a = torch.tensor([[0.25, 0.75]])
    p = 0.25 / (2 * math.pi) * math.exp(-5 / 2) + 0.75 / (2 * math.pi * 4) * math.exp(-1 / 8)
    assert mdn_nll(mu, s, a, y).item() == pytest.approx(-math.log(p), rel=1e-6)


def test_nll_is_finite_where_direct_density_underflows():
    # D = 48 with a small sigma: the direct density is 0 in float32, log-sum-exp is exact
    torch.manual_seed(0)
    y = torch.randn(4, 48)
    mu = torch.randn(4, 5, 48) * 3
    s = torch.full((4, 5), 0.05)
    a = torch.full((4, 5), 0.2)
    direct = (a * torch.exp(-((y[:, None] - mu) ** 2).sum(-1) / (2 * s ** 2)) / (2 * math.pi * s ** 2) ** 24).sum(1)
    assert torch.all(direct == 0)
    ll = mixture_log_likelihood(mu, s, a, y)
    assert torch.all(torch.isfinite(ll))
    y64, mu64, s64 = y.double(), mu.double(), s.double()
    terms = math.log(0.2) - 24 * math.log(2 * math.pi) - 48 * torch.log(s64) - ((y64[:, None] - mu64) ** 2).sum(-1) / (2 * s64 ** 2)
    expected = terms.max(1).values + torch.log(torch.exp(terms - terms.max(1, keepdim=True).values).sum(1))
    torch.testing.assert_close(ll.double(), expected, rtol=1e-5, atol=1e-2)


def test_dirichlet_prior_and_total_loss():
    w = torch.full((3, 5), 0.2)
    assert dirichlet_prior(w, 2.0).item() == pytest.approx(5 * math.log(5), rel=1e-6)
    assert dirichlet_prior(w, 1.0).item() == 0.0  # Dirichlet(1) is flat
    # the prior prefers balanced weights
    assert dirichlet_prior(torch.tensor([[0.96, 0.01, 0.01, 0.01, 0.01]])) > dirichlet_prior(w[:1])
    mu, s, y = torch.randn(3, 5, 48), torch.ones(3, 5), torch.randn(3, 48)
    total, parts = MDNLoss()(mu, s, w, y)
    assert total.item() == pytest.approx((parts["nll"] + parts["prior"]).item(), rel=1e-6)
    with pytest.raises(ValueError, match="must be"):
        mdn_nll(mu, s, w, torch.randn(3, 47))


def test_loss_section_configures_the_objective():
    """The typed `loss:` section (concentration, prior_weight) reaches task.loss = MDNLoss."""
    torch.manual_seed(0)
    out = {"means": torch.randn(3, 5, 48), "sigmas": torch.rand(3, 5) + 0.5,
           "weights": torch.softmax(torch.randn(3, 5), 1), "target": torch.randn(3, 48)}
    batch = {"target_3d": torch.randn(3, 16, 3)}  # unused: the model already normalised the target
    ref_total, ref_parts = MDNLoss(concentration=2.0, prior_weight=1.0)(out["means"], out["sigmas"], out["weights"],
                                                                        out["target"])
    value, logs = build_task(tiny_cfg()).loss(out, batch)
    assert float(value) == pytest.approx(float(ref_total)) and logs["nll"] == pytest.approx(float(ref_parts["nll"]))
    assert set(logs) == {"nll", "prior", "sigma", "max_weight"}
    value, logs = build_task(tiny_cfg("loss.prior_weight=0")).loss(out, batch)
    assert float(value) == pytest.approx(logs["nll"])
    value, logs = build_task(tiny_cfg("loss.concentration=1.0")).loss(out, batch)
    assert logs["prior"] == 0.0 and float(value) == pytest.approx(logs["nll"])  # Dirichlet(1) is flat


# --- metrics --------------------------------------------------------------------------------------
def test_mpjpe_hand_computed():
    gt = np.zeros((1, 2, 3))
    pred = np.array([[[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]]])
    assert mpjpe(pred, gt)[0] == pytest.approx(3.0)


def test_procrustes_recovers_known_similarity_transform():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 300, (17, 3))
    R, s, t = rotation(rng), 1.7, np.array([100.0, -50.0, 20.0])
    y = s * x @ R.T + t
    aligned, (s_hat, R_hat, t_hat) = procrustes_align(x, y, return_transform=True)
    np.testing.assert_allclose(aligned, y, atol=1e-8)
    assert s_hat == pytest.approx(s)
    np.testing.assert_allclose(R_hat, R, atol=1e-10)
    np.testing.assert_allclose(t_hat, t, atol=1e-8)
    assert p_mpjpe(x, y) == pytest.approx(0.0, abs=1e-8)
    assert mpjpe(x, y) > 100


def test_procrustes_never_reflects():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 300, (17, 3))
    mirrored = x * np.array([-1.0, 1.0, 1.0])  # a reflection cannot be undone by a rotation
    aligned, (_, R, _) = procrustes_align(x, mirrored, return_transform=True)
    assert np.linalg.det(R) == pytest.approx(1.0)
    assert p_mpjpe(x, mirrored) > 10
    # Procrustes never makes the error worse, and broadcasting over hypotheses works
    hyps = rng.normal(0, 300, (4, 3, 17, 3))
    gt = rng.normal(0, 300, (4, 17, 3))
    e1, e2 = hypothesis_errors(hyps, gt), hypothesis_errors(hyps, gt, procrustes=True)
    assert e1.shape == e2.shape == (4, 3) and np.all(e2 <= e1 + 1e-9)


def test_best_of_m_selection_and_action_means():
    errors = np.array([[5.0, 1.0, 3.0], [2.0, 4.0, 6.0], [7.0, 8.0, 0.5]])
    np.testing.assert_allclose(best_of_m(errors), [1.0, 2.0, 0.5])
    np.testing.assert_allclose(select_hypothesis(errors, np.array([0, 1, 1])), [5.0, 4.0, 8.0])
    per, mean = per_action_mean(np.array([1.0, 3.0, 10.0]), np.array([0, 0, 1]), ["a", "b", "c"])
    assert per == {"a": 2.0, "b": 10.0} and mean == 6.0  # unweighted over actions present


# --- synthetic data -------------------------------------------------------------------------------
def test_synthetic_skeleton_limits_and_projection():
    from posekit.data.synthetic.h36m import HIGH, LOW, PARENTS, REST_OFFSETS, generate, synthetic_h36m
    raw = generate(400, seed=3, noise_px=0.0)
    p3d, p2d = raw["poses_3d"], raw["poses_2d"]
    assert np.all(raw["angles"] >= LOW) and np.all(raw["angles"] <= HIGH)
    for j, parent in enumerate(PARENTS[1:], start=1):  # human bone lengths (x 0.85..1.15 per person)
        ratio = np.linalg.norm(p3d[:, j] - p3d[:, parent], axis=1) / np.linalg.norm(REST_OFFSETS[j])
        assert 0.75 < ratio.min() and ratio.max() < 1.3
    assert np.all(p3d[..., 2] > 1500)  # in front of the camera
    assert np.mean(p3d[:, 10, 1] < p3d[:, 0, 1]) > 0.95  # head above pelvis (camera y points down)
    # 2-D is the pinhole projection of the 3-D points (no noise requested)
    xy = p3d[..., :2] / p3d[..., 2:]
    scale = (p2d[:, 1] - p2d[:, 0]) / (xy[:, 1] - xy[:, 0])
    assert np.allclose(scale, 1145, rtol=0.05)
    ds = synthetic_h36m(50, seed=3)
    again = synthetic_h36m(50, seed=3)
    np.testing.assert_array_equal(ds.inputs, again.inputs)
    assert ds.inputs.shape == (50, 16, 2) and ds.targets.shape == (50, 16, 3)
    assert len(ds.action_names) == 15


def test_missing_joint_augmentation_is_off_by_default_and_works():
    from posekit.data.formats.h36m import LIMB_INPUT_JOINTS
    from posekit.data.synthetic.h36m import synthetic_h36m
    assert not any(synthetic_h36m(20)[i]["mask"].any() for i in range(20))
    ds = synthetic_h36m(200, miss_num=2)
    np.random.seed(123)
    numpy_state = np.random.get_state()[1].copy()
    torch.manual_seed(0)  # the pipeline's RNG is drawn from torch (item_rng), not numpy's global RNG
    masks = np.stack([ds[i]["mask"].numpy() for i in range(200)])
    counts = masks.sum(1)
    assert (counts == 2).all()  # exactly miss_num joints dropped (the reference), every sample (miss_prob 1)
    assert set(np.flatnonzero(masks.any(0))) == set(LIMB_INPUT_JOINTS)  # any limb joint can go
    assert len({tuple(np.flatnonzero(m)) for m in masks}) > 10  # different joints per sample
    torch.manual_seed(0)
    half = synthetic_h36m(400, miss_num=3, miss_prob=0.5)
    counts = np.array([half[i]["mask"].sum() for i in range(400)])
    assert set(counts.tolist()) == {0, 3} and 0.35 < (counts == 3).mean() < 0.65
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)  # numpy's global RNG untouched
    torch.manual_seed(0)
    np.testing.assert_array_equal(np.stack([ds[i]["mask"].numpy() for i in range(200)]), masks)  # reproducible
    with pytest.raises(ValueError, match="miss_num"):
        synthetic_h36m(10, miss_num=9)


# --- task -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained():
    """A tiny lifter trained for a few hundred steps on synthetic data."""
    torch.manual_seed(0)
    cfg = tiny_cfg("model.args.width=128", "model.args.dropout=0.0", "data.synthetic_train=3000",
                   "data.synthetic_val=300")
    task = build_task(cfg)
    model = task.build_model()
    datasets = task.build_datasets()
    assert set(datasets) == {"train", "val"}
    task.prepare(model, datasets)
    before = evaluate(task, model, datasets)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loader = torch.utils.data.DataLoader(datasets["train"], batch_size=64, shuffle=True, drop_last=True,
                                         collate_fn=task.collate)
    losses = []
    model.train()
    for _ in range(4):
        for batch in loader:
            loss, logs = task.training_step(model, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert set(logs) == {"nll", "prior", "sigma", "max_weight"}
    after = evaluate(task, model, datasets)
    return task, model.eval(), cfg, datasets, before, after, losses


def test_training_learns_and_evaluate_reports_protocols(trained):
    task, model, cfg, datasets, before, after, losses = trained
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 10
    assert after["p1_best"] < 0.5 * before["p1_best"]
    assert after["p2_best"] < before["p2_best"]
    for key in ("p1_best", "p1_ml", "p2_best", "p2_ml", "p1_best_j16", "p2_ml_j16"):
        assert key in after and np.isfinite(after[key])
    assert after["p1_best"] <= after["p1_ml"] and after["p2_best"] <= after["p2_ml"]
    # 17-joint convention includes the zero-error root: exactly 16/17 of the 16-joint P1
    assert after["p1_best"] == pytest.approx(after["p1_best_j16"] * 16 / 17, rel=1e-9)
    assert task.primary_metric in after and task.higher_is_better is False
    assert "Average" in after["table"] and "synth00" in after["table"]
    # the eval loop's validation loss (task.loss on the validation split) falls with training
    assert np.isfinite(after["val_loss"]) and after["val_loss"] < before["val_loss"]
    assert after["num_frames"] == len(datasets["val"]) == 300


def test_evaluate_respects_max_samples_and_per_action(trained):
    task, model, cfg, datasets, *_ = trained
    task2 = build_task(tiny_cfg("eval.max_samples=50", "eval.per_action=true", "eval.table=false"))
    task2.prepare(model, {})  # a trained model: keep its statistics
    m = evaluate(task2, model, {"val": datasets["val"]})
    assert m["num_frames"] == 50 and "table" not in m
    assert any(k.startswith("p1_best/synth") for k in m)


def test_codec_oracle_is_exact(trained):
    """decode_targets: the targets z-scored and decoded again, one certain hypothesis: ~0 mm."""
    task, model, cfg, datasets, *_ = trained
    oracle_task = build_task(cfg)
    m = evaluate(oracle_task, None, datasets, oracle=True)  # prepare(None, ...) fits on "train"
    assert m["num_frames"] == 300 and m["mean_max_weight"] == 1.0
    for key in ("p1_best", "p1_ml", "p2_best", "p2_ml"):
        assert m[key] < 1e-3
    assert m["p1_best"] == m["p1_ml"] and "val_loss" not in m


def test_predict_results_formats(trained):
    task, model, cfg, datasets, *_ = trained
    val = datasets["val"]
    pose17 = val.meta["poses_2d_17"][0].astype(np.float64)
    (res,) = predict(task, model, [pose17])
    assert res.keypoints.shape == (1, 17, 3) and res.hypotheses.shape == (1, 5, 17, 3)
    assert res.hypothesis_weights.shape == (1, 5) and res.keypoints_2d.shape == (1, 17, 2)
    np.testing.assert_allclose(res.hypothesis_weights.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(res.keypoints[0], res.hypotheses[0, res.hypothesis_weights[0].argmax()])
    assert np.all(res.hypotheses[..., 0, :] == 0)
    # the same pose as 16 model inputs, with scores, as a dict, and in MPII order
    (r16,) = predict(task, model, [pose17[list(INPUT_JOINTS)]], skeleton="h36m16")
    np.testing.assert_allclose(r16.hypotheses, res.hypotheses, atol=1e-4)
    with_scores = np.concatenate([pose17, np.ones((17, 1))], 1)
    (rs,) = predict(task, model, [{"keypoints": with_scores, "skeleton": "h36m17"}])
    np.testing.assert_allclose(rs.hypotheses, res.hypotheses, atol=1e-4)
    mpii = np.zeros((16, 2))
    mpii[[6, 2, 1, 0, 3, 4, 5, 7, 8, 9, 13, 14, 15, 12, 11, 10]] = pose17[list(INPUT_JOINTS)]
    (rm,) = predict(task, model, [mpii], skeleton="mpii16")
    np.testing.assert_allclose(rm.hypotheses, res.hypotheses, atol=1e-4)
    # a missing joint (score 0) still lifts; rescaling makes the lifter invariant to 2-D scale
    with_scores[12, 2] = 0
    (rmiss,) = predict(task, model, [with_scores])
    assert np.all(np.isfinite(rmiss.hypotheses))
    (ra,) = predict(task, model, [pose17], rescale=True)
    (rb,) = predict(task, model, [pose17 * 2.0 + 30.0], rescale=True)
    np.testing.assert_allclose(ra.hypotheses, rb.hypotheses, atol=1e-3)
    with pytest.raises(ValueError, match="not images"):
        predict(task, model, [np.zeros((64, 64, 3), np.uint8)])
    with pytest.raises(ValueError, match="do not match skeleton"):
        predict(task, model, [np.zeros((15, 2))])


def test_untrained_lifter_refuses_to_predict():
    cfg = tiny_cfg()
    task = build_task(cfg)
    model = task.build_model()
    task.prepare(model, {})  # as after loading a checkpoint: the model's (here unfitted) statistics
    with pytest.raises(RuntimeError, match="normalisation statistics"):
        predict(task, model, [np.zeros((17, 2))])


def test_untrained_lifter_refuses_to_rescale_or_evaluate():
    """The paths that do consult the statistics refuse an unfitted codec with the clear message."""
    cfg = tiny_cfg()
    task = build_task(cfg)
    model = task.build_model()
    task.prepare(model, {})
    with pytest.raises(RuntimeError, match="normalisation statistics"):
        predict(task, model, [np.zeros((17, 2))], rescale=True)
    with pytest.raises(RuntimeError, match="normalisation statistics"):
        evaluate(task, model, task.build_datasets(("val",)))


def test_export_onnx_parity(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort
    from posekit.engine.export import export_task
    task, model, cfg, datasets, *_ = trained
    spec = task.export_spec()
    assert spec.input_names == ["keypoints_2d"] and spec.output_names == ["hypotheses", "weights", "sigmas"]
    report = export_task(task, model, tmp_path / "gmh.onnx")
    assert report["max_abs_diff"] < 1e-2  # mm
    x = datasets["val"].inputs[:7]
    hyps, weights, sigmas = ort.InferenceSession(str(tmp_path / "gmh.onnx")).run(None, {"keypoints_2d": x})
    assert hyps.shape == (7, 5, 17, 3) and sigmas.shape == (7, 5) and weights.shape == (7, 5)
    assert np.all(hyps[:, :, 0] == 0)  # mm with a zero root
    with torch.no_grad():
        ref = task.forward_decode(model, torch.from_numpy(x))
    np.testing.assert_allclose(hyps, ref["hypotheses"].numpy(), atol=1e-2)
    np.testing.assert_allclose(weights, ref["weights"].numpy(), atol=1e-5)
    np.testing.assert_allclose(sigmas, ref["sigmas"].numpy(), atol=1e-5)
    # and the decode graph is what predict lifts with (the same first validation pose)
    (res,) = predict(task, model, [datasets["val"].meta["poses_2d_17"][0].astype(np.float64)])
    np.testing.assert_allclose(res.hypotheses[0], hyps[0], atol=1e-2)


def test_demo_writes_hypothesis_plots(trained, tmp_path):
    from posekit.data.io import read_image
    task, model, cfg, datasets, *_ = trained
    paths = task.demo(lambda inputs, **options: predict(task, model, inputs, **options), datasets, tmp_path, count=2)
    assert len(paths) == 2
    img = read_image(paths[0])
    assert img.ndim == 3 and img.shape[0] > 100 and img.std() > 5
    data = json.loads((tmp_path / "gmh_mdn_0.json").read_text())
    assert len(data["hypotheses"][0]) == 5 and len(data["meta"]["mpjpe_per_hypothesis_mm"]) == 5


def test_recipes_load():
    for path in ("configs/h36m_gmh_mdn.yaml", "configs/h36m_synthetic.yaml"):
        cfg = load_config(path)
        assert cfg.task == "gmh_mdn" and cfg.model.name == "gmh_mdn"
    paper = load_config("configs/h36m_gmh_mdn.yaml")
    t = paper.train
    assert (t.optimizer, t.lr, t.batch_size, t.schedule, t.gamma, t.decay_steps, t.staircase) == \
        ("adam", 1e-3, 64, "exp", 0.96, 100000, False)
    assert paper.data.eval_split == "val" and paper.data.miss_num == 0
    assert (paper.loss.concentration, paper.loss.prior_weight) == (2.0, 1.0)  # the paper's Dirichlet prior
    assert count_parameters(build_task(paper).build_model())[0] == 4_498_682


def test_bad_data_config_is_a_clear_error():
    with pytest.raises(ValueError, match="data.dataset"):
        build_task(tiny_cfg("data.dataset=nope")).build_datasets()
    with pytest.raises(ValueError, match="data.root"):
        build_task(tiny_cfg("data.dataset=h36m")).build_datasets()
    with pytest.raises(ValueError, match="eval_split"):
        build_task(tiny_cfg("data.eval_split=train"))
