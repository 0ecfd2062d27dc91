"""GMH-MDN: multi-hypothesis 2-D -> 3-D lifting on Human3.6M (Li & Lee 2019).

    2-D joints (pixels) -> model (z-scores them with its codec's buffers) -> M Gaussian kernels
    in normalised 3-D space -> mixture NLL + Dirichlet prior (losses.mdn). forward_decode:
    codec.decode -> hypotheses in mm with their mixing weights -> Results -> MPJPE protocols.

Evaluation (metrics.mpjpe): Protocol #1 (MPJPE) and #2 (P-MPJPE, similarity Procrustes with
the reflection fix), each for the best of the M hypotheses (the paper's headline) and for the
most likely one, per action and as the unweighted mean over actions; 17-joint convention (root
included, as the paper) and 16-joint (suffix `_j16`). Primary metric: `p1_best` (mm, lower).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posekit.codecs.mdn import INPUT_JOINTS, MDNCodec, to_root_relative_17
from posekit.config import DataConfig, EvalConfig, LossConfig
from posekit.data.formats.h36m import (TEST_SUBJECTS, TRAIN_SUBJECTS, find_cameras_file, load_baseline,
                                       load_videopose3d, split_tail)
from posekit.data.lifting import LiftingDataset, collate_items
from posekit.families.base import Evaluator, ExportSpec, Task, register_task
from posekit.losses.mdn import MDNLoss
from posekit.metrics.mpjpe import best_of_m, format_table, hypothesis_errors, per_action_mean, select_hypothesis
from posekit.models import unwrap
from posekit.results import Results
from posekit.runtime.lift import lift_batch, lifted_poses
from posekit.skeletons import get_skeleton

SKELETON = get_skeleton("h36m17")


@dataclass
class GMHDataConfig(DataConfig):
    dataset: str = "synthetic"  # synthetic | h36m (3d-pose-baseline layout) | videopose3d (.npz)
    root: str | None = None  # h36m: folder with S1/, S5/, ... ; videopose3d: folder with the .npz files
    cameras: str | None = None  # cameras.h5 or mmpose cameras.json (default: <root>/cameras.h5, then .json)
    input_2d: str = "detections"  # detections | gt (ground truth projected with the camera model)
    detections: str = "StackedHourglass"  # detections folder name, e.g. StackedHourglassFineTuned240
    npz_3d: str = "data_3d_h36m.npz"  # videopose3d: 3-D file name (in root)
    npz_2d: str | None = None  # videopose3d: 2-D detections file name (in root); None = projected GT
    allow_pickle: bool = False  # videopose3d files are pickled dicts: enable only for files you trust
    train_subjects: list[str] = field(default_factory=lambda: list(TRAIN_SUBJECTS))
    test_subjects: list[str] = field(default_factory=lambda: list(TEST_SUBJECTS))
    actions: list[str] = field(default_factory=list)  # empty = all
    val_fraction: float = 0.1  # tail of every training sequence held out for model selection
    val_gap: int = 25  # frames dropped between the training part and the validation tail
    eval_split: str = "val"  # val | test; test only for the final `posekit eval`, never for selection
    miss_num: int = 0  # missing-joint augmentation: drop exactly this many limb joints (0 = off, the paper)
    miss_prob: float = 1.0  # probability that a training sample is augmented when miss_num > 0
    synthetic_train: int = 50000
    synthetic_val: int = 5000
    synthetic_noise_px: float = 5.0
    synthetic_seed: int = 0


@dataclass
class GMHLossConfig(LossConfig):
    concentration: float = 2.0  # Dirichlet prior on the mixing weights
    prior_weight: float = 1.0


@dataclass
class GMHEvalConfig(EvalConfig):
    batch_size: int = 1024
    table: bool = True  # return a per-action table (printed by `posekit eval`)
    per_action: bool = False  # also return per-action numbers as metric keys


class MPJPEEvaluator(Evaluator):
    """Human3.6M protocols #1/#2, best-of-M and most likely, per action and averaged over actions."""

    def __init__(self, dataset: LiftingDataset, cfg: GMHEvalConfig):
        self.dataset, self.cfg = dataset, cfg
        self.hyps, self.weights, self.gt, self.actions = [], [], [], []

    def update(self, split, results, batch):
        self.hyps += [r.hypotheses[0] for r in results]
        self.weights += [r.hypothesis_weights[0] for r in results]
        self.gt.append(to_root_relative_17(batch["target_3d"].double().cpu().numpy()))
        self.actions.append(batch["action"].cpu().numpy())

    def compute(self) -> dict[str, Any]:
        hyps, weights = np.stack(self.hyps), np.stack(self.weights)
        gt, actions = np.concatenate(self.gt), np.concatenate(self.actions)
        ml = np.argmax(weights, axis=1)
        chunks = {k: [] for k in ("p1", "p2", "p1_j16", "p2_j16")}
        for s in range(0, len(gt), 4096):  # chunks keep the batched SVDs of Protocol #2 small
            h, g = hyps[s:s + 4096], gt[s:s + 4096]
            chunks["p1"].append(hypothesis_errors(h, g))
            chunks["p2"].append(hypothesis_errors(h, g, procrustes=True))
            chunks["p1_j16"].append(hypothesis_errors(h[:, :, 1:], g[:, 1:]))
            chunks["p2_j16"].append(hypothesis_errors(h[:, :, 1:], g[:, 1:], procrustes=True))
        frame_errors = {}
        for key, parts in chunks.items():
            errs = np.concatenate(parts)  # (N, M)
            base, _, suffix = key.partition("_")
            suffix = f"_{suffix}" if suffix else ""
            frame_errors[f"{base}_best{suffix}"] = best_of_m(errs)
            frame_errors[f"{base}_ml{suffix}"] = select_hypothesis(errs, ml)
        metrics: dict[str, Any] = {}
        per_action: dict[str, dict[str, float]] = {}
        for key, errs in frame_errors.items():
            by_action, mean = per_action_mean(errs, actions, self.dataset.action_names)
            metrics[key] = mean
            for action, value in by_action.items():
                per_action.setdefault(action, {})[key] = value
        metrics["p1_best_frames"] = float(frame_errors["p1_best"].mean())  # frame-weighted, for reference
        metrics["mean_max_weight"] = float(weights.max(axis=1).mean())
        metrics["num_frames"] = int(len(gt))
        if self.cfg.per_action:
            for action, row in per_action.items():
                for key in ("p1_best", "p1_ml", "p2_best", "p2_ml"):
                    metrics[f"{key}/{action}"] = row[key]
        if self.cfg.table:
            title = (f"GMH-MDN on {getattr(self.dataset, 'name', 'data')}: {len(gt)} frames, M={weights.shape[1]}; "
                     "mm, 17-joint convention (root included); best = best of M, ML = largest mixing weight")
            metrics["table"] = format_table(per_action, metrics, title=title)
        return metrics


