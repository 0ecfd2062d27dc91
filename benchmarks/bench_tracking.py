"""Video tracking: identity switches, IDF1, jitter with and without One-Euro smoothing, PCK, and
the cost of tracking against untracked predict.

Quality runs on synthetic videos (posekit.data.synthetic.video: walkers cross and pass behind a
pillar that hides one of them for ~3 frames) with ground-truth ids. Detections are the ground
truth with Gaussian pixel noise and random joint drop-outs (GT-with-noise: no trained model is
needed, and the numbers measure the tracker and the filter, not a detector), in two settings:

  openpose:  people as a bottom-up model gives them: joints only, no boxes (the tracker makes
             boxes from the joints); a person with < 3 visible joints is not found.
  topdown:   every visible ground-truth person's box is given (top-down with GT boxes), the
             joints inside it are noisy.

Scores: identity switches per 100 ground-truth track-frames (CLEAR-MOT), IDF1 (Ristani et al.),
jitter = mean |p[t+1] - 2 p[t] + p[t-1]| over every tracked joint seen three frames running
(px / frame^2; the ground truth's own value is the floor), PCK@0.05 and @0.1 of the person's box
side. Speed: tracked vs untracked predict on a 300-frame video with a one-step checkpoint
(weights do not change the cost), paired alternating repeats (benchmarks/paired.py).

    python benchmarks/bench_tracking.py --threads 2 --seeds 8 --frames 150
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from paired import fmt_ratio, paired_ratio  # noqa: E402

from posekit.data.synthetic.video import SyntheticVideo  # noqa: E402
from posekit.engine.tracking import PoseTracker  # noqa: E402
from posekit.metrics.mot import MOTAccumulator, pose_distances  # noqa: E402
from posekit.skeletons import get_skeleton  # noqa: E402

COCO = get_skeleton("coco17")
# speed runs use one-step checkpoints, whose people score under the default birth score: track
# every person anyway so the tracker does the full work it does on a trained model
EVERYONE = {"birth_score": 0.0}


def detections(sample, rng, mode: str, noise: float, drop: float):
    """GT-with-noise people of one frame: (keypoints, scores, boxes or None, gt index per person)."""
    vis = sample.keypoints[..., 2] > 0
    keep = np.flatnonzero(vis.sum(1) >= 3)
    kp = sample.keypoints[keep, :, :2] + rng.normal(0, noise, (len(keep), 17, 2))
    seen = vis[keep] & (rng.random((len(keep), 17)) >= drop)
    scores = np.where(seen, rng.uniform(0.6, 1.0, seen.shape), 0.0)
    kp = np.where(seen[..., None], kp, np.nan)
    boxes = sample.boxes[keep] if mode == "topdown" else None
    return kp, scores, boxes, keep


def jitter(tracks: dict) -> float:
    """Mean |second difference| of every joint seen in three consecutive frames of a track."""
    values = []
    for frames in tracks.values():
        ts = sorted(frames)
        for a, b, c in zip(ts, ts[1:], ts[2:]):
            if c - a != 2:
                continue
            acc = frames[c] - 2 * frames[b] + frames[a]
            ok = np.isfinite(acc).all(1)
            values += np.linalg.norm(acc[ok], axis=1).tolist()
    return float(np.mean(values)) if values else float("nan")


def pck(pred: np.ndarray, gt: np.ndarray, box: np.ndarray, alpha: float) -> tuple[int, int]:
    ok = (gt[:, 2] > 0)
    hit = np.linalg.norm(np.nan_to_num(pred, nan=1e9) - gt[:, :2], axis=1) <= alpha * max(box[2], box[3])
    return int((hit & ok).sum()), int(ok.sum())


def quality(mode: str, *, seeds: int, frames: int, noise: float, drop: float, smooth: dict | None) -> dict:
    acc_all, counts = [], {"sw": 0, "gt": 0}
    raw_tracks_all, out_tracks_all, gt_tracks_all = [], [], []
    hits = {0.05: [0, 0], 0.1: [0, 0]}
    hits_raw = {0.05: [0, 0], 0.1: [0, 0]}
    for seed in range(seeds):
        video = SyntheticVideo(frames, seed=seed, people=3, crossing=True, pillar_frames=3, image_size=(320, 240))
        rng = np.random.default_rng(1000 + seed)
        tracker = PoseTracker(COCO, smooth=smooth, fps=25.0)
        acc = MOTAccumulator()
        raw_tracks, out_tracks, gt_tracks = {}, {}, {}
        for t in range(frames):
            s = video[t]
            kp, scores, boxes, keep = detections(s, rng, mode, noise, drop)
            ids, out = tracker.update(kp, scores, boxes)
            gt_rows = (s.keypoints[..., 2] > 0).sum(1) >= 3
            d = pose_distances(s.keypoints[gt_rows], s.meta["areas"][gt_rows], kp, COCO.oks_sigmas())
            acc.update(s.meta["track_ids"][gt_rows], ids[ids >= 0], d[:, ids >= 0])
            for p, tid in enumerate(ids):
                if tid < 0:
                    continue
                g = keep[p]
                raw_tracks.setdefault(tid, {})[t] = kp[p]
                out_tracks.setdefault(tid, {})[t] = out[p]
                gt_xy = np.where(s.keypoints[g, :, 2:] > 0, s.keypoints[g, :, :2], np.nan)
                gt_tracks.setdefault(int(s.meta["track_ids"][g]), {})[t] = gt_xy
                for a in hits:
                    h, n = pck(out[p], s.keypoints[g], s.boxes[g], a)
                    hits[a][0] += h
                    hits[a][1] += n
                    h, n = pck(kp[p], s.keypoints[g], s.boxes[g], a)
                    hits_raw[a][0] += h
                    hits_raw[a][1] += n
        m = acc.compute()
        acc_all.append(m)
        counts["sw"] += m["id_switches"]
        counts["gt"] += m["gt_detections"]
        raw_tracks_all += [{(seed, k): v} for k, v in raw_tracks.items()]
        out_tracks_all += [{(seed, k): v} for k, v in out_tracks.items()]
        gt_tracks_all += [{(seed, k): v} for k, v in gt_tracks.items()]
    merge = lambda parts: {k: v for p in parts for k, v in p.items()}  # noqa: E731
    idtp_f1 = statistics.mean(m["idf1"] for m in acc_all)
    return {"idsw_per_100": 100.0 * counts["sw"] / max(counts["gt"], 1), "idsw": counts["sw"],
            "track_frames": counts["gt"], "idf1_mean": idtp_f1, "idf1_min": min(m["idf1"] for m in acc_all),
            "jitter_raw": jitter(merge(raw_tracks_all)), "jitter_out": jitter(merge(out_tracks_all)),
            "jitter_gt": jitter(merge(gt_tracks_all)),
            "pck05_raw": 100 * hits_raw[0.05][0] / hits_raw[0.05][1], "pck05": 100 * hits[0.05][0] / hits[0.05][1],
            "pck10_raw": 100 * hits_raw[0.1][0] / hits_raw[0.1][1], "pck10": 100 * hits[0.1][0] / hits[0.1][1]}


def speed(threads: int, frames: int, pairs: int) -> list[str]:
    import torch
    torch.set_num_threads(threads)
    from conftest import smoke_checkpoint

    from posekit.engine.predictor import Predictor
    rows = []
    video = SyntheticVideo(frames, seed=0, people=3, image_size=(320, 240))
    samples = [video[t] for t in range(frames)]
    images = [s.image for s in samples]
    boxes = [[[*b, 1.0] for b in s.boxes] for s in samples]
    with tempfile.TemporaryDirectory() as d:
        for family, extra, use_boxes in (("openpose", [], False),
                                         ("hourglass", ["eval.flip_test=false", "data.input_size=64",
                                                        "data.heatmap_size=16"], True)):
            import contextlib
            import io
            with contextlib.redirect_stdout(io.StringIO()):
                ckpt = smoke_checkpoint(family, Path(d) / family, *extra)
            predictor = Predictor(ckpt)
            bs = 8

            def untracked():
                for i in range(0, frames, bs):
                    predictor(images[i:i + bs], boxes=boxes[i:i + bs] if use_boxes else None, batch_size=bs)

            def tracked():
                for _ in predictor.track(iter(images), boxes=boxes if use_boxes else None, batch_size=bs,
                                         tracker=EVERYONE):
                    pass

            def tracked_smooth():
                for _ in predictor.track(iter(images), boxes=boxes if use_boxes else None, batch_size=bs,
                                         smooth="one_euro", tracker=EVERYONE):
                    pass

            # people found per frame, over frames spread across the video (walkers enter after frame 0)
            people = np.mean([len(r) for r in predictor(images[::20], boxes=boxes[::20] if use_boxes else None)])
            r = paired_ratio(untracked, tracked, pairs=pairs, block=1, warmup=1)
            r2 = paired_ratio(untracked, tracked_smooth, pairs=pairs, block=1, warmup=0)
            what = f"{family} ({'top-down, GT boxes' if use_boxes else 'bottom-up'}; {people:.1f} people/frame)"
            rows.append(f"| {what} | {frames} | {threads} | {frames / r['a_s']:.1f} | {frames / r['b_s']:.1f} | "
                        f"{fmt_ratio(r)} | {frames / r2['b_s']:.1f} | {fmt_ratio(r2)} | {r['pairs']} |")
    return rows


def tracker_cost(frames: int) -> float:
    """Microseconds per frame of PoseTracker.update alone (3 people, smoothing on)."""
    video = SyntheticVideo(frames, seed=0, people=3, pillar_frames=3)
    rng = np.random.default_rng(0)
    dets = [detections(video[t], rng, "openpose", 2.0, 0.05) for t in range(frames)]
    tracker = PoseTracker(COCO, smooth={})
    start = time.perf_counter()
    for kp, sc, _, _ in dets:
        tracker.update(kp, sc)
    return 1e6 * (time.perf_counter() - start) / frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--noise", type=float, default=2.0, help="keypoint noise, px (sigma)")
    ap.add_argument("--drop", type=float, default=0.05, help="chance a visible joint is not detected")
    ap.add_argument("--min-cutoff", type=float, default=0.5)
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--speed-frames", type=int, default=300)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    smooth = {"min_cutoff": args.min_cutoff, "beta": args.beta}
    print(f"quality: {args.seeds} videos x {args.frames} frames, 3 walkers (2 crossing, 1 behind a 3-frame pillar), "
          f"GT-with-noise detections (sigma {args.noise} px, {args.drop:.0%} joints dropped), One-Euro "
          f"min_cutoff={args.min_cutoff} beta={args.beta}")
    print("| detections | IDSW / 100 track-frames | IDSW (track-frames) | IDF1 mean (min) | jitter raw -> smoothed "
          "(GT) px/frame^2 | cut | PCK@0.05 raw -> smoothed | PCK@0.1 raw -> smoothed |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in ("openpose", "topdown"):
        q = quality(mode, seeds=args.seeds, frames=args.frames, noise=args.noise, drop=args.drop, smooth=smooth)
        print(f"| {mode} | {q['idsw_per_100']:.2f} | {q['idsw']} ({q['track_frames']}) | {q['idf1_mean']:.3f} "
              f"({q['idf1_min']:.3f}) | {q['jitter_raw']:.2f} -> {q['jitter_out']:.2f} ({q['jitter_gt']:.2f}) | "
              f"{q['jitter_raw'] / q['jitter_out']:.2f}x | {q['pck05_raw']:.1f} -> {q['pck05']:.1f} | "
              f"{q['pck10_raw']:.1f} -> {q['pck10']:.1f} |", flush=True)
    print(f"tracker alone (3 people, smoothing on): {tracker_cost(300):.0f} us/frame")
    if not args.skip_speed:
        print("| model | frames | threads | untracked fps | tracked fps | tracked/untracked time | tracked+smooth fps "
              "| tracked+smooth/untracked | pairs |")
        print("|---|---|---|---|---|---|---|---|---|")
        for row in speed(args.threads, args.speed_frames, args.pairs):
            print(row, flush=True)


if __name__ == "__main__":
    main()
