"""COCO annotations that used to hang, crash or mislead (issue 20, Reliability II):

- `posekit data coco-masks` writes and deletes only direct children of --out, whatever the image
  ids say, and never replaces a file it did not write;
- compressed RLE strings are decoded and checked before pycocotools sees them (it loops forever
  on runs that do not cover the image and crashes on an empty string); uncompressed RLE too;
- iscrowd must be 0/1 and num_keypoints must match the keypoints (both steer COCOeval and the
  OpenPose ignore-mask rule).

Everything that would reach the old pycocotools hang runs in a subprocess with a timeout.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from posekit.cli import main
from posekit.data.formats.coco import (COCOFormatError, COCORecordError, _rle_string_runs, cache_ignore_masks,
                                       ignore_mask, load_coco_keypoints, mask_file_name)

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W = 40, 50
K = 17


def _kp(n=17):
    kp = [0] * (3 * K)
    for j in range(n):
        kp[3 * j:3 * j + 3] = [5 + j, 6 + j, 2]
    return kp


def _ann(i, image_id, **extra):
    ann = {"id": i, "image_id": image_id, "category_id": 1, "iscrowd": 0, "keypoints": _kp(), "num_keypoints": K,
           "area": 3.0, "bbox": [2, 2, 10, 12], "segmentation": [[2, 2, 12, 2, 12, 14, 2, 14]]}
    ann.update(extra)
    return ann


def _file(tmp_path, annotations, images=None, name="ann.json"):
    images = images if images is not None else [{"id": 1, "file_name": "a.png", "width": W, "height": H}]
    cat = {"id": 1, "name": "person", "keypoints": [f"k{j}" for j in range(K)]}
    path = tmp_path / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [cat]}))
    return path


def _compressed(mask) -> str:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()


def _tree(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- coco-masks stays inside --out ----------------------------------------------------------------

def test_coco_masks_never_write_or_delete_outside_the_cache(tmp_path, capsys):
    out = tmp_path / "a" / "b" / "masks"
    outside = tmp_path / "victim"
    outside.mkdir()
    for name in ("x.png", "y.png", "z.png"):
        (outside / name).write_bytes(b"user data")
    ids = ["../../../victim/x", str(outside / "y"), "../../../../victim/z"]
    images = [{"id": i, "file_name": f"{n}.png", "width": W, "height": H} for n, i in enumerate(ids)]
    # a tiny person: masked at the default min_area, not at min_area=0 (the stale-mask cleanup then runs)
    path = _file(tmp_path, [_ann(n + 1, i) for n, i in enumerate(ids)], images)
    before = _tree(outside)
    assert cache_ignore_masks(path, tmp_path, out) == 3
    assert cache_ignore_masks(path, tmp_path, out, min_area=0) == 0  # deletes its 3 stale PNGs
    assert main(["data", "coco-masks", str(path), str(tmp_path), "--out", str(out)]) == 0
    assert _tree(outside) == before
    files = [p for p in tmp_path.rglob("*") if p.is_file() and outside not in p.parents and p != path]
    assert files and all(p.parent == out for p in files), files
    assert sorted(p.name for p in out.glob("*.png")) == sorted(mask_file_name(i) for i in ids)
    capsys.readouterr()


def test_mask_file_names_are_single_distinct_names():
    ids = [785, -3, "785", "Abc", "abc", "../x", "/etc/x", "a/b", "a\\b", "", ".", "..", "é", 10 ** 60, str(10 ** 60)]
    names = [mask_file_name(i) for i in ids]
    assert mask_file_name(785) == "785.png"  # COCO's integer ids keep their plain names
    assert len({n.lower() for n in names}) == len(ids)  # distinct, also on case-insensitive file systems
    for n in names:
        assert "/" not in n and "\\" not in n and not n.startswith(".") and n.endswith(".png"), n


def test_coco_masks_refuse_to_replace_a_file_they_did_not_write(tmp_path, capsys):
    path = _file(tmp_path, [_ann(1, 1)])
    out = tmp_path / "images"  # e.g. --out pointed at the image folder, which holds 1.png
    out.mkdir()
    (out / "1.png").write_bytes(b"a user's image")
    assert main(["data", "coco-masks", str(path), str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("posekit data: error:") and "1.png is in the way" in err
    assert (out / "1.png").read_bytes() == b"a user's image" and not (out / "ignore_masks.json").exists()


def test_coco_masks_replace_a_symlink_instead_of_writing_through_it(tmp_path):
    path = _file(tmp_path, [_ann(1, 1)])
    out = tmp_path / "masks"
    assert cache_ignore_masks(path, tmp_path, out) == 1
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"user data")
    (out / "1.png").unlink()
    (out / "1.png").symlink_to(victim)
    (out / "ignore_masks.json").rename(tmp_path / "manifest.json")
    (out / "ignore_masks.json").symlink_to(tmp_path / "manifest.json")
    assert cache_ignore_masks(path, tmp_path, out) == 1
    assert victim.read_bytes() == b"user data"
    assert not (out / "1.png").is_symlink() and not (out / "ignore_masks.json").is_symlink()
    assert (tmp_path / "manifest.json").is_file()


# --- compressed RLE -------------------------------------------------------------------------------

def _runs_of(mask) -> list[int]:
    flat = mask.ravel(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.r_[0, edges, flat.size]
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def test_compressed_rle_decodes_exactly_like_pycocotools():
    rng = np.random.default_rng(0)
    for t in range(200):
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        mask = rng.random((h, w)) < rng.random()
        if t % 2:  # long runs: multi-character values and negative deltas
            mask = np.zeros((h, w), bool)
            mask[rng.integers(0, h):, rng.integers(0, w):] = True
        counts = _compressed(mask)
        assert _rle_string_runs(counts).tolist() == _runs_of(mask), counts
        back = mask_utils.decode({"size": [h, w], "counts": counts})
        np.testing.assert_array_equal(back, mask)


def _bad_strings():
    valid = _compressed(np.pad(np.ones((10, 10)), ((5, H - 15), (7, W - 17))))
    return {
        "empty": ("", "is empty"),
        "non-ascii": (valid[:-1] + "é", "non-ASCII"),
        "char below '0'": (valid[:2] + " " + valid[3:], "has the character ' '"),
        "char above 'o'": ("p" + valid[1:], "has the character 'p'"),
        "truncated": (valid + "P", "truncated"),  # 'P' carries the continuation bit
        "too long a run": ("`" * 9 + "0", "a run of 10 characters"),
        "negative run": ("0@", "negative run"),  # '@': the last char of a run (no 0x20), sign bit 0x10 set
        "runs too short": (valid[:-2] + "0", "runs sum to"),
        "runs too long": ("o" * 6 + "1", "runs sum to"),
        "garbage": ("hello_world[]", "runs sum to|negative run|truncated|character"),
    }


@pytest.mark.parametrize("case", sorted(_bad_strings()))
def test_bad_compressed_rle_is_one_line_naming_the_record(tmp_path, case):
    counts, pattern = _bad_strings()[case]
    segm = {"size": [H, W], "counts": counts}
    path = _file(tmp_path, [_ann(1, 1), _ann(7, 1, iscrowd=1, segmentation=segm, keypoints=[0] * 51, num_keypoints=0)])
    with pytest.raises(COCORecordError, match=pattern) as info:
        load_coco_keypoints(path, tmp_path, check_files=False)
    message = str(info.value)
    assert "\n" not in message and "ann.json" in message and "annotation id 7" in message
    kept = load_coco_keypoints(path, tmp_path, check_files=False, on_bad_record="skip")
    assert len(kept.skipped) == 1 and [s["id"] for s in kept[0].meta["segments"]] == [1]


@pytest.mark.parametrize("segm,pattern", [
    ({"size": [H, W], "counts": [5, -1, H * W - 4]}, "negative run"),
    ({"size": [H, W], "counts": [5, 2.5, H * W - 7.5]}, "list of integers"),
    ({"size": [H, W], "counts": [5, "2", H * W - 7]}, "list of integers"),
    ({"size": [H, W], "counts": [5, True, H * W - 6]}, "list of integers"),
    ({"size": [H, W], "counts": []}, "list of integers"),
    ({"size": [H, W], "counts": [5, 6]}, f"runs sum to 11 pixels, expected {H * W}"),
    ({"size": [float(H), float(W)], "counts": [H * W]}, "'size' must be two integers"),
    ({"size": [True, W], "counts": [W]}, "'size' must be two integers"),
    ({"size": [W, H], "counts": [H * W]}, "differs from the image size"),
])
def test_bad_uncompressed_rle_is_one_line_naming_the_record(tmp_path, segm, pattern):
    path = _file(tmp_path, [_ann(3, 1, iscrowd=1, segmentation=segm, keypoints=[0] * 51, num_keypoints=0)])
    with pytest.raises(COCORecordError, match=pattern) as info:
        load_coco_keypoints(path, tmp_path, check_files=False)
    assert "\n" not in str(info.value) and "annotation id 3" in str(info.value)


_SUBPROCESS = textwrap.dedent("""
    import contextlib, io, json, sys
    from posekit.cli import main
    out = []
    for path, images, masks in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(["data", "coco-masks", path, images, "--out", masks])
        out.append([rc, err.getvalue()])
    print(json.dumps(out))
