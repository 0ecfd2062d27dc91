"""Dog keypoints (StanfordExtra-24): MobileNetV2 regressor, transfer learning, PCK@bbox.

Data -> `DogPoseDataset` (one affine per sample) -> normalised targets + visibility weights ->
`keypoint_mse` -> model (B, K, 2) in [0, 1] -> codec.decode (input pixels) -> inverse affine
(original pixels) -> PCK@0.1 x max(bbox w, h) and pixel errors over labelled joints.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from posekit.codecs.regression import RegressionCodec
from posekit.config import DataConfig as BaseDataConfig
from posekit.config import EvalConfig as BaseEvalConfig
from posekit.data.stanford_extra import (Augmentation, DogPoseDataset, StanfordExtraSource, base_geometry,
                                         bbox_normalizer, load_split, load_stanford_extra,
                                         resolve_stanford_extra_paths, seeded_split)
from posekit.data.transforms import affine_points, crop_affine, invert_affine, warp_image
from posekit.losses.dogs import keypoint_mse
from posekit.metrics.pck import keypoint_distances, pck
from posekit.skeletons import get_skeleton
from posekit.skeletons.builtin import STANFORD_EXTRA_LABELLED
from posekit.tasks import Task, register_task, unwrap

SKELETON = get_skeleton("stanford_extra24")


@dataclass
class DogsDataConfig(BaseDataConfig):
    dataset: str = "synthetic"  # synthetic | stanford_extra
    root: str | None = None  # StanfordExtra folder (default: the shared real-data samples)
    json: str | None = None  # annotation file (default: root/StanfordExtra_v12.json, else the sample file)
    image_dir: str | None = None  # Stanford Dogs images (default: root/sample_imgs or root/Images)
    train_split: str | None = None  # official split files (.npy indices into the JSON, or .txt)
    val_split: str | None = None
    val_fraction: float = 0.15  # seeded split when no split files are given
    split_seed: int = 0
    train_on_all: bool = False  # train = val = every record (overfitting / smoke runs)
    skip_multiple_dogs: bool = False
    input_size: int = 224
    crop: str = "image"  # image (letterbox, aspect kept) | bbox (square around img_bbox + margin) | resize
    bbox_margin: float = 0.1  # per side, fraction of the box's longer side
    faithful: bool = False  # reference pipeline: stretch, Fliplr(0.3) without swap, +10 deg, unmasked MSE
    augment: bool = True
    flip_prob: float = 0.5
    rotation: float = 30.0
    scale_range: list[float] = field(default_factory=lambda: [0.75, 1.25])
    translate: float = 0.1
    color_jitter: float = 0.2
    # synthetic dogs
    synthetic_train_size: int = 2000
    synthetic_val_size: int = 200
    synthetic_image_size: list[int] = field(default_factory=lambda: [160, 128])
    synthetic_seed: int = 0
    synthetic_occlusion: float = 0.4


@dataclass
class DogsEvalConfig(BaseEvalConfig):
    flip_test: bool = False
    pck_threshold: float = 0.1


def _images_to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


class DecodedRegressor(nn.Module):
    """Export wrapper: (image (B,3,S,S) RGB in [0,1], inv_matrix (B,2,3) input->original pixels)
    -> keypoints (B, K, 2) in original image pixels. Decoding and the inverse affine are in the graph."""

    def __init__(self, model: nn.Module, input_size: int):
        super().__init__()
        self.model = model
        self.register_buffer("scale", torch.tensor([float(input_size), float(input_size)]))

    def forward(self, image: torch.Tensor, inv_matrix: torch.Tensor) -> torch.Tensor:
        xy = self.model(image) * self.scale  # input-frame pixels
        return xy @ inv_matrix[:, :, :2].transpose(1, 2) + inv_matrix[:, None, :, 2]


@register_task
class DogsTask(Task):
    name = "dogs"
    DataConfig = DogsDataConfig
    EvalConfig = DogsEvalConfig
    primary_metric = "pck"
    higher_is_better = True

    # --- data -----------------------------------------------------------------------------------
    def _dataset(self, source, cfg, *, train: bool) -> DogPoseDataset:
        d = cfg.data
        if len(d.scale_range) != 2:
            raise ValueError(f"data.scale_range must be [min, max], got {d.scale_range}")
        aug = Augmentation(flip_prob=d.flip_prob, rotation=d.rotation, scale_range=tuple(d.scale_range),
                           translate=d.translate, color_jitter=d.color_jitter)
        return DogPoseDataset(source, input_size=d.input_size, crop=d.crop, bbox_margin=d.bbox_margin,
                              augment=train and d.augment, augmentation=aug, faithful=d.faithful)

    def build_datasets(self, cfg):
        d = cfg.data
        if d.dataset == "synthetic":
            from posekit.data.synthetic_dogs import SyntheticDogs
            size = tuple(d.synthetic_image_size)
            train_src = SyntheticDogs(d.synthetic_train_size, seed=d.synthetic_seed, image_size=size,
                                      occlusion_prob=d.synthetic_occlusion)
            val_src = train_src if d.train_on_all else SyntheticDogs(
                d.synthetic_val_size, seed=d.synthetic_seed + 10_000, image_size=size,
                occlusion_prob=d.synthetic_occlusion)
        elif d.dataset == "stanford_extra":
            json_path, image_dir = resolve_stanford_extra_paths(d.root, d.json, d.image_dir)
            records = load_stanford_extra(json_path, image_dir)
            if d.skip_multiple_dogs:
                records = [r for r in records if not r.is_multiple_dogs]
            if d.train_on_all:
                train_idx = val_idx = np.arange(len(records))
            elif d.train_split or d.val_split:
                if not (d.train_split and d.val_split):
                    raise ValueError("give both data.train_split and data.val_split (or neither for a seeded split)")
                train_idx, val_idx = load_split(d.train_split, records), load_split(d.val_split, records)
            else:
                train_idx, val_idx = seeded_split(len(records), d.val_fraction, d.split_seed)
            train_src = StanfordExtraSource([records[i] for i in train_idx], image_dir, source=str(json_path))
            val_src = StanfordExtraSource([records[i] for i in val_idx], image_dir, source=str(json_path))
        else:
            raise ValueError(f"data.dataset must be 'synthetic' or 'stanford_extra', got {d.dataset!r}")
        val = self._dataset(val_src, cfg, train=False) if len(val_src) else None
        return self._dataset(train_src, cfg, train=True), val

    # --- training -------------------------------------------------------------------------------
    def training_step(self, model, batch):
        pred = model(_images_to_float(batch["image"]))
        loss = keypoint_mse(pred.float(), batch["target"].to(pred.device).float(),
                            batch["target_weight"].to(pred.device))
        return loss, {"labelled_frac": float(batch["target_weight"].float().mean())}

    def prepare(self, model, train_set, cfg):
        """A planned fine-tune phase needs the backbone in the optimiser from the start (the trainer
        builds it once, from parameters that require gradients): mark the still-frozen backbone
        trainable; it receives no gradients until `on_step` unfreezes it."""
        m = unwrap(model)
        if getattr(m, "unfreeze_at_step", None) is None or not getattr(m, "backbone_frozen", False):
            return
        # under DDP the backbone's parameters get no gradients until the unfreeze step
        self.find_unused_parameters = True
        m.defer_unfreeze()

    def on_step(self, model, step, cfg):
        """Fine-tune phase: unfreeze the backbone once `step` reaches the model's `unfreeze_at_step`
        (its lower learning rate comes from `train.lr_mult: {backbone: ...}`)."""
        m = unwrap(model)
        at = getattr(m, "unfreeze_at_step", None)
        if at is not None and step >= at and getattr(m, "backbone_frozen", False):
            m.unfreeze_backbone()

    # --- inference ------------------------------------------------------------------------------
    @torch.no_grad()
    def _forward_pixels(self, model: nn.Module, images: torch.Tensor, flip_test: bool) -> torch.Tensor:
        """(B, K, 2) keypoints in input-frame pixels, optionally averaged with the mirrored input."""
        s_w, s_h = images.shape[-1], images.shape[-2]
        codec = RegressionCodec((s_w, s_h))
        xy = codec.decode(model(images).float())
        if flip_test:
            flipped = codec.decode(model(torch.flip(images, dims=[-1])).float())
            flipped = flipped[:, torch.as_tensor(SKELETON.flip_index, device=flipped.device)]
            flipped[..., 0] = (s_w - 1) - flipped[..., 0]  # torch.flip maps pixel x to W-1-x
            xy = (xy + flipped) / 2
        return xy

    @torch.no_grad()
    def evaluate(self, model, dataset, cfg):
        model.eval()
        device = next(model.parameters()).device
        n = len(dataset) if cfg.eval.max_samples is None else min(len(dataset), cfg.eval.max_samples)
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(n)),
                                             batch_size=cfg.eval.batch_size, shuffle=False, collate_fn=self.collate)
        preds, gts, boxes, losses = [], [], [], []
        for batch in loader:
            images = _images_to_float(batch["image"]).to(device)
            xy = self._forward_pixels(model, images, cfg.eval.flip_test).cpu().double().numpy()
            preds.append(affine_points(xy, batch["inv_matrix"].numpy()))
            gts.append(batch["keypoints"].numpy())
            boxes.append(batch["bbox"].numpy())
            target_pred = torch.from_numpy(xy / images.shape[-1]).float()
            losses.append(float(keypoint_mse(target_pred, batch["target"].float(), batch["target_weight"])) * len(xy))
        pred, gt, box = np.concatenate(preds), np.concatenate(gts), np.concatenate(boxes)
        return self.metrics(pred, gt, box, threshold=cfg.eval.pck_threshold) | {"loss": sum(losses) / max(n, 1)}

    @staticmethod
    def metrics(pred: np.ndarray, gt: np.ndarray, bbox: np.ndarray, *, threshold: float = 0.1) -> dict:
        """PCK@threshold x max(bbox w, h) and mean pixel error, per keypoint and overall, in original
        image pixels over labelled joints (v > 0) only."""
        visible = gt[..., 2] > 0
        res = pck(pred, gt, visible, bbox_normalizer(bbox), threshold)
        dist = keypoint_distances(pred, gt)
        out = {"pck": res["mean"], "mean_px_error": float(dist[visible].mean()) if visible.any() else float("nan"),
               "num_samples": float(len(gt)), "num_joints": float(visible.sum())}
        for j, name in enumerate(SKELETON.keypoints):
            if res["counts"][j]:
                out[f"pck/{name}"] = float(res["per_joint"][j])
                out[f"px_error/{name}"] = float(dist[visible[:, j], j].mean())
        return out

    def _input_matrix(self, image: np.ndarray, box, cfg) -> np.ndarray:
        crop = "resize" if cfg.data.faithful else cfg.data.crop
        if box is not None and crop != "resize":
            crop = "bbox"  # a given box always wins
        elif crop == "bbox" and box is None:
            crop = "image"  # no box: the whole image, aspect kept
        center, size = base_geometry(image.shape, box, crop, cfg.data.bbox_margin)
        s = cfg.data.input_size
        return crop_affine(center, size, (s, s))

    @torch.no_grad()
    def predict(self, model, inputs, cfg, *, boxes=None, paths=None, **kwargs):
        """RGB uint8 images (or paths) -> one Results per image, keypoints in the image's own pixels.
        `boxes` (one [x, y, w, h] or None per image) crops a square around each dog (data.bbox_margin);
        without a box the whole image is letterboxed (or stretched, for the faithful recipe)."""
        from posekit.data.io import load_inputs
        from posekit.results import Results

        model.eval()
        device = next(model.parameters()).device
        s = cfg.data.input_size
        pad = (0, 0, 0) if cfg.data.faithful else (124, 116, 104)
        images, names = load_inputs(inputs, paths)
        mats = [self._input_matrix(item, None if boxes is None else boxes[i], cfg) for i, item in enumerate(images)]
        results = []
        for start in range(0, len(images), max(1, cfg.eval.batch_size)):
            chunk = range(start, min(len(images), start + max(1, cfg.eval.batch_size)))
            batch = np.stack([warp_image(images[i], mats[i], (s, s), border_value=pad) for i in chunk])
            tensor = torch.from_numpy(batch).permute(0, 3, 1, 2).to(device).float().div_(255.0)
            xy = self._forward_pixels(model, tensor, cfg.eval.flip_test).cpu().double().numpy()
            for k, i in enumerate(chunk):
                kp = affine_points(xy[k], invert_affine(mats[i]))
                scores = np.zeros(SKELETON.num_keypoints)
                scores[list(STANFORD_EXTRA_LABELLED)] = 1.0  # joints 20-23 are never trained
                box = None if boxes is None or boxes[i] is None else np.asarray(boxes[i], float)[None]
                results.append(Results(keypoints=kp[None], scores=scores[None], skeleton=SKELETON, boxes=box,
                                       image=images[i], path=names[i]))
        return results

    def export_module(self, model, cfg):
        s = cfg.data.input_size
        wrapper = DecodedRegressor(unwrap(model), s).eval()
        image = torch.rand(2, 3, s, s)
        # example: a 640x480 photo letterboxed into the input
        m = invert_affine(crop_affine((320, 240), (640, 640), (s, s)))
        inv = torch.from_numpy(np.stack([m, m])).float()
        dyn = {"image": {0: "batch"}, "inv_matrix": {0: "batch"}, "keypoints": {0: "batch"}}
        return wrapper, (image, inv), ["image", "inv_matrix"], ["keypoints"], dyn

    def demo(self, model, dataset, cfg, out_dir):
        """Overlays of the first few samples: prediction (left) beside ground truth (right)."""
        from posekit.data.io import write_image
        from posekit.viz import draw_skeleton

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        source = dataset.source
        for i in range(min(4, len(dataset))):
            sample = source[i]
            box = sample.bbox if cfg.data.crop == "bbox" else None
            res = self.predict(model, [sample.image], cfg, boxes=[box])[0]
            gt = sample.keypoints
            gt_img = draw_skeleton(sample.image, gt[None, :, :2], (gt[:, 2] > 0)[None].astype(float), SKELETON,
                                   score_threshold=0.5)
            path = out_dir / f"dogs_demo_{i}.png"
            write_image(path, np.concatenate([res.plot(score_threshold=0.5), gt_img], axis=1))
            paths.append(path)
        return paths
