import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)
sys.path.insert(0, str(Path(__file__).parent))  # test helpers (tiny_task)


@pytest.fixture(scope="session", autouse=True)
def _private_user_cache(tmp_path_factory):
    """Every test (and the CLI subprocesses it starts) caches under a temp folder, never ~/.cache."""
    import os
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("user_cache"))


@pytest.fixture(scope="session")
def realdata():
    """The shared real samples, or a clean skip when they are absent."""
    from posekit.data.io import realdata_root
    root = realdata_root()
    if not root.is_dir():
        pytest.skip(f"real sample data not found at {root} (set POSEKIT_REALDATA)")
    return root


@pytest.fixture(scope="module")
def private_tempdir(tmp_path_factory):
    """The module's own temp folder (`tempfile`) and cache folder (XDG_CACHE_HOME): the export
    cache of backend="onnxruntime" lives in the user's cache, so each test module keeps its own
    and no test writes into the real ~/.cache."""
    import os
    import tempfile
    saved, saved_cache = tempfile.tempdir, os.environ.get("XDG_CACHE_HOME")
    tempfile.tempdir = str(tmp_path_factory.mktemp("tmp"))
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    tempfile.tempdir = saved
    if saved_cache is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = saved_cache


def smoke_checkpoint(family: str, out_dir, *extra: str, steps: int = 1) -> Path:
    """`last.pt` of a family's synthetic recipe shrunk by its smoke overrides, trained `steps`
    steps into `out_dir` (tests that need a real checkpoint of any family)."""
    from posekit.engine.recipes import load_config
    from posekit.engine.trainer import train
    from posekit.families import get_task_class
    cls = get_task_class(family)
    cfg = load_config(cls.synthetic_recipe, [
        *cls.smoke_overrides, f"out_dir={out_dir}", f"name={family}", f"train.max_steps={steps}",
        f"train.val_every={steps}", "train.batch_size=2", "train.progress=false", "train.tensorboard=false",
        "train.warmup_steps=0", "eval.max_samples=2", "eval.batch_size=2", *extra])
    return train(cfg) / "last.pt"


def smoke_checkpoints(tmp_path_factory, extra: dict | None = None):
    """`get(family)` -> a one-step `smoke_checkpoint` of that family, trained once and cached;
    `extra` adds per-family overrides (smaller inputs where speed matters)."""
    cache: dict = {}

    def get(family: str) -> Path:
        if family not in cache:
            cache[family] = smoke_checkpoint(family, tmp_path_factory.mktemp(f"ckpt_{family}"),
                                             *(extra or {}).get(family, ()))
        return cache[family]
    return get
