"""Checkpoint or exported ONNX file -> task + model -> `Results` for images or a lifter's 2-D poses.

    predictor = Predictor("runs/mpii/best.pt")
    results = predictor(image)                             # one Results
    results = predictor([img1, img2], boxes=[b1, None])    # one box (or None = whole image) each
    results = predictor(img, boxes=[[x, y, w, h, score], ...])   # many people: one Results, N persons
    fast = Predictor("mpii.onnx")                          # onnxruntime, metadata from the file
    fast = Predictor("runs/mpii/best.pt", backend="onnxruntime")  # exported on the fly (cached)

Many people in one image (top-down models): each box is cropped and run like a single person,
and the N crops come back as one `Results` with keypoints (N, K, 2), boxes (N, 4) and
person_scores = box score x mean keypoint score. Models that find every person themselves
(bottom-up) and lifters ignore boxes.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from posekit.config import Config
from posekit.engine import distributed
from posekit.engine.checkpoint import assign_weights, inference_state_dict, load_checkpoint
from posekit.engine.evaluation import predict
# the stored-config helpers live below predictor and onnx_backend (both read them); re-exported here
from posekit.engine.stored import (WEIGHT_ARG_SUFFIXES, WEIGHT_ARGS, config_from_stored,  # noqa: F401
                                   inference_model_args, is_weights_arg)
from posekit.families import Task, build_task
from posekit.data.box_files import normalize_boxes  # noqa: F401  (its old home)
from posekit.results import Results, json_safe, merge_persons, results_json, results_per_box  # noqa: F401

BACKENDS = ("auto", "torch", "onnxruntime")


def load_for_inference(checkpoint_path: str | Path, overrides: list[str] | None = None,
                       device: str = "cpu", imports: list[str] | None = None) -> tuple[Task, nn.Module, Config]:
    """(task, model in eval mode with the best available weights (EMA when trained with it),
    config) from a checkpoint file; `overrides` change the stored config (e.g. eval.flip_test)."""
    from posekit.engine.evaluation import _load_weights
    # mapped, not read: the model ends up holding the only copy of the weights (an old fat
    # checkpoint's optimiser state is never paged in)
    ckpt = load_checkpoint(checkpoint_path, require=("model", "config"), mmap=True)
    cfg = config_from_stored(ckpt["config"], source=str(checkpoint_path), overrides=overrides, imports=imports)
    task = build_task(cfg)
    model = task.build_model()
    weights = inference_state_dict(ckpt)
    del ckpt
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ValueError(f"{checkpoint_path}: not a posekit checkpoint: its weights are not a mapping of tensors")
    if not assign_weights(model, weights):
        _load_weights(model, weights, cfg, str(checkpoint_path))
    model = model.to(distributed.pick_device(device, option="--device")).eval()
    task.prepare(model, {})
    return task, model, cfg


class ImageInputError(ValueError):
    """An array handed to `Predictor` that is not an image posekit can read unambiguously."""


IMAGE_RULE = ("expected uint8 RGB (H, W, 3) with values 0..255, or float RGB (H, W, 3) in [0, 1]; pass bgr=True "
              "for arrays from cv2.imread")


def _describe(array: np.ndarray) -> str:
    text = f"a {array.dtype} array of shape {tuple(array.shape)}"
    if array.size and (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        finite = array[np.isfinite(array)] if np.issubdtype(array.dtype, np.floating) else array
        if finite.size:
            text += f" with values {float(finite.min()):g}..{float(finite.max()):g}"
        if finite.size < array.size:
            text += " and NaN/inf"
    return text


def as_rgb_image(image, *, bgr: bool = False, where: str = "image") -> np.ndarray:
    """One image as the API defines it -> RGB uint8 (H, W, 3), the form every family is trained on.

    Accepted: uint8 (H, W, 3) RGB; floating (H, W, 3) RGB in [0, 1] (quantised to uint8 as
    rint(x * 255)); grey (H, W) or (H, W, 1) (replicated to three channels); (H, W, 4) RGBA (the
    alpha channel is dropped, as `read_image` does for files). `bgr=True`: the colour channels are
    B, G, R (cv2.imread) and are reversed. Anything else (0..255 floats, uint16, other integers,
    channels-first, torch tensors, NaN) is an ImageInputError saying what was given: guessing the
    range or the layout silently misplaces keypoints by hundreds of pixels."""
    if not isinstance(image, np.ndarray):
        kind = type(image).__module__.split(".")[0] + "." + type(image).__name__
        hint = (" (a torch tensor (3, H, W): use t.permute(1, 2, 0).numpy())" if kind.startswith("torch.")
                else " (a PIL image: use np.asarray(image.convert('RGB')))" if kind.startswith("PIL.") else "")
        raise ImageInputError(f"{where}: got a {kind}{hint}; {IMAGE_RULE}, or an image path")
    given = _describe(image)
    if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[2] not in (1, 3, 4):
        raise ImageInputError(f"{where}: got {given}, which looks channels-first; use image.transpose(1, 2, 0) "
                              f"({IMAGE_RULE})")
    if image.ndim == 4:
        raise ImageInputError(f"{where}: got {given}; a stack of images goes in as a list (list(images)): "
                              f"{IMAGE_RULE}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)) or 0 in image.shape[:2]:
        raise ImageInputError(f"{where}: got {given}; {IMAGE_RULE} (grey (H, W) and RGBA (H, W, 4) are converted)")
    if image.dtype == np.uint8:
        out = image
    elif np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise ImageInputError(f"{where}: got {given}; NaN or inf pixels cannot be read ({IMAGE_RULE})")
        lo, hi = float(image.min()), float(image.max())
        if lo < 0.0 or hi > 1.0:
            hint = ("; a 0..255 float image: pass image / 255 or image.round().astype(np.uint8)" if lo >= 0.0 and hi <= 255.0
                    else "")
            raise ImageInputError(f"{where}: got {given}; floating images must be in [0, 1]{hint} ({IMAGE_RULE})")
        out = np.rint(image.astype(np.float32) * 255.0).astype(np.uint8)
    else:
        hint = (" (16-bit: use (image // 257).astype(np.uint8), or read the file with posekit.data.io.read_image)"
                if image.dtype == np.uint16 else " (use image.astype(np.uint8) if the values are 0..255)")
        raise ImageInputError(f"{where}: got {given}{hint}; {IMAGE_RULE}")
    if out.ndim == 2 or out.shape[2] == 1:
        return np.repeat(out.reshape(out.shape[0], out.shape[1], 1), 3, axis=2)
    rgb = out[:, :, 2::-1] if bgr else out[:, :, :3]
    return np.ascontiguousarray(rgb)


SOURCE_KEY = "posekit.source_sha256"  # metadata of a cached export: the key it was made for


def onnx_cache_dir() -> Path:
    """The user's own folder for cached exports ($XDG_CACHE_HOME or ~/.cache, then posekit/onnx),
    created 0700. A shared, predictable folder (the system temp dir) would let another user plant a
    graph there; a folder that is not ours or that others may write is refused, never used."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = base / "posekit" / "onnx"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = folder.stat()
    if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o022):
        raise PermissionError(f"the ONNX export cache {folder} is not this user's own (owner uid {st.st_uid}, mode "
                              f"{oct(st.st_mode & 0o777)}); remove it or set XDG_CACHE_HOME to a private folder")
    return folder


