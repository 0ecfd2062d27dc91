"""Recipes: typed sections, dotted overrides, clear errors for typos and wrong types."""
import pytest
import yaml

import tiny_task  # noqa: F401
from posekit.config import ConfigError, parse_overrides
from posekit.engine.recipes import load_config, save_config


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"task": "tiny", "name": "r", "model": {"args": {"hidden": 16}},
                                    "data": {"n_train": 32}, "train": {"lr": "1e-4", "max_steps": 5}}))
    return path


def test_load_and_nested_overrides(recipe):
    cfg = load_config(recipe, ["train.lr=0.5", "data.noise=0.2", "model.args.hidden=64", "train.betas=[0.5,0.9]",
                               "train.val_every=null", "train.lr_mult={backbone: 0.1}"])
    assert cfg.train.lr == 0.5 and cfg.data.noise == 0.2 and cfg.model.args == {"hidden": 64}
    assert cfg.train.betas == [0.5, 0.9] and cfg.train.val_every is None
    assert cfg.train.lr_mult == {"backbone": 0.1}
    assert cfg.data.n_train == 32  # from the file
    assert isinstance(load_config(recipe).train.lr, float)  # YAML's "1e-4" string is coerced


def test_typo_names_the_key_and_lists_valid_keys(recipe):
    with pytest.raises(ConfigError) as e:
        load_config(recipe, ["train.lrr=0.1"])
    msg = str(e.value)
    assert "train.lrr" in msg and "'lr'" in msg and "max_steps" in msg
    with pytest.raises(ConfigError, match="unknown config key 'trian'"):
        load_config(recipe, ["trian.lr=0.1"])


def test_wrong_type_names_the_key(recipe):
    with pytest.raises(ConfigError, match="'train.max_steps' expects int .* 'ten'"):
        load_config(recipe, ["train.max_steps=ten"])
    with pytest.raises(ConfigError, match="'train.lr' expects float"):
        load_config(recipe, ["train.lr=fast"])
    with pytest.raises(ConfigError, match="'train.progress' expects bool"):
        load_config(recipe, ["train.progress=maybe"])
    with pytest.raises(ConfigError, match="not key=value"):
        parse_overrides(["train.lr"])


def test_unknown_task_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: nope\n")
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match="config not found"):
        load_config(tmp_path / "missing.yaml")


