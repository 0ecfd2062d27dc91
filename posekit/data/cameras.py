"""Human3.6M cameras: world -> camera frame, and pinhole projection with radial + tangential distortion.

Two on-disk forms carry the same calibration:

* ``cameras.h5`` of 3d-pose-baseline: groups ``subject<k>/camera<1..4>`` with ``R`` (stored
  transposed), ``T`` (camera centre in world mm), ``f``, ``c``, ``k`` (3 radial), ``p`` (2 tangential)
  and ``Name`` (the camera id as float ASCII codes);
* mmpose's ``cameras.json`` (a JSON copy of ``cameras.pkl``): keys ``"S1/54138969"``, ``T`` in metres.

Both are read into the same `Camera` record with the convention ``X_cam = R @ (X_world - T)``,
``T`` in millimetres, so every downstream computation is written once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posekit.data.io import read_json
from posekit.data.sample import MAX_COORDINATE

# camera1..4 of every subject, in the order the 3d-pose-baseline and VideoPose3D files use
CAMERA_IDS = ("54138969", "55011271", "58860488", "60457274")


@dataclass(frozen=True)
class Camera:
    """One calibrated camera. `R` maps world directions to camera axes (x right, y down, z forward)."""

    R: np.ndarray  # (3, 3)
    T: np.ndarray  # (3,) camera centre in world coordinates, mm
    f: np.ndarray  # (2,) focal lengths, px
    c: np.ndarray  # (2,) principal point, px
    k: np.ndarray  # (3,) radial distortion
    p: np.ndarray  # (2,) tangential distortion
    id: str = ""
    subject: str = ""
    width: int = 1000
    height: int = 1000

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        return world_to_camera(points, self.R, self.T)

    def camera_to_world(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        return points @ self.R + self.T

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        return project_points(points_cam, self.f, self.c, self.k, self.p)

    def project_world(self, points_world: np.ndarray) -> np.ndarray:
        return self.project(self.world_to_camera(points_world))


def world_to_camera(points: np.ndarray, R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """(..., 3) world points -> camera frame: R (X - T). Units follow T (mm for H36M)."""
    points = np.asarray(points, dtype=np.float64)
    return (points - np.asarray(T, dtype=np.float64).reshape(3)) @ np.asarray(R, dtype=np.float64).T


def project_points(points_cam: np.ndarray, f, c, k=(0.0, 0.0, 0.0), p=(0.0, 0.0)) -> np.ndarray:
    """(..., 3) camera-frame points -> (..., 2) pixels with the Brown-Conrady model H36M uses.

    With normalised coordinates (x, y) = (X/Z, Y/Z) and r^2 = x^2 + y^2:
    radial = 1 + k1 r^2 + k2 r^4 + k3 r^6, and the tangential terms are written in the H36M
    ordering (p = (p1, p2) where p2 multiplies x and p1 multiplies y in the shared factor):
    x' = x (radial + p2 x + p1 y) + p2 r^2,  y' = y (radial + p2 x + p1 y) + p1 r^2.
    Pixels are f * (x', y') + c.
    """
    pts = np.asarray(points_cam, dtype=np.float64)
    f = np.asarray(f, dtype=np.float64).reshape(2)
    c = np.asarray(c, dtype=np.float64).reshape(2)
    k = np.asarray(k, dtype=np.float64).reshape(3)
    p = np.asarray(p, dtype=np.float64).reshape(2)
    z = pts[..., 2:3]
    if np.any(z <= 0):
        raise ValueError("project_points: points at or behind the camera (Z <= 0) cannot be projected")
    xy = pts[..., :2] / z
    r2 = np.sum(xy ** 2, axis=-1, keepdims=True)
    radial = 1.0 + k[0] * r2 + k[1] * r2 ** 2 + k[2] * r2 ** 3
    tan = p[1] * xy[..., 0:1] + p[0] * xy[..., 1:2]
    distorted = xy * (radial + tan) + r2 * np.array([p[1], p[0]])
    return distorted * f + c


ROTATION_TOLERANCE = 1e-3  # |R R^T - I| and |det R - 1|; calibration files store R to ~1e-6


def _vector(group, key: str, size: int, where: str) -> np.ndarray:
    if key not in group:
        raise ValueError(f"{where}: camera field '{key}' is missing")
    try:
        value = np.asarray(group[key], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{where}: camera field '{key}' must be numbers") from None
    if value.size != size:
        raise ValueError(f"{where}: camera field '{key}' has {value.size} values, expected {size}")
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{where}: camera field '{key}' has non-finite values {value.tolist()}")
    return value


def check_camera(cam: Camera, where: str) -> Camera:
    """Refuse calibrations that would silently give wrong 3-D: R not a rotation (R R^T != I or
    det != 1), a camera centre or principal point beyond 1e6 (mm / px), focal lengths <= 0."""
    orth = float(np.abs(cam.R @ cam.R.T - np.eye(3)).max())
    det = float(np.linalg.det(cam.R))
    if orth > ROTATION_TOLERANCE or abs(det - 1.0) > ROTATION_TOLERANCE:
        raise ValueError(f"{where}: R is not a rotation matrix (max |R R^T - I| = {orth:.3g}, det = {det:.6g})")
    if np.abs(cam.T).max() > MAX_COORDINATE:
        raise ValueError(f"{where}: camera centre T {cam.T.tolist()} is beyond {MAX_COORDINATE:g} mm; a unit error?")
    if not np.all(cam.f > 0) or cam.f.max() > MAX_COORDINATE:
        raise ValueError(f"{where}: focal lengths f {cam.f.tolist()} must be positive (and below {MAX_COORDINATE:g} px)")
    if np.abs(cam.c).max() > MAX_COORDINATE:
        raise ValueError(f"{where}: principal point c {cam.c.tolist()} is beyond {MAX_COORDINATE:g} px")
    if np.abs(cam.k).max() > 1e3 or np.abs(cam.p).max() > 1e3:
        raise ValueError(f"{where}: distortion k {cam.k.tolist()} / p {cam.p.tolist()} is absurd (|value| > 1000)")
    if not (0 < cam.width <= MAX_COORDINATE and 0 < cam.height <= MAX_COORDINATE):
        raise ValueError(f"{where}: image size {cam.width}x{cam.height} must be positive")
    return cam


def load_cameras_h5(path: str | Path) -> dict[tuple[str, str], Camera]:
    """3d-pose-baseline ``cameras.h5`` -> {("S1", "54138969"): Camera, ...} with T in mm."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"camera file not found: {path}")
    cams: dict[tuple[str, str], Camera] = {}
    try:
        handle = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 camera file ({e})") from None
    with handle as f:
        for group_name in f:
            if not group_name.startswith("subject"):
                continue  # e.g. the '3dtest' pose
            subject = "S" + group_name[len("subject"):]
            for cam_name in f[group_name]:
                g = f[group_name][cam_name]
                where = f"{path}: {group_name}/{cam_name}"
                R = _vector(g, "R", 9, where).reshape(3, 3).T  # stored transposed
                try:
                    if "Name" in g:
                        cam_id = "".join(chr(int(v)) for v in np.asarray(g["Name"]).reshape(-1))
                    else:
                        index = int(cam_name.replace("camera", "")) - 1
                        cam_id = CAMERA_IDS[index]
                except (TypeError, ValueError, OverflowError, IndexError):
                    raise ValueError(f"{where}: camera 'Name' (or a camera1..4 group name) is needed to identify "
                                     "the camera") from None
                cams[(subject, cam_id)] = check_camera(
                    Camera(R=R, T=_vector(g, "T", 3, where), f=_vector(g, "f", 2, where), c=_vector(g, "c", 2, where),
                           k=_vector(g, "k", 3, where), p=_vector(g, "p", 2, where), id=cam_id, subject=subject),
                    where)
    if not cams:
        raise ValueError(f"{path}: no 'subject<k>/camera<n>' groups found")
    return cams


