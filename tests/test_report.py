"""`posekit eval --report`: every family's synthetic data gives a complete static report (oracle
and an untrained model), figures that exist, a strict report.json; `report compare` works."""
import json
import re

import numpy as np
import pytest

from posekit.engine.evaluation import evaluate
from posekit.engine.recipes import load_config
from posekit.engine.report import ReportRecorder, compare_reports, provenance, write_report
from posekit.families.base import build_task, get_task_class, list_tasks

# the package's families (tests register toy tasks of their own, with no synthetic recipe)
FAMILIES = sorted(n for n in list_tasks() if get_task_class(n).__module__.startswith("posekit.families."))


def _report(family, tmp_path, name, *, oracle=True, max_samples=12, seed=0):
    cls = get_task_class(family)
    cfg = load_config(cls.synthetic_recipe, [*cls.smoke_overrides, f"out_dir={tmp_path}", "eval.batch_size=4"])
    task = build_task(cfg)
    datasets = task.build_datasets(tuple(task.eval_splits))
    recorder = ReportRecorder(gallery=3)
    model = None
    if not oracle:
        import torch
        torch.manual_seed(seed)
        model = task.build_model()
        task.prepare(model, datasets)
    metrics = evaluate(task, model, datasets, oracle=oracle, max_samples=max_samples, recorder=recorder)
    index = write_report(tmp_path / name, metrics=metrics, recorder=recorder, prov=provenance(cfg, None, oracle=oracle))
    return index, metrics


def _check_complete(index):
    page = index.read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert images, "the report shows no figure"
    for img in images:
        data = (index.parent / img).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", img
    report = json.loads((index.parent / "report.json").read_text())  # strict JSON (no NaN)
    assert report["metrics"] and report["protocol"] and report["provenance"]["posekit_version"]
    assert "http://" not in page and "https://" not in page and "<script" not in page  # opens offline, no JS
    return page, report


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_writes_a_complete_offline_report(family, tmp_path):
    index, metrics = _report(family, tmp_path, "rep")
    page, report = _check_complete(index)
    assert "What was evaluated" in page and "Protocol:" in page
    assert "Gallery" in page, "no worst/typical samples"
    for k, v in report["metrics"].items():
        assert v == pytest.approx(float(metrics[k]), nan_ok=True)


@pytest.mark.parametrize("max_samples", [None, 6], ids=["whole_split", "max_samples"])
@pytest.mark.parametrize("family", [f for f in FAMILIES if get_task_class(f).primary_metric == "AP"])
def test_coco_family_report_has_the_error_taxonomy(family, max_samples, tmp_path):
    index, _ = _report(family, tmp_path, "rep", oracle=True, max_samples=max_samples)
    page, report = _check_complete(index)
    errors = report["coco_errors"]
    assert errors["matched"] > 0 and errors["fractions"]["good"] > 0.5  # the codec's round trip is mostly good
    assert set(errors["counts"]) == {"good", "jitter", "inversion", "swap", "miss"}
    assert set(errors["ap_gain"]) == {"miss", "swap", "inversion", "jitter"}
    assert "coco_errors.png" in page and "coco_ap_gain.png" in page


def test_report_refuses_a_folder_that_is_not_a_report(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty and holds no posekit report"):
        _report("hourglass", tmp_path, "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_compare_shows_per_joint_deltas_and_disagreeing_samples(tmp_path):
    a, _ = _report("hourglass", tmp_path, "a", oracle=True)
    b, _ = _report("hourglass", tmp_path, "b", oracle=False)
    index = compare_reports(a.parent / "report.json", b.parent, tmp_path / "cmp")
    page = index.read_text()
    data = json.loads((index.parent / "compare.json").read_text())
    assert data["per_joint_deltas"] and data["disagree"]
    for img in re.findall(r'<img src="([^"]+)"', page):
        assert (index.parent / img).is_file()
    assert np.isfinite(list(data["metric_deltas"].values())).all()


def test_compare_names_a_missing_report(tmp_path):
    with pytest.raises(FileNotFoundError, match="report not found"):
        compare_reports(tmp_path / "nope", tmp_path / "nope2", tmp_path / "out")


def test_cli_eval_report_and_compare_write_pages_and_refuse_a_foreign_folder(tmp_path, capsys):
    from posekit.cli import main
    cls = get_task_class("hourglass")
    args = ["eval", cls.synthetic_recipe, "--oracle", *cls.smoke_overrides, f"out_dir={tmp_path}",
            "eval.max_samples=8"]
    assert main([*args, "--report", str(tmp_path / "r1")]) == 0
    assert (tmp_path / "r1" / "index.html").is_file() and (tmp_path / "r1" / "report.json").is_file()
    assert main([*args, "--report", str(tmp_path / "r1")]) == 0  # a report is replaced by a report
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("x")
    capsys.readouterr()
    assert main([*args, "--report", str(tmp_path / "mine")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("posekit eval: error: --report") and "\n" not in err
    assert main(["report", "compare", str(tmp_path / "r1"), str(tmp_path / "r1" / "report.json"),
                 "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "index.html").is_file()
    assert main(["report", "compare", str(tmp_path / "nope"), str(tmp_path / "r1"), "--out", str(tmp_path / "c2")]) == 2
    assert "report not found" in capsys.readouterr().err


@pytest.mark.slow  # trains one step (~20 s on a loaded machine); test_demo covers run_demo itself
def test_demo_writes_a_report_per_family_and_the_summary_links_it(tmp_path):
    from posekit.engine.demo import run_demo
    (row,) = run_demo(out_dir=tmp_path, families=["hourglass"], steps=1, smoke=True)
    index = tmp_path / "hourglass" / "report" / "index.html"
    assert row["report"] == str(index) and index.is_file()
    assert "[index.html](hourglass/report/index.html)" in (tmp_path / "summary.md").read_text()
    _check_complete(index)
