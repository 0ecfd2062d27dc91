"""Dog keypoints (StanfordExtra-24): MobileNetV2 keypoint regressor, transfer learning, PCK@bbox.

    Sample (data.formats.stanford_extra or data.synthetic.dogs) -> top-down crop (data.topdown)
    -> RegressionCodec.encode (normalised targets + visibility weights) -> model (B, K, 2) in
    [0, 1] -> masked_coordinate_mse. forward_decode: codec.decode (crop pixels), optional flip
    test -> postprocess (inverse affine) -> Results -> PCK@0.1 x max(bbox w, h) (mmpose style,
    the primary metric), PCK@0.15 x sqrt(segmentation area) (the StanfordExtra/WLDO protocol),
    pixel errors. Every PCK is in percent.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from posekit.codecs.regression import RegressionCodec, flip_test_coordinates
from posekit.config import DataConfig, EvalConfig, LossConfig
from posekit.data.formats.stanford_extra import (PAD_VALUE, StanfordExtraSource, decode_seg, load_split,
                                                 load_stanford_extra, resolve_stanford_extra_paths, seeded_split)
from posekit.data.topdown import CropRule, TopDownAugment, TopDownDataset
from posekit.families.base import Evaluator, ExportSpec, Task, register_task
from posekit.losses.regression import masked_coordinate_mse
from posekit.metrics.pck import bbox_normalizer, keypoint_distances, pck, per_image_pck, segmentation_normalizer
from posekit.models import unwrap
from posekit.results import Results
from posekit.runtime.dogs import dog_outputs
from posekit.skeletons import get_skeleton

SKELETON = get_skeleton("stanford_extra24")
# WLDO's part groups (the joints StanfordExtra labels; eyes, withers and throat never are)
_J = {name: i for i, name in enumerate(SKELETON.keypoints)}
SEG_PCK_GROUPS = {
    "legs": [_J[f"{side}_{end}_{part}"] for side in ("left", "right") for end in ("front", "rear")
             for part in ("paw", "middle", "top")],
    "tail": [_J["tail_start"], _J["tail_end"]],
    "ears": [_J["left_ear_base"], _J["right_ear_base"], _J["left_ear_tip"], _J["right_ear_tip"]],
    "face": [_J["nose"], _J["chin"]],
}


@dataclass
class DogsDataConfig(DataConfig):
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
    scale_range: list[float] = field(default_factory=lambda: [0.8, 1.333])  # crop side x U(lo, hi)
    translate: float = 0.1
    color_jitter: float = 0.2
    # synthetic dogs
    synthetic_train_size: int = 2000
    synthetic_val_size: int = 200
    synthetic_image_size: list[int] = field(default_factory=lambda: [160, 128])
    synthetic_seed: int = 0
    synthetic_occlusion: float = 0.4


@dataclass
class DogsLossConfig(LossConfig):
    masked: bool = True  # weight joints by visibility; false = the reference's plain MSE over all 24


@dataclass
class DogsEvalConfig(EvalConfig):
    flip_test: bool = False
    pck_threshold: float = 0.1  # mmpose-style PCK@bbox: x max(bbox w, h), dist <= t (the primary metric)
    seg_pck_threshold: float = 0.15  # StanfordExtra/WLDO PCK: x sqrt(seg area), dist < t, mean per image


class PCKBoxEvaluator(Evaluator):
    """PCK@threshold x max(bbox w, h) and mean pixel error, per keypoint and overall, in original
    image pixels over labelled joints (v > 0) only; beside it the StanfordExtra/WLDO protocol,
    PCK@seg_threshold x sqrt(segmentation area), where the items carry `seg_area`."""

    def __init__(self, threshold: float, seg_threshold: float = 0.15):
        self.threshold, self.seg_threshold = threshold, seg_threshold
        self.pred, self.gt, self.box, self.seg_area = [], [], [], []

    def update(self, split, results, batch):
        self.pred += [r.keypoints[0] for r in results]
        self.gt.append(batch["keypoints"].cpu().numpy())
        self.box.append(batch["box"].cpu().numpy())
        area = batch.get("seg_area")
        self.seg_area.append(area.cpu().numpy() if area is not None else np.full(len(results), np.nan))

    def compute(self):
        return pck_box_metrics(np.stack(self.pred), np.concatenate(self.gt), np.concatenate(self.box),
                               threshold=self.threshold, seg_area=np.concatenate(self.seg_area),
                               seg_threshold=self.seg_threshold)


def pck_box_metrics(pred: np.ndarray, gt: np.ndarray, bbox: np.ndarray, *, threshold: float = 0.1,
                    seg_area: np.ndarray | None = None, seg_threshold: float = 0.15) -> dict:
    """Dog metrics (PCK in percent). `pck`: joints with dist <= threshold x max(bbox w, h), pooled
    over every labelled joint (mmpose). `pck_seg`: StanfordExtra/WLDO, dist < seg_threshold x
    sqrt(seg_area), the mean over images of each image's fraction, overall and per part group
    (legs, tail, ears, face); only where a segmentation area is known (`pck_seg_images` says how
    many images count)."""
    visible = gt[..., 2] > 0
    res = pck(pred, gt, visible, bbox_normalizer(bbox), threshold)
    dist = keypoint_distances(pred, gt)
    out = {"pck": 100.0 * res["mean"],
           "mean_px_error": float(dist[visible].mean()) if visible.any() else float("nan"),
           "num_samples": float(len(gt)), "num_joints": float(visible.sum())}
    if seg_area is not None and np.isfinite(np.asarray(seg_area, dtype=np.float64)).any():
        norm = segmentation_normalizer(seg_area)
        seg = per_image_pck(pred, gt, visible, norm, seg_threshold)
        out["pck_seg"] = 100.0 * seg["mean"]
        out["pck_seg_images"] = float(seg["images"])
        for group, joints in SEG_PCK_GROUPS.items():
            part = per_image_pck(pred, gt, visible, norm, seg_threshold, joints=joints)
            if part["images"]:
                out[f"pck_seg/{group}"] = 100.0 * part["mean"]
    for j, name in enumerate(SKELETON.keypoints):
        if res["counts"][j]:
            out[f"pck/{name}"] = 100.0 * float(res["per_joint"][j])
            out[f"px_error/{name}"] = float(dist[visible[:, j], j].mean())
    return out


class SegAreaSource:
    """A StanfordExtra source whose samples also carry `meta["seg_area"]`: the pixel count of the
    dog's mask (the reader's `seg` RLE), the normaliser of the StanfordExtra/WLDO PCK. NaN for a
    record without `seg` (or without the image size it needs)."""

    def __init__(self, source: StanfordExtraSource):
        self.source = source
        self.records, self.image_dir = source.records, source.image_dir

    def __len__(self) -> int:
        return len(self.source)

    def seg_area(self, i: int) -> float:
        r = self.records[i]
        if r.seg is None or r.width is None or r.height is None:
            return float("nan")
        return float(decode_seg(r).sum())

    def __getitem__(self, i: int):
        sample = self.source[i]
        sample.meta["seg_area"] = self.seg_area(i)
        return sample


def _numpy(values) -> np.ndarray:
    return values.detach().double().cpu().numpy() if torch.is_tensor(values) else np.asarray(values, np.float64)


@register_task
class DogsTask(Task):
    name = "dogs"
    DataConfig = DogsDataConfig
    EvalConfig = DogsEvalConfig
    LossConfig = DogsLossConfig
    primary_metric = "pck"
    higher_is_better = True
    synthetic_recipe = "dogs_synthetic"
    smoke_overrides = ("data.synthetic_train_size=16", "data.synthetic_val_size=4", "data.input_size=64")
    # channels_last: 0.60-0.68x step time for the MobileNetV2 regressor on CPU (engine/precision.py)
    channels_last = True

    def check_config(self):
        d = self.cfg.data
        if len(d.scale_range) != 2:
            raise ValueError(f"data.scale_range must be [min, max], got {d.scale_range}")
        if d.crop not in ("image", "bbox", "resize"):
            raise ValueError(f"data.crop must be 'image', 'bbox' or 'resize', got {d.crop!r}")
        # the reference trains every joint, unlabelled ones as (0, 0)
        self.codec = RegressionCodec((d.input_size, d.input_size), mask="none" if d.faithful else "visible")
        # a planned fine-tune phase: the backbone's parameters get no gradients until `on_step`
        # unfreezes them, so DDP must look for unused parameters
        self.find_unused_parameters = self.cfg.model.args.get("unfreeze_at_step") is not None

    @property
    def skeleton(self):
        return SKELETON

    # --- data -----------------------------------------------------------------------------------
    def _pipeline(self, source, *, train: bool) -> TopDownDataset:
        d = self.cfg.data
        if d.faithful:
            crop, augment = CropRule("resize"), TopDownAugment(reference="keras_dogs")
        else:
            crop = CropRule({"image": "image", "bbox": "box", "resize": "resize"}[d.crop], 1.0 + 2.0 * d.bbox_margin)
            augment = TopDownAugment(scale=tuple(d.scale_range), rotation=d.rotation, translate=d.translate,
                                     flip_prob=d.flip_prob, color_jitter=d.color_jitter)
        return TopDownDataset(source, self.codec, skeleton=SKELETON, input_size=d.input_size, crop=crop,
                              augment=augment if train and d.augment else None,
                              pad_value=(0, 0, 0) if d.faithful else PAD_VALUE,
                              meta_keys=() if train else ("seg_area",))

    def build_datasets(self, splits=None):
        d = self.cfg.data
        if d.dataset == "synthetic":
            from posekit.data.synthetic.dogs import SyntheticDogs
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
            val_src = SegAreaSource(StanfordExtraSource([records[i] for i in val_idx], image_dir,
                                                        source=str(json_path)))
        else:
            raise ValueError(f"data.dataset must be 'synthetic' or 'stanford_extra', got {d.dataset!r}")
        out = {"train": self._pipeline(train_src, train=True)}
        if len(val_src):
            out["val"] = self._pipeline(val_src, train=False)
        return out

    # --- training -------------------------------------------------------------------------------
    def build_loss(self):
        masked = self.cfg.loss.masked

        def loss(outputs, batch):
            weight = batch["target_weight"] if masked else None
            value = masked_coordinate_mse(outputs.float(), batch["target"].float(), weight)
            return value, {"labelled_frac": batch["target_weight"].detach().float().mean()}
        return loss

    def on_step(self, model, step):
        """Fine-tune phase: unfreeze the backbone once `step` reaches the model's `unfreeze_at_step`
        (its lower learning rate comes from `train.lr_mult: {backbone: ...}`)."""
        m = unwrap(model)
        at = getattr(m, "unfreeze_at_step", None)
        if at is not None and step >= at and getattr(m, "backbone_frozen", False):
            m.unfreeze_backbone()

    def prepare(self, model, datasets):
        """A planned fine-tune phase needs the backbone in the optimiser from the start (the trainer
        builds it once, from parameters that require gradients)."""
        m = unwrap(model)
        if getattr(m, "unfreeze_at_step", None) is not None and getattr(m, "backbone_frozen", False):
            m.defer_unfreeze()

    # --- the decode seam ------------------------------------------------------------------------
    def forward_decode(self, model, x, *, outputs=None):
        """(B, K, 2) keypoints in crop pixels, optionally averaged with the mirrored input's."""
        return {"keypoints": flip_test_coordinates(model, x, outputs, self.codec, SKELETON.flip_index,
                                                   flip=self.cfg.eval.flip_test)}

    def decode_targets(self, batch):
        return {"keypoints": self.codec.decode(batch["target"].float())}

    def postprocess(self, decoded, batch):
        """The numpy runtime's `dog_outputs` (what an exported .onnx file runs too): the inverse
        affine, the labelled-joint mask as scores (joints 20-23 are never trained), the box."""
        boxes = _numpy(batch["box"]) if "box" in batch else None
        found = dog_outputs(_numpy(decoded["keypoints"]), _numpy(batch["matrix"]), boxes)
        images, paths = batch.get("images"), batch.get("paths")
        return [Results(keypoints=f["keypoints"], scores=f["scores"], skeleton=SKELETON, boxes=f["boxes"],
                        image=images[i] if images else None, path=paths[i] if paths else None)
                for i, f in enumerate(found)]

    def build_evaluator(self, datasets):
        return PCKBoxEvaluator(self.cfg.eval.pck_threshold, self.cfg.eval.seg_pck_threshold)

    # --- use ----------------------------------------------------------------------------
    def prepare_inputs(self, inputs, *, boxes=None, **options):
        """`boxes` (one [x, y, w, h] or None per image) crops a square around each dog
        (data.bbox_margin); without a box the whole image is letterboxed (stretched, for the
        faithful recipe)."""
        pipeline = self._pipeline([], train=False)
        if pipeline.crop.mode == "image" and boxes is not None:  # a given box always wins
            pipeline.crop = CropRule("box", 1.0 + 2.0 * self.cfg.data.bbox_margin)
        return pipeline.inputs(inputs, boxes)

    def export_spec(self):
        s = self.cfg.data.input_size
        return ExportSpec((torch.rand(2, 3, s, s),), ["image"], ["keypoints"],
                          {"image": {0: "batch"}, "keypoints": {0: "batch"}})
