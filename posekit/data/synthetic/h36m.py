"""Synthetic Human3.6M-like lifting data: a 17-joint kinematic skeleton, random poses and cameras.

Why: a fresh clone can train, test and demo the lifter with no download, and the data has the
same depth ambiguities that make a mixture of hypotheses worthwhile (a limb seen from the front
projects the same whether it points towards or away from the camera).

* Skeleton: the h36m17 joint order with bone lengths measured on Human3.6M subject S1 (thigh
  443 mm, shin 454 mm, upper arm 279 mm, ...), scaled per person by 0.85-1.15 and perturbed per bone.
* Poses: per "action" a prototype of joint angles is drawn inside human joint limits (hip
  flexion -30..120 deg, knee 0..150, shoulder flexion -60..180, ...); each frame perturbs its
  action's prototype and clips to the limits, so actions are distinct but varied.
* Cameras: H36M-like intrinsics (f ~ 1145 px, 1000 x 1000 images) placed 3.5-6.5 m away at a
  random azimuth and height, looking at the pelvis; 2-D points are projected and get Gaussian
  pixel noise (detector-like).

The result is a `LiftingDataset` in exactly the layout of the real loader (16 2-D joints in px,
16 root-relative camera-frame joints in mm).
"""
from __future__ import annotations

import numpy as np

from posekit.data.cameras import project_points
from posekit.data.lifting import LiftingDataset
from posekit.skeletons.builtin import H36M17_LIFT_INPUTS as INPUT_JOINTS
from posekit.skeletons.builtin import H36M17_LIFT_OUTPUTS as OUTPUT_JOINTS

# h36m17: parent of each joint, and the rest offset (mm) from the parent in a body frame with
# x = the subject's left, y = forward, z = up (standing, arms hanging down)
PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
REST_OFFSETS = np.array([
    [0, 0, 0],
    [-133, 0, 0], [0, 0, -443], [0, 0, -454],  # right hip, knee, foot
    [133, 0, 0], [0, 0, -443], [0, 0, -454],  # left hip, knee, foot
    [0, 0, 233], [0, 0, 257], [0, 10, 121], [0, 0, 115],  # spine, thorax, neck_base, head
    [151, 0, 0], [0, 0, -279], [0, 0, -252],  # left shoulder, elbow, wrist
    [-151, 0, 0], [0, 0, -279], [0, 0, -252],  # right shoulder, elbow, wrist
], dtype=np.float64)

# joint angles (degrees): name -> (child joint whose bone the rotation drives, axis kind, low, high)
# "flex" rotates about the body x axis, "abd" about y, "twist" about z (the rest bone axis)
ANGLES = (
    ("torso_flex", 7, "flex", -10, 60), ("torso_side", 7, "abd", -20, 20), ("torso_twist", 7, "twist", -30, 30),
    ("chest_flex", 8, "flex", -10, 30), ("chest_side", 8, "abd", -15, 15), ("chest_twist", 8, "twist", -20, 20),
    ("head_flex", 10, "flex", -30, 45), ("head_side", 10, "abd", -30, 30), ("head_twist", 10, "twist", -60, 60),
    ("r_hip_flex", 2, "flex", -30, 120), ("r_hip_abd", 2, "abd", -20, 45), ("r_hip_twist", 2, "twist", -30, 30),
    ("r_knee", 3, "flex", 0, 150),
    ("l_hip_flex", 5, "flex", -30, 120), ("l_hip_abd", 5, "abd", -20, 45), ("l_hip_twist", 5, "twist", -30, 30),
    ("l_knee", 6, "flex", 0, 150),
    ("l_sho_flex", 12, "flex", -60, 180), ("l_sho_abd", 12, "abd", 0, 170), ("l_sho_twist", 12, "twist", -60, 60),
    ("l_elbow", 13, "flex", 0, 150),
    ("r_sho_flex", 15, "flex", -60, 180), ("r_sho_abd", 15, "abd", 0, 170), ("r_sho_twist", 15, "twist", -60, 60),
    ("r_elbow", 16, "flex", 0, 150),
)
# sign per angle so that positive means the anatomical direction: torso/chest/head flex bend forward,
# knees bend the shin backward, abduction moves a limb outwards on its own side
_SIGN = {"torso_flex": -1, "chest_flex": -1, "head_flex": -1, "r_knee": -1, "l_knee": -1,
         "l_hip_abd": -1, "l_sho_abd": -1, "r_hip_abd": 1, "r_sho_abd": 1}
LOW = np.array([a[3] for a in ANGLES], dtype=np.float64)
HIGH = np.array([a[4] for a in ANGLES], dtype=np.float64)


def _rot(axis: str, theta: np.ndarray) -> np.ndarray:
    """(N,) radians -> (N, 3, 3) rotation about a body axis."""
    c, s = np.cos(theta), np.sin(theta)
    o, z = np.ones_like(theta), np.zeros_like(theta)
    if axis == "flex":  # x
        m = [[o, z, z], [z, c, -s], [z, s, c]]
    elif axis == "abd":  # y
        m = [[c, z, s], [z, o, z], [-s, z, c]]
    else:  # z
        m = [[c, -s, z], [s, c, z], [z, z, o]]
    return np.moveaxis(np.array(m), (0, 1), (-2, -1))


