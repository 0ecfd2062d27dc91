"""Batched thin-plate-spline (TPS) image and point warps in pixel coordinates.

Convention
----------
- Points are (x, y) pixels; pixel centres sit at integer coordinates, so an image of width W
  spans [-0.5, W - 0.5]. This is exactly `grid_sample(..., align_corners=False)`: normalised
  n = (2 p + 1) / W - 1.
- A warp pairs an image x with its warped copy x' = x o g^-1, i.e. x'(g(u)) = x(u).
  `warp_image(x)` returns x'; `warp_points(u)` returns g(u): where a point of x lands in x'.
- The warp is stored as its *sampling map* h = g^-1 (output pixel of x' -> source pixel of x),
  a TPS h(q) = A [q; 1] + sum_i w_i U(|q - c_i|), U(r) = r^2 log r^2, with control points c_i
  in x'. Images are therefore warped exactly; points are warped by inverting h with Newton's
  method (closed-form TPS Jacobian), so the image and point warps agree to ~1e-6 px instead
  of to the accuracy of a second, separately fitted spline. `inverse()` swaps the roles (the
  spline becomes the point map and Newton gives the sampling map), so it is exact as well.
- Internally lengths are divided by L = max(H, W) to keep the TPS system well conditioned
  (the interpolant does not depend on this unit); systems are solved in float64.

`random_tps` samples similarity + control-point jitter warps; `affine_reference` reproduces
the affine-only "TPS" of the FSE reference code (alldbi, TF), see seeds_spec section 3.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["TPSWarp", "fit_tps", "random_tps", "affine_reference", "pixel_to_normalized", "normalized_to_pixel"]


def pixel_to_normalized(points: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """(x, y) pixels -> grid_sample coordinates with align_corners=False."""
    h, w = size_hw
    scale = points.new_tensor([w, h])
    return (2 * points + 1) / scale - 1


def normalized_to_pixel(points: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    h, w = size_hw
    scale = points.new_tensor([w, h])
    return ((points + 1) * scale - 1) / 2


def _kernel(q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """U(|q - c|) for q (B, M, 2), c (B, n, 2) -> (B, M, n); U(0) = 0. A batch of 1 broadcasts."""
    r2 = (q * q).sum(-1, keepdim=True) + (c * c).sum(-1)[:, None, :] - 2 * q @ c.transpose(1, 2)
    r2 = r2.clamp_min_(0)
    return r2 * torch.log(r2.clamp_min(1e-300))


def _solve(system: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Batched linear solve. On CPU one matrix at a time: batched LU of matrices larger than ~200 with
    several threads returns wrong solutions (or errors) in the MKL build this was developed with."""
    if system.device.type == "cpu":
        return torch.stack([torch.linalg.solve(a, b) for a, b in zip(system, rhs)])
    return torch.linalg.solve(system, rhs)


