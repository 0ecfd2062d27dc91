"""Factorized Spatial Embeddings (Thewlis, Bilen, Vedaldi 2017): unsupervised landmark discovery.

    images (SyntheticFaces | CelebA minus MAFL test | MTFL | any folder) -> data.landmarks crops
    training_step (on the model's device): x' = g(x), a random TPS (or the reference's affine)
    -> the shared FSENet on [x, x'] -> spatial softmax -> fse_loss (alignment under the known g,
    applied in pixels to the score cells' receptive-field centres, + diversity)
    forward_decode (in the graph): soft-argmax keypoints (B, K, 2) in crop pixels + confidences
    postprocess: back to the original image -> Results(landmarks{K}); meta["mafl5"] when a
    regressor has been fitted (it is stored in the checkpoint as the `mafl_regressor` buffer)
    evaluation (the paper's protocol): linear regressor discovered -> 5 annotated points fitted
    on split "fit" (MAFL train), inter-ocular NME on "val" (MAFL test), in original pixels.

Validation loss: "val" items carry a fixed per-item warp (seeded by index), `model_inputs`
stacks [x, x'] for them, and `loss` is the full FSE objective on that pair: the same number at
every evaluation. The oracle gives the 5 annotated points as the discovered ones, repeated
cyclically to K (exact through the regressor when K >= 5).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from posekit.codecs.landmarks import LandmarkDecoder, spatial_softmax
from posekit.config import DataConfig, EvalConfig, LossConfig
from posekit.data.io import write_image
from posekit.data.landmarks import LandmarkCrops, celeba_minus_mafl_test, existing_images
from posekit.data.topdown import to_original_frame
from posekit.data.transforms import affine_points
from posekit.families.base import Evaluator, ExportSpec, Task, register_task
from posekit.losses.fse import diversity_loss, fse_loss, map_stride
from posekit.metrics.nme import apply_regressor, fit_landmark_regressor, interocular_nme
from posekit.models.fse import FSENet, cell_centers, output_size, stack_geometry
from posekit.ops.tps import affine_reference, random_tps
from posekit.results import Results
from posekit.runtime.landmarks import landmark_outputs
from posekit.skeletons import get_skeleton, landmarks
from posekit.viz import caption

MAFL5 = get_skeleton("mafl5")
WARPS = ("tps", "affine_reference")


@dataclass
class FSEDataConfig(DataConfig):
    dataset: str = "synthetic"  # training images: synthetic | celeba | mtfl | folder
    root: str | None = None  # celeba / mtfl root (default: the shared real samples); folder: required
    landmarks_file: str | None = None  # celeba: default list_landmarks_align_celeba[_excerpt].txt under root
    eval_dataset: str = "auto"  # fit/val splits: auto | synthetic | mafl | mtfl | none (no evaluation)
    eval_root: str | None = None  # root of eval_dataset (default: data.root when it matches, else shared)
    skip_missing_images: bool = False  # drop listed images whose file is absent (the shared excerpts)
    input_size: int = 128  # the network's square crop S
    resize: int | None = 146  # square resize before cropping (aspect distorted, as the reference); None: keep
    crop_offset: int | None = None  # crop's (left, top) in the resized image; None: centred (9 for 146 -> 128)
    warp: str = "tps"  # tps | affine_reference (the reference's affine "TPS", see ops.tps)
    tps_rotation: float = 0.3  # rad, U(+-r)
    tps_scale: list[float] = field(default_factory=lambda: [0.9, 1.1])
    tps_translation: float = 0.05  # std, fraction of the crop
    tps_grid: int = 5  # control points per side
    tps_displacement: float = 0.02  # control-point jitter std, fraction of the crop
    affine_w: float = 0.1  # affine_reference's w for x' = warp(x, w)
    augment: str = "none"  # none | tps | affine_reference: warp x itself first (the reference: affine, w = 0)
    augment_w: float = 0.0
    val_warp_seed: int = 20170705  # the fixed warps of the validation loss
    synthetic_train_size: int = 6000
    synthetic_fit_size: int = 300
    synthetic_val_size: int = 200
    synthetic_image_size: int = 128
    synthetic_seed: int = 0


@dataclass
class FSELossConfig(LossConfig):
    align_weight: float = 1.0
    diversity_weight: float = 500.0
    pool: int = 4  # diversity's M x M average pooling


@dataclass
class FSEEvalConfig(EvalConfig):
    batch_size: int = 32
    underdetermined: str = "min_norm"  # fewer fit images than 2K + 1: min_norm (flagged) | error


class RegressionEvaluator(Evaluator):
    """The paper's protocol. The regressor maps discovered (K) to annotated (5) points in the crop
    frame, the one frame all images share (MTFL mixes 150-400 px images), fitted on "fit"; its
    "val" predictions go back to each original image, where the NME is measured (for CelebA, a
    fixed affine away, this equals fitting in original pixels). Images with an unlabelled point are skipped."""

    def __init__(self, num_landmarks: int, underdetermined: str, on_fit=None):
        self.k, self.underdetermined, self.on_fit = num_landmarks, underdetermined, on_fit
        self.rows: dict[str, list] = {"fit": [], "val": []}  # (discovered crop, annotated crop, matrix)
        self.oracle = False

    def update(self, split, results, batch):
        kps = batch["keypoints"].detach().double().cpu().numpy()
        matrices = batch["matrix"].detach().double().cpu().numpy()
        for res, truth, m in zip(results, kps, matrices):
            self.oracle |= bool(res.meta.get("oracle"))
            if (truth[:, 2] > 0).all():
                self.rows[split].append((affine_points(res.keypoints[0], m), truth[:, :2], m))

    def compute(self):
        for split in ("fit", "val"):
            if not self.rows[split]:
                raise ValueError(f"the {split!r} split has no image with all 5 annotated points: the regression "
                                 "protocol needs labelled fit and val images (data.eval_dataset)")
        fit_d, fit_a, fit_m = (np.stack(c) for c in zip(*self.rows["fit"]))
        val_d, val_a, val_m = (np.stack(c) for c in zip(*self.rows["val"]))
        w = fit_landmark_regressor(fit_d, fit_a, underdetermined=self.underdetermined)
        orig = lambda p, m: to_original_frame(p, m)  # noqa: E731
        truth, pred = orig(val_a, val_m), orig(apply_regressor(w, val_d), val_m)
        mean_shape = orig(np.broadcast_to(fit_a.mean(0), val_a.shape), val_m)
        iod = np.linalg.norm(truth[:, 0] - truth[:, 1], axis=-1)
        per_point = (np.linalg.norm(pred - truth, axis=-1) / iod[:, None]).mean(0) * 100
        if self.on_fit is not None and not self.oracle:
            self.on_fit(w)
        return {"nme": interocular_nme(pred, truth), "nme_mean_shape": interocular_nme(mean_shape, truth),
                "nme_fit": interocular_nme(orig(apply_regressor(w, fit_d), fit_m), orig(fit_a, fit_m)),
                **{f"nme/{name}": float(e) for name, e in zip(MAFL5.keypoints, per_point)},
                "fit_images": float(len(fit_d)), "val_images": float(len(val_d)),
                "regressor_determined": float(len(fit_d) >= 2 * self.k + 1)}


@register_task
class FSETask(Task):
    name = "fse"
    DataConfig = FSEDataConfig
    EvalConfig = FSEEvalConfig
    LossConfig = FSELossConfig
    primary_metric = "nme"
    higher_is_better = False
    eval_splits = ("fit", "val")
    synthetic_recipe = "faces_synthetic"
    smoke_overrides = ("data.synthetic_train_size=8", "data.synthetic_fit_size=4", "data.synthetic_val_size=4",
                       "model.args.num_landmarks=5", "train.batch_size=4")
    # channels_last stays off: ~0.95x step time on CPU, but the MAFL protocol's least-squares fit
    # on few faces amplifies the layouts' rounding differences between training and a reload

    def check_config(self):
        d = self.cfg.data
        for key, value, valid in (("data.dataset", d.dataset, ("synthetic", "celeba", "mtfl", "folder")),
                                  ("data.eval_dataset", d.eval_dataset, ("auto", "synthetic", "mafl", "mtfl", "none")),
                                  ("data.warp", d.warp, WARPS), ("data.augment", d.augment, ("none", *WARPS)),
                                  ("eval.underdetermined", self.cfg.eval.underdetermined, ("min_norm", "error"))):
            if value not in valid:
                raise ValueError(f"{key}={value!r}; valid: {', '.join(valid)}")
        if len(d.tps_scale) != 2:
            raise ValueError(f"data.tps_scale must be [min, max], got {d.tps_scale}")
        self.num_landmarks = int(self.cfg.model.args.get("num_landmarks", 8))
        self.map_size = output_size(FSENet(num_landmarks=1, channels=(1,) * 5).features, d.input_size)
        if self.map_size < 1:
            raise ValueError(f"data.input_size={d.input_size} is too small for the FSE network (needs >= 46)")
        self.centers = cell_centers(self.map_size)
        self.cell = map_stride(self.centers, (self.map_size, self.map_size))  # read once, not from the device per step
        self.decoder = LandmarkDecoder(self.map_size, self.centers)
        self.regressor: np.ndarray | None = None
        self._linked = None

    @property
    def skeleton(self):
        return landmarks(self.num_landmarks)

    # --- building -----------------------------------------------------------------------
    def build_model(self):
        model = super().build_model()
        if not isinstance(model, FSENet) or stack_geometry(model.features) != stack_geometry(
                FSENet(num_landmarks=1, channels=(1,) * 5).features):
            raise ValueError(f"model {self.cfg.model.name!r} is not an FSE network with the FSE geometry")
        if model.input_size != self.cfg.data.input_size:
            raise ValueError(f"model.args.input_size={model.input_size} must equal data.input_size="
                             f"{self.cfg.data.input_size}")
        # the fitted regressor travels with the weights (pure tensors: weights_only loading)
        model.register_buffer("mafl_regressor", torch.zeros(2 * self.num_landmarks + 1, 2 * MAFL5.num_keypoints,
                                                            dtype=torch.float64))
        model.register_buffer("mafl_regressor_fitted", torch.zeros((), dtype=torch.float64))
        return model

    def prepare(self, model, datasets):
        if model is not None:
            self._linked = model
            if float(getattr(model, "mafl_regressor_fitted", 0)) > 0:
                self.regressor = model.mafl_regressor.detach().cpu().numpy()

    def _store_regressor(self, w: np.ndarray) -> None:
        self.regressor = w
        model = self._linked
        if model is not None and hasattr(model, "mafl_regressor"):
            model.mafl_regressor.copy_(torch.from_numpy(w))
            model.mafl_regressor_fitted.fill_(1.0)

    def _sources(self, splits):
        from posekit.data.formats.celeba import read_image_folder, read_mafl, read_mtfl
        from posekit.data.io import realdata_root
        from posekit.data.synthetic.deformable import SyntheticFaces
        d = self.cfg.data
        shared = {"celeba": realdata_root() / "celeba_mafl", "mafl": realdata_root() / "celeba_mafl",
                  "mtfl": realdata_root() / "mtfl"}
        size = d.synthetic_image_size
        for key, given in (("data.root", d.root if d.dataset != "synthetic" else None), ("data.eval_root", d.eval_root)):
            if given and not Path(given).is_dir():  # never fall back to other data, never skip every image
                raise FileNotFoundError(f"{key} does not exist: {given} (set it to the dataset folder)")
        root = Path(d.root) if d.root else shared.get(d.dataset)
        keep = existing_images if d.skip_missing_images else (lambda s: s)
        train = {"synthetic": lambda: SyntheticFaces(d.synthetic_train_size, seed=d.synthetic_seed, image_size=size),
                 "celeba": lambda: celeba_minus_mafl_test(root, landmarks_file=d.landmarks_file,
                                                          skip_missing_images=d.skip_missing_images),
                 "mtfl": lambda: keep(read_mtfl(root, "train")),
                 "folder": lambda: read_image_folder(self._folder_root())}[d.dataset]
        kind = d.eval_dataset if d.eval_dataset != "auto" else {"celeba": "mafl", "folder": "none"}.get(d.dataset,
                                                                                                        d.dataset)
        same = {"mafl": "celeba", "mtfl": "mtfl"}.get(kind) == d.dataset and d.root
        eroot = Path(d.eval_root) if d.eval_root else (Path(d.root) if same else shared.get(kind))
        mafl = lambda split: keep(read_mafl(eroot, split, landmarks_file=d.landmarks_file,  # noqa: E731
                                            missing="skip"))
        evals = {"synthetic": {"fit": lambda: SyntheticFaces(d.synthetic_fit_size, seed=d.synthetic_seed + 1,
                                                             image_size=size),
                               "val": lambda: SyntheticFaces(d.synthetic_val_size, seed=d.synthetic_seed + 2,
                                                             image_size=size)},
                 "mafl": {"fit": lambda: mafl("train"), "val": lambda: mafl("test")},
                 "mtfl": {"fit": lambda: keep(read_mtfl(eroot, "train")), "val": lambda: keep(read_mtfl(eroot, "test"))},
                 "none": {}}[kind]
        return {name: make() for name, make in {"train": train, **evals}.items() if name in splits}

    def _folder_root(self) -> Path:
        if not self.cfg.data.root:
            raise ValueError("data.dataset=folder needs data.root (a folder of images)")
        return Path(self.cfg.data.root)

    def _pipeline(self, source, *, split: str | None) -> LandmarkCrops:
        d = self.cfg.data
        fixed = (self._sample_warp_cpu, self.centers, d.val_warp_seed) if split == "val" else None
        return LandmarkCrops(source, size=d.input_size, resize=d.resize, offset=d.crop_offset, equivariance=fixed)

    def build_datasets(self, splits=None):
        sources = self._sources(splits or ("train", "fit", "val"))
        return {name: self._pipeline(src, split=name) for name, src in sources.items()}

    # --- warps ----------------------------------------------------------------------------
    def _sample_warp(self, batch: int, device, *, kind: str | None = None, w: float | None = None, generator=None):
        """x' = x o g^-1 warps of the S x S crop: random_tps, or affine_reference on the resized frame
        seen through the crop (as the reference warps 146^2 and crops 128^2 at its offset)."""
        d = self.cfg.data
        s = d.input_size
        if (kind or d.warp) == "tps":
            return random_tps(batch, generator=generator, image_size=(s, s), rotation=d.tps_rotation,
                              scale=tuple(d.tps_scale), translation=d.tps_translation, grid_size=d.tps_grid,
                              displacement_std=d.tps_displacement, device=device)
        frame = d.resize or s
        offset = (frame - s) // 2 if d.crop_offset is None else d.crop_offset
        warp = affine_reference(batch, w=d.affine_w if w is None else w, generator=generator,
                                image_size=(frame, frame), device=device)
        return warp.cropped(offset, offset, (s, s))

    def _sample_warp_cpu(self, generator):
        return self._sample_warp(1, "cpu", generator=generator)

    # --- training -------------------------------------------------------------------------
    def _objective(self, scores_a, scores_b, warp):
        lc = self.cfg.loss
        probs_a, probs_b = spatial_softmax(scores_a.float()), spatial_softmax(scores_b.float())
        total, parts = fse_loss(probs_a, probs_b, warp, self.centers.to(scores_a.device), cell=self.cell,
                                diversity_weight=lc.diversity_weight, pool=lc.pool, align_weight=lc.align_weight)
        return total, {k: v.detach() if torch.is_tensor(v) else v for k, v in parts.items() if k != "total"}

    def build_loss(self):
        def loss(outputs, batch):
            """The FSE objective on a batch's fixed pair ([x, x'] stacked by model_inputs); diversity
            alone when the batch has no warped copy."""
            b = len(batch["image"])
            if "warped_centers" in batch and len(outputs) == 2 * b:
                return self._objective(outputs[:b], outputs[b:], batch["warped_centers"])
            div = diversity_loss(spatial_softmax(outputs.float()), self.cfg.loss.pool)
            return self.cfg.loss.diversity_weight * div, {"div_a": div.detach()}
        return loss

    def model_inputs(self, batch):
        x = super().model_inputs(batch)
        if "warped" in batch:
            x = torch.cat([x, batch["warped"].float().div(255.0)])
        return x

    def training_step(self, model, batch):
        """Warps are sampled, and the landmark grid moved through them (Newton's inversion, whose
        convergence checks read numbers), on the CPU: on a GPU no step waits for the device; only
        the image warps run there."""
        x = batch["image"].float().div(255.0)
        b, d = len(x), self.cfg.data
        if d.augment != "none":
            x = self._sample_warp(b, "cpu", kind=d.augment, w=d.augment_w).warp_image(x)
        warp = self._sample_warp(b, "cpu")
        moved = warp.warp_points(self.centers[None].expand(b, -1, -1).double()).to(x.device, non_blocking=True)
        scores = model(torch.cat([x, warp.warp_image(x)]))  # one pass: DDP sees each parameter once
        return self._objective(scores[:b], scores[b:], moved)

    # --- the decode seam ------------------------------------------------------------------
    def forward_decode(self, model, x, *, outputs=None):
        """Soft-argmax landmarks (B, K, 2) in crop pixels and their peak mass (B, K)."""
        scores = model(x) if outputs is None else outputs
        keypoints, confidence = self.decoder.to(scores.device)(scores.float())
        return {"keypoints": keypoints, "scores": confidence}

    def decode_targets(self, batch):
        """The annotated 5 points as the 'discovered' landmarks, repeated cyclically to K."""
        kps = batch["keypoints"].float()
        idx = torch.arange(self.num_landmarks, device=kps.device) % kps.shape[1]
        return {"keypoints": kps[:, idx, :2], "scores": (kps[:, idx, 2] > 0).float(),
                "oracle": torch.ones(len(kps), device=kps.device)}

    def postprocess(self, decoded, batch):
        """The numpy runtime's `landmark_outputs` (what an exported .onnx file runs too): landmarks
        back to the original image, and meta["mafl5"] through the fitted regressor."""
        n = len(batch["matrix"])
        found = landmark_outputs(_numpy(decoded["keypoints"][:n]), _numpy(decoded["scores"][:n]),
                                 _numpy(batch["matrix"]), self.regressor)
        images, paths = batch.get("images"), batch.get("paths")
        oracle = {"oracle": True} if "oracle" in decoded else {}
        return [Results(keypoints=f["keypoints"], scores=f["scores"], skeleton=self.skeleton,
                        image=images[i] if images else None, path=paths[i] if paths else None,
                        meta={**oracle, **f["meta"]})
                for i, f in enumerate(found)]

    def build_evaluator(self, datasets):
        return RegressionEvaluator(self.num_landmarks, self.cfg.eval.underdetermined, on_fit=self._store_regressor)

    # --- use ----------------------------------------------------------------------------
    def prepare_inputs(self, inputs, *, boxes=None, as_crops: bool = False, **options):
        """RGB images -> the evaluation crops (resize, crop); `as_crops`: they already are S x S crops."""
        return self._pipeline([], split=None).inputs(inputs, as_crops=as_crops)

    def export_spec(self):
        s = self.cfg.data.input_size
        return ExportSpec((torch.rand(2, 3, s, s),), ["images"], ["keypoints", "scores"],
                          {"images": {0: "batch"}, "keypoints": {0: "batch"}, "scores": {0: "batch"}})

    def demo(self, predict, datasets, out_dir):
        """(a) landmarks on 8 images, one colour per landmark; (b) equivariance: x, x' = g(x) with the
        landmarks found on x' (dots) and those of x moved by the known g (rings)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        found = predict(self.sample_inputs(datasets, 8))
        tiles = [_draw(r.image, r.keypoints[0], self.skeleton, 256) for r in found]
        tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % 4)
        grid = np.concatenate([np.concatenate(tiles[i:i + 4], 1) for i in range(0, len(tiles), 4)], 0)
        paths = [out_dir / "fse_landmarks.png"]
        write_image(paths[0], caption(grid, f"FSE: {self.num_landmarks} discovered landmarks (colour = index)"))

        val = datasets[self.eval_splits[-1]]
        crops = [val[i]["image"].permute(1, 2, 0).numpy() for i in range(min(3, len(val)))]
        warp = self._sample_warp(len(crops), "cpu", generator=torch.Generator().manual_seed(7))
        warped = warp.warp_image(torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float())
        warped = [w.round().clamp(0, 255).byte().permute(1, 2, 0).contiguous().numpy() for w in warped]
        on_x = np.stack([r.keypoints[0] for r in predict(crops, as_crops=True)])
        on_xw = np.stack([r.keypoints[0] for r in predict(warped, as_crops=True)])
        mapped = warp.warp_points(torch.from_numpy(on_x)).numpy()
        rows = []
        for i in range(len(crops)):
            err = float(np.linalg.norm(on_xw[i] - mapped[i], axis=-1).mean())
            rows.append(np.concatenate([caption(_draw(crops[i], on_x[i], self.skeleton, 384), "x: landmarks"),
                                        caption(_draw(warped[i], on_xw[i], self.skeleton, 384, rings=mapped[i]),
                                                f"x' = g(x): found (dots), g(x's) (rings), {err:.1f} px")], 1))
        paths.append(out_dir / "fse_equivariance.png")
        write_image(paths[1], np.concatenate(rows, 0))
        return paths


