"""Property-based fuzzing (hypothesis) of every annotation reader, the config layer and the codecs.

The properties (issue 12, "Fuzzing"):
- readers: a malformed or random file either gives valid records (finite, in bounds, positive
  boxes and head sizes) or raises ValueError / FileNotFoundError naming the file; never another
  exception type, never NaN;
- config: random mappings and override strings give a Config or a ConfigError/ValueError;
- codecs: encode/decode of random valid keypoints (including out-of-image and invisible ones)
  and of random maps never produce NaN and stay in bounds.

The default run uses a short profile (FUZZ_EXAMPLES examples per target, a few seconds each);
`benchmarks/bench_fuzz.py` runs the same targets with many more and reports the inputs tried per
category (`COUNTS`).
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posekit.data.sample import MAX_COORDINATE, MAX_HEAD_SIZE

FUZZ_EXAMPLES = int(os.environ.get("POSEKIT_FUZZ_EXAMPLES", "25"))
COUNTS: Counter = Counter()  # inputs tried per category: readers / config / codecs
PROFILE = dict(deadline=None, derandomize=True, database=None,
               suppress_health_check=list(HealthCheck))
ALLOWED = (ValueError, FileNotFoundError)  # BadRecordError, format errors and ConfigError are ValueErrors

_TMP = Path(tempfile.mkdtemp(prefix="posekit_fuzz_"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)


def fuzz_settings():
    return settings(max_examples=FUZZ_EXAMPLES, **PROFILE)


# ------------------------------------------------------------------------------------------------
# values that break readers: non-finite, absurd, wrong types, escaping paths
NASTY_NUMBERS = [float("nan"), float("inf"), -float("inf"), 1e308, -1e308, 1e300, 1e7, -1.0, 0.0, 0.5, 3, -3,
                 2 ** 63, 10 ** 30, 10 ** 400, True, False]
NASTY_VALUES = NASTY_NUMBERS + [None, "", "abc", "1e3", "../../etc/passwd", "/etc/passwd", "C:\\x.jpg", [], {},
                                [1, 2], [[1, 2, 3]], {"a": 1}, "nan"]
nasty = st.sampled_from(NASTY_VALUES)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 6, 10 ** 6),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8), nasty)
json_any = st.recursive(json_leaf, lambda c: st.one_of(st.lists(c, max_size=4),
                                                        st.dictionaries(st.text(max_size=6), c, max_size=4)),
                        max_leaves=20)


def _mutate(draw, obj, rate=0.25):
    """A copy of a JSON-like template where some leaves or fields are replaced by nasty values,
    dropped, or lists cut short / extended with a duplicate. The choices come from a drawn seed:
    hypothesis biases floats towards 0, which would mutate every field at once."""
    if rate <= 0:
        return obj
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))

    def pick():
        return NASTY_VALUES[int(rng.integers(len(NASTY_VALUES)))]

    def walk(o):
        if isinstance(o, dict):
            out = {}
            for k, v in o.items():
                roll = rng.random()
                if roll < rate * 0.2:
                    continue  # drop the field
                out[k] = pick() if roll < rate else walk(v)
            return out
        if isinstance(o, list):
            items = [pick() if rng.random() < rate * 0.3 else walk(v) for v in o]
            if items and rng.random() < rate * 0.3:
                items = items[:-1] if rng.random() < 0.5 else items + [items[0]]  # wrong length / duplicate
            return items
        if isinstance(o, (int, float)) and not isinstance(o, bool) and rng.random() < rate * 0.3:
            return NASTY_NUMBERS[int(rng.integers(len(NASTY_NUMBERS)))]
        return o

    return walk(obj)


def _write(name: str, content) -> Path:
    path = _TMP / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content))  # NaN/Infinity literals: what a careless writer produces
    return path


def _call_reader(fn, path: Path, *args, **kwargs):
    """Run a reader; an allowed exception must name the file. Returns the result or None."""
    COUNTS["readers"] += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn(path, *args, **kwargs)
    except ALLOWED as e:
        assert path.name in str(e), f"{type(e).__name__} does not name the file {path.name}: {e}"
        COUNTS["readers_refused"] += 1
        return None
    COUNTS["readers_accepted"] += 1
    return out


def _finite_bounded(arr, what):
    arr = np.asarray(arr, dtype=np.float64)
    assert np.all(np.isfinite(arr)), f"{what} has non-finite values: {arr}"
    assert np.all(np.abs(arr) <= MAX_COORDINATE), f"{what} out of bounds: {arr}"


def _check_samples(samples):
    for s in samples:
        _finite_bounded(s.keypoints, "keypoints")
        assert s.keypoints.ndim == 3 and s.keypoints.shape[-1] == 3
        if s.boxes is not None and len(s.boxes):
            _finite_bounded(s.boxes, "boxes")
            assert np.all(s.boxes[:, 2:] > 0), s.boxes
        if s.image_path is not None:
            assert _TMP in Path(os.path.normpath(s.image_path)).parents, s.image_path


# ------------------------------------------------------------------------------------------------
# readers
def _coco_template(k=3):
    return {"images": [{"id": 1, "file_name": "a.jpg", "width": 640, "height": 480},
                       {"id": 2, "file_name": "sub/b.jpg", "width": 100, "height": 80}],
            "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "bbox": [10, 20, 100, 200], "area": 5000.0,
                             "iscrowd": 0, "num_keypoints": 2, "keypoints": [15, 25, 2, 30, 40, 1, 0, 0, 0],
                             "segmentation": [[10, 20, 110, 20, 110, 220, 10, 220]]},
                            {"id": 11, "image_id": 2, "category_id": 1, "bbox": [1, 2, 3, 4],
                             "keypoints": [1, 2, 2] * k}],
            "categories": [{"id": 1, "name": "person", "keypoints": ["a", "b", "c"], "skeleton": [[1, 2]]}]}


@st.composite
def coco_files(draw):
    if draw(st.integers(0, 9)) == 9:
        return draw(json_any)
    return _mutate(draw, _coco_template(), rate=draw(st.sampled_from([0.0, 0.01, 0.05, 0.15, 0.4])))


@fuzz_settings()
@given(coco_files(), st.sampled_from(["error", "skip"]))
def test_fuzz_coco_reader(content, on_bad_record):
    from posekit.data.formats.coco import ignore_mask, load_coco_keypoints
    path = _write("coco.json", content)
    out = _call_reader(load_coco_keypoints, path, _TMP, on_bad_record=on_bad_record, check_files=False)
    if out is None:
        return
    _check_samples(out)
    for s in out:
        assert np.isfinite(s.meta["areas"]).all() and (s.meta["areas"] > 0).all()
        assert set(np.unique(s.keypoints[..., 2])) <= {0.0, 1.0, 2.0}
        if s.meta["height"] * s.meta["width"] <= 1_000_000:
            try:
                mask = ignore_mask(s)
            except ValueError as e:  # a polygon pycocotools refuses: named per sample
                assert str(e)
                continue
            assert mask.shape == (s.meta["height"], s.meta["width"])


def _mpii_template():
    return [{"image": "015601864.jpg", "center": [594.0, 257.0], "scale": 3.02,
             "joints": [[620.0, 394.0]] * 15 + [[-1.0, -1.0]], "joints_vis": [1] * 15 + [0]},
            {"image": "015599452.jpg", "center": [952.0, 222.0], "scale": 2.47,
             "joints": [[900.0, 100.0]] * 16, "joints_vis": [1] * 16}]


@fuzz_settings()
@given(st.one_of(json_any, st.composite(lambda draw: _mutate(draw, _mpii_template(),
                                                              draw(st.sampled_from([0.0, 0.01, 0.05, 0.2]))))()))
def test_fuzz_mpii_json_reader(content):
    from posekit.data.formats.mpii import load_mpii_json, record_to_sample
    path = _write("mpii.json", content)
    out = _call_reader(load_mpii_json, path)
    for rec in out or []:
        _check_samples([record_to_sample(rec)])
        assert rec.scale > 0 and rec.scale * 200 <= MAX_COORDINATE


@st.composite
def mpii_h5_arrays(draw):
    n = draw(st.integers(0, 4))
    num = st.one_of(st.floats(-2000, 2000), st.sampled_from(NASTY_NUMBERS[:9]))
    arrays = {"center": np.array(draw(st.lists(st.lists(num, min_size=2, max_size=2), min_size=n, max_size=n))
                                 ).reshape(n, 2),
              "scale": np.array(draw(st.lists(num, min_size=n, max_size=n)), dtype=np.float64),
              "part": np.array(draw(st.lists(num, min_size=n * 32, max_size=n * 32))).reshape(n, 16, 2),
              "normalize": np.array(draw(st.lists(num, min_size=n, max_size=n)), dtype=np.float64),
              "index": np.array(draw(st.lists(st.sampled_from([0, 1, 1.5, float("nan")]), min_size=n, max_size=n))),
              "person": np.zeros(n)}
    names = draw(st.lists(st.sampled_from(["a.jpg", "../x.jpg", "/abs.jpg", "b.jpg"]), min_size=n, max_size=n))
    drop = draw(st.sampled_from([None, "scale", "part", "normalize"]))
    if drop:
        del arrays[drop]
    if draw(st.booleans()) and n:
        arrays["center"] = arrays["center"][:, :1]  # wrong shape
    return names, arrays


@fuzz_settings()
@given(mpii_h5_arrays())
def test_fuzz_mpii_h5_reader(data):
    import h5py
    from posekit.data.formats.mpii import load_mpii_h5, record_to_sample
    names, arrays = data
    path = _TMP / "mpii.h5"
    with h5py.File(path, "w") as f:
        f["imgname"] = np.array([n.encode() for n in names], dtype="S16")
        for k, v in arrays.items():
            f[k] = v
    out = _call_reader(load_mpii_h5, path)
    for rec in out or []:
        _check_samples([record_to_sample(rec)])
        if rec.annotated.any() and "normalize" in arrays:
            assert 0 < rec.head_size <= MAX_HEAD_SIZE


def _stanford_template():
    return [{"img_path": "n02085620-Chihuahua/n02085620_10074.jpg", "img_width": 500, "img_height": 333,
             "img_bbox": [24, 1, 321, 332], "joints": [[100.0, 120.0, 1.0]] * 20 + [[0, 0, 0]] * 4,
             "is_multiple_dogs": False, "seg": "abc"}] * 2


@fuzz_settings()
@given(st.one_of(json_any, st.composite(lambda draw: _mutate(draw, _stanford_template(),
                                                              draw(st.sampled_from([0.0, 0.01, 0.03, 0.1, 0.3]))))()))
def test_fuzz_stanford_extra_reader(content):
    from posekit.data.formats.stanford_extra import load_stanford_extra
    path = _write("stanford.json", content)
    out = _call_reader(load_stanford_extra, path, None)
    for r in out or []:
        _finite_bounded(r.joints, "joints")
        _finite_bounded(r.bbox, "bbox")
        assert r.bbox[2] > 0 and r.bbox[3] > 0


@fuzz_settings()
@given(st.one_of(json_any, st.composite(lambda draw: _mutate(draw, {"skeleton": "mpii16", "poses": [[[1.0, 2.0]] * 16]},
                                                              draw(st.sampled_from([0.0, 0.05, 0.3]))))(),
                 st.composite(lambda draw: _mutate(draw, [{"keypoints": [[1.0, 2.0, 0.9]] * 4, "skeleton": "x"}],
                                                   draw(st.sampled_from([0.0, 0.05, 0.3]))))()))
def test_fuzz_pose_json_reader(content):
    from posekit.data.formats.pose_json import read_pose_json
    path = _write("poses.json", content)
    for rec in _call_reader(read_pose_json, path) or []:
        _finite_bounded(rec["keypoints"], "poses")


token = st.one_of(st.sampled_from(["000001.jpg", "a/b.jpg", "../x.jpg", "/abs.jpg", "nan", "inf", "1e308", "-3",
                                   "12", "69", "lefteye_x", "x", "", "\\\\srv\\x.jpg", "1e5", "0"]),
                  st.floats(-1e4, 1e4).map(lambda v: f"{v:.2f}"), st.text(max_size=5))


@st.composite
def landmark_text(draw, columns):
    lines = []
    if draw(st.booleans()):
        lines.append(str(draw(st.integers(0, 4))))
    if draw(st.booleans()):
        header = list(columns) if columns else []
        lines.append(" ".join(draw(st.permutations(header)) if header else header))
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):  # a well-formed line
            lines.append(" ".join([draw(token.filter(lambda t: "/" in t or t.endswith(".jpg")))]
                                  + [f"{draw(st.floats(-50, 300)):.1f}" for _ in range(10)]))
        else:
            lines.append(" ".join(draw(st.lists(token, min_size=0, max_size=16))))
    sep = draw(st.sampled_from(["\n", "\r\n"]))
    return sep.join(lines)


@fuzz_settings()
@given(landmark_text(("lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y", "leftmouth_x",
                      "leftmouth_y", "rightmouth_x", "rightmouth_y")), st.booleans())
def test_fuzz_celeba_reader(text, strict):
    from posekit.data.formats.celeba import celeba_samples
    path = _write("landmarks.txt", text)
    out = _call_reader(celeba_samples, path, _TMP, strict_count=strict)
    _check_samples(out or [])


@fuzz_settings()
@given(landmark_text(()))
def test_fuzz_mtfl_reader(text):
    from posekit.data.formats.celeba import read_mtfl_list
    path = _write("mtfl.txt", text)
    _check_samples(_call_reader(read_mtfl_list, path, _TMP) or [])


_CAMERA_IDS = ("54138969", "55011271", "58860488", "60457274")


def _camera_record():
    return {"R": np.eye(3).tolist(), "T": [0.0, 0.0, -5.0], "f": [1145.0, 1144.0], "c": [512.0, 515.0],
            "k": [-0.2, 0.24, -0.002], "p": [-0.0007, -0.0015], "w": 1000, "h": 1002}


@st.composite
def h36m_inputs(draw):
    cams = {f"S1/{c}": _camera_record() for c in _CAMERA_IDS}
    if draw(st.floats(0, 1)) < 0.3:
        cams = _mutate(draw, cams, draw(st.sampled_from([0.02, 0.1])))
    n = draw(st.integers(0, 3))
    joints = draw(st.sampled_from([32, 17, 5]))
    value = st.one_of(st.floats(-1.0, 1.0), st.sampled_from([float("nan"), float("inf"), 1e300, 5.0]))
    poses = np.array(draw(st.lists(value, min_size=n * joints * 3, max_size=n * joints * 3))).reshape(n, joints, 3)
    mode = draw(st.sampled_from(["ok", "ok", "truncate", "flip_bytes", "not_dict", "no_key"]))
    return cams, poses, mode, draw(st.floats(0, 1))


@fuzz_settings()
@given(h36m_inputs())
def test_fuzz_h36m_npz_reader(data):
    from posekit.data.formats.h36m import load_videopose3d
    cams, poses, mode, cut = data
    cam_path = _write("cameras.json", cams)
    path = _TMP / "data_3d.npz"
    if mode == "not_dict":
        np.savez(path, positions_3d=poses)
    elif mode == "no_key":
        np.savez(path, other=poses)
    else:
        np.savez(path, positions_3d=np.array({"S1": {"Walking 1": poses}}, dtype=object))
    if mode == "truncate":
        data_bytes = path.read_bytes()
        path.write_bytes(data_bytes[: int(len(data_bytes) * cut)])
    elif mode == "flip_bytes":
        raw = bytearray(path.read_bytes())
        pos = int(len(raw) * cut) % max(len(raw), 1)
        raw[pos:pos + 8] = b"\xff" * len(raw[pos:pos + 8])
        path.write_bytes(bytes(raw))
    COUNTS["readers"] += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seqs = load_videopose3d(path, cam_path, ["S1"], allow_pickle=True)
    except ALLOWED as e:
        assert path.name in str(e) or cam_path.name in str(e), str(e)
        COUNTS["readers_refused"] += 1
        return
    COUNTS["readers_accepted"] += 1
    for s in seqs:
        assert np.isfinite(s.poses_3d).all() and np.isfinite(s.poses_2d).all()


# ------------------------------------------------------------------------------------------------
# config layer
# ints beyond float range are left to test_coerce_huge_int (a known config-layer bug, see there)
config_leaf = json_leaf.filter(lambda v: not (isinstance(v, int) and abs(v) > 1e300))


# ------------------------------------------------------------------------------------------------
# boxes files of `posekit predict --boxes` (issue 20): COCO detections, a COCO annotation file or
# {file name: boxes}, mutated (785.9 ids, NaN/Infinity tokens, 1e308 boxes, null categories, ...):
# the reader gives finite, in-bounds boxes with integer ids and scores in [0, 1], or refuses in one
# line naming the file.
def _boxes_template(form: str):
    dets = [{"image_id": 785, "category_id": 1, "bbox": [277.1, 45.7, 225.1, 333.6], "score": 0.99},
            {"image_id": 785, "category_id": 1, "bbox": [10, 20, 30, 40], "score": 0.3},
            {"image_id": 40083, "category_id": 1, "bbox": [1.5, 2.5, 100, 80]}]
    if form == "detections":
        return dets
    if form == "annotations":
        return {"images": [{"id": 785, "file_name": "000000000785.jpg"}, {"id": 40083, "file_name": "sub/b.jpg"}],
                "annotations": dets}
    return {"a.jpg": [[1, 2, 30, 40, 0.9]], "sub/b.jpg": [[5, 5, 10, 10]], "c": [0, 0, 4, 4]}


@st.composite
def boxes_files(draw):
    roll = draw(st.integers(0, 9))
    if roll == 9:
        return draw(json_any)
    content = _mutate(draw, _boxes_template(draw(st.sampled_from(["detections", "annotations", "names"]))),
                      rate=draw(st.sampled_from([0.0, 0.02, 0.1, 0.3])))
    if roll == 8:  # cut short: invalid JSON
        text = json.dumps(content)
        return text[:draw(st.integers(0, max(len(text) - 1, 0)))]
    return content


@fuzz_settings()
@given(boxes_files(), st.sampled_from([None, 1, "all"]))
def test_fuzz_boxes_file(content, category):
    from posekit.data.box_files import load_box_file
    path = _write("dets.json", content)
    boxes = _call_reader(load_box_file, path, category_id=category)
    if boxes is None:
        return
    assert all(type(k) is int for k in boxes.by_id) and all(type(v) is int for v in boxes.id_of_file.values())
    for rows in [*boxes.by_id.values(), *boxes.by_name.values()]:
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        _finite_bounded(rows, "boxes")
        assert np.all(rows[:, 2:4] > 0) and np.all((rows[:, 4] >= 0) & (rows[:, 4] <= 1)), rows
    for name in ("000000000785.jpg", "a.jpg", "sub/b.jpg", "x/40083.png", "c.jpg"):
        found = boxes.lookup(name, name)
        assert found is None or (found.ndim == 2 and found.shape[1] == 5)


def _config_values():
    return st.one_of(config_leaf, st.lists(config_leaf, max_size=3),
                     st.dictionaries(st.text(max_size=5), config_leaf, max_size=3))


@fuzz_settings()
@given(st.dictionaries(st.sampled_from(["lr", "batch_size", "max_steps", "warmup_steps", "grad_clip", "amp",
                                        "device", "betas", "seed", "channels_last", "compile", "resume",
                                        "exist_ok", "gamma", "nonsense"]), _config_values(), max_size=5))
def test_fuzz_build_dataclass(data):
    from posekit.config import TrainConfig, build_dataclass
    COUNTS["config"] += 1
    try:
        build_dataclass(TrainConfig, data, "train")
    except ValueError as e:
        assert "train" in str(e) or "config" in str(e), str(e)


_TYPES = [int, float, bool, str, list[int], list[float], dict, int | None, float | None, str | None, list[str] | None]


@fuzz_settings()
@given(_config_values(), st.sampled_from(_TYPES))
def test_fuzz_coerce(value, tp):
    from posekit.config import ConfigError, _coerce
    COUNTS["config"] += 1
    try:
        out = _coerce(value, tp, "key")
    except ConfigError as e:
        assert "key" in str(e)
        return
    if tp is float and out is not None:
        assert isinstance(out, float)
    if tp is bool:
        assert isinstance(out, bool)
        if isinstance(value, str):
            assert out == (value.lower() in ("true", "yes", "1"))  # "false" is never True


def test_coerce_huge_int():
    """`train.lr=1` followed by 400 zeros (YAML reads an int) must be a ConfigError naming the key."""
    from posekit.config import ConfigError, _coerce
    with pytest.raises(ConfigError, match="key"):
        _coerce(10 ** 400, float, "key")


override = st.one_of(st.text(max_size=30),
                     st.builds(lambda k, v: f"{k}={v}",
                               st.sampled_from(["train.lr", "train.batch_size", "model.args.x", "a..b", "", ".x",
                                                "train", "data.on_bad_record", "train.amp"]),
                               st.one_of(st.text(max_size=12), st.sampled_from(["[1, 2", "{a: [}", "off", "nan",
                                                                                 "1e999", "- a", "!!python/x 1"]))))


@fuzz_settings()
@given(st.lists(override, max_size=4))
def test_fuzz_parse_overrides(items):
    from posekit.config import parse_overrides
    COUNTS["config"] += 1
    try:
        out = parse_overrides(items)
    except ValueError:
        return
    assert isinstance(out, dict)


@fuzz_settings()
@given(st.fixed_dictionaries({}, optional={
    "task": st.one_of(st.sampled_from(["hourglass", "dogs", "gmh_mdn", "fse", "openpose", "nope"]), config_leaf),
    "name": st.one_of(st.sampled_from(["run", "../../x", "/abs", "a/b", ""]), config_leaf),
    "out_dir": config_leaf, "model": st.one_of(_config_values(), st.fixed_dictionaries(
        {}, optional={"name": config_leaf, "args": _config_values()})),
    "data": _config_values(), "train": _config_values(), "eval": _config_values(), "loss": _config_values(),
    "bogus": config_leaf}))
def test_fuzz_config_from_dict(raw):
    from posekit.engine.recipes import config_from_dict
    COUNTS["config"] += 1
    try:
        config_from_dict(raw, source="fuzz.yaml")
    except ValueError as e:
        assert "fuzz.yaml" in str(e), str(e)


# ------------------------------------------------------------------------------------------------
# codecs
coord = st.one_of(st.floats(-300, 600), st.sampled_from([-1e4, 1e4, 0.0, 255.5, 256.0, -0.5]))


@st.composite
def keypoint_sets(draw, max_people=3, k=None):
    p = draw(st.integers(0, max_people))
    k = k or draw(st.integers(1, 6))
    xy = np.array(draw(st.lists(coord, min_size=p * k * 2, max_size=p * k * 2)), dtype=np.float64).reshape(p, k, 2)
    v = np.array(draw(st.lists(st.sampled_from([0, 1, 2]), min_size=p * k, max_size=p * k)),
                 dtype=np.float64).reshape(p, k, 1)
    if p and draw(st.booleans()):  # unlabelled joints written as NaN by some pipelines
        xy[..., 0] = np.where(v[..., 0] == 0, np.nan, xy[..., 0])
    return np.concatenate([xy, v], axis=-1)


@fuzz_settings()
@given(keypoint_sets(max_people=1), st.sampled_from(["none", "shift", "dark"]), st.sampled_from([1.0, 2.0]))
def test_fuzz_heatmap_codec(kps, refine, sigma):
    from posekit.codecs.heatmap import HeatmapCodec
    COUNTS["codecs"] += 1
    codec = HeatmapCodec((64, 64), (16, 16), sigma, refine=refine)
    maps, weights = codec.encode(kps)
    if not len(kps):
        assert maps.shape == (0, kps.shape[1], 16, 16)
        return
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert set(np.unique(weights)) <= {0.0, 1.0}
    dec, scores = codec.decode(maps[0])
    assert np.isfinite(dec).all() and np.isfinite(scores).all()
    assert (dec >= -0.5).all() and (dec <= 63.5).all(), dec
    assert (scores >= 0).all() and (scores <= 1 + 1e-6).all()
    # weight 1 also covers joints up to 3 sigma off the map (trained on their partial Gaussian)
    on_map = np.isfinite(kps[0, :, :2]).all(-1) & (kps[0, :, :2] >= -0.5).all(-1) & (kps[0, :, :2] < 63.5).all(-1)
    ok = (weights[0] > 0) & on_map
    # a visible joint on the map decodes to within one heatmap cell (4 px) of where it was
    assert np.all(np.abs(dec[ok] - kps[0, ok, :2]) <= 4.0 + 1e-6), (dec[ok], kps[0, ok, :2])
    assert np.all(scores[weights[0] == 0] == 0)  # no target, no confidence


@st.composite
def random_maps(draw, shape, scale_max=5.0):
    """Map values from a drawn seed and kind (drawing each value through hypothesis is slow)."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    kind = draw(st.sampled_from(["normal", "uniform", "spikes", "constant", "ties"]))
    scale = draw(st.floats(1e-3, scale_max))
    if kind == "normal":
        values = rng.standard_normal(shape) * scale
    elif kind == "uniform":
        values = rng.uniform(-scale, scale, shape)
    elif kind == "spikes":
        values = np.zeros(shape)
        values.reshape(-1)[rng.integers(0, values.size, 3)] = scale
    elif kind == "constant":
        values = np.full(shape, rng.uniform(-scale, scale))
    else:
        values = rng.integers(0, 2, shape) * scale
    return torch.tensor(values, dtype=torch.float32)


