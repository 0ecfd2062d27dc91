"""int8 ONNX files for CPU deployment: onnxruntime static quantization with a metric check.

`export_int8` exports the family's decode graph (`export_task`, metadata included), calibrates
onnxruntime's static quantizer on N images of the recipe's validation split fed through the
family's own eval pipeline (dataset -> collate -> model_inputs: the crops and normalisation the
deployed file will see), then scores the fp32 and the int8 file on that split with the family's
evaluator. It writes the int8 file only when the primary metric got worse by at most
`max_drop` of its fp32 value (relative, `DEFAULT_MAX_DROP` = 2 %), else it refuses with one line
that names both numbers and the flag that overrides it.

Only the network's heavy operators (Conv, ConvTranspose, MatMul, Gemm) are quantized: the
decoding that lives inside the graph (argmax, sub-pixel refinement, soft-argmax, flip
averaging) stays float, since rounding heatmaps to 256 levels moves keypoints for no speed.
Weights are int8 per output channel, activations uint8 per tensor (QDQ format, which
onnxruntime's CPU provider fuses into integer kernels).

Why 2 %: published static-int8 results for convolutional pose and classification networks
lose well under 1 % of their metric (relative) with MinMax calibration on ~100 images; a loss
beyond 2 % means calibration went wrong (too few or unrepresentative images, an outlier
activation range) rather than int8's normal rounding. The check runs on the same split, so
small splits (a smoke recipe's) are noisy: pass `max_drop` to loosen or tighten it.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from posekit.engine.evaluation import spread_subset
from posekit.engine.export import export_task, require_onnx
from posekit.families.base import Task

__all__ = ["DEFAULT_CALIBRATION_IMAGES", "DEFAULT_MAX_DROP", "QUANTIZED_OPS", "Int8Refused", "evaluate_onnx",
           "export_int8", "metric_drop"]

DEFAULT_CALIBRATION_IMAGES = 64
DEFAULT_MAX_DROP = 0.02  # relative: the primary metric may get worse by 2 % of its fp32 value
QUANTIZED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


class Int8Refused(ValueError):
    """The int8 file scored worse than the threshold allows; nothing was written."""


def _split(task: Task, datasets: dict) -> str:
    """The validation split (the last eval split: a family may fit on an earlier one, fse)."""
    for split in task.eval_splits:
        if datasets.get(split) is None or len(datasets[split]) == 0:
            raise ValueError(f"int8 calibration and its check need the recipe's {split!r} split, which is missing "
                             "or empty; check the stored data config (data.root on this machine)")
    return task.eval_splits[-1]


def _batches(task: Task, dataset, *, limit: int | None, batch_size: int):
    loader = torch.utils.data.DataLoader(spread_subset(dataset, limit), batch_size=batch_size, shuffle=False,
                                         collate_fn=task.collate)
    yield from loader


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol (`get_next` -> feed dict or None) over the
    first `count` items of a split (spread over it), as the eval pipeline prepares them."""

    def __init__(self, task: Task, dataset, input_name: str, count: int, batch_size: int):
        self._feeds = ({input_name: np.ascontiguousarray(task.model_inputs(b).detach().cpu().numpy(),
                                                          dtype=np.float32)}
                       for b in _batches(task, dataset, limit=count, batch_size=batch_size))

    def get_next(self):
        return next(self._feeds, None)

    def rewind(self):  # pragma: no cover - onnxruntime asks only for entropy/percentile calibration
        raise NotImplementedError("MinMax calibration reads the data once")


@torch.no_grad()
def evaluate_onnx(task: Task, path: str | Path, datasets: dict, *, max_samples: int | None = None,
                  threads: int | None = None) -> dict:
    """The family's evaluator on its eval splits with onnxruntime running `path` in place of
    forward_decode (the same prepare -> graph -> postprocess path as `Predictor`)."""
    from posekit.engine.onnx_backend import OnnxRuntimeModel
    runner = OnnxRuntimeModel(path, threads=threads)
    evaluator = task.build_evaluator(datasets)
    max_samples = task.cfg.eval.max_samples if max_samples is None else max_samples
    for split in task.eval_splits:
        for batch in _batches(task, datasets[split], limit=max_samples, batch_size=task.cfg.eval.batch_size):
            decoded = runner(task.model_inputs(batch))
            evaluator.update(split, task.postprocess(decoded, batch), batch)
    return evaluator.compute()


