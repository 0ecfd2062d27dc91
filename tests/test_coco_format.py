"""COCO keypoint reader, ignore masks, mask cache and the COCO-17 -> OpenPose-18 mapping."""
import contextlib
import io
import json
import math

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from posekit.data.formats.coco import (COCOFormatError, cache_ignore_masks, coco17_to_openpose18, ignore_mask,
                                       load_coco_keypoints, load_ignore_mask)
from posekit.skeletons import get_skeleton

# pycocotools 2.0.x calls np.array(copy=False) on decode; harmless under numpy 2
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W = 60, 80


# --- real samples --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def coco_dir(realdata):
    d = realdata / "coco"
    if not (d / "test_coco.json").is_file():
        pytest.skip(f"COCO sample not found in {d}")
    return d


def test_real_file(coco_dir):
    samples = load_coco_keypoints(coco_dir / "test_coco.json", coco_dir / "images")
    raw = json.loads((coco_dir / "test_coco.json").read_text())
    assert len(samples) == 4 and samples.skipped == []
    assert [s.num_people for s in samples] == [1, 3, 5, 5]
    assert sum(s.num_people for s in samples) == 14
    by_id = {a["id"]: a for a in raw["annotations"]}
    for s in samples:
        assert s.keypoints.shape == (s.num_people, 17, 3) and s.boxes.shape == (s.num_people, 4)
        assert s.image_path.is_file() and s.image_path.parent.resolve() == (coco_dir / "images").resolve()
        for p, ann_id in enumerate(s.meta["ann_ids"]):
            a = by_id[ann_id]
            assert a["image_id"] == s.meta["image_id"]
            np.testing.assert_array_equal(s.keypoints[p].ravel(), a["keypoints"])
            np.testing.assert_array_equal(s.boxes[p], a["bbox"])
            assert s.meta["areas"][p] == a["area"] and s.meta["num_keypoints"][p] == a["num_keypoints"]
    vis = np.concatenate([s.keypoints[..., 2].ravel() for s in samples])
    assert [(vis == v).sum() for v in (2, 1, 0)] == [164, 17, 57]
    assert samples[0].load().image.shape == (425, 640, 3)


def test_real_ignore_masks_match_pycocotools(coco_dir):
    from pycocotools.coco import COCO
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(coco_dir / "test_coco.json"))
    samples = {s.meta["image_id"]: s for s in load_coco_keypoints(coco_dir / "test_coco.json", coco_dir / "images")}
    for image_id, s in samples.items():
        expected = np.zeros((s.meta["height"], s.meta["width"]), np.uint8)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
            if ann["iscrowd"] or ann["num_keypoints"] < 5 or ann["area"] <= 32 * 32:
                expected |= coco.annToMask(ann)
        got = ignore_mask(s)
        assert got.dtype == np.uint8 and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
    assert not ignore_mask(samples[785]).any() and ignore_mask(samples[40083]).any()
    # the 17-keypoint person of area 1870 in 196141 is trained on; a stricter area threshold masks it
    assert ignore_mask(samples[196141], min_area=2000).sum() > ignore_mask(samples[196141]).sum()


def test_coco17_to_openpose18(coco_dir):
    s = load_coco_keypoints(coco_dir / "test_coco.json", coco_dir / "images")[1]
    op = coco17_to_openpose18(s.keypoints)
    assert op.shape == (3, 18, 3)
    coco, cmu = get_skeleton("coco17"), get_skeleton("openpose18")
    for j, name in enumerate(cmu.keypoints):
        if name != "neck":
            np.testing.assert_array_equal(op[:, j], s.keypoints[:, coco.index(name)])
    both = (s.keypoints[:, 5, 2] > 0) & (s.keypoints[:, 6, 2] > 0)
    assert both.any() and (~both).any()  # the 0-keypoint person has no neck
    np.testing.assert_allclose(op[both, 1, :2], (s.keypoints[both, 5, :2] + s.keypoints[both, 6, :2]) / 2)
    assert np.all(op[~both, 1] == 0)
    with pytest.raises(ValueError, match="17"):
        coco17_to_openpose18(np.zeros((1, 18, 3)))


