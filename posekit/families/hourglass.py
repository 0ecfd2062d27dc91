"""Stacked Hourglass on MPII (16 joints): top-down heatmaps, flip test, official PCKh.

Data: MPII record (JSON / pose-hg-train h5 / official .mat, or synthetic figures) -> one affine
crop per sample -> Gaussian heatmaps + per-joint weights -> model (B, stacks, K, 64, 64) ->
MSE (or masked BCE) over every stack. Evaluation: last stack, averaged with the flipped input's
flipped-back heatmaps -> argmax + quarter-cell shift (or DARK) in crop pixels -> inverse affine
-> original image pixels -> PCKh table (Head ... Ankle, Mean, Mean@0.1) and torso PCK@0.2.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from posekit.codecs.heatmap import REFINEMENTS, HeatmapCodec, decode_heatmaps, flip_back_heatmaps
from posekit.config import DataConfig as BaseDataConfig
from posekit.config import EvalConfig as BaseEvalConfig
from posekit.data.mpii import (MPIIImageSource, TopDownHeatmapDataset, attach_head_sizes, load_mpii, load_mpii_h5,
                               load_mpii_mat)
from posekit.data.transforms import affine_points, crop_affine, warp_image
from posekit.losses.heatmap import heatmap_loss
from posekit.metrics.mpii import PCKH_PARTS, pckh_table, torso_pck
from posekit.skeletons import get_skeleton
from posekit.tasks import Task, register_task, unwrap

SKELETON = get_skeleton("mpii16")
BOX_PAD = 1.25  # a person box (x, y, w, h) is enlarged like MPII's scale before cropping


@dataclass
class HourglassDataConfig(BaseDataConfig):
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
    loss: str = "mse"  # mse (Newell) | bce (the TF reference, masked per joint here)
    stack_reduction: str = "sum"  # sum (Newell) | mean over stacks
    augment: bool = True
    scale_factor: float = 0.25  # box side x U(1 - f, 1 + f)
    rotation: float = 30.0  # degrees, U(-r, r)
    rotation_prob: float = 0.4
    flip: bool = True
    color_scale: float = 0.2  # per-channel x U(1 - c, 1 + c)
    synthetic_train_size: int = 2000
    synthetic_val_size: int = 200
    synthetic_image_size: int = 256
    synthetic_seed: int = 0


@dataclass
class HourglassEvalConfig(BaseEvalConfig):
    flip_test: bool = True
    refine: str = "shift"  # none | shift (Newell's quarter pixel) | dark


class _Repeat(torch.utils.data.Dataset):
    def __init__(self, dataset, times: int):
        self.dataset, self.times = dataset, times

    def __len__(self):
        return len(self.dataset) * self.times

    def __getitem__(self, i):
        return self.dataset[i % len(self.dataset)]


def _codec(cfg) -> HeatmapCodec:
    d = cfg.data
    if d.input_size % d.heatmap_size:
        raise ValueError(f"data.input_size={d.input_size} must be a multiple of data.heatmap_size={d.heatmap_size}")
    return HeatmapCodec((d.input_size,) * 2, (d.heatmap_size,) * 2, d.sigma, refine=cfg.eval.refine)


def predict_heatmaps(model: nn.Module, images: torch.Tensor, *, flip_test: bool, sigmoid: bool = False) -> torch.Tensor:
    """Last-stack heatmaps (N, K, h, w); with flip_test, averaged with the mirrored input's
    heatmaps mirrored back and left/right swapped."""
    heat = model(images)[:, -1]
    if sigmoid:
        heat = torch.sigmoid(heat)
    if flip_test:
        flipped = model(images.flip(-1))[:, -1]
        if sigmoid:
            flipped = torch.sigmoid(flipped)
        heat = 0.5 * (heat + flip_back_heatmaps(flipped, SKELETON.flip_index))
    return heat


def _invert_affines(matrices: np.ndarray) -> np.ndarray:
    """Batched inverse of (N, 2, 3) affine matrices."""
    a_inv = np.linalg.inv(matrices[:, :, :2])
    t = -np.einsum("nij,nj->ni", a_inv, matrices[:, :, 2])
    return np.concatenate([a_inv, t[:, :, None]], axis=2)


class DecodedHourglass(nn.Module):
    """Export wrapper: crops (N, 3, S, S) RGB in [0, 1] -> keypoints (N, K, 2) in crop pixels and
    scores (N, K). Flip test and heatmap decoding run inside the graph; mapping back to the
    photo is one 2x3 matrix per crop, kept by the caller."""

    def __init__(self, model: nn.Module, *, stride: float, flip_test: bool, refine: str, sigma: float,
                 sigmoid: bool = False):
        super().__init__()
        self.model, self.stride, self.flip_test = model, float(stride), flip_test
        self.refine, self.sigma, self.sigmoid = refine, sigma, sigmoid

    def forward(self, images: torch.Tensor):
        heat = predict_heatmaps(self.model, images, flip_test=self.flip_test, sigmoid=self.sigmoid)
        return decode_heatmaps(heat, refine=self.refine, stride_xy=(self.stride, self.stride), dark_sigma=self.sigma)


@register_task
class HourglassTask(Task):
    name = "hourglass"
    DataConfig = HourglassDataConfig
    EvalConfig = HourglassEvalConfig
    primary_metric = "pckh"
    higher_is_better = True

    def __init__(self):
        self._loss = ("mse", "sum")

    # --- building -----------------------------------------------------------------------
    def build_model(self, cfg):
        model = super().build_model(cfg)
        if getattr(model, "num_joints", SKELETON.num_keypoints) != SKELETON.num_keypoints:
            raise ValueError(f"model {cfg.model.name!r} predicts {model.num_joints} joints; the hourglass task "
                             f"uses the {SKELETON.num_keypoints}-joint MPII skeleton")
        need = 4 * 2 ** getattr(model, "n_low", 0)
        if cfg.data.input_size % need:
            raise ValueError(f"data.input_size={cfg.data.input_size} must be divisible by {need} for "
                             f"{cfg.model.name} (stride 4 x 2**n_low)")
        if cfg.data.input_size // getattr(model, "stride", 4) != cfg.data.heatmap_size:
            raise ValueError(f"data.heatmap_size={cfg.data.heatmap_size} must be data.input_size / 4 "
                             f"= {cfg.data.input_size // 4} for a stacked hourglass")
        return model

    def _check(self, cfg) -> None:
        d = cfg.data
        if d.loss not in ("mse", "bce"):
            raise ValueError(f"data.loss={d.loss!r}; valid: mse, bce")
        if d.stack_reduction not in ("sum", "mean"):
            raise ValueError(f"data.stack_reduction={d.stack_reduction!r}; valid: sum, mean")
        if cfg.eval.refine not in REFINEMENTS:
            raise ValueError(f"eval.refine={cfg.eval.refine!r}; valid: {', '.join(REFINEMENTS)}")
        self._loss = (d.loss, d.stack_reduction)

    def _mpii_sources(self, cfg):
        from posekit.data.io import realdata_root

        d = cfg.data
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
        val_src = MPIIImageSource(val, image_dir, skip_missing_images=d.skip_missing_images) if val else None
        if len(train_src) == 0:
            raise ValueError(f"no training record of {resolve(d.train_file)} has its image in {image_dir}")
        if val_src is not None and len(val_src) == 0:
            raise ValueError(f"no validation record of {resolve(d.val_file)} has its image in {image_dir}")
        return train_src, val_src

    def build_datasets(self, cfg):
        from posekit.data.synthetic_mpii import SyntheticMPII

        self._check(cfg)
        d = cfg.data
        codec = _codec(cfg)
        if d.dataset == "synthetic":
            train_src = SyntheticMPII(d.synthetic_train_size, seed=d.synthetic_seed, image_size=d.synthetic_image_size)
            val_src = SyntheticMPII(d.synthetic_val_size, seed=d.synthetic_seed + 1_000_003,
                                    image_size=d.synthetic_image_size)
        elif d.dataset == "mpii":
            train_src, val_src = self._mpii_sources(cfg)
        else:
            raise ValueError(f"data.dataset={d.dataset!r}; valid: synthetic, mpii")
        aug = dict(skeleton=SKELETON.name, scale_factor=d.scale_factor, rotation=d.rotation,
                   rotation_prob=d.rotation_prob, flip=d.flip, color_scale=d.color_scale)
        train = TopDownHeatmapDataset(train_src, codec, train=d.augment, **aug)
        if d.train_repeat > 1:
            train = _Repeat(train, d.train_repeat)
        val = TopDownHeatmapDataset(val_src, codec, train=False, **aug) if val_src is not None else None
        return train, val

    def prepare(self, model, train_set, cfg):
        self._check(cfg)

    # --- training -----------------------------------------------------------------------
    def training_step(self, model, batch):
        device = next(model.parameters()).device
        images = batch["image"].to(device).float()
        target = batch["target"].to(device).float()
        weight = batch["target_weight"].to(device).float()
        outputs = model(images)
        kind, reduction = self._loss
        loss, per_stack = heatmap_loss(outputs.float(), target, weight, kind=kind, stack_reduction=reduction)
        return loss, {"loss_last_stack": float(per_stack[-1].detach())}

    # --- evaluation ---------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, dataset, cfg):
        self._check(cfg)
        model = unwrap(model)
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        if cfg.eval.max_samples:
            dataset = torch.utils.data.Subset(dataset, range(min(len(dataset), cfg.eval.max_samples)))
        loader = torch.utils.data.DataLoader(dataset, batch_size=max(1, cfg.eval.batch_size), shuffle=False,
                                             collate_fn=self.collate)
        codec = _codec(cfg)
        kind, reduction = self._loss
        preds, gts, annotated, heads, losses = [], [], [], [], []
        for batch in loader:
            images = batch["image"].to(device).float()
            outputs = model(images).float()
            loss, _ = heatmap_loss(outputs, batch["target"].to(device).float(),
                                   batch["target_weight"].to(device).float(), kind=kind, stack_reduction=reduction)
            losses.append(float(loss) * len(images))
            heat = outputs[:, -1]
            if kind == "bce":
                heat = torch.sigmoid(heat)
            if cfg.eval.flip_test:
                flipped = model(images.flip(-1))[:, -1].float()
                if kind == "bce":
                    flipped = torch.sigmoid(flipped)
                heat = 0.5 * (heat + flip_back_heatmaps(flipped, SKELETON.flip_index))
            kp, _ = decode_heatmaps(heat, refine=cfg.eval.refine, stride_xy=codec.stride, dark_sigma=codec.sigma)
            inv = _invert_affines(batch["matrix"].double().numpy())
            preds.append(affine_points(kp.double().cpu().numpy(), inv))
            gts.append(batch["joints"].double().numpy())
            annotated.append(batch["annotated"].numpy().astype(bool))
            heads.append(batch["head_size"].double().numpy())
        if was_training:
            model.train()
        pred, gt = np.concatenate(preds), np.concatenate(gts)
        ann, head = np.concatenate(annotated), np.concatenate(heads)
        metrics: dict[str, float] = {"val_loss": sum(losses) / len(pred)}
        has_head = np.isfinite(head) & (head > 0)
        if not has_head.any():
            raise ValueError("PCKh needs head sizes, and no validation record has one: validate on a file with head "
                             "boxes (pose-hg-train valid.h5, the official .mat) or set data.head_sizes_from")
        table = pckh_table(pred[has_head], gt[has_head], ann[has_head], head[has_head])
        metrics["pckh"] = table["Mean"]
        metrics["pckh@0.1"] = table["Mean@0.1"]
        for name, _ in PCKH_PARTS:
            metrics[f"pckh_{name.lower()}"] = table[name]
        metrics["pck_torso@0.2"] = torso_pck(pred, gt, ann, 0.2)["mean"]
        metrics["samples"] = float(len(pred))
        metrics["pckh_samples"] = float(has_head.sum())
        return metrics

    # --- use ----------------------------------------------------------------------------
    def _predict_crops(self, model, images: list[np.ndarray], matrices: list[np.ndarray], cfg):
        """Crops through the model (batched): keypoints in original pixels (N, K, 2), scores (N, K)."""
        model = unwrap(model)
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        s = cfg.data.input_size
        codec = _codec(cfg)
        sigmoid = cfg.data.loss == "bce"
        kps, scs = [], []
        step = max(1, cfg.eval.batch_size)
        with torch.no_grad():
            for start in range(0, len(images), step):
                idx = range(start, min(len(images), start + step))
                crops = np.stack([warp_image(images[i], matrices[i], (s, s)) for i in idx])
                x = torch.from_numpy(crops).permute(0, 3, 1, 2).to(device).float().div_(255.0)
                heat = predict_heatmaps(model, x, flip_test=cfg.eval.flip_test, sigmoid=sigmoid).float()
                kp, sc = decode_heatmaps(heat, refine=cfg.eval.refine, stride_xy=codec.stride, dark_sigma=codec.sigma)
                inv = _invert_affines(np.stack([matrices[i] for i in idx]))
                kps.append(affine_points(kp.double().cpu().numpy(), inv))
                scs.append(sc.double().cpu().numpy())
        if was_training:
            model.train()
        return np.concatenate(kps), np.concatenate(scs)

    def predict(self, model, inputs, cfg, *, boxes=None, paths=None, **kwargs):
        """RGB uint8 images (or paths) -> one single-person `Results` per image, in its own pixels.

        boxes: one person box [x, y, w, h] (or None = the whole image) per image; the crop is the
        box's longer side x 1.25 (MPII's padding), centred on the box."""
        from posekit.data.io import load_inputs
        from posekit.results import Results

        if boxes is not None and len(boxes) != len(inputs):
            raise ValueError(f"predict got {len(boxes)} boxes for {len(inputs)} images (one box or None per image)")
        images, names = load_inputs(inputs, paths)
        matrices, used_boxes = [], []
        s = cfg.data.input_size
        for i, item in enumerate(images):
            h, w = item.shape[:2]
            box = None if boxes is None else boxes[i]
            if box is None:
                box = [0.0, 0.0, float(w), float(h)]
                side = float(max(w, h))
            else:
                box = [float(v) for v in box]
                if len(box) != 4 or box[2] <= 0 or box[3] <= 0:
                    raise ValueError(f"person box must be [x, y, w, h] with positive w, h; got {boxes[i]!r}")
                side = max(box[2], box[3]) * BOX_PAD
            center = (box[0] + box[2] / 2.0 - 0.5, box[1] + box[3] / 2.0 - 0.5)
            matrices.append(crop_affine(center, side, (s, s)))
            used_boxes.append(box)
        if not images:
            return []
        kp, sc = self._predict_crops(model, images, matrices, cfg)
        return [Results(keypoints=kp[i][None], scores=sc[i][None], skeleton=SKELETON,
                        boxes=np.asarray(used_boxes[i], float)[None], image=images[i], path=names[i])
                for i in range(len(images))]

    def export_module(self, model, cfg):
        self._check(cfg)
        s = cfg.data.input_size
        wrapper = DecodedHourglass(unwrap(model), stride=s / cfg.data.heatmap_size, flip_test=cfg.eval.flip_test,
                                   refine=cfg.eval.refine, sigma=cfg.data.sigma, sigmoid=cfg.data.loss == "bce").eval()
        example = (torch.rand(2, 3, s, s),)
        dyn = {"images": {0: "batch"}, "keypoints": {0: "batch"}, "scores": {0: "batch"}}
        return wrapper, example, ["images"], ["keypoints", "scores"], dyn

    def demo(self, model, dataset, cfg, out_dir):
        """Prediction (left) beside ground truth (right) for the first few validation people."""
        from posekit.data.io import write_image
        from posekit.viz import draw_skeleton

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        source = dataset.source
        s = cfg.data.input_size
        paths = []
        n = min(4, len(source))
        pairs = [source[i] for i in range(n)]
        matrices = [crop_affine(rec.center, 200.0 * rec.scale, (s, s)) for rec, _ in pairs]
        kp, sc = self._predict_crops(model, [img for _, img in pairs], matrices, cfg)
        for i, (rec, img) in enumerate(pairs):
            pred = draw_skeleton(img, kp[i][None], sc[i][None], SKELETON, score_threshold=0.0)
            gt = draw_skeleton(img, rec.joints[None], rec.annotated[None].astype(float), SKELETON,
                               score_threshold=0.5)
            path = out_dir / f"hourglass_demo_{i}.png"
            write_image(path, np.concatenate([pred, gt], axis=1))
            paths.append(path)
        return paths
