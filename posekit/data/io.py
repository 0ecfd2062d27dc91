"""Image I/O. posekit images are RGB uint8 (H, W, 3) everywhere; cv2's BGR stays inside this file."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from posekit.data.errors import BadRecordError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def realdata_root() -> Path:
    """Where the shared real samples live: $POSEKIT_REALDATA, else ../shared/realdata next to the repo."""
    env = os.environ.get("POSEKIT_REALDATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "realdata"


# PIL's decompression-bomb limit: an image above it is refused before decoding (a 40k x 40k
# header would make cv2 allocate 4.8 GB). POSEKIT_MAX_IMAGE_PIXELS overrides it.
DEFAULT_MAX_IMAGE_PIXELS = 178_956_970
REDUCTIONS = {1: 0, 2: cv2.IMREAD_REDUCED_COLOR_2 & ~cv2.IMREAD_COLOR,
              4: cv2.IMREAD_REDUCED_COLOR_4 & ~cv2.IMREAD_COLOR, 8: cv2.IMREAD_REDUCED_COLOR_8 & ~cv2.IMREAD_COLOR}


def max_image_pixels() -> int:
    """The pixel limit in force: $POSEKIT_MAX_IMAGE_PIXELS (0 or less = no limit), else PIL's default."""
    env = os.environ.get("POSEKIT_MAX_IMAGE_PIXELS")
    if env is None or not env.strip():
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        return int(float(env))
    except ValueError:
        raise ValueError(f"POSEKIT_MAX_IMAGE_PIXELS must be an integer, got {env!r}") from None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOF marker; None when the markers cannot be walked."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                return None
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        if marker == 0xDA or length < 2:
            return None
        i += 2 + length
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    order = "little" if data[:2] == b"II" else "big"
    try:
        ifd = int.from_bytes(data[4:8], order)
        count = int.from_bytes(data[ifd:ifd + 2], order)
        size = {}
        for e in range(count):
            entry = data[ifd + 2 + 12 * e: ifd + 14 + 12 * e]
            tag, kind = int.from_bytes(entry[:2], order), int.from_bytes(entry[2:4], order)
            if tag in (256, 257):
                size[tag] = int.from_bytes(entry[8:10] if kind == 3 else entry[8:12], order)
        return (size[256], size[257]) if len(size) == 2 else None
    except (IndexError, KeyError):
        return None


def image_size_from_header(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the header of a PNG, JPEG, BMP, WebP or TIFF without decoding
    the pixels; None for other formats or unparsable headers (the decoder then decides)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:2] == b"BM" and len(data) >= 26:
        return abs(int.from_bytes(data[18:22], "little", signed=True)), \
            abs(int.from_bytes(data[22:26], "little", signed=True))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8X":
            return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8 ":
            return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
        return None
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(data)
    return None


