"""Part affinity fields (OpenPose, Cao et al. 2017): training targets, flip-back and the bottom-up decoder.

Grid convention (the same as `posekit.codecs.heatmap`): map cell i has its centre at input pixel
i*stride + (stride-1)/2 (MindSpore's +0.4375-cell offset at stride 8), and a horizontal flip maps
input x to W-1-x. With W a multiple of the stride a flip of the input is exactly a flip of the maps.

Targets (`PAFCodec.encode`): per part, exp(-d^2 / 2 sigma^2) with sigma in input pixels, combined
over people by max, background = 1 - max over parts; per limb the unit from->to vector on cells
with 0 <= along <= length and |across| <= paf_width (input px), averaged where people overlap,
drawn only when both endpoints are labelled. Each (limb, person) segment is evaluated only on the
cells of its bounding box widened by paf_width, all segments at once; Gaussians are separable.

Decoding (`decode_people`; numpy only, in `posekit.runtime.paf`, which ONNX deployments share) runs at
map resolution instead of on maps upsampled to the input:

- peaks: Gaussian smoothing with sigma = config.smooth_sigma / stride cells (the presets give
  sigma in upsampled-input pixels), 4-neighbour NMS above a threshold, then a sub-cell position
  from a 3-point parabola fit of the raw log heatmap along x and y (exact for a sampled Gaussian);
- candidate pairs: pruned exactly before scoring (`runtime.paf._candidate_pairs`: no PAF support at
  the samples, or longer than the limb's largest field allows), so crowds cost near-linear time;
- limbs: for every remaining pair of every limb at once, the PAF is sampled bilinearly at
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

import numpy as np
import torch

from posekit.runtime.paf import (  # noqa: F401  (the decoder lives in the numpy-only runtime layer)
    CMU_TREE_LIMBS, DecoderConfig, _bilinear_xy, _candidate_pairs, _support_masks, find_peaks, group_people,
    match_limbs, score_limbs)
from posekit.runtime.paf import decode_people as _decode_numpy
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

def cell_centres(n: int, stride: float) -> np.ndarray:
    """Input-pixel coordinates of the centres of n map cells."""
    return np.arange(n, dtype=np.float64) * stride + (stride - 1) / 2.0


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


def _as_numpy(a) -> np.ndarray:
    if torch.is_tensor(a):
        a = a.detach().to("cpu", torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)


def decode_people(heatmaps, pafs, *, stride: float = 8.0, config: DecoderConfig | None = None,
                  skeleton: str | Skeleton = "openpose18") -> tuple[np.ndarray, np.ndarray]:
    """`posekit.runtime.paf.decode_people` on torch tensors or numpy arrays (one image's maps)."""
    return _decode_numpy(_as_numpy(heatmaps), _as_numpy(pafs), stride=stride, config=config or DecoderConfig(),
                         skeleton=skeleton)
