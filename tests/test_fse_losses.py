"""FSE codec (spatial softmax + soft-argmax), landmark skeletons, alignment and diversity losses."""
import importlib.util

import pytest
import torch

from posekit.codecs.landmarks import LandmarkDecoder, landmark_skeleton, spatial_softmax
from posekit.losses.fse import alignment_loss, diversity_loss, fse_loss
from posekit.models.fse import cell_centers
from posekit.ops.tps import TPSWarp, random_tps
from posekit.skeletons import get_skeleton

M = 42
CENTERS = cell_centers(M)


def _one_hot(b, cells, m=M):
    """(B, K, m, m) maps with all mass on cells[k] = (row, col) for every image."""
    p = torch.zeros(b, len(cells), m, m)
    for k, (r, c) in enumerate(cells):
        p[:, k, r, c] = 1
    return p


def test_sharp_peak_decodes_to_its_cell_centre():
    decoder = LandmarkDecoder(M, CENTERS)
    scores = torch.zeros(2, 3, M, M)
    cells = [(0, 0), (10, 31), (41, 5)]
    for k, (r, c) in enumerate(cells):
        scores[:, k, r, c] = 60.0
    kps, conf = decoder(scores)
    expected = torch.tensor([[22.5 + 2 * c, 22.5 + 2 * r] for r, c in cells])
    assert torch.allclose(kps, expected.expand(2, -1, -1), atol=1e-3)
    assert (conf > 0.99).all()
    flat_kps, flat_conf = decoder(torch.zeros(1, 1, M, M))
    assert torch.allclose(flat_kps, torch.tensor([[[63.5, 63.5]]]), atol=1e-4)  # the mean of all centres
    assert torch.allclose(flat_conf, torch.tensor([[9 / M ** 2]]))
    with pytest.raises(ValueError, match="score maps of size"):
        decoder(torch.zeros(1, 1, 40, 40))


def test_decoder_sub_cell_position_is_the_expectation():
    scores = torch.full((1, 1, M, M), -1e4)
    scores[0, 0, 5, 5] = 0.0
    scores[0, 0, 5, 6] = 0.0  # two equal cells: halfway between their centres
    kps, conf = LandmarkDecoder(M, CENTERS)(scores)
    assert torch.allclose(kps[0, 0], torch.tensor([22.5 + 11.0, 22.5 + 10.0]))
    assert float(conf) == pytest.approx(1.0)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime not installed")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript-based exporter announces its retirement
def test_decoder_exports_to_onnx(tmp_path):
    import numpy as np
    import onnxruntime as ort
    decoder = LandmarkDecoder(M, CENTERS).eval()
    scores = torch.randn(2, 4, M, M) * 3
    path = tmp_path / "decoder.onnx"
    torch.onnx.export(decoder, (scores,), str(path), input_names=["scores"], output_names=["keypoints", "confidence"],
                      opset_version=17, dynamo=False)
    kps, conf = ort.InferenceSession(str(path)).run(None, {"scores": scores.numpy()})
    ref_kps, ref_conf = decoder(scores)
    assert np.allclose(kps, ref_kps.numpy(), atol=1e-4) and np.allclose(conf, ref_conf.numpy(), atol=1e-6)


def test_generated_landmark_skeleton():
    sk = landmark_skeleton(30)
    assert sk.name == "landmarks30" and sk.keypoints[0] == "l0" and sk.keypoints[-1] == "l29"
    assert sk.flip_pairs == () and sk.limbs == ()
    assert len(set(sk.colors)) == 30
    assert get_skeleton("landmarks30") is sk
    assert landmark_skeleton(30) is sk  # idempotent
    assert len(set(landmark_skeleton(64).colors)) == 64


def test_alignment_zero_when_aligned_under_identity():
    p = _one_hot(3, [(4, 4), (20, 30), (40, 1)])
    assert float(alignment_loss(p, p.clone(), TPSWarp.identity(3), CENTERS)) == pytest.approx(0.0, abs=1e-6)


def test_alignment_under_known_translation_is_in_cells():
    p = _one_hot(2, [(10, 10), (30, 12)])
    # g(u) = u + (6, -4) px = (3, -2) cells; x' landmarks left where x's were -> squared distance 13 cells^2
    warp = TPSWarp.from_pixel_affine(torch.tensor([[[1.0, 0, -6], [0, 1.0, 4]]]).expand(2, -1, -1), (128, 128))
    assert float(alignment_loss(p, p, warp, CENTERS)) == pytest.approx(13.0, rel=1e-5)
    # ... and 0 when x' shows them where g put them
    q = _one_hot(2, [(8, 13), (28, 15)])
    assert float(alignment_loss(p, q, warp, CENTERS)) == pytest.approx(0.0, abs=1e-4)
    # the loss also takes the warped centres directly
    moved = CENTERS[None].expand(2, -1, -1) + torch.tensor([6.0, -4.0])
    assert float(alignment_loss(p, p, moved, CENTERS)) == pytest.approx(13.0, rel=1e-5)


def test_alignment_equals_brute_force_expectation():
    gen = torch.Generator().manual_seed(0)
    m = 9
    centers = cell_centers(m)
    probs_a = spatial_softmax(torch.randn(2, 3, m, m, generator=gen) * 2)
    probs_b = spatial_softmax(torch.randn(2, 3, m, m, generator=gen) * 2)
    warp = random_tps(2, generator=gen, image_size=(60, 60), displacement_std=0.03)
    ga = warp.warp_points(centers[None].expand(2, -1, -1).double()).float() / 2  # cells
    b = centers / 2
    d2 = ((ga[:, :, None, :] - b[None, None]) ** 2).sum(-1)  # (B, HW_a, HW_b)
    pa, pb = probs_a.flatten(2), probs_b.flatten(2)
    brute = torch.einsum("bku,bkv,buv->bk", pa, pb, d2).mean()
    assert float(alignment_loss(probs_a, probs_b, warp, centers)) == pytest.approx(float(brute), rel=1e-4)


def test_diversity_collapsed_vs_separated():
    k = 6
    collapsed = _one_hot(2, [(20, 20)] * k)
    assert float(diversity_loss(collapsed, pool=4)) == pytest.approx(k - 1, abs=1e-5)
    separated = _one_hot(2, [(5, 5), (5, 15), (5, 25), (20, 5), (20, 15), (20, 25)])
    assert float(diversity_loss(separated, pool=4)) == pytest.approx(0.0, abs=1e-5)
    near = _one_hot(1, [(5, 5), (5, 6)])  # closer than the pool: partly overlapping windows
    assert 0.1 < float(diversity_loss(near, pool=4)) < 1.0


def test_fse_loss_total_and_gradients():
    gen = torch.Generator().manual_seed(1)
    scores_a = torch.randn(2, 4, M, M, generator=gen).requires_grad_()
    scores_b = torch.randn(2, 4, M, M, generator=gen).requires_grad_()
    warp = random_tps(2, generator=gen)
    pa, pb = spatial_softmax(scores_a), spatial_softmax(scores_b)
    total, parts = fse_loss(pa, pb, warp, CENTERS, diversity_weight=500.0, pool=4)
    assert set(parts) == {"align", "div_a", "div_b", "total"}
    expected = parts["align"] + 500 * (parts["div_a"] + parts["div_b"])
    assert float(total.detach()) == pytest.approx(float(expected), rel=1e-6)
    total.backward()
    assert scores_a.grad.abs().sum() > 0 and scores_b.grad.abs().sum() > 0
