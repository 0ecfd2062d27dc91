"""Gaussian heatmap codec: keypoints (input pixels) <-> per-joint heatmaps.

Coordinates are pixel-centre aligned: heatmap cell j covers input pixels [s*j, s*j + s) with
s = input/heatmap, so input u maps to heatmap (u + 0.5) / s - 0.5. With this convention a
horizontal flip of the input is exactly a flip of the heatmap (no one-cell shift hack).

Encoding places an unquantised Gaussian (peak 1) at the sub-pixel position, so the decoder's
error is the decoder's alone: argmax + quarter-cell shift is within ~0.35 cells, DARK
(Zhang et al., CVPR 2020: Taylor expansion of the log heatmap) within a few hundredths.

Decoding is written once in torch (batched, no loop over joints) and used by evaluation,
prediction and the exported ONNX graph; `HeatmapCodec.decode` wraps it for numpy.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from posekit.config import size_wh

__all__ = ["HeatmapCodec", "encode_heatmaps", "decode_heatmaps", "flip_back_heatmaps", "input_to_heatmap",
           "heatmap_to_input", "heatmap_grid", "check_heatmap_model", "heatmaps_of", "flip_test_heatmaps"]

REFINEMENTS = ("none", "shift", "dark")
HEATMAP_STRIDE = 4  # input pixels per heatmap cell of a stride-4 model (the hourglasses), the default grid


def input_to_heatmap(xy, stride_xy):
    """Input-pixel coordinates -> heatmap-cell coordinates (pixel-centre aligned)."""
    return (xy + 0.5) / stride_xy - 0.5


def heatmap_to_input(xy, stride_xy):
    return (xy + 0.5) * stride_xy - 0.5


def encode_heatmaps(keypoints: np.ndarray, visible: np.ndarray, heatmap_size: tuple[int, int], sigma: float,
                    stride_xy: tuple[float, float] | np.ndarray = (1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian targets for (..., K, 2) keypoints in input pixels.

    Returns heatmaps (..., K, H, W) float32 (peak 1 at the sub-pixel position) and weights
    (..., K) float32: 1 for a visible joint whose centre lies on the heatmap or within 3 sigma
    of it (the map then holds the part of its Gaussian that falls on it), else 0 (and a zero map). Fully vectorised over the leading axes and the joints.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    visible = np.asarray(visible)
    if keypoints.shape[-1] < 2 or keypoints.shape[:-1] != visible.shape:
        raise ValueError(f"keypoints {keypoints.shape} and visibility {visible.shape} do not match (…, K, 2) / (…, K)")
    if sigma <= 0:
        raise ValueError(f"heatmap sigma must be positive, got {sigma}")
    w, h = int(heatmap_size[0]), int(heatmap_size[1])
    centre = input_to_heatmap(keypoints[..., :2], np.asarray(stride_xy, dtype=np.float64))
    finite = np.isfinite(centre).all(axis=-1)
    # as MMPose: a joint whose Gaussian's 3-sigma window still overlaps the map (centre up to
    # 3 sigma outside it) is trained on its truncated Gaussian; beyond that it is masked out
    reach = 3 * sigma
    inside = finite & (centre[..., 0] >= -reach) & (centre[..., 0] <= w - 1 + reach) \
        & (centre[..., 1] >= -reach) & (centre[..., 1] <= h - 1 + reach)
    weights = ((visible > 0) & inside).astype(np.float32)
    centre = np.where(finite[..., None], centre, 0.0)
    xs = np.arange(w, dtype=np.float64)
    ys = np.arange(h, dtype=np.float64)
    gx = np.exp(-((xs - centre[..., 0:1]) ** 2) / (2 * sigma ** 2))  # (..., K, W)
    gy = np.exp(-((ys - centre[..., 1:2]) ** 2) / (2 * sigma ** 2))  # (..., K, H)
    maps = (gy[..., :, None] * gx[..., None, :]).astype(np.float32) * weights[..., None, None]
    return maps, weights


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return g


def _gather(flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Values of (N, K, H*W) maps at integer cells (x, y) (clamped to the map)."""
    x = x.clamp(0, width - 1)
    y = y.clamp(0, height - 1)
    return torch.gather(flat, 2, (y * width + x).unsqueeze(-1)).squeeze(-1)


