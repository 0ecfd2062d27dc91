"""The training split as the trainer's DataLoader sees it: one seed per item, bad records skipped.

Why a wrapper: a week-long run must not die on one zero-byte image, and its results must not
depend on how the items were fetched. So every item is fetched under its own seed, a function
of (train.seed, epoch, index) only: the same augmentation with 0 or N DataLoader workers, with
workers kept alive across epochs, in one process or under DDP, and after a mid-epoch resume;
a different one each epoch. An item that raises a bad-record error (`BadRecordError`, or the
OSError/ValueError of a file that cannot be decoded) is replaced by another index chosen from
that same seed, so the batch keeps its shape and a resumed run replaces it the same way.

The sampler yields `(epoch, index)` keys (`EpochOrder`), the dataset (`TrainingItems`) returns
an `Item` that carries what went wrong, and `Collate` strips that off before the task's own
collate runs, handing the trainer a `Batch(batch, indices, bad, fatal)`; this works the same
in worker processes. Evaluation does not use this: a bad record there is an error.
"""
from __future__ import annotations

import contextlib
import errno
import random
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from posekit.data.sample import BadRecordError

# what a record that cannot be used raises: the readers' BadRecordError, a missing file
# (OSError) or a decoder's complaint (ValueError)
BAD_RECORD_ERRORS = (BadRecordError, OSError, ValueError)
ON_BAD_RECORD = (None, "skip", "error")


def item_seed(seed: int, epoch: int, index: int, attempt: int = 0) -> int:
    """A 63-bit seed from (seed, epoch, index, attempt) alone: never from an RNG's position."""
    h = 0x9E3779B97F4A7C15
    for word in (seed, epoch, index, attempt):  # splitmix64 over the words: cheap and well mixed
        h = (h ^ (int(word) % 2**64)) * 0xBF58476D1CE4E5B9 % 2**64
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB % 2**64
        h ^= h >> 31
    return h >> 1


@contextlib.contextmanager
def seeded(seed: int):
    """torch's CPU generator (which `item_rng` draws from), numpy's and Python's global RNGs
    seeded for one item, then put back: the caller's streams (dropout, ...) never move."""
    gen = torch.default_generator
    saved = gen.get_state(), np.random.get_state(), random.getstate()
    gen.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        gen.set_state(saved[0])
        np.random.set_state(saved[1])
        random.setstate(saved[2])


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, BadRecordError) else f"{type(error).__name__}: {text}"


class Item(NamedTuple):
    """One fetched item: `value` is None when `fatal` says why training must stop."""
    index: int
    value: Any
    bad: tuple  # ((dataset index, message), ...) of the records replaced on the way
    fatal: str | None


class Batch(NamedTuple):
    batch: Any
    indices: list  # the dataset indices asked for (before replacement)
    bad: list
    fatal: str | None


class TrainingItems(torch.utils.data.Dataset):
    """`dataset` indexed by `(epoch, index)` keys; see the module docstring."""

    def __init__(self, dataset, *, seed: int, on_bad_record: str | None = None, max_attempts: int = 16):
        if on_bad_record not in ON_BAD_RECORD:
            raise ValueError(f"data.on_bad_record={on_bad_record!r}; valid: skip, error (or unset: skip in training)")
        self.dataset, self.seed, self.max_attempts = dataset, int(seed), max_attempts
        self.on_bad_record = on_bad_record or "skip"

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key) -> Item:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        n, bad, j = len(self.dataset), [], index
        for attempt in range(self.max_attempts):
            s = item_seed(self.seed, epoch, index, attempt)
            try:
                with seeded(s):
                    return Item(index, self.dataset[j], tuple(bad), None)
            except BAD_RECORD_ERRORS as e:
                bad.append((int(j), one_line(e)))
                if self.on_bad_record == "error":
                    return Item(index, None, tuple(bad), f"bad record at index {j}: {bad[-1][1]} "
                                "(data.on_bad_record=error; unset it to skip such records)")
                j = int(np.random.default_rng(s).integers(n))  # the replacement: from the seed, not the worker
        first = bad[0]
        return Item(index, None, tuple(bad), f"{len(bad)} records in a row could not be read (the first: index "
                    f"{first[0]}: {first[1]}); is every record of the training set bad?")