def onnx_cache_key(checkpoint: str | Path, overrides: list[str] | None = None) -> str:
    """sha256 of the checkpoint's bytes, the overrides and the posekit version: the same weights
    and settings reuse one export; anything else (a retrained file at the same path) makes another."""
    from posekit._version import __version__
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    h.update("\n".join(["", *(overrides or []), __version__, torch.__version__]).encode())
    return h.hexdigest()


def onnx_cache_path(checkpoint: str | Path, overrides: list[str] | None = None) -> Path:
    """Where `backend="onnxruntime"` keeps the export of a checkpoint: the user's cache folder,
    named by `onnx_cache_key`."""
    return onnx_cache_dir() / f"{Path(checkpoint).stem}-{onnx_cache_key(checkpoint, overrides)[:32]}.onnx"


def _cached_export_is_ours(target: Path, key: str) -> bool:
    """A regular file we own whose recorded source key is `key` (not a planted or stale graph)."""
    import onnx
    try:
        st = target.lstat()
        if not target.is_file() or target.is_symlink() or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
            return False
        props = {p.key: p.value for p in onnx.load(str(target), load_external_data=False).metadata_props}
    except Exception:  # unreadable or not ONNX: export again
        return False
    return props.get(SOURCE_KEY) == key


def export_cached(checkpoint: str | Path, overrides: list[str] | None = None, *,
                  imports: list[str] | None = None) -> Path:
    """The checkpoint exported to ONNX (with metadata), reusing an earlier export only when the
    file in the cache records this checkpoint's content hash and settings. Written to a temporary
    name, then renamed."""
    from posekit.engine.export import export_task
    from posekit.engine.onnx_backend import write_metadata
    key = onnx_cache_key(checkpoint, overrides)
    target = onnx_cache_dir() / f"{Path(checkpoint).stem}-{key[:32]}.onnx"
    if _cached_export_is_ours(target, key):
        return target
    task, model, _ = load_for_inference(checkpoint, overrides, device="cpu", imports=imports)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".onnx", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        export_task(task, model, tmp)
        write_metadata(tmp, {SOURCE_KEY: key})
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


