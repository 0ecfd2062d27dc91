"""Built-in skeletons. Index orders follow each dataset's own files (see ../shared/realdata/MANIFEST.md)."""
from __future__ import annotations

from . import Skeleton, _hex_to_rgb, register_skeleton

# --- COCO-17 (person_keypoints) -------------------------------------------------------------
COCO17 = register_skeleton(Skeleton(
    name="coco17",
    keypoints=("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
               "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
               "left_knee", "right_knee", "left_ankle", "right_ankle"),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    # the official 1-based `skeleton` field of person_keypoints, made 0-based
    limbs=((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
           (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6)),
    sigmas=(.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062, .107, .107, .087, .087, .089, .089),
    colors=tuple([(255, 255, 255)] + [(60, 160, 255), (255, 120, 60)] * 8),
))

# --- OpenPose / CMU 18-part order (COCO plus a neck) ----------------------------------------
# `limbs` is the 19-limb PAF channel layout (channels 2i, 2i+1 = limb i), matching the CMU model.
OPENPOSE18 = register_skeleton(Skeleton(
    name="openpose18",
    keypoints=("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
               "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
               "right_eye", "left_eye", "right_ear", "left_ear"),
    flip_pairs=((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (14, 15), (16, 17)),
    limbs=((1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13), (1, 2), (2, 3), (3, 4), (2, 16), (1, 5),
           (5, 6), (6, 7), (5, 17), (1, 0), (0, 14), (0, 15), (14, 16), (15, 17)),
    # COCO sigmas in this order; the neck (not in COCO) uses the shoulder value
    sigmas=(.026, .079, .079, .072, .062, .079, .072, .062, .107, .087, .089, .107, .087, .089,
            .025, .025, .035, .035),
    colors=((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
            (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
            (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85)),
))

# --- MPII-16 ---------------------------------------------------------------------------------
MPII16 = register_skeleton(Skeleton(
    name="mpii16",
    keypoints=("r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax", "upper_neck",
               "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist"),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    limbs=((0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9), (7, 12), (12, 11), (11, 10),
           (7, 13), (13, 14), (14, 15)),
    colors=tuple([(255, 120, 60)] * 3 + [(60, 160, 255)] * 3 + [(255, 255, 255)] * 4 + [(255, 120, 60)] * 3
                 + [(60, 160, 255)] * 3),
))

# --- Human3.6M: the 17 moving joints (Martinez / mmpose order) -------------------------------
H36M17 = register_skeleton(Skeleton(
    name="h36m17",
    keypoints=("root", "right_hip", "right_knee", "right_foot", "left_hip", "left_knee", "left_foot", "spine",
               "thorax", "neck_base", "head", "left_shoulder", "left_elbow", "left_wrist", "right_shoulder",
               "right_elbow", "right_wrist"),
    flip_pairs=((1, 4), (2, 5), (3, 6), (11, 14), (12, 15), (13, 16)),
    limbs=((0, 1), (1, 2), (2, 3), (0, 4), (4, 5), (5, 6), (0, 7), (7, 8), (8, 9), (9, 10), (8, 11), (11, 12),
           (12, 13), (8, 14), (14, 15), (15, 16)),
    colors=tuple([(255, 255, 255)] + [(255, 120, 60)] * 3 + [(60, 160, 255)] * 3 + [(255, 255, 255)] * 4
                 + [(60, 160, 255)] * 3 + [(255, 120, 60)] * 3),
))

# --- Human3.6M raw 32-joint mocap layout (3d-pose-baseline files) -----------------------------
_H36M32_USED = {0: "root", 1: "right_hip", 2: "right_knee", 3: "right_foot", 4: "right_toe", 6: "left_hip",
                7: "left_knee", 8: "left_foot", 9: "left_toe", 12: "spine", 13: "thorax", 14: "neck_base",
                15: "head", 17: "left_shoulder", 18: "left_elbow", 19: "left_wrist", 25: "right_shoulder",
                26: "right_elbow", 27: "right_wrist"}
H36M32 = register_skeleton(Skeleton(
    name="h36m32",
    keypoints=tuple(_H36M32_USED.get(i, f"raw{i:02d}") for i in range(32)),
    flip_pairs=((1, 6), (2, 7), (3, 8), (4, 9), (17, 25), (18, 26), (19, 27)),
    limbs=((0, 1), (1, 2), (2, 3), (3, 4), (0, 6), (6, 7), (7, 8), (8, 9), (0, 12), (12, 13), (13, 14),
           (14, 15), (13, 17), (17, 18), (18, 19), (13, 25), (25, 26), (26, 27)),
))
# the 17 joints of the 32 that move (3d-pose-baseline's "used" set)
H36M32_TO_17 = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)
# 2-D -> 3-D lifting in the h36m17 order (3d-pose-baseline, GMH-MDN): the 2-D input drops
# neck_base (no Stacked Hourglass counterpart), the 3-D output drops the root
H36M17_LIFT_INPUTS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16)
H36M17_LIFT_OUTPUTS = tuple(range(1, 17))

# --- StanfordExtra-24 dogs (keypoint_definitions.csv) ----------------------------------------
_DOG = [("left_front_paw", "d82400"), ("left_front_middle", "d82400"), ("left_front_top", "d82400"),
        ("left_rear_paw", "fcfc00"), ("left_rear_middle", "fcfc00"), ("left_rear_top", "fcfc00"),
        ("right_front_paw", "48b455"), ("right_front_middle", "48b455"), ("right_front_top", "48b455"),
        ("right_rear_paw", "0090aa"), ("right_rear_middle", "0090aa"), ("right_rear_top", "0090aa"),
        ("tail_start", "d848ff"), ("tail_end", "d848ff"), ("left_ear_base", "fc90aa"),
        ("right_ear_base", "006caa"), ("nose", "d89000"), ("chin", "d89000"), ("left_ear_tip", "fc90aa"),
        ("right_ear_tip", "006caa"), ("left_eye", "ededed"), ("right_eye", "ededed"), ("withers", "a9d08e"),
        ("throat", "a9d08e")]
STANFORD_EXTRA24 = register_skeleton(Skeleton(
    name="stanford_extra24",
    keypoints=tuple(n for n, _ in _DOG),
    flip_pairs=((0, 6), (1, 7), (2, 8), (3, 9), (4, 10), (5, 11), (14, 15), (18, 19), (20, 21)),
    limbs=((0, 1), (1, 2), (3, 4), (4, 5), (6, 7), (7, 8), (9, 10), (10, 11), (2, 8), (5, 12), (11, 12),
           (12, 13), (14, 18), (15, 19), (14, 16), (15, 16), (16, 17), (22, 23)),
    colors=tuple(_hex_to_rgb(c) for _, c in _DOG),
))
# keypoints 20-23 exist only for Animal-Pose compatibility and are never labelled in StanfordExtra
STANFORD_EXTRA_LABELLED = tuple(range(20))

# --- MAFL / CelebA 5 landmarks ----------------------------------------------------------------
# "lefteye" is the eye on the image-left side (the subject's right eye), as in the CelebA files.
MAFL5 = register_skeleton(Skeleton(
    name="mafl5",
    keypoints=("lefteye", "righteye", "nose", "leftmouth", "rightmouth"),
    flip_pairs=((0, 1), (3, 4)),
    limbs=((0, 2), (1, 2), (2, 3), (2, 4), (3, 4)),
    colors=((60, 160, 255), (255, 120, 60), (255, 255, 255), (60, 160, 255), (255, 120, 60)),
))
