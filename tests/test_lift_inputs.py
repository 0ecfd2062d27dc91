"""`posekit lift` inputs: the 2-D layout is named, never guessed; COCO-17 and MPII-16 map to the
lifter's H36M order as declared once in posekit/skeletons/mappings.py; non-JSON files are named."""
from __future__ import annotations

import json

import numpy as np
import pytest

from posekit.cli import main
from posekit.data.lifting import as_h36m17, lift_layouts
from posekit.skeletons.builtin import H36M17_LIFT_INPUTS
from posekit.skeletons.mappings import map_keypoints


def _pts(k):
    """Joint j at (10 j, 100 + 10 j): every joint distinct, every mapped value computable by hand."""
    return np.stack([10.0 * np.arange(k), 100.0 + 10.0 * np.arange(k)], axis=1)


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_coco17_maps_to_h36m17_with_computed_pelvis_spine_thorax_and_head():
    coco = _pts(17)
    h = map_keypoints(coco, "coco17", "h36m17", has_visibility=False)
    x = lambda *idx: np.mean([coco[i] for i in idx], axis=0)  # noqa: E731
    np.testing.assert_allclose(h[0], x(11, 12))  # root = hip midpoint
    np.testing.assert_allclose(h[0], [115.0, 215.0])
    np.testing.assert_allclose(h[8], [55.0, 155.0])  # thorax = shoulder midpoint (5, 6)
    np.testing.assert_allclose(h[7], [85.0, 185.0])  # spine = midpoint of root and thorax
    np.testing.assert_allclose(h[9], coco[0])  # neck_base = nose (MMPose's choice)
    np.testing.assert_allclose(h[10], [15.0, 115.0])  # head = eye midpoint (1, 2)
    # limbs: H36M right/left hip, knee, foot, then left/right shoulder, elbow, wrist
    for dst, src in zip((1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 15, 16), (12, 14, 16, 11, 13, 15, 5, 7, 9, 6, 8, 10)):
        np.testing.assert_allclose(h[dst], coco[src])


def test_mpii16_maps_to_h36m17_and_leaves_neck_base_missing():
    mpii = _pts(16)
    h = map_keypoints(mpii, "mpii16", "h36m17", has_visibility=False)
    # root = pelvis(6), r hip/knee/ankle = 2/1/0, l = 3/4/5, spine = thorax(7), thorax = upper_neck(8),
    # head = head_top(9), l shoulder/elbow/wrist = 13/14/15, r = 12/11/10
    for dst, src in enumerate((6, 2, 1, 0, 3, 4, 5, 7, 8, None, 9, 13, 14, 15, 12, 11, 10)):
        if src is None:
            assert np.all(np.isnan(h[dst]))
        else:
            np.testing.assert_allclose(h[dst], mpii[src])


def test_lifter_input_reads_named_coco17_and_refuses_a_16_joint_pose_called_h36m17():
    coco = _pts(17)
    (h,) = as_h36m17(coco, None, "coco17")
    np.testing.assert_allclose(h, map_keypoints(coco, "coco17", "h36m17", has_visibility=False))
    assert "coco17" in lift_layouts() and "mpii16" in lift_layouts()
    with pytest.raises(ValueError, match="16 joints do not match skeleton 'h36m17'"):
        as_h36m17(_pts(16), None, "h36m17")  # 16 joints were silently read as h36m16 before
    (h16,) = as_h36m17(_pts(16), None, "h36m16")
    np.testing.assert_allclose(h16[list(H36M17_LIFT_INPUTS)], _pts(16))


def test_lift_refuses_a_bare_16_joint_list_without_a_layout(tmp_path, capsys):
    (tmp_path / "pose.json").write_text(json.dumps(_pts(16).tolist()))
    assert main(["lift", str(tmp_path / "none.pt"), "--json", str(tmp_path / "pose.json"),
                 "--out", str(tmp_path / "out")]) == 2
    line = _error_line(capsys)
    assert line.startswith("posekit lift: error: ") and line.count("posekit lift") == 1, line
    assert "--skeleton" in line and "pose.json" in line and "mpii16" in line, line
    assert not (tmp_path / "out").exists()  # refused before loading a model or writing anything


def test_lift_refuses_a_layout_with_no_mapping_listing_the_known_ones(tmp_path, capsys):
    (tmp_path / "dog.json").write_text(json.dumps({"skeleton": "stanford_extra24", "poses": [_pts(24).tolist()]}))
    assert main(["lift", str(tmp_path / "none.pt"), "--json", str(tmp_path / "dog.json"),
                 "--out", str(tmp_path / "out")]) == 2
    line = _error_line(capsys)
    assert "stanford_extra24" in line and "known layouts: h36m17, h36m16, coco17, " in line, line


def test_lift_refuses_a_joint_count_that_does_not_match_the_named_layout(tmp_path, capsys):
    (tmp_path / "p.json").write_text(json.dumps({"skeleton": "coco17", "poses": [_pts(16).tolist()]}))
    assert main(["lift", str(tmp_path / "none.pt"), "--json", str(tmp_path / "p.json"),
                 "--out", str(tmp_path / "out")]) == 2
    assert "16 joints, but coco17 has 17" in _error_line(capsys)


