"""Drawing (cv2) and plots (matplotlib), one module per kind of picture; no logic lives here.

    colors    one colour per person or track id, left/right sides from the skeleton
    overlay   2-D skeletons, boxes and labels on an image (`draw_skeleton`)
    panels    upscaled crops, captions, pictures side by side
    comparison  "ground truth | prediction" of one image (`truth_and_prediction`)
    pose3d    3-D hypotheses of a lifter (`lifting_figure`, `plot_3d_hypotheses`)
    curves    training curves from metrics.csv (`plot_training_curves`)

This package only re-exports them, so `from posekit.viz import draw_skeleton` keeps working.
"""
from posekit.viz.colors import (CENTRE_RGB, LEFT_RGB, LOW_SCORE_GREY, LOW_SCORE_LABEL_RGB, RIGHT_RGB, joint_sides,
                                limb_sides, person_color, person_colors)
from posekit.viz.comparison import truth_and_prediction
from posekit.viz.curves import plot_training_curves, training_curves_figure
from posekit.viz.overlay import draw_sizes, draw_skeleton, label_rects, put_text
from posekit.viz.panels import caption, side_by_side, upscale
from posekit.viz.pose3d import lifting_figure, plot_3d_hypotheses

__all__ = ["CENTRE_RGB", "LEFT_RGB", "LOW_SCORE_GREY", "LOW_SCORE_LABEL_RGB", "RIGHT_RGB", "caption", "draw_sizes",
           "draw_skeleton", "joint_sides", "label_rects", "lifting_figure", "limb_sides", "person_color",
           "person_colors", "plot_3d_hypotheses", "plot_training_curves", "put_text", "side_by_side",
           "training_curves_figure", "truth_and_prediction", "upscale"]
