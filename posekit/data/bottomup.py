"""Bottom-up (OpenPose / PAF) training and evaluation pipeline: Samples -> network input + targets + loss weight.

Augmentation follows MindSpore's OpenPose port (DeNA's Chainer code), written as ONE affine matrix
per item (scale, rotation, crop around a person, flip), applied once to the image with warpAffine and
once to the ignore mask, and to the keypoints with `affine_points`:

1. scale U(lo, hi) with lo = clamp(min_box_diag / smallest person diagonal, scale_limits[0], 1) and
   hi = clamp(max_box_diag / largest person diagonal, 1, scale_limits[1]);
2. rotation N(0, rotation_sigma^2) degrees;
3. a crop of the input size around a random person's centre, jittered U(+-center_jitter) input px,
   padded with 127.5 grey (128 in uint8);
4. HSV jitter with p hsv_prob (hue +-10 in OpenCV's 0..179 units, wrapping; sat +-40; val +-30);
5. horizontal flip with p flip_prob, then the openpose18 left/right swap. Targets are encoded after
   the swap, so PAF limbs point the right way without any special casing.

Eval mode: a fixed letterbox (uniform scale, image at the top-left, grey right/bottom padding, as CMU
pads), no randomness. Targets are still encoded, so a validation loss is available.

The ignore mask (crowds + people the OpenPose rule excludes, see `posekit.data.formats.coco`) is
warped with the same matrix (nearest), dilated by a `mask_dilation` square at input scale and
area-resized to the map size (bilinear at an 8x downscale would sample 1 pixel in 64), giving the
loss weight 1 - mask. All randomness comes from `item_rng()`.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from posekit.data.formats.coco import MASK_MIN_AREA, MASK_MIN_KEYPOINTS, coco17_to_openpose18, load_ignore_mask
from posekit.data.transforms import affine_points, crop_affine, item_rng, swap_left_right, warp_image
from posekit.data.sample import person_boxes
from posekit.skeletons import get_skeleton

__all__ = ["BottomUpDataset", "person_stats", "usable_people"]

PAD_VALUE = 127.5


def person_stats(sample) -> tuple[np.ndarray, np.ndarray]:
    """(num_keypoints (P,), area (P,)) of a Sample: from meta when a reader provides them, else
    counted from the visibilities and taken from the boxes (0 without boxes)."""
    kp = sample.keypoints
    p = len(kp)
    nk = sample.meta.get("num_keypoints")
    nk = np.asarray(nk, dtype=np.int64) if nk is not None and len(nk) == p else np.count_nonzero(kp[..., 2] > 0, -1)
    areas = sample.meta.get("areas")
    if areas is not None and len(areas) == p:
        areas = np.asarray(areas, dtype=np.float64)
    elif sample.boxes is not None and len(sample.boxes) == p:
        areas = sample.boxes[:, 2] * sample.boxes[:, 3]
    else:
        areas = np.zeros(p)
    return nk, areas


def usable_people(sample, min_keypoints: int = MASK_MIN_KEYPOINTS, min_area: float = MASK_MIN_AREA) -> np.ndarray:
    """(P,) bool: the people OpenPose trains on (>= min_keypoints labelled and area > min_area)."""
    nk, areas = person_stats(sample)
    return (nk >= min_keypoints) & (areas > min_area)


def _person_boxes(sample) -> np.ndarray:
    """(P, 4) x, y, w, h: the given boxes, else the extent of the labelled keypoints."""
    if sample.boxes is not None and len(sample.boxes) == len(sample.keypoints):
        return sample.boxes
    return person_boxes(sample.keypoints)


class BottomUpDataset(Dataset):
    """Items: ``image`` uint8 (3, H, W) RGB, ``heatmaps`` float32 (19, h, w), ``pafs`` float32 (38, h, w),
    ``weight`` float32 (1, h, w), ``matrix`` float64 (2, 3) original -> input pixels, ``index`` (the
    source index).

    source: a sequence of Samples (a list, a `load_coco_keypoints` result, `SyntheticMultiPerson`);
    one with a cheap ``peek(i)`` (annotations without pixels) is filtered without rendering.
    codec: ``input_size`` (W, H), ``stride``, ``encode((P, 18, 3) input px) -> (heatmaps, pafs)``.
    skeleton: the source's keypoint layout, "coco17" (converted, neck synthesised) or "openpose18".
    drop_unusable (default: train): leave out images with no person of >= mask_min_keypoints
    keypoints and area > mask_min_area; ``dropped`` lists the source indices left out.
    """

    def __init__(self, source, codec, *, train: bool = True, skeleton: str = "coco17",
                 min_box_diag: float = 64.0, max_box_diag: float = 512.0, scale_limits=(0.5, 2.0),
                 rotation_sigma: float = 40.0 / 3.0, center_jitter: float = 40.0, pad_value: float = PAD_VALUE,
                 hsv_prob: float = 0.5, hue: int = 10, saturation: int = 40, value: int = 30,
                 flip_prob: float = 0.5, mask_dilation: int = 16, mask_min_keypoints: int = MASK_MIN_KEYPOINTS,
                 mask_min_area: float = MASK_MIN_AREA, mask_cache_dir=None, drop_unusable: bool | None = None):
        self.source, self.codec, self.train = source, codec, bool(train)
        self.skeleton = get_skeleton(skeleton).name
        if self.skeleton not in ("coco17", "openpose18"):
            raise ValueError(f"skeleton must be 'coco17' or 'openpose18', got {self.skeleton!r}")
        self.flip_skeleton = get_skeleton("openpose18")
        self.input_size = (int(codec.input_size[0]), int(codec.input_size[1]))
        self.stride = int(codec.stride)
        if self.input_size[0] % self.stride or self.input_size[1] % self.stride:
            raise ValueError(f"input size {self.input_size} is not a multiple of the stride {self.stride}")
        self.min_box_diag, self.max_box_diag = float(min_box_diag), float(max_box_diag)
        self.scale_limits = (float(scale_limits[0]), float(scale_limits[1]))
        self.rotation_sigma, self.center_jitter, self.pad_value = float(rotation_sigma), float(center_jitter), \
            float(pad_value)
        self.hsv_prob, self.hue, self.saturation, self.value = float(hsv_prob), int(hue), int(saturation), int(value)
        self.flip_prob = float(flip_prob)
        self.mask_dilation = int(mask_dilation)
        self.mask_min_keypoints, self.mask_min_area = int(mask_min_keypoints), float(mask_min_area)
        self.mask_cache_dir = mask_cache_dir
        drop = self.train if drop_unusable is None else bool(drop_unusable)
        peek = getattr(source, "peek", source.__getitem__)
        self.indices, self.dropped = [], []
        for i in range(len(source)):
            if drop and not usable_people(peek(i), self.mask_min_keypoints, self.mask_min_area).any():
                self.dropped.append(i)
            else:
                self.indices.append(i)

    def __len__(self) -> int:
        return len(self.indices)

    def sample(self, index: int):
        """The source Sample behind item `index` (for metadata such as image_id)."""
        return self.source[self.indices[index]]

    # --- geometry --------------------------------------------------------------------------------

    def eval_matrix(self, width: int, height: int) -> np.ndarray:
        """Letterbox: the largest uniform scale that fits, image at the top-left."""
        s = min(self.input_size[0] / width, self.input_size[1] / height)
        t = 0.5 * s - 0.5  # pixel centres at integers: x -> (x + 0.5) * s - 0.5
        return np.array([[s, 0.0, t], [0.0, s, t]])

    def train_matrix(self, sample, width: int, height: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
        """The item's one matrix (scale, rotation, crop around a person, flip) and whether it mirrors.
        Sizes come from the people trained on (or, lacking them, anyone labelled)."""
        boxes = _person_boxes(sample)
        use = usable_people(sample, self.mask_min_keypoints, self.mask_min_area)
        if not use.any():
            use = np.count_nonzero(sample.keypoints[..., 2] > 0, -1) > 0
        use &= np.hypot(boxes[:, 2], boxes[:, 3]) > 0
        if use.any():
            diag = np.hypot(boxes[use, 2], boxes[use, 3])
            lo = min(max(self.min_box_diag / diag.min(), self.scale_limits[0]), 1.0)
            hi = min(max(self.max_box_diag / diag.max(), 1.0), self.scale_limits[1])
            scale = float(rng.uniform(lo, hi))
            b = boxes[rng.choice(np.flatnonzero(use))]
            center = np.array([b[0] + b[2] / 2, b[1] + b[3] / 2])
        else:
            scale = 1.0
            center = np.array([width / 2.0, height / 2.0])
        center = center + rng.uniform(-self.center_jitter, self.center_jitter, size=2) / scale
        rotation = float(rng.normal(0.0, self.rotation_sigma)) if self.rotation_sigma > 0 else 0.0
        flip = bool(rng.random() < self.flip_prob)
        w_in, h_in = self.input_size
        return crop_affine(center, (w_in / scale, h_in / scale), self.input_size, rotation=rotation, flip=flip), flip

    # --- item ------------------------------------------------------------------------------------

    def _hsv(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Hue/saturation/value shifts in one LUT pass on OpenCV's 8-bit HSV (hue wraps at 180)."""
        dh = int(rng.integers(-self.hue, self.hue + 1))
        ds = int(rng.integers(-self.saturation, self.saturation + 1))
        dv = int(rng.integers(-self.value, self.value + 1))
        ramp = np.arange(256)
        lut = np.stack([(ramp + dh) % 180, np.clip(ramp + ds, 0, 255), np.clip(ramp + dv, 0, 255)], -1)
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        return cv2.cvtColor(cv2.LUT(hsv, lut.astype(np.uint8).reshape(256, 1, 3)), cv2.COLOR_HSV2RGB)

    def _weight(self, sample, matrix: np.ndarray, map_size: tuple[int, int], image_shape) -> np.ndarray:
        mask = load_ignore_mask(sample, self.mask_cache_dir, min_keypoints=self.mask_min_keypoints,
                                min_area=self.mask_min_area)
        if not mask.any():
            return np.ones((1, map_size[1], map_size[0]), np.float32)
        if mask.shape != image_shape:
            raise ValueError(f"ignore mask {mask.shape} does not match the image {image_shape} "
                             f"(image_id {sample.meta.get('image_id')!r}: wrong width/height in the annotations?)")
        warped = warp_image(mask, matrix, self.input_size, border_value=0, interpolation=cv2.INTER_NEAREST)
        if self.mask_dilation > 1:
            warped = cv2.dilate(warped, np.ones((self.mask_dilation, self.mask_dilation), np.uint8))
        small = cv2.resize(warped.astype(np.float32), map_size, interpolation=cv2.INTER_AREA)
        return (1.0 - small)[None].astype(np.float32)

    def __getitem__(self, index: int) -> dict:
        src = self.indices[index]
        sample = self.source[src].load()
        image = sample.image
        height, width = image.shape[:2]
        kp = sample.keypoints
        if self.skeleton == "coco17":
            kp = coco17_to_openpose18(kp) if len(kp) else np.zeros((0, 18, 3))
        if kp.shape[1:] != (18, 3):
            raise ValueError(f"source item {src}: keypoints {sample.keypoints.shape} do not fit {self.skeleton}")
        if self.train:
            rng = item_rng()
            matrix, flip = self.train_matrix(sample, width, height, rng)
        else:
            rng, matrix, flip = None, self.eval_matrix(width, height), False
        out = warp_image(image, matrix, self.input_size, border_value=(self.pad_value,) * 3)
        if rng is not None and self.hsv_prob > 0 and rng.random() < self.hsv_prob:
            out = self._hsv(out, rng)
        moved = affine_points(kp, matrix)
        if flip:
            moved = swap_left_right(moved, self.flip_skeleton)
        moved[moved[..., 2] <= 0] = 0.0
        heatmaps, pafs = self.codec.encode(moved)
        heatmaps = np.asarray(heatmaps, dtype=np.float32)
        pafs = np.asarray(pafs, dtype=np.float32)
        map_size = (heatmaps.shape[-1], heatmaps.shape[-2])
        weight = self._weight(sample, matrix, map_size, (height, width))
        return {"image": torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))),
                "heatmaps": torch.from_numpy(heatmaps), "pafs": torch.from_numpy(pafs),
                "weight": torch.from_numpy(weight), "matrix": torch.from_numpy(matrix.astype(np.float64)),
                "index": src}

    def inputs(self, images: list[np.ndarray]) -> dict:
        """A prediction batch for RGB images with the evaluation geometry (letterbox):
        image (N, 3, H, W) uint8, matrix (N, 2, 3), and the images themselves."""
        crops, matrices = [], []
        for image in images:
            matrix = self.eval_matrix(image.shape[1], image.shape[0])
            crops.append(warp_image(image, matrix, self.input_size, border_value=(self.pad_value,) * 3).transpose(2, 0, 1))
            matrices.append(matrix)
        w, h = self.input_size
        return {"images": list(images),
                "image": torch.from_numpy(np.ascontiguousarray(np.stack(crops))) if crops
                else torch.zeros(0, 3, h, w, dtype=torch.uint8),
                "matrix": torch.from_numpy(np.stack(matrices)) if matrices else torch.zeros(0, 2, 3, dtype=torch.float64)}
