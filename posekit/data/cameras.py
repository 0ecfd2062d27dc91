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

from posekit.data.io import read_json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


def _vector(group, key: str, size: int, where: str) -> np.ndarray:
    if key not in group:
        raise KeyError(f"{where}: camera field '{key}' is missing")
    value = np.asarray(group[key], dtype=np.float64).reshape(-1)
    if value.size != size:
        raise ValueError(f"{where}: camera field '{key}' has {value.size} values, expected {size}")
    return value


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
                if "Name" in g:
                    cam_id = "".join(chr(int(v)) for v in np.asarray(g["Name"]).reshape(-1))
                else:
                    index = int(cam_name.replace("camera", "")) - 1
                    cam_id = CAMERA_IDS[index]
                cams[(subject, cam_id)] = Camera(R=R, T=_vector(g, "T", 3, where), f=_vector(g, "f", 2, where),
                                                 c=_vector(g, "c", 2, where), k=_vector(g, "k", 3, where),
                                                 p=_vector(g, "p", 2, where), id=cam_id, subject=subject)
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
        cams[(subject, cam_id)] = Camera(R=R, T=_vector(rec, "T", 3, where) * 1000.0, f=_vector(rec, "f", 2, where),
                                         c=_vector(rec, "c", 2, where), k=_vector(rec, "k", 3, where),
                                         p=_vector(rec, "p", 2, where), id=cam_id, subject=subject,
                                         width=int(rec.get("w", 1000)), height=int(rec.get("h", 1000)))
    return cams


def load_cameras(path: str | Path) -> dict[tuple[str, str], Camera]:
    """Either format, chosen by extension."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return load_cameras_json(path)
    return load_cameras_h5(path)
