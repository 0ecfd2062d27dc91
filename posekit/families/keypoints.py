"""Your own keypoints, no code: a generic top-down family for any skeleton, file and model.

Data: a keypoint file of any `data.format` (COCO by default: any K, any category; YOLO,
DeepLabCut, Label Studio, CVAT; a folder of images plus a JSON list of records, `dataset:
pose_json`) read and checked against the skeleton by `data.formats.registry.load_split`, or
generated figures (`dataset: synthetic`). `data.skeleton` is a built-in name, a skeleton YAML or
`auto` (the files' own); the config keeps the skeleton's CONTENT (names, flip pairs, limbs,
sigmas), so a checkpoint, which stores its config, needs no recipe or YAML later.

    image Samples (all people) -> one item per labelled person (GT box) or per detector box
    (`data.val_detections`, the top-down protocol; data.detections) -> TopDownDataset (crop rule, flips with the
    skeleton's pairs) -> the codec of the model's kind:
        heatmap models (the registered hourglasses): HeatmapCodec + heatmap_loss
        regression models (the registered MobileNetV2 regressor): RegressionCodec + masked MSE
    forward_decode (the model normalises its own input; flip test; decoded crop pixels)
    -> postprocess (inverse affine, person score = box score x mean keypoint score, the boxes of
       one image regrouped into one Results) -> OKS AP (pycocotools) + PCK@bbox in percent
       (metrics.topdown). Where each piece lives: docs/architecture.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from posekit.codecs.heatmap import REFINEMENTS, HeatmapCodec, check_heatmap_model, flip_test_heatmaps, heatmap_grid
from posekit.codecs.regression import RegressionCodec, flip_test_coordinates
from posekit.config import ConfigError, DataConfig, EvalConfig, LossConfig, option, size_wh
from posekit.data.detections import PersonSource, detection_entries, peek_sample, person_crops, person_entries
from posekit.data.formats.pose_json import load_pose_json_samples
from posekit.data.formats.registry import USES_IMAGE_FOLDER, load_split, skeleton_setting
from posekit.data.synthetic.keypoints import SyntheticFigures
from posekit.data.topdown import CROP_MODES, CropRule, TopDownAugment, TopDownDataset, to_original_frame
from posekit.families.base import Evaluator, ExportSpec, Task, register_task
from posekit.losses.heatmap import heatmap_loss
from posekit.losses.regression import masked_coordinate_mse
from posekit.metrics.sigmas import DEFAULT_SIGMA, oks_sigmas_for
from posekit.metrics.topdown import TopDownCOCOScores, oks_nms
from posekit.models.normalization import attach_normalization
from posekit.models.registry import output_kind, with_keypoint_count
from posekit.results import people_per_image
from posekit.runtime.predict import topdown_person_scores
from posekit.skeletons import Skeleton
from posekit.skeletons.from_config import skeleton_from_config, skeleton_to_config

__all__ = ["KeypointsTask", "attach_normalization", "skeleton_to_config", "skeleton_from_config", "load_pose_json_samples",
           "person_entries", "detection_entries", "oks_nms"]


# --- config sections -----------------------------------------------------------------------------
@dataclass
class KeypointsDataConfig(DataConfig):
    dataset: str = option("coco", choices=("coco", "pose_json", "synthetic"))  # pose_json: a folder + a JSON list of records
    # the annotation format of *_ann when not synthetic: coco | yolo (a data YAML) | deeplabcut (config.yaml
    # or CollectedData_*.h5/.csv) | pose_json | labelstudio (a JSON export) | cvat (CVAT for images XML);
    # unset: data.dataset's. `data.skeleton: auto` takes the skeleton the YOLO / DeepLabCut / CVAT files
    # (or Label Studio's label_config.xml beside the export) declare (posekit.data.formats.registry)
    format: str | None = None
    root: str | None = None  # base folder of the relative paths below (default: the working directory)
    # a skeleton name, a skeleton YAML path, or its content; always stored as content
    # (a relative YAML path is looked up in the working directory, then in data.root)
    skeleton: str | dict = "coco17"
    train_ann: str | None = "annotations/person_keypoints_train2017.json"
    train_images: str = "train2017"
    val_ann: str | None = "annotations/person_keypoints_val2017.json"
    val_images: str = "val2017"
    category_id: int | None = None  # the keypoint category of a COCO file with several
    min_keypoints: int = 1  # people with fewer labelled keypoints get no item (they stay in the OKS GT)
    # top-down protocol: evaluate on these detector boxes (a COCO detections JSON) instead of GT boxes
    val_detections: str | None = None
    det_score_threshold: float = 0.0  # detections below this score are dropped (MMPose det_bbox_thr)
    # geometry, stored in every checkpoint: input size, crop rule, normalisation
    input_size: int | list[int] = 256  # S (S x S) or [W, H], e.g. [192, 256] as MMPose's COCO models
    # box (the person box grown to the input's aspect) | image (letterbox) | resize (stretch)
    crop: str = option("box", choices=CROP_MODES)
    padding: float = option(1.25, gt=0)  # box crops: width = padding x max(box w, box h x W / H)
    # input normalisation inside the model (so checkpoints and ONNX files carry it): the network
    # sees (rgb / 255 - mean) / std; None keeps the model's own (the hourglass takes [0, 1], the
    # MobileNetV2 regressor applies ImageNet's)
    mean: list[float] | None = option(None, length=3)
    std: list[float] | None = option(None, length=3, gt=0)
    codec: str = option("auto", choices=("auto", "heatmap", "regression"))  # auto: the model's registered output
    heatmap_size: int | list[int] | None = None  # heatmap models ([W, H] or S): default input_size / the stride
    sigma: float = 2.0  # heatmap Gaussian std in heatmap cells
    # training augmentation
    augment: bool = True
    flip: bool = True  # mirror with the skeleton's flip pairs swapped
    scale_factor: float = 0.25  # crop side x U(1 - f, 1 + f)
    rotation: float = 30.0  # degrees, U(-r, r), with probability rotation_prob
    rotation_prob: float = 0.5
    translate: float = 0.0  # crop centre shift, x the crop side
    color_scale: float = 0.2  # per-channel x U(1 - c, 1 + c)
    # synthetic figures (dataset: synthetic, skeleton figure5): numbers of images, 1-3 figures each
    synthetic_train_size: int = 2000
    synthetic_val_size: int = 100
    synthetic_image_size: int = 160
    synthetic_seed: int = 0

    def __post_init__(self):  # auto: the skeleton the train_ann file declares; a YAML: cwd, then data.root
        self.skeleton = skeleton_setting(self.skeleton, self.format or self.dataset, self.train_ann, root=self.root,
                                         category_id=self.category_id)


@dataclass
class KeypointsLossConfig(LossConfig):
    # heatmap models: mse | bce (masked per joint); regression models: masked coordinate MSE
    kind: str = option("mse", choices=("mse", "bce"))
    stack_reduction: str = option("sum", choices=("sum", "mean"))  # over stacks


@dataclass
class KeypointsEvalConfig(EvalConfig):
    flip_test: bool = True
    refine: str = option("shift", choices=REFINEMENTS)  # heatmap decoding
    # OKS sigmas: these K values, else the skeleton's `sigmas`, else default_sigma for every keypoint
    sigmas: list[float] | None = None
    default_sigma: float = DEFAULT_SIGMA
    pck_threshold: float = 0.1  # PCK (GT boxes): correct when error <= t x max(box w, h); reported in percent
    keypoint_score_threshold: float = 0.2  # person score = box score x mean of keypoint scores above this
    oks_nms: bool = False  # OKS non-maximum suppression per image (detector boxes)
    oks_nms_threshold: float = 0.9
    max_people: int = 20  # COCO keeps the 20 best-scoring people per image


# --- evaluation -----------------------------------------------------------------------------------
class TopDownCOCOEvaluator(Evaluator):
    """OKS AP (pycocotools, the 10-number summary) over the evaluated images, COCO result files'
    way: one result per item with person score = box score x mean keypoint score; plus, on GT
    boxes, PCK@t x max(box w, h) in percent and the mean pixel error (metrics.topdown)."""

    def __init__(self, dataset: TopDownDataset, skeleton: Skeleton, sigmas: np.ndarray, cfg, *, gt_boxes: bool):
        self.dataset = dataset
        self.scores = TopDownCOCOScores(skeleton, sigmas, gt_boxes=gt_boxes, pck_threshold=cfg.pck_threshold,
                                        oks_nms_threshold=cfg.oks_nms_threshold if cfg.oks_nms else None,
                                        max_people=cfg.max_people)

    def update(self, split, results, batch):
        self.scores.add(batch["image_index"].cpu().numpy().astype(int), batch["person_row"].cpu().numpy().astype(int),
                        [r.keypoints[0] for r in results], [r.scores[0] for r in results],
                        [r.person_scores[0] for r in results], batch["box"].cpu().numpy(),
                        gt_keypoints=batch["keypoints"].cpu().numpy())

    def compute(self):
        images = self.dataset.source.images
        return self.scores.compute(lambda i: peek_sample(images, i), len(images),
                                   complete=len(self.scores.items) == len(self.dataset))


# --- the family ---------------------------------------------------------------------------------------
@register_task
class KeypointsTask(Task):
    name = "keypoints"
    DataConfig = KeypointsDataConfig
    EvalConfig = KeypointsEvalConfig
    LossConfig = KeypointsLossConfig
    primary_metric = "AP"
    higher_is_better = True
    synthetic_recipe = "keypoints_synthetic"
    smoke_overrides = ("data.synthetic_train_size=8", "data.synthetic_val_size=2", "data.input_size=64",
                       "data.synthetic_image_size=96", "model.args.n_stacks=1", "model.args.n_feats=16",
                       "train.batch_size=4")

    def check_config(self):
        d, e = self.cfg.data, self.cfg.eval
        self._skeleton = skeleton_from_config(d.skeleton, error=ConfigError)
        if d.format is not None and (d.format not in USES_IMAGE_FOLDER or d.dataset == "synthetic"):
            raise ConfigError(f"data.format={d.format!r}; valid: {', '.join(USES_IMAGE_FOLDER)} (with a file-based "
                              "data.dataset, not synthetic)")
        self.input_wh = size_wh(d.input_size, "data.input_size")
        if min(self.input_wh) < 8:
            raise ConfigError(f"data.input_size must be >= 8 pixels, got {d.input_size}")
        if (d.mean is None) != (d.std is None):
            raise ConfigError(f"data.mean and data.std must be set together (3 numbers each, RGB on a 0-1 scale), got "
                              f"{d.mean}, {d.std}")
        if e.sigmas is not None:
            oks_sigmas_for(self._skeleton, e.sigmas, error=ConfigError)  # K positive numbers
        self.kind = output_kind(self.cfg.model.name, d.codec)  # heatmap | regression: the codec below
        if self.kind == "heatmap":
            self.codec = HeatmapCodec(self.input_wh, heatmap_grid(d.input_size, d.heatmap_size, error=ConfigError),
                                      d.sigma, refine=e.refine)
        else:
            self.codec = RegressionCodec(self.input_wh)

    @property
    def skeleton(self) -> Skeleton:
        return self._skeleton

    # --- building -----------------------------------------------------------------------
    def build_model(self):
        from posekit.models import create_model

        name = self.cfg.model.name
        model = create_model(name, **with_keypoint_count(name, dict(self.cfg.model.args),
                                                         self._skeleton.num_keypoints, self._skeleton.name))
        if self.cfg.data.mean is not None:
            attach_normalization(model, self.cfg.data.mean, self.cfg.data.std)
        if self.kind == "heatmap":
            check_heatmap_model(model, self.codec, name, error=ConfigError)
        return model

    def build_loss(self):
        if self.kind == "regression":
            def loss(outputs, batch):
                return masked_coordinate_mse(outputs.float(), batch["target"].float(),
                                             batch["target_weight"].float()), {}
            return loss
        kind, reduction = self.cfg.loss.kind, self.cfg.loss.stack_reduction

        def loss(outputs, batch):
            total, per_stack = heatmap_loss(outputs.float(), batch["target"].float(), batch["target_weight"].float(),
                                            kind=kind, stack_reduction=reduction)
            return total, {"loss_last_stack": per_stack[-1].detach()}
        return loss

    def _pipeline(self, source, *, train: bool) -> TopDownDataset:
        d = self.cfg.data
        return TopDownDataset(source, self.codec, skeleton=self._skeleton, input_size=self.input_wh,
                              crop=CropRule(d.crop, d.padding),
                              augment=TopDownAugment.from_data_config(d) if train and d.augment else None,
                              meta_keys=("image_index", "person_row", "box_score"))

    def _images(self, split: str):
        d = self.cfg.data
        k = self._skeleton.num_keypoints
        if d.dataset == "synthetic":
            if k != 5:
                raise ConfigError(f"data.dataset=synthetic draws 5-keypoint figures; data.skeleton "
                                  f"{self._skeleton.name!r} has {k} (use skeleton figure5)")
            n = d.synthetic_train_size if split == "train" else d.synthetic_val_size
            seed = d.synthetic_seed + (0 if split == "train" else 1_000_003)
            return SyntheticFigures(n, seed=seed, image_size=d.synthetic_image_size)
        ann, images = (d.train_ann, d.train_images) if split == "train" else (d.val_ann, d.val_images)
        if ann is None:
            return None
        return load_split(d.format or d.dataset, ann, images, self._skeleton, split=split, root=d.root,
                          on_bad_record=d.on_bad_record, category_id=d.category_id)

    def build_datasets(self, splits=None):
        d = self.cfg.data
        wanted = splits or ("train", "val")
        out = {}
        if "train" in wanted:
            images = self._images("train")
            if images is not None:
                entries = person_entries(images, d.min_keypoints)
                if not entries:
                    raise ValueError(f"data.train_ann: no person with >= {d.min_keypoints} labelled keypoints")
                out["train"] = self._pipeline(PersonSource(images, entries), train=True)
        if "val" in wanted:
            images = self._images("val")
            if images is not None:
                if d.val_detections:
                    entries = detection_entries(images, d.val_detections, score_threshold=d.det_score_threshold,
                                                category_id=getattr(images, "category_id", None), root=d.root,
                                                key="data.val_detections")
                else:
                    entries = person_entries(images, d.min_keypoints)
                out["val"] = self._pipeline(PersonSource(images, entries), train=False)
        return out

    # --- the decode seam ----------------------------------------------------------------------------
    def _decode_heat(self, heat):
        kp, scores = self.codec.decode(heat)  # the codec carries eval.refine, the stride and sigma
        return {"keypoints": kp, "scores": scores}

    def forward_decode(self, model, x, *, outputs=None):
        """Keypoints (B, K, 2) in crop pixels and scores (B, K) (heatmap maxima; 1 for a regressor),
        averaged with the mirrored input's mirrored-back prediction when eval.flip_test."""
        flip, index = self.cfg.eval.flip_test, self._skeleton.flip_index
        if self.kind == "heatmap":
            return self._decode_heat(flip_test_heatmaps(model, x, outputs, index, flip=flip,
                                                        logits=self.cfg.loss.kind == "bce"))
        xy = flip_test_coordinates(model, x, outputs, self.codec, index, flip=flip)
        return {"keypoints": xy, "scores": torch.ones_like(xy[..., 0])}

    def decode_targets(self, batch):
        if self.kind == "heatmap":
            return self._decode_heat(batch["target"].float())
        return {"keypoints": self.codec.decode(batch["target"].float()), "scores": batch["target_weight"].float()}

    def postprocess(self, decoded, batch):
        """One Results per item; for `prepare_inputs` batches (several boxes per image) one Results
        per input image with all its people."""
        kp = to_original_frame(decoded["keypoints"], batch["matrix"])
        scores = decoded["scores"].detach().double().cpu().numpy()
        box = batch["box"].detach().double().cpu().numpy() if "box" in batch else np.full((len(kp), 4), np.nan)
        box_scores = batch["box_score"].detach().double().cpu().numpy() if "box_score" in batch else np.ones(len(kp))
        # MMPose's rescoring: box score x the mean of the keypoint scores above the threshold (0 when none is)
        person = topdown_person_scores(scores, box_scores, self.cfg.eval.keypoint_score_threshold)
        owner = batch["owner"].cpu().numpy() if "owner" in batch else None
        return people_per_image(kp, scores, person, box, owner, skeleton=self._skeleton, images=batch.get("images"),
                                paths=batch.get("paths"))

    def build_evaluator(self, datasets):
        e = self.cfg.eval
        sigmas = oks_sigmas_for(self._skeleton, e.sigmas, e.default_sigma, error=ConfigError)
        return TopDownCOCOEvaluator(datasets["val"], self._skeleton, sigmas, e, gt_boxes=not self.cfg.data.val_detections)

    # --- use ------------------------------------------------------------------------------------------
    def prepare_inputs(self, inputs, *, boxes=None, **options):
        """RGB images -> one crop per box. Per image, `boxes` holds None (the whole image), one
        [x, y, w, h(, score)] box, or a list / (P, 4|5) array of them (e.g. a detector's: the
        score multiplies the person score); the postprocess returns one Results per image."""
        crops, crop_boxes, scores, owner = person_crops(inputs, boxes)
        batch = self._pipeline([], train=False).inputs(crops, crop_boxes)  # the evaluation geometry
        return {**batch, "images": list(inputs), "box_score": torch.tensor(scores, dtype=torch.float64),
                "owner": torch.tensor(owner, dtype=torch.long)}

    def export_spec(self):
        w, h = self.input_wh
        return ExportSpec((torch.rand(2, 3, h, w),), ["image"], ["keypoints", "scores"],
                          {"image": {0: "batch"}, "keypoints": {0: "batch"}, "scores": {0: "batch"}})
