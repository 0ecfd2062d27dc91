"""Thin-plate-spline warps: direction convention, image/point agreement, inverse, reference affine."""
import pytest
import torch
import torch.nn.functional as F

from posekit.ops.tps import TPSWarp, affine_reference, fit_tps, pixel_to_normalized, random_tps

SIZE = (96, 112)  # H, W: non-square catches x/y mix-ups


def _dots(points: torch.Tensor, size_hw, sigma: float = 1.5) -> torch.Tensor:
    """(B, 1, H, W) images with a Gaussian dot at each (x, y) of points (B, 2)."""
    h, w = size_hw
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    d2 = (xs[None] - points[:, 0, None, None]) ** 2 + (ys[None] - points[:, 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * sigma ** 2))[:, None]


def _centroid(images: torch.Tensor) -> torch.Tensor:
    h, w = images.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=images.dtype), torch.arange(w, dtype=images.dtype), indexing="ij")
    m = images[:, 0]
    total = m.sum((-1, -2))
    return torch.stack([(m * xs).sum((-1, -2)) / total, (m * ys).sum((-1, -2)) / total], -1)


def test_identity_leaves_image_unchanged():
    images = torch.rand(3, 2, *SIZE)
    warp = TPSWarp.identity(3, SIZE)
    assert torch.allclose(warp.warp_image(images), images, atol=1e-5)  # float32 grid rounding
    pts = torch.rand(3, 7, 2) * 90
    assert torch.allclose(warp.warp_points(pts), pts, atol=1e-5)


