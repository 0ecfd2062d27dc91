"""Metrics: PCK/PCKh, COCO OKS AP, MPJPE/P-MPJPE, landmark NME."""

# The unit of each metric the families report, declared once: the training log prints it next
# to the value and the run's outputs record it. Values are never rescaled: PCK/PCKh/NME are in
# percent, COCO AP/AR fractions in [0, 1], 3-D errors in mm. "" = a count or a plain number.
METRIC_UNITS: dict[str, str] = {
    "pck": "%", "pckh": "%", "pck_torso": "%", "pck_seg": "%",
    "nme": "%", "nme_mean_shape": "%", "nme_fit": "%",
    **{name: "(0-1)" for name in ("AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AR75", "AR_M", "AR_L")},
    "p1": "mm", "p2": "mm", "mpjpe": "mm", "p_mpjpe": "mm",
    "mean_px_error": "px", "mean_max_weight": "(0-1)",
    "samples": "", "pckh_samples": "", "pck_seg_images": "", "num_frames": "", "val_loss": "",
}


def metric_unit(name: str) -> str:
    """The unit of metric `name`: per-joint ("pck/head"), thresholded ("pckh@0.1") and suffixed
    ("p1_best_j16") names take their base's; "" when none is declared."""
    base = name.split("/")[0].split("@")[0]
    while base:
        if base in METRIC_UNITS:
            return METRIC_UNITS[base]
        base = base.rpartition("_")[0]
    return ""
