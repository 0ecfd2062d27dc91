"""The top-down pipeline: one person per item, one affine crop, the family's codec for targets.

Every single-person family (the dogs regressor, the stacked hourglass, a user's own keypoints)
uses this one class. A source yields `Sample`s (P = 1) in the original image frame; the crop is
one 2x3 matrix (crop rule + augmentation), the same matrix moves the keypoints, and it travels
in the item so predictions go back to the original frame with its inverse.

Item schema (every top-down family):
    image          (3, H, W) uint8 RGB crop (input_size: S for S x S, or (W, H))
    target, target_weight   the codec's encoding of the crop-frame keypoints
    matrix         (2, 3) float64, original -> crop
    keypoints      (K, 3) float64 ground truth in the original frame (x, y, v)
    box            (4,) float64 the sample's person box (NaN when it has none)
    <meta keys>    float64 scalars the metric needs (e.g. head_size), from `Sample.meta`
    index          position in the source

RNG: `item_rng()` (torch-seeded, per item); nothing touches numpy's global RNG.

Reduced decode (`reduced_decode=True`): when a source leaves the image on disk (a JPEG path) and
the crop box is at least 2x (4x) the input size, the JPEG is decoded at 1/2 (1/4) size, which
is several times cheaper than the full frame, and the crop matrix is composed with the
reduced -> original pixel map (pixel j of the reduced image covers original pixels
[r*j, r*j + r), centre r*j + (r - 1)/2). `matrix` (original -> crop) and so the keypoint targets
are unchanged; the image is the crop of a pre-filtered frame (less aliasing, not bit-equal).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from posekit.data.sample import Sample
from posekit.data.transforms import (affine_points, color_jitter, compose_affine, crop_affine, item_rng, warp_image)
from posekit.runtime.geometry import to_original_frame as runtime_to_original_frame
from posekit.skeletons import Skeleton, get_skeleton

CROP_MODES = ("box", "image", "resize")
REDUCTIONS = (4, 2)  # JPEG scaled decoding factors tried, largest first
_REDUCIBLE = (".jpg", ".jpeg", ".jpe")


def decode_reduction(matrix: np.ndarray) -> int:
    """The largest JPEG reduction r in REDUCTIONS with a crop box >= r x the output size (in
    every direction of the 2x3 `matrix`), else 1."""
    stretch = float(np.linalg.svd(np.asarray(matrix, np.float64)[:, :2], compute_uv=False)[0])
    source_px = 1.0 / stretch if stretch > 0 else 0.0  # original pixels per output pixel
    return next((r for r in REDUCTIONS if source_px >= r), 1)


def reduced_to_original(r: int) -> np.ndarray:
    """2x3 map from a 1/r decoded image's pixels to the original's (pixel-centre aligned)."""
    return np.array([[r, 0.0, (r - 1) / 2.0], [0.0, r, (r - 1) / 2.0]])


def read_reduced(path, reduction: int) -> tuple[np.ndarray, int]:
    """(RGB image decoded at 1/reduction, the reduction actually used): full size when
    `data.io.read_image` has no `reduction` yet."""
    from posekit.data.io import read_image
    if reduction > 1:
        try:
            return read_image(path, reduction=reduction), reduction
        except TypeError:
            pass
    return read_image(path), 1


@dataclass
class CropRule:
    """Which region of the original image fills the network input.

    box: the person box grown to the input's aspect ratio a = W / H (MMPose's rule), then x
    `padding`: width padding x max(w, h a), height that / a (a square of padding x the longer
    side for a square input), centred on the box;
    image: the whole image letterboxed to the input's aspect ratio (aspect kept);
    resize: the whole image stretched to the input (aspect NOT kept; the keras-io reference)."""
    mode: str = "box"
    padding: float = 1.0

    def __post_init__(self):
        if self.mode not in CROP_MODES:
            raise ValueError(f"crop mode must be one of {CROP_MODES}, got {self.mode!r}")
        if not self.padding > 0:
            raise ValueError(f"crop padding must be positive, got {self.padding}")

    def region(self, image_shape, box, aspect: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(centre (x, y), size (w, h)) in pixels for an input of aspect ratio `aspect` (W / H);
        pixel centres sit at integer coordinates, so a box [x, y, w, h] is centred on
        (x + w/2 - 0.5, y + h/2 - 0.5)."""
        h, w = image_shape[:2]
        aspect = float(aspect)
        mode = self.mode
        if mode == "box" and (box is None or not np.isfinite(np.asarray(box, float)).all()):
            mode = "image"  # no box: the whole image, aspect kept
        if mode == "image":
            side = float(max(w, h * aspect))
            return np.array([w / 2.0 - 0.5, h / 2.0 - 0.5]), np.array([side, side / aspect])
        if mode == "resize":
            return np.array([w / 2.0 - 0.5, h / 2.0 - 0.5]), np.array([float(w), float(h)])
        x, y, bw, bh = (float(v) for v in box)
        if bw <= 0 or bh <= 0:
            raise ValueError(f"person box must be [x, y, w, h] with positive w, h; got {list(box)}")
        side = max(bw, bh * aspect) * self.padding
        return np.array([x + bw / 2.0 - 0.5, y + bh / 2.0 - 0.5]), np.array([side, side / aspect])


