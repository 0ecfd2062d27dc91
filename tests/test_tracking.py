"""Tracking, smoothing, MOT scores and the synthetic video: each test names the guarantee it shows."""
from __future__ import annotations

import json

import numpy as np
import pytest

from posekit.data.synthetic.video import SyntheticVideo
from posekit.engine.tracking import PoseTracker, box_iou
from posekit.metrics.mot import MOTAccumulator, pose_distances
from posekit.ops.one_euro import OneEuroFilter
from posekit.skeletons import get_skeleton, map_keypoints

COCO = get_skeleton("coco17")


def _detections(sample, rng, noise=1.5):
    """A detector stand-in: every person with >= 3 labelled joints, those joints with pixel noise."""
    vis = sample.keypoints[..., 2] > 0
    keep = vis.sum(1) >= 3
    kp = sample.keypoints[keep, :, :2] + rng.normal(0, noise, sample.keypoints[keep, :, :2].shape)
    scores = np.where(vis[keep], 0.9, 0.0)
    return kp, scores, sample.meta["track_ids"][keep]


def _track(video, rng, **options):
    tracker = PoseTracker(COCO, **options)
    per_frame = []
    for t in range(len(video)):
        kp, scores, gt_ids = _detections(video[t], rng)
        ids, _ = tracker.update(kp, scores)
        per_frame.append(dict(zip(gt_ids.tolist(), ids.tolist())))
    return per_frame


def _id_map(per_frame, gt_id):
    return {frame[gt_id] for frame in per_frame if gt_id in frame}


# --- the synthetic video ---------------------------------------------------------------------------
def test_synthetic_video_frames_are_pure_functions_of_seed_and_index():
    a, b = SyntheticVideo(20, seed=3), SyntheticVideo(20, seed=3)
    assert np.array_equal(a[7].image, b[7].image) and np.array_equal(a[7].keypoints, b[7].keypoints)
    assert not np.array_equal(a[7].image, SyntheticVideo(20, seed=4)[7].image)
    assert a[7].image.shape == (240, 320, 3) and a[7].image.dtype == np.uint8


def test_synthetic_video_walkers_cross_and_hide_behind_the_pillar():
    video = SyntheticVideo(40, seed=1, people=3, pillar_frames=3)
    x = {t: [w.x0 + w.vx * t for w in video.walkers[:2]] for t in (0, 39)}
    assert x[0][0] < x[0][1] and x[39][0] > x[39][1]  # the first two swap sides: their paths cross
    assert all(0 <= v < 320 for t in (0, 39) for v in x[t])  # inside the frame at both ends
    hidden = [2 not in video[t].meta["track_ids"] for t in range(40)]
    longest = max(len(run) for run in "".join("x" if h else "." for h in hidden).split("."))
    assert longest >= 3  # walker 2 fully behind the pillar for at least 3 frames


# --- the tracker -----------------------------------------------------------------------------------
def test_ids_stay_with_people_through_a_crossing():
    video = SyntheticVideo(40, seed=2, people=2, crossing=True)
    per_frame = _track(video, np.random.default_rng(0))
    ids0, ids1 = _id_map(per_frame, 0), _id_map(per_frame, 1)
    assert len(ids0) == 1 and len(ids1) == 1 and ids0 != ids1  # one id each, never exchanged


def test_ids_survive_a_three_frame_occlusion():
    video = SyntheticVideo(40, seed=1, people=3, pillar_frames=3)
    hidden = [t for t in range(40) if 2 not in video[t].meta["track_ids"]]
    assert len(hidden) >= 3
    per_frame = _track(video, np.random.default_rng(1))
    before = {f[2] for f in per_frame[:hidden[0]] if 2 in f}
    after = {f[2] for f in per_frame[hidden[-1] + 1:] if 2 in f}
    assert len(before) == 1 and before == after  # the same id before and after the pillar


def test_a_track_ends_after_max_missed_frames_and_a_new_person_gets_a_new_id():
    tracker = PoseTracker(COCO, max_missed=2)
    pose = np.random.default_rng(0).uniform(50, 150, (1, 17, 2))
    scores = np.full((1, 17), 0.9)
    assert tracker.update(pose, scores)[0].tolist() == [0]
    for _ in range(3):
        assert tracker.update(np.zeros((0, 17, 2)), np.zeros((0, 17)))[0].tolist() == []
    assert tracker.update(pose, scores)[0].tolist() == [1]