class Collate:
    """Strips the bad-record bookkeeping off the items, then calls the task's collate."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, items: list[Item]) -> Batch:
        bad = [b for it in items for b in it.bad]
        indices = [it.index for it in items]
        fatal = next((it.fatal for it in items if it.fatal), None)
        if fatal:
            return Batch(None, indices, bad, fatal)
        return Batch(self.collate([it.value for it in items]), indices, bad, None)


class EpochOrder(torch.utils.data.Sampler):
    """`(epoch, index)` keys in `sampler`'s order for the epoch, starting `skip` indices in
    (mid-epoch resume). Lives in the main process, so a loader with persistent workers sees
    `set_epoch` each time a new epoch's iterator is made."""

    def __init__(self, sampler):
        self.sampler, self.epoch, self.skip = sampler, 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        return iter([(self.epoch, int(i)) for i in list(self.sampler)[self.skip:]])

    def __len__(self) -> int:
        return len(self.sampler) - self.skip


class BadRecordLog:
    """The run folder's bad_records.txt: one line per record ("index<TAB>message"), appended,
    each record once however often it comes up."""

    def __init__(self, path: Path | None):
        self.path = path
        self.known: set[str] = set()
        if path is not None and path.is_file():
            self.known = set(path.read_text().splitlines())

    def add(self, records) -> None:
        lines = [f"{i}\t{m}" for i, m in records if f"{i}\t{m}" not in self.known]
        lines = list(dict.fromkeys(lines))
        if not lines or self.path is None:
            return
        try:
            with self.path.open("a") as f:
                f.write("".join(line + "\n" for line in lines))
        except OSError as e:  # one line, as for the checkpoints (data must not import the engine)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise BadRecordLogFull(f"no space left on device while writing {self.path}; the previous "
                                       f"checkpoint is intact") from None
            raise
        self.known.update(lines)


class BadRecordLogFull(OSError, ValueError):
    """bad_records.txt could not be written: the disk is full (a ValueError: one line on the CLI)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.ENOSPC


def summary(epoch: int, records: list, where: Path | None, shown: int = 10) -> str:
    """The end-of-epoch line: how many records were replaced and which."""
    unique = list(dict.fromkeys((int(i), m) for i, m in records))
    listed = "; ".join(f"index {i}: {m}" for i, m in unique[:shown])
    more = f"; ... and {len(unique) - shown} more" if len(unique) > shown else ""
    tail = f" (all listed in {where})" if where is not None else ""
    return (f"epoch {epoch}: {len(records)} bad record(s) skipped and replaced by other samples, "
            f"{len(unique)} distinct: {listed}{more}{tail}")


def reader_skipped(dataset, depth: int = 6) -> list[str]:
    """The messages of the records a reader dropped while loading (`skipped`, e.g. COCO's
    `on_bad_record="skip"`), found on `dataset` or on what it wraps (`.source`, `.dataset`,
    `.samples`, ...): the readers stay unaware of the trainer, and each wrapper need not
    forward them. Each list is reported once, however many wrappers share it."""
    found, seen, frontier = [], set(), [dataset]
    for _ in range(depth):
        nxt = []
        for obj in frontier:
            if obj is None or id(obj) in seen or isinstance(obj, (str, bytes, int, float, np.ndarray, torch.Tensor)):
                continue
            seen.add(id(obj))
            skipped = getattr(obj, "skipped", None)
            if isinstance(skipped, (list, tuple)) and id(skipped) not in seen:
                seen.add(id(skipped))
                found += [str(m) for m in skipped]
            if isinstance(obj, (list, tuple)):
                nxt += list(obj) if len(obj) <= 8 else []  # ConcatDataset's parts, never a list of samples
            elif isinstance(obj, dict):
                nxt += list(obj.values()) if len(obj) <= 8 else []
            elif hasattr(obj, "__dict__"):
                nxt += list(vars(obj).values())
        frontier = nxt
    return found
