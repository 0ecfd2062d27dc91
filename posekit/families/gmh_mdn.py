"""GMH-MDN family: multi-hypothesis 2-D -> 3-D lifting on Human3.6M (Li & Lee 2019).

Data flow: 2-D joints (pixels) -> model (z-scores them with its buffers) -> M Gaussian kernels in
normalised 3-D space -> mixture NLL + Dirichlet prior (training), or un-normalised hypotheses in
mm with their mixing weights (evaluation, prediction, export).

Evaluation follows the Human3.6M protocols: Protocol #1 (MPJPE) and #2 (P-MPJPE, similarity
Procrustes with the reflection fix), each for the best of the M hypotheses (oracle, the paper's
headline number) and for the hypothesis with the largest mixing weight, per action and as the
unweighted mean over actions. Two joint conventions are reported:

* 17-joint (the keys without suffix; the paper's and 3d-pose-baseline's convention): errors are
  averaged over all 17 joints including the zero-error root, so P1 = 16/17 of the 16-joint value;
  Procrustes aligns all 17 joints;
* 16-joint (suffix `_j16`): root excluded from both the alignment and the average.

Primary metric: `p1_best` in mm, lower is better.
"""
from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from posekit.codecs.mdn import INPUT_JOINTS, NUM_JOINTS, to_root_relative_17
from posekit.config import DataConfig, EvalConfig
from posekit.data.io import read_json
from posekit.data.h36m import (TEST_SUBJECTS, TRAIN_SUBJECTS, LiftingDataset, find_cameras_file, load_baseline,
                               load_videopose3d, split_tail)
from posekit.losses.mdn import MDNLoss
from posekit.metrics.mpjpe import best_of_m, hypothesis_errors, per_action_mean, select_hypothesis
from posekit.tasks import Task, register_task, unwrap

SKELETON = "h36m17"
_NECK, _THORAX, _HEAD = 9, 8, 10


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
    miss_num: int = 0  # missing-joint augmentation: drop up to this many limb joints (0 = off, the paper)
    miss_prob: float = 1.0  # probability that a training sample is augmented when miss_num > 0
    synthetic_train: int = 50000
    synthetic_val: int = 5000
    synthetic_noise_px: float = 5.0
    synthetic_seed: int = 0


@dataclass
class GMHEvalConfig(EvalConfig):
    batch_size: int = 1024
    table: bool = True  # return a per-action table (printed by `posekit eval`)
    per_action: bool = False  # also return per-action numbers as metric keys


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _fill_neck(points_17: np.ndarray) -> np.ndarray:
    """For display only: a missing neck_base is put halfway between thorax and head."""
    pts = np.array(points_17, dtype=np.float64, copy=True)
    missing = ~np.isfinite(pts[..., _NECK, :]).all(-1)
    pts[missing, _NECK] = 0.5 * (pts[missing, _THORAX] + pts[missing, _HEAD])
    return pts


def format_table(per_action: dict[str, dict[str, float]], means: dict[str, float], *, title: str = "") -> str:
    """Actions as rows, (P1, P2) x (best-of-M, most likely) as columns, mm, plus the unweighted mean."""
    cols = ["p1_best", "p1_ml", "p2_best", "p2_ml"]
    heads = ["P1 best", "P1 ML", "P2 best", "P2 ML"]
    width = max([len(a) for a in per_action] + [len("Average")])
    lines = [title] if title else []
    lines.append(f"{'Action':<{width}}  " + "  ".join(f"{h:>8}" for h in heads))
    for action, row in per_action.items():
        lines.append(f"{action:<{width}}  " + "  ".join(f"{row[c]:8.1f}" for c in cols))
    lines.append(f"{'Average':<{width}}  " + "  ".join(f"{means[c]:8.1f}" for c in cols))
    return "\n".join(lines)


