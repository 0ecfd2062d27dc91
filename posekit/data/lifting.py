"""The lifting pipeline: root-relative (2-D input, 3-D target) pairs for 2-D -> 3-D lifters.

Arrays in memory (Human3.6M is ~1.5 M frames of 16 joints): a sample is a row of each array.
RNG: one torch-drawn seed per item, as `item_rng()` draws it; the item's draws are a pure
function of that seed (`seeded_uniform`), so a batch sliced at once gets exactly the draws its
items get one by one.
"""
from __future__ import annotations

import collections.abc

import numpy as np
import torch

from posekit.data.formats.h36m import ACTIONS, LIMB_INPUT_JOINTS, H36MFormatError, Sequence
from posekit.data.transforms import item_seeds, seeded_uniform
from posekit.runtime.lift import as_h36m17, rescale_to_reference  # noqa: F401  (one implementation, numpy)
from posekit.skeletons.builtin import H36M17_LIFT_INPUTS as INPUT_JOINTS
from posekit.skeletons.builtin import H36M17_LIFT_OUTPUTS as OUTPUT_JOINTS


class LiftingDataset(torch.utils.data.Dataset):
    """Root-relative (2-D input, 3-D target) pairs.

    Items: {"input_2d": (16, 2) float32 px, "target_3d": (16, 3) float32 mm, "mask": (16,) bool
    (True = joint missing), "action": int64}. `miss_num` > 0 enables the missing-joint augmentation
    (off by default, as in the paper): with probability `miss_prob` a sample loses exactly
    `miss_num` of its limb joints (knees, feet, elbows, wrists), drawn without replacement as the
    reference does, which the model sees as a zero normalised coordinate.

    Batches: `__getitems__` (which the DataLoader calls with a whole batch of indices) slices the
    arrays once and returns a `SlicedItems`, which the lifting Task's collate passes through as
    the batch and any other collate reads as a list of items; either way the batch equals the
    item-by-item one (the same per-item seeds, in index order).
    """

    def __init__(self, inputs_2d: np.ndarray, targets_3d: np.ndarray, action_index: np.ndarray,
                 action_names: list[str], *, meta: dict | None = None, miss_num: int = 0, miss_prob: float = 1.0,
                 name: str = "h36m"):
        self.inputs = np.ascontiguousarray(inputs_2d, dtype=np.float32)
        self.targets = np.ascontiguousarray(targets_3d, dtype=np.float32)
        self.action_index = np.asarray(action_index, dtype=np.int64)
        self.action_names = list(action_names)
        self.meta = meta or {}
        if self.inputs.shape[1:] != (len(INPUT_JOINTS), 2) or self.targets.shape[1:] != (len(OUTPUT_JOINTS), 3):
            raise ValueError(f"LiftingDataset: inputs {self.inputs.shape} / targets {self.targets.shape} must be "
                             f"(N, {len(INPUT_JOINTS)}, 2) / (N, {len(OUTPUT_JOINTS)}, 3)")
        if not (len(self.inputs) == len(self.targets) == len(self.action_index)):
            raise ValueError("LiftingDataset: inputs, targets and action_index differ in length")
        if miss_num < 0 or miss_num > len(LIMB_INPUT_JOINTS):
            raise ValueError(f"miss_num must be in [0, {len(LIMB_INPUT_JOINTS)}], got {miss_num}")
        self.miss_num = int(miss_num)
        self.miss_prob = float(miss_prob)
        self.name = name

    @classmethod
    def from_sequences(cls, sequences: list[Sequence], *, action_names: list[str] | None = None, **kw) -> "LiftingDataset":
        if not sequences:
            raise ValueError("LiftingDataset.from_sequences: no sequences")
        names = list(action_names) if action_names else sorted({s.action for s in sequences},
                                                                key=lambda a: (a not in ACTIONS, ACTIONS.index(a) if a in ACTIONS else 0, a))
        p2d = np.concatenate([s.poses_2d for s in sequences])
        p3d = np.concatenate([s.poses_3d for s in sequences])
        targets = (p3d - p3d[:, :1])[:, list(OUTPUT_JOINTS)]
        inputs = p2d[:, list(INPUT_JOINTS)]
        if not np.all(np.isfinite(inputs)):
            bad = next(s for s in sequences if not np.all(np.isfinite(s.poses_2d[:, list(INPUT_JOINTS)])))
            raise H36MFormatError(f"{bad.subject} '{bad.name}' camera {bad.camera}: non-finite 2-D input values")
        action_index = np.concatenate([np.full(len(s), names.index(s.action) if s.action in names else -1)
                                       for s in sequences])
        meta = {"subject": np.concatenate([[s.subject] * len(s) for s in sequences]),
                "sequence": np.concatenate([[s.name] * len(s) for s in sequences]),
                "camera": np.concatenate([[s.camera] * len(s) for s in sequences]),
                "frame": np.concatenate([s.frames for s in sequences]),
                "poses_2d_17": p2d.astype(np.float32)}
        return cls(inputs, targets, action_index, names, meta=meta, **kw)

    def __len__(self) -> int:
        return len(self.inputs)

    def _masks(self, n: int) -> np.ndarray:
        """(n, 16) missing-joint masks for n items (in order), from one torch-drawn seed each: with
        probability miss_prob exactly miss_num limb joints, the ones with the smallest keys."""
        mask = np.zeros((n, len(INPUT_JOINTS)), dtype=bool)
        if self.miss_num <= 0 or n == 0:
            return mask
        u = seeded_uniform(item_seeds(n), 1 + len(LIMB_INPUT_JOINTS))
        chosen = np.argsort(u[:, 1:], axis=1, kind="stable")[:, :self.miss_num]  # a uniform k-subset
        rows = np.flatnonzero(u[:, 0] < self.miss_prob)
        mask[rows[:, None], np.asarray(LIMB_INPUT_JOINTS)[chosen[rows]]] = True
        return mask

    def __getitem__(self, i: int) -> dict:
        mask = self._masks(1)[0]
        return {"input_2d": torch.from_numpy(self.inputs[i]), "target_3d": torch.from_numpy(self.targets[i]),
                "mask": torch.from_numpy(mask), "action": torch.tensor(self.action_index[i])}

    def __getitems__(self, indices) -> "SlicedItems":
        """A whole batch by slicing the arrays (the DataLoader's batched fetch)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return SlicedItems({"input_2d": torch.from_numpy(self.inputs[idx]),
                            "target_3d": torch.from_numpy(self.targets[idx]),
                            "mask": torch.from_numpy(self._masks(len(idx))),
                            "action": torch.from_numpy(self.action_index[idx])})

    def subset(self, indices: np.ndarray) -> "LiftingDataset":
        indices = np.asarray(indices)
        meta = {k: np.asarray(v)[indices] for k, v in self.meta.items()}
        return LiftingDataset(self.inputs[indices], self.targets[indices], self.action_index[indices], self.action_names,
                              meta=meta, miss_num=self.miss_num, miss_prob=self.miss_prob, name=self.name)


class SlicedItems(collections.abc.Sequence):
    """A batch already stacked (`batch`: name -> (B, ...) tensor) that still reads as a list of
    per-item dicts, so a plain `default_collate` restacks it correctly; a collate that knows it
    (`collate_items`) returns `batch` as is."""

    def __init__(self, batch: dict):
        self.batch = batch

    def __len__(self) -> int:
        return len(next(iter(self.batch.values())))

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return {k: v[i] for k, v in self.batch.items()}


def collate_items(items) -> dict:
    """Collate for lifting datasets: a `SlicedItems` batch as is, a list of items stacked."""
    if isinstance(items, SlicedItems):
        return items.batch
    return torch.utils.data.default_collate(items)


# ------------------------------------------------------------------------------------------------
# user inputs: any 2-D pose layout -> the lifter's h36m17 order
def lift_layouts() -> list[str]:
    """2-D layouts `as_h36m17` reads: h36m17, h36m16 (the 16 lifter inputs) and every skeleton
    with a declared mapping to h36m17 (posekit/skeletons/mappings.py, where it lives)."""
    from posekit.skeletons.mappings import lift_layouts as layouts
    return layouts()


