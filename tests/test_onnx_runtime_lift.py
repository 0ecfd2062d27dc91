"""A gmh_mdn .onnx lifter through numpy + onnxruntime alone (posekit.runtime.lift): the same
batch arrays as the family's prepare_inputs, the same Results and the same `posekit lift` JSON
as the Task path, no torch / onnx / scipy / matplotlib import on the way, and a tampered file
refused in one line naming it."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from conftest import smoke_checkpoint  # noqa: E402

from test_onnx_runtime_path import FORBID, HEAVY  # noqa: E402  (the deploy install: no torch, onnx, scipy, ...)

from posekit.cli import main  # noqa: E402
from posekit.results import Results  # noqa: E402
from posekit.runtime.lift import RuntimeLifter, lift_batch  # noqa: E402

pytestmark = pytest.mark.usefixtures("private_tempdir")  # the ONNX export cache stays in the module's folder

@pytest.fixture(scope="module")
def lifter(tmp_path_factory):
    """(the one-step smoke checkpoint, its .onnx export, the Task-path Predictor on the .onnx,
    the PyTorch Predictor on the checkpoint). The smoke recipe's eval.batch_size is 2, so every
    call below spans several session runs."""
    from posekit.engine.predictor import Predictor
    checkpoint = smoke_checkpoint("gmh_mdn", tmp_path_factory.mktemp("ckpt"))
    path = Predictor(checkpoint, backend="onnxruntime").onnx_path
    return checkpoint, path, Predictor(path), Predictor(checkpoint)


def _poses(n: int = 3, seed: int = 9) -> np.ndarray:
    from posekit.data.synthetic.h36m import synthetic_h36m
    return synthetic_h36m(n, seed=seed).meta["poses_2d_17"].astype(np.float64)


def _inputs():
    """(inputs, skeleton of the array inputs): every form a user lifts, with missing joints."""
    p = _poses(6)
    with_scores = np.concatenate([p[0], np.ones((17, 1))], axis=1)
    with_scores[[3, 12], 2] = 0.0  # two joints not found
    coco = np.random.default_rng(0).uniform(300, 700, (17, 3))  # a COCO-17 pose with its scores
    coco[:, 2] = np.r_[np.ones(16), 0.0]
    mpii = np.zeros((16, 2))
    from posekit.skeletons.mappings import MPII16_TO_H36M17
    for dst, src in enumerate(MPII16_TO_H36M17):
        if src is not None:
            mpii[src] = p[2][dst]
    two_people = np.stack([p[3], p[4]])
    result_2d = Results(keypoints=mpii[None], scores=np.ones((1, 16)), skeleton="mpii16", path="frame.jpg")
    inputs = [with_scores, {"keypoints": p[5][list(range(9)) + list(range(10, 17))], "skeleton": "h36m16"},
              result_2d, two_people, {"keypoints": mpii, "skeleton": "mpii16", "scores": np.r_[np.ones(15), 0.0]},
              {"keypoints": coco, "skeleton": "coco17"}]
    return inputs, "h36m17"


@pytest.mark.parametrize("rescale", [False, True])
def test_numpy_preprocessing_equals_the_family_prepare_inputs_exactly(lifter, rescale):
    _, path, onnx_predictor, torch_predictor = lifter
    inputs, skeleton = _inputs()
    runtime = RuntimeLifter(path, threads=1)
    codec = torch_predictor.model.codec
    np.testing.assert_array_equal(runtime.mean_2d, codec.mean_2d.double().numpy())  # the stored buffer, exactly
    got = lift_batch(inputs, skeleton=skeleton, rescale=rescale, mean_2d=runtime.mean_2d)
    for task in (torch_predictor.task, onnx_predictor.task):  # the checkpoint's task and the one the .onnx rebuilds
        want = task.prepare_inputs(inputs, skeleton=skeleton, rescale=rescale)
        assert got["input_2d"].dtype == np.float32 and got["input_2d"].shape == (7, 16, 2)
        np.testing.assert_array_equal(got["input_2d"], want["input_2d"].numpy())  # NaN where a joint is missing
        np.testing.assert_array_equal(got["keypoints_2d_17"], want["keypoints_2d_17"])
        assert [list(g) for g in got["groups"]] == [list(g) for g in want["groups"]] == [[0], [1], [2], [3, 4], [5], [6]]
        assert got["meta"] == want["meta"] == [{"rescaled_2d": rescale}] * 6
        assert got["paths"] == want["paths"] == [None, None, "frame.jpg", None, None, None]
    # what each form must give, written out here rather than through the code under test
    from posekit.runtime.lift import INPUT_JOINTS
    p, x = _poses(6), got["input_2d"].astype(np.float64)
    want_rows = np.stack([p[0], p[5], p[2], p[3], p[4], p[2]])[:, list(INPUT_JOINTS)]
    want_rows[0, runtime_input_index(3, 12)] = np.nan  # score 0: missing
    want_rows[5, runtime_input_index(13)] = np.nan  # MPII joint 15 (left wrist) scored 0
    coco = inputs[5]["keypoints"]
    coco_root, coco_thorax = 0.5 * (coco[11, :2] + coco[12, :2]), 0.5 * (coco[5, :2] + coco[6, :2])
    if not rescale:
        np.testing.assert_allclose(x[:6], want_rows, rtol=0, atol=1e-4)  # float32 pixels
        np.testing.assert_allclose(x[6, [0, 8]], [coco_root, coco_thorax], rtol=0, atol=1e-4)
        assert np.isnan(x[6, runtime_input_index(3)]).all()  # COCO right ankle (16) scored 0: no right foot
    else:  # every pose now has the training mean pose's centre and RMS size over the joints it has
        ref = runtime.mean_2d.reshape(16, 2)
        for row in (3, 4):
            np.testing.assert_allclose(x[row].mean(0), ref.mean(0), atol=1e-3)
            np.testing.assert_allclose(np.sqrt(((x[row] - x[row].mean(0)) ** 2).sum(1).mean()),
                                       np.sqrt(((ref - ref.mean(0)) ** 2).sum(1).mean()), rtol=1e-5)


def runtime_input_index(*h36m17_joints):
    """Rows of the 16 lifter inputs that hold these h36m17 joints."""
    from posekit.runtime.lift import INPUT_JOINTS
    return [INPUT_JOINTS.index(j) for j in h36m17_joints]


def _assert_same(got: Results, want: Results, atol: float):
    assert got.skeleton.name == want.skeleton.name == "h36m17"
    assert got.keypoints.shape == want.keypoints.shape and got.hypotheses.shape == want.hypotheses.shape
    for name in ("keypoints", "scores", "person_scores", "hypotheses", "hypothesis_weights"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), atol=atol, rtol=0, err_msg=name)
    np.testing.assert_array_equal(got.keypoints_2d, want.keypoints_2d)
    assert set(got.meta) == set(want.meta) and got.meta["rescaled_2d"] == want.meta["rescaled_2d"]
    np.testing.assert_allclose(got.meta["sigmas"], want.meta["sigmas"], atol=atol, rtol=0)
    assert got.path == want.path


@pytest.mark.parametrize("rescale", [False, True])
def test_lifted_results_equal_the_task_path(lifter, rescale):
    from posekit.cli.runtime_lift import RuntimeLiftPredictor
    _, path, onnx_predictor, torch_predictor = lifter
    inputs, skeleton = _inputs()
    runtime = RuntimeLiftPredictor(RuntimeLifter(path, threads=1))
    got = runtime(inputs, skeleton=skeleton, rescale=rescale)
    same_graph = onnx_predictor(inputs, skeleton=skeleton, rescale=rescale)  # the .onnx through the Task path
    pytorch = torch_predictor(inputs, skeleton=skeleton, rescale=rescale)  # the checkpoint through PyTorch
    assert len(got) == len(same_graph) == len(pytorch) == 6 and len(got[3]) == 2
    for g, w, t in zip(got, same_graph, pytorch):
        _assert_same(g, w, atol=1e-9)  # one graph, one input: the same numbers
        _assert_same(g, t, atol=1e-2)  # float32 graph vs PyTorch: mm within 0.01
    assert got[2].path == "frame.jpg" and got[0].keypoints_2d.shape == (1, 17, 2)
    assert np.isfinite(got[0].keypoints_2d[0, 9]).all()  # the neck filled for display


def _pose_files(folder):
    folder.mkdir()
    p = _poses(5)
    (folder / "poses.json").write_text(json.dumps({"skeleton": "h36m17", "poses": p[:3].tolist()}))
    mpii = [{"keypoints": p[3][[6, 2, 1, 0, 3, 4, 5, 7, 8, 10, 16, 15, 14, 11, 12, 13]].tolist(),
             "scores": [1.0] * 15 + [0.0], "skeleton": "mpii16"}]
    (folder / "mpii.json").write_text(json.dumps(mpii))
    (folder / "bare.json").write_text(json.dumps(p[4].tolist()))
    return [folder / "poses.json", folder / "mpii.json", folder / "bare.json"]


def _json_equal(a, b, atol):
    assert set(a) == set(b)
    for key in a:
        if key in ("keypoints", "scores", "person_scores", "hypotheses", "hypothesis_weights", "keypoints_2d"):
            np.testing.assert_allclose(np.asarray(a[key], float), np.asarray(b[key], float), atol=atol, err_msg=key)
        elif key == "meta":
            assert set(a[key]) == set(b[key])
            np.testing.assert_allclose(a[key]["sigmas"], b[key]["sigmas"], atol=atol)
            assert {k: v for k, v in a[key].items() if k != "sigmas"} == {k: v for k, v in b[key].items() if k != "sigmas"}
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("rescale", ["--no-rescale", "--rescale"])
def test_cli_lift_json_is_the_same_through_the_runtime_and_the_task_path(lifter, tmp_path, monkeypatch, capsys,
                                                                         rescale):
    checkpoint, path, _, _ = lifter
    files = _pose_files(tmp_path / "in")
    args = ["--json", *map(str, files), "--skeleton", "h36m17", rescale, "--threads", "1"]
    assert main(["lift", str(path), *args, "--out", str(tmp_path / "runtime")]) == 0
    assert "(onnxruntime)" in capsys.readouterr().out
    assert main(["lift", str(checkpoint), *args, "--out", str(tmp_path / "torch")]) == 0
    import posekit.cli.runtime_lift as runtime_lift
    taken = []
    real = runtime_lift.runtime_lifter_for
    monkeypatch.setattr(runtime_lift, "runtime_lifter_for", lambda *a, **k: taken.append(real(*a, **k)) or None)
    assert main(["lift", str(path), *args, "--out", str(tmp_path / "task")]) == 0
    assert taken and taken[0] is not None  # this run could have taken the numpy runtime; the Task path ran it
    for stem in ("poses", "mpii_0", "bare"):
        got = json.loads((tmp_path / "runtime" / f"{stem}.json").read_text())
        _json_equal(got, json.loads((tmp_path / "task" / f"{stem}.json").read_text()), atol=1e-9)
        _json_equal(got, json.loads((tmp_path / "torch" / f"{stem}.json").read_text()), atol=1e-2)
        assert (tmp_path / "runtime" / f"{stem}.png").stat().st_size > 0  # matplotlib is here: the figure too
    assert np.asarray(got["hypotheses"]).shape == (1, 5, 17, 3)
    assert json.loads((tmp_path / "runtime" / "poses.json").read_text())["meta"]["rescaled_2d"] == (rescale == "--rescale")


def test_cli_lift_onnx_runs_with_torch_onnx_scipy_matplotlib_imports_refused(lifter, tmp_path):
    _, path, _, _ = lifter
    files = _pose_files(tmp_path / "in")
    code = FORBID + textwrap.dedent(f"""
        from posekit.cli import main
        code = main(["lift", {str(path)!r}, "--json", {str(files[0])!r}, {str(files[1])!r}, "--out",
                     {str(tmp_path / "out")!r}, "--threads", "1"])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        assert not heavy, f"heavy modules imported: {{heavy}}"
        assert not [m for m in sys.modules if m.startswith(("posekit.engine", "posekit.families"))]
        sys.exit(code)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "2 lifted pose set(s)" in run.stdout and "(onnxruntime)" in run.stdout
    assert "matplotlib is not installed" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    data = json.loads((tmp_path / "out" / "poses.json").read_text())
    assert np.asarray(data["hypotheses"]).shape == (3, 5, 17, 3) and data["path"] == str(files[0])
    assert not (tmp_path / "out" / "poses.png").exists()  # no figure without matplotlib, and no crash