@register_task
class GMHMDNTask(Task):
    name = "gmh_mdn"
    DataConfig = GMHDataConfig
    EvalConfig = GMHEvalConfig
    primary_metric = "p1_best"
    higher_is_better = False

    def __init__(self):
        self.loss = MDNLoss(concentration=2.0, prior_weight=1.0)

    # --- data ---------------------------------------------------------------------------------
    def build_datasets(self, cfg) -> tuple[LiftingDataset, LiftingDataset | None]:
        d: GMHDataConfig = cfg.data
        if d.eval_split not in ("val", "test"):
            raise ValueError(f"data.eval_split must be 'val' or 'test', got {d.eval_split!r}")
        if d.eval_split == "test":
            warnings.warn("data.eval_split=test: evaluating on the test subjects; use this for the final "
                          "evaluation only, never for model selection", stacklevel=2)
        aug = {"miss_num": d.miss_num, "miss_prob": d.miss_prob}
        if d.dataset == "synthetic":
            from posekit.data.synthetic_h36m import synthetic_h36m
            train = synthetic_h36m(d.synthetic_train, seed=d.synthetic_seed, noise_px=d.synthetic_noise_px, **aug)
            seed = d.synthetic_seed + (2 if d.eval_split == "test" else 1)
            val = synthetic_h36m(d.synthetic_val, seed=seed, noise_px=d.synthetic_noise_px)
            return train, val
        if d.dataset not in ("h36m", "videopose3d"):
            raise ValueError(f"data.dataset={d.dataset!r}; valid: synthetic, h36m, videopose3d")
        if not d.root:
            raise ValueError(f"data.dataset={d.dataset} needs data.root (the Human3.6M folder)")
        load = self._loader(d)
        train_seqs, val_seqs = split_tail(load(d.train_subjects), d.val_fraction, gap=d.val_gap)
        if d.eval_split == "test":
            val_seqs = load(d.test_subjects)
        train = LiftingDataset.from_sequences(train_seqs, **aug)
        val = LiftingDataset.from_sequences(val_seqs) if val_seqs else None
        return train, val

    def build_eval_dataset(self, cfg) -> LiftingDataset | None:
        """`posekit eval` on the test subjects loads only those, not the whole training set."""
        d: GMHDataConfig = cfg.data
        if d.dataset != "synthetic" and d.eval_split == "test" and d.root:
            warnings.warn("data.eval_split=test: evaluating on the test subjects; use this for the final "
                          "evaluation only, never for model selection", stacklevel=2)
            return LiftingDataset.from_sequences(self._loader(d)(d.test_subjects))
        return self.build_datasets(cfg)[1]

    def _loader(self, d: GMHDataConfig):
        root = Path(d.root)
        if d.dataset == "h36m":
            return lambda subjects: load_baseline(root, subjects, actions=d.actions or None, input_2d=d.input_2d,
                                                  detections=d.detections, cameras=d.cameras)
        cameras = find_cameras_file(root, d.cameras)
        npz_2d = (root / d.npz_2d) if (d.npz_2d and d.input_2d == "detections") else None
        return lambda subjects: load_videopose3d(root / d.npz_3d, cameras, subjects, actions=d.actions or None,
                                                 npz_2d=npz_2d, allow_pickle=d.allow_pickle)

    def prepare(self, model: nn.Module, train_set, cfg) -> None:
        """z-score statistics of the training set (2-D in, 3-D out) into the model's buffers."""
        unwrap(model).codec.fit(train_set.inputs, train_set.targets)

    # --- training -----------------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        dev = _device(model)
        out = model(batch["input_2d"].to(dev), mask=batch["mask"].to(dev) if "mask" in batch else None,
                    target=batch["target_3d"].to(dev))
        loss, parts = self.loss(out["means"], out["sigmas"], out["weights"], out["target"])
        logs = {"nll": float(parts["nll"]), "prior": float(parts["prior"]),
                "sigma": float(out["sigmas"].detach().mean()),
                "max_weight": float(out["weights"].detach().max(dim=1).values.mean())}
        return loss, logs

    # --- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def lift_dataset(self, model: nn.Module, dataset: LiftingDataset, *, batch_size: int = 1024,
                     indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Hypotheses (N, M, 17, 3) mm, weights (N, M), sigmas (N, M) for every sample."""
        net = unwrap(model)
        if not net.codec.is_fitted:
            raise RuntimeError("the lifter has no normalisation statistics: train it (prepare() fits them) "
                               "or load a trained checkpoint")
        idx = np.arange(len(dataset)) if indices is None else np.asarray(indices)
        dev = _device(net)
        hyps, weights, sigmas = [], [], []
        for start in range(0, len(idx), batch_size):
            sel = idx[start:start + batch_size]
            x = torch.from_numpy(dataset.inputs[sel]).to(dev)
            out = net(x)
            dec = net.codec.decode(out["means"].float(), out["sigmas"].float(), out["weights"].float())
            hyps.append(dec["hypotheses"].cpu().numpy())
            weights.append(dec["weights"].cpu().numpy())
            sigmas.append(dec["sigmas"].cpu().numpy())
        return {"hypotheses": np.concatenate(hyps), "weights": np.concatenate(weights),
                "sigmas": np.concatenate(sigmas), "indices": idx}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset: LiftingDataset, cfg) -> dict[str, Any]:
        e: GMHEvalConfig = cfg.eval
        net = unwrap(model)
        was_training = net.training
        net.eval()
        n = len(dataset)
        indices = None
        if e.max_samples and e.max_samples < n:
            indices = np.linspace(0, n - 1, e.max_samples).round().astype(np.int64)
        lifted = self.lift_dataset(net, dataset, batch_size=e.batch_size, indices=indices)
        net.train(was_training)
        idx = lifted["indices"]
        gt = to_root_relative_17(dataset.targets[idx].astype(np.float64))
        hyps = lifted["hypotheses"].astype(np.float64)
        ml = np.argmax(lifted["weights"], axis=1)
        actions = dataset.action_index[idx]
        frame_errors = {}
        # chunks keep the batched SVDs of Protocol #2 small in memory
        chunks = {k: [] for k in ("p1", "p2", "p1_j16", "p2_j16")}
        for s in range(0, len(idx), 4096):
            h, g = hyps[s:s + 4096], gt[s:s + 4096]
            chunks["p1"].append(hypothesis_errors(h, g))
            chunks["p2"].append(hypothesis_errors(h, g, procrustes=True))
            chunks["p1_j16"].append(hypothesis_errors(h[:, :, 1:], g[:, 1:]))
            chunks["p2_j16"].append(hypothesis_errors(h[:, :, 1:], g[:, 1:], procrustes=True))
        for key, parts in chunks.items():
            errs = np.concatenate(parts)  # (N, M)
            base, _, suffix = key.partition("_")
            suffix = f"_{suffix}" if suffix else ""
            frame_errors[f"{base}_best{suffix}"] = best_of_m(errs)
            frame_errors[f"{base}_ml{suffix}"] = select_hypothesis(errs, ml)
        metrics: dict[str, Any] = {}
        per_action: dict[str, dict[str, float]] = {}
        for key, errs in frame_errors.items():
            by_action, mean = per_action_mean(errs, actions, dataset.action_names)
            metrics[key] = mean
            for action, value in by_action.items():
                per_action.setdefault(action, {})[key] = value
        metrics["p1_best_frames"] = float(frame_errors["p1_best"].mean())  # frame-weighted, for reference
        metrics["mean_max_weight"] = float(lifted["weights"].max(axis=1).mean())
        metrics["num_frames"] = int(len(idx))
        if e.per_action:
            for action, row in per_action.items():
                for key in ("p1_best", "p1_ml", "p2_best", "p2_ml"):
                    metrics[f"{key}/{action}"] = row[key]
        if e.table:
            m = len(lifted["weights"][0])
            title = (f"GMH-MDN on {getattr(dataset, 'name', 'data')}: {len(idx)} frames, M={m}; mm, 17-joint "
                     "convention (root included); best = best of M, ML = largest mixing weight")
            metrics["table"] = format_table(per_action, metrics, title=title)
        return metrics

    # --- prediction ---------------------------------------------------------------------------
    def predict(self, model: nn.Module, inputs: list[Any], cfg, *, skeleton: str = "h36m17", rescale: bool = False,
                images: list[np.ndarray] | None = None, **kwargs) -> list:
        """Lift 2-D poses to 3-D hypotheses.

        inputs: one entry per image/frame, each (K, 2|3) or (P, K, 2|3) pixels (a third channel is a
        score; <= 0 marks a missing joint), a posekit 2-D `Results`, or a dict with "keypoints" (and
        optionally "skeleton", "scores"). skeleton: joint order of array inputs: "h36m17", "h36m16"
        (the 16 model inputs, no neck_base) or "mpii16" (e.g. Stacked Hourglass output).
        rescale: move and scale each pose so its size matches the training set's mean 2-D pose;
        use it for poses from cameras unlike the training data (any image that is not Human3.6M).
        Returns one `Results` per input: keypoints (P, 17, 3) = the most likely hypothesis,
        hypotheses (P, M, 17, 3) and hypothesis_weights (P, M), all root-relative mm in the camera frame.
        """
        from posekit.results import Results

        net = unwrap(model)
        if not net.codec.is_fitted:
            raise RuntimeError("the lifter has no normalisation statistics: load a trained checkpoint")
        net.eval()
        out = []
        for i, item in enumerate(inputs):
            points, image, path = self._as_h36m17(item, skeleton)
            x = points[:, list(INPUT_JOINTS)]  # (P, 16, 2), NaN = missing
            transform = None
            if rescale:
                x, transform = self._rescale_to_training(net, x)
            dev = _device(net)
            dec = net.lift(torch.as_tensor(x, dtype=torch.float32, device=dev))
            hyps = dec["hypotheses"].cpu().numpy().astype(np.float64)
            weights = dec["weights"].cpu().numpy().astype(np.float64)
            best = dec["best"].cpu().numpy()
            keypoints = hyps[np.arange(len(hyps)), best]
            if images is not None and i < len(images):
                image = images[i]
            scores = np.repeat(weights.max(axis=1, keepdims=True), NUM_JOINTS, axis=1)
            meta = {"units": "mm, camera frame, root-relative", "keypoints": "hypothesis with the largest weight",
                    "sigmas": dec["sigmas"].cpu().numpy().tolist(), "rescaled_2d": transform is not None}
            out.append(Results(keypoints=keypoints, scores=scores, skeleton=SKELETON, person_scores=weights.max(axis=1),
                               hypotheses=hyps, hypothesis_weights=weights, keypoints_2d=_fill_neck(points),
                               image=image, path=path, meta=meta))
        return out

    @staticmethod
    def _as_h36m17(item, skeleton: str) -> tuple[np.ndarray, np.ndarray | None, str | None]:
        """Any accepted input -> ((P, 17, 2) pixels with NaN for missing joints, image, path)."""
        from posekit.results import Results
        from posekit.skeletons.mappings import map_keypoints

        image = path = None
        scores = None
        if isinstance(item, Results):
            if item.is_3d:
                raise ValueError("predict: got 3-D Results; the lifter needs 2-D keypoints")
            pts, scores, skeleton, image, path = item.keypoints, item.scores, item.skeleton.name, item.image, item.path
        elif isinstance(item, dict):
            if "keypoints" not in item:
                raise ValueError(f"predict: a dict input needs 'keypoints' (got keys {sorted(item)})")
            pts = np.asarray(item["keypoints"], dtype=np.float64)
            skeleton = item.get("skeleton", skeleton)
            scores = np.asarray(item["scores"], dtype=np.float64) if item.get("scores") is not None else None
        else:
            pts = np.asarray(item)
            if pts.dtype == np.uint8 and pts.ndim == 3 and pts.shape[-1] == 3 and pts.shape[0] > 17:
                raise ValueError("predict: the lifter takes 2-D keypoints, not images; use `posekit lift --image` "
                                 "with a Hourglass checkpoint to go from an image to 3-D")
            pts = pts.astype(np.float64)
        if pts.ndim == 2:
            pts = pts[None]
        if pts.ndim != 3 or pts.shape[-1] not in (2, 3):
            raise ValueError(f"predict: keypoints must be (K, 2|3) or (P, K, 2|3), got {pts.shape}")
        if pts.shape[-1] == 3:
            scores = pts[..., 2] if scores is None else scores
            pts = pts[..., :2]
        if scores is not None:
            scores = np.asarray(scores, dtype=np.float64).reshape(pts.shape[:2])
            pts = np.where((scores > 0)[..., None], pts, np.nan)
        k = pts.shape[1]
        if skeleton == "h36m17" and k == 17:
            return pts, image, path
        if skeleton in ("h36m16", "h36m17") and k == 16:
            full = np.full((len(pts), 17, 2), np.nan)
            full[:, list(INPUT_JOINTS)] = pts
            return full, image, path
        if skeleton == "mpii16" and k == 16:
            return map_keypoints(pts, "mpii16", "h36m17", has_visibility=False), image, path
        raise ValueError(f"predict: {k} joints do not match skeleton {skeleton!r}; use h36m17 (17 joints), "
                         "h36m16 (16 joints, no neck_base) or mpii16")

    @staticmethod
    def _rescale_to_training(net, x: np.ndarray) -> tuple[np.ndarray, list]:
        """Similarity-normalise each (16, 2) pose to the training mean pose's centre and RMS size."""
        mean_pose = net.codec.mean_2d.detach().cpu().numpy().astype(np.float64).reshape(-1, 2)
        out, transforms = np.array(x, copy=True), []
        for p in range(len(x)):
            ok = np.isfinite(x[p]).all(axis=1)
            if ok.sum() < 2:
                raise ValueError("predict(rescale=True): a pose needs at least 2 visible joints")
            c_in, c_ref = x[p, ok].mean(0), mean_pose[ok].mean(0)
            s_in = np.sqrt(((x[p, ok] - c_in) ** 2).sum(1).mean())
            s_ref = np.sqrt(((mean_pose[ok] - c_ref) ** 2).sum(1).mean())
            scale = s_ref / max(s_in, 1e-9)
            out[p] = (x[p] - c_in) * scale + c_ref
            transforms.append({"scale": float(scale), "center_in": c_in.tolist(), "center_ref": c_ref.tolist()})
        return out, transforms

    # --- export -------------------------------------------------------------------------------
    def export_module(self, model: nn.Module, cfg):
        module = LiftExport(unwrap(model)).eval()
        example = (torch.as_tensor(unwrap(model).codec.mean_2d.detach().cpu().reshape(1, -1, 2)).repeat(2, 1, 1)
                   + torch.randn(2, len(INPUT_JOINTS), 2) * 20.0,)
        return (module, example, ["keypoints_2d"], ["means", "sigmas", "weights"],
                {"keypoints_2d": {0: "batch"}, "means": {0: "batch"}, "sigmas": {0: "batch"}, "weights": {0: "batch"}})

    # --- demo ---------------------------------------------------------------------------------
    def demo(self, model: nn.Module, dataset: LiftingDataset, cfg, out_dir: Path, *, count: int = 4) -> list[Path]:
        """3-D plots of all hypotheses beside the 2-D input for a few samples spread over the dataset."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        picks = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
        poses = dataset.meta.get("poses_2d_17")
        paths = []
        for n, i in enumerate(picks):
            if poses is not None:
                item = np.asarray(poses[i], dtype=np.float64)
            else:
                item = np.asarray(dataset.inputs[i], dtype=np.float64)
            (res,) = self.predict(model, [item], cfg, skeleton="h36m17" if poses is not None else "h36m16")
            gt = to_root_relative_17(dataset.targets[i:i + 1].astype(np.float64))[0]
            err = np.linalg.norm(res.hypotheses[0] - gt, axis=-1).mean(-1)
            res.meta["mpjpe_per_hypothesis_mm"] = err.tolist()
            action = dataset.action_names[dataset.action_index[i]] if dataset.action_index[i] >= 0 else "?"
            res.path = f"{getattr(dataset, 'name', 'data')}[{i}] {action}"
            paths.append(res.save(out_dir / f"gmh_mdn_{n}.png"))
            res.save(out_dir / f"gmh_mdn_{n}.json")
        return paths

    # --- extra CLI verb -----------------------------------------------------------------------
    def cli_commands(self):
        return [("lift", "lift 2-D poses (a JSON file, or an image through a Hourglass checkpoint) to 3-D "
                 "hypotheses with a GMH-MDN checkpoint", _lift_arguments, _lift_run)]


class LiftExport(nn.Module):
    """ONNX wrapper: (B, 16, 2) pixels -> means (B, M, 17, 3) mm (zero root), sigmas (B, M) in
    normalised units, mixing weights (B, M)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, keypoints_2d: torch.Tensor):
        out = self.model(keypoints_2d)
        b, m = out["means"].shape[:2]
        mm = self.model.codec.denormalize_3d(out["means"]).reshape(b, m, -1, 3)
        means = torch.cat([torch.zeros_like(mm[:, :, :1]), mm], dim=2)
        return means, out["sigmas"], out["weights"]


