"""An exported gmh_mdn .onnx file lifted without torch: the numpy lifter (`posekit.runtime.lift`)
dressed as the predictor `posekit lift` and `posekit predict` drive, 2-D poses in, one `Results`
per input out.

Taken for an existing .onnx lifter on the CPU; `posekit lift model.onnx --json poses.json` (and
`posekit predict model.onnx poses.json`) then start without importing torch, onnx, posekit.engine
or posekit.families.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from posekit.results import Results

__all__ = ["RuntimeLiftPredictor", "runtime_lifter_for"]


class RuntimeLiftPredictor:
    """`posekit.runtime.lift.RuntimeLifter` with the interface of `engine.predictor.Predictor`
    for a lifter: `predictor(poses, skeleton=, rescale=)` -> one Results per input."""

    backend = "onnxruntime"
    takes_images = False
    takes_boxes = False

    def __init__(self, lifter):
        self.lifter = lifter
        self.metadata = lifter.metadata
        self.skeleton = lifter.skeleton
        self.task = SimpleNamespace(name=lifter.task_name)
        self.cfg = SimpleNamespace(eval=SimpleNamespace(batch_size=lifter.batch_size))
        self.onnx_path = lifter.path

    def __call__(self, inputs, *, boxes=None, paths: list[str] | None = None, batch_size: int | None = None,
                 skeleton: str = "h36m17", rescale: bool = False):
        """inputs: one input or a list (see `posekit.runtime.lift.lift_batch`); boxes are ignored
        (a lifter takes no image)."""
        single = not isinstance(inputs, list)
        items = [inputs] if single else list(inputs)
        names = list(paths) if paths else [None] * len(items)
        if len(names) != len(items):
            raise ValueError(f"got {len(names)} paths for {len(items)} inputs")
        out = []
        for pose, name in zip(self.lifter(items, skeleton=skeleton, rescale=rescale, batch_size=batch_size), names):
            res = Results(skeleton=self.skeleton, **pose)
            if name is not None:
                res.path = name
            out.append(res)
        return out[0] if single else out


def runtime_lifter_for(checkpoint, *, device: str = "cpu", threads: int | None = None,
                       session=None, metadata: dict | None = None) -> RuntimeLiftPredictor | None:
    """A `RuntimeLiftPredictor` for `checkpoint` when it is an existing .onnx lifter and the device
    is the CPU; None when the Task path must run it (a checkpoint, another device, another family).
    A lifter file whose metadata is unsound is a ValueError (one line naming the file). `session`
    and `metadata`: already opened and read by the caller (one session serves both)."""
    path = Path(checkpoint)
    if path.suffix.lower() != ".onnx" or not path.is_file() or str(device).lower() != "cpu":
        return None
    from posekit.runtime.lift import RuntimeLifter
    from posekit.runtime.onnx import open_session, read_metadata
    session = session if session is not None else open_session(path, device="cpu", threads=threads)
    meta = metadata if metadata is not None else read_metadata(session, str(path))
    if not RuntimeLifter.supports(meta):
        return None
    return RuntimeLiftPredictor(RuntimeLifter(path, session=session))
