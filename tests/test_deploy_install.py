"""`pip install 'posekit[runtime]'` is a complete deploy install: the core dependencies plus
onnxruntime predict an exported .onnx file, and whatever needs PyTorch says in one line which
extra to install instead of a traceback."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from test_onnx_runtime_path import FORBID

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    import re
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_core_and_runtime_dependencies_hold_no_torch_and_the_extras_cover_the_rest():
    from posekit.config import EXTRA_OF_MODULE
    project = _pyproject()
    core, extras = _names(project["dependencies"]), project["optional-dependencies"]
    assert core == {"numpy", "opencv-python-headless", "pyyaml", "tqdm"}
    assert _names(extras["runtime"]) == {"onnxruntime"}
    distribution = {"torch": "torch", "torchvision": "torchvision", "pycocotools": "pycocotools", "scipy": "scipy",
                    "h5py": "h5py", "matplotlib": "matplotlib", "onnxruntime": "onnxruntime", "onnx": "onnx",
                    "onnxscript": "onnxscript"}
    for module, extra in EXTRA_OF_MODULE.items():  # the install line each error prints is the right one
        assert distribution[module] in _names(extras[extra]), (module, extra)
    assert "posekit[train,onnx]" in extras["all"]
    makefile = (ROOT / "Makefile").read_text()
    assert ".[train,onnx,dev]" in makefile  # `make test` / `make demo` install everything


def _run_without_extras(code: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter where torch, scipy, matplotlib, ... are not installed."""
    return subprocess.run([sys.executable, "-c", FORBID + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**os.environ, "POSEKIT_DEBUG": ""})


@pytest.mark.parametrize("argv", [["train", "keypoints_synthetic"], ["eval", "runs/x/best.pt"], ["models"],
                                  ["predict", "x.pt", "a.jpg", "--out", "o"], ["export", "x.pt", "--out", "x.onnx"]])
def test_a_verb_that_needs_torch_is_one_line_naming_the_extra(argv):
    run = _run_without_extras(f"""
        from posekit.cli import main
        sys.exit(main({argv!r}))
    """)
    assert run.returncode == 2, run.stderr[-2000:]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert lines[0].startswith(f"posekit {argv[0]}: error: posekit {argv[0]} needs ")
    assert "pip install 'posekit[train]'" in lines[0]


def test_predict_onnx_with_a_task_path_option_names_the_option_and_the_extra(tmp_path):
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"not read before the option is seen")
    import cv2
    import numpy as np
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((20, 30, 3), np.uint8))
    run = _run_without_extras(f"""
        from posekit.cli import main
        sys.exit(main(["predict", {str(onnx_file)!r}, {str(tmp_path / "a.png")!r}, "--out", {str(tmp_path / "o")!r},
                       "--detector", "fasterrcnn"]))
    """)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr[-2000:]
    assert "pip install 'posekit[train]'" in run.stderr and "--detector" in run.stderr


def test_the_python_api_without_torch_raises_the_install_line():
    run = _run_without_extras("""
        import posekit
        from posekit.config import MissingExtraError
        for call in (lambda: posekit.Predictor("x.pt"), lambda: posekit.load_config("keypoints_synthetic")):
            try:
                call()
            except MissingExtraError as e:
                assert "pip install 'posekit[train]'" in str(e), e
            else:
                raise AssertionError("no MissingExtraError")
        from posekit.runtime.predict import RuntimeModel  # the torch-free API imports
    """)
    assert run.returncode == 0, run.stderr[-2000:]


@pytest.mark.slow
def test_a_fresh_runtime_install_predicts_an_exported_file(tmp_path):
    """A real venv with `pip install '.[runtime]'` (from the package index or pip's cache): no torch
    installed, and `posekit predict model.onnx` writes the same JSON as the full install."""
    pytest.importorskip("onnx")
    import json

    import cv2
    import numpy as np
    from conftest import smoke_checkpoint

    from posekit.cli import main
    model = tmp_path / "keypoints.onnx"
    assert main(["export", str(smoke_checkpoint("keypoints", tmp_path / "run")), "--out", str(model)]) == 0
    image = tmp_path / "one.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    install = subprocess.run(pip + ["-c", str(ROOT / "constraints.txt"), f"{ROOT}[runtime]"], capture_output=True,
                             text=True, timeout=1200)
    if install.returncode != 0:
        pytest.skip(f"cannot install the runtime dependencies here: {install.stderr.strip()[-300:]}")
    show = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "show", "torch"], capture_output=True, text=True)
    assert show.returncode != 0, "the runtime install pulled torch in"
    args = [str(model), str(image), "--box", "5,5,40,60", "--box", "30,20,50,80", "--threads", "1"]
    run = subprocess.run([str(venv / "bin" / "posekit"), "predict", *args, "--out", str(tmp_path / "deploy")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert main(["predict", *args, "--out", str(tmp_path / "full")]) == 0
    got = json.loads((tmp_path / "deploy" / "one.json").read_text())
    want = json.loads((tmp_path / "full" / "one.json").read_text())
    np.testing.assert_allclose(got["keypoints"], want["keypoints"], atol=1e-4)
    assert len(got["keypoints"]) == 2