def _inv2(m: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse of (..., 2, 2) matrices."""
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    return torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det[..., None, None]


def _pixel_grid(h: int, w: int, device, dtype) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype),
                            torch.arange(w, device=device, dtype=dtype), indexing="ij")
    return torch.stack([xs, ys], -1).reshape(-1, 2)


class TPSWarp:
    """A batch of B warps of (H, W) images; see the module docstring for the direction convention.

    Parameters are in units of L = max(H, W) pixels: `affine` (B, 2, 3) acting on [x, y, 1],
    `centers` (B, n, 2) control points in x', `weights` (B, n, 2). n = 0 is a pure affine warp.
    Construct with `fit_tps`, `random_tps`, `affine_reference` or `TPSWarp.identity`;
    `inverted` marks the spline as g itself (what `inverse()` returns).
    """

    def __init__(self, affine: torch.Tensor, centers: torch.Tensor, weights: torch.Tensor,
                 image_size: tuple[int, int], *, inverted: bool = False, shared: bool | None = None):
        if affine.ndim != 3 or affine.shape[1:] != (2, 3):
            raise ValueError(f"affine must be (B, 2, 3), got {tuple(affine.shape)}")
        b = affine.shape[0]
        if centers.shape[0] != b or weights.shape != centers.shape or centers.shape[-1] != 2:
            raise ValueError(f"centers {tuple(centers.shape)} and weights {tuple(weights.shape)} must be (B, n, 2)"
                             f" with B = {b}")
        self.affine = affine.double()
        self.centers = centers.double()
        self.weights = weights.double()
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.unit = float(max(self.image_size))
        self.inverted = inverted  # True: the spline is g itself and the sampling map is its Newton inverse
        # one control grid for the whole batch (random_tps): kernels on a shared pixel grid are computed once;
        # a caller that knows it says so (`shared`), since finding out reads the device (a sync per warp)
        if not self.centers.shape[1]:
            shared = False
        elif shared is None:
            shared = bool((self.centers == self.centers[:1]).all())
        self._shared = bool(shared)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def identity(cls, batch: int, image_size: tuple[int, int] = (128, 128), device=None) -> "TPSWarp":
        affine = torch.zeros(batch, 2, 3, dtype=torch.float64, device=device)
        affine[:, 0, 0] = affine[:, 1, 1] = 1
        empty = torch.zeros(batch, 0, 2, dtype=torch.float64, device=device)
        return cls(affine, empty, empty.clone(), image_size)

    @classmethod
    def from_pixel_affine(cls, matrix: torch.Tensor, image_size: tuple[int, int]) -> "TPSWarp":
        """A pure affine warp from its pixel-space sampling matrix (B, 2, 3): source = M [q; 1]."""
        m = matrix.double().clone()
        m[:, :, 2] = m[:, :, 2] / max(image_size)  # translation in L units; the linear part is unitless
        empty = torch.zeros(m.shape[0], 0, 2, dtype=torch.float64, device=m.device)
        return cls(m, empty, empty.clone(), image_size)

    def _like(self, affine, centers, weights, image_size=None, inverted=None, shared=None) -> "TPSWarp":
        if shared is None and centers is self.centers:
            shared = self._shared
        return TPSWarp(affine, centers, weights, image_size or self.image_size,
                       inverted=self.inverted if inverted is None else inverted, shared=shared)

    @property
    def batch_size(self) -> int:
        return self.affine.shape[0]

    @property
    def device(self) -> torch.device:
        return self.affine.device

    def to(self, device) -> "TPSWarp":
        return self._like(self.affine.to(device), self.centers.to(device), self.weights.to(device),
                          shared=self._shared)

    def __getitem__(self, index) -> "TPSWarp":
        """A sub-batch (an int keeps a batch dimension of 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return self._like(self.affine[index], self.centers[index], self.weights[index])

    # -- the spline and its inverse (L units) ---------------------------------------------------
    def _spline(self, q: torch.Tensor) -> torch.Tensor:
        out = q @ self.affine[:, :, :2].transpose(1, 2) + self.affine[:, None, :, 2]
        if self.centers.shape[1]:
            centers = self.centers[:1] if (self._shared and q.shape[0] == 1) else self.centers
            out = out + _kernel(q, centers) @ self.weights
        return out

    def _jacobian(self, q: torch.Tensor) -> torch.Tensor:
        """d spline / dq (B, M, 2, 2), unitless."""
        b = max(q.shape[0], self.batch_size)
        jac = self.affine[:, None, :, :2].expand(b, q.shape[1], 2, 2)
        if self.centers.shape[1]:
            # dU_i/dq = f_i (q - c_i) with f_i = 2 (log r_i^2 + 1), so
            # sum_i w_i dU_i/dq^T = (sum_i f_i w_i) q^T - sum_i f_i w_i c_i^T: no (B, M, n, 2) intermediate
            c = self.centers
            r2 = ((q * q).sum(-1, keepdim=True) + (c * c).sum(-1)[:, None, :] - 2 * q @ c.transpose(1, 2)).clamp_min_(0)
            f = torch.where(r2 > 0, 2 * (torch.log(r2.clamp_min(1e-300)) + 1), torch.zeros_like(r2))  # (B, M, n)
            fw = f @ self.weights  # (B, M, 2): sum_i f_i w_i
            wc = (self.weights[..., :, None] * self.centers[..., None, :]).flatten(-2)  # (B, n, 4): w_i c_i^T
            fcw = (f @ wc).unflatten(-1, (2, 2))  # sum_i f_i w_i c_i^T as one matmul
            jac = jac + fw[..., :, None] * q[..., None, :] - fcw
        return jac

    def _spline_inverse(self, u: torch.Tensor, iterations: int = 30, tol: float = 1e-7):
        """q with spline(q) = u, by Newton from the inverse of the affine part; also the max residual (px)."""
        q = (u - self.affine[:, None, :, 2]) @ _inv2(self.affine[:, :, :2]).transpose(1, 2)
        if not self.centers.shape[1] or not u.numel():
            return q, 0.0
        for _ in range(iterations):
            err = self._spline(q) - u
            if float(err.abs().max()) * self.unit < tol:
                break
            q = q - (_inv2(self._jacobian(q)) @ err[..., None])[..., 0]
        return q, float((self._spline(q) - u).abs().max()) * self.unit

    def _sample_units(self, q: torch.Tensor) -> torch.Tensor:
        return self._spline_inverse(q)[0] if self.inverted else self._spline(q)

    # -- public warps ---------------------------------------------------------------------------
    def sample_points(self, points: torch.Tensor) -> torch.Tensor:
        """h = g^-1: for pixels q (B, N, 2) of x', the pixel of x they are sampled from."""
        q = self._check_points(points)
        return (self._sample_units(q / self.unit) * self.unit).to(points.dtype)

    def sampling_grid(self, dtype=torch.float32, source_size: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, H, W, 2) grid for grid_sample (align_corners=False) over the output pixels."""
        h, w = self.image_size
        q = _pixel_grid(h, w, self.device, torch.float64)[None]  # (1, HW, 2): broadcast over the batch
        src = self._sample_units(q / self.unit) * self.unit
        src = src.expand(self.batch_size, -1, -1)
        return pixel_to_normalized(src, source_size or self.image_size).reshape(self.batch_size, h, w, 2).to(dtype)

    def warp_image(self, images: torch.Tensor, *, mode: str = "bilinear", padding_mode: str = "border") -> torch.Tensor:
        """x' = x o g^-1 for images (B, C, H_in, W_in) -> (B, C, H, W) on the images' device.

        The source may have another size than the warp's output (its own pixel frame is used);
        `padding_mode="border"` clamps at the edges like the reference, "zeros" blanks them."""
        if images.ndim != 4 or images.shape[0] != self.batch_size:
            raise ValueError(f"images must be (B={self.batch_size}, C, H, W), got {tuple(images.shape)}")
        dtype = images.dtype if images.is_floating_point() else torch.float32
        warp = self if images.device == self.device else self.to(images.device)
        grid = warp.sampling_grid(dtype, source_size=tuple(images.shape[-2:]))
        return F.grid_sample(images.to(dtype), grid, mode=mode, padding_mode=padding_mode, align_corners=False)

    def warp_points(self, points: torch.Tensor, *, return_residual: bool = False):
        """g(u): where pixels u (B, N, 2) of x land in x'.

        For a sampled spline h this is Newton's inversion of h (quadratic convergence, closed-form
        Jacobian); `return_residual` also returns max |h(g(u)) - u| in pixels, where a fold of an
        extreme warp would show up."""
        u = self._check_points(points) / self.unit
        if self.inverted:
            q, residual = self._spline(u), 0.0
        else:
            q, residual = self._spline_inverse(u)
        out = (q * self.unit).to(points.dtype if points.is_floating_point() else torch.float32)
        return (out, residual) if return_residual else out

    def inverse(self) -> "TPSWarp":
        """The reverse warp, taking x' back to x (g^-1). Exact: the same spline with the roles of
        sampling map and point map swapped, so only the Newton tolerance separates a round trip."""
        return self._like(self.affine, self.centers, self.weights, inverted=not self.inverted)

    def cropped(self, left: float, top: float, size_hw: tuple[int, int] | None = None) -> "TPSWarp":
        """The same warp seen in crop coordinates: both x and x' cropped at (left, top), as the
        reference crops its 146^2 pair to 128^2 at (5, 5). p_crop = p - (left, top)."""
        o = self.affine.new_tensor([left, top]) / self.unit
        new_size = size_hw or self.image_size
        scale = self.unit / max(new_size)
        affine = self.affine.clone()
        affine[:, :, 2] = affine[:, :, 2] + (affine[:, :, :2] @ o) - o
        centers = self.centers - o
        # Re-express in the crop's length unit L' = L / s. U(r / s) = (U(r) - r^2 log s^2) / s^2, and under the
        # TPS side conditions (sum w = 0, sum w c = 0) sum_i w_i r_i^2 is the constant s^2 sum_i w_i |c_i|^2.
        affine[:, :, 2] = affine[:, :, 2] * scale
        if centers.shape[1]:
            const = (self.weights * (centers ** 2).sum(-1, keepdim=True)).sum(1)
            affine[:, :, 2] = affine[:, :, 2] - scale * 2 * math.log(scale) * const
        return self._like(affine, centers * scale, self.weights / scale, new_size)

    def _check_points(self, points: torch.Tensor) -> torch.Tensor:
        if points.ndim != 3 or points.shape[0] != self.batch_size or points.shape[-1] != 2:
            raise ValueError(f"points must be (B={self.batch_size}, N, 2), got {tuple(points.shape)}")
        return points.to(self.device, torch.float64)


def fit_tps(centers: torch.Tensor, targets: torch.Tensor, image_size: tuple[int, int],
            regularization: float = 0.0, *, shared: bool | None = None) -> TPSWarp:
    """The TPS sampling map h with h(centers) = targets (pixels, (B, n, 2) each, n >= 3 not collinear);
    `regularization` > 0 relaxes interpolation into smoothing (lambda * I on the kernel matrix);
    `shared`: every sample has the same centers (None: compare them, which reads the device)."""
    if centers.shape != targets.shape or centers.ndim != 3 or centers.shape[-1] != 2:
        raise ValueError(f"centers {tuple(centers.shape)} and targets {tuple(targets.shape)} must both be (B, n, 2)")
    b, n, _ = centers.shape
    if n < 3:
        raise ValueError(f"a TPS needs at least 3 control points, got {n}")
    unit = float(max(image_size))
    c = centers.double() / unit
    y = targets.double().to(c.device) / unit
    k = _kernel(c, c) + regularization * torch.eye(n, dtype=torch.float64, device=c.device)
    p = torch.cat([c, torch.ones(b, n, 1, dtype=torch.float64, device=c.device)], -1)  # (B, n, 3): x, y, 1
    system = torch.zeros(b, n + 3, n + 3, dtype=torch.float64, device=c.device)
    system[:, :n, :n] = k
    system[:, :n, n:] = p
    system[:, n:, :n] = p.transpose(1, 2)
    rhs = torch.zeros(b, n + 3, 2, dtype=torch.float64, device=c.device)
    rhs[:, :n] = y
    sol = _solve(system, rhs)
    weights, affine = sol[:, :n], sol[:, n:].transpose(1, 2)  # affine (B, 2, 3) on [x, y, 1]
    return TPSWarp(affine, c, weights, image_size, shared=shared)


def _rotation(theta: torch.Tensor) -> torch.Tensor:
    cos, sin = torch.cos(theta), torch.sin(theta)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def random_tps(batch: int, *, generator: torch.Generator | None = None, image_size: tuple[int, int] = (128, 128),
               rotation: float = 0.3, scale: tuple[float, float] = (0.9, 1.1), translation: float = 0.05,
               grid_size: int = 5, displacement_std: float = 0.02, device=None) -> TPSWarp:
    """Random warps g = (similarity) + (smooth TPS jitter), as in Thewlis et al.'s TPS pairs.

    The similarity acts on the image content about its centre: rotation ~ U(+-rotation) rad,
    scale ~ U(scale), translation ~ N(0, translation * size) px per axis. The non-linear part
    jitters a grid_size^2 grid of control points of x' by N(0, displacement_std * size) px
    (displacement_std = 0 gives an exact similarity). Sampled on the generator's device (CPU
    by default) so a seed gives the same warps everywhere, then moved to `device`."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    h, w = image_size
    size = torch.tensor([w, h], dtype=torch.float64, device=gen_device)

    def uniform(lo, hi, shape=(batch,)):
        return lo + (hi - lo) * torch.rand(shape, generator=generator, device=gen_device, dtype=torch.float64)

    theta = uniform(-rotation, rotation)
    s = uniform(*scale)
    t = torch.randn(batch, 2, generator=generator, device=gen_device, dtype=torch.float64) * translation * size
    centre = (size - 1) / 2
    xs = torch.linspace(0, w - 1, grid_size, dtype=torch.float64, device=gen_device)
    ys = torch.linspace(0, h - 1, grid_size, dtype=torch.float64, device=gen_device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    ctrl = torch.stack([gx, gy], -1).reshape(1, -1, 2).expand(batch, -1, -1)
    # h's affine part is the inverse similarity: u = c + R^T (q - c - t) / s
    rot_t = _rotation(theta).transpose(1, 2) / s[:, None, None]
    targets = (ctrl - centre - t[:, None]) @ rot_t.transpose(1, 2) + centre
    jitter = torch.randn(targets.shape, generator=generator, device=gen_device, dtype=torch.float64)
    targets = targets + jitter * displacement_std * size
    return fit_tps(ctrl.to(device), targets.to(device), image_size, shared=True)  # one grid for the batch


def affine_reference(batch: int, *, w: float = 0.1, generator: torch.Generator | None = None,
                     image_size: tuple[int, int] = (146, 146), device=None) -> TPSWarp:
    """The FSE reference's affine-only warp (its TPS has zero non-linear weights).

    In normalised coordinates n of the output, the source is A [1, n_x, n_y] with
    A = [[t_x, s_x cos th, -s_y sin th], [t_y, s_x sin th, s_y cos th]], th ~ U(+-0.5),
    s_x ~ U(0.8 - w, 1.1 + w), s_y = s_x + N(0, 0.1), t ~ N(0, w). The reference applies it to
    its 146^2 image (then crops to 128 at (5, 5): see `TPSWarp.cropped`). Here normalised
    coordinates follow align_corners=False; the reference's (n + 1) W / 2 index mapping is
    half a pixel off, which is not reproduced."""
    gen_device = generator.device if generator is not None else torch.device("cpu")

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(batch, generator=generator, device=gen_device, dtype=torch.float64)

    theta = uniform(-0.5, 0.5)
    sx = uniform(0.8 - w, 1.1 + w)
    sy = sx + 0.1 * torch.randn(batch, generator=generator, device=gen_device, dtype=torch.float64)
    t = w * torch.randn(batch, 2, generator=generator, device=gen_device, dtype=torch.float64)
    lin = torch.stack([torch.stack([sx * torch.cos(theta), -sy * torch.sin(theta)], -1),
                       torch.stack([sx * torch.sin(theta), sy * torch.cos(theta)], -1)], -2)
    # pixels p -> normalised n = D p + e; source pixel = D^-1 (lin (D p + e) + t - e)
    h, wd = image_size
    d = torch.tensor([2.0 / wd, 2.0 / h], dtype=torch.float64, device=gen_device)
    e = torch.tensor([1.0 / wd - 1, 1.0 / h - 1], dtype=torch.float64, device=gen_device)
    lin_pix = lin * d[None, None, :] / d[None, :, None]
    offset = ((lin @ e) + t - e) / d
    matrix = torch.cat([lin_pix, offset[:, :, None]], -1)
    return TPSWarp.from_pixel_affine(matrix.to(device), image_size)



def reference_cell_warp(affine: torch.Tensor, grid: int = 42, padding: int = 3) -> torch.Tensor:
    """The FSE reference's g(v), reproduced exactly (mis-scaling included), for tests and a future flag.

    `affine` (B, 2, 3) is the reference's normalised A on [1, n_x, n_y] (output -> source). As in
    its `feature_warping2`, the grid x grid (row, col) index maps are zero-padded by `padding`,
    sampled with A on a `linspace(-1, 1, P)` output grid at source index (n + 1) P / 2 (indices
    clipped, weights from the unclipped coordinate: outside [0, P - 1] reads exactly 0) and cropped
    back. Returns (B, grid * grid, 2): per x' cell (row-major), the (row, col) in x's cell grid.
    Not wired to `data.warp` (see docs/models/fse.md, "No flag reproduces ...")."""
    a = affine.to(torch.float64)
    size = grid + 2 * padding
    lin = torch.linspace(-1.0, 1.0, size, dtype=torch.float64, device=a.device)
    ny, nx = torch.meshgrid(lin, lin, indexing="ij")
    xs = a[:, 0, 0, None, None] + a[:, 0, 1, None, None] * nx + a[:, 0, 2, None, None] * ny
    ys = a[:, 1, 0, None, None] + a[:, 1, 1, None, None] * nx + a[:, 1, 2, None, None] * ny
    x, y = (xs + 1) * size / 2, (ys + 1) * size / 2
    idx = torch.arange(size, dtype=torch.float64, device=a.device) - padding
    inside = (idx >= 0) & (idx < grid)
    rows = torch.where(inside[:, None] & inside[None, :], idx[:, None].expand(size, size), 0.0)
    maps = torch.stack([rows, rows.T])  # (2, P, P): row index, column index; 0 in the pad

    x0 = torch.floor(x)
    y0 = torch.floor(y)
    x0c, x1c = x0.clamp(0, size - 1), (x0 + 1).clamp(0, size - 1)
    y0c, y1c = y0.clamp(0, size - 1), (y0 + 1).clamp(0, size - 1)

    def at(yy, xx):
        return maps[:, yy.long(), xx.long()]  # (2, B, P, P)

    out = (at(y0c, x0c) * ((x1c - x) * (y1c - y)) + at(y1c, x0c) * ((x1c - x) * (y - y0c))
           + at(y0c, x1c) * ((x - x0c) * (y1c - y)) + at(y1c, x1c) * ((x - x0c) * (y - y0c)))
    out = out[:, :, padding:padding + grid, padding:padding + grid]
    return out.permute(1, 2, 3, 0).reshape(a.shape[0], grid * grid, 2)
