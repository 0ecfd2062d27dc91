"""Human3.6M loaders and cameras on the shared real samples (skipped when they are absent)."""
from __future__ import annotations

import shutil
import warnings

import h5py
import numpy as np
import pytest

from posekit.data.cameras import CAMERA_IDS, load_cameras_h5, load_cameras_json, project_points
from posekit.data.formats.h36m import (H36MFormatError, action_of, load_baseline, load_videopose3d, read_detections,
                                       read_world_poses, split_tail)
from posekit.data.io import realdata_root
from posekit.data.lifting import LiftingDataset
from posekit.engine.recipes import load_config
from posekit.families import build_task
from posekit.skeletons.builtin import H36M32_TO_17

H36M = realdata_root() / "h36m"
BASE = H36M / "baseline"
MMPOSE = H36M / "mmpose"

pytestmark = pytest.mark.skipif(not (BASE / "cameras.h5").is_file() or not (MMPOSE / "cameras.json").is_file(),
                                reason="shared Human3.6M samples not available (set POSEKIT_REALDATA)")


@pytest.fixture(scope="module")
def mmpose_frame():
    return np.load(MMPOSE / "test_h36m_body3d.npz")


@pytest.fixture(scope="module")
def s1_world():
    return read_world_poses(BASE / "S1" / "MyPoses" / "3D_positions" / "Directions 1.h5")[:, list(H36M32_TO_17)]


def test_cameras_h5_and_json_agree():
    h5, js = load_cameras_h5(BASE / "cameras.h5"), load_cameras_json(MMPOSE / "cameras.json")
    assert ("S1", "54138969") in h5 and ("S11", "60457274") in h5
    for key in [("S1", "54138969"), ("S9", "58860488"), ("S11", "60457274")]:
        a, b = h5[key], js[key]
        np.testing.assert_allclose(a.R, b.R, atol=1e-9)
        np.testing.assert_allclose(a.T, b.T, atol=1e-6)  # json metres -> mm
        for field in ("f", "c", "k", "p"):
            np.testing.assert_allclose(getattr(a, field), getattr(b, field), atol=1e-9)


@pytest.mark.parametrize("loader,path", [(load_cameras_h5, BASE / "cameras.h5"),
                                         (load_cameras_json, MMPOSE / "cameras.json")])
def test_camera_frame_reproduces_mmpose_ground_truth(loader, path, mmpose_frame, s1_world):
    """S1 Directions 1 frame 0, camera 54138969 is mmpose's first sample: camera-frame 3-D in metres."""
    cam = loader(path)[("S1", "54138969")]
    assert "S1_Directions_1.54138969_000001" in str(mmpose_frame["imgname"][0])
    x_cam = cam.world_to_camera(s1_world[0])
    assert np.abs(x_cam / 1000.0 - mmpose_frame["S"][0, :, :3]).max() < 1e-6
    np.testing.assert_allclose(cam.camera_to_world(x_cam), s1_world[0], atol=1e-9)
    # distorted projection equals mmpose's 2-D ground truth (from D2_Positions)
    uv = cam.project(x_cam)
    assert np.abs(uv - mmpose_frame["part"][0, :, :2]).max() < 0.01


def test_projection_is_within_a_few_pixels_of_stacked_hourglass(s1_world):
    cams = load_cameras_h5(BASE / "cameras.h5")
    for cam_id in CAMERA_IDS:
        det = read_detections(BASE / "S1" / "StackedHourglass" / f"Directions_1.{cam_id}.h5")
        uv = cams[("S1", cam_id)].project_world(s1_world)
        mpii_to_h36m = [6, 2, 1, 0, 3, 4, 5, 7, 8, 9, 13, 14, 15, 12, 11, 10]
        h36m_without_neck = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16]
        dist = np.linalg.norm(det[:, mpii_to_h36m] - uv[:, h36m_without_neck], axis=-1)
        assert np.median(dist) < 12.0, cam_id


def test_distortion_terms_matter():
    cam = load_cameras_h5(BASE / "cameras.h5")[("S1", "54138969")]
    pts = np.array([[800.0, -600.0, 3000.0]])
    plain = project_points(pts, cam.f, cam.c)
    assert np.linalg.norm(cam.project(pts) - plain) > 0.5
    with pytest.raises(ValueError, match="behind the camera"):
        project_points(np.array([[0.0, 0.0, -1.0]]), cam.f, cam.c)


