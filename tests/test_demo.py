"""`posekit demo` is sized by steps: the summary has before -> after per family, the time cap is a
safety net that is reported when it bites, and an unknown family gets the default plan."""
import json

import numpy as np
import pytest

import tiny_task  # noqa: F401  (registers the "tiny" task, which has no demo plan)
from posekit.engine.demo import DEFAULT_PLAN, DEMO_PLANS, available_families, demo_plan, run_demo


def test_every_registered_family_has_a_step_plan():
    for family in available_families():
        plan = demo_plan(family)
        assert plan.steps >= 100 and plan.seconds > 0, family
    assert demo_plan("tiny") is DEFAULT_PLAN  # registered without a plan: the default budget
    assert set(DEMO_PLANS) >= {"dogs", "hourglass", "gmh_mdn", "openpose", "fse"}


def test_summary_has_before_and_after_per_family(tmp_path, capsys):
    rows = run_demo(out_dir=tmp_path, families=["gmh_mdn", "dogs"], steps={"gmh_mdn": 3, "dogs": 2}, smoke=True)
    assert [r["family"] for r in rows] == ["gmh_mdn", "dogs"]
    for r in rows:
        assert r["steps"] == r["planned_steps"] and not r["capped"]
        assert np.isfinite(r["before"]) and np.isfinite(r["after"]) and np.isfinite(r["val_loss_before"])
        assert (tmp_path / r["family"] / "curves.png").is_file()
        assert r["images"] and all((tmp_path / r["family"] / "predictions").glob("*.png"))
    assert rows[0]["steps"] == 3 and rows[1]["steps"] == 2
    md = (tmp_path / "summary.md").read_text()
    assert "| before | after | change | val loss |" in md
    line = next(ln for ln in md.splitlines() if ln.startswith("| gmh_mdn |"))
    assert f"{rows[0]['before']:.4g}" in line and f"{rows[0]['after']:.4g}" in line
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved[1]["all_before"] and saved[1]["all_after"]
    # the default "ground truth | prediction" pictures: two panels side by side, tall enough to judge
    from posekit.data.io import read_image
    pic = read_image(rows[1]["images"][0])
    assert pic.shape[0] >= 384 and pic.shape[1] > 1.5 * pic.shape[0]
    assert "gmh_mdn" in capsys.readouterr().out


def test_time_cap_is_a_safety_net_and_is_reported(tmp_path):
    (row,) = run_demo(out_dir=tmp_path, families=["gmh_mdn"], steps=50, budget_s=0.001, smoke=True)
    assert row["capped"] and row["steps"] < row["planned_steps"] == 50
    assert "of 50 (time cap)" in (tmp_path / "summary.md").read_text()
    with pytest.raises(ValueError, match="no demo for"):
        run_demo(out_dir=tmp_path, families=["no_such_family"])
    with pytest.raises(ValueError, match="steps_scale"):
        run_demo(out_dir=tmp_path, families=["gmh_mdn"], steps_scale=0)
    with pytest.raises(ValueError, match="budget_s"):
        run_demo(out_dir=tmp_path, families=["gmh_mdn"], budget_s=0)


def test_smoke_demo_runs_every_family(tmp_path):
    """`posekit demo --smoke` (what `make test` runs) works for every family: each smoke size holds
    at least one training batch, and every family gets a before/after row and pictures."""
    families = available_families()
    rows = run_demo(out_dir=tmp_path, families=families, steps=1, smoke=True)
    assert [r["family"] for r in rows] == families
    for r in rows:
        assert r["steps"] == 1 and not r["capped"], r["family"]
        assert r["before"] is not None and r["after"] is not None, r["family"]
    assert (tmp_path / "summary.md").is_file()
