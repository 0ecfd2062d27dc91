"""Plain-loop reference of posekit's OpenPose decoder, plus synthetic multi-person poses.

`reference_decode` is the same algorithm as `posekit.codecs.paf.decode_people`, written the
straightforward way (CMU demo style): per part a loop over candidate cells, per limb a double
loop over candidate pairs with a Python loop over the samples, greedy matching on a sorted
list, and person assembly scanning a `subset` array. It shares nothing with the vectorised
code except the config object and scipy's Gaussian filter, so the tests can compare both and
the benchmark can time both.

Used by tests/test_openpose_decoder.py (via sys.path) and benchmarks/bench_openpose_decoder.py.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter

# openpose18 PAF channel layout (limb i = channels 2i, 2i+1) and CMU's processing order, written out
# again here on purpose so the reference does not lean on the code it checks
LIMBS = ((1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13), (1, 2), (2, 3), (3, 4), (2, 16), (1, 5),
         (5, 6), (6, 7), (5, 17), (1, 0), (0, 14), (0, 15), (14, 16), (15, 17))
TREE = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
        (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17))
NUM_PARTS = 18


def _refine(raw: np.ndarray, x: int, y: int, along_x: bool) -> float:
    h, w = raw.shape
    if along_x:
        if x <= 0 or x >= w - 1:
            return 0.0
        vm, v0, vp = raw[y, x - 1], raw[y, x], raw[y, x + 1]
    else:
        if y <= 0 or y >= h - 1:
            return 0.0
        vm, v0, vp = raw[y - 1, x], raw[y, x], raw[y + 1, x]
    lm, l0, lp = np.log(max(vm, 1e-10)), np.log(max(v0, 1e-10)), np.log(max(vp, 1e-10))
    denom = lm - 2.0 * l0 + lp
    if not denom < 0:
        return 0.0
    return float(min(max(0.5 * (lm - lp) / denom, -0.5), 0.5))


def _sample(m: np.ndarray, x: float, y: float) -> float:
    h, w = m.shape
    x = min(max(x, 0.0), w - 1.0)
    y = min(max(y, 0.0), h - 1.0)
    x0 = min(math.floor(x), max(w - 2, 0))
    y0 = min(math.floor(y), max(h - 2, 0))
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    return ((m[y0, x0] * (1 - fx) + m[y0, x1] * fx) * (1 - fy) + (m[y1, x0] * (1 - fx) + m[y1, x1] * fx) * fy)


def reference_decode(heatmaps, pafs, *, stride: float = 8.0, config, stats: dict | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Same contract as decode_people (numpy maps of one image, openpose18 only). `stats`, when
    given, counts the grouping branches taken (extend, merge, conflict, new, skip, three_rows)."""
    stats = {} if stats is None else stats
    heat = np.asarray(heatmaps, dtype=np.float64)[:NUM_PARTS]
    paf = np.asarray(pafs, dtype=np.float64)
    _, h, w = heat.shape
    sigma = config.smooth_sigma / stride

    # 1. peaks: [x, y, score, id] per part
    all_peaks, counter = [], 0
    for part in range(NUM_PARTS):
        raw = heat[part]
        sm = gaussian_filter(raw, sigma=sigma, mode="reflect") if sigma > 0 else raw
        found = []
        for y, x in zip(*np.nonzero(sm > config.peak_threshold)):
            v = sm[y, x]
            nbrs = [sm[yy, xx] for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1))
                    if 0 <= yy < h and 0 <= xx < w]
            ok = all(v > n for n in nbrs) if config.strict_nms else (all(v >= n for n in nbrs)
                                                                     and any(v > n for n in nbrs))
            if ok:
                found.append((int(x), int(y), float(raw[y, x] if config.peak_score == "raw" else v)))
        if len(found) > config.max_peaks:
            best = sorted(range(len(found)), key=lambda i: -found[i][2])[:config.max_peaks]
            found = [found[i] for i in sorted(best)]
        peaks = []
        for x, y, s in found:
            fx, fy = float(x), float(y)
            if config.refine:
                fx += _refine(raw, x, y, True)
                fy += _refine(raw, x, y, False)
            peaks.append([fx, fy, s, counter])
            counter += 1
        all_peaks.append(peaks)
    candidate = np.array([p for peaks in all_peaks for p in peaks]).reshape(-1, 4)

    # 2. limbs: score every pair, greedy matching
    n = config.num_samples
    ts = np.linspace(0.0, 1.0, n)
    size = h if config.dist_prior_axis == "height" else w
    connection_all = []
    for k, (a, b) in enumerate(LIMBS):
        cand_a, cand_b = all_peaks[a], all_peaks[b]
        pairs = []
        for i, pa in enumerate(cand_a):
            for j, pb in enumerate(cand_b):
                vx, vy = pb[0] - pa[0], pb[1] - pa[1]
                norm = max(math.sqrt(vx * vx + vy * vy), 1e-6)
                ux, uy = vx / norm, vy / norm
                dots = []
                for t in ts:
                    px, py = pa[0] + t * vx, pa[1] + t * vy
                    dots.append(_sample(paf[2 * k], px, py) * ux + _sample(paf[2 * k + 1], px, py) * uy)
                score = sum(dots) / n + min(config.dist_prior_factor * size / norm - 1.0, 0.0)
                n_ok = sum(1 for d in dots if d > config.sample_threshold)
                if n_ok > config.min_valid_fraction * n and score > 0:
                    pairs.append((i, j, score))
        pairs = sorted(pairs, key=lambda c: c[2], reverse=True)
        conns, used_i, used_j = [], [], []
        for i, j, s in pairs:
            if i in used_i or j in used_j:
                continue
            used_i.append(i)
            used_j.append(j)
            conns.append((cand_a[i][3], cand_b[j][3], s))
            if len(conns) >= min(len(cand_a), len(cand_b)):
                break
        connection_all.append(conns)

    # 3. person assembly (CMU): subset rows = 18 peak ids, total score, part count
    if config.limb_order is None:
        order = list(range(len(LIMBS)))
    elif config.limb_order == "tree":
        order = [LIMBS.index(limb) for limb in TREE]
    else:
        order = list(config.limb_order)
    subset = -1 * np.ones((0, NUM_PARTS + 2))
    for k in order:
        a, b = LIMBS[k]
        for pa, pb, s in connection_all[k]:
            found = [j for j in range(len(subset)) if subset[j][a] == pa or subset[j][b] == pb]
            branch = ("extend" if len(found) == 1 else "new" if not found else "merge" if not np.any(
                (subset[found[0]][:-2] >= 0) & (subset[found[1]][:-2] >= 0)) else "conflict")
            if branch == "new" and k in config.no_new_person_limbs:
                branch = "skip"
            stats[branch] = stats.get(branch, 0) + 1
            if len(found) > 2:
                stats["three_rows"] = stats.get("three_rows", 0) + 1
            if len(found) == 1:
                j = found[0]
                if subset[j][b] != pb:
                    subset[j][b] = pb
                    subset[j][-1] += 1
                    subset[j][-2] += candidate[pb, 2] + s
            elif len(found) >= 2:
                j1, j2 = found[0], found[1]
                membership = ((subset[j1] >= 0).astype(int) + (subset[j2] >= 0).astype(int))[:-2]
                if len(np.nonzero(membership == 2)[0]) == 0:
                    subset[j1][:-2] += subset[j2][:-2] + 1
                    subset[j1][-2:] += subset[j2][-2:]
                    subset[j1][-2] += s
                    subset = np.delete(subset, j2, 0)
                else:
                    subset[j1][b] = pb
                    subset[j1][-1] += 1
                    subset[j1][-2] += candidate[pb, 2] + s
            elif k not in config.no_new_person_limbs:
                row = -1 * np.ones(NUM_PARTS + 2)
                row[a], row[b] = pa, pb
                row[-1] = 2
                row[-2] = candidate[pa, 2] + candidate[pb, 2] + s
                subset = np.vstack([subset, row])
    keep = [i for i in range(len(subset))
            if subset[i][-1] >= config.min_parts and subset[i][-2] / subset[i][-1] >= config.min_mean_score]
    subset = subset[keep]

    kps = np.zeros((len(subset), NUM_PARTS, 3))
    for r in range(len(subset)):
        for part in range(NUM_PARTS):
            pid = int(subset[r][part])
            if pid >= 0:
                kps[r, part] = (candidate[pid, 0] * stride + (stride - 1) / 2,
                                candidate[pid, 1] * stride + (stride - 1) / 2, candidate[pid, 2])
    scores = subset[:, -2].copy()
    order_out = sorted(range(len(scores)), key=lambda i: -scores[i])
    return kps[order_out], scores[order_out]


