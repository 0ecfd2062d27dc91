"""MPII loaders (JSON, pose-hg-train h5, official .mat) against each other, bad records, the
top-down pipeline and the synthetic figures."""
import json

import h5py
import numpy as np
import pytest
import torch

from posekit.codecs.heatmap import HeatmapCodec
from posekit.data.formats.mpii import (MPIIFormatError, MPIIImageSource, attach_head_sizes, load_mpii, load_mpii_h5,
                                       load_mpii_json, load_mpii_mat)
from posekit.data.sample import Sample
from posekit.data.synthetic.mpii import SyntheticMPII
from posekit.data.topdown import CropRule, TopDownAugment, TopDownDataset
from posekit.data.transforms import affine_points, crop_affine, invert_affine
from posekit.skeletons import get_skeleton

SK = get_skeleton("mpii16")


@pytest.fixture(scope="module")
def mpii(realdata):
    root = realdata / "mpii"
    if not (root / "mmpose" / "test_mpii.json").is_file():
        pytest.skip("MPII samples not present")
    return root


@pytest.fixture(scope="module")
def shared(mpii):
    return load_mpii_json(mpii / "mmpose" / "test_mpii.json"), load_mpii_h5(mpii / "pose_hg_train" / "valid.h5")


def _assert_same_person(a, b, joint_tol=1.0):
    assert a.image == b.image
    np.testing.assert_allclose(a.center, b.center, atol=1e-3)
    assert a.scale == pytest.approx(b.scale, abs=1e-4)
    assert a.annotated.tolist() == b.annotated.tolist()
    assert np.abs(a.joints - b.joints)[a.annotated].max() <= joint_tol


def test_json_and_h5_agree_on_the_five_shared_records(shared):
    js, h5 = shared
    assert len(js) == 5 and len(h5) == 2958
    for a, b in zip(js, h5[:5]):
        _assert_same_person(a, b)  # h5 parts are integer-truncated: <= 1 px
    # conventions: JSON joints_vis is "annotated", (-1, -1) missing; h5 (0, 0) missing
    assert js[2].annotated.tolist() == h5[2].annotated.tolist()
    assert not js[2].annotated[0] and not js[2].annotated[5]
    # MPII's occlusion flag only comes from the h5: record 2's r_wrist/r_elbow are annotated but occluded
    assert np.isnan(js[2].is_visible).all()
    assert h5[2].annotated[10] and h5[2].annotated[11] and h5[2].is_visible[10] == 0 and h5[2].is_visible[11] == 0
    # 0-based internal coordinates: JSON (1-based) r_ankle of record 0 is (804, 711)
    np.testing.assert_allclose(js[0].joints[0], [803.0, 710.0])
    # adjusted box: centre y + 15 * scale, scale x 1.25 (record 0: objpos (966, 340), scale 4.718488)
    np.testing.assert_allclose(js[0].center, [965.0, 339.0 + 15 * 4.718488])
    assert js[0].scale == pytest.approx(4.718488 * 1.25)
    assert h5[0].head_size == pytest.approx(117.96219733456985)
    assert (h5[0].index, h5[0].person) == (6, 0)


def test_attach_head_sizes(shared):
    js, h5 = shared
    js = [r for r in js]  # records are mutated in place
    attach_head_sizes(js, h5)
    assert [r.head_size for r in js] == pytest.approx([r.head_size for r in h5[:5]])
    assert js[2].is_visible[10] == 0