@fuzz_settings()
@given(random_maps((1, 2, 8, 8)), st.floats(-3, 3))
def test_fuzz_heatmap_decode_random_maps(maps, level):
    from posekit.codecs.heatmap import decode_heatmaps
    COUNTS["codecs"] += 1
    maps[0, 1] = level  # a flat map: no peak, no confidence
    for refine in ("none", "shift", "dark"):
        kp, sc = decode_heatmaps(maps, refine=refine)
        assert torch.isfinite(kp).all() and torch.isfinite(sc).all()
        assert (kp >= -0.5).all() and (kp <= 7.5).all()
        assert sc[0, 1] <= 1e-6  # flat: the score is no peak, whatever the level


@fuzz_settings()
@given(keypoint_sets(), st.sampled_from(["visible", "none"]), st.booleans())
def test_fuzz_regression_codec(kps, mask, outside):
    from posekit.codecs.regression import RegressionCodec
    COUNTS["codecs"] += 1
    codec = RegressionCodec((96, 64), mask=mask, mask_outside=outside)
    targets, weights = codec.encode(kps)
    assert np.isfinite(targets).all() and set(np.unique(weights)) <= {0.0, 1.0}
    back = codec.decode(targets)
    ok = np.isfinite(kps[..., :2]).all(-1)
    np.testing.assert_allclose(back[ok], kps[..., :2][ok], rtol=1e-5, atol=1e-3)
    tback = codec.decode(torch.as_tensor(targets))
    assert torch.isfinite(tback).all()


