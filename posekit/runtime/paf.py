"""Bottom-up grouping of part affinity fields in numpy alone (no torch, no scipy): the decoder that
`posekit.codecs.paf` and the ONNX runtime path share. See `posekit.codecs.paf` for the algorithm
(peaks at map resolution with sub-cell refinement, PAF line integrals on candidate pairs,
greedy matching, CMU's person assembly); the decoder there is this one.

The Gaussian smoothing of the peaks is scipy.ndimage.gaussian_filter(mode="reflect",
truncate=4.0) written out in numpy (symmetric taps summed as scipy sums them; it agrees with
scipy to within an ulp), so a deploy install needs no scipy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posekit.skeletons import Skeleton, get_skeleton
from posekit.skeletons.mappings import OPENPOSE18_TO_COCO17

__all__ = ["CMU_TREE_LIMBS", "DecoderConfig", "decode_people", "find_peaks", "gaussian_smooth", "group_people",
           "match_limbs", "score_limbs", "to_coco17"]

# CMU processes the limbs in this (tree) order; the PAF channel layout is the skeleton's `limbs` order
CMU_TREE_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
                  (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17))



def _tree_order(skeleton: Skeleton) -> tuple[int, ...]:
    index = {limb: i for i, limb in enumerate(skeleton.limbs)}
    missing = [limb for limb in CMU_TREE_LIMBS if limb not in index]
    if missing or len(index) != len(CMU_TREE_LIMBS):
        raise ValueError(f"limb_order='tree' is CMU's openpose18 order; skeleton {skeleton.name!r} differs "
                         f"(pass limb_order=None or explicit channel indices)")
    return tuple(index[limb] for limb in CMU_TREE_LIMBS)



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


def gaussian_smooth(maps: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """(C, h, w) maps blurred along h and w: scipy's gaussian_filter(maps, (0, sigma, sigma),
    mode="reflect", truncate=truncate) (the edge sample repeated by the reflection)."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 / (sigma * sigma) * x ** 2)
    taps /= taps.sum()
    out = np.asarray(maps, dtype=np.float64)
    for axis in (1, 2):
        n = out.shape[axis]
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="symmetric")  # numpy's "symmetric" is scipy's "reflect", for any width

        def shifted(start: int) -> np.ndarray:
            index = [slice(None)] * 3
            index[axis] = slice(start, start + n)
            return padded[tuple(index)]

        acc = shifted(radius) * taps[radius]
        for j in range(1, radius + 1):
            acc = acc + (shifted(radius - j) + shifted(radius + j)) * taps[radius + j]
        out = acc
    return out


def to_coco17(keypoints18) -> np.ndarray:
    """(…, 18, C) OpenPose-order keypoints -> (…, 17, C) COCO order (the neck is dropped)."""
    return np.asarray(keypoints18)[..., list(OPENPOSE18_TO_COCO17), :]


def find_peaks(heatmaps: np.ndarray, config: DecoderConfig, stride: float):
    """(K, h, w) -> (part (N,), x (N,), y (N,) sub-cell map coordinates, score (N,)), sorted by part
    then row-major cell order, at most config.max_peaks per part (the highest)."""
    sigma = config.smooth_sigma / stride
    smooth = gaussian_smooth(heatmaps, sigma) if sigma > 0 else heatmaps
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


def _support_masks(magnitude: np.ndarray, threshold: float) -> np.ndarray:
    """(L, max(h-1, 1), max(w-1, 1)) per limb: True where some corner of the bilinear cell (y0..y0+1, x0..x0+1) has
    |PAF| > threshold. Where all four corners are <= threshold, every bilinear sample in the cell has
    |PAF . u| <= threshold (a convex combination of the corner vectors), so the sample fails."""
    _, h, w = magnitude.shape
    strong = magnitude > threshold - 1e-12  # a hair wide: rounding can never make a passing sample look unsupported
    if h >= 2:  # a map one cell high or wide has one corner row / column: nothing to combine
        strong = strong[:, :-1] | strong[:, 1:]
    if w >= 2:
        strong = strong[:, :, :-1] | strong[:, :, 1:]
    return strong


def _support_failures(support: np.ndarray, limb, ax, ay, vx, vy, ts) -> np.ndarray:
    """How many of the samples (ax, ay) + t (vx, vy) (t in ts, the last axis) land in a cell
    without support (see `_support_masks`). The cell is the bilinear sampler's corner
    (`_bilinear_xy`): peaks lie on the map, so their segments do too and only the corner's clamp to
    the last full cell is needed."""
    sh, sw = support.shape[1:]
    x0 = np.minimum((ax + ts * vx).astype(np.int32), sw - 1)
    y0 = np.minimum((ay + ts * vy).astype(np.int32), sh - 1)
    y0 *= sw
    y0 += x0
    y0 += limb * (sh * sw)
    return np.count_nonzero(~support.reshape(-1)[y0], axis=-1)