# --- hand-made files -----------------------------------------------------------------------------

def _kp(k=17, v=2, x0=10.0):
    return [c for i in range(k) for c in (x0 + i, 20.0 + i, v)]


def _polygon(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _rle_uncompressed(x, y, w, h):
    m = np.zeros((H, W), np.uint8)
    m[y:y + h, x:x + w] = 1
    flat = m.ravel(order="F")  # COCO RLE runs go down columns, starting with zeros
    counts, cur, run = [], 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return {"size": [H, W], "counts": [int(c) for c in counts]}, m


def _rle_compressed(x, y, w, h):
    m = np.zeros((H, W), np.uint8)
    m[y:y + h, x:x + w] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": [H, W], "counts": rle["counts"].decode()}, m


def _write(tmp_path, images, annotations, *, keypoints=None, name="ann.json", make_files=True):
    (tmp_path / "img").mkdir(exist_ok=True)
    if make_files:
        for img in images:
            cv2.imwrite(str(tmp_path / "img" / img["file_name"]), np.zeros((H, W, 3), np.uint8))
    cat = {"id": 1, "name": "person", "keypoints": keypoints or list(get_skeleton("coco17").keypoints)}
    path = tmp_path / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [cat]}))
    return path, tmp_path / "img"


def _img(i, name=None):
    return {"id": i, "file_name": name or f"{i:04d}.png", "width": W, "height": H}


def _ann(i, image_id, *, segm=None, crowd=0, kp=None, area=500.0, bbox=(5, 5, 20, 30), nk=None):
    kp = _kp() if kp is None else kp
    return {"id": i, "image_id": image_id, "category_id": 1, "iscrowd": crowd, "keypoints": kp, "area": area,
            "bbox": list(bbox), "segmentation": segm if segm is not None else _polygon(*bbox),
            "num_keypoints": sum(1 for v in kp[2::3] if v > 0) if nk is None else nk}


def _mixed_file(tmp_path, reverse=False):
    unc, m_unc = _rle_uncompressed(40, 10, 10, 10)
    com, m_com = _rle_compressed(55, 30, 12, 8)
    anns = [
        _ann(1, 1, bbox=(2, 2, 30, 40), area=2000.0),  # trained on: not masked
        _ann(2, 1, segm=_polygon(35, 35, 10, 10), bbox=(35, 35, 10, 10), area=100.0),  # tiny -> masked
        _ann(3, 1, segm=unc, crowd=1, kp=[0] * 51, bbox=(40, 10, 10, 10), area=100.0),  # crowd, uncompressed RLE
        _ann(4, 1, segm=com, kp=_kp(v=0)[:9] + [0] * 42, bbox=(55, 30, 12, 8), area=1500.0),  # 3 kp -> masked
        _ann(5, 2, bbox=(1, 1, 40, 40), area=1600.0),
    ]
    anns[3]["keypoints"][2] = anns[3]["keypoints"][5] = anns[3]["keypoints"][8] = 2
    anns[3]["num_keypoints"] = 3
    if reverse:
        anns = anns[::-1]
    images = [_img(1), _img(2), _img(3)]  # image 3 has nobody
    return _write(tmp_path, images, anns, name=f"mixed{int(reverse)}.json"), m_unc, m_com


def test_polygon_rle_crowd_and_empty(tmp_path):
    (path, img_dir), m_unc, m_com = _mixed_file(tmp_path)
    samples = load_coco_keypoints(path, img_dir)
    by_id = {s.meta["image_id"]: s for s in samples}
    assert sorted(by_id) == [1, 2, 3]
    s = by_id[1]
    assert s.num_people == 3 and s.meta["ann_ids"] == [1, 2, 4]  # the crowd is not a person
    assert [c["id"] for c in s.meta["crowd"]] == [3]
    assert by_id[3].keypoints.shape == (0, 17, 3) and by_id[3].boxes.shape == (0, 4)
    expected = m_unc | m_com
    expected[35:45, 35:45] = 1
    np.testing.assert_array_equal(ignore_mask(s), expected)
    assert not ignore_mask(by_id[2]).any() and not ignore_mask(by_id[3]).any()
    assert [x.meta["image_id"] for x in load_coco_keypoints(path, img_dir, include_empty=False)] == [1, 2]