@fuzz_settings()
@given(keypoint_sets(max_people=3, k=18))
def test_fuzz_paf_codec(kps):
    from posekit.codecs.paf import PAFCodec
    COUNTS["codecs"] += 1
    codec = PAFCodec(input_size=(64, 48), stride=8)
    heat, pafs = codec.encode(kps)
    assert np.isfinite(heat).all() and np.isfinite(pafs).all()
    assert heat.min() >= 0 and heat.max() <= 1 + 1e-6 and np.abs(pafs).max() <= 1 + 1e-5
    people, scores = codec.decode(heat, pafs)
    assert np.isfinite(people).all() and np.isfinite(scores).all()
    found = people[..., 2] > 0
    assert (people[..., 0][found] >= -8).all() and (people[..., 0][found] <= 64 + 8).all()
    assert (people[..., 1][found] >= -8).all() and (people[..., 1][found] <= 48 + 8).all()


@fuzz_settings()
@given(random_maps((1, 3, 6, 6), 1e3), st.sampled_from([0.05, 1.0, 10.0]))
def test_fuzz_landmark_decoder(maps, temperature):
    from posekit.codecs.landmarks import LandmarkDecoder
    COUNTS["codecs"] += 1
    ys, xs = torch.meshgrid(torch.arange(6.0), torch.arange(6.0), indexing="ij")
    centers = torch.stack([xs.reshape(-1) * 8 + 3.5, ys.reshape(-1) * 8 + 3.5], dim=1)
    dec = LandmarkDecoder(6, centers, temperature=temperature)
    kp, conf = dec(maps)
    assert torch.isfinite(kp).all() and torch.isfinite(conf).all()
    assert (kp >= 3.5 - 1e-3).all() and (kp <= 43.5 + 1e-3).all()
    assert (conf >= 0).all() and (conf <= 1 + 1e-5).all()


