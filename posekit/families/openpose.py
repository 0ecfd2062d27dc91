"""OpenPose (Cao et al. 2017): bottom-up multi-person pose with part affinity fields, COCO OKS AP.

    COCO file (data.formats.coco) or synthetic crowds (data.synthetic.multiperson) -> Samples
    -> data.bottomup (one affine per image, ignore mask, CMU 18 parts with the neck) -> PAFCodec
    targets (19 heatmaps + 38 PAF channels at stride 8) -> model (models/openpose.py, 6 stages)
    -> paf_loss (ignore-masked MSE over every stage).
    forward_decode (in the graph): last-stage maps, flip-averaged -> postprocess (outside the
    graph): peaks, PAF line integrals, greedy limb matching, person assembly (codecs.paf) ->
    original image pixels -> COCO-17 Results -> OKS AP via pycocotools (metrics.coco).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from posekit.codecs.paf import DecoderConfig, PAFCodec, flip_back_paf
from posekit.config import DataConfig, EvalConfig, LossConfig, option
from posekit.data.bottomup import BottomUpDataset
from posekit.data.formats.registry import load_split
from posekit.families.base import Evaluator, ExportSpec, Task, register_task
from posekit.losses.openpose import paf_loss
from posekit.metrics.coco import build_coco_gt, coco_keypoint_eval_on
from posekit.results import Results
from posekit.runtime.predict import openpose_people
from posekit.skeletons import get_skeleton

SKELETON = get_skeleton("coco17")  # what Results, COCO files and AP use; the network's parts are openpose18
PARTS = get_skeleton("openpose18")


@dataclass
class OpenPoseDataConfig(DataConfig):
    dataset: str = "synthetic"  # synthetic | coco
    format: str | None = None  # dataset: coco's annotation format: coco (default) | yolo | deeplabcut | labelstudio | cvat (17 COCO keypoints)
    root: str | None = None  # coco: base of the paths below (default: the shared real samples' coco/)
    train_ann: str = "test_coco.json"  # any COCO-format person-keypoints file
    train_images: str = "images"
    val_ann: str | None = "test_coco.json"
    val_images: str = "images"
    mask_cache: str | None = None  # folder written by `posekit data coco-masks` (else masks are computed)
    on_bad_record: str = "error"  # error | skip (counted and listed) for annotation records
    input_size: int = 368  # training crops and the evaluation letterbox (square, a multiple of 8)
    sigma: float = 7.0  # heatmap Gaussian std in input pixels
    paf_width: float = 8.0  # PAF half-width across the limb, input pixels
    min_box_diag: float = 64.0  # person-size-aware scaling (MindSpore): smallest person >= this
    max_box_diag: float = 512.0  # ... largest <= this, scale clamped to scale_limits
    scale_limits: list[float] = field(default_factory=lambda: [0.5, 2.0])
    rotation_sigma: float = 40.0 / 3.0  # degrees
    center_jitter: float = 40.0  # px around the chosen person
    hsv_prob: float = 0.5
    flip_prob: float = 0.5
    mask_dilation: int = 16  # px at input scale
    synthetic_train_size: int = 4000
    synthetic_val_size: int = 100
    synthetic_image_size: int = 256
    synthetic_seed: int = 0
    # how hard the synthetic crowds are (the generator's defaults: 1-6 people, crowd regions and
    # tiny unlabelled people 30 % of the time each); the demo uses easier ones to learn in minutes
    synthetic_min_people: int = option(1, ge=1, most=100)
    synthetic_max_people: int = option(6, ge=1, most=100)
    synthetic_crowd_prob: float = option(0.3, ge=0, le=1)
    synthetic_small_prob: float = option(0.3, ge=0, le=1)


@dataclass
class OpenPoseLossConfig(LossConfig):
    """Ignore-masked MSE of PAFs and heatmaps summed over all stages (MindSpore); nothing to set."""


@dataclass
class OpenPoseEvalConfig(EvalConfig):
    batch_size: int = 4
    preset: str = "cmu"  # cmu | mindspore decoder thresholds (codecs.paf.DecoderConfig.preset)
    flip_test: bool = False
    # multi-scale test (CMU: [0.5, 1.0, 1.5, 2.0]): the input is resized by each factor (to a
    # multiple of 8), and the maps, resized back to the base grid, are averaged
    scales: list[float] = field(default_factory=lambda: [1.0])
    max_people: int = 20  # COCO keeps the 20 best-scoring detections per image


class COCOEvaluator(Evaluator):
    """OKS AP with pycocotools over the images evaluated (the 10-number summary)."""

    def __init__(self, gt: dict, dataset: BottomUpDataset, max_people: int):
        self.gt, self.dataset, self.max_people = gt, dataset, max_people
        self.dets, self.image_ids = [], []

    def update(self, split, results, batch):
        for res, index in zip(results, batch["index"].tolist()):
            image_id = self.dataset.source[int(index)].meta.get("image_id", int(index))
            self.image_ids.append(image_id)
            self.dets += res.to_coco(image_id=image_id)[:self.max_people]

    def compute(self):
        metrics = coco_keypoint_eval_on(self.gt, self.dets, sigmas=SKELETON, image_ids=self.image_ids)
        return {**metrics, "detections": float(len(self.dets))}


def _records_read(gt: dict, source) -> dict:
    """The GT without the images and keypoint-category annotations the reader skipped (bad
    records, data.on_bad_record=skip): pycocotools would take them as given (a crowd flag "no"
    as a crowd, a wrong num_keypoints), or fail on them."""
    def key(value):
        return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None

    images = {s.meta["image_id"] for s in source}
    read = {(s.meta["image_id"], seg["id"]) for s in source for seg in s.meta.get("segments", ())}
    cat = source.category_id
    return {**gt, "images": [im for im in gt["images"] if isinstance(im, dict) and key(im.get("id")) in images],
            "annotations": [a for a in gt["annotations"] if isinstance(a, dict) and (
                (key(a.get("image_id")), key(a.get("id"))) in read or a.get("category_id", cat) != cat)]}


@register_task
class OpenPoseTask(Task):
    name = "openpose"
    DataConfig = OpenPoseDataConfig
    EvalConfig = OpenPoseEvalConfig
    LossConfig = OpenPoseLossConfig
    primary_metric = "AP"
    higher_is_better = True
    synthetic_recipe = "coco_synthetic"
    smoke_overrides = ("data.synthetic_train_size=8", "data.synthetic_val_size=4", "data.input_size=96",
                       "data.synthetic_image_size=128", "train.batch_size=4")
    demo_share = 1.5

    def check_config(self):
        d = self.cfg.data
        if d.input_size % 8:
            raise ValueError(f"data.input_size={d.input_size} must be a multiple of 8 (the network's stride)")
        if d.on_bad_record not in ("error", "skip"):
            raise ValueError(f"data.on_bad_record={d.on_bad_record!r}; valid: error, skip")
        if not self.cfg.eval.scales or any(not 0 < v <= 4 for v in self.cfg.eval.scales):
            raise ValueError(f"eval.scales must be factors in (0, 4], got {self.cfg.eval.scales}")
        if len(d.scale_limits) != 2:
            raise ValueError(f"data.scale_limits must be [min, max], got {d.scale_limits}")
        self.decoder = DecoderConfig.preset(self.cfg.eval.preset)
        self.codec = PAFCodec(skeleton=PARTS, input_size=(d.input_size, d.input_size), stride=8, sigma=d.sigma,
                              paf_width=d.paf_width)

    @property
    def skeleton(self):
        return SKELETON

    # --- data -----------------------------------------------------------------------------------
    def _pipeline(self, source, *, train: bool) -> BottomUpDataset:
        d = self.cfg.data
        return BottomUpDataset(source, self.codec, train=train, skeleton="coco17", min_box_diag=d.min_box_diag,
                               max_box_diag=d.max_box_diag, scale_limits=tuple(d.scale_limits),
                               rotation_sigma=d.rotation_sigma, center_jitter=d.center_jitter,
                               hsv_prob=d.hsv_prob, flip_prob=d.flip_prob, mask_dilation=d.mask_dilation,
                               mask_cache_dir=d.mask_cache)

    def _path(self, p: str) -> Path:
        """A data path relative to data.root (default: the shared real samples' coco/)."""
        from posekit.data.io import realdata_root
        root = Path(self.cfg.data.root) if self.cfg.data.root else realdata_root() / "coco"
        return Path(p) if Path(p).is_absolute() else root / p

    def _coco(self, ann: str, images: str, split: str = "train"):
        """One split, checked against COCO's 17 keypoints (names in another order: a warning; Label
        Studio and CVAT files read in COCO's order) as the keypoints family checks its skeleton."""
        d = self.cfg.data
        return load_split(d.format or "coco", ann, images, SKELETON, split=split, root=self._path("."),
                          on_bad_record=d.on_bad_record, skeleton_key="OpenPose's COCO skeleton")

    def build_datasets(self, splits=None):
        d = self.cfg.data
        splits = splits or ("train", "val")
        if d.dataset == "synthetic":
            from posekit.data.synthetic.multiperson import SyntheticMultiPerson
            size = (d.synthetic_image_size, d.synthetic_image_size)
            crowds = dict(image_size=size, min_people=d.synthetic_min_people, max_people=d.synthetic_max_people,
                          crowd_prob=d.synthetic_crowd_prob, small_prob=d.synthetic_small_prob)
            sources = {"train": lambda: SyntheticMultiPerson(d.synthetic_train_size, seed=d.synthetic_seed, **crowds),
                       "val": lambda: SyntheticMultiPerson(d.synthetic_val_size, seed=d.synthetic_seed + 7919, **crowds)}
        elif d.dataset == "coco":
            sources = {"train": lambda: self._coco(d.train_ann, d.train_images)}
            if d.val_ann:
                sources["val"] = lambda: self._coco(d.val_ann, d.val_images, "val")
        else:
            raise ValueError(f"data.dataset={d.dataset!r}; valid: synthetic, coco")
        return {name: self._pipeline(make(), train=name == "train") for name, make in sources.items()
                if name in splits}

    # --- training -------------------------------------------------------------------------------
    def build_loss(self):
        def loss(outputs, batch):
            pafs, heats = outputs
            total, per_stage = paf_loss(pafs.float(), heats.float(), batch["pafs"].float(), batch["heatmaps"].float(),
                                        batch["weight"].float())
            return total, {"loss_last_stage": per_stage[-1].detach()}
        return loss

    # --- the decode seam ------------------------------------------------------------------------
    def forward_decode(self, model, x, *, outputs=None):
        """Last-stage PAFs and heatmaps at stride 8, averaged over `eval.scales` and, with
        eval.flip_test, the mirrored input's: the graph. Grouping people is `postprocess`, outside it."""
        h, w = x.shape[-2] // 8, x.shape[-1] // 8
        sum_p, sum_h, n = 0.0, 0.0, 0
        for scale in self.cfg.eval.scales:
            if scale == 1.0:
                xs, out = x, (outputs if outputs is not None else None)
            else:
                size = (max(8, int(round(x.shape[-2] * scale / 8)) * 8), max(8, int(round(x.shape[-1] * scale / 8)) * 8))
                xs, out = F.interpolate(x, size=size, mode="bilinear", align_corners=False), None
            for flip in (False, True) if self.cfg.eval.flip_test else (False,):
                pafs, heats = model(xs.flip(-1) if flip else xs) if out is None or flip else out
                pafs, heats = pafs[:, -1].float(), heats[:, -1].float()
                if flip:
                    pafs, heats = flip_back_paf(pafs, heats, skeleton=PARTS)
                if pafs.shape[-2:] != (h, w):  # back to the base grid (PAF vectors are unit-free)
                    pafs = F.interpolate(pafs, size=(h, w), mode="bilinear", align_corners=False)
                    heats = F.interpolate(heats, size=(h, w), mode="bilinear", align_corners=False)
                sum_p, sum_h, n = sum_p + pafs, sum_h + heats, n + 1
        return {"pafs": sum_p / n, "heatmaps": sum_h / n}

    def decode_targets(self, batch):
        return {"pafs": batch["pafs"].float(), "heatmaps": batch["heatmaps"].float()}

    def postprocess(self, decoded, batch):
        pafs = decoded["pafs"].detach().float().cpu().numpy()
        heats = decoded["heatmaps"].detach().float().cpu().numpy()
        images, paths = batch.get("images"), batch.get("paths")
        out = []
        matrices = batch["matrix"].detach().double().cpu().numpy() if torch.is_tensor(batch["matrix"]) \
            else np.asarray(batch["matrix"], np.float64)
        for i in range(len(pafs)):  # grouping + inverse affine: the numpy runtime's, shared with ONNX deployments
            kp, person_scores = openpose_people(heats[i], pafs[i], matrices[i], config=self.decoder, parts=PARTS,
                                                stride=float(self.codec.stride))  # (N, 17, 3); missing (0, 0, 0)
            out.append(Results(keypoints=kp[..., :2].reshape(-1, SKELETON.num_keypoints, 2),
                               scores=kp[..., 2].reshape(-1, SKELETON.num_keypoints), skeleton=SKELETON,
                               person_scores=person_scores, image=images[i] if images else None,
                               path=paths[i] if paths else None))
        return out

    def build_evaluator(self, datasets):
        dataset = datasets["val"]
        d = self.cfg.data
        if d.dataset == "coco" and (d.format or "coco") == "coco":
            from posekit.data.io import read_json
            gt = read_json(self._path(d.val_ann), "COCO annotations")
            if getattr(dataset.source, "skipped", None):  # on_bad_record=skip: score against what was read
                gt = _records_read(gt, dataset.source)
        else:
            gt = build_coco_gt([dataset.source.peek(i) if hasattr(dataset.source, "peek") else dataset.source[i]
                                for i in range(len(dataset.source))], skeleton=SKELETON)
        return COCOEvaluator(gt, dataset, self.cfg.eval.max_people)

    # --- use ----------------------------------------------------------------------------
    def prepare_inputs(self, inputs, *, boxes=None, **options):
        """RGB images of any size -> the evaluation letterbox (boxes are not needed: every person
        in the image is found)."""
        return self._pipeline([], train=False).inputs(inputs)

    def export_spec(self):
        s = self.cfg.data.input_size
        return ExportSpec((torch.rand(1, 3, s, s),), ["image"], ["pafs", "heatmaps"],
                          {"image": {0: "batch"}, "pafs": {0: "batch"}, "heatmaps": {0: "batch"}})