class Predictor:
    """Load a checkpoint (or an exported .onnx file) once, then call it on RGB images (or a
    lifter's 2-D poses).

    An image is a uint8 (H, W, 3) RGB array (0..255), a floating (H, W, 3) RGB array in [0, 1],
    or a path; grey (H, W) is replicated and RGBA drops its alpha. Anything else (a 0..255 float
    array, uint16, channels-first) is refused with an ImageInputError naming what was given
    (`as_rgb_image`). `bgr=True` (here for every call, or per call) takes arrays as B, G, R, as
    `cv2.imread` returns them; paths are always decoded to RGB.

    backend: "auto" (an .onnx file runs with onnxruntime, a checkpoint with PyTorch), "torch", or
    "onnxruntime" (a checkpoint is exported once, cached in the user's 0700 cache folder by the
    sha256 of its bytes, and a cached file is used only when it records that hash). Results of the two backends agree within float tolerance, and both take
    images by the same rules. device: cpu | cuda | cuda:N | mps | auto; one the machine lacks is
    a DeviceError (one line), not a silent fallback (onnxruntime without its CUDA provider runs
    on the CPU)."""

    def __init__(self, checkpoint, *, device: str = "cpu", overrides: list[str] | None = None,
                 backend: str = "auto", imports: list[str] | None = None, bgr: bool = False,
                 threads: int | None = None):
        """threads: intra-op threads of onnxruntime's session and, when given, of torch
        (torch.set_num_threads, process-wide); None: onnxruntime uses the physical cores and torch
        keeps its own default (also the physical cores)."""
        from posekit.engine.weights import resolve_checkpoint
        from posekit.runtime.onnx import default_threads
        self.threads = default_threads(threads)  # a bad value is one ValueError before anything loads
        if threads is not None:
            torch.set_num_threads(self.threads)
        checkpoint = resolve_checkpoint(checkpoint)  # Predictor("openpose_vgg19.cmu"): fetched and converted once
        self.bgr = bool(bgr)
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        path = Path(checkpoint)
        is_onnx = path.suffix.lower() == ".onnx"
        if is_onnx and backend == "torch":
            raise ValueError(f"{path}: an exported .onnx file runs with onnxruntime; the torch backend needs a "
                             "checkpoint (.pt)")
        self.metadata: dict | None = None
        self.model = self.runner = None
        if is_onnx or backend == "onnxruntime":
            from posekit.engine.onnx_backend import load_onnx
            onnx_path = path if is_onnx else export_cached(path, overrides, imports=imports)
            self.task, self.runner, self.cfg, self.metadata = load_onnx(
                onnx_path, overrides if is_onnx else None, device=device, imports=imports, threads=self.threads)
            self.backend, self.onnx_path = "onnxruntime", Path(onnx_path)
        else:
            self.task, self.model, self.cfg = load_for_inference(checkpoint, overrides, device=device, imports=imports)
            self.backend, self.onnx_path = "torch", None
        self._crop = None

    @property
    def skeleton(self):
        return self.task.skeleton

    @property
    def crop(self) -> dict | None:
        """The crop rule (see `onnx_backend.describe_crop`); None for non-image inputs."""
        if self._crop is None:
            if self.metadata is not None:
                self._crop = {"rule": self.metadata.get("crop")}
            else:
                from posekit.engine.onnx_backend import describe_crop
                self._crop = {"rule": describe_crop(self.task)}
        return self._crop["rule"]

    @property
    def takes_images(self) -> bool:
        if getattr(self, "_takes_images", None) is None:
            if self.metadata is not None:
                self._takes_images = self.metadata.get("input", {}).get("kind", "image") == "image"
            else:
                self._takes_images = self.task.export_spec().example_inputs[0].ndim == 4
        return self._takes_images

    @property
    def takes_boxes(self) -> bool:
        """Whether person boxes change what the model sees (top-down); bottom-up models and
        lifters ignore them."""
        crop = self.crop
        return bool(crop and crop.get("with_box"))

    def run(self, items: list, *, boxes=None, batch_size: int | None = None, **options) -> list[Results]:
        """The backend on prepared inputs: one box (or None) per item."""
        if self.backend == "torch":
            return predict(self.task, self.model, items, boxes=boxes, batch_size=batch_size, **options)
        from posekit.engine.onnx_backend import predict_onnx
        return predict_onnx(self.task, self.runner, items, boxes=boxes, batch_size=batch_size, **options)

    def __call__(self, inputs, *, boxes=None, paths: list[str] | None = None, batch_size: int | None = None,
                 bgr: bool | None = None, **options):
        """inputs: one input or a list: images (uint8 RGB (H, W, 3), float RGB in [0, 1], or paths;
        see the class docstring) or, for a lifter, 2-D poses. bgr: arrays are B, G, R (cv2.imread);
        None keeps the constructor's setting.
        boxes: per input None (the whole image), one box [x, y, w, h(, score)] (one person, as
        before), or a list of boxes (N persons in one Results; an empty list gives an empty
        Results). For a single input, `boxes` is that input's. Ignored, with a warning, by models
        that take no boxes. Returns one `Results` per input (a single one for a single input)."""
        from posekit.data.io import read_image

        single = not isinstance(inputs, list)
        items = [inputs] if single else list(inputs)
        names = list(paths) if paths else [None] * len(items)
        if len(names) != len(items):
            raise ValueError(f"got {len(names)} paths for {len(items)} inputs")
        bgr = self.bgr if bgr is None else bool(bgr)
        images = self.takes_images
        for i, item in enumerate(items):
            if isinstance(item, (str, Path)):
                names[i] = names[i] or str(item)
                items[i] = read_image(item)
            elif images:
                items[i] = as_rgb_image(item, bgr=bgr, where=f"input {i}" if not single else "image")
        if boxes is not None and single:
            boxes = [boxes]
        if boxes is not None and len(boxes) != len(items):
            raise ValueError(f"got {len(boxes)} box entries for {len(items)} inputs (one per input)")
        if boxes is not None and not self.takes_boxes:
            warnings.warn(f"this {self.task.name} model finds people itself (or takes no images): boxes are ignored",
                          stacklevel=2)
            boxes = None
        if boxes is None:
            results = self.run(items, batch_size=batch_size, **options)
        else:
            results = self._run_boxes(items, boxes, batch_size=batch_size, **options)
        for res, name in zip(results, names):
            if name is not None:
                res.path = name
        return results[0] if single else results

    def _run_boxes(self, items, boxes, *, batch_size=None, **options) -> list[Results]:
        threshold = getattr(getattr(self.cfg, "eval", None), "keypoint_score_threshold", 0.2)
        return results_per_box(items, boxes, lambda crops, crop_boxes: self.run(
            crops, boxes=crop_boxes, batch_size=batch_size, **options), skeleton=self.skeleton,
            score_threshold=float(threshold))

    def track(self, frames, *, boxes=None, det_every: int = 1, fps: float = 25.0, smooth=None,
              tracker: dict | None = None, batch_size: int | None = None, bgr: bool | None = None, **options):
        """Predict a video's frames (any iterable of images, consumed one chunk at a time so a
        long video runs in constant memory) and yield one `Results` per frame, in order, whose
        `track_ids` follow people from frame to frame (engine/tracking.py).

        boxes (top-down models; bottom-up ones find people themselves): None (the whole frame is
        one person), a sequence with one entry per frame (ground-truth boxes), or a callable
        `(frame_index, image) -> boxes` (a detector). With a callable and det_every N > 1 the
        detector runs on every N-th frame only and in between each live track's box comes from
        its previous keypoints (rtmlib's PoseTracker). smooth: None, "one_euro", or
        {"min_cutoff": Hz, "beta": ...}: a One-Euro filter per track and joint on the returned
        keypoints (pixels; time from `fps`). tracker: PoseTracker options (max_missed,
        birth_score, min_similarity, oks_weight, kpt_thr)."""
        from posekit.engine.tracking import PoseTracker
        if not self.takes_images:
            raise ValueError(f"this {self.task.name} model takes 2-D poses, not video frames: track the 2-D model's "
                             "output and lift that (posekit lift)")
        if isinstance(det_every, bool) or not isinstance(det_every, int) or det_every < 1:
            raise ValueError(f"det_every must be an integer >= 1, got {det_every!r}")
        if smooth == "one_euro":
            smooth = {}
        elif smooth is not None and not isinstance(smooth, dict):
            raise ValueError(f"smooth must be None, 'one_euro' or a dict of One-Euro parameters, got {smooth!r}")
        state = PoseTracker(self.skeleton, smooth=smooth, fps=fps, **(tracker or {}))
        if boxes is not None and not self.takes_boxes:
            warnings.warn(f"this {self.task.name} model finds people itself: boxes are ignored", stacklevel=2)
            boxes = None
        given = None if boxes is None or callable(boxes) else iter(boxes)

        def boxes_for(index, image):
            if given is not None:
                try:
                    return next(given)
                except StopIteration:
                    raise ValueError(f"track: boxes has fewer entries than the video has frames (none for "
                                     f"frame {index})") from None
            return boxes(index, image)

        def tracked(res):
            ids, keypoints = state.update(res.keypoints, res.scores, res.boxes, res.person_scores)
            res.track_ids = ids
            if smooth is not None:
                res.keypoints = keypoints
            return res

        if callable(boxes) and det_every > 1:  # sequential: a frame's boxes may come from the last one's poses
            for index, frame in enumerate(frames):
                image = as_rgb_image(frame, bgr=self.bgr if bgr is None else bool(bgr), where=f"frame {index}")
                propagated = state.propagated_boxes() if index % det_every else None
                rows = boxes_for(index, image) if propagated is None or not len(propagated) else propagated
                rows = np.zeros((0, 5)) if rows is None else rows
                yield tracked(self([image], boxes=[rows], batch_size=batch_size, bgr=False, **options)[0])
            return
        chunk_size = batch_size or check_batch_size_default(self.cfg)
        chunk, index = [], 0

        def run_chunk():
            images = [as_rgb_image(f, bgr=self.bgr if bgr is None else bool(bgr), where=f"frame {index + i}")
                      for i, f in enumerate(chunk)]
            chunk_boxes = None if boxes is None else [boxes_for(index + i, im) for i, im in enumerate(images)]
            return [tracked(r) for r in self(images, boxes=chunk_boxes, batch_size=batch_size, bgr=False, **options)]

        for frame in frames:
            chunk.append(frame)
            if len(chunk) >= chunk_size:
                yield from run_chunk()
                index += len(chunk)
                chunk = []
        if chunk:
            yield from run_chunk()


def check_batch_size_default(cfg) -> int:
    """Frames per forward pass when tracking: the config's eval.batch_size (1 when unset)."""
    size = getattr(getattr(cfg, "eval", None), "batch_size", None)
    return int(size) if isinstance(size, int) and size >= 1 else 1
