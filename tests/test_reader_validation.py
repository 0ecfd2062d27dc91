"""Annotation readers refuse what would give silently wrong numbers (issue 12.8, 12.9, 12.11, 12.12):
non-finite or absurd coordinates, boxes, head sizes and camera parameters; image paths that
leave the dataset root; truncated files. Duplicates are reported. Each error is one line naming
the file and the record. Legal variations of each format still read."""
from __future__ import annotations

import json
import warnings

import cv2
import h5py
import numpy as np
import pytest

from posekit.data.sample import BadRecordError


def _write_json(path, content):
    path.write_text(json.dumps(content))
    return path


# --- COCO -----------------------------------------------------------------------------------------
def _coco(**ann_extra):
    ann = {"id": 1, "image_id": 7, "category_id": 1, "bbox": [10, 10, 50, 80], "keypoints": [20, 30, 2, 0, 0, 0]}
    ann.update(ann_extra)
    return {"images": [{"id": 7, "file_name": "a.jpg", "width": 100, "height": 120}], "annotations": [ann],
            "categories": [{"id": 1, "name": "person", "keypoints": ["a", "b"]}]}


def test_coco_minimal_file_without_optional_fields_reads(tmp_path):
    """iscrowd, num_keypoints, segmentation, area and category_id absent: all optional in practice."""
    from posekit.data.formats.coco import load_coco_keypoints
    data = _coco()
    del data["annotations"][0]["category_id"]
    out = load_coco_keypoints(_write_json(tmp_path / "a.json", data), tmp_path, check_files=False)
    assert len(out) == 1 and out[0].meta["num_keypoints"].tolist() == [1]
    assert out[0].meta["areas"].tolist() == [4000.0]


@pytest.mark.parametrize("extra,match", [
    ({"bbox": [0, 0, 1e308, 10]}, "'bbox' has an absurd value"),
    ({"keypoints": [1e300, 30, 2, 0, 0, 0]}, "'keypoints' has an absurd value"),
    ({"area": 1e300}, "'area' must be a positive finite number below"),
    ({"num_keypoints": -3}, "'num_keypoints' must be a non-negative count"),
    ({"area": 10 ** 400}, "'area' must be a positive finite number"),  # an int too big for a float
    ({"keypoints": [10 ** 400, 30, 2, 0, 0, 0]}, "'keypoints' must be numbers"),
    ({"id": [1]}, "non-integer or duplicate 'id'"),
    ({"image_id": {"x": 1}}, "'image_id' must be an integer or a string"),
    ({"segmentation": {"size": ["a", 2], "counts": "x"}}, "segmentation has non-numeric"),
])
def test_coco_absurd_annotation_is_a_bad_record(tmp_path, extra, match):
    from posekit.data.formats.coco import COCOFormatError, load_coco_keypoints
    path = _write_json(tmp_path / "ann.json", _coco(**extra))
    with pytest.raises(COCOFormatError, match=match) as e:
        load_coco_keypoints(path, tmp_path, check_files=False)
    assert "ann.json" in str(e.value) and isinstance(e.value, BadRecordError)
    skipped = load_coco_keypoints(path, tmp_path, check_files=False, on_bad_record="skip")
    assert len(skipped.skipped) == 1 and skipped[0].num_people == 0


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d["images"][0].update(width=1e9), "'width' must be a positive integer up to"),
    (lambda d: d["images"][0].update(id=[7]), "image 'id' must be an integer or a string"),
    (lambda d: d.update(categories={"id": 1}), "'categories' must be a list"),
    (lambda d: d["categories"][0].update(keypoints="abc"), "'keypoints' must be a list of names"),
    (lambda d: d["images"][0].update(file_name="../../etc/passwd"), "outside the image folder"),
    (lambda d: d["images"][0].update(file_name="/etc/passwd"), "outside the image folder"),
])
def test_coco_bad_images_and_categories(tmp_path, mutate, match):
    from posekit.data.formats.coco import COCOFormatError, load_coco_keypoints
    data = _coco()
    mutate(data)
    with pytest.raises(COCOFormatError, match=match):
        load_coco_keypoints(_write_json(tmp_path / "ann.json", data), tmp_path, check_files=False)