def _struct_array(rows, fields):
    arr = np.zeros((len(rows),), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        for f in fields:
            arr[i][f] = row.get(f, np.zeros((0, 0)))
    return arr


def _write_mat(path, h5_records, *, break_point=False):
    """An official-layout .mat (RELEASE.annolist / img_train) holding the shared validation people,
    each image with an extra unannotated person and one training image, plus a test image."""
    import scipy.io

    annolist, img_train = [], []
    for k, rec in enumerate(h5_records):
        # back to the .mat convention: 1-based, raw objpos and MPII scale
        person_scale = rec.scale / 1.25
        objpos = rec.center + 1.0
        objpos[1] -= 15 * person_scale
        pts = []
        for j in np.flatnonzero(rec.annotated):
            vis = rec.is_visible[j]
            pts.append({"id": int(j), "x": float(rec.joints[j, 0] + 1), "y": float(rec.joints[j, 1] + 1),
                        # the real file mixes numbers, strings and empty arrays here
                        "is_visible": ("1" if vis else "0") if j % 3 == 0 else (np.zeros((0, 0)) if j % 3 == 1 else int(vis))})
        if break_point and k == 1:
            pts[0]["id"] = 42
        side = rec.head_size / 0.6 / np.sqrt(2)  # a square head box with the right diagonal
        cx, cy = rec.joints[9] + 1
        person = {"x1": cx - side / 2, "y1": cy - side / 2, "x2": cx + side / 2, "y2": cy + side / 2,
                  "objpos": {"x": objpos[0], "y": objpos[1]}, "scale": person_scale,
                  "annopoints": {"point": _struct_array(pts, ("id", "x", "y", "is_visible"))}}
        extra = {"objpos": {"x": 10.0, "y": 10.0}, "scale": 1.0,  # training person, no head box needed
                 "x1": 0.0, "y1": 0.0, "x2": 20.0, "y2": 20.0,
                 "annopoints": {"point": {"id": 9, "x": 11.0, "y": 5.0, "is_visible": 1}}}
        rects = _struct_array([person, extra], ("x1", "y1", "x2", "y2", "objpos", "scale", "annopoints"))
        annolist.append({"image": {"name": rec.image}, "annorect": rects})
        img_train.append(1)
    annolist.append({"image": {"name": "test_image.jpg"},
                     "annorect": _struct_array([{"objpos": {"x": 50.0, "y": 60.0}, "scale": 2.0}], ("objpos", "scale"))})
    img_train.append(0)
    release = {"annolist": _struct_array(annolist, ("image", "annorect")), "img_train": np.array(img_train)}
    scipy.io.savemat(str(path), {"RELEASE": release})


def test_official_mat_matches_h5_with_standard_split(shared, tmp_path):
    _, h5 = shared
    path = tmp_path / "mpii_human_pose_v1_u12_1.mat"
    _write_mat(path, h5[:5])
    pairs = np.array([[k, 0] for k in range(5)])  # annolist index k, person 0
    valid = load_mpii_mat(path, split="valid", valid_pairs=pairs)
    assert len(valid) == 5
    for a, b in zip(valid, h5[:5]):
        _assert_same_person(a, b, joint_tol=1e-6)
        assert a.head_size == pytest.approx(b.head_size)
        known = a.annotated & (np.arange(16) % 3 != 1)  # j % 3 == 1 was written as an empty array
        np.testing.assert_array_equal(a.is_visible[known], b.is_visible[known])
        assert np.isnan(a.is_visible[~known]).all()  # unknown stays unknown, never a guessed 0/1
        assert (a.index, a.person) == (h5.index(b), 0)
    train = load_mpii_mat(path, split="train", valid_pairs=pairs)
    assert len(train) == 5 and all(r.person == 1 for r in train)
    assert len(load_mpii_mat(path, split="trainval")) == 10
    test = load_mpii_mat(path, split="test")
    assert len(test) == 1 and not test[0].annotated.any()
    np.testing.assert_allclose(test[0].center, [49.0, 59.0 + 30.0])
    with pytest.raises(ValueError, match="valid_pairs"):
        load_mpii_mat(path, split="valid")
    assert len(load_mpii(path, split="valid", valid_pairs=pairs)) == 5


def test_bad_records_name_file_and_record(tmp_path, shared):
    good = {"image": "a.jpg", "center": [10, 20], "scale": 1.0, "joints": [[1, 1]] * 16, "joints_vis": [1] * 16}
    cases = [
        ({k: v for k, v in good.items() if k != "scale"}, "record 1: missing field 'scale'"),
        ({**good, "scale": -2}, "record 1: field 'scale' must be positive"),
        ({**good, "joints": [[1, 1]] * 15}, "record 1: field 'joints' must be 16"),
        ({**good, "joints": [[-1, -1]] + [[1, 1]] * 15}, "record 1: joint 0 is flagged annotated"),
        ({**good, "center": "middle"}, "record 1: field 'center'"),
        ({**good, "joints_vis": [2] * 16}, "record 1: field 'joints_vis'"),
    ]
    for bad, message in cases:
        path = tmp_path / "bad.json"
        path.write_text(json.dumps([good, bad]))
        with pytest.raises(MPIIFormatError) as e:
            load_mpii_json(path)
        assert str(path) in str(e.value) and message in str(e.value)
    path.write_text("{not json")
    with pytest.raises(MPIIFormatError, match="invalid JSON"):
        load_mpii_json(path)

    h5_path = tmp_path / "bad.h5"
    with h5py.File(h5_path, "w") as f:
        f["imgname"] = np.array([b"a.jpg", b"b.jpg"])
        f["center"] = np.array([[1.0, 2.0], [3.0, 4.0]])
        f["scale"] = np.array([1.0, 0.0])
        f["part"] = np.ones((2, 16, 2))
    with pytest.raises(MPIIFormatError, match=r"bad.h5: record 1 \(b.jpg\): field 'scale' must be positive"):
        load_mpii_h5(h5_path)
    with h5py.File(h5_path, "w") as f:
        f["imgname"] = np.array([b"a.jpg"])
        f["center"] = np.array([[1.0, 2.0]])
    with pytest.raises(MPIIFormatError, match=r"missing dataset\(s\) \['scale', 'part'\]"):
        load_mpii_h5(h5_path)

    mat_path = tmp_path / "bad.mat"
    _write_mat(mat_path, shared[1][:2], break_point=True)
    with pytest.raises(MPIIFormatError, match=r"bad.mat: record annolist\[1\].annorect\[0\] \(052475643.jpg\): bad annopoints"):
        load_mpii_mat(mat_path, split="trainval")
    with pytest.raises(ValueError, match="unknown MPII annotation format"):
        load_mpii(tmp_path / "x.csv")


def _topdown(source, codec, augment=None):
    """The hourglass family's pipeline: one square crop of the (adjusted) MPII box, head sizes in the items."""
    return TopDownDataset(source, codec, skeleton="mpii16", input_size=codec.input_size[0], crop=CropRule("box", 1.0),
                          augment=augment, meta_keys=("head_size",))


def test_topdown_crop_targets_and_inverse(mpii, shared):
    js, _ = shared
    codec = HeatmapCodec((256, 256), (64, 64), 1.0)
    ds = _topdown(MPIIImageSource(js, mpii / "mmpose" / "images"), codec)
    item = ds[2]
    assert item["image"].shape == (3, 256, 256) and item["image"].dtype == torch.uint8
    # the network input is the crop in [0, 1] (the task's model_inputs)
    from posekit.families.base import Task
    x = Task.model_inputs(None, torch.utils.data.default_collate([item]))
    assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    torch.testing.assert_close(x[0], item["image"].float() / 255.0)
    # the crop is the adjusted MPII box: side 200 x scale around the record's centre
    np.testing.assert_allclose(item["matrix"].numpy(), crop_affine(js[2].center, 200.0 * js[2].scale, (256, 256)),
                               atol=1e-9)
    assert item["target"].shape == (16, 64, 64)
    assert item["target_weight"].tolist() == js[2].annotated.astype(float).tolist()
    # ground truth in the original frame: (K, 3), v > 0 where annotated; the record's head size (the
    # JSON has none, test_attach_head_sizes may have attached valid.h5's to these shared records)
    assert item["keypoints"].shape == (16, 3)
    assert (item["keypoints"][:, 2] > 0).tolist() == js[2].annotated.tolist()
    np.testing.assert_array_equal(item["keypoints"][:, :2].numpy()[js[2].annotated], js[2].joints[js[2].annotated])
    np.testing.assert_equal(float(item["head_size"]), js[2].head_size)
    assert item["index"] == 2
    kp, _ = codec.decode(item["target"].numpy())
    back = affine_points(kp, invert_affine(item["matrix"].numpy()))
    err = np.linalg.norm(back - js[2].joints, axis=-1)[js[2].annotated]
    assert err.max() < 0.36 * 4 * 200 * js[2].scale / 256  # within a shifted quarter cell, in original pixels


def test_flip_augmentation_swaps_left_and_right():
    src = SyntheticMPII(4, seed=3, image_size=160)
    codec = HeatmapCodec((128, 128), (32, 32), 1.0)
    ds = _topdown(src, codec, TopDownAugment(scale=(1.0, 1.0), rotation=30.0, rotation_prob=0.0, flip_prob=0.5,
                                             channel_scale=0.0))
    rec = src[0].meta["record"]
    seen = set()
    np.random.seed(123)
    numpy_state = np.random.get_state()[1].copy()
    for seed in range(12):
        torch.manual_seed(seed)  # the pipeline's RNG is drawn from torch (item_rng)
        item = ds[0]
        flipped = np.linalg.det(item["matrix"][:, :2].numpy()) < 0
        seen.add(bool(flipped))
        expected = affine_points(rec.joints, item["matrix"].numpy())
        annotated = rec.annotated.copy()
        if flipped:
            expected = expected[SK.flip_index]
            annotated = annotated[SK.flip_index]  # visibility travels with the joint labels
        kp, _ = codec.decode(item["target"].numpy())
        w = item["target_weight"].numpy() > 0
        assert not (w & ~annotated).any()
        assert np.abs(kp - expected)[w].max() < 1.5
        # the ground truth stays in the original frame, unswapped
        np.testing.assert_array_equal(item["keypoints"][:, :2].numpy(), src[0].keypoints[0, :, :2])
        torch.manual_seed(seed)
        again = ds[0]
        assert torch.equal(again["matrix"], item["matrix"]) and torch.equal(again["image"], item["image"])
    assert seen == {True, False}
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)  # numpy's global RNG untouched