def test_unconfident_people_are_not_born_as_tracks():
    tracker = PoseTracker(COCO, birth_score=0.5)
    pose = np.random.default_rng(0).uniform(50, 150, (2, 17, 2))
    pose[1] += 300
    ids, _ = tracker.update(pose, np.full((2, 17), 0.9), person_scores=np.array([0.9, 0.2]))
    assert ids.tolist() == [0, -1]


def test_smoothing_cuts_jitter_on_a_still_pose_and_follows_a_moving_one():
    rng = np.random.default_rng(0)
    still = rng.uniform(50, 150, (17, 2))
    tracker = PoseTracker(COCO, smooth={"min_cutoff": 1.0, "beta": 0.05}, fps=25)
    raw, out = [], []
    for _ in range(100):
        noisy = still + rng.normal(0, 2.0, still.shape)
        raw.append(noisy)
        out.append(tracker.update(noisy[None], np.full((1, 17), 0.9))[1][0])
    jitter = lambda seq: np.abs(np.diff(np.asarray(seq)[20:], 2, axis=0)).mean()  # noqa: E731
    assert jitter(out) * 3 < jitter(raw)
    f = OneEuroFilter(1.0, 0.05)
    for t in range(50):  # 100 px/s: the estimate keeps up (lag under 5 px)
        y = f(np.array([[4.0 * t, 0.0]]), t / 25)
    assert abs(y[0, 0] - 4.0 * 49) < 5.0


def test_a_missing_joint_does_not_drag_its_filter():
    f = OneEuroFilter(1.0, 0.0)
    f(np.array([[10.0, 10.0], [20.0, 20.0]]), 0.0)
    f(np.array([[10.0, 10.0], [20.0, 20.0]]), 0.04)
    out = f(np.array([[10.0, 10.0], [0.0, 0.0]]), 0.08, valid=np.array([True, False]))
    assert out[1].tolist() == [0.0, 0.0]  # an unseen joint is passed through, not filtered toward (0, 0)
    again = f(np.array([[10.0, 10.0], [20.0, 20.0]]), 0.12)
    assert np.allclose(again[1], [20.0, 20.0])  # and its state did not move while it was missing
    assert np.isnan(f(np.array([[np.nan, 1.0], [20.0, 20.0]]), 0.16)[0, 0])


@pytest.mark.parametrize("kwargs, match", [({"min_cutoff": 0}, "min_cutoff"), ({"beta": -1}, "beta"),
                                           ({"min_cutoff": float("nan")}, "min_cutoff")])
def test_bad_one_euro_parameters_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OneEuroFilter(**kwargs)


def test_propagated_boxes_cover_the_last_pose_enlarged():
    tracker = PoseTracker(COCO)
    pose = np.zeros((1, 17, 2))
    pose[0, :, 0] = np.linspace(100, 140, 17)
    pose[0, :, 1] = np.linspace(50, 130, 17)
    tracker.update(pose, np.full((1, 17), 0.9))
    (box,) = tracker.propagated_boxes(scale=1.25)
    assert np.allclose(box[:4], [95, 40, 50, 100]) and box[4] == 1.0
    assert box_iou(box[None, :4], np.array([[100, 50, 40, 80]]))[0, 0] == pytest.approx(0.64)


# --- MOT scores on hand cases ----------------------------------------------------------------------
def _acc(frames):
    acc = MOTAccumulator()
    for gt, hyp, d in frames:
        acc.update(gt, hyp, np.asarray(d, dtype=float))
    return acc.compute()


def test_mot_perfect_tracking_scores_one():
    m = _acc([(["a", "b"], [1, 2], [[0.1, np.nan], [np.nan, 0.1]])] * 3)
    assert m["idf1"] == 1.0 and m["id_switches"] == 0 and m["mota"] == 1.0


def test_mot_two_people_swapping_ids_is_two_switches_and_idf1_one_half():
    keep = (["a", "b"], [1, 2], [[0.1, np.nan], [np.nan, 0.1]])
    swap = (["a", "b"], [1, 2], [[np.nan, 0.1], [0.1, np.nan]])
    m = _acc([keep, keep, swap, swap])
    assert m["id_switches"] == 2 and m["idf1"] == pytest.approx(0.5)