def decode_heatmaps(heatmaps: torch.Tensor, *, refine: str = "shift", stride_xy: tuple[float, float] = (1.0, 1.0),
                    dark_sigma: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K, H, W) heatmaps -> (keypoints (N, K, 2) in input pixels, scores (N, K): the peak value
    minus the map's minimum when that is positive, so a constant map scores 0, not its level).

    refine: "none" (argmax cell), "shift" (0.25 cell toward the higher neighbour in x and y,
    as Newell's code) or "dark" (Taylor refinement on the Gaussian-smoothed log heatmap,
    falling back to "shift" where the local Hessian is not negative definite). Traceable and
    ONNX-exportable; no Python loop over joints or samples.
    """
    if refine not in REFINEMENTS:
        raise ValueError(f"unknown heatmap refinement {refine!r}; choose one of {REFINEMENTS}")
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps must be (N, K, H, W), got shape {tuple(heatmaps.shape)}")
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    peak, index = flat.max(dim=2)
    # the score is the peak's height above the map's floor (when that floor is positive): a flat
    # map has no peak and scores 0 instead of its constant value; Gaussian targets and network
    # maps (floor <= 0) keep score = peak value
    scores = peak - flat.amin(dim=2).clamp(min=0)
    x = index % w
    y = torch.div(index, w, rounding_mode="floor")
    fx, fy = x.to(heatmaps.dtype), y.to(heatmaps.dtype)

    # quarter-cell shift toward the higher neighbour; none on the border (no neighbour there)
    dx = _gather(flat, x + 1, y, w, h) - _gather(flat, x - 1, y, w, h)
    dy = _gather(flat, x, y + 1, w, h) - _gather(flat, x, y - 1, w, h)
    in_x = ((x > 0) & (x < w - 1)).to(heatmaps.dtype)
    in_y = ((y > 0) & (y < h - 1)).to(heatmaps.dtype)
    shift_x = 0.25 * torch.sign(dx) * in_x
    shift_y = 0.25 * torch.sign(dy) * in_y

    if refine == "shift":
        fx, fy = fx + shift_x, fy + shift_y
    elif refine == "dark":
        # DARK's modulation, everywhere (as MMPose's `gaussian_blur`): zero-pad by the kernel
        # radius, blur with a fixed (2*ceil(3 sigma)+1)-tap Gaussian, crop back (conv2d with
        # padding=r does all three), rescale so the map's max is preserved, then take the log.
        # Zero padding is what MMPose does (it pads with zeros before cv2.GaussianBlur); on noisy
        # maps with peaks 1-3 cells from the border replicate/reflect padding measured 3-4x worse
        # (they continue the peak outward and pull the estimate across the border).
        g = _gaussian_kernel(dark_sigma).to(heatmaps.dtype).to(heatmaps.device)
        r = g.numel() // 2
        raw = heatmaps.reshape(n * k, 1, h, w).clamp(min=0)
        blurred = F.conv2d(F.conv2d(raw, g.view(1, 1, 1, -1), padding=(0, r)), g.view(1, 1, -1, 1), padding=(r, 0))
        blurred = blurred * (raw.amax(dim=(2, 3), keepdim=True)
                             / blurred.amax(dim=(2, 3), keepdim=True).clamp(min=1e-10))
        log_blur = torch.log(blurred.clamp(min=1e-10)).reshape(n, k, h * w)

        def at(dx_: int, dy_: int) -> torch.Tensor:
            return _gather(log_blur, x + dx_, y + dy_, w, h)

        c = at(0, 0)
        xp, xm, yp, ym = at(1, 0), at(-1, 0), at(0, 1), at(0, -1)
        gx, gy = 0.5 * (xp - xm), 0.5 * (yp - ym)
        hxx, hyy = xp - 2 * c + xm, yp - 2 * c + ym
        hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
        det = hxx * hyy - hxy * hxy
        ok = (det > 1e-6) & (hxx < 0) & (in_x > 0) & (in_y > 0)
        safe_det = torch.where(ok, det, torch.ones_like(det))
        # offset = -H^{-1} g for the 2x2 Hessian
        ox = -(hyy * gx - hxy * gy) / safe_det
        oy = -(hxx * gy - hxy * gx) / safe_det
        ok = ok & (ox.abs() <= 1.0) & (oy.abs() <= 1.0)
        fx = fx + torch.where(ok, ox, shift_x)
        fy = fy + torch.where(ok, oy, shift_y)

    coords = torch.stack([fx, fy], dim=-1)
    stride = torch.tensor([float(stride_xy[0]), float(stride_xy[1])], dtype=heatmaps.dtype, device=heatmaps.device)
    return heatmap_to_input(coords, stride), scores


def flip_back_heatmaps(heatmaps: torch.Tensor, flip_index) -> torch.Tensor:
    """Heatmaps predicted on a mirrored input -> heatmaps of the original: mirror x, swap left/right."""
    index = torch.as_tensor(np.asarray(flip_index), dtype=torch.long, device=heatmaps.device)
    return torch.index_select(heatmaps.flip(-1), heatmaps.dim() - 3, index)


class HeatmapCodec:
    """Encode/decode pair shared by the dataset (targets) and the model side (keypoints).

    input_size, heatmap_size: (w, h). sigma: Gaussian std in heatmap cells (Newell: 1 at 64x64).
    """

    def __init__(self, input_size=(256, 256), heatmap_size=(64, 64), sigma: float = 1.0, refine: str = "shift"):
        if refine not in REFINEMENTS:
            raise ValueError(f"unknown heatmap refinement {refine!r}; choose one of {REFINEMENTS}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.sigma = float(sigma)
        self.refine = refine
        self.stride = (self.input_size[0] / self.heatmap_size[0], self.input_size[1] / self.heatmap_size[1])

    def encode(self, keypoints: np.ndarray, visible: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(…, K, 3) input-pixel keypoints [x, y, v] (or (…, K, 2) plus `visible` (…, K)) ->
        (heatmaps (…, K, h, w), weights (…, K))."""
        keypoints = np.asarray(keypoints, dtype=np.float64)
        if visible is None:
            if keypoints.shape[-1] < 3:
                raise ValueError("HeatmapCodec.encode: give (…, K, 3) keypoints or a `visible` array")
            visible = keypoints[..., 2]
        return encode_heatmaps(keypoints[..., :2], visible, self.heatmap_size, self.sigma, self.stride)

    def decode(self, heatmaps, *, refine: str | None = None):
        """(N, K, h, w) or (K, h, w) heatmaps (numpy or torch) -> (keypoints (…, K, 2) input px, scores (…, K)).
        Returns the same array type it was given."""
        is_numpy = not torch.is_tensor(heatmaps)
        t = torch.as_tensor(np.asarray(heatmaps, dtype=np.float32)) if is_numpy else heatmaps
        single = t.dim() == 3
        if single:
            t = t.unsqueeze(0)
        kp, sc = decode_heatmaps(t, refine=refine or self.refine, stride_xy=self.stride, dark_sigma=self.sigma)
        if single:
            kp, sc = kp[0], sc[0]
        if is_numpy:
            return kp.cpu().numpy().astype(np.float64), sc.cpu().numpy().astype(np.float64)
        return kp, sc


# --- a recipe's heatmap geometry --------------------------------------------------------------------
def _shown(wh: tuple[int, int]):
    """(W, H) as a recipe would write it: S when square, else [W, H]."""
    return wh[0] if wh[0] == wh[1] else list(wh)


def heatmap_grid(input_size, heatmap_size=None, *, error=ValueError) -> tuple[int, int]:
    """The heatmap (w, h) of recipe sizes `data.input_size` / `data.heatmap_size` (S or [W, H];
    heatmap None: input / HEATMAP_STRIDE). The input must be the same whole multiple of the heatmap
    in width and height (one stride, as the codec's pixel-centre alignment and flip symmetry
    assume); otherwise `error` naming both keys and a heatmap size that fits."""
    w, h = size_wh(input_size, "data.input_size")
    hw, hh = (w // HEATMAP_STRIDE, h // HEATMAP_STRIDE) if heatmap_size is None else \
        size_wh(heatmap_size, "data.heatmap_size")
    if min(hw, hh) < 1 or w % hw or h % hh or w // hw != h // hh:
        example = [w // HEATMAP_STRIDE, h // HEATMAP_STRIDE] if isinstance(input_size, (list, tuple)) \
            else w // HEATMAP_STRIDE
        both = ", the same multiple in width and height" if (w, hw) != (h, hh) else ""
        raise error(f"data.input_size={input_size} must be a multiple of data.heatmap_size="
                    f"{[hw, hh] if heatmap_size is None else heatmap_size}{both} (e.g. data.heatmap_size={example})")
    return hw, hh


def check_heatmap_model(model, codec: HeatmapCodec, model_name: str, *, error=ValueError) -> None:
    """`error` unless `model` (its `stride`, 4 when it declares none, and the 2**`n_low` pooling
    of an hourglass) takes the codec's input size and outputs its heatmap size: a mismatch would
    otherwise fail in the loss after the first forward pass, or train on shifted targets."""
    stride = getattr(model, "stride", HEATMAP_STRIDE)
    need = stride * 2 ** getattr(model, "n_low", 0)
    size = codec.input_size
    if any(v % need for v in size):
        why = f" (stride {stride} x 2**n_low)" if hasattr(model, "n_low") else ""
        raise error(f"data.input_size={_shown(size)} must be divisible by {need} for {model_name}{why}")
    want = (size[0] // stride, size[1] // stride)
    if tuple(codec.heatmap_size) != want:
        raise error(f"data.heatmap_size={_shown(codec.heatmap_size)} must be data.input_size / {stride} = "
                    f"{_shown(want)} for {model_name}")


# --- the decode seam of a heatmap model -------------------------------------------------------------
def heatmaps_of(outputs: torch.Tensor, *, logits: bool = False) -> torch.Tensor:
    """A heatmap model's output as (N, K, H, W) float maps: the last stack of (N, stacks, K, H, W),
    through a sigmoid when the model was trained on logits (BCE)."""
    heat = (outputs[:, -1] if outputs.dim() == 5 else outputs).float()
    return torch.sigmoid(heat) if logits else heat


def flip_test_heatmaps(model, x: torch.Tensor, outputs: torch.Tensor | None, flip_index, *, flip: bool,
                       logits: bool = False) -> torch.Tensor:
    """`heatmaps_of` the model's output on `x` (`outputs` when already computed), averaged with
    the mirrored input's mirrored-back maps when `flip` (the flip test)."""
    heat = heatmaps_of(model(x) if outputs is None else outputs, logits=logits)
    if flip:
        heat = 0.5 * (heat + flip_back_heatmaps(heatmaps_of(model(x.flip(-1)), logits=logits), flip_index))
    return heat
