"""The command line as a user runs it: help, models, train/eval/resume, errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).parent
ENV = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "2"}


def posekit(*args, cwd=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "posekit", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"posekit {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.mark.parametrize("verb", ["train", "eval", "predict", "export", "models", "demo", "bench"])
def test_every_verb_has_help_with_examples(verb, capsys):
    from posekit.cli import main
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: posekit " + verb in out and "examples:" in out


def test_models_json():
    rows = json.loads(posekit("models", "--json").stdout)
    assert rows, "no models registered"
    for row in rows:
        assert {"name", "family", "params", "trainable_params", "skeleton", "input_size", "args"} <= set(row)
        assert row["params"] >= row["trainable_params"] > 0
    by_name = {r["name"]: r for r in rows}
    assert by_name["hourglass4"]["params"] == 12_858_304  # exact, though counted on the meta device
    table = posekit("models").stdout
    assert all(r["name"] in table for r in rows)
    assert "3x256x256" in table and "mpii16" in table and "stanford_extra24" in table  # what each model needs


def test_models_lists_without_building_any_model(monkeypatch, capsys):
    """The plain listing reads the registry's metadata only; counting parameters is --params."""
    import torch.nn as nn

    from posekit.cli import main
    from posekit.models import list_models

    list_models()  # registered before Module construction is forbidden below

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built")
    monkeypatch.setattr(nn.Module, "__init__", refuse)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "hourglass2_small" in out and "3x128x128" in out and "openpose18" in out and "--params" in out
    assert main(["models", "--family", "fse"]) == 0
    out = capsys.readouterr().out
    assert "fse_small" in out and "hourglass" not in out


def test_models_params_and_an_unknown_family(capsys):
    from posekit.cli import main
    assert main(["models", "--params", "--family", "hourglass"]) == 0
    assert "12,858,304" in capsys.readouterr().out
    assert main(["models", "--family", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown family 'nope'" in err and "hourglass" in err and "dogs" in err


def test_version(capsys):
    import posekit as api
    from posekit.cli import main, package_version
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"posekit {package_version()}" == f"posekit {api.__version__}"


@pytest.fixture
def tiny_recipe(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"imports": ["tiny_task"], "task": "tiny", "name": "cli", "out_dir": str(tmp_path),
                                    "train": {"batch_size": 8, "max_steps": 4, "val_every": 2, "progress": False}}))
    return path


def test_train_eval_resume_via_cli(tiny_recipe, tmp_path):
    posekit("train", tiny_recipe, "train.lr=0.01")
    run = tmp_path / "cli"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["lr"] == 0.01 and saved["imports"] == ["tiny_task"]
    out = posekit("eval", tiny_recipe, f"checkpoint={run / 'best.pt'}", "--json", tmp_path / "m.json").stdout
    assert "mse" in out and json.loads((tmp_path / "m.json").read_text())["mse"] > 0
    # no recipe: the checkpoint's own config; its stored `imports` are never imported (a checkpoint is data)
    proc = posekit("eval", run / "best.pt", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "unknown task 'tiny'" in proc.stderr
    assert "imports=[tiny_task]" in proc.stderr and "Traceback" not in proc.stderr
    out_ckpt = posekit("eval", run / "best.pt", "imports=[tiny_task]", "--json", tmp_path / "m2.json").stdout
    assert "mse" in out_ckpt
    assert json.loads((tmp_path / "m2.json").read_text()) == json.loads((tmp_path / "m.json").read_text())
    posekit("train", tiny_recipe, "train.max_steps=8", f"train.resume={run}")
    import torch
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 8


def test_cli_errors_are_one_clear_line(tiny_recipe):
    proc = posekit("train", tiny_recipe, "train.lrr=1", check=False)
    assert proc.returncode == 2
    assert "unknown config key 'train.lrr'" in proc.stderr and "valid keys" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = posekit("train", tiny_recipe, "train.max_steps=many", check=False)
    assert proc.returncode == 2 and "'train.max_steps' expects int" in proc.stderr
    proc = posekit("eval", tiny_recipe, "checkpoint=/nonexistent/best.pt", check=False)
    assert proc.returncode == 2 and "checkpoint not found: /nonexistent/best.pt" in proc.stderr
    proc = posekit("predict", "/nonexistent.pt", "x.jpg", "--out", "o", check=False)
    assert proc.returncode == 2 and "not found" in proc.stderr


def test_bench_lists_benchmarks():
    out = posekit("bench", cwd=HERE.parent).stdout
    assert "trainer_overhead" in out


def test_predict_folder_and_video_and_export_with_a_real_family(tmp_path):
    """A real checkpoint (a 2-step hourglass) through `predict` on a folder and a video, then `export`."""
    import cv2
    import numpy as np
    from posekit.engine.recipes import load_config
    from posekit.engine.trainer import train
    cfg = load_config(HERE.parent / "configs" / "mpii_synthetic.yaml",
                      [f"out_dir={tmp_path}", "name=hg", "train.max_steps=2", "train.progress=false",
                       "data.synthetic_train_size=16", "data.synthetic_val_size=4", "data.synthetic_image_size=160"])
    ckpt = train(cfg) / "last.pt"
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"im{i}.jpg"), rng.integers(0, 255, (120, 90, 3), dtype=np.uint8))
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for _ in range(3):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    out = tmp_path / "preds"
    printed = posekit("predict", ckpt, folder, video, "--out", out, "--box", "10,10,60,90").stdout
    # two images -> a PNG + JSON each; the video -> an annotated mp4 and one JSON line per frame
    assert "3 prediction(s)" in printed and "3 frame(s)" in printed
    assert sorted(p.name for p in out.glob("*.png")) == ["im0.png", "im1.png"]
    assert (out / "clip.mp4").stat().st_size > 0
    frames = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    assert len(frames) == 3
    data = json.loads((out / "im0.json").read_text())
    assert np.array(data["keypoints"]).shape == (1, 16, 2) and data["skeleton"] == "mpii16"
    import posekit as api  # the same checkpoint through the Python API
    result = api.Predictor(ckpt)(np.zeros((120, 90, 3), np.uint8), boxes=[[10, 10, 60, 90]])
    assert isinstance(result, api.Results) and result.keypoints.shape == (1, 16, 2)
    assert result.plot().shape == (120, 90, 3)
    printed = posekit("export", ckpt, "--format", "onnx", "--out", tmp_path / "hg.onnx").stdout
    assert (tmp_path / "hg.onnx").is_file() and "max abs difference" in printed
    diff = float(printed.rsplit("max abs difference", 1)[1].split()[0])
    assert diff < 1e-3