# ------------------------------------------------------------------------------------------------
# `posekit lift`
def read_pose_json(path: str | Path) -> list[dict]:
    """2-D poses from JSON -> [{"keypoints": (P, K, 2|3), "skeleton": str|None, "name": str}].

    Accepted: a posekit Results JSON (or a list of them), {"skeleton": ..., "poses": [...]},
    a list of poses, or one pose ([[x, y(, score)], ...]).
    """
    path = Path(path)
    raw = read_json(path, "pose file")

    def entry(obj, name, skeleton=None, scores=None):
        try:
            pts = np.asarray(obj, dtype=np.float64)
            if scores is not None and pts.shape[-1] == 2:
                pts = np.concatenate([pts, np.asarray(scores, dtype=np.float64)[..., None]], axis=-1)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: {name}: keypoints/scores are not matching numeric arrays") from None
        if pts.ndim == 2:
            pts = pts[None]
        if pts.ndim != 3 or pts.shape[-1] not in (2, 3):
            raise ValueError(f"{path}: {name}: keypoints must be (K, 2|3) or (P, K, 2|3), got {pts.shape}")
        return {"keypoints": pts, "skeleton": skeleton, "name": name}

    if isinstance(raw, dict) and "keypoints" in raw:
        return [entry(raw["keypoints"], path.stem, raw.get("skeleton"), raw.get("scores"))]
    if isinstance(raw, dict) and "poses" in raw:
        return [entry(raw["poses"], path.stem, raw.get("skeleton"))]
    if isinstance(raw, list) and raw and isinstance(raw[0], dict):
        out = []
        for i, rec in enumerate(raw):
            if not isinstance(rec, dict) or "keypoints" not in rec:
                raise ValueError(f"{path}: record {i} has no 'keypoints'")
            out.append({**entry(rec["keypoints"], f"record {i}", rec.get("skeleton"), rec.get("scores")),
                        "name": f"{path.stem}_{i}"})
        return out
    if isinstance(raw, list):
        return [entry(raw, path.stem)]
    raise ValueError(f"{path}: expected a Results JSON, {{'poses': [...]}} or a list of poses")


