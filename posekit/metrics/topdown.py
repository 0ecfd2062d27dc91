"""Top-down COCO scoring: one prediction per person box, rescored, OKS-NMS'd and capped per
image as COCO result files are (MMPose's protocol), then OKS AP through `metrics.coco`; on GT
boxes also PCK@t x max(box w, h) in percent and the mean pixel error over labelled keypoints."""
from __future__ import annotations

import numpy as np

from posekit.metrics.coco import build_coco_gt, coco_keypoint_eval_on
from posekit.metrics.pck import bbox_normalizer, keypoint_distances, pck

__all__ = ["TopDownCOCOScores", "oks_nms"]


def oks_nms(keypoints: np.ndarray, scores: np.ndarray, areas: np.ndarray, sigmas: np.ndarray,
            threshold: float = 0.9) -> list[int]:
    """Indices kept by greedy OKS NMS (MMPose's `oks_nms`): a person is dropped when its OKS with a
    better-scoring kept one exceeds `threshold`. keypoints (N, K, 2), areas (N,) (the box areas)."""
    order = list(np.argsort(-scores))
    var = (2 * np.asarray(sigmas)) ** 2
    keep = []
    while order:
        best = order.pop(0)
        keep.append(int(best))
        if not order:
            break
        rest = np.asarray(order)
        d2 = ((keypoints[rest] - keypoints[best]) ** 2).sum(-1)
        e = d2 / var / ((areas[best] + areas[rest])[:, None] / 2 + np.spacing(1)) / 2
        sim = np.exp(-e).mean(-1)
        order = [o for o, s in zip(order, sim) if s <= threshold]
    return keep


class TopDownCOCOScores:
    """Accumulates one prediction per item (image index, GT person row or -1, keypoints (K, 2),
    scores (K,), person score, box) and scores them against the image Samples they came from.

    gt_boxes: the items are the GT people's boxes (PCK and the pixel error are defined, and a
    partial run ignores the people it did not score); otherwise they are detector boxes.
    oks_nms_threshold: None for no OKS NMS. max_people: COCO keeps the best 20 per image."""

    def __init__(self, skeleton, sigmas: np.ndarray, *, gt_boxes: bool, pck_threshold: float = 0.1,
                 oks_nms_threshold: float | None = None, max_people: int = 20):
        self.skeleton, self.sigmas, self.gt_boxes = skeleton, sigmas, gt_boxes
        self.pck_threshold, self.oks_nms_threshold, self.max_people = pck_threshold, oks_nms_threshold, max_people
        self.coco_inputs = None  # (COCO gt dict, result dicts) of the last compute()
        self.items: list[tuple] = []  # (image index, person row, keypoints (K, 2), scores (K,), person score, box)
        self.pred, self.gt, self.box = [], [], []  # GT boxes: predictions (K, 2), GT (B, K, 3), boxes (B, 4)

    def add(self, image_index, person_rows, keypoints, scores, person_scores, boxes, gt_keypoints=None) -> None:
        """One batch: per item its image index, GT row, (K, 2) keypoints, (K,) scores, person score
        and box; `gt_keypoints` (B, K, 3), the items' GT, when the boxes are the GT's."""
        for i, row, kp, sc, ps, box in zip(image_index, person_rows, keypoints, scores, person_scores, boxes):
            self.items.append((int(i), int(row), kp, sc, float(ps), box))
        if self.gt_boxes:
            self.pred += list(keypoints)
            self.gt.append(np.asarray(gt_keypoints))
            self.box.append(np.asarray(boxes))

    def compute(self, peek, num_images: int, *, complete: bool) -> dict:
        """The metrics; `peek(i)` gives image Sample i's annotations (no pixels). complete: every
        item of the split was scored, so every image counts (an image without items scores its
        people as missed); else only the images (and, on GT boxes, the people) scored count."""
        chosen = list(range(num_images)) if complete else sorted({it[0] for it in self.items})
        samples = [peek(i) for i in chosen]
        gt = build_coco_gt(samples, skeleton=self.skeleton)
        ids = {i: s.meta.get("image_id", i) for i, s in zip(chosen, samples)}
        if not complete and self.gt_boxes:
            # a subset of the people (eval.max_samples): people whose item was not scored are ignored
            # (build_coco_gt writes each image's people in row order, crowds after them)
            position = {image_id: i for i, image_id in ids.items()}
            seen = {(it[0], it[1]) for it in self.items}
            rows: dict = {}
            for ann in gt["annotations"]:
                if not ann["iscrowd"]:
                    row = rows[ann["image_id"]] = rows.get(ann["image_id"], -1) + 1
                    if (position[ann["image_id"]], row) not in seen:
                        ann["num_keypoints"] = 0
        dets = self.coco_results(chosen, ids)
        self.coco_inputs = (gt, dets)  # exactly what was scored: the error analysis re-scores it
        metrics = coco_keypoint_eval_on(gt, dets, sigmas=self.sigmas)
        metrics["results"] = float(len(dets))
        if self.gt_boxes and self.pred:
            metrics |= self._pck()
        return metrics

    def coco_results(self, chosen: list[int], ids: dict) -> list[dict]:
        """COCO result dicts of the chosen images: per image OKS NMS (when set), then the
        `max_people` best-scoring people."""
        dets = []
        for i in chosen:
            mine = [it for it in self.items if it[0] == i]
            if not mine:
                continue
            kp = np.stack([it[2] for it in mine])
            scores = np.array([it[4] for it in mine])
            keep = list(range(len(mine)))
            if self.oks_nms_threshold is not None:
                areas = np.array([it[5][2] * it[5][3] for it in mine])
                keep = oks_nms(kp, scores, areas, self.sigmas, self.oks_nms_threshold)
            keep = sorted(keep, key=lambda j: -scores[j])[:self.max_people]
            for j in keep:
                flat = np.concatenate([kp[j], mine[j][3][:, None]], axis=1).reshape(-1)
                dets.append({"image_id": ids[i], "keypoints": flat.tolist(), "score": float(scores[j])})
        return dets

    def _pck(self) -> dict:
        pred, gtk, box = np.stack(self.pred), np.concatenate(self.gt), np.concatenate(self.box)
        visible = gtk[..., 2] > 0
        res = pck(pred, gtk, visible, bbox_normalizer(box), self.pck_threshold)
        dist = keypoint_distances(pred, gtk)
        out = {"pck": 100.0 * res["mean"],
               "mean_px_error": float(dist[visible].mean()) if visible.any() else float("nan")}
        for j, name in enumerate(self.skeleton.keypoints):
            if res["counts"][j]:
                out[f"pck/{name}"] = 100.0 * float(res["per_joint"][j])
        return out