def forward_kinematics(angles_deg: np.ndarray, offsets: np.ndarray, root_rotation: np.ndarray) -> np.ndarray:
    """Joint angles (N, A) degrees, bone offsets (N, 17, 3) and a global rotation (N, 3, 3) -> (N, 17, 3).

    Each angle drives the bone from a joint's parent to the joint (the rotation is applied in the
    parent's frame and inherited by the whole sub-chain).
    """
    n = len(angles_deg)
    bone_rot = np.tile(np.eye(3), (n, 17, 1, 1))
    # compose per bone: R = R_abd @ R_flex @ R_twist
    order = {"twist": 0, "flex": 1, "abd": 2}
    for (name, joint, kind, _, _), col in sorted(zip(ANGLES, range(len(ANGLES))), key=lambda t: order[t[0][2]]):
        theta = np.deg2rad(angles_deg[:, col]) * _SIGN.get(name, 1)
        bone_rot[:, joint] = _rot(kind, theta) @ bone_rot[:, joint]
    frames = np.zeros((n, 17, 3, 3))
    pos = np.zeros((n, 17, 3))
    for j, parent in enumerate(PARENTS):
        if parent < 0:
            frames[:, j] = root_rotation
            continue
        frames[:, j] = frames[:, parent] @ bone_rot[:, j]
        pos[:, j] = pos[:, parent] + np.einsum("nij,nj->ni", frames[:, j], offsets[:, j])
    return pos


def look_at(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(N, 3) camera centres looking at (N, 3) targets in a z-up world -> (N, 3, 3) world-to-camera R
    (camera x right, y down, z forward)."""
    fwd = target - position
    fwd /= np.linalg.norm(fwd, axis=1, keepdims=True)
    right = np.cross(fwd, np.array([0.0, 0.0, 1.0]))
    right /= np.linalg.norm(right, axis=1, keepdims=True)
    down = np.cross(fwd, right)
    return np.stack([right, down, fwd], axis=1)


def generate(num_samples: int, *, seed: int = 0, num_actions: int = 15, noise_px: float = 5.0,
             spread: float = 0.15, action_seed: int = 1234) -> dict[str, np.ndarray]:
    """Raw synthetic arrays: 3-D camera-frame (N, 17, 3) mm, 2-D (N, 17, 2) px, action index (N,).

    `action_seed` fixes the action prototypes (shared by train/val/test splits made with different
    `seed`s); `spread` is the per-frame angle noise as a fraction of each joint's range.
    """
    proto_rng = np.random.default_rng(action_seed)
    span = HIGH - LOW
    # prototypes lean towards the lower half of each range (people mostly stand with limbs down)
    prototypes = LOW + span * proto_rng.beta(1.3, 2.2, size=(num_actions, len(ANGLES)))
    rng = np.random.default_rng(seed)
    action = rng.integers(0, num_actions, size=num_samples)
    angles = np.clip(prototypes[action] + rng.normal(0, spread, size=(num_samples, len(ANGLES))) * span, LOW, HIGH)
    person_scale = rng.uniform(0.85, 1.15, size=(num_samples, 1, 1))
    offsets = REST_OFFSETS[None] * person_scale * rng.normal(1.0, 0.03, size=(num_samples, 17, 1))
    yaw = rng.uniform(-np.pi, np.pi, num_samples)
    tilt = rng.normal(0, np.deg2rad(4), num_samples)
    root_rot = _rot("twist", yaw) @ _rot("flex", tilt)
    pose_world = forward_kinematics(angles, offsets, root_rot)
    pelvis = np.stack([rng.normal(0, 300, num_samples), rng.normal(0, 300, num_samples),
                       rng.uniform(850, 1000, num_samples)], axis=1)
    pose_world = pose_world + pelvis[:, None]
    # cameras: H36M-like placement and intrinsics
    azimuth = rng.uniform(-np.pi, np.pi, num_samples)
    dist = rng.uniform(3500, 6500, num_samples)
    cam_pos = pelvis + np.stack([dist * np.cos(azimuth), dist * np.sin(azimuth),
                                 rng.uniform(800, 1800, num_samples) - pelvis[:, 2]], axis=1)
    aim = pelvis + rng.normal(0, 150, size=(num_samples, 3))
    R = look_at(cam_pos, aim)
    pose_cam = np.einsum("nij,nkj->nki", R, pose_world - cam_pos[:, None])
    f = rng.normal(1145, 5, size=(num_samples, 1, 2))
    c = np.array([500.0, 500.0]) + rng.normal(0, 3, size=(num_samples, 1, 2))
    xy = pose_cam[..., :2] / pose_cam[..., 2:3]
    pose_2d = xy * f + c + rng.normal(0, noise_px, size=xy.shape)
    return {"poses_3d": pose_cam, "poses_2d": pose_2d, "action": action, "angles": angles}


def synthetic_h36m(num_samples: int, *, seed: int = 0, num_actions: int = 15, noise_px: float = 5.0,
                   spread: float = 0.15, miss_num: int = 0, miss_prob: float = 1.0) -> LiftingDataset:
    """A named dataset ("synthetic" in the recipe) in the real loader's layout."""
    raw = generate(num_samples, seed=seed, num_actions=num_actions, noise_px=noise_px, spread=spread)
    p3d, p2d = raw["poses_3d"], raw["poses_2d"]
    targets = (p3d - p3d[:, :1])[:, list(OUTPUT_JOINTS)]
    names = [f"synth{i:02d}" for i in range(num_actions)]
    meta = {"subject": np.array(["synthetic"] * num_samples), "camera": np.array(["synthetic"] * num_samples),
            "frame": np.arange(num_samples), "poses_2d_17": p2d.astype(np.float32)}
    return LiftingDataset(p2d[:, list(INPUT_JOINTS)], targets, raw["action"], names, meta=meta,
                          miss_num=miss_num, miss_prob=miss_prob, name="synthetic")


# keep `project_points` importable from here for users building their own cameras
__all__ = ["generate", "synthetic_h36m", "forward_kinematics", "look_at", "project_points"]
