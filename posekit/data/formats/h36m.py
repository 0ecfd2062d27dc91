"""Human3.6M for 2-D -> 3-D lifting, in the two layouts people actually have.

1. **3d-pose-baseline** (Martinez et al.; what GMH-MDN reads)::

       <root>/cameras.h5                                   (or cameras.json from mmpose)
       <root>/S1/MyPoses/3D_positions/Directions 1.h5      dataset '3D_positions' (96, N), world mm, 32 joints
       <root>/S1/<detections>/Directions_1.54138969.h5     dataset 'poses' (N, 16, 2), Stacked Hourglass, MPII order

   The detections folder name is configurable (`StackedHourglass`, `StackedHourglassFineTuned240`).
   A missing per-camera detection file is tolerated (Human3.6M's S11 Directions video of camera
   54138969 is damaged, so that file does not exist): the camera is skipped with a warning.

2. **VideoPose3D** `.npz` files: `data_3d_h36m.npz` with `positions_3d[subject][action]` (N, 32, 3)
   world metres, and optionally `data_2d_h36m_<det>.npz` with `positions_2d[subject][action]` a list
   of 4 (N, 17, 2) arrays in camera order. These files store Python dicts, which numpy can only read
   with pickle enabled: pass `allow_pickle=True` only for files you trust.

Either way the result is a list of `Sequence`s (one per subject, action and camera) with
camera-frame 3-D in mm and 2-D in pixels, in the h36m17 joint order; `LiftingDataset` turns
them into root-relative training pairs (16 2-D inputs without neck_base, 16 3-D outputs
without the root). Splits: S1, S5, S6, S7, S8 train; S9, S11 test; the validation split used
for model selection is the tail of every training sequence (`split_tail`), never the test set.
"""
from __future__ import annotations

import re
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posekit.data.cameras import CAMERA_IDS, Camera, load_cameras
from posekit.data.io import open_h5
from posekit.data.sample import check_values
from posekit.skeletons.builtin import H36M32_TO_17
from posekit.skeletons.mappings import map_keypoints

TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
TEST_SUBJECTS = ("S9", "S11")
ACTIONS = ("Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing", "Purchases", "Sitting",
           "SittingDown", "Smoking", "Waiting", "WalkDog", "Walking", "WalkTogether")
# file names of some subjects spell two actions differently
ACTION_ALIASES = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog"}
# positions in the 16-joint 2-D input of the limb joints the missing-joint augmentation may drop:
# knees, feet, elbows, wrists
LIMB_INPUT_JOINTS = (2, 3, 5, 6, 11, 12, 14, 15)


class H36MFormatError(ValueError):
    """A Human3.6M file is missing, unreadable or has the wrong layout; the message names it."""


def subject_name(s) -> str:
    """1, "1", "S1" -> "S1"."""
    s = str(s).strip()
    return s if s.upper().startswith("S") and s[1:].isdigit() else f"S{int(s)}"


def action_of(sequence_name: str) -> str:
    """'Directions 1' -> 'Directions'; 'TakingPhoto' -> 'Photo'; 'WalkDog_1' -> 'WalkDog'."""
    base = re.split(r"[ _.]", sequence_name.strip())[0]
    return ACTION_ALIASES.get(base, base)


@dataclass
class Sequence:
    """One subject/action/camera: camera-frame 3-D (N, 17, 3) mm and 2-D (N, 17, 2) px (h36m17 order).

    For detections, neck_base has no Stacked Hourglass counterpart and is NaN (never used as input).
    """

    subject: str
    name: str
    camera: str
    poses_3d: np.ndarray
    poses_2d: np.ndarray
    source_2d: str = "gt"
    frames: np.ndarray | None = None

    def __post_init__(self):
        if self.frames is None:
            self.frames = np.arange(len(self.poses_3d))
        if len(self.poses_3d) != len(self.poses_2d):
            raise ValueError(f"{self.subject} {self.name} camera {self.camera}: {len(self.poses_3d)} 3-D frames but "
                             f"{len(self.poses_2d)} 2-D frames")

    @property
    def action(self) -> str:
        return action_of(self.name)

    def __len__(self) -> int:
        return len(self.poses_3d)

    def slice(self, start: int, stop: int) -> "Sequence":
        return Sequence(self.subject, self.name, self.camera, self.poses_3d[start:stop], self.poses_2d[start:stop],
                        self.source_2d, self.frames[start:stop])


