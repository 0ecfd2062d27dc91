"""Pipeline of the unsupervised-landmark family (FSE): whole images -> fixed-size square crops.

    Sample (any size) -> resize to `resize`^2 (INTER_AREA, aspect ratio NOT kept, as the FSE
    reference does with CelebA's 178x218) -> crop `size`^2 at `offset` -> item

An item is {"image": uint8 (3, S, S) RGB, "keypoints": float32 (P, 3) annotated points in the
crop frame (v = 0 where the source has none), "matrix": float64 (2, 3) original -> crop,
"index"}. There is no random augmentation here: the training pairs are warped on the model's
device by the family. An evaluation split can add a fixed warp per item (`equivariance`), so a
validation equivariance error is the same number at every evaluation: "warped" (the warped crop)
and "warped_centers" (where the given points, e.g. score-map cell centres, land under the warp).

Pixel centres sit at integer coordinates: resizing maps x to (x + 0.5) * R / W - 0.5.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from posekit.data.sample import Sample
from posekit.runtime.landmarks import resize_crop, resize_crop_geometry

__all__ = ["LandmarkCrops", "crop_geometry", "celeba_minus_mafl_test", "existing_images"]


crop_geometry = resize_crop_geometry  # its home is the numpy runtime (ONNX deployments crop the same way)


class LandmarkCrops(torch.utils.data.Dataset):
    """`source[i]` -> Sample (image or image_path, keypoints (1, P, 3) or none) -> crop item.

    `equivariance = (sample_warp, points, seed)`: `sample_warp(generator)` returns a one-item
    `posekit.ops.tps.TPSWarp` on the crop; item i uses `torch.Generator().manual_seed(seed + i)`."""

    def __init__(self, source, *, size: int = 128, resize: int | None = 146, offset: int | None = None,
                 num_points: int = 5, equivariance: tuple[Callable, torch.Tensor, int] | None = None):
        self.source, self.size, self.resize, self.offset = source, int(size), resize, offset
        self.num_points = int(num_points)
        self.equivariance = equivariance

    def __len__(self) -> int:
        return len(self.source)

    def crop(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 (S, S, 3) crop, a view into the resized image, 2x3 original -> crop matrix) of an RGB image."""
        return resize_crop(image, self.size, self.resize, self.offset)

    def _points(self, sample: Sample, matrix: np.ndarray) -> np.ndarray:
        out = np.zeros((self.num_points, 3), np.float32)
        kps = sample.keypoints
        if kps.shape[0] and kps.shape[1]:
            if kps.shape[1] != self.num_points:
                raise ValueError(f"expected {self.num_points} annotated points per image, got {kps.shape[1]}")
            p = kps[0]
            out[:, :2] = p[:, :2] @ matrix[:, :2].T + matrix[:, 2]
            out[:, 2] = p[:, 2]
        return out

    def item(self, image: np.ndarray, sample: Sample | None = None, index: int = 0) -> dict:
        crop, matrix = self.crop(image)
        item = {"image": torch.from_numpy(crop).permute(2, 0, 1).contiguous(),
                "keypoints": torch.from_numpy(self._points(sample, matrix) if sample is not None else
                                              np.zeros((self.num_points, 3), np.float32)),
                "matrix": torch.from_numpy(matrix), "index": index}
        if self.equivariance is not None:
            item.update(self._fixed_warp(item["image"], index))
        return item

    def _fixed_warp(self, image: torch.Tensor, index: int) -> dict:
        # one item's warp is many tiny ops: a single thread (as in a DataLoader worker) avoids
        # thread-pool overhead, which is 10x the work on a loaded machine
        sample_warp, points, seed = self.equivariance
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            warp = sample_warp(torch.Generator().manual_seed(int(seed) + index))
            warped = warp.warp_image(image[None].float())[0]
            return {"warped": warped.round().clamp(0, 255).to(torch.uint8),
                    "warped_centers": warp.warp_points(points[None].double())[0].float()}
        finally:
            torch.set_num_threads(threads)

    def __getitem__(self, index: int) -> dict:
        sample = self.source[index].load()
        return self.item(sample.image, sample, int(index))

    def inputs(self, images: list[np.ndarray], *, as_crops: bool = False) -> dict:
        """A batch from raw RGB images, cropped like the evaluation items (`as_crops`: the images
        already are S x S network crops, identity matrix), plus "images" (the originals) for Results."""
        items = []
        for image in images:
            if as_crops:
                if image.shape[:2] != (self.size, self.size):
                    raise ValueError(f"as_crops needs {self.size}x{self.size} images, got {image.shape[:2]}")
                items.append({"image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous(),
                              "matrix": torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64)})
            else:
                crop, matrix = self.crop(image)
                items.append({"image": torch.from_numpy(crop).permute(2, 0, 1).contiguous(),
                              "matrix": torch.from_numpy(matrix)})
        batch = torch.utils.data.default_collate(items) if items else {}
        batch["images"] = list(images)
        return batch


def celeba_minus_mafl_test(root, *, landmarks_file=None, image_dir=None,
                           skip_missing_images: bool = False) -> list[Sample]:
    """The paper's unsupervised training set: every image of the CelebA landmark file (the list
    of all 202,599 aligned images) except the 1,000 MAFL test images, with their 5 points.
    `skip_missing_images` drops entries whose file is absent (e.g. the shared 6-image excerpt)."""
    from pathlib import Path

    from posekit.data.formats.celeba import celeba_samples, read_celeba_landmarks, read_name_list
    root = Path(root)
    test_list = next((p for p in (root / "MAFL" / "testing.txt", root / "testing.txt") if p.is_file()), None)
    if test_list is None:
        raise FileNotFoundError(f"no MAFL test list under {root} (MAFL/testing.txt): it is needed to exclude "
                                "the test faces from training")
    if landmarks_file is None:
        landmarks_file = next((root / n for n in ("list_landmarks_align_celeba.txt",
                                                   "Anno/list_landmarks_align_celeba.txt",
                                                   "list_landmarks_align_celeba_excerpt.txt")
                               if (root / n).is_file()), None)
        if landmarks_file is None:
            raise FileNotFoundError(f"no CelebA landmark file under {root}")
    excluded = set(read_name_list(test_list))
    names = [n for n in read_celeba_landmarks(landmarks_file) if n not in excluded]
    samples = celeba_samples(landmarks_file, Path(image_dir) if image_dir else root / "img_align_celeba", names=names)
    return existing_images(samples) if skip_missing_images else samples


def existing_images(samples: list[Sample]) -> list[Sample]:
    """The samples whose image file exists (in-memory images always do)."""
    return [s for s in samples if s.image is not None or (s.image_path is not None and s.image_path.is_file())]
