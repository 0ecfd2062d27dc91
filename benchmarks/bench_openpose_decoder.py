"""OpenPose decoder speed: vectorised `decode_people` vs the plain-loop reference, and vs the network.

Synthetic maps from `PAFCodec` (368x496 input -> 46x62 maps) with 1, 5, 10, 20, 40, 80 random
people (overlap allowed, small Gaussian noise on every map), decoded with both presets. Reports
the median time of each decoder, the speed-up (goal >= 100x at 20 people), whether both returned
the same people, the candidate pairs (every A-B pair vs those left after the exact pruning), the
paired time ratio 40 people / 20 people (goal <= 2.3x: near-linear in people), and decode time /
`openpose_vgg19` forward time at 368x368 on CPU with torch.set_num_threads(2) (goal <= 0.1).

Run:  .venv/bin/python benchmarks/bench_openpose_decoder.py [--people 1 5 10 20 40 80] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from openpose_reference_decoder import random_people, reference_decode  # noqa: E402
from paired import fmt_ratio, paired_ratio  # noqa: E402

from posekit.codecs.paf import DecoderConfig, PAFCodec, _candidate_pairs, decode_people, find_peaks  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def crowd(codec: PAFCodec, size, n: int, seed: int, noise: float):
    """The maps of n random people, with Gaussian noise on every map (the same for every preset)."""
    rng = np.random.default_rng(seed + n)
    kp = random_people(rng, n, size, height=(100.0, 250.0) if n <= 10 else (60.0, 160.0), drop_leaves=0.2)
    heat, pafs = codec.encode(kp)
    return heat + rng.normal(0, noise, heat.shape), pafs + rng.normal(0, noise, pafs.shape)


def forward_time(threads: int, repeats: int) -> float:
    from posekit.models.openpose import openpose_vgg19
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = openpose_vgg19().eval()
    x = torch.randn(1, 3, 368, 368)
    with torch.no_grad():
        model(x)  # warm-up
        return timed(lambda: model(x), repeats)[0]


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, nargs="+", default=[1, 5, 10, 20, 40, 80])
    ap.add_argument("--noise", type=float, default=0.02, help="std of Gaussian noise added to every map")
    ap.add_argument("--repeats", type=int, default=15, help="repeats of the vectorised decoder (median)")
    ap.add_argument("--ref-repeats", type=int, default=3, help="repeats of the reference decoder (median)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=9, help="pairs of the paired 40/20 people ratio")
    ap.add_argument("--no-forward", action="store_true", help="skip timing the network forward")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    size = (496, 368)
    codec = PAFCodec(input_size=size)
    fwd = None if args.no_forward else forward_time(args.threads, 3)

    lines = [(f"OpenPose decoder, synthetic {size[1]}x{size[0]} input ({codec.map_size[1]}x{codec.map_size[0]} "
              f"maps), noise std {args.noise}, torch threads {args.threads}."), ""]
    if fwd is not None:
        lines.append(f"`openpose_vgg19` forward at 1x3x368x368 (CPU): **{fwd * 1e3:.0f} ms**.")
        lines.append("")
    lines += ["| preset | people | peaks | all pairs | pairs scored | decoded | vectorised ms | reference ms | "
              "speed-up | same people |" + (" decode / forward |" if fwd else ""),
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|" + ("---:|" if fwd else "")]
    ratios = []
    for preset in ("cmu", "mindspore"):
        cfg = DecoderConfig.preset(preset)
        maps = {}
        for n in args.people:
            heat, pafs = maps[n] = crowd(codec, size, n, args.seed, args.noise)
            part, fx, fy, _ = find_peaks(heat[:18].astype(np.float64), cfg, float(codec.stride))
            counts = np.bincount(part, minlength=18)
            starts = np.concatenate([[0], np.cumsum(counts)])
            every = sum(int(counts[a] * counts[b]) for a, b in codec.skeleton.limbs)
            scored = len(_candidate_pairs(pafs.astype(np.float64), codec.skeleton.limbs, counts, starts, fx, fy,
                                          cfg)[0])
            t_vec, (kps, sc) = timed(partial(decode_people, heat, pafs, config=cfg), args.repeats)
            t_ref, (rk, rs) = timed(partial(reference_decode, heat, pafs, config=cfg),
                                    args.ref_repeats if n <= 40 else 1)
            same = kps.shape == rk.shape and np.allclose(kps, rk, atol=1e-9) and np.allclose(sc, rs, atol=1e-9)
            row = (f"| {preset} | {n} | {len(part)} | {every} | {scored} | {len(kps)} | {t_vec * 1e3:.2f} | "
                   f"{t_ref * 1e3:.0f} | {t_ref / t_vec:.0f}x | {'yes' if same else '**NO**'} |")
            if fwd:
                row += f" {t_vec / fwd:.4f} |"
            lines.append(row)
        if 20 in maps and 40 in maps:
            r = paired_ratio(partial(decode_people, *maps[20], config=cfg), partial(decode_people, *maps[40], config=cfg),
                             pairs=args.pairs, block=5)
            ratios.append(f"- {preset}: decode time 40 people / 20 people (paired, {r['pairs']} pairs of 5 calls): "
                          f"**{fmt_ratio(r)}** (goal <= 2.3)")
    if ratios:
        lines += [""] + ratios
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