""")


def _coco_masks_in_subprocess(jobs, timeout=60):
    """`posekit data coco-masks` on each job in one child process: the old code hung (or died of
    SIGSEGV) inside pycocotools, so a regression fails here on the timeout instead of hanging."""
    try:
        done = subprocess.run([sys.executable, "-c", _SUBPROCESS, json.dumps(jobs)], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"coco-masks still hangs (killed after {timeout} s)")
    assert done.returncode == 0, f"the child died (rc {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_rle_that_hung_or_crashed_pycocotools_is_one_cli_line(tmp_path):
    jobs, names = [], []
    for n, (case, (counts, _)) in enumerate(sorted(_bad_strings().items())):
        segm = {"size": [H, W], "counts": counts}
        path = _file(tmp_path, [_ann(1, 1), _ann(9, 1, iscrowd=1, segmentation=segm, keypoints=[0] * 51,
                                                 num_keypoints=0)], name=f"case{n}.json")
        jobs.append([str(path), str(tmp_path), str(tmp_path / f"masks{n}")])
        names.append(case)
    for case, (rc, err) in zip(names, _coco_masks_in_subprocess(jobs), strict=True):
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1, (case, rc, err)
        assert lines[0].startswith("posekit data: error:") and "annotation id 9" in lines[0], (case, err)
        assert "internal error" not in lines[0], (case, err)


def test_rle_with_empty_inner_runs_gives_the_right_mask(tmp_path):
    """Empty runs after the first are legal RLE; pycocotools' merge mishandles them (wrong runs,
    then an endless loop), so they are joined away first: the mask is the one the runs describe."""
    first = np.zeros((H, W), bool)
    first[5:15, 10:20] = True
    runs = _runs_of(first)
    padded = [runs[0], 0, 0, *runs[1:3], 0, 0, *runs[3:], 0]  # the same mask, with empty runs in it
    crowd1 = {"size": [H, W], "counts": padded}
    second = np.zeros((H, W), bool)
    second[20:30, 30:45] = True
    # the compressed string of runs with empty ones, built with pycocotools' own encoder
    r = mask_utils.frPyObjects({"size": [H, W], "counts": [*_runs_of(second)[:2], 0, 0, *_runs_of(second)[2:]]}, H, W)
    crowd2 = {"size": [H, W], "counts": r["counts"].decode()}
    anns = [_ann(1, 1, iscrowd=1, segmentation=crowd1, keypoints=[0] * 51, num_keypoints=0),
            _ann(2, 1, iscrowd=1, segmentation=crowd2, keypoints=[0] * 51, num_keypoints=0),
            _ann(3, 1, area=5000.0, bbox=[40, 2, 8, 8], segmentation=[[40, 2, 48, 2, 48, 10, 40, 10]])]
    path = _file(tmp_path, anns)
    jobs = [[str(path), str(tmp_path), str(tmp_path / "masks")]]
    [(rc, err)] = _coco_masks_in_subprocess(jobs)
    assert rc == 0, err
    import cv2
    got = cv2.imread(str(tmp_path / "masks" / "1.png"), cv2.IMREAD_GRAYSCALE) > 0
    np.testing.assert_array_equal(got, first | second)


# --- iscrowd and num_keypoints --------------------------------------------------------------------

@pytest.mark.parametrize("value", ["no", "yes", "0", 2, -1, 0.5, None, [0], {}])
def test_iscrowd_must_be_0_or_1(tmp_path, value):
    path = _file(tmp_path, [_ann(1, 1), _ann(4, 1, iscrowd=value)])
    with pytest.raises(COCORecordError, match=r"annotation id 4 .*'iscrowd' must be 0 or 1") as info:
        load_coco_keypoints(path, tmp_path, check_files=False)
    assert "\n" not in str(info.value) and "ann.json" in str(info.value)
    kept = load_coco_keypoints(path, tmp_path, check_files=False, on_bad_record="skip")
    assert len(kept.skipped) == 1 and kept[0].meta["ann_ids"] == [1]


@pytest.mark.parametrize("value,crowd", [(0, False), (1, True), (False, False), (True, True), (1.0, True)])
def test_iscrowd_0_1_and_bool_read(tmp_path, value, crowd):
    extra = {"keypoints": [0] * 51, "num_keypoints": 0} if crowd else {}
    path = _file(tmp_path, [_ann(4, 1, iscrowd=value, **extra)])
    s = load_coco_keypoints(path, tmp_path, check_files=False)[0]
    assert [c["id"] for c in s.meta["crowd"]] == ([4] if crowd else [])
    assert s.meta["ann_ids"] == ([] if crowd else [4])


@pytest.mark.parametrize("given,labelled", [(0, 17), (17, 0), (0, 3)])
def test_num_keypoints_that_contradicts_the_keypoints_is_a_bad_record(tmp_path, given, labelled):
    path = _file(tmp_path, [_ann(1, 1), _ann(5, 1, keypoints=_kp(labelled), num_keypoints=given)])
    with pytest.raises(COCORecordError, match=rf"annotation id 5 .*'num_keypoints' is {given} but {labelled} "
                                              r"keypoints are labelled") as info:
        load_coco_keypoints(path, tmp_path, check_files=False)
    assert "\n" not in str(info.value)
    kept = load_coco_keypoints(path, tmp_path, check_files=False, on_bad_record="skip")
    assert len(kept.skipped) == 1 and kept[0].meta["ann_ids"] == [1]
    # without the field it is counted, and the mask rule sees the true count
    ann = _ann(5, 1, keypoints=_kp(labelled), area=5000.0)
    del ann["num_keypoints"]
    s = load_coco_keypoints(_file(tmp_path, [ann], name="b.json"), tmp_path, check_files=False)[0]
    assert s.meta["num_keypoints"].tolist() == [labelled]
    assert ignore_mask(s).any() == (labelled < 5)


@pytest.mark.parametrize("given,labelled", [(5, 6), (6.5, 6), (17, 3)])
def test_a_nonzero_num_keypoints_that_differs_is_replaced_by_the_true_count(tmp_path, given, labelled):
    """Other tools count differently (only v == 2, say): the record is kept and the mask rule reads
    the true count, never the file's."""
    path = _file(tmp_path, [_ann(5, 1, keypoints=_kp(labelled), num_keypoints=given, area=5000.0)])
    s = load_coco_keypoints(path, tmp_path, check_files=False)[0]
    assert s.meta["num_keypoints"].tolist() == [labelled]
    assert ignore_mask(s).any() == (labelled < 5)