# --- synthetic people ------------------------------------------------------------------------------------
# a standing person facing the camera, unit height, x centred (the person's right is image-left)
TEMPLATE = np.array([
    (0.0, 0.09), (0.0, 0.18), (-0.11, 0.19), (-0.15, 0.33), (-0.17, 0.46), (0.11, 0.19), (0.15, 0.33),
    (0.17, 0.46), (-0.07, 0.50), (-0.08, 0.72), (-0.08, 0.94), (0.07, 0.50), (0.08, 0.72), (0.08, 0.94),
    (-0.03, 0.06), (0.03, 0.06), (-0.06, 0.075), (0.06, 0.075)])
FACE_DAMPING = np.array([1 / 3 if i in (0, 14, 15, 16, 17) else 1.0 for i in range(NUM_PARTS)])
LEAVES = (4, 7, 10, 13, 16, 17)  # wrists, ankles, ears: dropping them keeps a person connected


def random_people(rng: np.random.Generator, n: int, input_size=(496, 368), *, height=(120.0, 260.0),
                  jitter: float = 0.02, max_angle: float = 15.0, drop_leaves: float = 0.0,
                  columns: bool = False, margin: float = 12.0) -> np.ndarray:
    """(n, 18, 3) people in input pixels (v = 2 labelled, 0 dropped leaf). Joints move by N(0, jitter)
    heights (a third of that on the face, whose limbs are short). columns=True puts each person in
    its own vertical strip, `margin` px inside the image (no overlap)."""
    w_img, h_img = input_size
    out = np.zeros((n, NUM_PARTS, 3))
    for p in range(n):
        hgt = rng.uniform(*height)
        pts = TEMPLATE + rng.normal(0, jitter, TEMPLATE.shape) * FACE_DAMPING[:, None]
        pts -= pts.mean(0)
        ang = math.radians(rng.uniform(-max_angle, max_angle))
        rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
        pts = pts @ rot.T * hgt
        lo, hi = pts.min(0), pts.max(0)
        if columns:
            strip = w_img / n
            m = margin
            cx = rng.uniform(strip * p - lo[0] + m, strip * (p + 1) - hi[0] - m) \
                if strip > hi[0] - lo[0] + 2 * m else strip * (p + 0.5)
            cy = rng.uniform(m - lo[1], h_img - m - hi[1]) if h_img > hi[1] - lo[1] + 2 * m else h_img / 2
        else:
            cx, cy = rng.uniform(0, w_img), rng.uniform(0, h_img)
        out[p, :, :2] = pts + (cx, cy)
        out[p, :, 2] = 2
        for leaf in LEAVES:
            if rng.random() < drop_leaves:
                out[p, leaf] = 0
    return out
