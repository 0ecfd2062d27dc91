"""`posekit predict model.onnx ...` without torch: the numpy runtime (`posekit.runtime.predict`)
behind the same interface `Run` uses with `engine.predictor.Predictor`.

Taken when the model is an existing .onnx file of a family the runtime supports and the options
need nothing of the Task path (no --detector, no --track, no --set, the CPU; --box and --boxes
are read by the numpy `posekit.data.box_files`);
`posekit predict` then starts without importing torch, posekit.engine or posekit.families.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from posekit.results import Results, json_safe, results_json, results_per_box  # noqa: F401  (results_json: its old home)

__all__ = ["RuntimePredictor", "results_json", "runtime_predictor_for"]


class RuntimePredictor:
    """The numpy runtime dressed as the `Predictor` that `posekit predict`'s Run drives: images in,
    one `Results` per image out."""

    backend = "onnxruntime"
    takes_images = True

    def __init__(self, model):
        self.model = model
        self.metadata = model.metadata
        self.skeleton = model.skeleton
        self.takes_boxes = model.takes_boxes
        self.task = SimpleNamespace(name=model.task_name)
        self.cfg = SimpleNamespace(eval=SimpleNamespace(batch_size=model.batch_size))
        self.onnx_path = model.path

    def __call__(self, images: list, *, boxes=None, paths: list[str] | None = None, batch_size: int | None = None):
        """boxes: per image None, one box, or a list of boxes (N persons in one Results), as
        `Predictor` takes them; ignored by files that find every person themselves."""
        images = list(images)
        if boxes is not None and len(boxes) != len(images):
            raise ValueError(f"got {len(boxes)} box entries for {len(images)} inputs (one per input)")
        if boxes is None or not self.takes_boxes:
            results = self._run(images, None, batch_size)
        else:
            results = results_per_box(images, boxes, lambda crops, crop_boxes: self._run(
                crops, crop_boxes, batch_size), skeleton=self.skeleton,
                score_threshold=self.model.keypoint_score_threshold)
        for res, name in zip(results, list(paths) if paths else [None] * len(images)):
            res.path = name
        return results

    def _run(self, images: list, boxes: list | None, batch_size: int | None) -> list[Results]:
        found = self.model(images, boxes, batch_size=batch_size)
        return [Results(keypoints=f["keypoints"], scores=f["scores"], skeleton=self.skeleton,
                        person_scores=f["person_scores"], boxes=f["boxes"], image=image, meta=f.get("meta") or {})
                for f, image in zip(found, images)]


def _needs_task_path(args) -> bool:
    """Options only the Task-based predictor implements."""
    return bool(args.detector or getattr(args, "track", False) or args.overrides
                or args.backend == "torch" or str(args.device).lower() != "cpu")


def runtime_predictor_for(args) -> RuntimePredictor | None:
    """A `RuntimePredictor` for `args.checkpoint` when it is an .onnx file the numpy runtime runs
    with these options; None when the Task path must run it (another family, or an option such as
    --detector), and a ValueError (one line naming the file) for a file it cannot read."""
    path = Path(args.checkpoint)
    if path.suffix.lower() != ".onnx" or not path.is_file() or _needs_task_path(args):
        return None
    from posekit.runtime.onnx import open_session, read_metadata
    from posekit.runtime.predict import RuntimeModel
    session = open_session(path, device="cpu", threads=args.threads)
    meta = read_metadata(session, str(path))
    from posekit.cli.runtime_lift import runtime_lifter_for  # a gmh_mdn lifter: 2-D poses in (posekit.runtime.lift)
    lifter = runtime_lifter_for(path, session=session, metadata=meta)
    if lifter is not None:
        return lifter
    if not RuntimeModel.supports(meta, [o.name for o in session.get_outputs()]):
        return None
    return RuntimePredictor(RuntimeModel(path, session=session))