@dataclass
class TopDownAugment:
    """Training augmentation, drawn in this order: scale, rotation, shift, flip, colour.

    scale: the crop side x U(lo, hi) (> 1 zooms out); rotation: U(+-r) degrees with probability
    `rotation_prob`; translate: U(+-t) x the crop side; flip: with the skeleton's left/right swap;
    channel_scale: each channel x U(1 +- c) (Newell); color_jitter: brightness/contrast/saturation.
    `reference="keras_dogs"` replaces all of it by the keras-io dog recipe: Fliplr(0.3) WITHOUT
    the left/right swap, then Sometimes(0.3) a fixed 10 degree clockwise (on screen) rotation with
    zoom U(0.5, 0.7)."""
    scale: tuple[float, float] = (1.0, 1.0)
    rotation: float = 0.0
    rotation_prob: float = 1.0
    translate: float = 0.0
    flip_prob: float = 0.0
    channel_scale: float = 0.0
    color_jitter: float = 0.0
    reference: str | None = None

    def __post_init__(self):
        if self.reference not in (None, "keras_dogs"):
            raise ValueError(f"unknown reference augmentation {self.reference!r}; known: keras_dogs")

    @classmethod
    def from_data_config(cls, d) -> "TopDownAugment":
        """Newell's augmentation as a data section gives it: `scale_factor` (side x U(1 +- f)),
        `rotation` with `rotation_prob`, `flip` (half the items), `color_scale` and, where the
        section has it, `translate`."""
        return cls(scale=(1 - d.scale_factor, 1 + d.scale_factor), rotation=d.rotation, rotation_prob=d.rotation_prob,
                   translate=getattr(d, "translate", 0.0), flip_prob=0.5 if d.flip else 0.0,
                   channel_scale=d.color_scale)