def test_baseline_loader_on_shared_files():
    seqs = load_baseline(BASE, ["S1", 9], input_2d="detections")
    assert [(s.subject, s.camera, len(s)) for s in seqs] == \
        [("S1", c, 1383) for c in CAMERA_IDS] + [("S9", c, 2356) for c in CAMERA_IDS]
    assert all(s.action == "Directions" and s.source_2d == "detections" for s in seqs)
    assert np.all(np.isnan(seqs[0].poses_2d[:, 9]))  # neck_base has no Stacked Hourglass joint
    ds = LiftingDataset.from_sequences(seqs)
    assert len(ds) == 4 * (1383 + 2356) and ds.action_names == ["Directions"]
    item = ds[0]
    assert item["input_2d"].shape == (16, 2) and item["target_3d"].shape == (16, 3) and not item["mask"].any()
    # targets are root-relative camera-frame mm: bone lengths are human (thigh ~443 mm for S1)
    thigh = np.linalg.norm(ds.targets[:1383, 1] - ds.targets[:1383, 0], axis=-1)
    assert abs(thigh.mean() - 442.9) < 1.0 and thigh.std() < 1e-3
    gt = load_baseline(BASE, ["S9"], input_2d="gt", actions=["Directions"])
    assert len(gt) == 4 and np.all(np.isfinite(gt[0].poses_2d))


def test_validation_split_comes_from_training_sequences_only():
    seqs = load_baseline(BASE, ["S1"], input_2d="gt")
    train, val = split_tail(seqs, 0.1, gap=25)
    for t, v in zip(train, val):
        assert len(v) == 138 and len(t) == 1383 - 138 - 25
        assert t.frames.max() + 25 < v.frames.min()
        assert v.subject == "S1"


def _copy_layout(tmp_path, detections="StackedHourglass", drop_camera=None):
    root = tmp_path / "h36m"
    shutil.copytree(BASE / "S1", root / "S1")
    shutil.copy(BASE / "cameras.h5", root / "cameras.h5")
    if detections != "StackedHourglass":
        (root / "S1" / "StackedHourglass").rename(root / "S1" / detections)
    if drop_camera:
        (root / "S1" / detections / f"Directions_1.{drop_camera}.h5").unlink()
    return root