def _lift_arguments(p) -> None:
    p.add_argument("checkpoint", help="a trained gmh_mdn checkpoint (best.pt / last.pt)")
    p.add_argument("--json", nargs="*", default=[], help="JSON files of 2-D poses (Results JSON, "
                   "{'skeleton': ..., 'poses': [...]} or a list of [x, y(, score)] poses)")
    p.add_argument("--image", nargs="*", default=[], help="images: 2-D poses come from --hourglass first")
    p.add_argument("--hourglass", help="posekit Hourglass checkpoint used for --image (MPII-16 -> H36M)")
    p.add_argument("--box", help="person box x,y,w,h for --image (default: the whole image)")
    p.add_argument("--skeleton", default="h36m17", choices=["h36m17", "h36m16", "mpii16"],
                   help="joint order of JSON poses that do not name their skeleton")
    p.add_argument("--rescale", default=None, action=argparse.BooleanOptionalAction, help="fit each 2-D pose to the "
                   "training set's size and centre (default: on for --image, off for --json)")
    p.add_argument("--out", required=True, help="folder for <name>.json and <name>.png")
    p.add_argument("--device", default="cpu")


def _lift_run(args) -> int:
    from posekit.data.io import read_image
    from posekit.engine.trainer import load_for_inference

    if not args.json and not args.image:
        raise ValueError("posekit lift: give --json FILE(S) or --image FILE(S)")
    task, model, cfg = load_for_inference(args.checkpoint, device=args.device)
    if task.name != "gmh_mdn":
        raise ValueError(f"{args.checkpoint}: a {task.name!r} checkpoint; `posekit lift` needs a gmh_mdn one")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for path in args.json:
        for rec in read_pose_json(path):
            skeleton = rec["skeleton"] or args.skeleton
            (res,) = task.predict(model, [rec["keypoints"]], cfg, skeleton=skeleton, rescale=bool(args.rescale))
            res.path = str(path)
            stem = rec["name"].replace(" ", "_")
            res.save(out / f"{stem}.json")
            res.save(out / f"{stem}.png")
            written += 1
    if args.image:
        if not args.hourglass:
            raise ValueError("posekit lift --image needs --hourglass CHECKPOINT (a posekit Hourglass model "
                             "that finds the 2-D MPII joints first)")
        hg_task, hg_model, hg_cfg = load_for_inference(args.hourglass, device=args.device)
        if hg_task.name != "hourglass":
            raise ValueError(f"{args.hourglass}: a {hg_task.name!r} checkpoint; --hourglass needs a hourglass one")
        rescale = True if args.rescale is None else bool(args.rescale)
        box = None
        if args.box:
            try:
                box = [float(v) for v in args.box.split(",")]
            except ValueError:
                raise ValueError(f"--box must be x,y,w,h numbers, got {args.box!r}") from None
            if len(box) != 4:
                raise ValueError(f"--box must be x,y,w,h, got {args.box!r}")
        for path in args.image:
            image = read_image(path)
            (det,) = hg_task.predict(hg_model, [image], hg_cfg, **({"boxes": [box]} if box else {}))
            if det.skeleton.name != "mpii16":
                raise ValueError(f"{args.hourglass}: predicts {det.skeleton.name!r} keypoints; lifting from an image "
                                 "needs an MPII-16 Hourglass")
            det.image = image
            det.path = str(path)
            (res,) = task.predict(model, [det], cfg, rescale=rescale)
            stem = Path(path).stem
            res.save(out / f"{stem}_3d.json")
            res.save(out / f"{stem}_3d.png")
            written += 1
    print(f"{written} lifted pose set(s) written to {out}")
    return 0
