import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)
sys.path.insert(0, str(Path(__file__).parent))  # test helpers (tiny_task)


@pytest.fixture(scope="session")
def realdata():
    """The shared real samples, or a clean skip when they are absent."""
    from posekit.data.io import realdata_root
    root = realdata_root()
    if not root.is_dir():
        pytest.skip(f"real sample data not found at {root} (set POSEKIT_REALDATA)")
    return root
