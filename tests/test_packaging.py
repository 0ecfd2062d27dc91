"""A wheel, not a checkout: the recipes, the demo and the benchmark list ship with the package.

The wheel is built from a copy of the sources (so a stale build/ folder of the checkout cannot
hide a missing file), then installed with `pip install --target` (no dependencies: torch and
friends come from this environment) and run from a folder that is not the checkout.
"""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("posekit", "benchmarks", "pyproject.toml", "README.md")


def _pip(*args, cwd):
    proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"pip {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=False,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "results"))
        else:
            shutil.copy2(path, src / name)
    dist = tmp_path_factory.mktemp("dist")
    _pip("wheel", "--no-deps", "--no-build-isolation", "--quiet", str(src), "-w", str(dist), cwd=src)
    (found,) = dist.glob("posekit-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    _pip("install", "--no-deps", "--no-index", "--quiet", "--target", str(target), str(wheel), cwd=target)
    return target


def test_the_wheel_holds_every_recipe_and_benchmark(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    folder = ROOT / "posekit" / "configs"
    recipes = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.yaml"))
    assert recipes and "mpii_synthetic.yaml" in recipes
    missing = [r for r in recipes if f"posekit/configs/{r}" not in names]
    assert not missing, f"recipes not in the wheel: {missing}"
    data = {n.split("/data/", 1)[1] for n in names if ".data/data/" in n}
    benches = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py"))
    assert "bench_trainer_overhead.py" in benches
    assert {f"share/posekit/benchmarks/{b}" for b in benches} <= data
    assert not any(n.startswith(("tests/", "configs/", "benchmarks/")) for n in names)  # only inside the package
    # every shipped synthetic recipe of a family is in the wheel: the demo needs them
    from posekit.families import get_task_class, list_tasks
    for family in list_tasks():
        recipe = get_task_class(family).synthetic_recipe
        if recipe and family != "tiny":
            assert f"posekit/configs/{recipe}.yaml" in names, family


def test_the_package_version_is_stated_once():
    """pyproject.toml's version is what `posekit --version` prints (posekit.__version__ is the
    fallback when no distribution metadata is found)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    import posekit
    from posekit.cli import package_version
    stated = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert posekit.__version__ == stated == package_version()


def _run(installed: Path, cwd: Path, *args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(installed), "OMP_NUM_THREADS": "1", "POSEKIT_DEBUG": ""}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_an_installed_wheel_finds_its_recipes_demo_and_benchmarks(installed, tmp_path):
    """From outside the checkout, one process: the recipes by name, the demo's recipes, the bench
    list and --version, all from the installed copy."""
    probe = ("import sys, posekit; from posekit.engine.recipes import list_recipes, resolve_config_path; "
             "from posekit.engine.demo import available_families; from posekit.cli import main; "
             "print(posekit.__file__); print(resolve_config_path('mpii_synthetic')); print(sorted(list_recipes())); "
             "print(sorted(available_families())); sys.stdout.flush(); "
             "assert main(['bench']) == 0; sys.stdout.flush(); main(['--version'])")
    proc = _run(installed, tmp_path, "-c", probe)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stderr
    assert lines[0].startswith(str(installed)), "posekit was not imported from the installed wheel"
    assert lines[1].startswith(str(installed)) and lines[1].endswith("mpii_synthetic.yaml")
    assert "'h36m_synthetic'" in lines[2] and "'coco_synthetic'" in lines[2]
    assert {"dogs", "fse", "gmh_mdn", "hourglass", "openpose"} <= set(eval_list(lines[3]))
    assert lines[4].startswith("benchmarks in ") and str(installed) in lines[4]
    assert "  trainer_overhead" in lines
    assert lines[-1].startswith("posekit 0.")


@pytest.mark.slow
def test_an_installed_wheel_trains_a_recipe_by_name(installed, tmp_path):
    """`posekit train NAME` from a wheel, outside the checkout: two steps of a small GMH-MDN."""
    proc = _run(installed, tmp_path, "-m", "posekit", "train", "h36m_synthetic", "train.max_steps=2",
                "train.progress=false", "train.tensorboard=false", "data.synthetic_train=64",
                "data.synthetic_val=16", "model.args.width=32", "out_dir=runs", "name=smoke")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "runs" / "smoke" / "last.pt").is_file()


def eval_list(text: str) -> list[str]:
    """`print(sorted(...))` of names back into a list (no eval)."""
    return [t.strip(" '\"") for t in text.strip("[]").split(",") if t.strip()]
