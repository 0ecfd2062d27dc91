"""The vectorised COCO loader gives exactly what the per-record parser gives: the same Samples,
the same skipped messages in the same order, the same first error (issue 25)."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from posekit.data.formats import coco
from posekit.data.formats.coco import COCOFormatError, load_coco_keypoints

K = 3
BAD_VALUES = [True, False, "1.5", "x", None, math.nan, math.inf, -math.inf, 10 ** 400, -1, 0, 3, 1e13, 2.5,
              [], {}, [1, 2], [[1, 2, 3]], {"counts": [1], "size": [4, 4]}, 7 * [1.0], "", -5000.0, 5000]


def _template(rng, n_images=6, n_anns=24) -> dict:
    images = [{"id": i + 1, "file_name": f"{i + 1}.jpg", "width": 64, "height": 48} for i in range(n_images)]
    anns = []
    for j in range(n_anns):
        vis = rng.choice([0, 1, 2], K)
        kps = np.stack([rng.integers(0, 64, K), rng.integers(0, 48, K), vis], 1).ravel().tolist()
        ann = {"id": j + 1, "image_id": int(rng.integers(1, n_images + 1)), "category_id": 1,
               "bbox": [float(rng.uniform(0, 30)), 3, float(rng.uniform(1, 30)), 12.5], "keypoints": kps,
               "num_keypoints": int(np.count_nonzero(vis)), "area": float(rng.uniform(1, 900)), "iscrowd": 0,
               "segmentation": [np.round(rng.uniform(-10, 60, 2 * int(rng.integers(3, 8))), 2).tolist()
                                for _ in range(int(rng.integers(0, 3)))]}
        if rng.random() < 0.15:
            ann["iscrowd"], ann["keypoints"], ann["num_keypoints"] = 1, [], 0
            ann["segmentation"] = {"counts": [100, 2972], "size": [48, 64]}
        for key in ("area", "num_keypoints", "segmentation", "iscrowd"):
            if rng.random() < 0.1 and not ann["iscrowd"]:  # optional fields, absent
                ann.pop(key)
        anns.append(ann)
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": ["a", "b", "c"]}]}


def _mutate(rng, data: dict, rate: float) -> dict:
    data = copy.deepcopy(data)
    for ann in data["annotations"]:
        if rng.random() >= rate:
            continue
        key = str(rng.choice(["bbox", "keypoints", "area", "num_keypoints", "iscrowd", "segmentation", "id",
                              "image_id"]))
        bad = BAD_VALUES[int(rng.integers(len(BAD_VALUES)))]
        value = ann.get(key)
        if isinstance(value, list) and value and rng.random() < 0.6:  # one element of a list field
            i = int(rng.integers(len(value)))
            if isinstance(value[i], list) and value[i] and rng.random() < 0.7:  # one polygon vertex
                value[i][int(rng.integers(len(value[i])))] = bad
            else:
                value[i] = bad
        else:
            ann[key] = bad
    return data


def _per_record_only(monkeypatch):
    """Make the vectorised checks vouch for nothing: every record goes through `_parse_annotation`."""
    real = coco._parse_chunk

    def nothing_vouched(cands, k, require_keypoints):
        *arrays, parsed = real(cands, k, require_keypoints)
        return (*arrays, [None] * len(parsed))

    monkeypatch.setattr(coco, "_parse_chunk", nothing_vouched)


def _outcome(path, on_bad_record):
    try:
        out = load_coco_keypoints(path, path.parent, on_bad_record=on_bad_record, check_files=False)
    except COCOFormatError as e:
        return ("error", str(e))
    return ("ok", out.skipped, [(s.meta["image_id"], s.keypoints.tolist(), s.boxes.tolist(), s.meta["areas"].tolist(),
                                 s.meta["num_keypoints"].tolist(), s.meta["ann_ids"],
                                 json.dumps(s.meta["segments"], sort_keys=True, default=repr)) for s in out])


@pytest.mark.parametrize("on_bad_record", ["error", "skip"])
def test_vectorised_loader_matches_per_record_parser_on_mutated_files(tmp_path, monkeypatch, on_bad_record):
    monkeypatch.setattr(coco, "_CHUNK", 5)  # several chunks, and a bad record's neighbours in each
    rng = np.random.default_rng(7 if on_bad_record == "error" else 8)
    path = tmp_path / "coco.json"
    kinds = set()
    for trial in range(60):
        data = _mutate(rng, _template(rng), rate=[0.0, 0.05, 0.2, 0.6][trial % 4])
        path.write_text(json.dumps(data))
        fast = _outcome(path, on_bad_record)
        with monkeypatch.context() as m:
            _per_record_only(m)
            slow = _outcome(path, on_bad_record)
        assert fast == slow, f"trial {trial}"
        kinds.add(fast[0] if on_bad_record == "error" else bool(fast[1]))
    assert len(kinds) == 2  # both clean and bad files were compared


def test_vectorised_loader_vouches_for_clean_records(tmp_path, monkeypatch):
    """On a clean file the per-record parser runs only for RLE segmentations (crowds)."""
    rng = np.random.default_rng(3)
    data = _template(rng, n_anns=40)
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(data))
    calls = []
    real = coco._parse_annotation
    monkeypatch.setattr(coco, "_parse_annotation", lambda ann, *a, **kw: calls.append(ann) or real(ann, *a, **kw))
    out = load_coco_keypoints(path, tmp_path, check_files=False)
    assert sum(len(s.meta["segments"]) for s in out) == 40
    assert calls and all(isinstance(a.get("segmentation"), dict) for a in calls)


def test_num_keypoints_minus_one_is_refused_not_taken_as_absent(tmp_path):
    rng = np.random.default_rng(0)
    data = _template(rng, n_anns=3)
    data["annotations"][1]["num_keypoints"] = -1
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(data))
    with pytest.raises(COCOFormatError, match="annotation id 2 .*'num_keypoints' must be a non-negative count"):
        load_coco_keypoints(path, tmp_path, check_files=False)
