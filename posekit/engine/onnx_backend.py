"""Exported ONNX files that stand on their own: the metadata they carry, and running them.

`export_task` writes `metadata_props` (all values are strings, JSON where structured):

    posekit.version        the posekit that wrote the file
    posekit.task           the family name
    posekit.config         the full stored config as JSON: the Task is rebuilt from it, no recipe
    posekit.skeleton       {name, keypoints, flip_pairs, flip_index, limbs}
    posekit.input          {name, kind: image|keypoints_2d, layout, dtype, range, channels, size}
    posekit.normalization  what the graph does to its input (the mean/std live inside the graph)
    posekit.crop           how an image becomes the input (probed from the family's prepare_inputs)
    posekit.outputs        the output names, in order
    posekit.kind           top-down | bottom-up | whole-image | lifting: what happens after the graph
    posekit.buffers        model state the family reads outside the graph (a lifter's
                           normalisation, a fitted regressor), only when there is any

Reading (`read_metadata`) goes through onnxruntime's model metadata (`posekit.runtime.onnx`), never
the `onnx` package, which only `write_metadata` (export) needs.

Running (`OnnxRuntimeModel`, `load_onnx`): the Task is rebuilt from `posekit.config` (the
`imports` it names are never imported: a file is data), and onnxruntime takes the place of
`forward_decode` in prepare_inputs -> model_inputs -> [graph] -> postprocess, so results are
those of the PyTorch path within float tolerance.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn

from posekit.engine.stored import config_from_stored
from posekit.families import build_task
from posekit.families.base import Task
from posekit.runtime.onnx import PLAIN_KEYS, PREFIX, open_session  # noqa: F401  (PLAIN_KEYS: re-exported)
from posekit.runtime.onnx import read_metadata as _session_metadata

_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


# --- metadata ----------------------------------------------------------------------------------
def _pad_value(crop: np.ndarray, matrix: np.ndarray, width: int, height: int) -> list[int] | None:
    """The value of an output pixel whose source lies well outside the image (None: there is none)."""
    out_h, out_w = crop.shape[1:]
    inv = cv2.invertAffineTransform(matrix)
    ys, xs = np.mgrid[0:out_h, 0:out_w]
    src = np.einsum("ij,jhw->ihw", inv[:, :2], np.stack([xs, ys]).astype(np.float64)) + inv[:, 2:, None]
    outside = (src[0] < -2) | (src[0] > width + 1) | (src[1] < -2) | (src[1] > height + 1)
    if not outside.any():
        return None
    y, x = np.argwhere(outside)[0]
    return [int(v) for v in crop[:, y, x]]


def _edge_pad_value(task: Task) -> list[int] | None:
    """The constant border of a crop that shows none outright (an image stretched to the input
    still blends it into its edge pixels): per channel, the one value that reproduces the family's
    crop of a black 4x4 image; None when no value does or the family cannot take that image."""
    black = np.zeros((4, 4, 3), np.uint8)
    try:
        batch = task.prepare_inputs([black])
        crop = batch["image"][0].cpu().numpy().transpose(1, 2, 0)
        matrix = batch["matrix"][0].detach().double().cpu().numpy()
    except Exception:  # a family that cannot take this probe: nothing to learn from it
        return None
    out_h, out_w = crop.shape[:2]
    pad = []
    for c in range(3):
        hit = next((v for v in range(256) if np.array_equal(cv2.warpAffine(
            black[..., c], matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
            borderValue=v), crop[..., c])), None)
        if hit is None:
            return None
        pad.append(hit)
    return pad


def describe_crop(task: Task) -> dict | None:
    """How `task.prepare_inputs` turns an image (and a person box) into the network input, probed
    with a textured 100x60 image: {"input_size": [W, H], "without_box": {"mode": image|resize|
    letterbox_top_left|resize_crop|custom}, "with_box": {"mode": "box", "padding": p} or None when
    boxes are ignored, "pad_value", interpolation, border, pixel centres}. A mode is written only
    when the numpy runtime's crop of it (`posekit.runtime.predict.crop_inputs`) gives the family's
    matrix and pixels; "resize_crop" (FSE) is an area resize to resize^2 and an S^2 slice at
    (offset, offset). None for inputs that are not images (a lifter)."""
    from posekit.data.transforms import crop_affine
    from posekit.runtime.landmarks import resize_crop_geometry
    from posekit.runtime.predict import crop_inputs
    width, height = 100, 60
    probe = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    box = [0.0, 0.0, 20.0, 40.0]
    try:
        plain = task.prepare_inputs([probe])
        boxed = task.prepare_inputs([probe], boxes=[box])
    except Exception:  # a lifter (poses, not images) or a family that cannot take this probe
        return None
    if "matrix" not in plain or "image" not in plain:
        return None
    out_h, out_w = (int(v) for v in plain["image"].shape[-2:])
    m0 = plain["matrix"][0].detach().double().cpu().numpy()
    m1 = boxed["matrix"][0].detach().double().cpu().numpy()
    info: dict = {"input_size": [out_w, out_h], "interpolation": "bilinear (cv2.INTER_LINEAR)",
                  "border": "constant (cv2.BORDER_CONSTANT)",
                  "pixel_centers": "integer coordinates: box [x, y, w, h] centre (x + w/2 - 0.5, y + h/2 - 0.5), "
                                   "output centre ((W - 1) / 2, (H - 1) / 2)"}
    centre = (width / 2 - 0.5, height / 2 - 0.5)
    aspect = out_w / out_h
    s = min(out_w / width, out_h / height)
    top_left = np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5]])
    side = max(width, height * aspect)
    resize, offset = int(round(m0[0, 0] * width)), int(round(0.5 * m0[0, 0] - 0.5 - m0[0, 2]))
    try:  # the matrix a square resize then a crop would have (FSE), from the probe's own
        resize_crop = resize_crop_geometry((height, width), out_w, resize, offset)[0] if out_w == out_h else None
    except ValueError:
        resize_crop = None
    want = plain["image"][0].cpu().numpy()
    pad = _pad_value(want, m0, width, height)
    if pad is None and not np.allclose(m0, m1):
        pad = _pad_value(boxed["image"][0].cpu().numpy(), m1, width, height)
    pad = (pad if pad is not None else _edge_pad_value(task)) or [0, 0, 0]
    candidates = [
        ({"mode": "image", "rule": "the whole image letterboxed: a region of width max(W, H * a) and height that "
                                   "/ a (a = W_in / H_in) centred on the image, aspect kept"},
         crop_affine(centre, (side, side / aspect), (out_w, out_h))),
        ({"mode": "resize", "rule": "the whole image stretched to the input (aspect not kept)"},
         crop_affine(centre, (width, height), (out_w, out_h))),
        ({"mode": "letterbox_top_left", "rule": "scale s = min(W_in / W, H_in / H), image at the top-left: "
                                                "x -> (x + 0.5) * s - 0.5"}, top_left),
        ({"mode": "resize_crop", "resize": resize, "offset": offset,
          "rule": "the whole image area-resized (cv2.INTER_AREA) to resize x resize (aspect not kept), then the "
                  "input's square sliced at (offset, offset)"}, resize_crop)]
    info["without_box"] = {"mode": "custom", "rule": "family-specific crop (see its prepare_inputs)"}
    for rule, matrix in candidates:  # the first whose matrix and pixels the runtime reproduces
        if matrix is not None and np.allclose(m0, matrix):
            pixels = crop_inputs({**info, "without_box": rule, "with_box": None, "pad_value": pad}, [probe])[0][0]
            if np.array_equal(pixels, want):
                info["without_box"] = rule
                if rule["mode"] == "resize_crop":
                    info["interpolation"] = "area (cv2.INTER_AREA) resize, then a slice: no warp"
                break
    info["without_box"]["matrix_for_100x60"] = m0.tolist()
    if np.allclose(m0, m1):
        info["with_box"] = None  # the family finds every person itself (or crops its own way)
    else:
        grown = max(box[2], box[3] * aspect)  # the box grown to the input's aspect ratio
        padding = float(out_w / m1[0, 0] / grown)
        info["with_box"] = {"mode": "box", "padding": round(padding, 6),
                            "rule": "a region of width padding * max(w, h * a) and height that / a "
                                    "(a = W_in / H_in; a square of side padding * max(w, h) when a = 1) "
                                    "centred on the box"}
        if not np.allclose(m1, crop_affine((box[0] + box[2] / 2 - 0.5, box[1] + box[3] / 2 - 0.5),
                                           (padding * grown, padding * grown / aspect), (out_w, out_h))) or \
                not np.array_equal(crop_inputs({**info, "pad_value": pad}, [probe], [box])[0][0],
                                   boxed["image"][0].cpu().numpy()):
            info["with_box"].update(mode="custom", matrix_for_box=m1.tolist())
    info["pad_value"] = pad
    return info


def state_outside_graph(task: Task, model: nn.Module) -> dict:
    """Buffers of `model` (not batch-norm statistics) whose values differ from a freshly built
    model's: data-dependent state such as a lifter's normalisation statistics or a fitted
    regressor, which `task.prepare` links into the task and the family reads outside the graph."""
    from posekit.models import unwrap
    net = unwrap(model)
    mine = {k: v for k, v in net.named_buffers() if not k.endswith(_BN_STATS)}
    if not mine:
        return {}
    with torch.random.fork_rng():
        fresh = dict(task.build_model().named_buffers())
    out = {}
    for name, value in mine.items():
        ref = fresh.get(name)
        if ref is not None and ref.shape == value.shape and torch.equal(ref.cpu(), value.detach().cpu()):
            continue
        array = value.detach().cpu()
        out[name] = {"shape": list(array.shape), "dtype": str(array.dtype).replace("torch.", ""),
                     "data": array.reshape(-1).tolist()}
    return out


def build_metadata(task: Task, model: nn.Module, spec) -> dict[str, str]:
    """The `metadata_props` of an exported file (see the module docstring)."""
    from posekit._version import __version__
    from posekit.config import config_to_dict
    from posekit.models import unwrap

    cfg = config_to_dict(task.cfg)
    cfg["model"] = {**cfg["model"], "init_from": None}
    sk = task.skeleton
    example = spec.example_inputs[0]
    image_input = example.ndim == 4
    crop = describe_crop(task) if image_input else None
    net = unwrap(model)
    norm: dict = {"input": "RGB float32 in [0, 1] (uint8 / 255)" if image_input else "pixels (x, y) as float32"}
    mean, std = getattr(net, "pixel_mean", None), getattr(net, "pixel_std", None)
    if torch.is_tensor(mean) and torch.is_tensor(std):
        norm["inside_graph"] = "(x - mean) / std"
        norm["mean"] = [float(v) for v in mean.reshape(-1)]
        norm["std"] = [float(v) for v in std.reshape(-1)]
    else:
        norm["inside_graph"] = "whatever the model applies in forward (nothing to do outside)"
    if not image_input:
        kind = "lifting"
    elif "pafs" in spec.output_names:
        kind = "bottom-up"
    elif crop is not None and crop.get("with_box"):
        kind = "top-down"
    else:
        kind = "whole-image"
    shape = list(example.shape)
    meta = {
        "version": __version__,
        "task": task.name,
        "config": cfg,
        "skeleton": {"name": sk.name, "keypoints": list(sk.keypoints), "flip_pairs": [list(p) for p in sk.flip_pairs],
                     "flip_index": [int(i) for i in sk.flip_index], "limbs": [list(p) for p in sk.limbs]},
        "input": {"name": spec.input_names[0], "kind": "image" if image_input else "keypoints_2d",
                  "layout": "NCHW" if image_input else "N,J,2", "dtype": "float32",
                  "range": [0.0, 1.0] if image_input else None, "channels": "RGB" if image_input else None,
                  "size": shape[-2:] if image_input else shape[1:]},
        "normalization": norm,
        "crop": crop,
        "outputs": list(spec.output_names),
        "kind": kind,
    }
    buffers = state_outside_graph(task, model)
    if buffers:
        meta["buffers"] = buffers
    return {PREFIX + k: v if isinstance(v, str) else json.dumps(v, allow_nan=False) for k, v in meta.items()}


def write_metadata(path: str | Path, props: dict[str, str]) -> None:
    """Add `props` to the `metadata_props` of the ONNX file at `path` (in place)."""
    import onnx
    model = onnx.load(str(path))
    existing = {p.key: p.value for p in model.metadata_props}
    onnx.helper.set_model_props(model, {**existing, **props})
    onnx.save(model, str(path))


def read_metadata(path: str | Path) -> dict:
    """The posekit metadata of an ONNX file, JSON values decoded, without the `posekit.` prefix
    (through onnxruntime: no `import onnx`)."""
    return _session_metadata(open_session(path, threads=1), str(path))


# --- running -----------------------------------------------------------------------------------
class OnnxRuntimeModel:
    """An onnxruntime session that stands in for `task.forward_decode`: input tensor -> dict of
    decoded tensors named like the graph's outputs."""

    def __init__(self, path: str | Path, *, device: str = "cpu", threads: int | None = None, session=None):
        """threads: onnxruntime's intra-op threads (default: the physical cores); session: an
        already open session on `path` (load_onnx reads the metadata from it)."""
        self.path = str(path)
        self.session = session if session is not None else open_session(path, device=device, threads=threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feed = {self.input_names[0]: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)}
        outs = self.session.run(None, feed)
        return {name: torch.from_numpy(np.asarray(o)) for name, o in zip(self.output_names, outs)}