@fuzz_settings()
@given(st.integers(2, 6), st.floats(-1e4, 1e4), st.floats(0, 1e3), st.integers(0, 2 ** 16))
def test_fuzz_mdn_codec(n, offset, spread, seed):
    from posekit.codecs.mdn import MDNCodec
    COUNTS["codecs"] += 1
    rng = np.random.default_rng(seed)
    x = offset + spread * rng.standard_normal((n, 16, 2))
    y = spread * rng.standard_normal((n, 16, 3))
    if rng.random() < 0.3:
        x[:, 3] = offset  # a constant dimension
    codec = MDNCodec()
    codec.fit(x, y)
    z = codec.normalize_2d(torch.as_tensor(x, dtype=torch.float32))
    e = codec.encode(torch.as_tensor(y, dtype=torch.float32))
    assert torch.isfinite(z).all() and torch.isfinite(e).all()
    m = 3
    out = codec.decode(torch.as_tensor(rng.standard_normal((n, m, 48)), dtype=torch.float32),
                       torch.rand(n, m) + 0.1, torch.softmax(torch.randn(n, m), 1))
    assert torch.isfinite(out["hypotheses"]).all() and out["hypotheses"].shape == (n, m, 17, 3)
    assert (out["hypotheses"][:, :, 0] == 0).all()
    back = codec.denormalize_3d(e).reshape(n, 16, 3)
    np.testing.assert_allclose(back.numpy(), y, rtol=1e-3, atol=1e-2 * max(1.0, spread))


