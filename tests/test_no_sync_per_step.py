"""A training step reads nothing back from the device (issue 25): every family's `training_step`
(forward, loss, the values it logs) and the backward pass run with the model and batch on
PyTorch's "meta" device, from which no number can be read (`float()`, `.item()`, `bool()` and
`.tolist()` raise there). So on a GPU no step waits for the queue to drain; the trainer turns the
logged tensors into numbers only at log steps (`engine.trainer.log_row`). Work a family does on
the host on purpose (FSE samples its warps and inverts them on the CPU) stays allowed."""
from __future__ import annotations

import pytest
import torch

from posekit.engine.evaluation import to_device
from posekit.engine.recipes import load_config
from posekit.families import build_task, get_task_class

FAMILIES = ["dogs", "fse", "gmh_mdn", "hourglass", "keypoints", "openpose"]
META = torch.device("meta")


def _step_on_meta(family: str, step=None):
    """(loss, logs) of one training step of the family's smoke recipe on the meta device."""
    cls = get_task_class(family)
    task = build_task(load_config(cls.synthetic_recipe, [*cls.smoke_overrides, "train.batch_size=2"]))
    dataset = task.build_datasets(["train"])["train"]
    model = task.build_model()
    batch = to_device(task.collate([dataset[0], dataset[1]]), META)
    model = model.to(META).train()
    loss, logs = (step or type(task).training_step)(task, model, batch)
    loss.backward()
    return loss, logs


@pytest.mark.parametrize("family", FAMILIES)
def test_a_training_step_and_its_logs_never_read_the_device(family):
    loss, logs = _step_on_meta(family)
    assert loss.device == META and loss.ndim == 0
    assert logs, "nothing logged besides the loss"
    for key, value in logs.items():  # tensors the trainer reads at log steps only, with no graph
        assert torch.is_tensor(value) and value.device == META and not value.requires_grad, (family, key)


def test_a_step_that_reads_a_number_back_fails_on_the_meta_device():
    """The test above can fail: a step that logs float(loss), as the families did, raises."""
    real = get_task_class("gmh_mdn").training_step

    def reads_back(task, model, batch):
        loss, logs = real(task, model, batch)
        return loss, {**logs, "loss_again": float(loss)}

    with pytest.raises((RuntimeError, NotImplementedError)):
        _step_on_meta("gmh_mdn", reads_back)