def test_a_checkpoint_never_imports_the_modules_it_names(tmp_path):
    """A stranger's checkpoint that lists `imports` must not make posekit import them."""
    import sys

    import tiny_task
    from posekit.engine.checkpoint import load_checkpoint, save_checkpoint
    from posekit.engine.predictor import load_for_inference
    from posekit.engine.trainer import train
    run = train(tiny_task.tiny_config(tmp_path, max_steps=2, val_every=2))
    ckpt = load_checkpoint(run / "last.pt")
    (tmp_path / "evil_module_posekit_test.py").write_text("raise SystemExit('attacker code ran')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        ckpt["config"]["imports"] = ["evil_module_posekit_test"]
        save_checkpoint(ckpt, tmp_path / "evil.pt")
        task, _, cfg = load_for_inference(tmp_path / "evil.pt")
        assert task.name == "tiny" and cfg.imports == [] and "evil_module_posekit_test" not in sys.modules
    finally:
        sys.path.remove(str(tmp_path))


# ---------------------------------------------------------------------------------------------
# every error is one line (issue 12.11), tested through main() as the console script calls it
def one_error_line(capsys, argv, *needles):
    from posekit.cli import main
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"posekit {argv[0]}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One 2-step run of the tiny task, shared by the error tests (they only read it)."""
    import tiny_task
    from posekit.engine.trainer import train
    return train(tiny_task.tiny_config(tmp_path_factory.mktemp("tiny"), max_steps=2, val_every=2))


def test_wrong_model_args_name_the_model_and_its_arguments(capsys):
    recipe = HERE.parent / "configs" / "mpii_synthetic.yaml"
    one_error_line(capsys, ["train", recipe, "model.args.n_stack=2"], "unknown argument(s) ['n_stack']",
                   "hourglass2_small", "n_stacks: int")
    one_error_line(capsys, ["train", recipe, "model.args.n_feats=wide"], "'model.args.n_feats' expects int",
                   "hourglass2_small")


def test_recipe_files_that_are_not_recipes(capsys, tmp_path):
    listing = tmp_path / "list.yaml"
    listing.write_text("- task: tiny\n")
    one_error_line(capsys, ["train", listing], "must be a mapping", "got a list")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3.5\n")
    one_error_line(capsys, ["train", scalar], "must be a mapping", "got a float")
    deep = tmp_path / "deep.yaml"
    deep.write_text("task: tiny\ndata: " + "{a: " * 10000 + "1" + "}" * 10000 + "\n")
    one_error_line(capsys, ["train", deep], "nested too deeply")
    broken = tmp_path / "broken.yaml"
    broken.write_text("task: tiny\ntrain: {lr: [1, 2\n")
    one_error_line(capsys, ["train", broken], "invalid YAML")


def test_out_of_range_values_and_run_names_on_the_command_line(capsys, tmp_path):
    recipe = HERE.parent / "configs" / "mpii_synthetic.yaml"
    one_error_line(capsys, ["train", recipe, "train.warmup_steps=-5"], "'train.warmup_steps' must be >= 0")
    one_error_line(capsys, ["train", recipe, "train.device=gpu0"], "'train.device' must be auto | cpu")
    one_error_line(capsys, ["train", recipe, "name=../../escape", f"out_dir={tmp_path / 'runs'}"],
                   "must be a plain relative folder name inside out_dir")
    assert not (tmp_path / "escape").exists()


def test_a_checkpoint_of_another_family_names_both(capsys, tiny_run):
    recipe = HERE.parent / "configs" / "mpii_synthetic.yaml"
    one_error_line(capsys, ["eval", recipe, f"checkpoint={tiny_run / 'last.pt'}"], "holds task 'tiny'",
                   "the recipe is task 'hourglass' with model 'hourglass2_small'")


def test_weights_that_do_not_fit_the_model_are_one_line(capsys, tiny_run, tmp_path):
    from posekit.engine.checkpoint import load_checkpoint, save_checkpoint
    ckpt = load_checkpoint(tiny_run / "last.pt")
    ckpt["model"] = {k: v[..., :1] if v.ndim else v for k, v in ckpt["model"].items()}
    save_checkpoint(ckpt, tmp_path / "narrow.pt")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({"task": "tiny", "out_dir": str(tmp_path)}))
    one_error_line(capsys, ["eval", recipe, f"checkpoint={tmp_path / 'narrow.pt'}"], "do not fit",
                   "of another shape")


