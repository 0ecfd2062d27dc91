"""What the command line says when something is missing or wrong: one line, the verb named
once, what to do; and eval reads only the splits it scores."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import smoke_checkpoint
from posekit.cli import _benchmark_folders, main
from posekit.config import ConfigError


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_export_without_onnx_says_pip_install_the_extra(tmp_path, monkeypatch, capsys):
    ckpt = smoke_checkpoint("gmh_mdn", tmp_path / "run")
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    assert main(["export", str(ckpt), "--out", str(tmp_path / "m.onnx")]) == 2
    line = _error_line(capsys)
    assert "pip install 'posekit[onnx]'" in line and "internal error" not in line
    assert not (tmp_path / "m.onnx").exists()


def test_readme_install_line_names_the_onnx_extra():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "pip install 'posekit[onnx]'" in readme


def test_eval_error_names_the_verb_once(capsys):
    assert main(["eval", "mpii_synthetic"]) == 2  # a recipe without weights
    line = _error_line(capsys)
    assert line.startswith("posekit eval: error: ") and "error: posekit eval:" not in line, line
    assert "checkpoint=PATH" in line


def test_an_api_message_naming_the_verb_is_not_prefixed_twice(tmp_path, capsys):
    assert main(["lift", str(tmp_path / "none.pt"), "--out", str(tmp_path / "out")]) == 2  # lift's own "posekit lift: give --json ..."
    line = _error_line(capsys)
    assert line.startswith("posekit lift: error: give --json") and line.count("posekit lift") == 1, line


def test_eval_without_arguments_asks_for_a_checkpoint_or_recipe(capsys):
    assert main(["eval"]) == 2
    line = _error_line(capsys)
    assert "checkpoint" in line and "recipe" in line and "overrides" not in line, line


def test_output_into_a_closed_pipe_exits_quietly():
    """`posekit models | head`: the reader is gone, so stop without a traceback or `[Errno 32]`."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe now fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "posekit", "models"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert proc.stderr == "" and proc.returncode == 1


def test_bench_shows_absolute_normalised_folders(capsys):
    for folder in _benchmark_folders():
        assert folder.is_absolute() and ".." not in folder.parts and folder == folder.resolve(), folder
    assert main(["bench"]) == 0
    shown = Path(capsys.readouterr().out.splitlines()[0].split(" in ", 1)[1].split(" (run", 1)[0])
    assert shown.is_absolute() and shown == shown.resolve()


def test_oracle_eval_never_builds_the_training_split(monkeypatch):
    from posekit.engine.evaluation import evaluate_checkpoint
    from posekit.engine.recipes import load_config
    from posekit.families import get_task_class
    cls = get_task_class("gmh_mdn")
    asked = []
    original = cls.build_datasets

    def recording(self, splits=None):
        asked.append(tuple(splits or ()))
        return original(self, splits)

    monkeypatch.setattr(cls, "build_datasets", recording)
    cfg = load_config(cls.synthetic_recipe, [*cls.smoke_overrides, "eval.max_samples=16"])
    metrics = evaluate_checkpoint(cfg, oracle=True)  # the codec fits its statistics on the scored split
    assert asked and all("train" not in s for s in asked), asked
    assert metrics["p1_best"] < 1.0  # mm: the round trip is exact


def test_oracle_eval_of_real_coco_needs_no_training_annotations(realdata, capsys):
    """`eval ... --oracle data.root=...` with no training file present: only the val split is read."""
    rc = main(["eval", "coco_keypoints", "--oracle", f"data.root={realdata / 'coco'}", "data.val_ann=test_coco.json",
               "data.val_images=images", "data.train_ann=no_such_train.json", "data.train_images=no_such_dir"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "train" not in out.err


def test_missing_data_root_is_reported_not_the_skeleton_file(tmp_path, monkeypatch, capsys):
    from posekit.engine.recipes import load_config
    monkeypatch.chdir(tmp_path)  # skeleton.yaml is in neither the working directory nor the (absent) root
    with pytest.raises(ConfigError, match="data root does not exist: /nonexistent"):
        load_config("coco_keypoints", ["data.root=/nonexistent", "data.skeleton=skeleton.yaml"])
    assert main(["eval", "coco_keypoints", "--oracle", "data.root=/nonexistent", "data.skeleton=skeleton.yaml"]) == 2
    line = _error_line(capsys)
    assert "data root does not exist: /nonexistent" in line and "skeleton file not found" not in line, line


def test_fse_missing_data_root_is_named_not_replaced_by_other_data(capsys):
    """`eval celeba_fse --oracle data.root=/nonexistent` used to score the shared samples instead."""
    assert main(["eval", "celeba_fse", "--oracle", "data.root=/nonexistent/faces"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.root does not exist: /nonexistent/faces" in err[0]