def test_detections_folder_is_configurable_and_a_missing_camera_is_tolerated(tmp_path):
    root = _copy_layout(tmp_path, detections="StackedHourglassFineTuned240", drop_camera="54138969")
    with pytest.raises(H36MFormatError, match="detections folder not found"):
        load_baseline(root, ["S1"])
    with pytest.warns(UserWarning, match="no detections for camera 54138969"):
        seqs = load_baseline(root, ["S1"], detections="StackedHourglassFineTuned240")
    assert [s.camera for s in seqs] == list(CAMERA_IDS[1:])
    # the camera file falls back to mmpose's JSON when cameras.h5 is absent
    (root / "cameras.h5").unlink()
    shutil.copy(MMPOSE / "cameras.json", root / "cameras.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = load_baseline(root, ["S1"], detections="StackedHourglassFineTuned240")
    np.testing.assert_allclose(again[0].poses_3d, seqs[0].poses_3d, atol=1e-6)
    (root / "cameras.json").unlink()
    with pytest.raises(H36MFormatError, match="no camera file"):
        load_baseline(root, ["S1"], detections="StackedHourglassFineTuned240")


def test_corrupt_or_missing_h5_is_a_clear_error(tmp_path):
    root = _copy_layout(tmp_path)
    pose_file = root / "S1" / "MyPoses" / "3D_positions" / "Directions 1.h5"
    pose_file.write_bytes(b"this is not an hdf5 file")
    with pytest.raises(H36MFormatError, match="Directions 1.h5: not a readable HDF5 file"):
        load_baseline(root, ["S1"])
    with h5py.File(pose_file, "w") as f:
        f["positions"] = np.zeros((96, 3))
    with pytest.raises(H36MFormatError, match="missing dataset '3D_positions'"):
        load_baseline(root, ["S1"])
    with h5py.File(pose_file, "w") as f:
        f["3D_positions"] = np.zeros((95, 3))
    with pytest.raises(H36MFormatError, match=r"shape \(95, 3\), expected \(96, N\)"):
        load_baseline(root, ["S1"])
    det = root / "S1" / "StackedHourglass" / "Directions_1.55011271.h5"
    with h5py.File(det, "w") as f:
        f["poses"] = np.zeros((10, 17, 2))
    with pytest.raises(H36MFormatError, match=r"Directions_1.55011271.h5: dataset 'poses' has shape"):
        read_detections(det)
    with pytest.raises(H36MFormatError, match="file not found"):
        read_world_poses(root / "S1" / "MyPoses" / "3D_positions" / "Nope.h5")
    with pytest.raises(H36MFormatError, match="S5: folder not found"):
        load_baseline(root, ["S5"])
    (root / "cameras.h5").write_bytes(b"broken")
    with pytest.raises(ValueError, match="cameras.h5: not a readable HDF5 camera file"):
        load_baseline(root, ["S1"])


def test_videopose3d_npz_layout_matches_baseline(tmp_path):
    world = read_world_poses(BASE / "S1" / "MyPoses" / "3D_positions" / "Directions 1.h5") / 1000.0
    det = [read_detections(BASE / "S1" / "StackedHourglass" / f"Directions_1.{c}.h5") for c in CAMERA_IDS]
    from posekit.data.formats.h36m import detections_to_h36m17
    det17 = [np.nan_to_num(detections_to_h36m17(d)) for d in det]
    np.savez(tmp_path / "data_3d_h36m.npz", positions_3d={"S1": {"Directions 1": world}})
    np.savez(tmp_path / "data_2d_h36m_sh.npz", positions_2d={"S1": {"Directions 1": det17}},
             metadata={"layout_name": "h36m", "num_joints": 17})
    with pytest.raises(H36MFormatError, match="allow_pickle"):
        load_videopose3d(tmp_path / "data_3d_h36m.npz", BASE / "cameras.h5", ["S1"])
    vp = load_videopose3d(tmp_path / "data_3d_h36m.npz", BASE / "cameras.h5", ["S1"],
                          npz_2d=tmp_path / "data_2d_h36m_sh.npz", allow_pickle=True)
    ref = load_baseline(BASE, ["S1"])
    assert len(vp) == len(ref) == 4
    for a, b in zip(vp, ref):
        np.testing.assert_allclose(a.poses_3d, b.poses_3d, atol=1e-6)
        keep = [j for j in range(17) if j != 9]
        np.testing.assert_allclose(a.poses_2d[:, keep], b.poses_2d[:, keep])
    with pytest.raises(H36MFormatError, match="no subject S9"):
        load_videopose3d(tmp_path / "data_3d_h36m.npz", BASE / "cameras.h5", ["S9"], allow_pickle=True)
    # through the task, selected by the recipe
    cfg = load_config("configs/h36m_gmh_mdn.yaml", ["data.dataset=videopose3d", f"data.root={tmp_path}",
                                                    f"data.cameras={BASE / 'cameras.h5'}", "data.allow_pickle=true",
                                                    "data.npz_2d=data_2d_h36m_sh.npz", "data.train_subjects=[S1]"])
    datasets = build_task(cfg).build_datasets()
    train, val = datasets["train"], datasets["val"]
    assert len(train) + len(val) == 4 * (1383 - 25) and set(train.meta["camera"]) == set(CAMERA_IDS)


def test_task_builds_real_splits_without_touching_test_for_selection():
    cfg = load_config("configs/h36m_gmh_mdn.yaml", [f"data.root={BASE}", "data.detections=StackedHourglass",
                                                    "data.train_subjects=[S1]", "data.test_subjects=[S9]"])
    datasets = build_task(cfg).build_datasets()
    assert set(datasets) == {"train", "val"}
    train, val = datasets["train"], datasets["val"]
    assert set(train.meta["subject"]) == {"S1"} and set(val.meta["subject"]) == {"S1"}
    assert len(train) + len(val) < 4 * 1383
    cfg_test = load_config("configs/h36m_gmh_mdn.yaml", [f"data.root={BASE}", "data.detections=StackedHourglass",
                                                         "data.train_subjects=[S1]", "data.test_subjects=[S9]",
                                                         "data.eval_split=test"])
    task_test = build_task(cfg_test)
    with pytest.warns(UserWarning, match="final evaluation only"):
        test = task_test.build_datasets()["val"]
    assert set(test.meta["subject"]) == {"S9"} and len(test) == 4 * 2356
    # `posekit eval` asks for the evaluated split only: the test subjects, no training set loaded
    with pytest.warns(UserWarning, match="final evaluation only"):
        only = task_test.build_datasets(("val",))
    assert set(only) == {"val"}
    assert set(only["val"].meta["subject"]) == {"S9"} and len(only["val"]) == 4 * 2356


def test_action_names():
    assert action_of("Directions 1") == "Directions"
    assert action_of("TakingPhoto") == "Photo" and action_of("WalkingDog_1") == "WalkDog"
    assert action_of("SittingDown 2") == "SittingDown"