def test_mot_a_fragmented_track_is_one_switch():
    m = _acc([(["a"], [1], [[0.1]]), (["a"], [1], [[0.1]]), (["a"], [2], [[0.1]]), (["a"], [2], [[0.1]])])
    assert m["id_switches"] == 1 and m["idf1"] == pytest.approx(0.5) and m["gt_tracks"] == 1 and m["pred_tracks"] == 2


def test_mot_a_miss_then_the_same_id_is_no_switch_another_id_is_one():
    same = _acc([(["a"], [1], [[0.1]]), (["a"], [], np.zeros((1, 0))), (["a"], [1], [[0.1]])])
    assert same["id_switches"] == 0 and same["misses"] == 1 and same["idf1"] == pytest.approx(4 / 5)
    other = _acc([(["a"], [1], [[0.1]]), (["a"], [], np.zeros((1, 0))), (["a"], [2], [[0.1]])])
    assert other["id_switches"] == 1


def test_mot_keeps_a_still_valid_correspondence_over_a_cheaper_swap():
    m = _acc([(["a", "b"], [1, 2], [[0.1, np.nan], [np.nan, 0.1]]),
              (["a", "b"], [1, 2], [[0.4, 0.1], [0.1, 0.4]])])  # Hungarian alone would swap; CLEAR-MOT does not
    assert m["id_switches"] == 0 and m["false_positives"] == 0


def test_pose_distances_are_one_minus_oks_and_nan_beyond_the_threshold():
    gt = np.zeros((1, 17, 3))
    gt[0, :, :2] = np.random.default_rng(0).uniform(0, 100, (17, 2))
    gt[0, :, 2] = 2
    d = pose_distances(gt, np.array([1e4]), np.stack([gt[0, :, :2], gt[0, :, :2] + 80]), COCO.oks_sigmas())
    assert d[0, 0] == pytest.approx(0.0) and np.isnan(d[0, 1])


def test_duplicate_ids_in_a_frame_are_refused():
    with pytest.raises(ValueError, match="unique"):
        MOTAccumulator().update(["a", "a"], [1], np.zeros((2, 1)))


# --- skeleton mapping for lifting tracks ---------------------------------------------------------
def test_openpose18_maps_to_the_lifter_layout_like_coco17_does():
    coco = np.random.default_rng(0).uniform(0, 100, (3, 17, 3))
    coco[..., 2] = 1.0
    via_openpose = map_keypoints(map_keypoints(coco, "coco17", "openpose18", has_visibility=True),
                                 "openpose18", "h36m17", has_visibility=True)
    direct = map_keypoints(coco, "coco17", "h36m17", has_visibility=True)
    assert np.allclose(via_openpose, direct)
    from posekit.data.lifting import lift_layouts
    assert "openpose18" in lift_layouts() and "coco17" in lift_layouts()


# --- Predictor.track and predict --track on a real (one-step) checkpoint ----------------------------
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from conftest import smoke_checkpoints
    return smoke_checkpoints(tmp_path_factory, {"hourglass": ["eval.flip_test=false", "data.input_size=64",
                                                              "data.heatmap_size=16", "data.synthetic_image_size=96"]})


def test_predictor_track_with_ground_truth_boxes_keeps_ids_through_a_crossing(checkpoints):
    from posekit.engine.predictor import Predictor
    video = SyntheticVideo(16, seed=2, people=2, image_size=(160, 120), speed=3.0)
    samples = [video[t] for t in range(len(video))]
    predictor = Predictor(checkpoints("hourglass"))
    boxes = [[[*b, 1.0] for b in s.boxes] for s in samples]
    results = list(predictor.track((s.image for s in samples), boxes=boxes, tracker={"birth_score": 0.0}))
    assert len(results) == 16 and all(r.track_ids is not None and len(r.track_ids) == len(r) for r in results)
    seen = {}
    for s, r in zip(samples, results):  # GT person i -> its box's track id, every frame
        for gt_id, tid in zip(s.meta["track_ids"].tolist(), r.track_ids.tolist()):
            seen.setdefault(gt_id, set()).add(tid)
    assert all(len(v) == 1 for v in seen.values()) and len(set.union(*seen.values())) == len(seen)
    assert "track_ids" in results[0].to_dict()