def test_mask_independent_of_annotation_order(tmp_path):
    (p0, d), _, _ = _mixed_file(tmp_path)
    (p1, _), _, _ = _mixed_file(tmp_path, reverse=True)
    a = {s.meta["image_id"]: ignore_mask(s) for s in load_coco_keypoints(p0, d)}
    b = {s.meta["image_id"]: ignore_mask(s) for s in load_coco_keypoints(p1, d)}
    assert a.keys() == b.keys()
    for k, mask in a.items():
        np.testing.assert_array_equal(mask, b[k])


def test_min_keypoints_drops_people_but_keeps_them_masked(tmp_path):
    (path, img_dir), _, _ = _mixed_file(tmp_path)
    s = {x.meta["image_id"]: x for x in load_coco_keypoints(path, img_dir, min_keypoints=5)}[1]
    assert s.meta["ann_ids"] == [1, 2]
    # ann 4 (3 keypoints) is no longer a person, yet its region is still ignored even with lax thresholds
    m = ignore_mask(s, min_keypoints=0, min_area=0)
    assert m[30:38, 55:67].all() and not m[35:45, 35:45].any()


def test_custom_five_keypoint_category(tmp_path):
    names = ["a", "b", "c", "d", "e"]
    path, d = _write(tmp_path, [_img(7)], [_ann(1, 7, kp=_kp(5)), _ann(2, 7, kp=_kp(5, x0=30))], keypoints=names)
    samples = load_coco_keypoints(path, d)
    assert samples.keypoint_names == tuple(names)
    assert samples[0].keypoints.shape == (2, 5, 3)
    np.testing.assert_array_equal(samples[0].keypoints[1, :, 0], 30 + np.arange(5))
    with pytest.raises(COCOFormatError, match=r"annotation id 3 .*15 numbers, expected 51"):
        p2, _ = _write(tmp_path, [_img(7)], [_ann(3, 7, kp=_kp(5))], name="wrongk.json")
        load_coco_keypoints(p2, d)