def test_cli_predict_onnx_lifter_runs_on_the_deploy_install(lifter, tmp_path):
    """`posekit predict lifter.onnx poses.json` takes the numpy lifter too, with torch, onnx, scipy and
    matplotlib absent (the JSON, a note instead of the 3-D figure), and writes what `posekit lift` writes."""
    _, path, _, _ = lifter
    files = _pose_files(tmp_path / "in")
    code = FORBID + textwrap.dedent(f"""
        from posekit.cli import main
        code = main(["predict", {str(path)!r}, {str(files[0])!r}, "--out", {str(tmp_path / "out")!r},
                     "--threads", "1"])
        assert "torch" not in sys.modules and "onnx" not in sys.modules
        sys.exit(code)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "(onnxruntime)" in run.stdout and "matplotlib is not installed" in run.stderr
    assert not (tmp_path / "out" / "poses.png").exists()
    assert main(["lift", str(path), "--json", str(files[0]), "--out", str(tmp_path / "lift"), "--threads", "1"]) == 0
    got = json.loads((tmp_path / "out" / "poses.json").read_text())
    want = json.loads((tmp_path / "lift" / "poses.json").read_text())
    for key in ("keypoints", "hypotheses", "hypothesis_weights", "keypoints_2d"):
        np.testing.assert_allclose(np.asarray(got[key], float), np.asarray(want[key], float), atol=1e-9)


def test_runtime_lift_modules_import_no_heavy_package():
    code = FORBID + "import posekit.runtime.lift, posekit.cli.runtime_lift, posekit.cli.lift\n"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def _tampered(src, dst, change):
    """A copy of the exported file with its decoded posekit metadata changed by `change(meta)`."""
    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    meta = {k[len("posekit."):]: (v if k[len("posekit."):] in ("version", "task", "kind", "source_sha256")
                                  else json.loads(v)) for k, v in props.items() if k.startswith("posekit.")}
    change(meta)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {f"posekit.{k}": v if isinstance(v, str) else json.dumps(v)
                                        for k, v in meta.items()})
    onnx.save(model, str(dst))
    return dst


def test_tampered_lifter_metadata_or_buffers_is_one_line_naming_the_file(lifter, tmp_path, capsys):
    _, path, _, _ = lifter

    def drop(name):
        return lambda m: m["buffers"].pop(name)

    def set_buffer(name, **entry):
        return lambda m: m["buffers"][name].update(entry)
    cases = {
        "statistics truncated": (set_buffer("codec.mean_2d", data=[1.0, 2.0]), r"buffers\['codec\.mean_2d'\] is not 32"),
        "statistics not numbers": (set_buffer("codec.mean_2d", data=["a"] * 32), r"buffers\['codec\.mean_2d'\]"),
        "statistics of another dtype": (set_buffer("codec.mean_2d", dtype="int8"), r"buffers\['codec\.mean_2d'\]"),
        "buffers not a mapping": (lambda m: m.__setitem__("buffers", {"codec.fitted": 3}), r"buffers\['codec\.fitted'\]"),
        "untrained (no fitted flag)": (drop("codec.fitted"), "no normalisation statistics"),
        "outputs renamed": (lambda m: m.__setitem__("outputs", ["hypotheses", "weights", "x"]), "graph's outputs"),
        "input size": (lambda m: m["input"].__setitem__("size", [17, 2]), r"posekit\.input is not the lifter's"),
        "skeleton": (lambda m: m["skeleton"].__setitem__("name", "coco17"), r"posekit\.skeleton"),
        "batch size": (lambda m: m["config"]["eval"].__setitem__("batch_size", 0), "eval.batch_size"),
    }
    poses = tmp_path / "poses.json"
    poses.write_text(json.dumps({"skeleton": "h36m17", "poses": _poses(1).tolist()}))
    for n, (what, (change, message)) in enumerate(cases.items()):
        bad = _tampered(path, tmp_path / f"bad{n}.onnx", change)
        with pytest.raises(ValueError, match=message) as e:
            RuntimeLifter(bad, threads=1)
        assert str(e.value).startswith(f"{bad}: ") and "\n" not in str(e.value), what
        assert main(["lift", str(bad), "--json", str(poses), "--out", str(tmp_path / "out")]) == 2, what
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"posekit lift: error: {bad}: ") and len(err.splitlines()) == 1, (what, err)
    not_json = _tampered(path, tmp_path / "notjson.onnx", lambda m: None)
    model = onnx.load(str(not_json))
    for p in model.metadata_props:
        if p.key == "posekit.buffers":
            p.value = p.value[:-10]
    onnx.save(model, str(not_json))
    assert main(["lift", str(not_json), "--json", str(poses), "--out", str(tmp_path / "out")]) == 2
    assert "posekit.buffers is not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing half-written


def test_lift_refuses_other_families_and_missing_files_in_one_line(tmp_path, capsys):
    from test_onnx_runtime_path import tiny_posekit_onnx
    other = tiny_posekit_onnx(tmp_path / "kp.onnx", {"posekit.task": "keypoints", "posekit.kind": "top-down",
                                                     "posekit.config": json.dumps({"task": "keypoints"}),
                                                     "posekit.input": json.dumps({"kind": "image"}),
                                                     "posekit.outputs": json.dumps(["y"])})
    lifter = RuntimeLifter.supports
    assert not lifter({"task": "keypoints", "input": {"kind": "image"}})
    poses = tmp_path / "poses.json"
    poses.write_text(json.dumps({"skeleton": "h36m17", "poses": _poses(1).tolist()}))
    code = FORBID + textwrap.dedent(f"""
        from posekit.cli import main
        code = main(["lift", {str(other)!r}, "--json", {str(poses)!r}, "--out", {str(tmp_path / "o")!r}])
        assert "torch" not in sys.modules
        sys.exit(code)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr[-2000:]  # refused without importing torch
    err = run.stderr.strip()
    assert err == f"posekit lift: error: {other}: a 'keypoints' checkpoint; `posekit lift` needs a gmh_mdn one"
    assert main(["lift", str(tmp_path / "missing.onnx"), "--json", str(poses), "--out", str(tmp_path / "o")]) == 2
    assert "ONNX file not found" in capsys.readouterr().err


def test_lifted_poses_keep_the_most_likely_hypothesis_per_person_and_regroup_people():
    from posekit.runtime.lift import lifted_poses
    rng = np.random.default_rng(1)
    hyps = rng.normal(size=(3, 4, 17, 3))
    weights = np.array([[0.1, 0.6, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1], [0.2, 0.2, 0.2, 0.4]])
    sigmas = rng.uniform(0.5, 1.0, (3, 4))
    shown = rng.normal(size=(3, 17, 2))
    shown[1, 9] = np.nan  # a missing neck is drawn halfway between thorax and head
    batch = {"groups": [range(0, 2), range(2, 3)], "keypoints_2d_17": shown, "images": [None, None],
             "paths": ["a.json", "b.json"], "meta": [{"rescaled_2d": True}, {"rescaled_2d": False}]}
    first, second = lifted_poses(hyps, weights, sigmas, batch)
    np.testing.assert_array_equal(first["keypoints"], hyps[[0, 1], [1, 0]])
    np.testing.assert_array_equal(first["scores"], np.repeat([[0.6], [0.7]], 17, axis=1))
    np.testing.assert_array_equal(second["hypotheses"], hyps[2:])
    np.testing.assert_array_equal(second["keypoints"], hyps[2:, 3])
    np.testing.assert_array_equal(first["person_scores"], [0.6, 0.7])
    np.testing.assert_allclose(first["keypoints_2d"][1, 9], 0.5 * (shown[1, 8] + shown[1, 10]))
    np.testing.assert_array_equal(first["keypoints_2d"][0], shown[0])
    assert first["path"] == "a.json" and second["meta"]["rescaled_2d"] is False
    assert second["meta"]["sigmas"] == sigmas[2:].tolist() and second["meta"]["units"].startswith("mm")
    assert np.isnan(shown[1, 9]).all()  # the caller's array is left as it was


def _tracked_jsonl(path):
    """Four frames of two COCO-17 people as `posekit predict --track` writes them: one person
    untracked (-1) in the first two frames, a joint not found (null) in one frame."""
    rng = np.random.default_rng(3)
    base = rng.uniform(200, 600, (2, 17, 2))
    with open(path, "w") as f:
        for t in range(4):
            kp = (base + 4.0 * t).tolist()
            kp[0][5] = [None, None]
            rec = {"skeleton": "coco17", "keypoints": kp, "scores": [[0.9] * 17, [0.8] * 17],
                   "track_ids": [3, -1 if t < 2 else 4], "frame": t, "time_s": t / 25, "image_size": [640, 480]}
            f.write(json.dumps(rec) + "\n")
    return path


def test_cli_lift_tracks_of_an_onnx_lifter_runs_without_heavy_imports_and_equals_the_checkpoint(lifter, tmp_path):
    checkpoint, path, _, _ = lifter
    tracks = _tracked_jsonl(tmp_path / "walk.jsonl")
    code = FORBID + textwrap.dedent(f"""
        from posekit.cli import main
        code = main(["lift", {str(path)!r}, "--tracks", {str(tracks)!r}, "--out", {str(tmp_path / "runtime")!r},
                     "--threads", "1"])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        assert not heavy, f"heavy modules imported: {{heavy}}"
        sys.exit(code)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "6 pose(s) of 2 track(s) over 4 frame(s)" in run.stdout and "onnxruntime)" in run.stdout
    assert "side-by-side video" in run.stderr  # no matplotlib: the JSON-lines files, no mp4
    assert sorted(p.name for p in (tmp_path / "runtime").iterdir()) == ["walk_track3.3d.jsonl", "walk_track4.3d.jsonl"]
    assert main(["lift", str(checkpoint), "--tracks", str(tracks), "--out", str(tmp_path / "torch"), "--threads", "1"]) == 0
    assert sorted(p.name for p in (tmp_path / "torch").iterdir()) == ["walk_3d.mp4", "walk_track3.3d.jsonl",
                                                                      "walk_track4.3d.jsonl"]
    for name in ("walk_track3.3d.jsonl", "walk_track4.3d.jsonl"):
        got = [json.loads(x) for x in (tmp_path / "runtime" / name).read_text().splitlines()]
        want = [json.loads(x) for x in (tmp_path / "torch" / name).read_text().splitlines()]
        assert [g["frame"] for g in got] == [w["frame"] for w in want] == ([0, 1, 2, 3] if name.startswith("walk_track3") else [2, 3])
        for g, w in zip(got, want):
            assert g["track_id"] == w["track_id"] and g["skeleton"] == w["skeleton"] == "h36m17"
            for key in ("keypoints", "hypotheses", "hypothesis_weights"):
                np.testing.assert_allclose(np.asarray(g[key], float), np.asarray(w[key], float), atol=1e-2)


def test_cli_lift_image_with_an_onnx_hourglass_runs_without_heavy_imports_and_equals_the_task_path(lifter, tmp_path,
                                                                                                 tmp_path_factory):
    import cv2

    from posekit.engine.predictor import Predictor
    _, path, onnx_predictor, _ = lifter
    hourglass = smoke_checkpoint("hourglass", tmp_path_factory.mktemp("hg"), "data.input_size=64",
                                 "data.heatmap_size=16", "data.synthetic_image_size=96", "eval.flip_test=false",
                                 "model.args.n_stacks=1", "model.args.n_feats=16")
    hg_onnx = Predictor(hourglass, backend="onnxruntime").onnx_path
    image = np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    cv2.circle(image, (45, 40), 18, (250, 240, 230), -1)
    cv2.imwrite(str(tmp_path / "person.png"), image[..., ::-1])
    code = FORBID + textwrap.dedent(f"""
        from posekit.cli import main
        code = main(["lift", {str(path)!r}, "--image", {str(tmp_path / "person.png")!r}, "--hourglass",
                     {str(hg_onnx)!r}, "--box", "10,5,60,100", "--out", {str(tmp_path / "out")!r}, "--threads", "1"])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        assert not heavy, f"heavy modules imported: {{heavy}}"
        sys.exit(code)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads((tmp_path / "out" / "person_3d.json").read_text())
    det = Predictor(hg_onnx)(image, boxes=[10.0, 5.0, 60.0, 100.0])  # both files through the Task path
    det.image, det.path = image, str(tmp_path / "person.png")
    want = onnx_predictor([det], rescale=True)[0]
    assert got["path"] == want.path and got["meta"]["rescaled_2d"] is True
    np.testing.assert_allclose(np.asarray(got["keypoints_2d"], float), want.keypoints_2d, atol=1e-4)
    np.testing.assert_allclose(np.asarray(got["hypotheses"], float), want.hypotheses, atol=1e-2)
    np.testing.assert_allclose(np.asarray(got["hypothesis_weights"], float), want.hypothesis_weights, atol=1e-5)
