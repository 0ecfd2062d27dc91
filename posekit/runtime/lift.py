"""A GMH-MDN lifter's steps outside its graph, in numpy: 2-D poses in any known layout -> the
lifter's 16 inputs, and the graph's hypotheses -> one pose set per input.

Before the graph (`lift_batch`): each pose is mapped to Human3.6M-17 order
(`posekit.skeletons.mappings`; a score <= 0 marks a missing joint, NaN), the 16 lifter inputs
are taken (no neck_base) and, with `rescale`, every pose is fitted to the training set's mean
2-D pose (its centre and RMS size), whose statistics an export stores as the `codec.mean_2d`
buffer. After it (`lifted_poses`): the hypothesis with the largest mixing weight, its weight as
every joint's score, and the inputs regrouped (one input may hold several people).

`families/gmh_mdn.py` calls these functions for its `prepare_inputs` and `postprocess`, and
`RuntimeLifter` runs an exported .onnx file with them and onnxruntime alone, so the PyTorch path
and a deployment without torch share one implementation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from posekit.runtime.onnx import REEXPORT, open_session, read_metadata, stored_buffer
from posekit.skeletons import get_skeleton
from posekit.skeletons.builtin import H36M17_LIFT_INPUTS as INPUT_JOINTS
from posekit.skeletons.mappings import lift_layouts, map_keypoints, sources_of

__all__ = ["INPUT_JOINTS", "LIFT_OUTPUTS", "NUM_JOINTS", "RuntimeLifter", "as_h36m17", "fill_neck", "lift_batch",
           "lifted_poses", "rescale_to_reference"]

NUM_JOINTS = 17  # h36m17: the lifter's output skeleton
LIFT_OUTPUTS = ("hypotheses", "weights", "sigmas")  # the graph's outputs (families/gmh_mdn.py export_spec)
_NECK, _THORAX, _HEAD = 9, 8, 10


# --- before the graph ----------------------------------------------------------------------------
def as_h36m17(points: np.ndarray, scores: np.ndarray | None, skeleton: str) -> np.ndarray:
    """(P, K, 2|3) pixels (a third channel, or `scores`, <= 0 marks a missing joint) in `skeleton`
    order -> (P, 17, 2) in h36m17 order with NaN for missing joints. Accepted skeletons: h36m17
    (17 joints), h36m16 (the 16 lifter inputs, no neck_base), and those in `lift_layouts()`
    (mpii16 = Stacked Hourglass output, coco17, ...). A joint count that does not match the
    named layout is refused, never reinterpreted."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 2:
        pts = pts[None]
    if pts.ndim != 3 or pts.shape[-1] not in (2, 3):
        raise ValueError(f"2-D keypoints must be (K, 2|3) or (P, K, 2|3), got {pts.shape}")
    if pts.shape[-1] == 3:
        scores = pts[..., 2] if scores is None else scores
        pts = pts[..., :2]
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64).reshape(pts.shape[:2])
        pts = np.where((scores > 0)[..., None], pts, np.nan)
    k = pts.shape[1]
    if skeleton == "h36m17" and k == 17:
        return pts
    if skeleton == "h36m16" and k == 16:  # 16 joints are h36m16 only when named so: MPII-16 has 16 too
        full = np.full((len(pts), 17, 2), np.nan)
        full[:, list(INPUT_JOINTS)] = pts
        return full
    if skeleton in sources_of("h36m17") and k == get_skeleton(skeleton).num_keypoints:
        return map_keypoints(pts, skeleton, "h36m17", has_visibility=False)
    raise ValueError(f"{k} joints do not match skeleton {skeleton!r}; the lifter reads {', '.join(lift_layouts())}: "
                     "name the layout (--skeleton NAME, or 'skeleton' in the JSON)")