def _truncation(data: bytes) -> str | None:
    """Why a JPEG or PNG file is cut short, or None. cv2 decodes a truncated JPEG silently (grey
    fill below the cut), so the end markers are checked: a JPEG's entropy-coded data cannot hold
    an EOI (FF D9) by byte stuffing, so the last scan must be followed by one; a PNG ends in IEND."""
    if data[:2] == b"\xff\xd8":
        body = data.rstrip(b"\x00")  # some writers pad after EOI
        if body.endswith(b"\xff\xd9"):
            return None
        last_scan = data.rfind(b"\xff\xda")
        if last_scan < 0:
            return "JPEG is truncated or has no image data (no start-of-scan marker)"
        if data.find(b"\xff\xd9", last_scan) < 0:
            return "JPEG is truncated (no end-of-image marker after the last scan)"
        return None
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if data.rfind(b"IEND") < 0:  # anywhere: some tools append data after IEND
            return "PNG is truncated (no IEND chunk)"
    return None


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Any decoded depth -> uint8 the way photo viewers show it: 16-bit scaled by 255/65535,
    float in [0, 1] scaled by 255 (floats beyond 1 are taken as 0..255), clipped, NaN -> 0."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return cv2.convertScaleAbs(image, alpha=255.0 / 65535.0)
    if np.issubdtype(image.dtype, np.floating):
        image = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(image.max()) if image.size else 0.0
        scale = 255.0 if top <= 1.0 else 1.0
        return np.clip(np.rint(image * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        scaled = (image.astype(np.float64) - min(info.min, 0)) * (255.0 / (info.max - min(info.min, 0)))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    raise BadRecordError(f"unsupported pixel type {image.dtype}")


def _reduce_blocks(image: np.ndarray, r: int) -> np.ndarray:
    """Mean of r x r blocks (edge-replicated to whole blocks): the geometry of libjpeg's scaled
    decode, so every format reduces to ceil(H/r) x ceil(W/r) with the same pixel mapping."""
    h, w = image.shape[:2]
    hp, wp = -(-h // r) * r, -(-w // r) * r
    if (hp, wp) != (h, w):
        image = cv2.copyMakeBorder(image, 0, hp - h, 0, wp - w, cv2.BORDER_REPLICATE)
    return cv2.resize(image, (wp // r, hp // r), interpolation=cv2.INTER_AREA)


def read_image(path: str | Path, *, reduction: int = 1, max_pixels: int | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3), decoded the way photo libraries show the file.

    EXIF orientation is applied; 16-bit and float images are scaled to 8 bit; grey, RGBA and
    palette images are converted. `reduction` 2/4/8 returns ceil(H/r) x ceil(W/r) pixels, pixel u
    covering original pixels [r*u, r*u + r): original = (reduced + 0.5) * r - 0.5 (JPEGs decode
    scaled down in libjpeg, much cheaper than a full decode; other formats average r x r blocks).
    An image above `max_pixels` (default `max_image_pixels()`; <= 0 = no limit) is refused from
    its header, before any pixel is allocated. A missing file is FileNotFoundError; an empty,
    truncated or undecodable one is a BadRecordError naming it.
    """
    path = Path(path)
    if reduction not in REDUCTIONS:
        raise ValueError(f"read_image: reduction must be one of {sorted(REDUCTIONS)}, got {reduction!r}")
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadRecordError(f"cannot read image {path}: {e.strerror or e}") from None
    if not data:
        raise BadRecordError(f"image file is empty (0 bytes): {path}")
    limit = max_image_pixels() if max_pixels is None else int(max_pixels)
    size = image_size_from_header(data)
    if limit > 0 and size is not None and size[0] * size[1] > limit:
        raise BadRecordError(f"image {path} is {size[0]}x{size[1]} = {size[0] * size[1]} pixels, above the limit "
                             f"of {limit} (set POSEKIT_MAX_IMAGE_PIXELS or max_pixels to allow it)")
    problem = _truncation(data)
    if problem:
        raise BadRecordError(f"{problem}: {path}")
    buffer = np.frombuffer(data, np.uint8)
    is_jpeg = data[:2] == b"\xff\xd8"
    extra = REDUCTIONS[reduction] if is_jpeg else 0  # others: full decode, exact r x r blocks below
    try:
        # ANYCOLOR|ANYDEPTH: EXIF orientation applied (IMREAD_UNCHANGED skips it), depth kept so it
        # is scaled here (plain IMREAD_COLOR clips floats and refuses single-channel float TIFFs)
        image = cv2.imdecode(buffer, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH | extra)
    except cv2.error as e:
        raise BadRecordError(f"cannot decode image {path}: {str(e).strip().splitlines()[-1]}") from None
    if image is None or image.size == 0:
        raise BadRecordError(f"cannot decode image {path} (not an image, or a corrupt or unsupported file)")
    if limit > 0 and size is None and image.shape[0] * image.shape[1] * reduction ** 2 > limit:
        raise BadRecordError(f"image {path} is {image.shape[1]}x{image.shape[0]} pixels (at 1/{reduction}), above "
                             f"the limit of {limit} (set POSEKIT_MAX_IMAGE_PIXELS or max_pixels to allow it)")
    image = _to_uint8(image)
    if reduction > 1 and not is_jpeg:
        image = _reduce_blocks(image, reduction)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_image(path: str | Path, image: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write image {path}")


def iter_sources(sources: list[str | Path], *, on_error=None):
    """Yield (name, RGB image) from image files, folders of images and video files.

    With `on_error`, an image that cannot be used (missing, empty, truncated, too large) calls
    `on_error(name, message)` and iteration goes on with the next one (a folder with one bad
    file still gets predicted); without it the error is raised. Structural problems (an empty
    folder, a video that does not open) always raise.
    """
    def image(f):
        if on_error is None:
            return read_image(f)
        try:
            return read_image(f)
        except (FileNotFoundError, BadRecordError) as e:
            on_error(str(f), str(e))
            return None

    for source in sources:
        source = Path(source)
        if source.is_dir():
            files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise FileNotFoundError(f"no images in folder {source}")
            for f in files:
                decoded = image(f)
                if decoded is not None:
                    yield str(f), decoded
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
            decoded = image(source)
            if decoded is not None:
                yield str(source), decoded


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