@register_task
class GMHMDNTask(Task):
    name = "gmh_mdn"
    DataConfig = GMHDataConfig
    EvalConfig = GMHEvalConfig
    LossConfig = GMHLossConfig
    primary_metric = "p1_best"
    higher_is_better = False
    synthetic_recipe = "h36m_synthetic"
    smoke_overrides = ("data.synthetic_train=256", "data.synthetic_val=64", "model.args.width=64")
    demo_share = 0.5

    def check_config(self):
        d = self.cfg.data
        if d.eval_split not in ("val", "test"):
            raise ValueError(f"data.eval_split must be 'val' or 'test', got {d.eval_split!r}")
        self.codec: MDNCodec | None = None  # the model's normalisation, linked by prepare()

    @property
    def skeleton(self):
        return SKELETON

    # --- data ---------------------------------------------------------------------------------
    def build_datasets(self, splits=None):
        d: GMHDataConfig = self.cfg.data
        splits = splits or ("train", "val")
        if d.eval_split == "test" and "val" in splits:
            warnings.warn("data.eval_split=test: evaluating on the test subjects; use this for the final "
                          "evaluation only, never for model selection", stacklevel=2)
        aug = {"miss_num": d.miss_num, "miss_prob": d.miss_prob}
        if d.dataset == "synthetic":
            from posekit.data.synthetic.h36m import synthetic_h36m
            seed = d.synthetic_seed + (2 if d.eval_split == "test" else 1)
            out = {"val": synthetic_h36m(d.synthetic_val, seed=seed, noise_px=d.synthetic_noise_px)}
            if "train" in splits:
                out["train"] = synthetic_h36m(d.synthetic_train, seed=d.synthetic_seed,
                                              noise_px=d.synthetic_noise_px, **aug)
            return out
        if d.dataset not in ("h36m", "videopose3d"):
            raise ValueError(f"data.dataset={d.dataset!r}; valid: synthetic, h36m, videopose3d")
        if not d.root:
            raise ValueError(f"data.dataset={d.dataset} needs data.root (the Human3.6M folder)")
        load = self._loader(d)
        if d.eval_split == "test" and "train" not in splits:  # `posekit eval` on the test subjects only
            return {"val": LiftingDataset.from_sequences(load(d.test_subjects))}
        train_seqs, val_seqs = split_tail(load(d.train_subjects), d.val_fraction, gap=d.val_gap)
        if d.eval_split == "test":
            val_seqs = load(d.test_subjects)
        out = {"train": LiftingDataset.from_sequences(train_seqs, **aug)}
        if val_seqs:
            out["val"] = LiftingDataset.from_sequences(val_seqs)
        return out

    def _loader(self, d: GMHDataConfig):
        root = Path(d.root)
        if d.dataset == "h36m":
            return lambda subjects: load_baseline(root, subjects, actions=d.actions or None, input_2d=d.input_2d,
                                                  detections=d.detections, cameras=d.cameras)
        cameras = find_cameras_file(root, d.cameras)
        npz_2d = (root / d.npz_2d) if (d.npz_2d and d.input_2d == "detections") else None
        return lambda subjects: load_videopose3d(root / d.npz_3d, cameras, subjects, actions=d.actions or None,
                                                 npz_2d=npz_2d, allow_pickle=d.allow_pickle)

    def prepare(self, model, datasets):
        """Link the normalisation: fit it on the training set when there is one (training, the
        oracle), keep the model's (a trained checkpoint) otherwise."""
        codec = unwrap(model).codec if model is not None else MDNCodec()
        if "train" in datasets:
            codec.fit(datasets["train"].inputs, datasets["train"].targets)
        self.codec = codec

    # --- training -----------------------------------------------------------------------------
    def build_loss(self):
        mdn = MDNLoss(concentration=self.cfg.loss.concentration, prior_weight=self.cfg.loss.prior_weight)

        def loss(out, batch):
            target = out["target"] if "target" in out else self._codec().normalize_3d(batch["target_3d"].float())
            value, parts = mdn(out["means"], out["sigmas"], out["weights"], target)
            return value, {"nll": parts["nll"], "prior": parts["prior"], "sigma": out["sigmas"].detach().mean(),
                           "max_weight": out["weights"].detach().max(dim=1).values.mean()}
        return loss

    def collate(self, items):
        """Batches sliced from the arrays in one go (LiftingDataset.__getitems__) pass through."""
        return collate_items(items)

    def model_inputs(self, batch):
        return batch["input_2d"].float()

    def training_step(self, model, batch):
        out = model(batch["input_2d"], mask=batch.get("mask"), target=batch["target_3d"])
        return self.loss(out, batch)

    # --- the decode seam ----------------------------------------------------------------------
    def _codec(self) -> MDNCodec:
        if self.codec is None or not self.codec.is_fitted:
            raise RuntimeError("the lifter has no normalisation statistics: train it or load a trained checkpoint")
        return self.codec

    def forward_decode(self, model, x, *, outputs=None):
        """(B, 16, 2) pixels -> hypotheses (B, M, 17, 3) mm (zero root), weights (B, M), sigmas (B, M)."""
        out = model(x) if outputs is None else outputs
        dec = unwrap(model).codec.decode(out["means"].float(), out["sigmas"].float(), out["weights"].float())
        return {"hypotheses": dec["hypotheses"], "weights": dec["weights"], "sigmas": dec["sigmas"]}

    def decode_targets(self, batch):
        """The codec round trip: targets normalised and decoded again, as one certain hypothesis."""
        codec = self._codec()
        t = batch["target_3d"].float()
        z = codec.normalize_3d(t.reshape(len(t), -1))[:, None]
        ones = torch.ones(len(t), 1, device=t.device)
        dec = codec.decode(z, ones, ones)
        return {"hypotheses": dec["hypotheses"], "weights": dec["weights"], "sigmas": dec["sigmas"]}

    def postprocess(self, decoded, batch):
        """Best hypothesis, scores and grouping: `posekit.runtime.lift.lifted_poses`, the numpy
        step an exported lifter runs without torch as well."""
        arrays = [decoded[k].detach().double().cpu().numpy() for k in ("hypotheses", "weights", "sigmas")]
        return [Results(skeleton=SKELETON, **pose) for pose in lifted_poses(*arrays, batch)]

    def build_evaluator(self, datasets):
        return MPJPEEvaluator(datasets["val"], self.cfg.eval)

    # --- use ----------------------------------------------------------------------------
    def prepare_inputs(self, inputs, *, boxes=None, skeleton: str = "h36m17", rescale: bool = False):
        """2-D poses -> a lifting batch. Each input is (K, 2|3) or (P, K, 2|3) pixels (a third
        channel is a score; <= 0 marks a missing joint), a 2-D `Results`, or a dict with
        "keypoints" (and "skeleton", "scores"). skeleton: the joint order of array inputs
        (h36m17, h36m16 = the 16 model inputs, mpii16 = Stacked Hourglass output). rescale: fit
        each pose to the training set's mean 2-D pose (any camera unlike Human3.6M's)."""
        codec = self._codec()  # an untrained lifter refuses instead of printing nonsense
        # the numpy steps an exported lifter runs without torch too (posekit.runtime.lift)
        batch = lift_batch(inputs, skeleton=skeleton, rescale=rescale,
                           mean_2d=codec.mean_2d.detach().cpu().numpy() if rescale else None)
        batch["input_2d"] = torch.from_numpy(batch["input_2d"])
        return batch

    def sample_inputs(self, datasets, count: int = 2):
        """2-D poses (16 lifter inputs, h36m16 order) from the evaluation split."""
        dataset = datasets["val"]
        return [{"keypoints": dataset.inputs[i].astype(np.float64), "skeleton": "h36m16"}
                for i in range(min(count, len(dataset)))]

    def export_spec(self):
        example = self._codec().mean_2d.detach().cpu().reshape(1, -1, 2).repeat(2, 1, 1) \
            + torch.randn(2, len(INPUT_JOINTS), 2) * 20.0
        dyn = {n: {0: "batch"} for n in ("keypoints_2d", "hypotheses", "weights", "sigmas")}
        return ExportSpec((example,), ["keypoints_2d"], ["hypotheses", "weights", "sigmas"], dyn)

    # --- demo ---------------------------------------------------------------------------------
    def demo(self, predict, datasets, out_dir, *, count: int = 4):
        """3-D plots of all hypotheses beside the 2-D input for a few samples spread over the set."""
        dataset: LiftingDataset = datasets["val"]
        out_dir = Path(out_dir)
        picks = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
        poses = dataset.meta.get("poses_2d_17")
        if poses is not None:  # one batched prediction for every pick
            predicted = predict([np.asarray(poses[i], dtype=np.float64) for i in picks], skeleton="h36m17")
        else:
            predicted = predict([np.asarray(dataset.inputs[i], dtype=np.float64) for i in picks], skeleton="h36m16")
        paths = []
        for n, (i, res) in enumerate(zip(picks, predicted)):
            gt = to_root_relative_17(dataset.targets[i:i + 1].astype(np.float64))[0]
            res.meta["mpjpe_per_hypothesis_mm"] = np.linalg.norm(res.hypotheses[0] - gt, axis=-1).mean(-1).tolist()
            res.meta["gt_keypoints_3d"] = gt[None].tolist()  # the figure draws it dashed beside each hypothesis
            action = dataset.action_names[dataset.action_index[i]] if dataset.action_index[i] >= 0 else "?"
            res.path = f"{getattr(dataset, 'name', 'data')}[{i}] {action}"
            paths.append(res.save(out_dir / f"gmh_mdn_{n}.png"))
            res.save(out_dir / f"gmh_mdn_{n}.json")
        return paths