# ------------------------------------------------------------------------------------------------
# low-level readers with clear errors
def _read_h5(path: Path, key: str) -> np.ndarray:
    with open_h5(path, "file", H36MFormatError, missing=H36MFormatError) as f:
        if key not in f:
            raise H36MFormatError(f"{path}: missing dataset '{key}' (found {sorted(f.keys())})")
        try:
            return np.asarray(f[key], dtype=np.float64)
        except (OSError, TypeError, ValueError) as e:
            raise H36MFormatError(f"{path}: dataset '{key}' cannot be read ({e})") from None


def read_world_poses(path: str | Path) -> np.ndarray:
    """3d-pose-baseline `3D_positions` file -> (N, 32, 3) world mm."""
    path = Path(path)
    raw = _read_h5(path, "3D_positions")
    if raw.ndim != 2 or raw.shape[0] != 96:
        raise H36MFormatError(f"{path}: dataset '3D_positions' has shape {raw.shape}, expected (96, N)")
    poses = raw.T.reshape(-1, 32, 3)
    check_values(poses, "dataset '3D_positions'", str(path), error=H36MFormatError)
    return poses


def read_detections(path: str | Path) -> np.ndarray:
    """Stacked Hourglass detection file -> (N, 16, 2) pixels in MPII joint order."""
    path = Path(path)
    poses = _read_h5(path, "poses")
    if poses.ndim != 3 or poses.shape[1:] != (16, 2):
        raise H36MFormatError(f"{path}: dataset 'poses' has shape {poses.shape}, expected (N, 16, 2)")
    check_values(poses, "dataset 'poses'", str(path), error=H36MFormatError)
    return poses


def detections_to_h36m17(poses_mpii: np.ndarray) -> np.ndarray:
    """(N, 16, 2) MPII-ordered Stacked Hourglass points -> (N, 17, 2) h36m17, neck_base NaN."""
    return map_keypoints(poses_mpii, "mpii16", "h36m17", has_visibility=False)


def find_cameras_file(root: Path, cameras: str | Path | None = None) -> Path:
    if cameras is not None:
        p = Path(cameras)
        p = p if p.is_absolute() or p.exists() else root / p
        if not p.is_file():
            raise H36MFormatError(f"camera file not found: {p}")
        return p
    for name in ("cameras.h5", "cameras.json"):
        if (root / name).is_file():
            return root / name
    raise H36MFormatError(f"no camera file in {root}: expected cameras.h5 (3d-pose-baseline) or cameras.json "
                          "(mmpose); set data.cameras to its path")


def _camera(cams: dict, subject: str, cam_id: str, source: Path) -> Camera:
    try:
        return cams[(subject, cam_id)]
    except KeyError:
        raise H36MFormatError(f"{source}: no calibration for subject {subject} camera {cam_id}") from None


def _project(cam: Camera, p3d: np.ndarray, where: str) -> np.ndarray:
    try:
        return cam.project(p3d)
    except ValueError as e:
        raise H36MFormatError(f"{where}: {e} (wrong camera or units?)") from None


def _detection_file(folder: Path, sequence_name: str, cam_id: str) -> Path | None:
    stem = sequence_name.replace(" ", "_")
    candidates = [stem]
    for spelled, canonical in ACTION_ALIASES.items():  # S1's files spell some actions the long way
        if stem.startswith(canonical):
            candidates.append(spelled + stem[len(canonical):])
        if stem.startswith(spelled):
            candidates.append(canonical + stem[len(spelled):])
    for c in candidates:
        p = folder / f"{c}.{cam_id}.h5"
        if p.is_file():
            return p
    return None