def test_direction_convention_with_a_pixel_translation():
    # sampling map h(q) = q - (3, -2)  <=>  g(u) = u + (3, -2): content moves 3 px right, 2 px up
    matrix = torch.tensor([[[1.0, 0.0, -3.0], [0.0, 1.0, 2.0]]])
    warp = TPSWarp.from_pixel_affine(matrix, SIZE)
    image = torch.rand(1, 1, *SIZE)
    out = warp.warp_image(image, padding_mode="zeros")
    assert torch.allclose(out[0, 0, :-2, 3:], image[0, 0, 2:, :-3], atol=1e-5)
    u = torch.tensor([[[10.0, 20.0], [0.0, 0.0]]])
    assert torch.allclose(warp.warp_points(u), u + torch.tensor([3.0, -2.0]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_warped_dot_lands_where_warp_points_says(seed):
    gen = torch.Generator().manual_seed(seed)
    b = 6
    warp = random_tps(b, generator=gen, image_size=SIZE, rotation=0.4, displacement_std=0.03)
    assert warp.weights.abs().max() > 0  # a genuinely non-affine warp
    pts = torch.stack([torch.rand(b, generator=gen) * 50 + 30, torch.rand(b, generator=gen) * 40 + 28], -1).double()
    moved = warp.warp_points(pts[:, None])[:, 0]
    warped = warp.warp_image(_dots(pts, SIZE), padding_mode="zeros")
    err = (_centroid(warped) - moved).norm(dim=-1)
    assert err.max() < 0.5, err
    # the non-linear part matters here: the affine part alone would be off by more
    affine_only = TPSWarp(warp.affine, warp.centers[:, :0], warp.weights[:, :0], SIZE).warp_points(pts[:, None])[:, 0]
    assert (affine_only - moved).norm(dim=-1).max() > 0.5


def test_newton_inverse_is_exact_and_fit_interpolates():
    gen = torch.Generator().manual_seed(3)
    warp = random_tps(4, generator=gen, image_size=SIZE, displacement_std=0.04)
    pts = torch.rand(4, 200, 2, generator=gen, dtype=torch.float64) * torch.tensor([111.0, 95.0])
    moved, residual = warp.warp_points(pts, return_residual=True)
    assert residual < 1e-5
    assert torch.allclose(warp.sample_points(moved), pts, atol=1e-5)
    ctrl = torch.rand(2, 9, 2, generator=gen, dtype=torch.float64) * 90
    target = ctrl + torch.randn(2, 9, 2, generator=gen, dtype=torch.float64)
    assert torch.allclose(fit_tps(ctrl, target, SIZE).sample_points(ctrl), target, atol=1e-8)


def test_inverse_round_trip():
    gen = torch.Generator().manual_seed(4)
    warp = random_tps(3, generator=gen, image_size=SIZE, displacement_std=0.03)
    inv = warp.inverse()
    pts = torch.rand(3, 300, 2, generator=gen, dtype=torch.float64) * torch.tensor([111.0, 95.0])
    assert (inv.warp_points(warp.warp_points(pts)) - pts).abs().max() < 1e-5
    assert (warp.warp_points(inv.warp_points(pts)) - pts).abs().max() < 1e-5
    assert (inv.inverse().sampling_grid() - warp.sampling_grid()).abs().max() < 1e-6
    # the inverse's image warp follows its own point warp (dot test in the other direction)
    centre = torch.tensor([[50.0, 40.0], [60.0, 50.0], [45.0, 55.0]], dtype=torch.float64)
    warped = inv.warp_image(_dots(centre, SIZE), padding_mode="zeros")
    assert (_centroid(warped) - inv.warp_points(centre[:, None])[:, 0]).norm(dim=-1).max() < 0.5
    # images: a smooth image survives the round trip away from the borders
    image = F.interpolate(torch.rand(3, 1, 6, 7, generator=gen), size=SIZE, mode="bicubic", align_corners=False)
    twice = inv.warp_image(warp.warp_image(image))
    assert (twice - image)[..., 20:-20, 20:-20].abs().max() < 0.03


def test_similarity_without_jitter_is_exact_similarity():
    gen = torch.Generator().manual_seed(5)
    warp = random_tps(2, generator=gen, image_size=SIZE, displacement_std=0.0)
    pts = torch.rand(2, 5, 2, generator=gen, dtype=torch.float64) * 90
    moved = warp.warp_points(pts)
    # distances scale uniformly and angles are kept
    d0 = (pts[:, 1:] - pts[:, :1]).norm(dim=-1)
    d1 = (moved[:, 1:] - moved[:, :1]).norm(dim=-1)
    ratio = d1 / d0
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-6)
    assert ((ratio > 0.89) & (ratio < 1.12)).all()


def test_batched_equals_per_item_and_cropped_frame():
    gen = torch.Generator().manual_seed(6)
    warp = random_tps(3, generator=gen, image_size=SIZE)
    images = torch.rand(3, 3, *SIZE, generator=gen)
    batched = warp.warp_image(images)
    for i in range(3):
        assert torch.allclose(batched[i:i + 1], warp[i].warp_image(images[i:i + 1]), atol=1e-6)
    pts = torch.rand(3, 10, 2, generator=gen, dtype=torch.float64) * 80 + 8
    offset = torch.tensor([5.0, 7.0], dtype=torch.float64)
    crop = warp.cropped(5, 7, (64, 80))
    assert crop.image_size == (64, 80)
    assert torch.allclose(crop.warp_points(pts - offset) + offset, warp.warp_points(pts), atol=1e-5)


def test_affine_reference_distribution_and_normalised_meaning():
    w = 0.1
    warp = affine_reference(4000, w=w, generator=torch.Generator().manual_seed(7), image_size=(146, 146))
    assert warp.centers.shape[1] == 0  # affine only, as in the reference
    lin = warp.affine[:, :, :2]  # square image: the pixel linear part equals the normalised one
    sx = lin[:, :, 0].norm(dim=-1)
    sy = lin[:, :, 1].norm(dim=-1)
    theta = torch.atan2(lin[:, 1, 0], lin[:, 0, 0])
    assert theta.abs().max() <= 0.5 + 1e-9 and theta.abs().max() > 0.45
    assert sx.min() >= 0.8 - w - 1e-9 and sx.max() <= 1.1 + w + 1e-9
    assert abs(float((sy - sx).std()) - 0.1) < 0.01
    # in normalised coordinates the sampling grid is exactly affine_grid(A) with align_corners=False
    sub = warp[:3]
    grid = sub.sampling_grid(torch.float64)
    centre_src = sub.sample_points(torch.full((3, 1, 2), 72.5, dtype=torch.float64))  # normalised origin
    t = pixel_to_normalized(centre_src[:, 0], (146, 146))
    theta_n = torch.cat([sub.affine[:, :, :2], t[:, :, None]], -1)
    expected = F.affine_grid(theta_n, (3, 1, 146, 146), align_corners=False)
    assert torch.allclose(grid, expected, atol=1e-9)
    t_all = pixel_to_normalized(warp.sample_points(torch.full((4000, 1, 2), 72.5, dtype=torch.float64))[:, 0],
                                (146, 146))
    assert abs(float(t_all.std()) - w) < 0.01 and abs(float(t_all.mean())) < 0.01


def test_bad_shapes_are_clear_errors():
    warp = TPSWarp.identity(2, SIZE)
    with pytest.raises(ValueError, match="points must be"):
        warp.warp_points(torch.zeros(3, 4, 2))
    with pytest.raises(ValueError, match="images must be"):
        warp.warp_image(torch.zeros(1, 3, *SIZE))
    with pytest.raises(ValueError, match="at least 3"):
        fit_tps(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), SIZE)