# ------------------------------------------------------------------------------------------------
def test_fuzz_counts_reported():
    """Runs last in this file: every category was exercised (the lead reports the counts)."""
    if not COUNTS:
        pytest.skip("run with the other fuzz tests")
    assert COUNTS["readers"] > 0 and COUNTS["config"] > 0 and COUNTS["codecs"] > 0
    print(f"\nfuzz inputs tried: {dict(COUNTS)}")



# ------------------------------------------------------------------------------------------------
# compressed COCO RLE (issue 20): strings pycocotools' C decoder misreads (garbage, truncated,
# non-ASCII, empty: it loops forever in merge or crashes) are refused before it sees them; valid
# ones from its own encoder, and mutations that still decode, read and give the mask their runs say.
# Only pycocotools' decode runs here (safe once the runs are checked); its merge, where the old
# hang was, is exercised in a subprocess in tests/test_coco_reliability.py.
RLE_H, RLE_W = 12, 16


@st.composite
def rle_strings(draw):
    from pycocotools import mask as mask_utils
    kind = draw(st.sampled_from(["valid", "mutated", "truncated", "garbage", "empty", "non_ascii"]))
    if kind == "empty":
        return kind, None, ""
    if kind == "garbage":
        return kind, None, draw(st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=40))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    mask = rng.random((RLE_H, RLE_W)) < rng.random()
    if rng.random() < 0.5:  # long runs: multi-character values and negative deltas
        mask = np.zeros((RLE_H, RLE_W), bool)
        mask[rng.integers(0, RLE_H):rng.integers(0, RLE_H + 1), rng.integers(0, RLE_W):] = True
    s = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()
    if kind == "valid":
        return kind, mask, s
    if kind == "truncated":  # cut inside a value, or one more char that says "more follows"
        return kind, None, s + chr(int(rng.integers(80, 112))) if rng.random() < 0.5 else \
            s[:int(rng.integers(0, len(s)))] + chr(int(rng.integers(80, 112)))
    if kind == "non_ascii":
        at = int(rng.integers(0, len(s) + 1))
        return kind, None, s[:at] + draw(st.characters(min_codepoint=128)) + s[at:]
    chars = list(s)
    for _ in range(int(rng.integers(1, 4))):
        op, at = rng.integers(0, 4), int(rng.integers(0, len(chars)))
        new = chr(int(rng.integers(40, 120)))  # mostly '0'..'o', sometimes just outside
        if op == 0:
            chars[at] = new
        elif op == 1:
            chars.insert(at, new)
        elif op == 2 and len(chars) > 1:
            del chars[at]
        else:
            chars[at], chars[-1 - at] = chars[-1 - at], chars[at]
    return kind, None, "".join(chars)


