"""Drawing: boxes, score threshold, person colours and track ids, labels that never overlap, doubtful
people drawn as such, sizes that follow the image, captions, the lifting figure and curves.png
(checked on pixels and on the matplotlib figures, never by eye alone)."""
import numpy as np
import pytest

from posekit.results import Results
from posekit.skeletons import Skeleton, get_skeleton
from posekit.viz import (caption, draw_sizes, draw_skeleton, joint_sides, label_rects, lifting_figure, limb_sides,
                         person_color, person_colors, plot_training_curves, side_by_side, training_curves_figure,
                         upscale)

LINE = Skeleton(name="viz_line3", keypoints=("left_a", "middle", "right_a"), flip_pairs=((0, 2),),
                limbs=((0, 1), (1, 2)), colors=((255, 0, 0), (0, 255, 0), (0, 0, 255)))


def _blank(h=200, w=200):
    return np.zeros((h, w, 3), np.uint8)


def test_box_is_drawn_in_the_person_colour():
    kp = np.array([[[50, 100], [100, 100], [150, 100]]], float)
    out = draw_skeleton(_blank(), kp, None, LINE, boxes=np.array([[30, 40, 140, 120]]))
    color = tuple(int(c) for c in person_colors(1)[0])
    assert tuple(out[40, 100]) == color  # top edge
    assert tuple(out[160, 100]) == color  # bottom edge (y + h)
    assert tuple(out[100, 30]) == color  # left edge
    assert not out[60, 60].any()  # inside, away from limbs: untouched
    without = draw_skeleton(_blank(), kp, None, LINE)
    assert not without[40, 100].any()


def test_threshold_hides_joints_and_limbs_need_both_ends():
    kp = np.array([[[50, 100], [100, 100], [150, 100]]], float)
    scores = np.array([[0.9, 0.9, 0.2]])
    out = draw_skeleton(_blank(), kp, scores, LINE, score_threshold=0.5)
    assert out[100, 50].any() and out[100, 100].any()  # two joints above the threshold
    assert out[100, 75].any()  # the limb between them
    assert not out[100, 150].any()  # the joint below the threshold is not drawn
    assert not out[100, 125].any()  # nor the limb that needs it
    everything = draw_skeleton(_blank(), kp, scores, LINE, score_threshold=0.1)
    assert everything[100, 150].any() and everything[100, 125].any()
    # non-finite joints are skipped too
    kp_nan = kp.copy()
    kp_nan[0, 0] = np.nan
    assert not draw_skeleton(_blank(), kp_nan, None, LINE)[100, 50].any()


def test_labels_write_the_keypoint_names():
    kp = np.array([[[50, 60], [100, 60], [150, 60]]], float)
    plain = draw_skeleton(_blank(), kp, None, LINE)
    named = draw_skeleton(_blank(), kp, None, LINE, labels=True)
    region = (slice(35, 56), slice(55, 95))  # right of and above the first joint
    assert not plain[region].any() and named[region].any()
    with pytest.raises(ValueError, match="labels has 2 names"):
        draw_skeleton(_blank(), kp, None, LINE, labels=["a", "b"])


def test_sizes_follow_the_image():
    small, big = draw_sizes((64, 64)), draw_sizes((2160, 3840))
    assert small["thickness"] == 1 and small["radius"] == 2
    assert big["thickness"] >= 8 and big["radius"] > small["radius"] * 5 and big["font_scale"] > 2


def test_every_person_gets_its_own_box_colour():
    colors = person_colors(6)
    assert len({tuple(c) for c in colors}) == 6
    kp = np.array([[[20, 50], [40, 50], [60, 50]], [[120, 150], [140, 150], [160, 150]]], float)
    boxes = np.array([[10, 30, 60, 40], [110, 130, 60, 40]])
    out = draw_skeleton(_blank(), kp, None, LINE, boxes=boxes, color_by_person=True)
    assert tuple(out[30, 40]) == tuple(colors[0]) and tuple(out[130, 140]) == tuple(colors[1])
    assert np.abs(out[50, 30].astype(int) - colors[0]).max() < 40  # the limb too, in the person's colour


def _near(pixel, color, tol=40):
    return int(np.abs(np.asarray(pixel, int) - np.asarray(color, int)).max()) < tol


def test_several_people_are_told_apart_by_colour_one_keeps_limb_colours():
    two = np.array([[[20, 50], [60, 50], [100, 50]], [[20, 150], [60, 150], [100, 150]]], float)
    out = draw_skeleton(_blank(), two, None, LINE)  # no colour option: chosen from the number of people
    assert _near(out[50, 40], person_color(0)) and _near(out[150, 40], person_color(1))
    assert _near(out[50, 80], person_color(0)) and _near(out[150, 80], person_color(1))  # every limb
    one = draw_skeleton(_blank(), two[:1], None, LINE)
    assert _near(one[50, 40], LINE.limb_colors_rgb()[0]) and _near(one[50, 80], LINE.limb_colors_rgb()[1])
    forced = draw_skeleton(_blank(), two, None, LINE, color_by_person=False)
    assert _near(forced[150, 40], LINE.limb_colors_rgb()[0])


