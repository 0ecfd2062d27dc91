"""The family contract, for every registered family: its synthetic recipe trains, evaluates
(model and oracle), predicts on a user-like input, exports to ONNX whose outputs go through the
same postprocess, and round-trips a checkpoint. A new family gets all of this for free."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from posekit.engine.evaluation import evaluate, evaluate_checkpoint, predict, to_device
from posekit.engine.export import export_task
from posekit.engine.predictor import Predictor, load_for_inference
from posekit.engine.recipes import load_config
from posekit.engine.trainer import train
from posekit.families import get_task_class, list_tasks
from posekit.results import Results

FAMILIES = [n for n in list_tasks() if get_task_class(n).__module__.startswith("posekit.families.")]


def test_every_family_declares_a_synthetic_recipe():
    assert {"dogs", "hourglass", "gmh_mdn"} <= set(FAMILIES)
    for name in FAMILIES:
        assert get_task_class(name).synthetic_recipe, f"{name} has no synthetic recipe"


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


@pytest.mark.parametrize("family", FAMILIES)
def test_family_contract(family, tmp_path):
    cls = get_task_class(family)
    cfg = load_config(cls.synthetic_recipe, [*cls.smoke_overrides, f"out_dir={tmp_path}", f"name={family}",
                                             "train.max_steps=2", "train.val_every=2", "train.batch_size=2",
                                             "train.progress=false", "train.tensorboard=false", "train.warmup_steps=0",
                                             "eval.max_samples=4", "eval.batch_size=2"])
    # train: a checkpoint and a validation row with the primary metric
    run_dir = train(cfg)
    assert (run_dir / "last.pt").is_file() and (run_dir / "best.pt").is_file()
    with (run_dir / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get(f"val/{cls.primary_metric}")]
    logged = float(rows[-1][f"val/{cls.primary_metric}"])
    assert np.isfinite(logged)

    # checkpoint round trip: a fresh process-like load scores exactly what the trainer logged
    reloaded = _scalars(evaluate_checkpoint(cfg, run_dir / "last.pt"))
    assert reloaded[cls.primary_metric] == pytest.approx(logged, rel=1e-5, abs=1e-6)

    task, model, _ = load_for_inference(run_dir / "last.pt")
    assert task.name == family
    datasets = task.build_datasets()

    # the oracle: the codec's ceiling, finite and at least as good as the untrained-ish model
    oracle = _scalars(evaluate(task, None, datasets, oracle=True, max_samples=4))
    assert np.isfinite(oracle[cls.primary_metric])
    better = (lambda a, b: a >= b) if cls.higher_is_better else (lambda a, b: a <= b)
    assert better(oracle[cls.primary_metric], reloaded[cls.primary_metric])

    # predict on inputs like a user's, through the Predictor and the engine function alike
    inputs = task.sample_inputs(datasets, 2)
    results = predict(task, model, inputs)
    assert len(results) == 2 and all(isinstance(r, Results) for r in results)
    for r in results:
        assert r.skeleton.name == task.skeleton.name and np.isfinite(r.keypoints).all()
    again = Predictor(run_dir / "last.pt")(inputs)
    for a, b in zip(results, again):
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-5)

    # export: parity, and the ONNX outputs go through the same postprocess to the same Results
    report = export_task(task, model, tmp_path / f"{family}.onnx")
    assert report["max_abs_diff"] < 1e-2
    import onnxruntime as ort
    spec = task.export_spec()
    batch = task.prepare_inputs(inputs)
    x = task.model_inputs(to_device(batch, torch.device("cpu")))
    session = ort.InferenceSession(report["path"], providers=["CPUExecutionProvider"])
    outs = session.run(None, {spec.input_names[0]: x.numpy()})
    decoded = {name: torch.from_numpy(o) for name, o in zip(spec.output_names, outs)}
    for a, b in zip(results, task.postprocess(decoded, batch)):
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-2)
