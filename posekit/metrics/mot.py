"""Multi-object tracking scores by their standard definitions: CLEAR-MOT identity switches
(Bernardin & Stiefelhagen 2008, as py-motmetrics counts them) and IDF1 (Ristani et al. 2016).

Feed one frame at a time: ground-truth ids, predicted track ids and a (G, P) distance matrix
where NaN means "cannot be matched" (beyond the threshold), as py-motmetrics' accumulator does.
`pose_distances` gives that matrix for poses: 1 - OKS, NaN above `max_distance`.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy.optimize import linear_sum_assignment

_BIG = 1e9


def _assign(cost: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost matching over the finite entries of `cost` (NaN = forbidden)."""
    if cost.size == 0 or not np.isfinite(cost).any():
        return []
    filled = np.where(np.isfinite(cost), cost, _BIG)
    rows, cols = linear_sum_assignment(filled)
    return [(r, c) for r, c in zip(rows, cols) if np.isfinite(cost[r, c])]


class MOTAccumulator:
    """Per-frame events; `compute()` returns the scores.

    Per frame (CLEAR-MOT): a ground-truth object last matched to hypothesis h keeps h when that pair is still matchable; the rest are matched by minimum total
    distance (Hungarian). A switch is a match whose hypothesis differs from the object's last
    matched hypothesis. IDF1: one global one-to-one assignment of ground-truth trajectories to
    predicted trajectories maximising the frames where a pair is matchable (IDTP);
    IDF1 = 2 IDTP / (ground-truth detections + predicted detections)."""

    def __init__(self):
        self.frames = 0
        self.last_match: dict = {}  # gt id -> hypothesis id it was last matched to
        self.switches = self.matches = self.misses = self.false_positives = 0
        self.gt_count: dict = defaultdict(int)
        self.pred_count: dict = defaultdict(int)
        self.pair_frames: dict = defaultdict(int)  # (gt id, hyp id) -> frames they are matchable

    def update(self, gt_ids, pred_ids, distances) -> None:
        gt_ids, pred_ids = list(gt_ids), list(pred_ids)
        d = np.asarray(distances, dtype=np.float64).reshape(len(gt_ids), len(pred_ids))
        if len(set(gt_ids)) != len(gt_ids) or len(set(pred_ids)) != len(pred_ids):
            raise ValueError(f"frame {self.frames}: ids within a frame must be unique (gt {gt_ids}, pred {pred_ids})")
        self.frames += 1
        for g in gt_ids:
            self.gt_count[g] += 1
        for h in pred_ids:
            self.pred_count[h] += 1
        for i, g in enumerate(gt_ids):
            for j, h in enumerate(pred_ids):
                if np.isfinite(d[i, j]):
                    self.pair_frames[(g, h)] += 1
        # CLEAR-MOT: keep still-valid correspondences, then Hungarian on what is left
        matched: list[tuple[int, int]] = []
        free_g, free_p = set(range(len(gt_ids))), set(range(len(pred_ids)))
        for i, g in enumerate(gt_ids):
            h = self.last_match.get(g)  # kept through frames the object is missed, as py-motmetrics does
            if h is not None and h in pred_ids:
                j = pred_ids.index(h)
                if j in free_p and np.isfinite(d[i, j]):
                    matched.append((i, j))
                    free_g.discard(i)
                    free_p.discard(j)
        rest_g, rest_p = sorted(free_g), sorted(free_p)
        for r, c in _assign(d[np.ix_(rest_g, rest_p)] if rest_g and rest_p else np.zeros((0, 0))):
            matched.append((rest_g[r], rest_p[c]))
        for i, j in matched:
            g, h = gt_ids[i], pred_ids[j]
            if g in self.last_match and self.last_match[g] != h:
                self.switches += 1
            self.last_match[g] = h
        self.matches += len(matched)
        self.misses += len(gt_ids) - len(matched)
        self.false_positives += len(pred_ids) - len(matched)

    def compute(self) -> dict:
        gts, preds = sorted(self.gt_count, key=str), sorted(self.pred_count, key=str)
        num_gt, num_pred = sum(self.gt_count.values()), sum(self.pred_count.values())
        idtp = 0
        if gts and preds:
            overlap = np.zeros((len(gts), len(preds)))
            gi, pi = {g: i for i, g in enumerate(gts)}, {h: j for j, h in enumerate(preds)}
            for (g, h), n in self.pair_frames.items():
                overlap[gi[g], pi[h]] = n
            rows, cols = linear_sum_assignment(-overlap)
            idtp = int(overlap[rows, cols].sum())
        denominator = num_gt + num_pred
        return {
            "idf1": 2.0 * idtp / denominator if denominator else 1.0,
            "idp": idtp / num_pred if num_pred else 1.0,
            "idr": idtp / num_gt if num_gt else 1.0,
            "id_switches": self.switches,
            "mota": 1.0 - (self.misses + self.false_positives + self.switches) / num_gt if num_gt else 1.0,
            "matches": self.matches, "misses": self.misses, "false_positives": self.false_positives,
            "gt_detections": num_gt, "pred_detections": num_pred, "gt_tracks": len(gts), "pred_tracks": len(preds),
            "frames": self.frames,
        }


def pose_distances(gt: np.ndarray, gt_areas: np.ndarray, pred: np.ndarray, sigmas: np.ndarray, *,
                   max_distance: float = 0.5) -> np.ndarray:
    """(G, P) 1 - OKS between ground-truth poses (G, K, 3: x, y, v) and predicted (P, K, 2+)
    poses; NaN where 1 - OKS > max_distance (not matchable). Joints with v <= 0 are skipped."""
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, len(sigmas), 3)
    pred = np.asarray(pred, dtype=np.float64)[..., :2].reshape(-1, len(sigmas), 2)
    out = np.full((len(gt), len(pred)), np.nan)
    if not len(gt) or not len(pred):
        return out
    var = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2
    vis = gt[:, None, :, 2] > 0
    d2 = ((gt[:, None, :, :2] - pred[None]) ** 2).sum(-1)
    e = d2 / (var * 2.0 * (np.asarray(gt_areas, dtype=np.float64)[:, None, None] + np.spacing(1)))
    counted = np.maximum(vis.sum(-1), 1)
    oks = np.where(vis & np.isfinite(e), np.exp(-np.where(np.isfinite(e), e, 0.0)), 0.0).sum(-1) / counted
    dist = 1.0 - oks
    return np.where(dist <= max_distance, dist, np.nan)