# ------------------------------------------------------------------------------------------------
def load_baseline(root: str | Path, subjects, *, actions=None, input_2d: str = "detections",
                  detections: str = "StackedHourglass", cameras: str | Path | None = None,
                  camera_ids=CAMERA_IDS) -> list[Sequence]:
    """Read the 3d-pose-baseline layout into camera-frame `Sequence`s (see the module docstring).

    input_2d: "detections" (the `detections` folder, MPII order permuted to h36m17) or "gt"
    (the 3-D ground truth projected with the full distortion model).
    """
    root = Path(root)
    if input_2d not in ("detections", "gt"):
        raise ValueError(f"input_2d must be 'detections' or 'gt', got {input_2d!r}")
    if not root.is_dir():
        raise H36MFormatError(f"Human3.6M root not found: {root}")
    cam_path = find_cameras_file(root, cameras)
    cams = load_cameras(cam_path)
    wanted = None if not actions else {action_of(a) for a in actions}
    out: list[Sequence] = []
    for subject in (subject_name(s) for s in subjects):
        pose_dir = root / subject / "MyPoses" / "3D_positions"
        if not pose_dir.is_dir():
            raise H36MFormatError(f"subject {subject}: folder not found: {pose_dir}")
        files = sorted(p for p in pose_dir.glob("*.h5") if "ALL" not in p.stem)
        if not files:
            raise H36MFormatError(f"subject {subject}: no .h5 pose files in {pose_dir}")
        det_dir = root / subject / detections
        if input_2d == "detections" and not det_dir.is_dir():
            raise H36MFormatError(f"subject {subject}: detections folder not found: {det_dir} "
                                  "(set data.detections to its name, or data.input_2d=gt)")
        for path in files:
            name = path.stem
            if wanted is not None and action_of(name) not in wanted:
                continue
            world = read_world_poses(path)[:, list(H36M32_TO_17)]
            for cam_id in camera_ids:
                cam = _camera(cams, subject, cam_id, cam_path)
                p3d = cam.world_to_camera(world)
                if input_2d == "gt":
                    p2d, source = _project(cam, p3d, f"{path} camera {cam_id}"), "gt"
                else:
                    det_path = _detection_file(det_dir, name, cam_id)
                    if det_path is None:
                        warnings.warn(f"{subject} '{name}': no detections for camera {cam_id} in {det_dir}; "
                                      "skipping that camera", stacklevel=2)
                        continue
                    p2d, source = detections_to_h36m17(read_detections(det_path)), "detections"
                    if len(p2d) != len(p3d):
                        n = min(len(p2d), len(p3d))
                        warnings.warn(f"{det_path}: {len(p2d)} detection frames vs {len(p3d)} 3-D frames in {path}; "
                                      f"using the first {n}", stacklevel=2)
                        p2d, p3d = p2d[:n], p3d[:n]
                out.append(Sequence(subject, name, cam_id, p3d, p2d, source))
    if not out:
        raise H36MFormatError(f"no sequences found under {root} for subjects {list(subjects)} and actions {actions}")
    return out


# what a cut-short or corrupt .npz raises, from the zip layer, zlib, or numpy's header parser
_NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, UnicodeDecodeError)