@pytest.mark.parametrize("edit,pattern", [
    ({"iscrowd": "no"}, r"GT annotation 2: 'iscrowd' must be 0 or 1, got 'no'"),
    ({"num_keypoints": -1}, r"GT annotation 2: 'num_keypoints' must be a count, got -1"),
    ({"num_keypoints": "17"}, r"GT annotation 2: 'num_keypoints' must be a count, got '17'"),
])
def test_coco_eval_refuses_gt_that_contradicts_itself(edit, pattern):
    from posekit.metrics.coco import coco_keypoint_eval
    gt = {"images": [{"id": 1, "width": W, "height": H, "file_name": "a.png"}],
          "annotations": [_ann(1, 1), {**_ann(2, 1), **edit}],
          "categories": [{"id": 1, "name": "person", "keypoints": [f"k{j}" for j in range(K)]}]}
    result = [{"image_id": 1, "keypoints": _kp(), "score": 1.0}]
    with pytest.raises(ValueError, match=pattern):
        coco_keypoint_eval(gt, result)


def test_openpose_eval_scores_only_the_records_the_reader_kept(tmp_path):
    """data.on_bad_record=skip: the skipped record is also left out of the GT pycocotools scores."""
    from posekit.families.openpose import _records_read
    from posekit.metrics.coco import coco_keypoint_eval
    anns = [_ann(1, 1, area=400.0), _ann(2, 1, iscrowd="no", area=400.0)]
    path = _file(tmp_path, anns)
    source = load_coco_keypoints(path, tmp_path, check_files=False, on_bad_record="skip")
    assert len(source.skipped) == 1
    gt = _records_read(json.loads(path.read_text()), source)
    assert [a["id"] for a in gt["annotations"]] == [1] and [i["id"] for i in gt["images"]] == [1]
    stats = coco_keypoint_eval(gt, [{"image_id": 1, "keypoints": _kp(), "score": 1.0}])
    assert stats["AP"] == pytest.approx(1.0)