_BUFFER_DTYPES = ("float32", "float64", "float16", "int64", "int32", "bool")


def restore_buffers(model: nn.Module, buffers: dict, source: str = "the ONNX metadata") -> None:
    """Copy the stored `posekit.buffers` into a freshly built model; an entry of the wrong form
    (not {shape, dtype, data}, another shape than the model's buffer) is one ValueError."""
    own = dict(model.named_buffers())
    for name, entry in buffers.items():
        if name not in own:
            raise ValueError(f"{source}: posekit.buffers stores buffer {name!r} that the model built from its "
                             "config lacks; re-export the checkpoint with `posekit export`")
        if (not isinstance(entry, dict) or entry.get("dtype") not in _BUFFER_DTYPES
                or list(entry.get("shape") or []) != list(own[name].shape) or not isinstance(entry.get("data"), list)):
            raise ValueError(f"{source}: posekit.buffers[{name!r}] is not {{shape {list(own[name].shape)}, dtype "
                             f"({', '.join(_BUFFER_DTYPES)}), data: list}}; re-export the checkpoint with `posekit export`")
        try:
            value = torch.tensor(entry["data"], dtype=getattr(torch, entry["dtype"])).reshape(own[name].shape)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{source}: posekit.buffers[{name!r}] data do not fill shape {list(own[name].shape)} "
                             "with numbers; re-export the checkpoint with `posekit export`") from None
        own[name].data.copy_(value.to(own[name].device))


