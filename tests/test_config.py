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