BAD = {
    "short keypoints": (lambda a: a.update(keypoints=_kp()[:-1]), r"annotation id 9 .*50 numbers, expected 51"),
    "non-finite keypoints": (lambda a: a["keypoints"].__setitem__(0, math.nan), r"annotation id 9 .*non-finite"),
    "zero-area box": (lambda a: a.update(bbox=[5, 5, 0, 10]), r"annotation id 9 .*zero or negative area"),
    "negative box": (lambda a: a.update(bbox=[5, 5, 10, -3]), r"annotation id 9 .*zero or negative area"),
    "bad visibility": (lambda a: a["keypoints"].__setitem__(2, 3), r"annotation id 9 .*visibilities"),
    "unknown image": (lambda a: a.update(image_id=404), r"annotation id 9: unknown image_id 404"),
    "bad polygon": (lambda a: a.update(segmentation=[[1, 2, 3]]), r"annotation id 9 .*polygons"),
    "bad rle size": (lambda a: a.update(segmentation={"size": [5, 5], "counts": [25]}), r"annotation id 9 .*RLE size"),
    "negative area": (lambda a: a.update(area=-4), r"annotation id 9 .*'area'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_records(tmp_path, case):
    edit, pattern = BAD[case]
    bad = _ann(9, 1)
    edit(bad)
    path, d = _write(tmp_path, [_img(1)], [_ann(1, 1), bad])
    with pytest.raises(COCOFormatError, match=pattern) as info:
        load_coco_keypoints(path, d)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    if case != "unknown image":
        assert "0001.png" in message  # names the image file too
    kept = load_coco_keypoints(path, d, on_bad_record="skip")
    assert len(kept.skipped) == 1 and kept.skipped[0] == message
    assert kept[0].meta["ann_ids"] == [1]


def test_missing_image_file(tmp_path):
    path, d = _write(tmp_path, [_img(1), _img(2)], [_ann(1, 1), _ann(2, 2)])
    (d / "0002.png").unlink()
    with pytest.raises(COCOFormatError, match=r"ann\.json: image #1 \(id 2, '0002.png'\): image file not found"):
        load_coco_keypoints(path, d)
    kept = load_coco_keypoints(path, d, on_bad_record="skip")
    assert [s.meta["image_id"] for s in kept] == [1] and len(kept.skipped) == 1  # its annotation is not a 2nd skip
    with pytest.raises(ValueError, match="on_bad_record"):
        load_coco_keypoints(path, d, on_bad_record="ignore")


@pytest.mark.parametrize("name", ["../escape.png", "sub/../../escape.png", "/etc/hostname"])
def test_path_escape_refused(tmp_path, name):
    path, d = _write(tmp_path, [_img(1, name)], [], make_files=False)
    for mode in ("error", "skip"):
        with pytest.raises(COCOFormatError, match="outside the image folder"):
            load_coco_keypoints(path, d, on_bad_record=mode)


def test_absolute_path_inside_root_and_subfolders(tmp_path):
    (tmp_path / "img" / "sub").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "img" / "sub" / "a.png"), np.zeros((H, W, 3), np.uint8))
    inside = str(tmp_path / "img" / "sub" / "a.png")
    path, d = _write(tmp_path, [_img(1, inside), _img(2, "sub/./a.png")], [], make_files=False)
    with pytest.warns(UserWarning, match="1 image file.*several image ids"):  # both name one file
        assert [s.image_path.name for s in load_coco_keypoints(path, d)] == ["a.png", "a.png"]


def test_structural_errors(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(COCOFormatError, match="x.json: invalid JSON"):
        load_coco_keypoints(p, tmp_path)
    p.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "dog"}]}))
    with pytest.raises(COCOFormatError, match="no category declares a 'keypoints' list"):
        load_coco_keypoints(p, tmp_path)
    path, d = _write(tmp_path, [_img(1), _img(1, "b.png")], [])
    with pytest.raises(COCOFormatError, match="duplicate image id"):
        load_coco_keypoints(path, d)


def test_mask_cache_roundtrip(tmp_path):
    (path, img_dir), _, _ = _mixed_file(tmp_path)
    out = tmp_path / "masks"
    assert cache_ignore_masks(path, img_dir, out) == 1  # only image 1 has a non-empty mask
    assert sorted(p.name for p in out.glob("*.png")) == ["1.png"]
    samples = {s.meta["image_id"]: s for s in load_coco_keypoints(path, img_dir)}
    for s in samples.values():
        np.testing.assert_array_equal(load_ignore_mask(s, out), ignore_mask(s))
    # the cache really is read: a doctored PNG comes back; other thresholds bypass it
    doctored = np.zeros((H, W), np.uint8)
    doctored[:5, :5] = 255
    cv2.imwrite(str(out / "1.png"), doctored)
    np.testing.assert_array_equal(load_ignore_mask(samples[1], out), doctored > 0)
    np.testing.assert_array_equal(load_ignore_mask(samples[1], out, min_area=0), ignore_mask(samples[1], min_area=0))
    # without a manifest the folder is not trusted
    (out / "ignore_masks.json").unlink()
    np.testing.assert_array_equal(load_ignore_mask(samples[1], out), ignore_mask(samples[1]))


def test_real_mask_cache(coco_dir, tmp_path):
    n = cache_ignore_masks(coco_dir / "test_coco.json", coco_dir / "images", tmp_path)
    assert n == 2 and sorted(p.stem for p in tmp_path.glob("*.png")) == ["196141", "40083"]
