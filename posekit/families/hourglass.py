"""Stacked Hourglass on MPII (16 joints): top-down heatmaps, flip test, official PCKh.

Reads from five modules: `data.formats.mpii` (records -> Samples), `data.topdown` (one affine
crop per person), `codecs.heatmap` (Gaussian targets; argmax + quarter-cell shift or DARK),
`losses.heatmap` (MSE or masked BCE over every stack) and `metrics.mpii` (the PCKh table).
The model is `models/hourglass.py`.

    Sample -> crop -> HeatmapCodec.encode -> model (B, stacks, 16, 64, 64) -> heatmap_loss
    crop -> forward_decode (last stack, flip-averaged, decoded in crop pixels) -> postprocess
    (inverse affine) -> Results -> PCKh (Head ... Ankle, Mean, Mean@0.1) and torso PCK@0.2
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from posekit.codecs.heatmap import REFINEMENTS, HeatmapCodec, check_heatmap_model, flip_test_heatmaps, heatmap_grid
from posekit.config import DataConfig, EvalConfig, LossConfig
from posekit.data.formats.mpii import MPIIImageSource, attach_head_sizes, load_mpii, load_mpii_h5, load_mpii_mat
from posekit.data.topdown import CropRule, TopDownAugment, TopDownDataset, to_original_frame
from posekit.families.base import Evaluator, ExportSpec, Task, register_task
from posekit.losses.heatmap import heatmap_loss
from posekit.metrics.mpii import PCKH_PARTS, pckh_table, torso_pck
from posekit.results import Results
from posekit.skeletons import get_skeleton

SKELETON = get_skeleton("mpii16")
BOX_PAD = 1.25  # a user's person box (x, y, w, h) is enlarged like MPII's scale before cropping


@dataclass
class HourglassDataConfig(DataConfig):
    dataset: str = "synthetic"  # synthetic | mpii
    root: str | None = None  # mpii: base folder of the files below (default: the shared real samples' mpii/)
    train_file: str = "mmpose/test_mpii.json"  # .json (HRNet/MMPose), .h5 (pose-hg-train) or .mat (official)
    val_file: str | None = "pose_hg_train/valid.h5"
    image_dir: str = "mmpose/images"
    valid_pairs: str | None = None  # .mat only: the validation list (pose-hg-train valid.h5)
    head_sizes_from: str | None = None  # an .h5 whose head sizes are attached to JSON validation records
    skip_missing_images: bool = False  # drop records whose image is absent (e.g. valid.h5 next to 5 images)
    train_repeat: int = 1  # repeat the training records (tiny sets: overfitting runs)
    input_size: int = 256
    heatmap_size: int = 64
    sigma: float = 1.0  # Gaussian std in heatmap cells
    augment: bool = True
    scale_factor: float = 0.25  # box side x U(1 - f, 1 + f)
    rotation: float = 30.0  # degrees, U(-r, r)
    rotation_prob: float = 0.4
    flip: bool = True
    color_scale: float = 0.2  # per-channel x U(1 - c, 1 + c)
    reduced_decode: bool = True  # decode JPEGs at 1/2 or 1/4 size when the crop box is >= 2x / 4x the input
    synthetic_train_size: int = 2000
    synthetic_val_size: int = 200
    synthetic_image_size: int = 256
    synthetic_seed: int = 0


@dataclass
class HourglassLossConfig(LossConfig):
    kind: str = "mse"  # mse (Newell) | bce (the TF reference, masked per joint here)
    stack_reduction: str = "sum"  # sum (Newell) | mean over stacks
    # joints without a target (unlabelled, or outside the crop): mask = no loss on their maps;
    # zero = trained towards an all-zero map, as Newell's code (and the TF reference) do
    absent_joints: str = "mask"


@dataclass
class HourglassEvalConfig(EvalConfig):
    flip_test: bool = True
    refine: str = "shift"  # none | shift (Newell's quarter pixel) | dark


class _Repeat(torch.utils.data.Dataset):
    def __init__(self, dataset, times: int):
        self.dataset, self.times = dataset, times

    def __len__(self):
        return len(self.dataset) * self.times

    def __getitem__(self, i):
        return self.dataset[i % len(self.dataset)]


HEAD_SIZES_NEEDED = ("PCKh needs head sizes, and no validation record has one: validate on a file with head "
                     "boxes (pose-hg-train valid.h5, the official .mat) or set data.head_sizes_from")


class PCKhEvaluator(Evaluator):
    """The official MPII PCKh table over records with a head size, plus torso PCK@0.2 over all."""

    def __init__(self):
        self.pred, self.gt, self.head = [], [], []

    def update(self, split, results, batch):
        self.pred += [r.keypoints[0] for r in results]
        self.gt.append(batch["keypoints"].cpu().numpy())
        self.head.append(batch["head_size"].cpu().numpy())

    def check(self, datasets):
        records = getattr(getattr(datasets.get("val"), "source", None), "records", None)
        if records is not None and not any(np.isfinite(r.head_size) and r.head_size > 0 for r in records):
            raise ValueError(HEAD_SIZES_NEEDED)

    def compute(self):
        pred, gt, head = np.stack(self.pred), np.concatenate(self.gt), np.concatenate(self.head)
        annotated = gt[..., 2] > 0
        has_head = np.isfinite(head) & (head > 0)
        if not has_head.any():
            raise ValueError(HEAD_SIZES_NEEDED)
        table = pckh_table(pred[has_head], gt[has_head, :, :2], annotated[has_head], head[has_head])
        metrics = {"pckh": table["Mean"], "pckh@0.1": table["Mean@0.1"]}
        metrics |= {f"pckh/{name.lower()}": table[name] for name, _ in PCKH_PARTS}
        metrics["pck_torso@0.2"] = torso_pck(pred, gt[..., :2], annotated, 0.2)["mean"]
        metrics["samples"] = float(len(pred))
        metrics["pckh_samples"] = float(has_head.sum())
        return metrics


@register_task
class HourglassTask(Task):
    name = "hourglass"
    DataConfig = HourglassDataConfig
    EvalConfig = HourglassEvalConfig
    LossConfig = HourglassLossConfig
    primary_metric = "pckh"
    higher_is_better = True
    synthetic_recipe = "mpii_synthetic"
    smoke_overrides = ("data.synthetic_train_size=16", "data.synthetic_val_size=4")
    # channels_last: ~0.94-0.98x step time on CPU (0.85x on a quiet machine; engine/precision.py)
    channels_last = True
    demo_share = 1.2

    def check_config(self):
        d, loss = self.cfg.data, self.cfg.loss
        if loss.kind not in ("mse", "bce"):
            raise ValueError(f"loss.kind={loss.kind!r}; valid: mse, bce")
        if loss.stack_reduction not in ("sum", "mean"):
            raise ValueError(f"loss.stack_reduction={loss.stack_reduction!r}; valid: sum, mean")
        if loss.absent_joints not in ("mask", "zero"):
            raise ValueError(f"loss.absent_joints={loss.absent_joints!r}; valid: mask, zero")
        if self.cfg.eval.refine not in REFINEMENTS:
            raise ValueError(f"eval.refine={self.cfg.eval.refine!r}; valid: {', '.join(REFINEMENTS)}")
        self.codec = HeatmapCodec((d.input_size,) * 2, heatmap_grid(d.input_size, d.heatmap_size), d.sigma,
                                  refine=self.cfg.eval.refine)

    @property
    def skeleton(self):
        return SKELETON

    # --- building -----------------------------------------------------------------------
    def build_model(self):
        model = super().build_model()
        if getattr(model, "num_joints", SKELETON.num_keypoints) != SKELETON.num_keypoints:
            raise ValueError(f"model {self.cfg.model.name!r} predicts {model.num_joints} joints; the hourglass task "
                             f"uses the {SKELETON.num_keypoints}-joint MPII skeleton")
        check_heatmap_model(model, self.codec, self.cfg.model.name)
        return model

    def build_loss(self):
        """Heatmap loss over every stack. absent_joints=mask weights each joint map by its target
        weight (0 for a joint without a target); zero trains every map, the absent joints' towards
        the all-zero map the codec gives them (Newell)."""
        kind, reduction = self.cfg.loss.kind, self.cfg.loss.stack_reduction
        masked = self.cfg.loss.absent_joints == "mask"

        def loss(outputs, batch):
            weights = batch["target_weight"].float() if masked else None
            total, per_stack = heatmap_loss(outputs.float(), batch["target"].float(), weights,
                                            kind=kind, stack_reduction=reduction)
            return total, {"loss_last_stack": per_stack[-1].detach()}
        return loss

    def _pipeline(self, source, *, train: bool) -> TopDownDataset:
        d = self.cfg.data
        return TopDownDataset(source, self.codec, skeleton=SKELETON, input_size=d.input_size,
                              crop=CropRule("box", 1.0),
                              augment=TopDownAugment.from_data_config(d) if train and d.augment else None,
                              meta_keys=("head_size",), reduced_decode=d.reduced_decode)

    def _mpii_sources(self):
        from posekit.data.io import realdata_root

        d = self.cfg.data
        root = Path(d.root) if d.root else realdata_root() / "mpii"

        def resolve(p):
            return None if p is None else (Path(p) if Path(p).is_absolute() else root / p)

        image_dir = resolve(d.image_dir)
        if not image_dir.is_dir():
            raise FileNotFoundError(f"data.image_dir: MPII image folder not found: {image_dir}")

        def records(path, split):
            if path.suffix.lower() == ".mat":
                return load_mpii_mat(path, split=split, valid_pairs=resolve(d.valid_pairs))
            return load_mpii(path)

        train = records(resolve(d.train_file), "train")
        val = records(resolve(d.val_file), "valid") if d.val_file else None
        if val is not None and d.head_sizes_from:
            attach_head_sizes(val, load_mpii_h5(resolve(d.head_sizes_from)))
        train_src = MPIIImageSource(train, image_dir, skip_missing_images=d.skip_missing_images)
        if val is not None and len(val) == 0:  # an empty file would mean training with no best.pt, silently
            raise ValueError(f"data.val_file {resolve(d.val_file)} holds no record: give a validation file with "
                             "records, or leave data.val_file unset to train without validation")
        val_src = MPIIImageSource(val, image_dir, skip_missing_images=d.skip_missing_images) if val else None
        if len(train_src) == 0:
            raise ValueError(f"no training record of {resolve(d.train_file)} has its image in {image_dir}")
        if val_src is not None and len(val_src) == 0:
            raise ValueError(f"no validation record of {resolve(d.val_file)} has its image in {image_dir}")
        return train_src, val_src

    def build_datasets(self, splits=None):
        from posekit.data.synthetic.mpii import SyntheticMPII

        d = self.cfg.data
        if d.dataset == "synthetic":
            train_src = SyntheticMPII(d.synthetic_train_size, seed=d.synthetic_seed, image_size=d.synthetic_image_size)
            val_src = SyntheticMPII(d.synthetic_val_size, seed=d.synthetic_seed + 1_000_003,
                                    image_size=d.synthetic_image_size)
        elif d.dataset == "mpii":
            train_src, val_src = self._mpii_sources()
        else:
            raise ValueError(f"data.dataset={d.dataset!r}; valid: synthetic, mpii")
        train = self._pipeline(train_src, train=True)
        out = {"train": _Repeat(train, d.train_repeat) if d.train_repeat > 1 else train}
        if val_src is not None:
            out["val"] = self._pipeline(val_src, train=False)
        return out

    # --- the decode seam ----------------------------------------------------------------
    def _decode(self, heat):
        kp, scores = self.codec.decode(heat)  # the codec carries eval.refine, the stride and sigma
        return {"keypoints": kp, "scores": scores}

    def forward_decode(self, model, x, *, outputs=None):
        """Last-stack heatmaps, averaged with the mirrored input's mirrored-back ones (flip test),
        decoded to crop pixels."""
        return self._decode(flip_test_heatmaps(model, x, outputs, SKELETON.flip_index, flip=self.cfg.eval.flip_test,
                                               logits=self.cfg.loss.kind == "bce"))

    def decode_targets(self, batch):
        return self._decode(batch["target"].float())

    def postprocess(self, decoded, batch):
        kp = to_original_frame(decoded["keypoints"], batch["matrix"])
        scores = decoded["scores"].detach().double().cpu().numpy()
        images, paths = batch.get("images"), batch.get("paths")
        return [Results(keypoints=kp[i][None], scores=scores[i][None], skeleton=SKELETON,
                        boxes=batch["box"][i].cpu().numpy()[None] if "box" in batch else None,
                        image=images[i] if images else None, path=paths[i] if paths else None)
                for i in range(len(kp))]

    def build_evaluator(self, datasets):
        return PCKhEvaluator()

    # --- use ----------------------------------------------------------------------------
    def prepare_inputs(self, inputs, *, boxes=None, **options):
        """RGB images -> crops: around each box (its longer side x 1.25, MPII's padding), or the
        whole image when the box is None."""
        return self._pipeline([], train=False).inputs(inputs, boxes, padding=BOX_PAD)

    def export_spec(self):
        s = self.cfg.data.input_size
        return ExportSpec((torch.rand(2, 3, s, s),), ["images"], ["keypoints", "scores"],
                          {"images": {0: "batch"}, "keypoints": {0: "batch"}, "scores": {0: "batch"}})