def test_results_plot_colours_several_people_by_person():
    two = np.array([[[20, 50], [60, 50], [100, 50]], [[20, 150], [60, 150], [100, 150]]], float)
    out = Results(two, np.ones((2, 3)), LINE, image=_blank()).plot()
    assert _near(out[50, 40], person_color(0)) and _near(out[150, 40], person_color(1))
    single = Results(two[:1], np.ones((1, 3)), LINE, image=_blank()).plot()
    assert _near(single[50, 40], LINE.limb_colors_rgb()[0])


def test_track_ids_keep_a_person_s_colour_across_frames():
    a = np.array([[[20, 50], [60, 50], [100, 50]]], float)
    b = np.array([[[20, 150], [60, 150], [100, 150]]], float)
    frame1 = draw_skeleton(_blank(), np.concatenate([a, b]), None, LINE, track_ids=[7, 3])
    frame2 = draw_skeleton(_blank(), np.concatenate([b, a]), None, LINE, track_ids=[3, 7])  # order changed
    assert _near(frame1[50, 40], person_color(7)) and _near(frame2[50, 40], person_color(7))
    assert _near(frame1[150, 40], person_color(3)) and _near(frame2[150, 40], person_color(3))
    with pytest.raises(ValueError, match="track_ids has 1 ids for 2 people"):
        draw_skeleton(_blank(), np.concatenate([a, b]), None, LINE, track_ids=[1])


def test_box_labels_never_overlap_even_for_nearly_identical_boxes():
    boxes = np.array([[50, 50, 100, 100], [52, 51, 100, 100], [51, 50, 99, 101], [50, 52, 100, 98]], float)
    rects = label_rects(boxes, [(60, 16)] * 4, (200, 200))
    assert all(r is not None for r in rects)
    for i in range(4):
        x0, y0, x1, y1 = rects[i]
        assert 0 <= x0 < x1 < 200 and 0 <= y0 < y1 < 200 and (x1 - x0, y1 - y0) == (60, 16)
        for j in range(i):
            o = rects[j]
            assert o[2] < x0 or x1 < o[0] or o[3] < y0 or y1 < o[1], (rects[i], o)
    assert rects[0] == (50, 32, 110, 48)  # the first one where it is expected: just above its box, clear of it
    # a label that cannot fit anywhere free is left out rather than drawn over another
    assert label_rects(np.array([[0, 0, 40, 18]] * 2, float), [(40, 18)] * 2, (20, 41))[1] is None
    # drawn: both labels show, each filled in its person's colour over and above its box outline
    nan = np.full((2, 3, 2), np.nan)
    out = draw_skeleton(_blank(), nan, None, LINE, boxes=boxes[:2], person_scores=np.array([0.9, 0.8]))
    outline_only = 2 * (100 + 100) + 8
    for p in range(2):
        assert (out == person_color(p)).all(axis=2).sum() > outline_only + 150


def test_a_person_under_the_threshold_is_not_drawn_as_confident():
    kp = np.array([[[100, 150], [300, 150], [500, 150]], [[100, 450], [300, 450], [500, 450]]], float)
    boxes = np.array([[80, 100, 440, 100], [80, 400, 440, 100]], float)
    out = draw_skeleton(_blank(600, 600), kp, None, LINE, boxes=boxes, person_scores=np.array([0.9, 0.1]),
                        person_threshold=0.3)
    sure, unsure = out[130:170, 120:280], out[430:470, 120:280]  # the first limb of each
    assert (sure.any(axis=2)).sum() > 1.5 * (unsure.any(axis=2)).sum() > 0  # thinner
    assert _near(out[150, 200], person_color(0), 10)
    assert not _near(out[450, 200], person_color(1), 30) and out[450, 200].any()  # greyed, still visible
    assert out[150, 97].max() > 200 and out[450, 97].max() < 60  # a confident joint is a dot, a doubtful one a ring
    assert (out[100, 80:520] != out[100, 80]).all(axis=1).sum() == 0  # solid box edge
    assert (~out[400, 80:520].any(axis=1)).sum() > 100  # dashed box edge
    # the threshold defaults to the keypoint threshold; a score at the threshold is confident
    same = draw_skeleton(_blank(600, 600), kp, None, LINE, boxes=boxes, person_scores=np.array([0.9, 0.3]),
                         score_threshold=0.3)
    assert _near(same[450, 200], person_color(1), 10)
    no_scores = draw_skeleton(_blank(600, 600), kp, None, LINE, boxes=boxes, score_threshold=0.3)
    assert _near(no_scores[450, 200], person_color(1), 10)  # without person scores nobody is doubted


