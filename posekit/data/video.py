"""Video in and out: RGB frames from a file with its frame rate and frame count, and an mp4
writer for annotated frames (cv2). The writer prefers H.264 (`avc1`: plays in a browser) when the
installed OpenCV can encode it (probed once by writing a tiny file) and otherwise falls back to
`mp4v` (present in every opencv-python wheel) with one note in the log."""
from __future__ import annotations

import logging
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np


class VideoReader:
    """Frames of a video file as RGB uint8 arrays, with `fps`, `frame_count` (the container's
    claim: CAP_PROP_FRAME_COUNT, 0 when unknown) and `size` (w, h)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"video not found: {self.path}")
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise ValueError(f"cannot open video {self.path} (not a video, or a codec opencv lacks)")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if np.isfinite(fps) and 0 < fps < 1000 else 25.0
        self.frame_count = max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        self.size = (int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def __iter__(self):
        try:
            while True:
                ok, frame = self._cap.read()
                if not ok:
                    break
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            self.close()

    def close(self) -> None:
        self._cap.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


log = logging.getLogger("posekit")


class _QuietStderr:
    """Silence the C-level stderr (FFmpeg's and OpenCV's own messages) while probing a codec."""

    def __enter__(self):
        try:
            self._saved = os.dup(2)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            os.close(null)
        except OSError:
            self._saved = None
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)


def can_encode(fourcc: str) -> bool:
    """Whether this OpenCV build writes an .mp4 with `fourcc` (a 2-frame 16x16 file, written and
    read back in a temporary folder)."""
    with tempfile.TemporaryDirectory() as d, _QuietStderr():
        path = os.path.join(d, "probe.mp4")
        try:
            writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), 25.0, (16, 16))
            if not writer.isOpened():
                return False
            for _ in range(2):
                writer.write(np.zeros((16, 16, 3), np.uint8))
            writer.release()
            cap = cv2.VideoCapture(path)
            ok = cap.isOpened() and cap.read()[0]
            cap.release()
            return bool(ok)
        except cv2.error:
            return False


@lru_cache(maxsize=1)
def default_fourcc() -> str:
    """`avc1` (H.264, plays in browsers) when it can be written here, else `mp4v` (said once)."""
    if can_encode("avc1"):
        return "avc1"
    log.warning("posekit: note: this OpenCV cannot encode H.264 (avc1); videos are written as mp4v, which "
                "browsers may not play (re-encode with ffmpeg -c:v libx264, or install an OpenCV "
                "built with an H.264 encoder)")
    return "mp4v"


class VideoWriter:
    """Write RGB uint8 frames to an mp4 (`fourcc`; default: `default_fourcc()`). The size is
    taken from the first frame; later frames of another size are resized to it (a container
    holds one size).

    Frames go to a hidden partial file beside `path` (made at the first frame), renamed onto
    `path` by `close()` only when at least one frame was written: a writer that got no frame, was
    `discard()`ed or left by an exception never creates, truncates or deletes `path` (which may
    be an earlier result)."""

    def __init__(self, path: str | Path, fps: float = 25.0, fourcc: str | None = None):
        self.path = Path(path)
        self.fps, self.fourcc = float(fps), fourcc or default_fourcc()
        self._writer = None
        self._size: tuple[int, int] | None = None
        self.partial: Path | None = None  # the file this writer made; the only one it ever removes
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"VideoWriter: frames must be RGB uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._size = (frame.shape[1], frame.shape[0])
            fd, name = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=f".partial{self.path.suffix}",
                                        dir=self.path.parent)  # same folder: the rename is atomic
            os.close(fd)
            self.partial = Path(name)
            self._writer = cv2.VideoWriter(name, cv2.VideoWriter_fourcc(*self.fourcc), self.fps, self._size)
            if not self._writer.isOpened():
                self.discard()
                raise ValueError(f"cannot write video {self.path}: this OpenCV cannot encode {self.fourcc!r} (give "
                                 "another fourcc, or install an OpenCV build with that encoder)")
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        """Finish the file and move it onto `path` (nothing happens to `path` without a frame)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.partial is not None:
            if self.frames:
                os.replace(self.partial, self.path)
            else:
                self.partial.unlink(missing_ok=True)
            self.partial = None

    def discard(self) -> None:
        """Drop what was written: remove the partial file this writer made; `path` is untouched."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.partial is not None:
            self.partial.unlink(missing_ok=True)
            self.partial = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:
            self.discard()


# --- sources beyond a video file: a folder of frames, a webcam, a stream URL ------------------
def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value: frame2 before frame10."""
    import re
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class FrameFolderReader:
    """The images of a folder as video frames, in natural order (frame2.png before frame10.png),
    one decoded at a time. A frame that cannot be read is named in the log, skipped and counted
    in `skipped` [(path, reason)]; the size of the first good frame is the video's."""

    def __init__(self, folder: str | Path, fps: float = 25.0):
        from posekit.data.io import IMAGE_EXTENSIONS
        self.path = Path(folder)
        if not self.path.is_dir():
            raise FileNotFoundError(f"frame folder not found: {self.path}")
        self.files = sorted((p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                            key=lambda p: natural_key(p.name))
        if not self.files:
            raise ValueError(f"no image frames in folder {self.path} (looked for {', '.join(IMAGE_EXTENSIONS)})")
        self.fps, self.frame_count = float(fps), len(self.files)
        self.size: tuple[int, int] | None = None
        self.skipped: list[tuple[str, str]] = []

    def __iter__(self):
        from posekit.data.io import read_image
        for f in self.files:
            try:
                image = read_image(f)
            except (OSError, ValueError) as e:  # BadRecordError is a ValueError
                self.skipped.append((str(f), str(e)))
                log.warning(f"posekit: {f}: frame skipped ({e})")
                continue
            if self.size is None:
                self.size = (image.shape[1], image.shape[0])
            yield image

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class CaptureReader(VideoReader):
    """Frames of a live source through OpenCV: a webcam index (0, 1, ...) or a stream URL
    (rtsp://, http://, ...). Live sources have no frame count (0); iteration ends when the
    source stops sending (a cut stream ends the video, with what came before kept)."""

    def __init__(self, source: int | str):
        self.path = Path(str(source))
        self.source = source
        what = f"camera {source}" if isinstance(source, int) else f"stream {source}"
        with _QuietStderr():
            self._cap = cv2.VideoCapture(source)
            opened = self._cap.isOpened()
        if not opened:
            self._cap.release()
            hint = ("no such device, or it is in use (cameras are 0, 1, ...; on Linux see ls /dev/video*)"
                    if isinstance(source, int) else "unreachable, a wrong address, or a protocol this OpenCV lacks")
            raise ValueError(f"cannot open {what}: {hint}")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if np.isfinite(fps) and 0 < fps < 1000 else 25.0
        self.frame_count = 0
        self.size = (int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))


def open_source(spec: str | int | Path, *, fps: float = 25.0):
    """A frame reader for `spec`: an integer (or all-digit text) is a webcam index, text with
    "://" a stream URL, a folder a FrameFolderReader (at `fps`), a file a VideoReader. Each has
    `fps`, `frame_count` (0 when unknown) and iterates RGB uint8 frames one at a time."""
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        return CaptureReader(int(spec))
    if isinstance(spec, str) and "://" in spec:
        return CaptureReader(spec)
    path = Path(spec)
    if path.is_dir():
        return FrameFolderReader(path, fps=fps)
    return VideoReader(path)