def test_coco_duplicates(tmp_path):
    from posekit.data.formats.coco import COCOFormatError, load_coco_keypoints
    data = _coco()
    data["annotations"].append(dict(data["annotations"][0]))  # duplicate annotation id: an error
    with pytest.raises(COCOFormatError, match="duplicate 'id'"):
        load_coco_keypoints(_write_json(tmp_path / "a.json", data), tmp_path, check_files=False)
    data = _coco()
    data["images"].append({"id": 8, "file_name": "a.jpg", "width": 100, "height": 120})
    with pytest.warns(UserWarning, match="1 image file.*several image ids"):
        load_coco_keypoints(_write_json(tmp_path / "b.json", data), tmp_path, check_files=False)


# --- MPII -----------------------------------------------------------------------------------------
def _mpii_h5(path, n=2, **override):
    arrays = {"center": np.full((n, 2), 300.0), "scale": np.full(n, 2.0), "part": np.full((n, 16, 2), 310.0),
              "visible": np.ones((n, 16)), "normalize": np.full(n, 40.0), "index": np.arange(n, dtype=float),
              "person": np.zeros(n)}
    arrays.update(override)
    names = override.pop("imgname", [b"a.jpg"] * n)
    with h5py.File(path, "w") as f:
        f["imgname"] = np.array(names, dtype="S32")
        for k, v in arrays.items():
            if k != "imgname":
                f[k] = v
    return path


@pytest.mark.parametrize("override,match", [
    ({"normalize": np.array([40.0, 1e300])}, r"record 1 \(a.jpg\).*'normalize' \(head size\)"),
    ({"normalize": np.array([40.0, np.nan])}, "'normalize'"),
    ({"center": np.array([[300.0, 300.0], [1e300, 2.0]])}, "crop centre has an absurd value"),
    ({"scale": np.array([2.0, 1e300])}, "crop box of"),
    ({"part": np.concatenate([np.full((1, 16, 2), 5.0), np.full((1, 16, 2), 1e300)])}, "joint coordinates"),
    ({"imgname": [b"a.jpg", b"../../secret.jpg"]}, "leaves the dataset root"),
    ({"imgname": [b"a.jpg", b"/abs/x.jpg"]}, "is absolute"),
    ({"index": np.array([0.0, 0.5])}, "'index' must be an integer"),
])
def test_mpii_h5_refuses_absurd_records(tmp_path, override, match):
    from posekit.data.formats.mpii import MPIIFormatError, load_mpii_h5
    path = _mpii_h5(tmp_path / "valid.h5", **override)
    with pytest.raises(MPIIFormatError, match=match) as e:
        load_mpii_h5(path)
    assert "valid.h5" in str(e.value) and isinstance(e.value, BadRecordError)


def test_mpii_h5_duplicate_person_warns_once(tmp_path):
    from posekit.data.formats.mpii import load_mpii_h5
    path = _mpii_h5(tmp_path / "d.h5", n=3, index=np.array([0.0, 0.0, 0.0]))
    with pytest.warns(UserWarning, match="2 duplicate record") as record:
        assert len(load_mpii_h5(path)) == 3
    assert len([w for w in record if "duplicate" in str(w.message)]) == 1


def _mpii_json_record(**kw):
    rec = {"image": "a.jpg", "center": [300.0, 200.0], "scale": 2.0, "joints": [[310.0, 210.0]] * 16,
           "joints_vis": [1] * 16}
    rec.update(kw)
    return rec


@pytest.mark.parametrize("kw,match", [
    ({"image": "../x.jpg"}, "leaves the dataset root"),
    ({"image": "C:\\\\data\\\\x.jpg"}, "is absolute"),
    ({"center": [1e300, 1.0]}, "crop centre has an absurd value"),
    ({"scale": 1e300}, "crop (centre|box)"),  # the centre moves by 15 x scale: refused either way
    ({"joints": [[1e300, 1.0]] * 16}, "joint coordinates"),
    ({"scale": 10 ** 400}, "'scale' must be a number"),
])
def test_mpii_json_refuses_absurd_records(tmp_path, kw, match):
    from posekit.data.formats.mpii import MPIIFormatError, load_mpii_json
    path = _write_json(tmp_path / "valid.json", [_mpii_json_record(), _mpii_json_record(**kw)])
    with pytest.raises(MPIIFormatError, match=match) as e:
        load_mpii_json(path)
    assert "valid.json: record 1" in str(e.value)