def rescale_to_reference(x: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """Similarity-normalise each (16, 2) pose (NaN = missing) to the reference pose's centre and
    RMS size over the joints it has: poses from cameras unlike the training data. Vectorised over
    the poses (a lifter's batch is thousands of them)."""
    reference = np.asarray(reference, dtype=np.float64).reshape(-1, 2)
    x = np.asarray(x, dtype=np.float64).reshape(-1, reference.shape[0], 2)
    ok = np.isfinite(x).all(axis=2)  # (N, J)
    count = ok.sum(axis=1)
    if np.any(count < 2):
        raise ValueError("rescale: a pose needs at least 2 visible joints")
    w = ok[..., None]
    filled = np.where(w, x, 0.0)
    c_in = filled.sum(axis=1) / count[:, None]  # (N, 2)
    c_ref = (w * reference[None]).sum(axis=1) / count[:, None]
    s_in = np.sqrt((np.where(w, filled - c_in[:, None], 0.0) ** 2).sum(axis=(1, 2)) / count)
    s_ref = np.sqrt((np.where(w, reference[None] - c_ref[:, None], 0.0) ** 2).sum(axis=(1, 2)) / count)
    scale = s_ref / np.maximum(s_in, 1e-9)
    out = (x - c_in[:, None]) * scale[:, None, None] + c_ref[:, None]
    transforms = [{"scale": float(f), "center_in": ci.tolist(), "center_ref": cr.tolist()}
                  for f, ci, cr in zip(scale, c_in, c_ref)]
    return out, transforms


def fill_neck(points_17: np.ndarray) -> np.ndarray:
    """For display only: a missing neck_base is put halfway between thorax and head."""
    pts = np.array(points_17, dtype=np.float64, copy=True)
    missing = ~np.isfinite(pts[..., _NECK, :]).all(-1)
    pts[missing, _NECK] = 0.5 * (pts[missing, _THORAX] + pts[missing, _HEAD])
    return pts


def _pose_of(item, skeleton: str):
    """One input -> (points, scores, layout, image, path). An input is an array, a dict with
    "keypoints" (and "skeleton", "scores"), or a 2-D pose result (an object with `keypoints`,
    `scores` and `skeleton`, such as `posekit.results.Results`, which sits above this layer)."""
    if isinstance(item, dict):
        if "keypoints" not in item:
            raise ValueError(f"predict: a dict input needs 'keypoints' (got keys {sorted(item)})")
        return item["keypoints"], item.get("scores"), item.get("skeleton") or skeleton, None, None
    if hasattr(item, "keypoints") and hasattr(item, "skeleton") and hasattr(item, "scores"):
        if np.asarray(item.keypoints).shape[-1] == 3:
            raise ValueError("predict: got 3-D Results; the lifter needs 2-D keypoints")
        layout = getattr(item.skeleton, "name", item.skeleton)
        return item.keypoints, item.scores, layout, getattr(item, "image", None), getattr(item, "path", None)
    pts = np.asarray(item)
    if pts.dtype == np.uint8 and pts.ndim == 3 and pts.shape[-1] == 3 and pts.shape[0] > 17:
        raise ValueError("predict: the lifter takes 2-D keypoints, not images; use `posekit lift --image` "
                         "with a Hourglass checkpoint to go from an image to 3-D")
    return pts, None, skeleton, None, None


def lift_batch(inputs, *, skeleton: str = "h36m17", rescale: bool = False, mean_2d=None) -> dict:
    """2-D poses -> a lifting batch of numpy values: "input_2d" (N, 16, 2) float32 pixels (what
    the graph takes; NaN = missing), "keypoints_2d_17" (N, 17, 2) the poses in h36m17 order,
    "groups" (the rows of each input: one input may hold several people), "images", "paths",
    "meta". Each input is (K, 2|3) or (P, K, 2|3) pixels (a third channel is a score; <= 0 marks
    a missing joint), a 2-D pose result, or a dict with "keypoints" (and "skeleton", "scores").
    skeleton: the joint order of array inputs. rescale: fit each pose to `mean_2d` (the training
    set's mean pose, 32 values), for cameras unlike Human3.6M's."""
    poses, groups, images, paths, meta = [], [], [], [], []
    for item in inputs:
        pts, scores, layout, image, path = _pose_of(item, skeleton)
        points = as_h36m17(pts, scores, layout)
        groups.append(range(len(poses), len(poses) + len(points)))
        poses += list(points)
        images.append(image)
        paths.append(path)
        meta.append({"rescaled_2d": bool(rescale)})
    points = np.stack(poses) if poses else np.zeros((0, 17, 2))
    x = points[:, list(INPUT_JOINTS)]
    if rescale:
        if mean_2d is None:
            raise ValueError("rescale needs the training set's mean 2-D pose (the lifter's mean_2d)")
        x, _ = rescale_to_reference(x, np.asarray(mean_2d, dtype=np.float64))
    return {"input_2d": np.ascontiguousarray(x, dtype=np.float32), "keypoints_2d_17": points, "groups": groups,
            "images": images, "paths": paths, "meta": meta}


# --- after the graph -----------------------------------------------------------------------------
def lifted_poses(hypotheses, weights, sigmas, batch) -> list[dict]:
    """The graph's outputs for a batch -> one dict per input, the keyword arguments of a
    `Results` on the h36m17 skeleton: "keypoints" the hypothesis with the largest weight (P, 17, 3)
    mm, "scores" that weight for every joint, "person_scores", "hypotheses" (P, M, 17, 3),
    "hypothesis_weights" (P, M), "keypoints_2d" (the input in h36m17 order, a missing neck filled
    for display), "image", "path", "meta" (units, sigmas, whether the input was rescaled).
    hypotheses (N, M, 17, 3), weights (N, M), sigmas (N, M): numpy, any float type."""
    hyps = np.asarray(hypotheses, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    sigmas = np.asarray(sigmas, dtype=np.float64)
    best = weights.argmax(axis=1)
    groups = batch.get("groups") or [[i] for i in range(len(hyps))]  # samples of one input (people)
    shown = batch.get("keypoints_2d_17")
    shown = fill_neck(np.asarray(shown)) if shown is not None else None  # once for the whole batch
    images, paths, extra = batch.get("images"), batch.get("paths"), batch.get("meta")
    out = []
    for g, rows in enumerate(groups):
        rows = list(rows)
        meta = {"units": "mm, camera frame, root-relative", "keypoints": "hypothesis with the largest weight",
                "sigmas": sigmas[rows].tolist(), **(extra[g] if extra else {})}
        out.append({"keypoints": hyps[rows, best[rows]],
                    "scores": np.repeat(weights[rows].max(axis=1, keepdims=True), NUM_JOINTS, axis=1),
                    "person_scores": weights[rows].max(axis=1), "hypotheses": hyps[rows],
                    "hypothesis_weights": weights[rows],
                    "keypoints_2d": shown[rows] if shown is not None else None,
                    "image": images[g] if images else None, "path": paths[g] if paths else None, "meta": meta})
    return out


# --- an exported lifter ---------------------------------------------------------------------------
class RuntimeLifter:
    """An exported gmh_mdn .onnx file with its steps outside the graph in numpy: call it on 2-D
    poses (see `lift_batch`) to get one dict per input (see `lifted_poses`). The metadata is read
    through onnxruntime and checked first: a file that is not a trained lifter as `posekit export`
    writes it is one ValueError naming the file."""

    task_name = "gmh_mdn"

    def __init__(self, path: str | Path, *, device: str = "cpu", threads: int | None = None, session=None):
        self.path = Path(path)
        self.session = session if session is not None else open_session(path, device=device, threads=threads)
        source = str(path)
        self.metadata = meta = read_metadata(self.session, source)
        if not self.supports(meta):
            raise ValueError(f"{source}: a {meta.get('task')} export ({meta.get('kind')}), not a gmh_mdn lifter; "
                             "`posekit lift` needs a lifter (posekit predict runs the other families)")
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        entry = meta.get("input")
        if not isinstance(entry, dict) or entry.get("name") != inputs[0] or entry.get("size") != [len(INPUT_JOINTS), 2]:
            raise ValueError(f"{source}: metadata posekit.input is not the lifter's (input {inputs[0]!r}, "
                             f"{len(INPUT_JOINTS)} joints x 2); {REEXPORT}")
        if meta.get("outputs") != outputs or not set(LIFT_OUTPUTS) <= set(outputs):
            raise ValueError(f"{source}: the graph's outputs {outputs} are not those its metadata "
                             f"({meta.get('outputs')}) and a gmh_mdn lifter ({list(LIFT_OUTPUTS)}) name; {REEXPORT}")
        skeleton = meta.get("skeleton")
        if not isinstance(skeleton, dict) or skeleton.get("name") != "h36m17" \
                or skeleton.get("keypoints") != list(get_skeleton("h36m17").keypoints):
            raise ValueError(f"{source}: metadata posekit.skeleton is not the lifter's h36m17; {REEXPORT}")
        fitted = stored_buffer(meta.get("buffers"), "codec.fitted", (), source)
        self.mean_2d = stored_buffer(meta.get("buffers"), "codec.mean_2d", (2 * len(INPUT_JOINTS),), source)
        if fitted is None or float(fitted) <= 0 or self.mean_2d is None:
            raise ValueError(f"{source}: the lifter has no normalisation statistics (posekit.buffers lacks "
                             "codec.fitted / codec.mean_2d): export a trained checkpoint")
        config = meta.get("config")
        batch = ((config.get("eval") if isinstance(config, dict) else None) or {}).get("batch_size", 1024)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"{source}: metadata posekit.config eval.batch_size is {batch!r}, not a whole number "
                             f">= 1; {REEXPORT}")
        self.batch_size = batch
        self.input_name, self.output_names = inputs[0], outputs
        self.skeleton = get_skeleton("h36m17")

    @staticmethod
    def supports(meta: dict) -> bool:
        """Whether this is a lifter's export (the family and input kind it records); whether the
        rest of its metadata is sound is checked when it opens (one line naming the file)."""
        return isinstance(meta, dict) and meta.get("task") == "gmh_mdn" \
            and isinstance(meta.get("input"), dict) and meta["input"].get("kind") == "keypoints_2d"

    def __call__(self, inputs: list, *, skeleton: str = "h36m17", rescale: bool = False,
                 batch_size: int | None = None) -> list[dict]:
        """Lift `inputs` (see `lift_batch`), `batch_size` inputs per session run (default: the
        file's eval.batch_size, as the Task path chunks)."""
        step = max(1, batch_size or self.batch_size)
        out: list[dict] = []
        for start in range(0, len(inputs), step):
            batch = lift_batch(inputs[start:start + step], skeleton=skeleton, rescale=rescale, mean_2d=self.mean_2d)
            if not len(batch["input_2d"]):
                out += lifted_poses(np.zeros((0, 1, NUM_JOINTS, 3)), np.zeros((0, 1)), np.zeros((0, 1)), batch)
                continue
            decoded = dict(zip(self.output_names, self.session.run(None, {self.input_name: batch["input_2d"]})))
            out += lifted_poses(decoded["hypotheses"], decoded["weights"], decoded["sigmas"], batch)
        return out