def _numpy(values) -> np.ndarray:
    return values.detach().double().cpu().numpy() if torch.is_tensor(values) else np.asarray(values, np.float64)


def _draw(image: np.ndarray, points: np.ndarray, skeleton, size: int, rings: np.ndarray | None = None) -> np.ndarray:
    """The image scaled to `size` px high with landmark dots (and optional rings, linked to their dots)."""
    f = size / image.shape[0]
    canvas = cv2.resize(np.ascontiguousarray(image), (int(round(image.shape[1] * f)), size),
                        interpolation=cv2.INTER_LINEAR)
    colors = skeleton.keypoint_colors()

    def px(p):
        return tuple(int(round((v + 0.5) * f - 0.5)) for v in p)

    for k, p in enumerate(points):
        color = tuple(int(c) for c in colors[k])
        if rings is not None:
            cv2.line(canvas, px(p), px(rings[k]), color, 1, cv2.LINE_AA)
            cv2.circle(canvas, px(rings[k]), 9, (0, 0, 0), 4, cv2.LINE_AA)
            cv2.circle(canvas, px(rings[k]), 9, color, 2, cv2.LINE_AA)
        cv2.circle(canvas, px(p), 6, color, -1, cv2.LINE_AA)
        cv2.circle(canvas, px(p), 6, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas
