"""StanfordExtra loader on the real samples, keypoint definitions, splits and bad-record errors."""
import json

import numpy as np
import pytest

from posekit.data.formats.stanford_extra import (StanfordExtraError, StanfordExtraSource, decode_seg, load_keypoint_definitions,
                                         load_split, load_stanford_extra, mask_bbox, parse_record,
                                         resolve_stanford_extra_paths, seeded_split)
from posekit.skeletons import get_skeleton


@pytest.fixture(scope="module")
def se_root(realdata):
    root = realdata / "stanford_extra"
    if not (root / "StanfordExtra_sample.json").is_file():
        pytest.skip(f"StanfordExtra samples not found in {root}")
    return root


@pytest.fixture(scope="module")
def records(se_root):
    return load_stanford_extra(se_root / "StanfordExtra_sample.json", se_root / "sample_imgs")


def test_real_samples_load(records, se_root):
    assert len(records) == 18
    for r in records:
        assert r.joints.shape == (24, 3)
        assert set(np.unique(r.joints[:, 2])) <= {0.0, 1.0}
        assert np.all(r.joints[20:] == 0), "joints 20-23 are never labelled in StanfordExtra"
        assert 11 <= (r.joints[:, 2] > 0).sum() <= 20
        assert not r.is_multiple_dogs
        # img_bbox is x, y, w, h inside the image, and every labelled joint lies near it
        x, y, w, h = r.bbox
        assert x >= 0 and y >= 0 and x + w <= r.width + 1 and y + h <= r.height + 1
        lab = r.joints[r.joints[:, 2] > 0, :2]
        assert np.all(lab[:, 0] >= x - 0.1 * w) and np.all(lab[:, 0] <= x + 1.1 * w)
    path, image_dir = resolve_stanford_extra_paths(se_root, None, None)
    assert path.name == "StanfordExtra_sample.json" and image_dir.name == "sample_imgs"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs numpy 2 copy keyword
def test_seg_rle_decodes_and_matches_bbox(records):
    ious = []
    for r in records:
        mask = decode_seg(r)
        assert mask.shape == (r.height, r.width) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 1} and mask.sum() > 0.05 * mask.size
        # img_bbox read as [x, y, w, h] matches the mask's extent (IoU > 0.85 on every sample);
        # read as x1y1x2y2 it would not
        mb = mask_bbox(mask)
        assert _iou(mb, r.bbox) > 0.85, (r.img_path, mb, r.bbox)
        as_xyxy = np.array([r.bbox[0], r.bbox[1], r.bbox[2] - r.bbox[0], r.bbox[3] - r.bbox[1]])
        ious.append((_iou(mb, r.bbox), _iou(mb, as_xyxy)))
    ious = np.array(ious)
    assert ious[:, 0].mean() > ious[:, 1].mean() + 0.05, ious.mean(axis=0)


def _iou(a, b):
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_source_reads_images_in_original_frame(records, se_root):
    src = StanfordExtraSource(records[:2], se_root / "sample_imgs")
    s = src[1]
    assert s.image.dtype == np.uint8 and s.image.shape == (records[1].height, records[1].width, 3)
    # a Sample with one person: keypoints (1, K, 3), boxes (1, 4), both in the original frame
    assert s.keypoints.shape == (1, 24, 3) and s.num_people == 1
    assert np.array_equal(s.keypoints[0], records[1].joints)
    assert s.boxes.shape == (1, 4) and np.array_equal(s.boxes[0], records[1].bbox)


def test_keypoint_definitions_agree_with_skeleton(se_root):
    defs = load_keypoint_definitions(se_root / "keypoint_definitions.csv")
    sk = get_skeleton("stanford_extra24")
    assert len(defs) == 24
    assert [d.labelled for d in defs] == [True] * 20 + [False] * 4
    assert [d.color for d in defs] == [tuple(int(c) for c in col) for col in sk.keypoint_colors()]
    assert defs[16].name == "Nose" and sk.keypoints[16] == "nose"


# --- bad input ---------------------------------------------------------------------------------
def _good(img="a/dog.jpg"):
    return {"img_path": img, "img_width": 40, "img_height": 30, "img_bbox": [1, 2, 30, 20],
            "joints": [[5.0, 6.0, 1.0]] * 20 + [[0.0, 0.0, 0.0]] * 4, "is_multiple_dogs": False}


def _write(tmp_path, recs, make_images=True):
    import cv2
    for r in recs:
        if make_images and isinstance(r, dict) and isinstance(r.get("img_path"), str):
            p = tmp_path / "imgs" / r["img_path"]
            p.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(p), np.zeros((30, 40, 3), np.uint8))
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(recs))  # json writes NaN as a bare NaN token, as a broken export would
    return path


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.update(joints=r["joints"][:23]), r"record 1 \(b/bad.jpg\): 'joints' has 23 entries, expected 24"),
    (lambda r: r["joints"].__setitem__(3, [float("nan"), 1.0, 1.0]), r"record 1 \(b/bad.jpg\): 'joints' has NaN/inf values at joint\(s\) \[3\]"),
    (lambda r: r.update(joints=[[1, 2]] * 24), r"record 1 \(b/bad.jpg\): 'joints' must be 24 x \[x, y, v\]"),
    (lambda r: r.update(img_bbox=[0, 0, 0, 10]), r"record 1 \(b/bad.jpg\): 'img_bbox' .* positive w and h"),
    (lambda r: r.update(img_bbox=[0, 0, 10]), r"record 1 \(b/bad.jpg\): 'img_bbox' must be 4 finite numbers"),
    (lambda r: r.pop("joints"), r"record 1 \(b/bad.jpg\): missing field 'joints'"),
    (lambda r: r.update(joints="abc"), r"record 1 \(b/bad.jpg\): 'joints' must contain numbers"),
])
def test_bad_records_name_the_record(tmp_path, mutate, message):
    bad = _good("b/bad.jpg")
    bad["joints"] = [list(j) for j in bad["joints"]]
    mutate(bad)
    path = _write(tmp_path, [_good(), bad])
    with pytest.raises(StanfordExtraError, match=message) as info:
        load_stanford_extra(path, tmp_path / "imgs")
    assert str(path) in str(info.value)


def test_missing_image_names_the_record(tmp_path):
    path = _write(tmp_path, [_good(), _good("c/missing.jpg")], make_images=False)
    _write(tmp_path, [_good()])  # only the first image exists
    path.write_text(json.dumps([_good(), _good("c/missing.jpg")]))
    with pytest.raises(StanfordExtraError, match=r"record 1 \(c/missing.jpg\): image not found"):
        load_stanford_extra(path, tmp_path / "imgs")


def test_other_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        load_stanford_extra(tmp_path / "nothere.json")
    (tmp_path / "d.json").write_text('{"img_path": 1}')
    with pytest.raises(StanfordExtraError, match="expected a JSON list"):
        load_stanford_extra(tmp_path / "d.json")
    (tmp_path / "e.json").write_text("[{]")
    with pytest.raises(StanfordExtraError, match="invalid JSON"):
        load_stanford_extra(tmp_path / "e.json")
    with pytest.raises(StanfordExtraError, match="record 4: expected an object"):
        parse_record([1, 2], 4, "x.json")


def test_image_size_mismatch_is_an_error(tmp_path):
    rec = _good()
    rec["img_width"] = 99
    path = _write(tmp_path, [rec])
    src = StanfordExtraSource(load_stanford_extra(path, tmp_path / "imgs"), tmp_path / "imgs", source=str(path))
    with pytest.raises(StanfordExtraError, match=r"record 0 \(a/dog.jpg\): image is 40x30 but .* 99x30"):
        src[0]


# --- splits -----------------------------------------------------------------------------------
def test_seeded_split_is_reproducible_and_disjoint():
    tr, va = seeded_split(100, 0.15, seed=3)
    tr2, va2 = seeded_split(100, 0.15, seed=3)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    assert len(va) == 15 and len(tr) == 85 and not set(tr) & set(va)
    assert not np.array_equal(va, seeded_split(100, 0.15, seed=4)[1])


def test_official_split_files(tmp_path, records):
    np.save(tmp_path / "train.npy", np.array([0, 2, 5]))
    assert load_split(tmp_path / "train.npy", records).tolist() == [0, 2, 5]
    np.save(tmp_path / "bad.npy", np.array([1, 99]))
    with pytest.raises(StanfordExtraError, match=r"bad.npy: 1 index\(es\) not in the annotation file, e.g. \[99\]"):
        load_split(tmp_path / "bad.npy", records)
    np.save(tmp_path / "float.npy", np.array([0.5]))
    with pytest.raises(StanfordExtraError, match="must be integers"):
        load_split(tmp_path / "float.npy", records)
    (tmp_path / "val.txt").write_text(f"{records[4].img_path}\n7\n")
    assert load_split(tmp_path / "val.txt", records).tolist() == [4, 7]
    (tmp_path / "junk.txt").write_text("nope.jpg\n")
    with pytest.raises(StanfordExtraError, match="line 1: 'nope.jpg'"):
        load_split(tmp_path / "junk.txt", records)
