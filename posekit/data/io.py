"""Image I/O. posekit images are RGB uint8 (H, W, 3) everywhere; cv2's BGR stays inside this file."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def realdata_root() -> Path:
    """Where the shared real samples live: $POSEKIT_REALDATA, else ../shared/realdata next to the repo."""
    env = os.environ.get("POSEKIT_REALDATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "realdata"


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8; grey and RGBA are converted. A missing or unreadable file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot decode image: {path}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_image(path: str | Path, image: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write image {path}")


def iter_sources(sources: list[str | Path]):
    """Yield (name, RGB image) from image files, folders of images and video files."""
    for source in sources:
        source = Path(source)
        if source.is_dir():
            files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise FileNotFoundError(f"no images in folder {source}")
            for f in files:
                yield str(f), read_image(f)
        elif source.suffix.lower() in VIDEO_EXTENSIONS:
            if not source.is_file():
                raise FileNotFoundError(f"video not found: {source}")
            cap = cv2.VideoCapture(str(source))
            if not cap.isOpened():
                raise ValueError(f"cannot open video {source}")
            index = 0
            try:
                while True:
                    ok, frame = cap.read()
                    if not ok:
                        break
                    yield f"{source}#{index:06d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                    index += 1
            finally:
                cap.release()
            if index == 0:
                raise ValueError(f"video {source} has no readable frames")
        else:
            yield str(source), read_image(source)


def read_json(path: str | Path, what: str = "JSON file", error: type[Exception] = ValueError):
    """Parsed JSON, with errors that name the file (and `what` it should be)."""
    import json
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: invalid JSON: {e}") from None


def open_h5(path: str | Path, what: str = "HDF5 file", error: type[Exception] = ValueError,
            missing: type[Exception] = FileNotFoundError):
    """An open h5py.File (use it in a `with`), with errors that name the file."""
    import h5py
    path = Path(path)
    if not path.is_file():
        raise missing(f"{what} not found: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise error(f"{path}: not a readable HDF5 file ({e})") from None