def metric_drop(before: float, after: float, *, higher_is_better: bool) -> float:
    """How much worse `after` is than `before`, relative to |before| (0 when it is not worse;
    inf when after is not a number, or before is 0 and after is worse)."""
    if not math.isfinite(after):
        return math.inf
    worse = (before - after) if higher_is_better else (after - before)
    if worse <= 0:
        return 0.0
    return worse / abs(before) if before else math.inf


def _tmp(out: Path, tag: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=f".{tag}.onnx", dir=out.parent)
    os.close(fd)
    return Path(name)


def export_int8(task: Task, model: nn.Module, out: str | Path, datasets: dict, *,
                calib: int = DEFAULT_CALIBRATION_IMAGES, max_drop: float = DEFAULT_MAX_DROP,
                max_samples: int | None = None, threads: int | None = None) -> dict:
    """Write an int8 ONNX file of `task`'s decode graph to `out` (see the module docstring).

    Returns {"path", "metric", "fp32", "int8", "drop", "max_drop", "calibration_images"}. Raises
    `Int8Refused` (a ValueError; nothing written) when the metric drop exceeds `max_drop`."""
    require_onnx()
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from posekit.engine.onnx_backend import write_metadata
    if not isinstance(calib, int) or isinstance(calib, bool) or calib < 1:
        raise ValueError(f"--calib must be a positive number of images, got {calib!r}")
    if not (isinstance(max_drop, (int, float)) and not math.isnan(max_drop) and max_drop >= 0):  # inf: no check
        raise ValueError(f"--max-drop must be a non-negative fraction (0.02 = 2 %), got {max_drop!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    split = _split(task, datasets)
    fp32, pre, int8 = _tmp(out, "fp32"), _tmp(out, "pre"), _tmp(out, "int8")
    try:
        export_task(task, model, fp32)
        props = {p.key: p.value for p in onnx.load(str(fp32), load_external_data=False).metadata_props}
        input_name = task.export_spec().input_names[0]
        reader = _CalibrationReader(task, datasets[split], input_name, calib, task.cfg.eval.batch_size)
        # onnxruntime's pre-processing folds the exporter's constant subgraphs (conv biases
        # computed from batch-norm) into initializers, without which those convs stay float
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer logs advice per node on the root logger
        try:
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(int8), reader, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        finally:
            root.setLevel(level)
        key = task.primary_metric
        before = evaluate_onnx(task, fp32, datasets, max_samples=max_samples, threads=threads)
        after = evaluate_onnx(task, int8, datasets, max_samples=max_samples, threads=threads)
        if key not in before or key not in after:
            raise ValueError(f"the {task.name} evaluator gives no {key!r} (it gives {sorted(before)}); "
                             "cannot check the int8 file")
        b, a = float(before[key]), float(after[key])
        drop = metric_drop(b, a, higher_is_better=task.higher_is_better)
        report = {"path": str(out), "metric": key, "split": split, "fp32": b, "int8": a, "drop": drop,
                  "max_drop": float(max_drop), "calibration_images": min(calib, len(datasets[split])),
                  "higher_is_better": task.higher_is_better}
        if drop > max_drop:
            raise Int8Refused(f"int8 refused, nothing written: {key} on the {split!r} split is {a:.4g} int8 vs "
                              f"{b:.4g} fp32, {drop:.1%} worse (allowed {max_drop:.1%}); calibrate on more images "
                              "(--calib N) or allow more (--max-drop F)")
        import json
        write_metadata(int8, {**props, "posekit.quantization": json.dumps(
            {"format": "int8 static QDQ", "ops": list(QUANTIZED_OPS), "weights": "int8 per channel",
             "activations": "uint8 per tensor", "calibration": f"MinMax, {report['calibration_images']} "
             f"images of {split!r}", "metric": key, "fp32": b, "int8": a})})
        os.replace(int8, out)
        return report
    finally:
        for p in (fp32, pre, int8):
            p.unlink(missing_ok=True)