def test_synthetic_figures():
    src = SyntheticMPII(6, seed=5, image_size=128)
    a, b = src[1], src[1]
    assert isinstance(a, Sample) and a.num_people == 1
    (rec_a, img_a), (rec_b, img_b) = (a.meta["record"], a.image), (b.meta["record"], b.image)
    np.testing.assert_array_equal(img_a, img_b)
    np.testing.assert_array_equal(rec_a.joints, rec_b.joints)
    assert img_a.shape == (128, 128, 3) and img_a.dtype == np.uint8
    assert not np.array_equal(src[2].image, img_a)
    for i in range(len(src)):
        sample = src[i]
        rec = sample.meta["record"]
        j = rec.joints[rec.annotated]
        assert np.all((j >= 0) & (j <= 127))
        assert rec.head_size > 0 and rec.scale > 0
        assert set(np.unique(rec.is_visible)) <= {0.0, 1.0}
        # the Sample view of the record: v = 2 visible, 1 occluded, 0 not annotated; head size in meta
        kp = sample.keypoints[0]
        np.testing.assert_array_equal(kp[rec.annotated, :2], j)
        np.testing.assert_array_equal(kp[:, 2], np.where(rec.annotated, np.where(rec.is_visible == 0, 1.0, 2.0), 0.0))
        assert sample.meta["head_size"] == rec.head_size
    # frontal figures: the subject's right shoulder and hip lie left of the left ones
    rights = [src[i].meta["record"] for i in range(len(src))]
    assert all(r.joints[12, 0] < r.joints[13, 0] and r.joints[2, 0] < r.joints[3, 0]
               for r in rights if r.annotated[[2, 3, 12, 13]].all())
    with pytest.raises(IndexError):
        src[6]
