"""Part affinity fields (OpenPose, Cao et al. 2017): training targets, flip-back and the bottom-up decoder.

Grid convention (the same as `posekit.codecs.heatmap`): map cell i has its centre at input pixel
i*stride + (stride-1)/2 (MindSpore's +0.4375-cell offset at stride 8), and a horizontal flip maps
input x to W-1-x. With W a multiple of the stride a flip of the input is exactly a flip of the maps.

Targets (`PAFCodec.encode`): per part, exp(-d^2 / 2 sigma^2) with sigma in input pixels, combined
over people by max, background = 1 - max over parts; per limb the unit from->to vector on cells
with 0 <= along <= length and |across| <= paf_width (input px), averaged where people overlap,
drawn only when both endpoints are labelled. Each (limb, person) segment is evaluated only on the
cells of its bounding box widened by paf_width, all segments at once; Gaussians are separable.

Decoding (`decode_people`) runs at map resolution instead of on maps upsampled to the input:

- peaks: Gaussian smoothing with sigma = config.smooth_sigma / stride cells (the presets give
  sigma in upsampled-input pixels), 4-neighbour NMS above a threshold, then a sub-cell position
  from a 3-point parabola fit of the raw log heatmap along x and y (exact for a sampled Gaussian);
- limbs: for every candidate pair of every limb at once, the PAF is sampled bilinearly at
  `num_samples` sub-cell points on the segment (integer-cell sampling on a 46x46 grid falls off
  the 1-cell-wide field and rejects most true limbs), scored as mean(PAF . u) + min(f*H/len - 1, 0)
  (H and len in cells, so the prior is the same as at input scale);
- greedy matching per limb (descending score, each peak once, at most min(nA, nB));
- person assembly and merging exactly as CMU's demo code (including its quirks), then filtering
  by the part count and the mean score.

A plain-loop reference of the same algorithm is in benchmarks/openpose_reference_decoder.py; the
tests check that both give identical people.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from posekit.skeletons import Skeleton, get_skeleton, map_keypoints
from posekit.skeletons.mappings import OPENPOSE18_TO_COCO17

__all__ = [
    "CMU_TREE_LIMBS",
    "DecoderConfig",
    "PAFCodec",
    "cell_centres",
    "decode_people",
    "flip_back_paf",
    "from_coco17",
    "to_coco17",
]

# CMU processes the limbs in this (tree) order; the PAF channel layout is the skeleton's `limbs` order
CMU_TREE_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
                  (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17))


def cell_centres(n: int, stride: float) -> np.ndarray:
    """Input-pixel coordinates of the centres of n map cells."""
    return np.arange(n, dtype=np.float64) * stride + (stride - 1) / 2.0


def _tree_order(skeleton: Skeleton) -> tuple[int, ...]:
    index = {limb: i for i, limb in enumerate(skeleton.limbs)}
    missing = [limb for limb in CMU_TREE_LIMBS if limb not in index]
    if missing or len(index) != len(CMU_TREE_LIMBS):
        raise ValueError(f"limb_order='tree' is CMU's openpose18 order; skeleton {skeleton.name!r} differs "
                         f"(pass limb_order=None or explicit channel indices)")
    return tuple(index[limb] for limb in CMU_TREE_LIMBS)


# --- targets ----------------------------------------------------------------------------------------------
class PAFCodec:
    """Keypoints (P, K, 3) in network-input pixels <-> (heatmaps (K+1, h, w), PAFs (2L, h, w)).

    input_size: (W, H) of the network input; the maps are (H // stride, W // stride), the size
    the stride-8 network produces. sigma and paf_width are in input pixels.
    """

    def __init__(self, *, skeleton: str | Skeleton = "openpose18", input_size=(368, 368), stride: int = 8,
                 sigma: float = 7.0, paf_width: float = 8.0):
        self.skeleton = get_skeleton(skeleton)
        if not self.skeleton.limbs:
            raise ValueError(f"skeleton {self.skeleton.name!r} declares no limbs; PAFs need them")
        if sigma <= 0 or paf_width <= 0 or stride <= 0:
            raise ValueError(f"sigma, paf_width and stride must be positive, got {sigma}, {paf_width}, {stride}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.stride = int(stride)
        self.map_size = (self.input_size[0] // self.stride, self.input_size[1] // self.stride)  # (w, h)
        if min(self.map_size) < 1:
            raise ValueError(f"input_size {self.input_size} is smaller than one stride-{stride} cell")
        self.sigma, self.paf_width = float(sigma), float(paf_width)
        self.num_parts = self.skeleton.num_keypoints
        self.num_limbs = len(self.skeleton.limbs)
        self.heatmap_channels = self.num_parts + 1
        self.paf_channels = 2 * self.num_limbs

    def encode(self, keypoints) -> tuple[np.ndarray, np.ndarray]:
        """(P, K, 3) x, y, v (v > 0 = labelled; (P, K, 2) = all labelled) -> (heatmaps, pafs) float32."""
        k = self.num_parts
        kp = np.asarray(keypoints, dtype=np.float64)
        if kp.size == 0:
            kp = np.zeros((0, k, 3))
        if kp.ndim == 2:
            kp = kp[None]
        if kp.ndim != 3 or kp.shape[1] != k or kp.shape[2] not in (2, 3):
            raise ValueError(f"keypoints must be (P, {k}, 3), got {kp.shape}")
        labelled = np.isfinite(kp[..., :2]).all(-1)
        if kp.shape[2] == 3:
            labelled &= kp[..., 2] > 0
        xy = np.where(labelled[..., None], kp[..., :2], 0.0)
        w, h = self.map_size
        xs, ys = cell_centres(w, self.stride), cell_centres(h, self.stride)

        heat = np.zeros((k, h, w), np.float32)
        gx = (np.exp(-(xs - xy[..., 0:1]) ** 2 / (2 * self.sigma ** 2)) * labelled[..., None]).astype(np.float32)
        gy = np.exp(-(ys - xy[..., 1:2]) ** 2 / (2 * self.sigma ** 2)).astype(np.float32)  # (P, K, h)
        one = np.empty_like(heat)
        for p in range(len(xy)):  # separable: one outer product per person, max-combined in place
            np.multiply(gy[p, :, :, None], gx[p, :, None, :], out=one)
            np.maximum(heat, one, out=heat)
        return np.concatenate([heat, 1.0 - heat.max(axis=0, initial=0.0)[None]]), self._encode_pafs(xy, labelled)

    def _encode_pafs(self, xy: np.ndarray, labelled: np.ndarray) -> np.ndarray:
        """Every (limb, person) segment at once, each only on the cells of its bounding box widened
        by paf_width (no cell outside can be on the limb): sums and counts by np.bincount."""
        w, h = self.map_size
        limbs = np.asarray(self.skeleton.limbs, dtype=np.int64).reshape(-1, 2)
        a, b = limbs[:, 0], limbs[:, 1]
        ok = labelled[:, a] & labelled[:, b]  # (P, L)
        person, limb = np.nonzero(ok)
        pa, pb = xy[person, a[limb]], xy[person, b[limb]]  # (S, 2)
        length = np.linalg.norm(pb - pa, axis=1)
        keep = length > 1e-9
        pa, pb, length, limb = pa[keep], pb[keep], length[keep], limb[keep]
        pafs = np.zeros((self.paf_channels, h, w), np.float32)
        if not len(limb):
            return pafs
        u = (pb - pa) / length[:, None]
        half = (self.stride - 1) / 2.0
        last = np.array([w - 1, h - 1], dtype=np.float64)  # clipped as floats: far-off points never overflow
        lo = np.clip(np.floor((np.minimum(pa, pb) - self.paf_width - half) / self.stride), 0, last).astype(np.int64)
        hi = np.clip(np.ceil((np.maximum(pa, pb) + self.paf_width - half) / self.stride), -1, last).astype(np.int64)
        nx, ny = np.maximum(hi[:, 0] - lo[:, 0] + 1, 0), np.maximum(hi[:, 1] - lo[:, 1] + 1, 0)
        cells = nx * ny
        seg = np.repeat(np.arange(len(limb)), cells)
        local = np.arange(len(seg)) - np.repeat(np.cumsum(cells) - cells, cells)
        cx = lo[seg, 0] + local % nx[seg]
        cy = lo[seg, 1] + local // nx[seg]
        rx = cx * self.stride + half - pa[seg, 0]
        ry = cy * self.stride + half - pa[seg, 1]
        ux, uy = u[seg, 0], u[seg, 1]
        along = rx * ux + ry * uy
        on = (along >= 0) & (along <= length[seg]) & (np.abs(rx * uy - ry * ux) <= self.paf_width)
        cell = (limb[seg] * h + cy) * w + cx
        cell, ux, uy = cell[on], ux[on], uy[on]
        size = self.num_limbs * h * w
        count = np.maximum(np.bincount(cell, minlength=size), 1)
        pafs[0::2] = (np.bincount(cell, ux, minlength=size) / count).reshape(self.num_limbs, h, w)
        pafs[1::2] = (np.bincount(cell, uy, minlength=size) / count).reshape(self.num_limbs, h, w)
        return pafs

    def flip_back(self, pafs, heatmaps):
        """Maps predicted on a mirrored input -> maps of the original (see `flip_back_paf`)."""
        return flip_back_paf(pafs, heatmaps, skeleton=self.skeleton)

    def decode(self, heatmaps, pafs, *, config: DecoderConfig | None = None):
        """One image's maps -> (keypoints (N, K, 3) in input pixels, person scores (N,))."""
        return decode_people(heatmaps, pafs, stride=float(self.stride), config=config or DecoderConfig(),
                             skeleton=self.skeleton)


def from_coco17(keypoints17) -> np.ndarray:
    """(…, 17, 3) COCO keypoints -> (…, 18, 3) OpenPose order; the neck is the mid-shoulder point,
    labelled only when both shoulders are."""
    return map_keypoints(np.asarray(keypoints17, dtype=np.float64), "coco17", "openpose18", has_visibility=True)


def to_coco17(keypoints18):
    """(…, 18, C) OpenPose-order keypoints -> (…, 17, C) COCO order (the neck is dropped); numpy or torch."""
    index = list(OPENPOSE18_TO_COCO17)
    if torch.is_tensor(keypoints18):
        return keypoints18[..., index, :]
    return np.asarray(keypoints18)[..., index, :]


def _flip_tables(skeleton: Skeleton) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(heatmap channel permutation (K), PAF channel permutation (2L), PAF sign (2L))."""
    perm = skeleton.flip_index
    index = {limb: i for i, limb in enumerate(skeleton.limbs)}
    paf_perm = np.zeros(2 * len(skeleton.limbs), np.int64)
    sign = np.ones(2 * len(skeleton.limbs), np.float32)
    for i, (a, b) in enumerate(skeleton.limbs):
        mirrored = (int(perm[a]), int(perm[b]))
        if mirrored in index:
            j, s = index[mirrored], 1.0
        elif mirrored[::-1] in index:  # declared the other way round: the vector is reversed too
            j, s = index[mirrored[::-1]], -1.0
        else:
            raise ValueError(f"skeleton {skeleton.name!r}: limb {(a, b)} has no mirrored limb {mirrored}")
        paf_perm[2 * i], paf_perm[2 * i + 1] = 2 * j, 2 * j + 1
        sign[2 * i], sign[2 * i + 1] = -s, s  # mirroring negates x
    return perm, paf_perm, sign


def flip_back_paf(pafs, heatmaps, *, skeleton: str | Skeleton = "openpose18"):
    """Undo a horizontal flip on (…, 2L, h, w) PAFs and (…, K or K+1, h, w) heatmaps (torch or numpy).

    Mirror along the width, swap left/right part channels (background stays), give each limb the
    channels of its mirrored limb and negate their x component. Self-inverse. Returns (pafs, heatmaps).
    """
    skeleton = get_skeleton(skeleton)
    perm, paf_perm, sign = _flip_tables(skeleton)
    k = skeleton.num_keypoints
    if heatmaps.shape[-3] not in (k, k + 1) or pafs.shape[-3] != len(paf_perm):
        raise ValueError(f"expected (…, {len(paf_perm)}, h, w) PAFs and (…, {k}|{k + 1}, h, w) heatmaps, got "
                         f"{tuple(pafs.shape)} and {tuple(heatmaps.shape)}")
    heat_perm = np.concatenate([perm, [k]]) if heatmaps.shape[-3] == k + 1 else perm
    if torch.is_tensor(pafs):
        dev = pafs.device
        p = torch.index_select(pafs.flip(-1), pafs.dim() - 3, torch.as_tensor(paf_perm, device=dev))
        p = p * torch.as_tensor(sign, device=dev, dtype=pafs.dtype).view(-1, 1, 1)
        hm = torch.index_select(heatmaps.flip(-1), heatmaps.dim() - 3,
                                torch.as_tensor(heat_perm, device=heatmaps.device))
        return p, hm
    pafs, heatmaps = np.asarray(pafs), np.asarray(heatmaps)
    p = np.flip(pafs, -1)[..., paf_perm, :, :] * sign.astype(pafs.dtype)[:, None, None]
    return p, np.ascontiguousarray(np.flip(heatmaps, -1)[..., heat_perm, :, :])


# --- decoder ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecoderConfig:
    """Bottom-up grouping settings. Defaults = `preset("cmu")`.

    smooth_sigma is in upsampled-input pixels (as the papers' code blurs the x8 maps); the
    decoder blurs the map-resolution heatmaps with smooth_sigma / stride cells. limb_order:
    PAF channel indices in processing order ("tree" = CMU's order, None = channel order).
    A limb scores mean(PAF . u) + min(dist_prior_factor * S / len - 1, 0), S the map height or
    width (dist_prior_axis); it is accepted when more than min_valid_fraction of the
    num_samples exceed sample_threshold and the score is > 0. max_peaks caps the peaks per part
    (highest first) so garbage maps cannot make the pair count explode.
    """

    peak_threshold: float = 0.1
    smooth_sigma: float = 3.0
    strict_nms: bool = False          # False: >= the 4 neighbours (and > at least one: no plateaus)
    peak_score: str = "raw"           # "raw" heatmap value at the peak, or "smoothed"
    refine: bool = True               # sub-cell peak refinement
    max_peaks: int = 128
    num_samples: int = 10
    sample_threshold: float = 0.05
    min_valid_fraction: float = 0.8
    dist_prior_factor: float = 0.5
    dist_prior_axis: str = "height"
    limb_order: str | tuple[int, ...] | None = "tree"
    no_new_person_limbs: tuple[int, ...] = (9, 13)  # the redundant shoulder->ear limbs
    min_parts: int = 4
    min_mean_score: float = 0.4

    def __post_init__(self):
        if self.peak_score not in ("raw", "smoothed"):
            raise ValueError(f"peak_score must be 'raw' or 'smoothed', got {self.peak_score!r}")
        if self.dist_prior_axis not in ("height", "width"):
            raise ValueError(f"dist_prior_axis must be 'height' or 'width', got {self.dist_prior_axis!r}")
        if self.num_samples < 2 or self.max_peaks < 1:
            raise ValueError("num_samples must be >= 2 and max_peaks >= 1")

    @classmethod
    def preset(cls, name: str) -> DecoderConfig:
        """"cmu" (CMU demo / Hzzone) or "mindspore" (MindSpore eval, README AP 0.4025)."""
        if name == "cmu":
            return cls()
        if name == "mindspore":
            return cls(peak_threshold=0.05, smooth_sigma=2.5, strict_nms=True, peak_score="smoothed",
                       dist_prior_factor=1.0, dist_prior_axis="width", limb_order=None, min_parts=3,
                       min_mean_score=0.2)
        raise ValueError(f"unknown decoder preset {name!r}; choose 'cmu' or 'mindspore'")

    def resolved_limb_order(self, skeleton: Skeleton) -> tuple[int, ...]:
        if self.limb_order is None:
            return tuple(range(len(skeleton.limbs)))
        if self.limb_order == "tree":
            return _tree_order(skeleton)
        return tuple(int(i) for i in self.limb_order)


def _as_numpy(a) -> np.ndarray:
    if torch.is_tensor(a):
        a = a.detach().to("cpu", torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)


def find_peaks(heatmaps: np.ndarray, config: DecoderConfig, stride: float):
    """(K, h, w) -> (part (N,), x (N,), y (N,) sub-cell map coordinates, score (N,)), sorted by part
    then row-major cell order, at most config.max_peaks per part (the highest)."""
    sigma = config.smooth_sigma / stride
    smooth = gaussian_filter(heatmaps, sigma=(0, sigma, sigma), mode="reflect") if sigma > 0 else heatmaps
    lo = np.pad(smooth, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)  # outside never blocks a peak
    neighbours = (lo[:, :-2, 1:-1], lo[:, 2:, 1:-1], lo[:, 1:-1, :-2], lo[:, 1:-1, 2:])
    if config.strict_nms:
        peak = np.logical_and.reduce([smooth > n for n in neighbours])
    else:
        hi = np.pad(smooth, ((0, 0), (1, 1), (1, 1)), constant_values=np.inf)
        peak = np.logical_and.reduce([smooth >= n for n in neighbours]) & np.logical_or.reduce(
            [smooth > n for n in (hi[:, :-2, 1:-1], hi[:, 2:, 1:-1], hi[:, 1:-1, :-2], hi[:, 1:-1, 2:])])
    peak &= smooth > config.peak_threshold
    part, y, x = np.nonzero(peak)
    score = (heatmaps if config.peak_score == "raw" else smooth)[part, y, x]
    counts = np.bincount(part, minlength=heatmaps.shape[0])
    if counts.max(initial=0) > config.max_peaks:
        keep = np.ones(len(part), bool)
        starts = np.concatenate([[0], np.cumsum(counts)])
        for k in np.nonzero(counts > config.max_peaks)[0]:
            s = slice(starts[k], starts[k + 1])
            order = np.argsort(-score[s], kind="stable")
            keep[starts[k] + order[config.max_peaks:]] = False
        part, y, x, score = part[keep], y[keep], x[keep], score[keep]
    fx, fy = x.astype(np.float64), y.astype(np.float64)
    if config.refine and len(part):
        fx = fx + _parabola_offset(heatmaps, part, y, x, axis=2)
        fy = fy + _parabola_offset(heatmaps, part, y, x, axis=1)
    return part, fx, fy, score


def _parabola_offset(heat: np.ndarray, part, y, x, *, axis: int) -> np.ndarray:
    """Vertex of the parabola through the log heatmap at the peak and its two neighbours along
    `axis` (2 = x, 1 = y), clipped to half a cell; 0 on the border or where not concave."""
    size = heat.shape[axis]
    pos = x if axis == 2 else y
    inside = (pos > 0) & (pos < size - 1)
    lo, hi = np.clip(pos - 1, 0, size - 1), np.clip(pos + 1, 0, size - 1)
    if axis == 2:
        vm, v0, vp = heat[part, y, lo], heat[part, y, x], heat[part, y, hi]
    else:
        vm, v0, vp = heat[part, lo, x], heat[part, y, x], heat[part, hi, x]
    lm, l0, lp = (np.log(np.maximum(v, 1e-10)) for v in (vm, v0, vp))
    denom = lm - 2.0 * l0 + lp
    ok = inside & (denom < 0)
    off = np.where(ok, 0.5 * (lm - lp) / np.where(ok, denom, -1.0), 0.0)
    return np.clip(off, -0.5, 0.5)


def _bilinear_xy(maps: np.ndarray, cx: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear samples of channels cx and cx+1 at sub-cell (x, y), clamped to the map; the two
    channels share the corner indices and weights. Arrays broadcast together."""
    _, h, w = maps.shape
    flat = maps.reshape(-1)
    x = np.minimum(np.maximum(x, 0.0), w - 1.0)
    y = np.minimum(np.maximum(y, 0.0), h - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.int64), max(w - 2, 0))
    y0 = np.minimum(np.floor(y).astype(np.int64), max(h - 2, 0))
    dx, dy = np.minimum(x0 + 1, w - 1) - x0, (np.minimum(y0 + 1, h - 1) - y0) * w
    fx, fy = x - x0, y - y0
    i00 = cx * (h * w) + y0 * w + x0
    out = []
    for base in (i00, i00 + h * w):
        v00, v01, v10, v11 = flat[base], flat[base + dx], flat[base + dy], flat[base + dy + dx]
        out.append((v00 * (1 - fx) + v01 * fx) * (1 - fy) + (v10 * (1 - fx) + v11 * fx) * fy)
    return out[0], out[1]


def score_limbs(pafs: np.ndarray, limbs, part, fx, fy, config: DecoderConfig, num_parts: int):
    """Score every candidate pair of every limb at once.

    Returns accepted candidates as arrays (limb, peak index A, peak index B, score), in limb
    order, pairs A-major within a limb (the order a nested loop would visit them). Pairs that
    already fail too many of two probe samples are dropped before the full evaluation (exact:
    the acceptance test could not pass for them).
    """
    _, h, w = pafs.shape
    counts = np.bincount(part, minlength=num_parts)
    starts = np.concatenate([[0], np.cumsum(counts)])
    ls, ia, ib = [], [], []
    for i, (a, b) in enumerate(limbs):
        na, nb = counts[a], counts[b]
        if na == 0 or nb == 0:
            continue
        ls.append(np.full(na * nb, i))
        ia.append(np.repeat(np.arange(starts[a], starts[a + 1]), nb))
        ib.append(np.tile(np.arange(starts[b], starts[b + 1]), na))
    empty = (np.zeros(0, np.int64),) * 3 + (np.zeros(0),)
    if not ls:
        return empty
    limb, ia, ib = np.concatenate(ls), np.concatenate(ia), np.concatenate(ib)
    n = config.num_samples
    t = np.linspace(0.0, 1.0, n)
    allowed_failures = n - (int(np.floor(config.min_valid_fraction * n)) + 1)

    def dots(ts):
        ax, ay, vx, vy = fx[ia], fy[ia], fx[ib] - fx[ia], fy[ib] - fy[ia]
        norm = np.maximum(np.sqrt(vx * vx + vy * vy), 1e-6)
        px, py = ax[:, None] + ts * vx[:, None], ay[:, None] + ts * vy[:, None]
        sx, sy = _bilinear_xy(pafs, (2 * limb)[:, None], px, py)
        return sx * (vx / norm)[:, None] + sy * (vy / norm)[:, None], norm

    if allowed_failures < 0:
        return empty
    if allowed_failures < 2 <= n:  # probe two inner samples first
        d, _ = dots(t[[n // 3, (2 * n) // 3]])
        keep = (d <= config.sample_threshold).sum(axis=1) <= allowed_failures
        limb, ia, ib = limb[keep], ia[keep], ib[keep]
    d, norm = dots(t)
    size = h if config.dist_prior_axis == "height" else w
    score = d.mean(axis=1) + np.minimum(config.dist_prior_factor * size / norm - 1.0, 0.0)
    ok = ((d > config.sample_threshold).sum(axis=1) > config.min_valid_fraction * n) & (score > 0)
    return limb[ok], ia[ok], ib[ok], score[ok]


def match_limbs(limb, ia, ib, score, counts_a_b) -> dict[int, list[tuple[int, int, float]]]:
    """Greedy bipartite matching per limb: descending score, each peak once, at most min(nA, nB)."""
    out: dict[int, list[tuple[int, int, float]]] = {}
    if len(limb) == 0:
        return out
    order = np.argsort(-score, kind="stable")
    order = order[np.argsort(limb[order], kind="stable")]  # grouped by limb, descending score inside
    limb_s, ia_s, ib_s, sc_s = limb[order].tolist(), ia[order].tolist(), ib[order].tolist(), score[order].tolist()
    bounds = np.flatnonzero(np.diff(limb[order])) + 1
    for lo, hi in zip(np.concatenate([[0], bounds]).tolist(), np.concatenate([bounds, [len(order)]]).tolist()):
        used_a, used_b, conns = set(), set(), []
        cap = counts_a_b[limb_s[lo]]
        for c in range(lo, hi):
            a, b = ia_s[c], ib_s[c]
            if a in used_a or b in used_b:
                continue
            used_a.add(a)
            used_b.add(b)
            conns.append((a, b, sc_s[c]))
            if len(conns) >= cap:
                break
        out[limb_s[lo]] = conns
    return out


def group_people(connections: dict[int, list], limbs, order, peak_score: np.ndarray, num_parts: int,
                 config: DecoderConfig) -> list[tuple[list[int], float, int]]:
    """CMU person assembly: (parts (K peak ids, -1 = missing), total score, part count) per kept person,
    in creation order. A dict from peak id to the persons holding it replaces CMU's scan of all persons."""
    parts: list[list[int]] = []
    total: list[float] = []
    count: list[int] = []
    alive: list[bool] = []
    owner: dict[int, set[int]] = {}

    def assign(r: int, slot: int, peak: int) -> None:
        old = parts[r][slot]
        if old >= 0 and old != peak:
            owner[old].discard(r)
        parts[r][slot] = peak
        owner.setdefault(peak, set()).add(r)

    no_new = set(config.no_new_person_limbs)
    for k in order:
        a, b = limbs[k]
        for pa, pb, s in connections.get(k, ()):
            found = sorted(owner.get(pa, set()) | owner.get(pb, set()))
            if len(found) == 1:
                r = found[0]
                if parts[r][b] != pb:
                    assign(r, b, pb)
                    count[r] += 1
                    total[r] += peak_score[pb] + s
            elif len(found) >= 2:
                r1, r2 = found[0], found[1]
                if not any(p1 >= 0 and p2 >= 0 for p1, p2 in zip(parts[r1], parts[r2])):
                    for slot, p in enumerate(parts[r2]):
                        if p >= 0:
                            owner[p].discard(r2)
                            assign(r1, slot, p)
                    count[r1] += count[r2]
                    total[r1] += total[r2] + s
                    alive[r2] = False
                else:
                    assign(r1, b, pb)
                    count[r1] += 1
                    total[r1] += peak_score[pb] + s
            elif k not in no_new:
                r = len(parts)
                parts.append([-1] * num_parts)
                total.append(peak_score[pa] + peak_score[pb] + s)
                count.append(2)
                alive.append(True)
                assign(r, a, pa)
                assign(r, b, pb)
    return [(parts[r], total[r], count[r]) for r in range(len(parts))
            if alive[r] and count[r] >= config.min_parts and total[r] / count[r] >= config.min_mean_score]


def decode_people(heatmaps, pafs, *, stride: float = 8.0, config: DecoderConfig = DecoderConfig(),
                  skeleton: str | Skeleton = "openpose18") -> tuple[np.ndarray, np.ndarray]:
    """One image's maps -> (keypoints (N, K, 3) x, y, score in network-input pixels, person scores (N,)).

    heatmaps: (K or K+1, h, w) (a background channel is ignored); pafs: (2L, h, w); numpy or torch.
    Missing parts are (0, 0, 0); the part score is the peak score; the person score is CMU's total
    (sum of peak and limb scores; the mean used for filtering is total / part count). People are
    sorted by score, highest first.
    """
    skeleton = get_skeleton(skeleton)
    k, limbs = skeleton.num_keypoints, skeleton.limbs
    heat, paf = _as_numpy(heatmaps), _as_numpy(pafs)
    if heat.ndim != 3 or heat.shape[0] not in (k, k + 1) or paf.ndim != 3 or paf.shape[0] != 2 * len(limbs) \
            or paf.shape[1:] != heat.shape[1:]:
        raise ValueError(f"expected heatmaps ({k}|{k + 1}, h, w) and pafs ({2 * len(limbs)}, h, w) of one image, "
                         f"got {heat.shape} and {paf.shape}")
    heat = heat[:k]
    part, fx, fy, pscore = find_peaks(heat, config, float(stride))
    limb, ia, ib, lscore = score_limbs(paf, limbs, part, fx, fy, config, k)
    counts = np.bincount(part, minlength=k)
    caps = [int(min(counts[a], counts[b])) for a, b in limbs]
    conns = match_limbs(limb, ia, ib, lscore, caps)
    people = group_people(conns, limbs, config.resolved_limb_order(skeleton), pscore, k, config)
    kps = np.zeros((len(people), k, 3))
    scores = np.array([p[1] for p in people], dtype=np.float64)
    centre = (stride - 1) / 2.0
    for n, (ids, _, _) in enumerate(people):
        ids = np.asarray(ids)
        has = ids >= 0
        kps[n, has, 0] = fx[ids[has]] * stride + centre
        kps[n, has, 1] = fy[ids[has]] * stride + centre
        kps[n, has, 2] = pscore[ids[has]]
    order = np.argsort(-scores, kind="stable")
    return kps[order], scores[order]
