"""No unbounded config (issue 20): every size-like key has a sanity cap or a cheap memory
pre-check, so a typo is one line on the command line instead of a fork bomb, a hang or an OOM kill."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import tiny_task
from posekit.cli import main
from posekit.config import ConfigError, Config, EvalConfig, TrainConfig, max_workers, usable_cpus
from posekit.engine.recipes import list_recipes, load_config
from posekit.models.registry import physical_memory_bytes

ROOT = Path(__file__).resolve().parents[1]


def _one_line(capsys, argv, *needles) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err and "internal error" not in err, err
    assert lines[0].startswith(f"posekit {argv[0]}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _run(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter under a timeout, so a regression fails instead of hanging."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"task": "tiny", "name": "r", "out_dir": str(tmp_path / "runs"),
                                    "train": {"max_steps": 2, "progress": False, "tensorboard": False}}))
    return path


# ---------------------------------------------------------------------------------------------
# train.num_workers
def test_num_workers_past_4x_the_cpus_is_refused_in_one_line_before_any_process_forks(recipe, capsys, monkeypatch):
    import multiprocessing.process

    def no_fork(self):
        raise AssertionError("a DataLoader worker was started")
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", no_fork)
    start = time.monotonic()
    line = _one_line(capsys, ["train", recipe, "train.num_workers=10000"], "'train.num_workers' must be at most",
                     "got 10000", f"{usable_cpus()} CPUs")
    assert time.monotonic() - start < 10, line
    assert not (recipe.parent / "runs").exists()  # refused before the run folder is made


def test_the_worker_cap_follows_the_cpus_this_process_may_use(recipe, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    assert max_workers() == 128 and load_config(recipe, ["train.num_workers=100"]).train.num_workers == 100
    with pytest.raises(ConfigError, match=r"'train.num_workers' must be at most 128, got 129 \(4 x the 32 CPUs"):
        load_config(recipe, ["train.num_workers=129"])
    monkeypatch.delattr(os, "sched_getaffinity")  # no affinity API: os.cpu_count(), at least 16 workers
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert usable_cpus() == 1 and max_workers() == 16
    assert load_config(recipe, ["train.num_workers=8"]).train.num_workers == 8  # shipped recipes use up to 8


@pytest.mark.parametrize("override,message", [
    ("train.batch_size=1000000", "'train.batch_size' must be at most 65536, got 1000000 (a whole batch is held"),
    ("eval.batch_size=1000000", "'eval.batch_size' must be at most 65536"),
    ("train.max_steps=1" + "0" * 400, "'train.max_steps' must be at most 1000000000, got an integer of about 401"),
    ("train.warmup_steps=10000000000", "'train.warmup_steps' must be at most 1000000000"),
    ("train.milestones=[10, 99999999999]", "'train.milestones' must be at most 1000000000"),
    ("train.lr_hold={backbone: 99999999999}", "'train.lr_hold' must be at most 1000000000"),
    ("train.max_epochs=10000000", "'train.max_epochs' must be at most 1000000"),
    ("eval.max_samples=99999999999", "'eval.max_samples' must be at most 1000000000"),
])
def test_every_size_like_key_has_a_sanity_cap(recipe, override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as e:
        load_config(recipe, [override])
    assert "\n" not in str(e.value) and len(str(e.value)) < 400


def test_every_size_like_field_of_the_base_sections_declares_a_cap():
    """A new size-like int field (sizes, steps, workers, samples) without a `most=` cap fails here."""
    import dataclasses

    from posekit.config import field_checks
    for cls in (TrainConfig, EvalConfig):
        checks = field_checks(cls)
        for f in dataclasses.fields(cls):
            if any(w in f.name for w in ("size", "steps", "every", "workers", "epochs", "samples", "milestones",
                                         "lr_hold", "performance")):
                assert checks[f.name].most is not None, f"{cls.__name__}.{f.name} has no upper bound"


def test_a_family_option_can_declare_a_cap_too(tmp_path):
    from posekit.engine.recipes import config_from_dict
    with pytest.raises(ConfigError, match="'data.synthetic_max_people' must be at most 100"):
        config_from_dict({"task": "openpose", "data": {"synthetic_max_people": 100000}})


# ---------------------------------------------------------------------------------------------
# skeletons built on demand
def test_a_landmark_skeleton_of_100_million_points_is_refused_fast():
    """Before the cap, `landmarks100000000` built 10^8 names and never returned; the subprocess
    timeout turns such a regression into a failure rather than a hang."""
    code = ("import time, tiny_task\n"
            "from posekit.skeletons import get_skeleton\n"
            "from posekit.engine.recipes import load_config\n"
            "t = time.monotonic()\n"
            "for name in ('landmarks100000000', 'landmarks1001', 'landmarks' + '9' * 5000):\n"
            "    try:\n"
            "        get_skeleton(name)\n"
            "    except ValueError as e:\n"
            "        print('REFUSED', e)\n"
            "try:\n"
            "    load_config('keypoints_synthetic', ['data.skeleton=landmarks100000000'])\n"
            "except Exception as e:\n"
            "    print('CONFIG', type(e).__name__, e)\n"
            "print('SECONDS', time.monotonic() - t)\n")
    proc = _run(code, timeout=120)
    assert proc.returncode == 0, proc.stderr
    refused = [ln for ln in proc.stdout.splitlines() if ln.startswith("REFUSED")]
    assert len(refused) == 3 and all("at most 1000 points" in ln for ln in refused), proc.stdout
    assert "CONFIG ConfigError" in proc.stdout and "data.skeleton" in proc.stdout, proc.stdout
    assert float(proc.stdout.split("SECONDS")[-1]) < 2, proc.stdout


def test_the_largest_landmark_skeleton_still_builds():
    from posekit.skeletons import MAX_KEYPOINTS, landmarks
    assert len(landmarks(MAX_KEYPOINTS)) == MAX_KEYPOINTS


def test_a_skeleton_yaml_with_too_many_keypoints_is_one_error_naming_the_file(tmp_path):
    from posekit.skeletons import load_skeleton_yaml
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump({"name": "huge", "keypoints": [f"p{i}" for i in range(1001)]}))
    with pytest.raises(ValueError, match=rf"{path}: 'keypoints' lists 1001 names; a skeleton has at most 1000"):
        load_skeleton_yaml(path)


# ---------------------------------------------------------------------------------------------
# model.args
def test_model_args_absurd_ints_are_one_model_argument_error(recipe):
    from posekit.models import ModelArgumentError, check_model_args
    for args, message in [({"n_stacks": 0}, r"model.args.n_stacks must be in \[1, 16777216\] .* got 0"),
                          ({"n_feats": -3}, "model.args.n_feats must be in .* got -3"),
                          ({"n_feats": 10**40}, "got an integer of 41 digits")]:
        with pytest.raises(ModelArgumentError, match=message):
            check_model_args("hourglass2_small", args)
    with pytest.raises(ModelArgumentError, match="model.args.unfreeze_at_step must be in \\[0, "):
        check_model_args("dogs_mobilenetv2", {"unfreeze_at_step": -1})
    with pytest.raises(ConfigError, match="model.args.n_stacks must be in") as e:  # at recipe load
        load_config(ROOT / "posekit" / "configs" / "mpii_synthetic.yaml", ["model.args.n_stacks=0"])
    assert "\n" not in str(e.value)
    assert check_model_args("hourglass2_small", {"n_stacks": 1, "n_feats": 16}) == {"n_stacks": 1, "n_feats": 16}


@pytest.mark.skipif((physical_memory_bytes() or 0) > 4e11, reason="a machine with this much RAM could hold it")
def test_num_kernels_of_a_million_is_refused_before_allocating(tmp_path):
    """The recipe's gmh_mdn with num_kernels=10**6 is 103 GB of weights; it was OOM-killed. Now the meta-device
    pre-check refuses it on the command line, in one line naming model.args and the size."""
    code = ("import resource, sys\n"
            "from posekit.cli import main\n"
            f"rc = main(['train', 'h36m_synthetic', 'model.args.num_kernels=1000000', 'out_dir={tmp_path}',\n"
            "           'data.synthetic_train=64', 'data.synthetic_val=16', 'train.progress=false',\n"
            "           'train.tensorboard=false', 'train.max_steps=1'])\n"
            "print('RC', rc, 'RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    proc = _run(code, timeout=180)
    assert proc.returncode == 0, proc.stderr
    err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and "internal error" not in err[0], proc.stderr
    assert err[0].startswith("posekit train: error: ") and "'num_kernels': 1000000" in err[0], err[0]
    assert "102.6 GB of weights and buffers" in err[0] and "choose smaller model.args" in err[0], err[0]
    rc, rss_kb = proc.stdout.split()[1], int(proc.stdout.split()[3])
    assert rc == "2" and rss_kb < 3 * 1024 * 1024, proc.stdout  # nothing near 103 GB was touched


def test_the_memory_pre_check_follows_this_machines_ram(monkeypatch):
    from posekit.models import ModelArgumentError, create_model
    from posekit.models import registry
    monkeypatch.setattr(registry, "physical_memory_bytes", lambda: 10**5)  # a 100 kB machine
    with pytest.raises(ModelArgumentError, match=r"model 'fse_small' with model.args \{\} holds 0.1 MB .* "
                                                 r"this machine has 0.1 MB of RAM: choose smaller model.args"):
        create_model("fse_small")
    monkeypatch.setattr(registry, "physical_memory_bytes", lambda: 10**12)
    assert isinstance(create_model("fse_small"), torch.nn.Module)


def test_every_registered_model_measures_itself_on_meta_cheaply():
    """The pre-check works for every model (a None would silently skip it) and costs little."""
    from posekit.models import list_models
    from posekit.models.registry import model_bytes
    start = time.monotonic()
    for name in list_models():
        measured = model_bytes(name, {})
        assert measured is not None and measured[0] > 0 and measured[1] > 0, name
    assert time.monotonic() - start < 15


def test_a_model_with_absurdly_many_modules_is_refused_while_building_on_meta(monkeypatch):
    from posekit.models import ModelArgumentError, create_model
    from posekit.models import registry
    monkeypatch.setattr(registry, "MAX_MODULES", 50)  # hourglass2_small has a few hundred
    with pytest.raises(ModelArgumentError, match="would have more than 50 modules"):
        create_model("hourglass2_small")
    monkeypatch.undo()
    with pytest.raises(ModelArgumentError, match="nests too deeply"):
        create_model("hourglass2_small", n_low=5000)


def test_a_builder_that_cannot_build_on_meta_skips_the_pre_check(monkeypatch):
    from posekit.models import registry
    entry = registry.get_entry("fse_small")

    def real_only(**kwargs):
        if torch.empty(0).device.type == "meta":
            raise RuntimeError("needs real tensors")
        return entry.builder(**kwargs)
    monkeypatch.setitem(registry._MODELS, "fse_small", registry.ModelEntry(
        "fse_small", real_only, entry.family, entry.skeleton, entry.input_size, entry.description))
    assert registry.model_bytes("fse_small", {}) is None
    assert isinstance(registry.create_model("fse_small"), torch.nn.Module)


# ---------------------------------------------------------------------------------------------
# eval.batch_size=0 on every path
def test_eval_batch_size_0_is_refused_by_train_and_eval(recipe, tmp_path, capsys):
    from posekit.engine.trainer import train
    _one_line(capsys, ["train", recipe, "eval.batch_size=0"], "'eval.batch_size' must be >= 1, got 0")
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text() + "eval:\n  batch_size: 0\n")
    _one_line(capsys, ["train", bad], "'eval.batch_size' must be >= 1, got 0")
    run = train(tiny_task.tiny_config(tmp_path / "t", max_steps=2, val_every=2))
    _one_line(capsys, ["eval", run / "last.pt", "eval.batch_size=0"], "'eval.batch_size' must be >= 1")
    _one_line(capsys, ["eval", recipe, f"checkpoint={run / 'last.pt'}", "eval.batch_size=0"],
              "'eval.batch_size' must be >= 1")
    ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=True)  # a stored config with 0
    ckpt["config"]["eval"]["batch_size"] = 0
    torch.save(ckpt, tmp_path / "zero.pt")
    _one_line(capsys, ["eval", tmp_path / "zero.pt"], "'eval.batch_size' must be >= 1, got 0")


def test_every_family_refuses_eval_batch_size_0_even_where_it_redeclares_the_field():
    """fse, gmh_mdn and openpose redeclare `batch_size: int = N` in their eval section; that used to
    drop the base's range, so eval.batch_size=0 was accepted there and silently ignored later."""
    from posekit.families import get_task_class, list_tasks
    families = [get_task_class(n) for n in list_tasks() if get_task_class(n).synthetic_recipe]
    assert len(families) >= 6
    for cls in families:
        with pytest.raises(ConfigError, match="'eval.batch_size' must be >= 1, got 0"):
            load_config(cls.synthetic_recipe, ["eval.batch_size=0"])
        with pytest.raises(ConfigError, match="'eval.batch_size' must be at most 65536"):
            load_config(cls.synthetic_recipe, ["eval.batch_size=70000"])