def test_resolved_config_round_trips(recipe, tmp_path):
    cfg = load_config(recipe, ["train.lr=0.25"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg


# ---------------------------------------------------------------------------------------------
# allowed ranges (issue 12.7): every bad value is one ConfigError naming the key and the range
BAD_VALUES = [
    ("train.warmup_steps=-1", "'train.warmup_steps' must be >= 0"),
    ("train.grad_clip=-1", "'train.grad_clip' must be > 0"),
    ("train.gamma=0", "'train.gamma' must be > 0"),
    ("train.max_steps=0", "'train.max_steps' must be >= 1"),
    ("train.max_epochs=-2", "'train.max_epochs' must be >= 1"),
    ("train.batch_size=0", "'train.batch_size' must be >= 1"),
    ("train.lr=0", "'train.lr' must be > 0"),
    ("train.lr=-1e-3", "'train.lr' must be > 0"),
    ("train.lr=.nan", "'train.lr' must be > 0"),
    ("train.betas=[0.9]", r"'train.betas' must be 2 values, each in \[0, 1\)"),
    ("train.betas=[0.9,1.0]", r"'train.betas' must be 2 values, each in \[0, 1\)"),
    ("train.eps=0", "'train.eps' must be > 0"),
    ("train.ema_decay=1", r"'train.ema_decay' must be in \(0, 1\)"),
    ("train.ema_decay=0", r"'train.ema_decay' must be in \(0, 1\)"),
    ("train.log_every=0", "'train.log_every' must be >= 1"),
    ("train.val_every=0", "'train.val_every' must be >= 1"),
    ("train.save_every=-5", "'train.save_every' must be >= 1"),
    ("train.num_workers=-1", "'train.num_workers' must be >= 0"),
    ("train.momentum=1.5", r"'train.momentum' must be in \[0, 1\)"),
    ("train.weight_decay=-0.1", "'train.weight_decay' must be >= 0"),
    ("train.min_lr_ratio=2", r"'train.min_lr_ratio' must be in \[0, 1\]"),
    ("train.decay_steps=0", "'train.decay_steps' must be >= 1"),
    ("train.milestones=[10,-1]", "'train.milestones' must be >= 0"),
    ("train.lr_mult={backbone: -1}", "'train.lr_mult' must be >= 0"),
    ("train.lr_hold={backbone: 2.5}", "'train.lr_hold' must be a whole number >= 0"),
    ("train.seed=-1", "'train.seed' must be in"),
    ("train.max_time=0", "'train.max_time' must be > 0"),
    ("train.device=gpu", "'train.device' must be auto | cpu | cuda | cuda:N | mps, got 'gpu'"),
    ("train.device=cuda:x", "'train.device' must be"),
    ("train.amp=fp8", "'train.amp' must be one of auto | fp32 | bf16 | fp16"),
    ("train.amp=on", "'train.amp' must be one of"),  # YAML True: ambiguous, refused
    ("train.optimizer=lamb", "'train.optimizer' must be one of adam | adamw | sgd | rmsprop"),
    ("train.schedule=poly", "'train.schedule' must be one of constant | step | exp | cosine"),
    ("data.on_bad_record=ignore", "'data.on_bad_record' must be one of skip | error"),
    ("eval.batch_size=0", "'eval.batch_size' must be >= 1"),
    ("eval.max_samples=0", "'eval.max_samples' must be >= 1"),
]


@pytest.mark.parametrize("override,message", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_out_of_range_values_are_refused(recipe, override, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(recipe, [override])
    assert "\n" not in str(e.value) and str(recipe) in str(e.value)


def test_the_same_ranges_apply_to_a_recipe_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"task": "tiny", "train": {"warmup_steps": -10}}))
    with pytest.raises(ConfigError, match="'train.warmup_steps' must be >= 0, got -10"):
        load_config(path)


def test_every_numeric_or_choice_field_of_the_base_sections_has_a_range():
    """A new numeric field without an allowed range fails here (the rule of issue 12.7)."""
    import dataclasses
    import typing

    from posekit.config import DataConfig, EvalConfig, ModelConfig, TrainConfig, field_checks
    numeric = (int, float)
    choice = {"optimizer", "schedule", "amp", "device", "on_bad_record"}
    for cls in (TrainConfig, ModelConfig, DataConfig, EvalConfig):
        hints, checks = typing.get_type_hints(cls), field_checks(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            args = set(typing.get_args(tp)) | {tp} | {typing.get_origin(tp)}
            inner = {a for arg in typing.get_args(tp) for a in typing.get_args(arg)}
            if (args | inner) & set(numeric) and bool not in args or f.name in choice:
                assert f.name in checks, f"{cls.__name__}.{f.name} has no allowed range"


def test_valid_edge_values_are_accepted(recipe):
    cfg = load_config(recipe, ["train.warmup_steps=0", "train.grad_clip=null", "train.ema_decay=0.999",
                               "train.betas=[0.0, 0.99]", "train.device=cuda:1", "train.optimizer=SGD",
                               "train.lr_mult={backbone: 0}", "data.on_bad_record=skip", "train.max_steps=1"])
    assert cfg.train.grad_clip is None and cfg.train.device == "cuda:1" and cfg.train.optimizer == "sgd"
    assert cfg.data.on_bad_record == "skip" and cfg.train.lr_mult == {"backbone": 0}
    assert load_config(recipe, ["train.lr_mult={backbone: 1e-1}"]).train.lr_mult == {"backbone": 0.1}  # YAML string
    for device in ("auto", "cpu", "cuda", "mps"):
        assert load_config(recipe, [f"train.device={device}"]).train.device == device


@pytest.mark.parametrize("value", ["off", "none", "fp32", "false", "OFF", "null"])
def test_amp_off_none_fp32_false_all_mean_fp32(recipe, tmp_path, value):
    """YAML reads `off` as False (issue 14): on the command line and in a file it means fp32."""
    assert load_config(recipe, [f"train.amp={value}"]).train.amp == "fp32"
    path = tmp_path / "amp.yaml"
    path.write_text(f"task: tiny\ntrain:\n  amp: {value}\n")
    cfg = load_config(path)
    assert cfg.train.amp == "fp32"
    save_config(cfg, tmp_path / "saved.yaml")  # the stored value reads back as itself
    assert "amp: fp32" in (tmp_path / "saved.yaml").read_text() and load_config(tmp_path / "saved.yaml") == cfg


def test_the_trainer_accepts_every_spelling_of_fp32(recipe):
    import torch

    from posekit.engine.precision import resolve_amp
    for value in ("off", "none", "false"):
        assert resolve_amp(load_config(recipe, [f"train.amp={value}"]).train.amp, torch.device("cpu")) == "fp32"


def test_family_sections_declare_ranges_the_same_way():
    """A family's own section uses `option(...)` or a `RANGES` mapping; both are checked."""
    from dataclasses import dataclass

    from posekit.config import Check, DataConfig, build_dataclass, option

    @dataclass
    class MyData(DataConfig):
        sigma: float = option(2.0, gt=0)
        input_size: int = 256
        RANGES = {"input_size": Check(ge=32, le=2048)}

    assert build_dataclass(MyData, {"sigma": "1.5", "input_size": 64}, "data").sigma == 1.5
    with pytest.raises(ConfigError, match="'data.sigma' must be > 0, got 0.0"):
        build_dataclass(MyData, {"sigma": 0}, "data")
    with pytest.raises(ConfigError, match=r"'data.input_size' must be in \[32, 2048\], got 8"):
        build_dataclass(MyData, {"input_size": 8}, "data")
    with pytest.raises(ConfigError, match="'data.on_bad_record' must be one of"):  # the base's ranges are inherited
        build_dataclass(MyData, {"on_bad_record": "drop"}, "data")


def test_validate_checks_a_config_built_in_python():
    from posekit.config import Config, TrainConfig, validate
    with pytest.raises(ConfigError, match="'train.batch_size' must be >= 1"):
        validate(Config(task="tiny", train=TrainConfig(batch_size=0)))
    assert validate(Config(task="tiny", train=TrainConfig(amp="off"))).train.amp == "fp32"


# ---------------------------------------------------------------------------------------------
# run names (issue 12.9): a run never lands outside out_dir
@pytest.mark.parametrize("name", ["../../x", "..", "a/../../b", "/tmp/escape", ".", "", "a//b", "~/x"])
def test_a_run_name_that_leaves_out_dir_is_refused(recipe, tmp_path, name):
    with pytest.raises(ConfigError, match="'name' must be a plain relative folder name inside out_dir"):
        load_config(recipe, [f"name={name}", f"out_dir={tmp_path}"])
    from posekit.config import Config
    with pytest.raises(ConfigError, match="plain relative"):
        Config(task="tiny", name=name, out_dir=str(tmp_path)).run_dir


def test_a_plain_run_name_stays_inside_out_dir(recipe, tmp_path):
    cfg = load_config(recipe, ["name=exp/a1", f"out_dir={tmp_path}"])
    assert cfg.run_dir.resolve().is_relative_to(tmp_path.resolve()) and cfg.run_dir.name == "a1"


# ---------------------------------------------------------------------------------------------
# recipe files that are not recipes (issue 12.11)
@pytest.mark.parametrize("text,message", [("- a\n- b\n", "must be a mapping .* got a list"),
                                          ("42\n", "must be a mapping .* got a int"),
                                          ("just words\n", "must be a mapping .* got a str"),
                                          ("task: [1, 2]\n", "'task' expects a task name"),
                                          ("task: tiny\n  bad: indent: x\n", "invalid YAML")])
def test_a_yaml_that_is_no_recipe_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        load_config(path)
    assert "\n" not in str(e.value)


def test_absurdly_deep_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("task: tiny\nmodel:\n  args:\n    x: " + "{a: " * 10000 + "1" + "}" * 10000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(path)


def test_shipped_recipes_resolve_by_name_from_anywhere(tmp_path, monkeypatch):
    from posekit.engine.recipes import RECIPES_DIR, list_recipes, resolve_config_path
    monkeypatch.chdir(tmp_path)  # not the checkout: ./configs does not exist here
    assert "mpii_synthetic" in list_recipes() and RECIPES_DIR.parent.name == "posekit"
    for spelling in ("mpii_synthetic", "mpii_synthetic.yaml", "configs/mpii_synthetic.yaml"):
        assert resolve_config_path(spelling) == RECIPES_DIR / "mpii_synthetic.yaml"
    with pytest.raises(FileNotFoundError, match="shipped recipes: .*mpii_synthetic"):
        resolve_config_path("elsewhere/mpii_synthetic.yaml")  # a real path is never swapped for a shipped recipe


# ---------------------------------------------------------------------------------------------
# "false" is never True (issue 12.12)
def test_model_args_are_typed_against_the_builder(tmp_path):
    path = tmp_path / "hg.yaml"
    path.write_text(yaml.safe_dump({"task": "hourglass", "model": {"name": "hourglass2_small",
                                                                   "args": {"tiny": "false", "n_stacks": "1"}}}))
    cfg = load_config(path)
    assert cfg.model.args == {"tiny": False, "n_stacks": 1}
    with pytest.raises(ConfigError, match=r"model\.args\.n_stacks' expects int.*model 'hourglass2_small'.*n_feats"):
        load_config(path, ["model.args.n_stacks=many"])
    with pytest.raises(ConfigError, match=r"'hourglass2_small' got unknown argument\(s\) \['n_stack'\].*n_stacks: int"):
        load_config(path, ["model.args.n_stack=2"])


def test_a_false_string_never_turns_a_bool_model_argument_on():
    from posekit.models import check_model_args, create_model
    assert check_model_args("dogs_mobilenetv2", {"pretrained": "false", "freeze_backbone": "no"}) == {
        "pretrained": False, "freeze_backbone": False}
    model = create_model("hourglass2_small", tiny="false")
    assert model is not None
    with pytest.raises(TypeError, match="expects bool"):
        create_model("hourglass2_small", tiny="maybe")