def test_truncated_and_foreign_files_are_not_checkpoints(capsys, tiny_run, tmp_path):
    data = (tiny_run / "last.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pt").write_text("hello, I am no checkpoint\n")
    for name in ("cut.pt", "text.pt"):
        line = one_error_line(capsys, ["eval", tmp_path / name], "not a readable checkpoint")
        assert len(line) < 300
    one_error_line(capsys, ["eval", tmp_path / "missing.pt"], "checkpoint not found")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({"task": "tiny", "out_dir": str(tmp_path)}))
    one_error_line(capsys, ["eval", recipe, f"checkpoint={tmp_path / 'cut.pt'}"], "not a readable checkpoint")
    one_error_line(capsys, ["eval", recipe], "checkpoint=PATH")


def test_eval_from_a_checkpoint_or_a_run_folder_alone(capsys, tiny_run, tmp_path):
    """`posekit eval CHECKPOINT`: the stored config, with overrides; a run folder means its best.pt."""
    from posekit.cli import main
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({"task": "tiny", "out_dir": str(tmp_path)}))
    results = {}
    for key, argv in {"recipe": ["eval", recipe, f"checkpoint={tiny_run / 'best.pt'}"],
                      "file": ["eval", tiny_run / "best.pt"], "folder": ["eval", tiny_run]}.items():
        assert main([str(a) for a in [*argv, "--json", tmp_path / f"{key}.json"]]) == 0
        results[key] = json.loads((tmp_path / f"{key}.json").read_text())
    capsys.readouterr()
    assert results["recipe"] == results["file"] == results["folder"] and results["file"]["mse"] > 0
    assert main(["eval", str(tiny_run / "best.pt"), "data.n_val=4", "--json", str(tmp_path / "o.json")]) == 0
    assert json.loads((tmp_path / "o.json").read_text()) != results["file"]  # the override is applied
    one_error_line(capsys, ["eval", tiny_run / "best.pt", "eval.batch_size=0"], "'eval.batch_size' must be >= 1")


def test_internal_errors_say_so_and_debug_shows_the_traceback(capsys, monkeypatch):
    from posekit import cli

    def broken(args):
        raise RuntimeError("something inside broke")
    monkeypatch.setattr(cli, "cmd_models", broken)
    line = one_error_line(capsys, ["models"], "internal error (RuntimeError: something inside broke)",
                          "POSEKIT_DEBUG=1")
    assert line
    monkeypatch.setenv("POSEKIT_DEBUG", "1")
    with pytest.raises(RuntimeError, match="something inside broke"):
        cli.main(["models"])


def test_keyboard_interrupt_is_not_swallowed(monkeypatch):
    from posekit import cli

    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "cmd_models", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["models"])


def test_lift_box_must_be_finite():
    from posekit.cli.lift import parse_box
    assert parse_box("1,2,3,4") == [1.0, 2.0, 3.0, 4.0]
    for bad in ("nan,0,10,10", "0,0,inf,10", "0,0,-1,10", "1,2,3"):
        with pytest.raises(ValueError, match="four finite numbers"):
            parse_box(bad)