class TopDownDataset(torch.utils.data.Dataset):
    """Single-person items (see the module docstring) from a source of `Sample`s."""

    def __init__(self, source, codec, *, skeleton: str | Skeleton, input_size: int | tuple[int, int],
                 crop: CropRule | None = None,
                 augment: TopDownAugment | None = None, pad_value=(0, 0, 0), meta_keys: tuple[str, ...] = (),
                 reduced_decode: bool = False):
        self.source, self.codec = source, codec
        self.skeleton = get_skeleton(skeleton)
        w, h = (input_size, input_size) if np.isscalar(input_size) else input_size
        self.input_size = (int(w), int(h))  # (W, H)
        if min(self.input_size) < 1:
            raise ValueError(f"input_size must be positive, got {input_size}")
        self.crop = crop or CropRule()
        self.augment = augment
        self.pad_value = tuple(pad_value)
        self.meta_keys = tuple(meta_keys)
        self.reduced_decode = bool(reduced_decode)

    def __len__(self) -> int:
        return len(self.source)

    def crop_matrix(self, image_shape, box, rng: np.random.Generator | None = None, *,
                    crop: CropRule | None = None) -> tuple[np.ndarray, bool]:
        """(2x3 original -> input matrix, whether the keypoints must be left/right swapped)."""
        out = self.input_size
        center, size = (crop or self.crop).region(image_shape, box, aspect=out[0] / out[1])
        a = self.augment
        if rng is None or a is None:
            return crop_affine(center, size, out), False
        if a.reference == "keras_dogs":
            m = crop_affine(center, size, out)
            mid = (out[0] / 2 - 0.5, out[1] / 2 - 0.5)
            if rng.random() < 0.3:  # imgaug Fliplr(0.3): mirrored, labels NOT swapped
                m = compose_affine(crop_affine(mid, out, out, flip=True), m)
            if rng.random() < 0.3:  # Sometimes(0.3, Affine(rotate=10, scale=(0.5, 0.7)))
                zoom = rng.uniform(0.5, 0.7)
                # imgaug's positive angle turns the image clockwise on screen (y down: a point
                # right of the centre moves down); crop_affine's positive angle is counter-clockwise
                m = compose_affine(crop_affine(mid, (out[0] / zoom, out[1] / zoom), out, rotation=-10.0), m)
            return m, False
        size = size * rng.uniform(*a.scale)
        rotation = 0.0
        if a.rotation and rng.random() < a.rotation_prob:
            rotation = rng.uniform(-a.rotation, a.rotation)
        shift = rng.uniform(-a.translate, a.translate, size=2) * size if a.translate else np.zeros(2)
        flip = bool(rng.random() < a.flip_prob)
        return crop_affine(center + shift, size, out, rotation=rotation, flip=flip), flip

    def crop_image(self, image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        return warp_image(image, matrix, self.input_size, border_value=self.pad_value)

    def _reducible(self, sample: Sample, box) -> bool:
        """A JPEG still on disk, cropped around a valid box (the crop does not need the image size)."""
        return (self.reduced_decode and sample.image is None and sample.image_path is not None
                and Path(sample.image_path).suffix.lower() in _REDUCIBLE and self.crop.mode == "box"
                and box is not None and bool(np.isfinite(np.asarray(box, float)).all()))

    def __getitem__(self, i: int) -> dict:
        sample: Sample = self.source[i]
        rng = item_rng() if self.augment is not None else None
        box = sample.boxes[0] if sample.boxes is not None and len(sample.boxes) else None
        if self._reducible(sample, box):
            matrix, swap = self.crop_matrix((0, 0), box, rng)  # box crops ignore the image size
            image, r = read_reduced(sample.image_path, decode_reduction(matrix))
            crop = self.crop_image(image, compose_affine(matrix, reduced_to_original(r)) if r > 1 else matrix)
        else:
            sample = sample.load()
            matrix, swap = self.crop_matrix(sample.image.shape, box, rng)
            crop = self.crop_image(sample.image, matrix)
        if rng is not None and self.augment.reference is None:
            a = self.augment
            if a.channel_scale or a.color_jitter:
                crop = color_jitter(crop, rng, brightness=a.color_jitter, contrast=a.color_jitter,
                                    saturation=a.color_jitter, channel_scale=a.channel_scale)
        gt = sample.keypoints[0]
        moved = affine_points(gt, matrix)
        if swap:
            moved = moved[self.skeleton.flip_index]
        target, weight = self.codec.encode(moved)
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))),
            "target": torch.from_numpy(np.asarray(target)),
            "target_weight": torch.from_numpy(np.asarray(weight)),
            "matrix": torch.from_numpy(matrix.astype(np.float64)),
            "keypoints": torch.from_numpy(gt.astype(np.float64)),
            "box": torch.from_numpy(np.asarray(box if box is not None else [np.nan] * 4, dtype=np.float64)),
            "index": i,
        }
        for key in self.meta_keys:
            item[key] = torch.tensor(float(sample.meta.get(key, np.nan)), dtype=torch.float64)
        return item

    def inputs(self, images: list[np.ndarray], boxes: list | None = None, *, padding: float | None = None) -> dict:
        """A prediction batch for RGB images (one person box or None per image), built with the
        evaluation geometry: image (N, 3, H, W) uint8 and matrix (N, 2, 3)."""
        if boxes is not None and len(boxes) != len(images):
            raise ValueError(f"got {len(boxes)} boxes for {len(images)} images (one box or None per image)")
        crop = CropRule(self.crop.mode, padding if padding is not None else self.crop.padding)
        crops, matrices = [], []
        for n, image in enumerate(images):
            box = None if boxes is None else boxes[n]
            if box is not None:
                box = np.asarray(box, dtype=np.float64).reshape(-1)
                if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= 0 or box[3] <= 0:
                    raise ValueError(f"person box must be 4 finite numbers [x, y, w, h] with positive w, h; "
                                     f"got {boxes[n]!r}")
            matrix, _ = self.crop_matrix(image.shape, box, None, crop=crop)
            crops.append(self.crop_image(image, matrix).transpose(2, 0, 1))
            matrices.append(matrix)
        w, h = self.input_size
        return {"images": list(images),
                "image": torch.from_numpy(np.ascontiguousarray(np.stack(crops))) if crops
                else torch.zeros(0, 3, h, w, dtype=torch.uint8),
                "matrix": torch.from_numpy(np.stack(matrices)) if matrices else torch.zeros(0, 2, 3, dtype=torch.float64),
                # without a box the prediction is for the whole image, which is its box
                "box": torch.tensor([list(b) if b is not None else [0.0, 0.0, float(im.shape[1]), float(im.shape[0])]
                                     for b, im in zip(boxes or [None] * len(images), images)],
                                    dtype=torch.float64).reshape(-1, 4)}


def to_original_frame(keypoints_input: torch.Tensor | np.ndarray, matrices) -> np.ndarray:
    """(N, K, 2) crop-frame points -> original-frame points with each item's inverse matrix."""
    kp = keypoints_input.detach().double().cpu().numpy() if torch.is_tensor(keypoints_input) else \
        np.asarray(keypoints_input, np.float64)
    m = matrices.detach().double().cpu().numpy() if torch.is_tensor(matrices) else np.asarray(matrices, np.float64)
    return runtime_to_original_frame(kp, m)  # the numpy-only implementation ONNX deployments run