def test_evaluate_and_predict_refuse_batch_size_0_instead_of_ignoring_it(tmp_path):
    from posekit.engine.evaluation import evaluate, predict
    from posekit.families import build_task
    cfg = tiny_task.tiny_config(tmp_path)
    task = build_task(cfg)
    model = task.build_model()
    datasets = task.build_datasets(tuple(task.eval_splits))
    with pytest.raises(ConfigError, match="'batch_size' must be >= 1, got 0"):
        evaluate(task, model, datasets, batch_size=0)
    task.cfg.eval.batch_size = 0  # a config built in Python, never validated
    with pytest.raises(ConfigError, match="'eval.batch_size' must be >= 1, got 0"):
        evaluate(task, model, datasets)
    with pytest.raises(ConfigError, match="'eval.batch_size' must be >= 1, got 0"):
        predict(task, model, [datasets[task.eval_splits[0]][0]["x"]])
    assert "mse" in evaluate(task, model, datasets, batch_size=3)


def test_a_python_built_config_is_capped_too():
    from posekit.config import validate
    with pytest.raises(ConfigError, match="'train.num_workers' must be at most"):
        validate(Config(task="tiny", train=TrainConfig(num_workers=10**6)))


# ---------------------------------------------------------------------------------------------
def test_every_shipped_recipe_still_loads_within_the_caps():
    assert len(list_recipes()) >= 10
    for name in list_recipes():
        cfg = load_config(name)
        assert cfg.train.num_workers <= max_workers() and cfg.eval.batch_size <= 65536, name



def test_a_checkpoint_trained_with_more_workers_than_this_machine_allows_still_evaluates(tmp_path, capsys):
    """The worker cap follows this machine; a checkpoint from a 64-CPU node (num_workers=200) is
    still evaluated here, its stored worker count brought within the cap (evaluation forks none)."""
    from posekit.engine.evaluation import config_from_checkpoint
    from posekit.engine.trainer import train
    run = train(tiny_task.tiny_config(tmp_path / "t", max_steps=2, val_every=2))
    ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    ckpt["config"]["train"]["num_workers"] = 200
    torch.save(ckpt, tmp_path / "big_node.pt")
    assert config_from_checkpoint(ckpt).train.num_workers == max_workers()
    assert main(["eval", str(tmp_path / "big_node.pt")]) == 0, capsys.readouterr().err
    with pytest.raises(ConfigError, match="'train.num_workers' must be at most"):  # the user's own value is checked
        config_from_checkpoint(ckpt, ["train.num_workers=200"])