def test_damaged_mask_manifest_is_one_line(tmp_path):
    from posekit.data.formats.coco import load_ignore_mask
    path = _file(tmp_path, [_ann(1, 1)])
    out = tmp_path / "masks"
    cache_ignore_masks(path, tmp_path, out)
    (out / "ignore_masks.json").write_text("{broken")
    s = load_coco_keypoints(path, tmp_path, check_files=False)[0]
    with pytest.raises(COCOFormatError, match=r"ignore_masks.json: not a mask-cache manifest"):
        load_ignore_mask(s, out)
    # a damaged manifest vouches for no PNG: a rebuild refuses to replace them rather than guess
    with pytest.raises(FileExistsError, match=r"1.png is in the way"):
        cache_ignore_masks(path, tmp_path, out)
    assert (out / "1.png").is_file()


def test_mask_cache_from_before_safe_names_is_not_read_as_empty(tmp_path):
    """A cache written when string ids were "<id>.png" has no file under the new name: that must
    not read as "empty mask"; such ids are computed instead."""
    from posekit.data.formats.coco import MASK_CACHE_MANIFEST, load_ignore_mask
    path = _file(tmp_path, [_ann(1, "img-a")], images=[{"id": "img-a", "file_name": "a.png", "width": W, "height": H}])
    out = tmp_path / "masks"
    assert cache_ignore_masks(path, tmp_path, out) == 1
    s = load_coco_keypoints(path, tmp_path, check_files=False)[0]
    assert load_ignore_mask(s, out).any()
    (out / mask_file_name("img-a")).rename(out / "img-a.png")  # the old layout
    manifest = json.loads((out / MASK_CACHE_MANIFEST).read_text())
    del manifest["file_names"]
    (out / MASK_CACHE_MANIFEST).write_text(json.dumps(manifest))
    np.testing.assert_array_equal(load_ignore_mask(s, out), ignore_mask(s))
    assert ignore_mask(s).any()