def test_lift_given_a_jpeg_says_it_is_not_a_json_file_of_poses(tmp_path, capsys):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(range(256)) * 4)
    assert main(["lift", str(tmp_path / "none.pt"), "--json", str(photo), "--out", str(tmp_path / "out")]) == 2
    line = _error_line(capsys)
    assert f"{photo}: not a JSON file of 2-D poses" in line and "--image" in line, line
    assert "codec" not in line and line.count("posekit lift") == 1, line


def test_lift_errors_name_the_verb_once(tmp_path, capsys):
    assert main(["lift", str(tmp_path / "none.pt"), "--out", str(tmp_path / "out")]) == 2
    line = _error_line(capsys)
    assert line == "posekit lift: error: give --json FILE(S) or --image FILE(S)", line


def test_lift_image_without_hourglass_names_the_verb_once(tmp_path, capsys, monkeypatch):
    """The --hourglass check comes after the lifter loads; a stand-in gmh_mdn task is enough to reach it."""
    import posekit.engine.predictor as predictor

    class Task:
        name = "gmh_mdn"
    monkeypatch.setattr(predictor, "load_for_inference", lambda *a, **k: (Task(), None, None))
    assert main(["lift", "x.pt", "--image", str(tmp_path / "a.png"), "--out", str(tmp_path / "out")]) == 2
    line = _error_line(capsys)
    assert line.startswith("posekit lift: error: --image needs --hourglass") and line.count("posekit lift") == 1


def test_lift_of_coco17_and_mpii16_json_equals_lift_of_the_same_pose_in_h36m_order(tmp_path):
    """End to end through a (1-step) trained lifter: the named layout is mapped, not misread."""
    pytest.importorskip("posekit.engine.trainer")
    from posekit.data.synthetic.h36m import synthetic_h36m
    from posekit.engine.recipes import load_config
    from posekit.engine.trainer import train
    cfg = load_config("configs/h36m_synthetic.yaml", [
        "model.args.width=32", "data.synthetic_train=64", "data.synthetic_val=32", f"out_dir={tmp_path}", "name=t",
        "train.max_steps=1", "train.batch_size=32", "train.progress=false", "train.tensorboard=false"])
    ckpt = train(cfg) / "last.pt"
    pose17 = synthetic_h36m(1, seed=3).meta["poses_2d_17"][0].astype(float)
    mpii = np.zeros((16, 2))
    mpii[[6, 2, 1, 0, 3, 4, 5, 7, 8, 9, 13, 14, 15, 12, 11, 10]] = pose17[list(H36M17_LIFT_INPUTS)]
    coco = _pts(17) * 2.0
    files = {"h36m": {"skeleton": "h36m17", "poses": [pose17.tolist()]},
             "mpii": {"skeleton": "mpii16", "poses": [mpii.tolist()]},
             "coco": coco.tolist(),  # bare: its layout comes from --skeleton
             "coco_as_h36m": {"skeleton": "h36m17",
                              "poses": [map_keypoints(coco, "coco17", "h36m17", has_visibility=False).tolist()]}}
    for name, body in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(body))
    out = tmp_path / "out"
    for name in ("h36m", "mpii", "coco_as_h36m"):
        assert main(["lift", str(ckpt), "--json", str(tmp_path / f"{name}.json"), "--out", str(out)]) == 0
    assert main(["lift", str(ckpt), "--json", str(tmp_path / "coco.json"), "--skeleton", "coco17",
                 "--out", str(out)]) == 0
    hyp = {n: np.asarray(json.loads((out / f"{n}.json").read_text())["hypotheses"]) for n in files}
    np.testing.assert_allclose(hyp["mpii"], hyp["h36m"], atol=1e-4)
    np.testing.assert_allclose(hyp["coco"], hyp["coco_as_h36m"], atol=1e-4)


def test_predict_with_a_lifter_never_guesses_a_bare_pose_layout(tmp_path, tmp_path_factory, capsys):
    """`posekit predict LIFTER poses.json`: a record with no skeleton and no --skeleton is one line naming
    --skeleton, nothing written; naming the layout (coco17 too) predicts."""
    import json as _json
    from conftest import smoke_checkpoint
    ckpt = smoke_checkpoint("gmh_mdn", tmp_path_factory.mktemp("lifter"))
    pose = np.c_[np.linspace(100, 200, 17), np.linspace(50, 300, 17)]
    (tmp_path / "bare.json").write_text(_json.dumps({"keypoints": pose.tolist()}))
    assert main(["predict", str(ckpt), str(tmp_path / "bare.json"), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--skeleton" in err[0] and "coco17" in err[0]
    assert not list((tmp_path / "a").glob("*.json"))
    assert main(["predict", str(ckpt), str(tmp_path / "bare.json"), "--skeleton", "coco17",
                 "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "bare.json").is_file()
