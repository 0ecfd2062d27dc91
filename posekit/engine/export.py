"""ONNX export through torch.onnx with an onnxruntime parity check.

The graph is the family's `forward_decode` (network, flip test, in-graph decoding: keypoints
out, not raw heatmaps); what stays outside the graph is the family's `postprocess` (inverse
affine, person grouping), which runs on the ONNX outputs exactly as on PyTorch's. The file
carries `metadata_props` (see `engine.onnx_backend`), so `Predictor("model.onnx")` and plain
onnxruntime users (docs/deploy.md) need nothing else.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from posekit.config import MissingExtraError
from posekit.engine.onnx_backend import build_metadata, write_metadata
from posekit.families.base import Task
from posekit.models import unwrap


class DecodeGraph(nn.Module):
    """`task.forward_decode(model, x)` as a module whose outputs are a tuple in `names` order."""

    def __init__(self, task: Task, model: nn.Module, names: list[str]):
        super().__init__()
        self.task, self.model, self.names = task, unwrap(model), list(names)

    def forward(self, *inputs):
        decoded = self.task.forward_decode(self.model, *inputs)
        return tuple(decoded[n] for n in self.names)


def export_task(task: Task, model: nn.Module, path: str | Path, *, check: bool = True) -> dict:
    """Export a family's decode graph (see the module docstring) to ONNX, with parity, and write
    the metadata that lets the file run with no recipe and no checkpoint
    (`engine.onnx_backend`: config, skeleton, input size, normalisation, crop rule, outputs)."""
    spec = task.export_spec()
    graph = DecodeGraph(task, model, spec.output_names).eval()
    report = export_onnx(graph, spec.example_inputs, path, input_names=spec.input_names,
                         output_names=spec.output_names, dynamic_axes=spec.dynamic_axes, check=check)
    props = build_metadata(task, model, spec)
    write_metadata(path, props)
    report["metadata"] = sorted(props)
    return report


def require_onnx(*, runtime: bool = True) -> None:
    """Fail before any work when the [onnx] extra is missing: torch's exporter would otherwise
    raise its own "Module onnx is not installed!" from deep inside the export."""
    import importlib
    for module in ("onnx", "onnxruntime") if runtime else ("onnx",):
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise MissingExtraError(f"ONNX export needs the '{module}' package, which is not installed: "
                                    "pip install 'posekit[onnx]'") from e


def export_onnx(module: nn.Module, example_inputs: tuple, path: str | Path, *, input_names: list[str],
                output_names: list[str], dynamic_axes: dict | None = None, opset: int = 17,
                check: bool = True) -> dict:
    """Export `module` to `path` and (by default) compare with onnxruntime.

    Uses the TorchScript-based exporter (`dynamo=False`): it is 5-10x faster to export than
    the default and writes one self-contained file. Returns {"path", "max_abs_diff", "outputs"}.
    """
    require_onnx(runtime=check)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example_inputs, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes or {}, opset_version=opset, dynamo=False)
    report = {"path": str(path), "max_abs_diff": None, "outputs": output_names}
    if check:
        report["max_abs_diff"] = parity(module, example_inputs, path, input_names=input_names)
    return report


def parity(module: nn.Module, example_inputs: tuple, path: str | Path, *, input_names: list[str]) -> float:
    """Largest |PyTorch - onnxruntime| over all outputs."""
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - the [onnx] extra
        raise MissingExtraError("the parity check needs onnxruntime: pip install 'posekit[onnx]'") from e
    with torch.no_grad():
        ref = module(*example_inputs)
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {name: t.detach().cpu().numpy() for name, t in zip(input_names, example_inputs)}
    outs = session.run(None, feeds)
    diff = 0.0
    for r, o in zip(ref, outs):
        r = r.detach().cpu().numpy().astype(np.float64)
        if r.shape != o.shape:
            raise AssertionError(f"ONNX output shape {o.shape} != PyTorch {r.shape}")
        if r.size:
            diff = max(diff, float(np.max(np.abs(r - o.astype(np.float64)))))
    return diff