def test_caption_upscales_small_crops_and_side_by_side_pads():
    crop = np.full((64, 48, 3), 7, np.uint8)
    out = caption(crop, "ground truth", min_height=384)
    assert out.shape[1] == 288 and out.shape[0] > 384  # 6x, plus the bar
    assert (out[0] == 255).all() and (out[-1] == 7).all()
    assert upscale(crop, 32) is not None and upscale(crop, 32).shape == crop.shape  # never down
    with pytest.raises(ValueError, match="interpolation"):
        upscale(crop, 100, interpolation="cubic")
    row = side_by_side([np.zeros((10, 5, 3), np.uint8), np.zeros((20, 5, 3), np.uint8)], gap=3)
    assert row.shape == (20, 13, 3) and (row[15, :5] == 255).all()


def test_left_right_sides_from_flip_pairs_and_names():
    sk = get_skeleton("h36m17")
    sides = joint_sides(sk)
    assert sides[sk.index("left_hip")] == -1 and sides[sk.index("right_wrist")] == 1 and sides[0] == 0
    limbs = limb_sides(sk)
    assert limbs[sk.limbs.index((0, 4))] == -1 and limbs[sk.limbs.index((0, 1))] == 1
    assert limbs[sk.limbs.index((0, 7))] == 0


def _lifted(people=2, m=3):
    rng = np.random.default_rng(0)
    hyp = rng.normal(size=(people, m, 17, 3)) * 200
    return Results(hyp[:, 0], np.ones((people, 17)), "h36m17", hypotheses=hyp,
                   hypothesis_weights=np.tile([0.2, 0.5, 0.3], (people, 1)),
                   keypoints_2d=rng.uniform(0, 100, size=(people, 17, 2)),
                   meta={"gt_keypoints_3d": (hyp[:, 1] + 10).tolist()})


def test_lifting_figure_one_row_per_person_panel_per_hypothesis():
    import matplotlib.pyplot as plt

    fig = lifting_figure(_lifted())
    try:
        titles = [ax.get_title() for ax in fig.axes]
        assert len(fig.axes) == 2 * (3 + 1)  # 2 people x (2-D input + 3 hypotheses)
        assert titles[1].startswith("h1  w=0.50") and "mm" in titles[1]  # most likely first, error vs GT
        ax3 = fig.axes[1]
        assert "mm" in ax3.get_xlabel() and "mm" in ax3.get_zlabel()
        spans = [abs(np.diff(lim)[0]) for lim in (ax3.get_xlim(), ax3.get_ylim(), ax3.get_zlim())]
        assert np.allclose(spans, spans[0])  # equal aspect
        assert sum(1 for line in ax3.get_lines() if line.get_linestyle() == "--") == 16  # GT limbs
        assert "person 2" in titles[4]
    finally:
        plt.close(fig)
    single = _lifted(people=1).plot()
    double = _lifted(people=2).plot()
    assert double.shape[0] > 1.6 * single.shape[0]  # every person drawn


def _rows():
    rows = [{"step": s, "loss": 1.0 / s, "lr": 1e-3 * min(1.0, s / 20) * (1 - s / 101) + 1e-6} for s in range(1, 101)]
    rows.append({"step": 100, "val/pck": 0.5, "val/val_loss": 0.02, "val/pck/nose": 0.1})
    return rows


def test_curves_panels_lr_axis_and_single_validation_point(tmp_path):
    import matplotlib.pyplot as plt

    fig = training_curves_figure(_rows(), metric_keys=["val/pck"], initial={"val/pck": 0.01})
    try:
        assert [ax.get_title() for ax in fig.axes[:3]] == ["training", "validation loss", "validation metric"]
        lr_ax = fig.axes[3]  # the twin axis
        assert lr_ax.get_ylabel() == "learning rate" and lr_ax.get_yscale() == "log"
        labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert labels == ["train loss", "train loss (smoothed)", "learning rate"]
        (vloss,) = fig.axes[1].get_lines()
        assert list(vloss.get_ydata()) == [0.02]
        metric_x = fig.axes[2].get_lines()[0].get_xdata()
        assert list(metric_x) == [0, 100]  # the untrained score at step 0, then the one validation
    finally:
        plt.close(fig)
    path = plot_training_curves(_rows(), tmp_path / "sub" / "curves.png", metric_keys=["val/pck"])
    assert path.is_file() and path.stat().st_size > 10_000
    # rows without validation yet still plot
    assert plot_training_curves(_rows()[:-1], tmp_path / "c2.png").is_file()