@fuzz_settings()
@given(rle_strings())
def test_fuzz_coco_rle_counts(case):
    from posekit.data.formats.coco import _rle_string_runs, ignore_mask, load_coco_keypoints
    kind, mask, counts = case
    content = {"images": [{"id": 1, "file_name": "a.jpg", "width": RLE_W, "height": RLE_H}],
               "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "iscrowd": 1,
                                "area": 16.0, "keypoints": [0] * 9, "num_keypoints": 0,
                                "segmentation": {"size": [RLE_H, RLE_W], "counts": counts}}],
               "categories": [{"id": 1, "name": "person", "keypoints": ["a", "b", "c"]}]}
    path = _write("rle.json", content)
    out = _call_reader(load_coco_keypoints, path, _TMP, check_files=False)
    if kind in ("empty", "truncated", "non_ascii"):
        assert out is None, f"{kind} RLE {counts!r} was accepted"
    if kind == "valid":
        assert out is not None, f"pycocotools' own RLE {counts!r} was refused"
    if out is None:
        return
    runs = _rle_string_runs(counts)
    assert runs.min() >= 0 and runs.sum() == RLE_H * RLE_W
    expected = np.repeat(np.arange(len(runs)) % 2, runs).reshape(RLE_W, RLE_H).T  # runs go down columns
    got = ignore_mask(out[0])  # pycocotools decodes the string itself: it must read what we read
    np.testing.assert_array_equal(got, expected)
    if mask is not None:
        np.testing.assert_array_equal(got, mask)