def _candidate_pairs(pafs: np.ndarray, limbs, counts, starts, fx, fy, config: DecoderConfig):
    """Candidate (limb, A, B) pairs that can still pass the acceptance test, found without bilinear
    sampling: exact pruning, every dropped pair would have been rejected by the full test.

    - support: a sample can pass only in a cell where some corner has |PAF| > sample_threshold, so
      a pair with more failing samples than the test allows is dropped; three inner samples are
      looked up on each limb's (nA, nB) grid first, the other samples only for the survivors;
    - length: mean(PAF . u) <= M, the limb channel's largest |PAF|, so when M < 1 a pair longer
      than f * S / (1 - M) has a negative score whatever its samples.
    """
    _, h, w = pafs.shape
    n = config.num_samples
    allowed_failures = n - (int(np.floor(config.min_valid_fraction * n)) + 1)
    t = np.linspace(0.0, 1.0, n)
    first = np.unique([n // 4, n // 2, (3 * n) // 4])
    rest = np.setdiff1d(np.arange(n), first)
    magnitude = np.sqrt(pafs[0::2] ** 2 + pafs[1::2] ** 2)
    support = _support_masks(magnitude, config.sample_threshold)
    largest = magnitude.reshape(len(limbs), -1).max(axis=1, initial=0.0)
    size = h if config.dist_prior_axis == "height" else w
    # peaks lie on the map (sub-cell offsets stay inside); clamp anyway so that the look-ups cannot leave it
    fx, fy = np.clip(fx, 0.0, w - 1.0), np.clip(fy, 0.0, h - 1.0)
    ls, ia, ib, fails = [], [], [], []
    for i, (a, b) in enumerate(limbs):
        if counts[a] == 0 or counts[b] == 0:
            continue
        ax, ay = fx[starts[a]:starts[a + 1], None, None], fy[starts[a]:starts[a + 1], None, None]
        vx = fx[None, starts[b]:starts[b + 1], None] - ax
        vy = fy[None, starts[b]:starts[b + 1], None] - ay
        failures = _support_failures(support, i, ax, ay, vx, vy, t[first])
        ok = failures <= allowed_failures
        if largest[i] < 1.0 and config.dist_prior_factor > 0:
            norm = np.maximum(np.sqrt(vx[..., 0] ** 2 + vy[..., 0] ** 2), 1e-6)
            ok &= config.dist_prior_factor * size / norm - 1.0 > -largest[i] - 1e-9
        ra, rb = np.nonzero(ok)  # row-major: A-major, as a nested loop visits them
        ls.append(np.full(len(ra), i))
        ia.append(starts[a] + ra)
        ib.append(starts[b] + rb)
        fails.append(failures[ra, rb])
    if not ls:
        return None
    limb, ia, ib, fails = (np.concatenate(v) for v in (ls, ia, ib, fails))
    if len(limb) and len(rest):
        ax, ay = fx[ia, None], fy[ia, None]
        fails = fails + _support_failures(support, limb[:, None], ax, ay, fx[ib, None] - ax, fy[ib, None] - ay,
                                          t[rest])
        keep = fails <= allowed_failures
        limb, ia, ib = limb[keep], ia[keep], ib[keep]
    return limb, ia, ib


def score_limbs(pafs: np.ndarray, limbs, part, fx, fy, config: DecoderConfig, num_parts: int):
    """Score the candidate pairs of every limb at once.

    Returns accepted candidates as arrays (limb, peak index A, peak index B, score), in limb
    order, pairs A-major within a limb (the order a nested loop would visit them). Pairs that
    cannot pass (`_candidate_pairs`: no PAF support at the probe samples, or too long for the
    limb's largest PAF) are dropped before any bilinear sampling, so the cost grows with the pairs
    that lie along a field rather than with nA * nB; the accepted set is the same as scoring all.
    """
    counts = np.bincount(part, minlength=num_parts)
    starts = np.concatenate([[0], np.cumsum(counts)])
    empty = (np.zeros(0, np.int64),) * 3 + (np.zeros(0),)
    n = config.num_samples
    if n - (int(np.floor(config.min_valid_fraction * n)) + 1) < 0:
        return empty
    pairs = _candidate_pairs(pafs, limbs, counts, starts, fx, fy, config)
    if pairs is None or not len(pairs[0]):
        return empty
    limb, ia, ib = pairs
    _, h, w = pafs.shape
    t = np.linspace(0.0, 1.0, n)
    ax, ay, vx, vy = fx[ia], fy[ia], fx[ib] - fx[ia], fy[ib] - fy[ia]
    norm = np.maximum(np.sqrt(vx * vx + vy * vy), 1e-6)
    px, py = ax[:, None] + t * vx[:, None], ay[:, None] + t * vy[:, None]
    sx, sy = _bilinear_xy(pafs, (2 * limb)[:, None], px, py)
    d = sx * (vx / norm)[:, None] + sy * (vy / norm)[:, None]
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

    heatmaps: (K or K+1, h, w) (a background channel is ignored); pafs: (2L, h, w), numpy arrays.
    Missing parts are (0, 0, 0); the part score is the peak score; the person score is CMU's total
    (sum of peak and limb scores; the mean used for filtering is total / part count). People are
    sorted by score, highest first.
    """
    skeleton = get_skeleton(skeleton)
    k, limbs = skeleton.num_keypoints, skeleton.limbs
    heat, paf = np.asarray(heatmaps, dtype=np.float64), np.asarray(pafs, dtype=np.float64)
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