def test_predictor_track_det_every_runs_the_detector_on_every_nth_frame_only(checkpoints):
    from posekit.engine.predictor import Predictor
    video = SyntheticVideo(9, seed=0, people=1, image_size=(160, 120))
    samples = [video[t] for t in range(len(video))]
    calls = []

    def detector(index, image):
        calls.append(index)
        return [[*samples[index].boxes[0], 1.0]]

    predictor = Predictor(checkpoints("hourglass"))
    out = list(predictor.track((s.image for s in samples), boxes=detector, det_every=4,
                               tracker={"birth_score": 0.0, "kpt_thr": 0.0}))
    assert len(out) == 9 and calls == [0, 4, 8]
    assert all(len(r) == 1 for r in out)  # between detector frames the box came from the last pose


def test_predict_track_writes_track_ids_and_a_tracked_video(checkpoints, tmp_path):
    from posekit.cli import main
    video = SyntheticVideo(12, seed=0, people=2, image_size=(160, 120))
    path = video.write(tmp_path / "walk.mp4")
    code = main(["predict", str(checkpoints("openpose")), str(path), "--out", str(tmp_path / "out"), "--track",
                 "--smooth", "one_euro", "--no-progress"])
    assert code == 0
    lines = [json.loads(x) for x in (tmp_path / "out" / "walk.jsonl").read_text().splitlines()]
    assert len(lines) == 12 and all("track_ids" in x and len(x["track_ids"]) == len(x["keypoints"]) for x in lines)
    assert (tmp_path / "out" / "walk.mp4").stat().st_size > 0


@pytest.mark.parametrize("argv, match", [(["--det-every", "0", "--track"], "--det-every must be at least 1"),
                                         (["--smooth", "one_euro"], "needs --track"),
                                         (["--track", "--smooth", "one_euro", "--smooth-beta", "-1"], "beta")])
def test_bad_tracking_options_are_one_line_errors(tmp_path, capsys, argv, match):
    from posekit.cli import main
    ckpt = tmp_path / "x.pt"
    ckpt.write_bytes(b"")
    (tmp_path / "v.mp4").write_bytes(b"")
    assert main(["predict", str(ckpt), str(tmp_path / "v.mp4"), "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0] and err[0].startswith("posekit predict: error:")


def _tracked_jsonl(path, frames=6):
    """A `predict --track` JSON-lines file made from the synthetic video's ground truth."""
    video = SyntheticVideo(frames, seed=0, people=2, image_size=(160, 120))
    with open(path, "w") as f:
        for t in range(frames):
            s = video[t]
            kp = np.where(s.keypoints[..., 2:] > 0, s.keypoints[..., :2], np.nan)
            rec = {"skeleton": "coco17", "keypoints": kp.tolist(), "scores": (s.keypoints[..., 2] > 0).astype(float)
                   .tolist(), "track_ids": [int(i) + 3 for i in s.meta["track_ids"]], "frame": t, "time_s": t / 25}
            f.write(json.dumps(rec).replace("NaN", "null") + "\n")
    return video


def test_lift_tracks_writes_one_3d_file_per_track_and_a_side_by_side_video(checkpoints, tmp_path):
    from posekit.cli import main
    _tracked_jsonl(tmp_path / "walk.jsonl")
    out = tmp_path / "out"
    assert main(["lift", str(checkpoints("gmh_mdn")), "--tracks", str(tmp_path / "walk.jsonl"), "--out", str(out)]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["walk_3d.mp4", "walk_track3.3d.jsonl", "walk_track4.3d.jsonl"]
    lines = [json.loads(x) for x in (out / "walk_track3.3d.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(6)) and all(x["track_id"] == 3 for x in lines)
    assert np.asarray(lines[0]["keypoints"]).shape[-1] == 3 and len(lines[0]["hypothesis_weights"]) >= 1
    from posekit.data.video import VideoReader
    assert sum(1 for _ in VideoReader(out / "walk_3d.mp4")) == 6


def test_lift_tracks_refuses_an_untracked_file_in_one_line(checkpoints, tmp_path, capsys):
    from posekit.cli import main
    (tmp_path / "plain.jsonl").write_text(json.dumps({"skeleton": "coco17", "keypoints": [], "scores": []}) + "\n")
    assert main(["lift", str(checkpoints("gmh_mdn")), "--tracks", str(tmp_path / "plain.jsonl"),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "line 1" in err[0] and "--track" in err[0]
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