def check_metadata(meta: dict, source: str) -> None:
    """The structure `build_metadata` writes, or one ValueError naming the entry: a tampered or
    hand-edited file must not reach the code that reads it as an internal error."""
    kinds = {"config": dict, "skeleton": dict, "input": dict, "outputs": list, "crop": (dict, type(None)),
             "normalization": dict, "buffers": dict}
    for key, kind in kinds.items():
        if key in meta and not isinstance(meta[key], kind):
            raise ValueError(f"{source}: metadata posekit.{key} is a {type(meta[key]).__name__}, not the structure "
                             "posekit export writes; re-export the checkpoint with `posekit export`")
    for key in ("input", "outputs", "kind"):
        if key not in meta:
            raise ValueError(f"{source}: metadata posekit.{key} is missing; re-export the checkpoint with "
                             "`posekit export`")
    if meta["input"].get("kind") not in ("image", "keypoints_2d"):
        raise ValueError(f"{source}: metadata posekit.input.kind is {meta['input'].get('kind')!r}, not image or "
                         "keypoints_2d; re-export the checkpoint with `posekit export`")
    if not meta["outputs"] or not all(isinstance(o, str) for o in meta["outputs"]):
        raise ValueError(f"{source}: metadata posekit.outputs is not a list of output names; re-export the "
                         "checkpoint with `posekit export`")
    crop = meta.get("crop")
    if crop is not None and not isinstance(crop.get("with_box"), (dict, type(None))):
        raise ValueError(f"{source}: metadata posekit.crop.with_box is not a mapping or null; re-export the "
                         "checkpoint with `posekit export`")