def test_mpii_json_variants_and_duplicates(tmp_path):
    from posekit.data.formats.mpii import MPIIImageSource, MPIIRecordError, load_mpii_json
    test_split = {"image": "t.jpg", "center": [10.0, 10.0], "scale": 1.0}  # test files have no joints
    path = _write_json(tmp_path / "m.json", [_mpii_json_record(), _mpii_json_record(), test_split])
    with pytest.warns(UserWarning, match="1 duplicate record"):
        recs = load_mpii_json(path)
    assert len(recs) == 3 and not recs[2].annotated.any()
    recs[0].image = "../escape.jpg"
    with pytest.raises(MPIIRecordError, match="leaves the dataset root"):
        MPIIImageSource(recs, tmp_path)


# --- StanfordExtra --------------------------------------------------------------------------------
def _dog(**kw):
    rec = {"img_path": "n1/a.jpg", "img_width": 50, "img_height": 40, "img_bbox": [1, 2, 30, 20],
           "joints": [[10.0, 12.0, 1.0]] * 24, "is_multiple_dogs": False}
    rec.update(kw)
    return rec


@pytest.mark.parametrize("kw,match", [
    ({"img_path": "../../x.jpg"}, "leaves the dataset root"),
    ({"img_path": "/x.jpg"}, "is absolute"),
    ({"img_bbox": [0, 0, 1e300, 5]}, "'img_bbox' has an absurd value"),
    ({"joints": [[1e300, 1.0, 1.0]] * 24}, "'joints' has an absurd value"),
    ({"img_width": True}, "'img_width' must be a positive number"),
    ({"joints": [[10.0, 12.0, 1e300]] * 24}, "'joints' visibilities must be 0 or 1"),  # found by fuzzing
    ({"img_height": 1e12}, "'img_height' must be a positive number"),
])
def test_stanford_extra_refuses_absurd_records(tmp_path, kw, match):
    from posekit.data.formats.stanford_extra import StanfordExtraError, load_stanford_extra
    path = _write_json(tmp_path / "se.json", [_dog(), _dog(**kw)])
    with pytest.raises(StanfordExtraError, match=match) as e:
        load_stanford_extra(path, None)
    assert "se.json: record 1" in str(e.value) and isinstance(e.value, BadRecordError)


def test_stanford_extra_duplicates_and_bad_image(tmp_path):
    from posekit.data.formats.stanford_extra import StanfordExtraSource, load_stanford_extra
    second_dog = _dog(img_bbox=[20, 10, 25, 25])  # two dogs in one image: legal, no warning
    path = _write_json(tmp_path / "se.json", [_dog(), second_dog])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_stanford_extra(path, None)) == 2
    path = _write_json(tmp_path / "se2.json", [_dog(), _dog()])
    with pytest.warns(UserWarning, match="1 duplicate record"):
        recs = load_stanford_extra(path, None)
    (tmp_path / "n1").mkdir()
    (tmp_path / "n1" / "a.jpg").write_bytes(b"")
    with pytest.raises(BadRecordError, match="record 0 .*0 bytes"):
        StanfordExtraSource(recs, tmp_path)[0]


# --- CelebA / MTFL --------------------------------------------------------------------------------
def test_celeba_absurd_coordinate_and_mtfl_duplicates(tmp_path):
    from posekit.data.formats.celeba import FormatError, read_celeba_landmarks, read_mtfl_list
    (tmp_path / "l.txt").write_text("000001.jpg 1 2 3 4 5 6 7 8 9 1e300\n")
    with pytest.raises(FormatError, match=r"l.txt:1: absurd coordinate") as e:
        read_celeba_landmarks(tmp_path / "l.txt")
    assert isinstance(e.value, BadRecordError)
    line = "lfw\\a.jpg 1 2 3 4 5 6 7 8 9 10 1 2 2 3\n"
    (tmp_path / "m.txt").write_text(line + line)
    with pytest.warns(UserWarning, match="1 duplicate line"):
        assert len(read_mtfl_list(tmp_path / "m.txt")) == 2


# --- pose JSON ------------------------------------------------------------------------------------
@pytest.mark.parametrize("content,match", [
    ({"poses": [[[1.0, 2.0], [None, 3.0]]]}, "non-finite"),
    ([[1.0, 2.0], [1e308, 3.0]], "absurd value"),
    ({"keypoints": [[1.0, 2.0]], "skeleton": ["x"]}, "'skeleton' must be a name"),
])
def test_pose_json_refuses_non_finite(tmp_path, content, match):
    from posekit.data.formats.pose_json import read_pose_json
    path = _write_json(tmp_path / "p.json", content)
    with pytest.raises(BadRecordError, match=match) as e:
        read_pose_json(path)
    assert "p.json" in str(e.value)