def load_cameras_json(path: str | Path) -> dict[tuple[str, str], Camera]:
    """mmpose ``cameras.json`` ({"S1/54138969": {R, T (m), c, f, k, p, w, h}}) -> Cameras with T in mm.

    mmpose's convention is X_cam = R^T (X_world - T) with the raw matrix, so R is transposed here.
    """
    path = Path(path)
    raw = read_json(path, "camera file")
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of 'S<k>/<camera id>' to camera records")
    cams = {}
    for key, rec in raw.items():
        where = f"{path}: record '{key}'"
        if "/" not in key or not isinstance(rec, dict):
            raise ValueError(f"{where}: expected key 'S<k>/<camera id>' with a mapping value")
        subject, cam_id = key.split("/", 1)
        R = _vector(rec, "R", 9, where).reshape(3, 3).T
        size = []
        for name in ("w", "h"):
            v = rec.get(name, 1000)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()) \
                    or not 0 < v <= MAX_COORDINATE:
                raise ValueError(f"{where}: camera field '{name}' must be a positive integer up to "
                                 f"{MAX_COORDINATE:g}, got {v!r}")
            size.append(int(v))
        cams[(subject, cam_id)] = check_camera(
            Camera(R=R, T=_vector(rec, "T", 3, where) * 1000.0, f=_vector(rec, "f", 2, where),
                   c=_vector(rec, "c", 2, where), k=_vector(rec, "k", 3, where), p=_vector(rec, "p", 2, where),
                   id=cam_id, subject=subject, width=size[0], height=size[1]), where)
    if not cams:
        raise ValueError(f"{path}: no camera records")
    return cams


def load_cameras(path: str | Path) -> dict[tuple[str, str], Camera]:
    """Either format, chosen by extension."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return load_cameras_json(path)
    return load_cameras_h5(path)
