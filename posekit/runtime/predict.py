"""An exported .onnx file run on RGB images with numpy, opencv and onnxruntime alone.

The steps around the graph, read from the file's metadata (`posekit.crop`, `posekit.config`,
`posekit.kind`): the crop matrix of each image (or person box), the warp, the session run, and
what the family's `postprocess` does outside the graph (the inverse affine, MMPose's person
rescoring, PAF grouping). The families call the same functions here, so a deployment without
torch and the PyTorch path share one implementation.

Supported: the top-down families `keypoints`, `hourglass` and `dogs`, bottom-up `openpose`, and
the unsupervised landmarks of `fse` with its fitted MAFL regressor (`RUNTIME_TASKS`); other files
need the Task-based path (`posekit.engine.onnx_backend`). Results come back as plain dicts of
numpy arrays (`keypoints`, `scores`, `person_scores`, `boxes`, and `meta` where the family has
one): `posekit.results.Results` sits above this layer and takes them as keyword arguments.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from posekit.runtime.dogs import dog_outputs
from posekit.runtime.geometry import to_original_frame
from posekit.runtime.landmarks import landmark_outputs, regressor_from_buffers, resize_crop, resize_crop_geometry
from posekit.runtime.onnx import open_session, read_metadata
from posekit.runtime.paf import DecoderConfig, decode_people, to_coco17
from posekit.skeletons import Skeleton, get_skeleton
from posekit.skeletons.from_config import skeleton_from_config

__all__ = ["RUNTIME_TASKS", "RuntimeModel", "box_crop_matrix", "crop_affine", "crop_inputs", "crop_matrix",
           "openpose_people", "topdown_person_scores", "warp_crops"]

RUNTIME_TASKS = ("keypoints", "hourglass", "openpose", "dogs", "fse")
# state outside the graph that the runtime applies itself (posekit.buffers), per family
RUNTIME_BUFFERS = {"fse": ("mafl_regressor", "mafl_regressor_fitted")}
# the crop rules (posekit.crop without_box modes) each family's pipeline makes: another one (an
# older export's description, a hand edit) sends the file to the Task path
RUNTIME_CROPS = {"fse": ("resize_crop",), "dogs": ("image", "resize")}
AFFINE_CROPS = ("image", "resize", "letterbox_top_left")
OPENPOSE_STRIDE = 8.0  # the OpenPose family's PAF/heatmap stride (codecs.paf.PAFCodec stride=8)


# --- geometry ----------------------------------------------------------------------------------
def crop_affine(center, size, output_size) -> np.ndarray:
    """2x3 matrix mapping a region of `size` (w, h) px centred at `center` (x, y) onto an output
    of `output_size` (w, h), pixel centres at integer coordinates (the evaluation geometry of
    `posekit.data.transforms.crop_affine`, without rotation or mirroring)."""
    sw, sh = float(size[0]), float(size[1])
    if not (sw > 0 and sh > 0):
        raise ValueError(f"crop size must be positive, got {tuple(size)}")
    ow, oh = output_size
    a = np.array([[ow / sw, 0.0], [0.0, oh / sh]])
    m = np.zeros((2, 3))
    m[:, :2] = a
    m[:, 2] = np.array([(ow - 1) / 2.0, (oh - 1) / 2.0]) - a @ np.array([float(center[0]), float(center[1])])
    return m


def box_crop_matrix(box, padding: float, output_size) -> np.ndarray:
    """A person box [x, y, w, h] grown to the input's aspect ratio a = W / H, times `padding`,
    centred on the box (MMPose's rule, `data.topdown.CropRule` mode "box")."""
    x, y, bw, bh = (float(v) for v in box)
    if not (np.isfinite([x, y, bw, bh]).all() and bw > 0 and bh > 0):
        raise ValueError(f"person box must be 4 finite numbers [x, y, w, h] with positive w, h; got {list(box)}")
    aspect = output_size[0] / output_size[1]
    side = max(bw, bh * aspect) * float(padding)
    return crop_affine((x + bw / 2.0 - 0.5, y + bh / 2.0 - 0.5), (side, side / aspect), output_size)


def crop_matrix(crop: dict, width: int, height: int, box=None) -> np.ndarray:
    """The original -> network-input matrix that the file's `posekit.crop` rule gives an image of
    `width` x `height` (and a person box, where the rule takes one)."""
    out_w, out_h = (int(v) for v in crop["input_size"])
    if box is not None and crop.get("with_box"):
        rule = crop["with_box"]
        if rule.get("mode") != "box":
            raise ValueError(f"crop rule {rule.get('mode')!r} with a box is family-specific: use the Task path")
        return box_crop_matrix(box, rule["padding"], (out_w, out_h))
    mode = (crop.get("without_box") or {}).get("mode")
    if mode == "image":
        aspect = out_w / out_h
        side = float(max(width, height * aspect))
        return crop_affine((width / 2.0 - 0.5, height / 2.0 - 0.5), (side, side / aspect), (out_w, out_h))
    if mode == "resize":
        return crop_affine((width / 2.0 - 0.5, height / 2.0 - 0.5), (float(width), float(height)), (out_w, out_h))
    if mode == "letterbox_top_left":
        s = min(out_w / width, out_h / height)
        t = 0.5 * s - 0.5  # pixel centres at integers: x -> (x + 0.5) * s - 0.5
        return np.array([[s, 0.0, t], [0.0, s, t]])
    if mode == "resize_crop":
        rule = crop["without_box"]
        return resize_crop_geometry((height, width), out_w, rule["resize"], rule["offset"])[0]
    raise ValueError(f"crop rule {mode!r} without a box is family-specific: use the Task path")


def warp_crops(images: list, matrices: np.ndarray, input_size, pad_value) -> np.ndarray:
    """(N, 3, H, W) uint8 network inputs: each image warped by its matrix (bilinear, constant
    border of `pad_value`), as the families' pipelines crop."""
    w, h = (int(v) for v in input_size)
    border = tuple(int(v) for v in pad_value) if np.ndim(pad_value) else (int(pad_value),) * 3
    crops = [cv2.warpAffine(image, np.asarray(m, np.float64), (w, h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=border).transpose(2, 0, 1)
             for image, m in zip(images, matrices)]
    return np.ascontiguousarray(np.stack(crops)) if crops else np.zeros((0, 3, h, w), np.uint8)


def crop_inputs(crop: dict, images: list, boxes: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """((N, 3, H, W) uint8 network inputs, (N, 2, 3) matrices) of RGB images (and person boxes,
    where the rule takes them) as the file's `posekit.crop` rule makes them: a warp for the affine
    rules, an area resize and a slice for "resize_crop" (the FSE pipeline's own crop)."""
    boxes = [None] * len(images) if boxes is None else boxes
    rule = crop.get("without_box") or {}
    if rule.get("mode") == "resize_crop":
        size = int(crop["input_size"][0])
        pairs = [resize_crop(image, size, rule["resize"], rule["offset"]) for image in images]
        if not pairs:
            return np.zeros((0, 3, size, size), np.uint8), np.zeros((0, 2, 3))
        return (np.ascontiguousarray(np.stack([c.transpose(2, 0, 1) for c, _ in pairs])),
                np.stack([m for _, m in pairs]))
    ms = [crop_matrix(crop, im.shape[1], im.shape[0], None if b is None else np.asarray(b, float)[:4])
          for im, b in zip(images, boxes)]
    matrices = np.stack(ms) if ms else np.zeros((0, 2, 3))
    return warp_crops(images, matrices, crop["input_size"], crop.get("pad_value", [0, 0, 0])), matrices


# --- what each family does after the graph ------------------------------------------------------
def topdown_person_scores(scores, box_scores, threshold: float = 0.2) -> np.ndarray:
    """MMPose's top-down person score: box score x the mean of the keypoint scores above
    `threshold` (0 when none is). scores (P, K), box_scores (P,) -> (P,)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(len(box_scores), -1)
    above = scores > threshold
    mean = np.where(above.any(1), (scores * above).sum(1) / np.maximum(above.sum(1), 1), 0.0)
    return np.asarray(box_scores, dtype=np.float64) * mean


def openpose_people(heatmaps: np.ndarray, pafs: np.ndarray, matrix: np.ndarray, *, config: DecoderConfig,
                    parts: Skeleton, stride: float = OPENPOSE_STRIDE) -> tuple[np.ndarray, np.ndarray]:
    """One image's OpenPose maps -> ((N, 17, 3) COCO keypoints x, y, score in the original
    frame, missing parts (0, 0, 0); (N,) person scores)."""
    people, person_scores = decode_people(heatmaps, pafs, stride=stride, config=config, skeleton=parts)
    kp = to_coco17(people)
    if len(kp):
        xy = to_original_frame(kp[None, ..., :2].reshape(1, -1, 2), np.asarray(matrix, np.float64)[None])
        kp[..., :2] = np.where(kp[..., 2:] > 0, xy.reshape(kp.shape[0], -1, 2), 0.0)
    return kp, person_scores


def skeleton_from_metadata(entry: dict) -> Skeleton:
    """The skeleton a file names: the registered one of that name when it has the same joints,
    else one built from the stored keypoints, flip pairs and limbs."""
    try:
        known = get_skeleton(entry["name"])
        if list(known.keypoints) == list(entry["keypoints"]):
            return known
    except (KeyError, ValueError):
        pass
    return Skeleton(entry["name"], tuple(entry["keypoints"]), tuple(tuple(p) for p in entry.get("flip_pairs", ())),
                    tuple(tuple(p) for p in entry.get("limbs", ())))


def _size_wh(value) -> list[int] | None:
    """A config `data.input_size` (S or [W, H]) as [W, H]."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return [value, value]
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return list(value)
    return None


def _consistent(meta: dict, output_names) -> bool:
    """The checks behind `RuntimeModel.supports` (may raise on malformed entries: not supported)."""
    crop, config = meta.get("crop"), meta.get("config")
    if meta.get("task") not in RUNTIME_TASKS or not isinstance(crop, dict) or not isinstance(config, dict):
        return False
    if config.get("task") != meta["task"] or (meta.get("input") or {}).get("kind") != "image":
        return False
    buffers = meta.get("buffers")
    if buffers and not (isinstance(buffers, dict) and set(buffers) <= set(RUNTIME_BUFFERS.get(meta["task"], ()))):
        return False
    size = _size_wh(crop.get("input_size"))
    if size is None or not all(8 <= v <= 8192 for v in size) or _size_wh((config.get("data") or {}).get("input_size")) != size:
        return False
    if (crop.get("without_box") or {}).get("mode") not in RUNTIME_CROPS.get(meta["task"], AFFINE_CROPS):
        return False
    with_box = crop.get("with_box")
    if with_box is not None and not (with_box.get("mode") == "box" and float(with_box["padding"]) > 0
                                     and meta["task"] != "fse"):  # FSE crops the whole image, boxes or not
        return False
    outputs = meta.get("outputs")
    if not isinstance(outputs, list) or (output_names is not None and list(output_names) != outputs):
        return False
    want = {"openpose": {"heatmaps", "pafs"}, "dogs": {"keypoints"}}.get(meta["task"], {"keypoints", "scores"})
    if not want <= set(outputs):
        return False
    ev = config.get("eval") or {}
    batch = ev.get("batch_size", 1)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        return False
    skeleton = meta.get("skeleton")
    return isinstance(skeleton, dict) and isinstance(skeleton.get("keypoints"), list) and \
        (meta["task"] != "openpose" or ev.get("preset", "cmu") in ("cmu", "mindspore"))


def _check_resize_crop(crop: dict, config: dict, source: str) -> None:
    """An FSE file's "resize_crop" rule is the crop its config gives (data.resize, then
    data.input_size at data.crop_offset, centred when null), or one ValueError naming the file: a
    hand-edited description must not crop other pixels than the network was trained on."""
    rule, data = crop.get("without_box") or {}, config.get("data") or {}
    size, resize, offset = crop["input_size"], rule.get("resize"), rule.get("offset")
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (resize, offset))
    given = data.get("crop_offset")
    want = given if given is not None else (data.get("resize") - size[0]) // 2 if isinstance(data.get("resize"), int) \
        else None
    if not (ints and size[0] == size[1] and 0 <= offset and offset + size[0] <= resize
            and resize == data.get("resize") and offset == want):
        raise ValueError(f"{source}: metadata posekit.crop.without_box (resize {resize!r}, offset {offset!r}) is not "
                         f"the crop its config gives (data.resize {data.get('resize')!r}, data.crop_offset {given!r}, "
                         f"data.input_size {size[0]}); re-export the checkpoint with `posekit export`")


# --- the model -----------------------------------------------------------------------------------
class RuntimeModel:
    """An exported posekit .onnx file with its pre- and post-processing in numpy: call it on RGB
    uint8 (H, W, 3) images (and optional person boxes for top-down files) to get, per image, a
    dict of numpy arrays (`keypoints` (P, K, 2), `scores` (P, K), `person_scores` (P,), `boxes`
    (P, 4) or None) in original-image pixels, and `meta` for fse (`mafl5`: the 5 points of its
    fitted regressor, when the file stores one)."""

    def __init__(self, path: str | Path, *, device: str = "cpu", threads: int | None = None, session=None):
        self.path = Path(path)
        self.session = session if session is not None else open_session(path, device=device, threads=threads)
        self.metadata = meta = read_metadata(self.session, str(path))
        self.task_name = str(meta.get("task"))
        if not self.supports(meta, [o.name for o in self.session.get_outputs()]):
            raise ValueError(f"{path}: a {self.task_name} export ({meta.get('kind')}) runs through the Task path "
                             f"(posekit.engine.onnx_backend); the numpy runtime takes {', '.join(RUNTIME_TASKS)}")
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        try:  # a hand-edited or truncated entry is one line naming the file, not a KeyError
            self.config = meta["config"]
            self.crop = meta["crop"]
            self.input_size = tuple(int(v) for v in self.crop["input_size"])
            self.pad_value = self.crop.get("pad_value", [0, 0, 0])
            data_skeleton = (self.config.get("data") or {}).get("skeleton")
            self.skeleton = skeleton_from_config(data_skeleton) \
                if self.task_name == "keypoints" and isinstance(data_skeleton, dict) \
                else skeleton_from_metadata(meta["skeleton"])  # keypoints keeps its skeleton's content
            eval_cfg = self.config.get("eval") or {}
            self.batch_size = int(eval_cfg.get("batch_size") or 1)
            self.takes_boxes = bool(self.crop.get("with_box"))
            if self.task_name == "openpose":
                self.decoder = DecoderConfig.preset(eval_cfg.get("preset", "cmu"))
                self.parts = get_skeleton("openpose18")
            self.keypoint_score_threshold = float(eval_cfg.get("keypoint_score_threshold", 0.2))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"{path}: posekit metadata is not what `posekit export` writes ({type(e).__name__}: "
                             f"{e}); re-export the checkpoint with `posekit export`") from None
        self.regressor = None
        if self.task_name == "fse":  # the crop its config gives, and the fitted MAFL regressor
            _check_resize_crop(self.crop, self.config, str(path))
            self.regressor = regressor_from_buffers(meta.get("buffers"), self.skeleton.num_keypoints, str(path))
        if self.task_name == "dogs" and self.skeleton.name != "stanford_extra24":
            raise ValueError(f"{path}: a dogs export predicts the stanford_extra24 joints, its metadata names "
                             f"{self.skeleton.name!r}; re-export the checkpoint with `posekit export`")

    @staticmethod
    def supports(meta: dict, output_names: list[str] | None = None) -> bool:
        """Whether the numpy runtime runs this file: a family it has, a crop rule it reads, and
        metadata that agrees with itself (crop size = config size, outputs = the graph's, no
        state outside the graph but the family's own that the runtime applies: fse's regressor).
        Anything else goes to the Task path, whose full check of the stored config names what is
        wrong in one line. The values of a supported file's crop rule and buffers are checked
        when `RuntimeModel` opens it: a hand-edited one is one ValueError naming the file."""
        try:
            return _consistent(meta, output_names)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            return False

    def __call__(self, images: list, boxes: list | None = None, *, batch_size: int | None = None) -> list[dict]:
        """images: RGB uint8 (H, W, 3) arrays; boxes: per image None (the whole image) or one
        [x, y, w, h] box (top-down files; ignored by bottom-up ones). One dict per image."""
        if boxes is not None and len(boxes) != len(images):
            raise ValueError(f"got {len(boxes)} box entries for {len(images)} images (one per image)")
        for n, image in enumerate(images):
            if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                    and image.shape[2] == 3):
                got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
                raise ValueError(f"image {n}: the numpy runtime takes RGB uint8 (H, W, 3) arrays, got {got}")
        step = max(1, batch_size or self.batch_size)
        out: list[dict] = []
        for start in range(0, len(images), step):
            chunk = images[start:start + step]
            chunk_boxes = [None] * len(chunk) if boxes is None or not self.takes_boxes else boxes[start:start + step]
            out += self._run(chunk, chunk_boxes)
        return out

    def matrices(self, images: list, boxes: list) -> np.ndarray:
        """(N, 2, 3) crop matrices of the images (and boxes)."""
        ms = [crop_matrix(self.crop, im.shape[1], im.shape[0], None if b is None else np.asarray(b, float)[:4])
              for im, b in zip(images, boxes)]
        return np.stack(ms) if ms else np.zeros((0, 2, 3))

    def _run(self, images: list, boxes: list) -> list[dict]:
        crops, matrices = crop_inputs(self.crop, images, boxes)
        x = crops.astype(np.float32) / np.float32(255.0)
        decoded = dict(zip(self.output_names, self.session.run(None, {self.input_name: x})))
        if self.task_name == "openpose":
            return [self._openpose(decoded["heatmaps"][i], decoded["pafs"][i], matrices[i]) for i in range(len(images))]
        if self.task_name == "fse":
            return landmark_outputs(decoded["keypoints"], decoded["scores"], matrices, self.regressor)
        whole = [[0.0, 0.0, float(im.shape[1]), float(im.shape[0])] for im in images]
        box = np.array([list(np.asarray(b, float)[:4]) if b is not None else w for b, w in zip(boxes, whole)],
                       np.float64).reshape(-1, 4)
        if self.task_name == "dogs":
            return dog_outputs(decoded["keypoints"], matrices, box)
        kp = to_original_frame(np.asarray(decoded["keypoints"], np.float64), matrices)
        scores = np.asarray(decoded["scores"], np.float64)
        out = []
        for i in range(len(images)):
            person = None
            if self.task_name == "keypoints":
                person = topdown_person_scores(scores[i:i + 1], np.ones(1), self.keypoint_score_threshold)
            out.append({"keypoints": kp[i][None], "scores": scores[i][None], "person_scores": person,
                        "boxes": box[i][None]})
        return out

    def _openpose(self, heatmaps, pafs, matrix) -> dict:
        kp, person_scores = openpose_people(np.asarray(heatmaps, np.float32), np.asarray(pafs, np.float32), matrix,
                                            config=self.decoder, parts=self.parts)
        k = self.skeleton.num_keypoints
        return {"keypoints": kp[..., :2].reshape(-1, k, 2), "scores": kp[..., 2].reshape(-1, k),
                "person_scores": person_scores, "boxes": None}