def _load_npz(path: Path, allow_pickle: bool):
    """An open NpzFile. Only zip archives are passed to numpy: with allow_pickle, np.load would
    unpickle any other file (a renamed pickle runs code)."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise H36MFormatError(f"{path}: not an .npz (zip) archive, truncated or corrupt? (starts with {magic!r})")
    try:
        return np.load(path, allow_pickle=allow_pickle)
    except Exception as e:  # zipfile, zlib and numpy raise many types for a cut-short archive
        raise H36MFormatError(f"{path}: not a readable .npz file, truncated or corrupt? "
                              f"({type(e).__name__}: {e})") from None


def _npz_dict(npz, key: str, path: Path) -> dict:
    if not hasattr(npz, "files"):
        raise H36MFormatError(f"{path}: a plain .npy array, expected an .npz archive with '{key}'")
    if key not in npz.files:
        raise H36MFormatError(f"{path}: missing key '{key}' (found {npz.files})")
    try:
        value = npz[key]
    except ValueError as e:
        if "allow_pickle" in str(e):  # object arrays without allow_pickle
            raise H36MFormatError(f"{path}: '{key}' is a pickled dict; VideoPose3D files need data.allow_pickle=true "
                                  f"(only for files you trust) ({e})") from None
        raise H36MFormatError(f"{path}: '{key}' cannot be read, truncated or corrupt? ({e})") from None
    except _NPZ_ERRORS as e:
        raise H36MFormatError(f"{path}: '{key}' cannot be read, truncated or corrupt? "
                              f"({type(e).__name__}: {e})") from None
    except Exception as e:  # unpickling a damaged object array raises whatever pickle hits
        raise H36MFormatError(f"{path}: '{key}' cannot be unpickled ({type(e).__name__}: {e})") from None
    value = value.item() if value.dtype == object and value.shape == () else value
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise H36MFormatError(f"{path}: '{key}' should be a dict of subject -> action -> array")
    return value


def _npz_dict_flat(npz, key: str, path: Path) -> dict:
    """A plain dict entry (VideoPose3D's `metadata`), with the same errors as `_npz_dict`."""
    try:
        value = npz[key]
        value = value.item() if value.dtype == object and value.shape == () else value
    except Exception as e:  # noqa: BLE001  (corrupt member or pickle: named, one line)
        raise H36MFormatError(f"{path}: '{key}' cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(value, dict):
        raise H36MFormatError(f"{path}: '{key}' should be a dict")
    return value


def load_videopose3d(npz_3d: str | Path, cameras: str | Path, subjects, *, actions=None, npz_2d: str | Path | None = None,
                     allow_pickle: bool = False, camera_ids=CAMERA_IDS) -> list[Sequence]:
    """VideoPose3D `data_3d_h36m.npz` (+ optional 2-D detections npz) -> camera-frame `Sequence`s.

    Without `npz_2d` the ground truth is projected with the cameras' distortion model.
    """
    npz_3d = Path(npz_3d)
    if not npz_3d.is_file():
        raise H36MFormatError(f"file not found: {npz_3d}")
    cam_path = Path(cameras)
    cams = load_cameras(cam_path)
    data3 = _load_npz(npz_3d, allow_pickle)
    positions = _npz_dict(data3, "positions_3d", npz_3d)
    det = None
    if npz_2d is not None:
        npz_2d = Path(npz_2d)
        if not npz_2d.is_file():
            raise H36MFormatError(f"file not found: {npz_2d}")
        data2 = _load_npz(npz_2d, allow_pickle)
        det = _npz_dict(data2, "positions_2d", npz_2d)
        if "metadata" in data2.files:
            meta = _npz_dict_flat(data2, "metadata", npz_2d)
            if meta.get("num_joints", 17) != 17 or meta.get("layout_name", "h36m") != "h36m":
                raise H36MFormatError(f"{npz_2d}: metadata layout {meta.get('layout_name')!r} with "
                                      f"{meta.get('num_joints')} joints; expected the 17-joint 'h36m' layout")
    wanted = None if not actions else {action_of(a) for a in actions}
    out: list[Sequence] = []
    for subject in (subject_name(s) for s in subjects):
        if subject not in positions:
            raise H36MFormatError(f"{npz_3d}: no subject {subject} in positions_3d (has {sorted(positions)})")
        for name in sorted(positions[subject]):
            if wanted is not None and action_of(name) not in wanted:
                continue
            try:
                world = np.asarray(positions[subject][name], dtype=np.float64)
            except (TypeError, ValueError, OverflowError):
                raise H36MFormatError(f"{npz_3d}: positions_3d[{subject}][{name}] is not a numeric array") from None
            if world.ndim != 3 or world.shape[1:] not in ((32, 3), (17, 3)):
                raise H36MFormatError(f"{npz_3d}: positions_3d[{subject}][{name}] has shape {world.shape}, "
                                      "expected (N, 32, 3) or (N, 17, 3)")
            check_values(world, f"positions_3d[{subject}][{name}]", str(npz_3d), limit=1e4, error=H36MFormatError)
            world = (world[:, list(H36M32_TO_17)] if world.shape[1] == 32 else world) * 1000.0  # m -> mm
            for ci, cam_id in enumerate(camera_ids):
                cam = _camera(cams, subject, cam_id, cam_path)
                p3d = cam.world_to_camera(world)
                if det is None:
                    out.append(Sequence(subject, name, cam_id, p3d,
                                        _project(cam, p3d, f"{npz_3d}: {subject} '{name}' camera {cam_id}"), "gt"))
                    continue
                try:
                    p2d = np.asarray(det[subject][name][ci], dtype=np.float64)
                except (TypeError, ValueError, OverflowError):
                    raise H36MFormatError(f"{npz_2d}: positions_2d[{subject}][{name}][{ci}] is not a numeric "
                                          "array") from None
                except (KeyError, IndexError):
                    warnings.warn(f"{npz_2d}: no detections for {subject} '{name}' camera {cam_id}; skipping",
                                  stacklevel=2)
                    continue
                if p2d.ndim != 3 or p2d.shape[1] != 17 or p2d.shape[2] < 2:
                    raise H36MFormatError(f"{npz_2d}: positions_2d[{subject}][{name}][{ci}] has shape {p2d.shape}, "
                                          "expected (N, 17, 2)")
                check_values(p2d[..., :2], f"positions_2d[{subject}][{name}][{ci}]", str(npz_2d),
                             error=H36MFormatError)
                n = min(len(p2d), len(p3d))  # VideoPose3D's detections can be a few frames longer
                out.append(Sequence(subject, name, cam_id, p3d[:n], p2d[:n, :, :2], "detections"))
    if not out:
        raise H36MFormatError(f"{npz_3d}: no sequences for subjects {list(subjects)} and actions {actions}")
    return out


def split_tail(sequences: list[Sequence], fraction: float, *, gap: int = 0) -> tuple[list[Sequence], list[Sequence]]:
    """Hold out the last `fraction` of every sequence as a validation split (contiguous, so that
    neighbouring near-duplicate frames do not leak between the two; `gap` frames are dropped in between)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val fraction must be in [0, 1), got {fraction}")
    train, val = [], []
    for s in sequences:
        n_val = int(round(len(s) * fraction))
        if n_val == 0:
            train.append(s)
            continue
        cut = len(s) - n_val
        train.append(s.slice(0, max(cut - gap, 0)))
        val.append(s.slice(cut, len(s)))
    return train, val