# --- Human3.6M ------------------------------------------------------------------------------------
CAMS = ("54138969", "55011271", "58860488", "60457274")


def _cameras(tmp_path, **override):
    rec = {"R": np.eye(3).tolist(), "T": [0.0, 0.0, -5.0], "f": [1145.0, 1144.0], "c": [512.0, 515.0],
           "k": [0.0, 0.0, 0.0], "p": [0.0, 0.0], "w": 1000, "h": 1002}
    data = {f"S1/{c}": dict(rec) for c in CAMS}
    data["S1/55011271"].update(override)
    return _write_json(tmp_path / "cameras.json", data)


@pytest.mark.parametrize("override,match", [
    ({"T": [float("nan"), 0.0, 0.0]}, "'T' has non-finite"),
    ({"R": (np.eye(3) * 2).tolist()}, "R is not a rotation"),
    ({"R": np.diag([1.0, 1.0, -1.0]).tolist()}, r"R is not a rotation .*det = -1"),
    ({"f": [0.0, 1144.0]}, "focal lengths f"),
    ({"T": [1e300, 0.0, 0.0]}, "camera centre T"),
    ({"w": "wide"}, "'w' must be a positive integer"),
    ({"h": 10 ** 30}, "'h' must be a positive integer"),  # found by fuzzing: a TypeError from np.isfinite
])
def test_cameras_refuse_non_calibrations(tmp_path, override, match):
    from posekit.data.cameras import load_cameras
    path = _cameras(tmp_path, **override)
    with pytest.raises(ValueError, match=match) as e:
        load_cameras(path)
    assert "cameras.json: record 'S1/55011271'" in str(e.value)


def test_cameras_missing_field_is_a_value_error(tmp_path):
    from posekit.data.cameras import load_cameras
    data = json.loads(_cameras(tmp_path).read_text())
    del data["S1/54138969"]["k"]
    path = _write_json(tmp_path / "cameras.json", data)
    with pytest.raises(ValueError, match="camera field 'k' is missing"):  # was a KeyError traceback
        load_cameras(path)


def _npz(path, poses):
    np.savez(path, positions_3d=np.array({"S1": {"Walking 1": poses}}, dtype=object))
    return path


