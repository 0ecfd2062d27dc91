"""Your own keypoints, no code: a generic top-down family for any skeleton, file and model.

Data: any COCO-format keypoint file (the category's `keypoints` names, any K, any category) read
by `data.formats.coco`, or a folder of images plus a JSON list of records with boxes and
keypoints (`dataset: pose_json`), or generated figures (`dataset: synthetic`). `data.skeleton`
is a built-in name or a skeleton YAML; the config keeps the skeleton's CONTENT (names, flip
pairs, limbs, sigmas), so a checkpoint, which stores its config, needs no recipe or YAML later.

    image Samples (all people) -> one item per labelled person (GT box) or per detector box
    (`data.val_detections`, the top-down protocol; data.detections) -> TopDownDataset (crop rule, flips with the
    skeleton's pairs) -> the codec of the model's kind:
        heatmap models (the registered hourglasses): HeatmapCodec + heatmap_loss
        regression models (the registered MobileNetV2 regressor): RegressionCodec + masked MSE
    forward_decode (the model normalises its own input; flip test; decoded crop pixels)
    -> postprocess (inverse affine, person score = box score x mean keypoint score, the boxes of
       one image regrouped into one Results) -> OKS AP (pycocotools) + PCK@bbox in percent
       (metrics.topdown). The skeleton's stored form is skeletons.from_config; the pose-JSON
       reader data.formats.pose_json; the model-side normalisation models.normalization.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from posekit.codecs.heatmap import REFINEMENTS, HeatmapCodec, flip_back_heatmaps
from posekit.codecs.regression import RegressionCodec
from posekit.config import ConfigError, DataConfig, EvalConfig, LossConfig
from posekit.data.detections import PersonSource, detection_entries, parse_person_boxes, peek_sample, person_entries
from posekit.data.formats.pose_json import load_pose_json_samples
from posekit.data.formats.registry import USES_IMAGE_FOLDER, load_samples, source_skeleton
from posekit.data.synthetic.keypoints import SyntheticFigures
from posekit.data.topdown import CROP_MODES, CropRule, TopDownAugment, TopDownDataset, to_original_frame
from posekit.families.base import Evaluator, ExportSpec, Task, register_task
from posekit.losses.heatmap import heatmap_loss
from posekit.losses.regression import masked_coordinate_mse
from posekit.metrics.topdown import TopDownCOCOScores, oks_nms
from posekit.models.normalization import attach_normalization
from posekit.results import Results
from posekit.runtime.predict import topdown_person_scores
from posekit.skeletons import Skeleton, find_skeleton_file
from posekit.skeletons.from_config import skeleton_from_config, skeleton_to_config

__all__ = ["KeypointsTask", "attach_normalization", "skeleton_to_config", "skeleton_from_config", "load_pose_json_samples",
           "person_entries", "detection_entries", "oks_nms"]

DEFAULT_SIGMA = 0.07  # OKS sigma of every keypoint when neither the skeleton nor eval.sigmas gives one
# (COCO's 17 sigmas average 0.067: a keypoint about as precise as a COCO elbow)
MODEL_KINDS = {"hourglass": "heatmap", "dogs": "regression"}  # registry family -> codec kind
K_ARGS = ("num_joints", "num_keypoints")  # how a model builder takes the keypoint count
HEATMAP_STRIDE = 4  # input pixels per heatmap cell when data.heatmap_size is unset (checked against the model)


# --- config sections -----------------------------------------------------------------------------
def _size_wh(value, key: str) -> tuple[int, int]:
    """S or [W, H] -> (W, H)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ConfigError(f"{key} must be one number S (S x S) or [W, H], got {list(value)}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


@dataclass
class KeypointsDataConfig(DataConfig):
    dataset: str = "coco"  # coco | pose_json (a folder + a JSON list of records) | synthetic
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
    crop: str = "box"  # box (the person box grown to the input's aspect) | image (letterbox) | resize (stretch)
    padding: float = 1.25  # box crops: width = padding x max(box w, box h x W / H)
    # input normalisation inside the model (so checkpoints and ONNX files carry it): the network
    # sees (rgb / 255 - mean) / std; None keeps the model's own (the hourglass takes [0, 1], the
    # MobileNetV2 regressor applies ImageNet's)
    mean: list[float] | None = None
    std: list[float] | None = None
    codec: str = "auto"  # auto (from the model's kind) | heatmap | regression
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

    def __post_init__(self):
        sk = self.skeleton
        if sk == "auto":  # the skeleton the train_ann file declares (YOLO, DeepLabCut)
            ann = Path(self.train_ann or "")
            ann = ann if ann.is_absolute() or not self.root else Path(self.root) / ann
            try:
                sk = source_skeleton(self.format or self.dataset, ann, self.category_id)
            except (ValueError, OSError) as e:
                raise ConfigError(f"data.skeleton=auto: {e}") from None
            if sk is None:
                raise ConfigError(f"data.skeleton=auto needs files that declare a skeleton (yolo, deeplabcut, cvat, or "
                                  f"labelstudio with its labelling config); this {self.format or self.dataset} file "
                                  "declares none (no flip pairs); give a skeleton name or YAML")
        if isinstance(sk, str) and sk.endswith((".yaml", ".yml")):
            try:  # a relative YAML path: the working directory, then data.root
                sk = str(find_skeleton_file(sk, self.root or None))
            except FileNotFoundError as e:
                raise ConfigError(f"data.skeleton: {e}") from None
        self.skeleton = skeleton_to_config(sk, error=ConfigError)


@dataclass
class KeypointsLossConfig(LossConfig):
    kind: str = "mse"  # heatmap models: mse | bce (masked per joint); regression: masked coordinate MSE
    stack_reduction: str = "sum"  # sum | mean over stacks


@dataclass
class KeypointsEvalConfig(EvalConfig):
    flip_test: bool = True
    refine: str = "shift"  # heatmap decoding: none | shift | dark
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
        d, e, loss = self.cfg.data, self.cfg.eval, self.cfg.loss
        self._skeleton = skeleton_from_config(d.skeleton, error=ConfigError)
        if d.dataset not in ("coco", "pose_json", "synthetic"):
            raise ConfigError(f"data.dataset={d.dataset!r}; valid: coco, pose_json, synthetic")
        if d.format is not None and (d.format not in USES_IMAGE_FOLDER or d.dataset == "synthetic"):
            raise ConfigError(f"data.format={d.format!r}; valid: {', '.join(USES_IMAGE_FOLDER)} (with a file-based "
                              "data.dataset, not synthetic)")
        if d.crop not in CROP_MODES:
            raise ConfigError(f"data.crop={d.crop!r}; valid: {', '.join(CROP_MODES)}")
        self.input_wh = _size_wh(d.input_size, "data.input_size")
        if not d.padding > 0 or min(self.input_wh) < 8:
            raise ConfigError(f"data.padding must be > 0 and data.input_size >= 8, got {d.padding}, {d.input_size}")
        if (d.mean is None) != (d.std is None) or (d.mean is not None and (
                len(d.mean) != 3 or len(d.std) != 3 or min(d.std) <= 0)):
            raise ConfigError(f"data.mean and data.std must both be 3 numbers (RGB, 0-1 scale; std > 0) or both "
                              f"unset, got {d.mean}, {d.std}")
        if e.refine not in REFINEMENTS:
            raise ConfigError(f"eval.refine={e.refine!r}; valid: {', '.join(REFINEMENTS)}")
        if loss.kind not in ("mse", "bce") or loss.stack_reduction not in ("sum", "mean"):
            raise ConfigError(f"loss.kind={loss.kind!r} (mse, bce), loss.stack_reduction={loss.stack_reduction!r} "
                              "(sum, mean)")
        k = self._skeleton.num_keypoints
        if e.sigmas is not None and (len(e.sigmas) != k or min(e.sigmas) <= 0):
            raise ConfigError(f"eval.sigmas must be {k} positive numbers (one per keypoint of "
                              f"{self._skeleton.name!r}), got {e.sigmas}")
        self.kind = self._model_kind()
        w, h = self.input_wh
        if self.kind == "heatmap":
            hw, hh = _size_wh(d.heatmap_size, "data.heatmap_size") if d.heatmap_size else \
                (w // HEATMAP_STRIDE, h // HEATMAP_STRIDE)
            if min(hw, hh) < 1 or w % hw or h % hh or w // hw != h // hh:
                raise ConfigError(f"data.input_size={d.input_size} must be the same multiple of "
                                  f"data.heatmap_size={d.heatmap_size or [hw, hh]} in width and height "
                                  f"(e.g. data.heatmap_size={[w // HEATMAP_STRIDE, h // HEATMAP_STRIDE]})")
            self.codec = HeatmapCodec((w, h), (hw, hh), d.sigma, refine=e.refine)
        else:
            self.codec = RegressionCodec((w, h))

    def _model_kind(self) -> str:
        d = self.cfg.data
        if d.codec in ("heatmap", "regression"):
            return d.codec
        if d.codec != "auto":
            raise ConfigError(f"data.codec={d.codec!r}; valid: auto, heatmap, regression")
        entry = self._model_entry()
        if entry.family in MODEL_KINDS:
            return MODEL_KINDS[entry.family]
        raise ConfigError(f"model {entry.name!r} (family {entry.family!r}): set data.codec=heatmap (outputs "
                          "(B, [stacks,] K, H, W) maps) or data.codec=regression (outputs (B, K, 2) in [0, 1])")

    def _model_entry(self):
        from posekit.models.registry import get_entry
        try:
            return get_entry(self.cfg.model.name)
        except KeyError as e:
            raise ConfigError(f"model.name: {e.args[0]}") from None

    @property
    def skeleton(self) -> Skeleton:
        return self._skeleton

    # --- building -----------------------------------------------------------------------
    def build_model(self):
        from posekit.models import create_model

        k = self._skeleton.num_keypoints
        args = dict(self.cfg.model.args)
        params = self._model_entry().signature().parameters
        names = [a for a in K_ARGS if a in params]
        if not names:
            raise ConfigError(f"model {self.cfg.model.name!r} takes no keypoint count ({' or '.join(K_ARGS)}); "
                              "the keypoints task sets it from data.skeleton")
        given = args.get(names[0])
        if given is not None and int(given) != k:
            raise ConfigError(f"model.args.{names[0]}={given} but data.skeleton {self._skeleton.name!r} has {k} "
                              "keypoints (leave it unset: it follows the skeleton)")
        args[names[0]] = k
        model = create_model(self.cfg.model.name, **args)
        if self.cfg.data.mean is not None:
            attach_normalization(model, self.cfg.data.mean, self.cfg.data.std)
        size = self.cfg.data.input_size
        if self.kind == "heatmap":
            stride = getattr(model, "stride", 4)
            need = stride * 2 ** getattr(model, "n_low", 0)
            if any(v % need for v in self.input_wh):
                raise ConfigError(f"data.input_size={size} must be divisible by {need} for {self.cfg.model.name}")
            want = [v // stride for v in self.input_wh]
            if list(self.codec.heatmap_size) != want:
                raise ConfigError(f"data.heatmap_size={list(self.codec.heatmap_size)} must be data.input_size / "
                                  f"{stride} = {want} for {self.cfg.model.name}")
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
            return total, {"loss_last_stack": float(per_stack[-1].detach())}
        return loss

    def _pipeline(self, source, *, train: bool) -> TopDownDataset:
        d = self.cfg.data
        augment = TopDownAugment(scale=(1 - d.scale_factor, 1 + d.scale_factor), rotation=d.rotation,
                                 rotation_prob=d.rotation_prob, translate=d.translate,
                                 flip_prob=0.5 if d.flip else 0.0, channel_scale=d.color_scale) \
            if train and d.augment else None
        return TopDownDataset(source, self.codec, skeleton=self._skeleton, input_size=self.input_wh,
                              crop=CropRule(d.crop, d.padding), augment=augment,
                              meta_keys=("image_index", "person_row", "box_score"))

    def _path(self, p: str) -> Path:
        root = Path(self.cfg.data.root) if self.cfg.data.root else Path(".")
        return Path(p) if Path(p).is_absolute() else root / p

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
        key = f"data.{split}_ann"
        if not self._path(ann).is_file():
            raise FileNotFoundError(f"{key}: annotation file not found: {self._path(ann)}")
        fmt = d.format or d.dataset
        if USES_IMAGE_FOLDER[fmt] and not self._path(images).is_dir():
            raise FileNotFoundError(f"data.{split}_images: image folder not found: {self._path(images)}")
        if fmt == "pose_json":
            samples = load_pose_json_samples(self._path(ann), self._path(images))
            names = None
        else:
            policy = d.on_bad_record or ("skip" if split == "train" else "error")
            # formats that name each point (Label Studio, CVAT points shapes) take the skeleton's order
            samples = load_samples(fmt, self._path(ann), self._path(images), split=split, on_bad_record=policy,
                                   category_id=d.category_id,
                                   keypoint_names=self._skeleton.keypoints if fmt in ("labelstudio", "cvat") else None)
            names = samples.keypoint_names
        got = samples[0].keypoints.shape[1] if samples else (len(names) if names else k)
        if got != k:
            raise ConfigError(f"{key}: {self._path(ann)} has {got} keypoints per person, data.skeleton "
                              f"{self._skeleton.name!r} has {k}")
        if names and tuple(names) != self._skeleton.keypoints:
            warnings.warn(f"{self._path(ann)}: keypoint names {list(names)} differ from data.skeleton "
                          f"{self._skeleton.name!r} {list(self._skeleton.keypoints)}; the order is taken as given",
                          RuntimeWarning, stacklevel=2)
        return samples

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
                    det = self._path(d.val_detections)
                    if not det.is_file():
                        raise FileNotFoundError(f"data.val_detections: detections file not found: {det}")
                    cat = getattr(images, "category_id", None)
                    entries = detection_entries(images, det, score_threshold=d.det_score_threshold,
                                                category_id=cat)
                else:
                    entries = person_entries(images, d.min_keypoints)
                out["val"] = self._pipeline(PersonSource(images, entries), train=False)
        return out

    # --- the decode seam ----------------------------------------------------------------------------
    def _heatmaps(self, outputs):
        heat = (outputs[:, -1] if outputs.dim() == 5 else outputs).float()
        return torch.sigmoid(heat) if self.cfg.loss.kind == "bce" else heat

    def _decode_heat(self, heat):
        kp, scores = self.codec.decode(heat)  # the codec carries eval.refine, the stride and sigma
        return {"keypoints": kp, "scores": scores}

    def forward_decode(self, model, x, *, outputs=None):
        """Keypoints (B, K, 2) in crop pixels and scores (B, K) (heatmap maxima; 1 for a regressor),
        averaged with the mirrored input's mirrored-back prediction when eval.flip_test."""
        out = model(x) if outputs is None else outputs
        flip = self.cfg.eval.flip_test
        index = self._skeleton.flip_index
        if self.kind == "heatmap":
            heat = self._heatmaps(out)
            if flip:
                heat = 0.5 * (heat + flip_back_heatmaps(self._heatmaps(model(x.flip(-1))), index))
            return self._decode_heat(heat)
        xy = self.codec.decode(out.float())
        if flip:
            mirrored = self.codec.decode(model(x.flip(-1)).float())[:, torch.as_tensor(index, device=xy.device)]
            xy = 0.5 * (xy + torch.stack([(x.shape[-1] - 1) - mirrored[..., 0], mirrored[..., 1]], dim=-1))
        return {"keypoints": xy, "scores": torch.ones_like(xy[..., 0])}

    def decode_targets(self, batch):
        if self.kind == "heatmap":
            return self._decode_heat(batch["target"].float())
        return {"keypoints": self.codec.decode(batch["target"].float()), "scores": batch["target_weight"].float()}

    def _person_scores(self, scores: np.ndarray, box_scores: np.ndarray) -> np.ndarray:
        """MMPose's rescoring: box score x the mean of the keypoint scores above the threshold (0
        when none is)."""
        return topdown_person_scores(scores, box_scores, self.cfg.eval.keypoint_score_threshold)

    def postprocess(self, decoded, batch):
        """One Results per item; for `prepare_inputs` batches (several boxes per image) one Results
        per input image with all its people."""
        kp = to_original_frame(decoded["keypoints"], batch["matrix"])
        scores = decoded["scores"].detach().double().cpu().numpy()
        box = batch["box"].detach().double().cpu().numpy() if "box" in batch else np.full((len(kp), 4), np.nan)
        box_scores = batch["box_score"].detach().double().cpu().numpy() if "box_score" in batch else np.ones(len(kp))
        person = self._person_scores(scores, box_scores)
        images, paths = batch.get("images"), batch.get("paths")
        if "owner" in batch:
            owner = batch["owner"].cpu().numpy()
            groups = [np.flatnonzero(owner == n) for n in range(len(images))]
        else:
            groups = [np.array([n]) for n in range(len(kp))]
        out = []
        for n, g in enumerate(groups):
            b = box[g]
            k = self._skeleton.num_keypoints
            out.append(Results(keypoints=kp[g].reshape(len(g), k, 2), scores=scores[g].reshape(len(g), k),
                               skeleton=self._skeleton,
                               person_scores=person[g], boxes=b if np.isfinite(b).all() else None,
                               image=images[n] if images else None, path=paths[n] if paths else None))
        return out

    def _sigmas(self) -> np.ndarray:
        e = self.cfg.eval
        if e.sigmas is not None:
            return np.asarray(e.sigmas, dtype=np.float64)
        if self._skeleton.sigmas is not None:
            return self._skeleton.oks_sigmas()
        warnings.warn(f"skeleton {self._skeleton.name!r} declares no OKS sigmas: OKS AP uses eval.default_sigma="
                      f"{e.default_sigma} for every keypoint (set `sigmas:` in the skeleton YAML or eval.sigmas)",
                      RuntimeWarning, stacklevel=2)
        return np.full(self._skeleton.num_keypoints, float(e.default_sigma))

    def build_evaluator(self, datasets):
        return TopDownCOCOEvaluator(datasets["val"], self._skeleton, self._sigmas(), self.cfg.eval,
                                    gt_boxes=not self.cfg.data.val_detections)

    # --- use ------------------------------------------------------------------------------------------
    def prepare_inputs(self, inputs, *, boxes=None, **options):
        """RGB images -> one crop per box. Per image, `boxes` holds None (the whole image), one
        [x, y, w, h(, score)] box, or a list / (P, 4|5) array of them (e.g. a detector's: the
        score multiplies the person score); the postprocess returns one Results per image."""
        if boxes is not None and len(boxes) != len(inputs):
            raise ValueError(f"got {len(boxes)} box entries for {len(inputs)} images (one entry per image)")
        crops, crop_boxes, scores, owner = [], [], [], []
        for n, image in enumerate(inputs):
            for b in parse_person_boxes(None if boxes is None else boxes[n], n):
                crops.append(image)
                crop_boxes.append(None if b is None else b[:4])
                scores.append(float(b[4]) if b is not None and len(b) > 4 else 1.0)
                owner.append(n)
        batch = self._pipeline([], train=False).inputs(crops, crop_boxes)  # the evaluation geometry
        return {**batch, "images": list(inputs), "box_score": torch.tensor(scores, dtype=torch.float64),
                "owner": torch.tensor(owner, dtype=torch.long)}

    def export_spec(self):
        w, h = self.input_wh
        return ExportSpec((torch.rand(2, 3, h, w),), ["image"], ["keypoints", "scores"],
                          {"image": {0: "batch"}, "keypoints": {0: "batch"}, "scores": {0: "batch"}})

    def demo(self, predict, datasets, out_dir):
        """Whole validation images with every person predicted from its box, "ground truth |
        prediction" side by side."""
        from posekit.data.io import write_image
        from posekit.viz import caption, draw_skeleton, side_by_side, upscale

        val = datasets.get("val")
        if val is None or not len(val):
            return []
        images = val.source.images
        order = sorted(range(len(images)), key=lambda i: -peek_sample(images, i).num_people)[:2]
        paths = []
        for i in order:
            s = images[i].load()
            if s.boxes is None or not len(s.boxes):
                continue
            res = predict([s.image], boxes=[s.boxes])[0]
            # drawn on the image upscaled to >= 384 px, so small synthetic frames stay judgeable
            f = max(1.0, 384.0 / s.image.shape[0])
            big = upscale(s.image, int(round(s.image.shape[0] * f)), interpolation="linear")
            f = big.shape[0] / s.image.shape[0]

            def scaled(xy):
                return (np.asarray(xy, dtype=np.float64) + 0.5) * f - 0.5
            gt_boxes = np.asarray(s.boxes, dtype=np.float64) * f
            left = draw_skeleton(big, scaled(s.keypoints[..., :2]), (s.keypoints[..., 2] > 0).astype(float),
                                 self._skeleton, score_threshold=0.5, boxes=gt_boxes, color_by_person=True)
            right = draw_skeleton(big, scaled(res.keypoints), res.scores, self._skeleton, score_threshold=0.05,
                                  boxes=res.boxes * f if res.boxes is not None else None,
                                  person_scores=res.person_scores, color_by_person=True)
            picture = side_by_side([caption(left, f"ground truth: {len(s.keypoints)} people"),
                                    caption(right, f"prediction from the {len(s.boxes)} boxes (joints > 0.05)")])
            path = Path(out_dir) / f"keypoints_val{i}.png"
            write_image(path, picture)
            paths.append(path)
        return paths
