"""`posekit predict model.onnx ...` without torch: the numpy runtime (`posekit.runtime.predict`)
behind the same interface `Run` uses with `engine.predictor.Predictor`.

Taken when the model is an existing .onnx file of a family the runtime supports and the options
need nothing of the Task path (no --box/--boxes/--detector, no --track, no --set, the CPU);
`posekit predict` then starts without importing torch, posekit.engine or posekit.families.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from posekit.results import Results, json_safe, results_json  # noqa: F401  (results_json: its old home)

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
        found = self.model(list(images), boxes, batch_size=batch_size)
        names = list(paths) if paths else [None] * len(images)
        return [Results(keypoints=f["keypoints"], scores=f["scores"], skeleton=self.skeleton,
                        person_scores=f["person_scores"], boxes=f["boxes"], image=image, path=name)
                for f, image, name in zip(found, images, names)]


def _needs_task_path(args) -> bool:
    """Options only the Task-based predictor implements."""
    return bool(args.box or args.boxes or args.detector or getattr(args, "track", False) or args.overrides
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
    if not RuntimeModel.supports(read_metadata(session, str(path)), [o.name for o in session.get_outputs()]):
        return None
    return RuntimePredictor(RuntimeModel(path, session=session))