def test_videopose3d_truncated_npz_is_one_line(tmp_path):
    from posekit.data.formats.h36m import H36MFormatError, load_videopose3d
    cams = _cameras(tmp_path)
    good = np.zeros((4, 32, 3))
    good[..., 2] = 0.0
    path = _npz(tmp_path / "data_3d_h36m.npz", good)
    data = path.read_bytes()
    for cut in (len(data) // 3, len(data) - 30):
        path.write_bytes(data[:cut])
        with pytest.raises(H36MFormatError, match="data_3d_h36m.npz") as e:
            load_videopose3d(path, cams, ["S1"], allow_pickle=True)
        assert "\n" not in str(e.value)


def test_videopose3d_refuses_non_finite_poses(tmp_path):
    from posekit.data.formats.h36m import H36MFormatError, load_videopose3d
    cams = _cameras(tmp_path)
    poses = np.zeros((3, 32, 3))
    poses[1, 4, 0] = np.nan
    with pytest.raises(H36MFormatError, match=r"positions_3d\[S1\]\[Walking 1\] has non-finite"):
        load_videopose3d(_npz(tmp_path / "d.npz", poses), cams, ["S1"], allow_pickle=True)


def test_videopose3d_points_behind_camera_name_the_file(tmp_path):
    from posekit.data.formats.h36m import H36MFormatError, load_videopose3d
    cams = _cameras(tmp_path, T=[0.0, 0.0, 5.0])  # metres: camera in front of the subject, looking away
    with pytest.raises(H36MFormatError, match=r"d.npz: S1 'Walking 1' camera 55011271: .*behind the camera"):
        load_videopose3d(_npz(tmp_path / "d.npz", np.zeros((2, 32, 3))), cams, ["S1"], allow_pickle=True)


def test_h36m_real_cameras_still_read(realdata):
    from posekit.data.cameras import load_cameras
    for path in (realdata / "h36m" / "baseline" / "cameras.h5", realdata / "h36m" / "mmpose" / "cameras.json"):
        if path.is_file():
            assert len(load_cameras(path)) >= 40


def test_real_annotation_samples_still_read(realdata):
    """The shared real samples pass every new check (nothing legitimate was tightened away)."""
    from posekit.data.formats.celeba import read_celeba_landmarks
    from posekit.data.formats.mpii import load_mpii
    from posekit.data.formats.stanford_extra import load_stanford_extra
    seen = 0
    for path in sorted((realdata / "mpii").rglob("*")):
        if path.suffix in (".json", ".h5"):
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no duplicate warning on the real files
                assert load_mpii(path)
            seen += 1
    for path in sorted((realdata / "stanford_extra").glob("*.json")):
        assert load_stanford_extra(path, None)
        seen += 1
    coco = realdata / "coco" / "test_coco.json"
    if coco.is_file():
        from posekit.data.formats.coco import load_coco_keypoints
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no duplicate warning on a real file
            assert load_coco_keypoints(coco, coco.parent, check_files=False)
        seen += 1
    for path in sorted((realdata / "celeba_mafl").rglob("list_landmarks*.txt")):
        assert read_celeba_landmarks(path, strict_count=False)
        seen += 1
    assert seen >= 3


def test_image_decoding_errors_are_bad_records(tmp_path):
    """Sample.load() on a truncated image raises BadRecordError (the training skip path)."""
    from posekit.data.sample import Sample
    ok, buf = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    (tmp_path / "t.jpg").write_bytes(buf.tobytes()[:-200])
    with pytest.raises(BadRecordError, match="t.jpg"):
        Sample(keypoints=np.zeros((1, 3, 3)), image_path=tmp_path / "t.jpg").load()


def test_found_by_fuzzing_coco_category_without_id(tmp_path):
    """A keypoint category without 'id' was a raw KeyError."""
    from posekit.data.formats.coco import COCOFormatError, load_coco_keypoints
    data = _coco()
    del data["categories"][0]["id"]
    with pytest.raises(COCOFormatError, match="category 'person' needs an integer or string 'id'"):
        load_coco_keypoints(_write_json(tmp_path / "ann.json", data), tmp_path, check_files=False)


def test_found_by_fuzzing_npz_that_is_not_a_zip(tmp_path):
    """With allow_pickle, np.load unpickles any non-zip file (UnpicklingError tracebacks, or code
    run from a renamed pickle); only zip archives reach numpy now."""
    import pickle

    from posekit.data.formats.h36m import H36MFormatError, load_videopose3d
    cams = _cameras(tmp_path)
    path = tmp_path / "data_3d_h36m.npz"
    path.write_bytes(pickle.dumps({"positions_3d": {}}))
    with pytest.raises(H36MFormatError, match=r"data_3d_h36m.npz: not an .npz \(zip\) archive"):
        load_videopose3d(path, cams, ["S1"], allow_pickle=True)
    good = _npz(tmp_path / "ok.npz", np.zeros((2, 32, 3)))
    raw = bytearray(good.read_bytes())
    cd = raw.find(b"PK\x01\x02")  # central directory: "version needed to extract" = 25.5
    raw[cd + 6:cd + 8] = b"\xff\x00"  # zipfile raises NotImplementedError
    path.write_bytes(bytes(raw))
    with pytest.raises(H36MFormatError, match="data_3d_h36m.npz"):
        load_videopose3d(path, cams, ["S1"], allow_pickle=True)


def test_found_by_fuzzing_far_polygons_and_boxes_do_not_exhaust_memory(tmp_path):
    """pycocotools rasterises polygon edges point by point: a vertex at 1e7 px took gigabytes
    (a 16 GB fuzz run). Polygons far outside the image are refused at read time; a box-only
    annotation far outside is clipped to the image first (the same mask)."""
    import time

    from posekit.data.formats.coco import COCOFormatError, ignore_mask, load_coco_keypoints
    data = _coco(segmentation=[[0, 0, 1e7, 0, 1e7, 10]])
    with pytest.raises(COCOFormatError, match="vertex far outside the 100x120 image"):
        load_coco_keypoints(_write_json(tmp_path / "a.json", data), tmp_path, check_files=False)
    data = _coco(bbox=[-5e5, 50, 9e5, 10], keypoints=[0, 0, 0, 0, 0, 0])  # no keypoints: masked
    (sample,) = load_coco_keypoints(_write_json(tmp_path / "b.json", data), tmp_path, check_files=False)
    t0 = time.perf_counter()
    mask = ignore_mask(sample)
    assert time.perf_counter() - t0 < 0.5
    assert mask.shape == (120, 100) and mask[50:60].all() and not mask[:50].any() and not mask[60:].any()