def load_onnx(path: str | Path, overrides: list[str] | None = None, *, device: str = "cpu",
              imports: list[str] | None = None, threads: int | None = None
              ) -> tuple[Task, OnnxRuntimeModel, object, dict]:
    """(task rebuilt from the file's metadata, onnxruntime runner, config, metadata).
    `overrides` change pre/post-processing settings only: what is inside the graph (flip test,
    test scales, decoding) was fixed at export. One session serves the metadata and the runs;
    threads: its intra-op threads (default: the physical cores)."""
    session = open_session(path, device=device, threads=threads)
    meta = _session_metadata(session, str(path))
    check_metadata(meta, str(path))
    cfg = config_from_stored(meta["config"], source=str(path), overrides=overrides, imports=imports)
    task = build_task(cfg)
    buffers = meta.get("buffers") or {}
    if buffers:  # state the family reads outside the graph: a model built from the config carries it
        model = task.build_model()
        restore_buffers(model, buffers, str(path))
        task.prepare(model.eval(), {})
    else:
        task.prepare(None, {})
    runner = OnnxRuntimeModel(path, device=device, session=session)
    with torch.random.fork_rng():  # the spec's example inputs must not move the caller's RNG
        want = list(task.export_spec().output_names)
    if [n for n in want if n not in runner.output_names] or meta["outputs"] != runner.output_names:
        raise ValueError(f"{path}: the graph's outputs {runner.output_names} are not those its metadata "
                         f"({meta['outputs']}) and its {task.name} config ({want}) name; re-export the checkpoint "
                         "with `posekit export`")
    return task, runner, cfg, meta


@torch.no_grad()
def predict_onnx(task: Task, runner: OnnxRuntimeModel, inputs: list, *, boxes=None, batch_size: int | None = None,
                 **options) -> list:
    """`engine.evaluation.predict` with onnxruntime in place of forward_decode."""
    step = max(1, batch_size or task.cfg.eval.batch_size)
    out = []
    for start in range(0, len(inputs), step):
        chunk = inputs[start:start + step]
        chunk_boxes = None if boxes is None else boxes[start:start + step]
        batch = task.prepare_inputs(chunk, boxes=chunk_boxes, **options)
        decoded = runner(task.model_inputs(batch))
        out += task.postprocess(decoded, batch)
    return out
