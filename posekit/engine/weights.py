"""Download, verify, convert and cache published weights (`posekit.models.weights` lists them).

    path = resolve_checkpoint("openpose_vgg19.cmu")   # a posekit checkpoint, fetched on first use
    path = resolve_checkpoint("runs/x/best.pt")        # a path is returned as it is

A download goes to `<cache>/.partial/<file>.partial`, resumes from there with an HTTP Range
request after a cut connection (or a killed process), is checked (sha256 and/or exact size) and
only then renamed into the cache: the cache never holds an incomplete or unverified file under
the weights' name. When every URL fails the error is one line naming the URL, the expected
sha256/size and the exact path to put the file at.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from posekit.models.weights import (WeightsEntry, converted_path, download_path, get_weights, is_weights_name,
                                    offline_message)

CHUNK = 1 << 16
RETRIES = 3  # resumed attempts per URL after a connection that broke mid-file
TIMEOUT_S = 30.0


class WeightsDownloadError(OSError, ValueError):
    """No URL gave the verified file; the message says where to put it by hand. A ValueError too,
    so the command line prints it as one line."""


class WeightsMismatchError(ValueError):
    """A file that is not the published one (sha256 or size differ); the message says what differed."""


def partial_path(entry: WeightsEntry) -> Path:
    target = download_path(entry)
    return target.parent / ".partial" / f"{entry.filename}.partial"


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def mismatch(entry: WeightsEntry, path: Path) -> str | None:
    """What differs between `path` and the published file ('size 10 bytes, expected 12'), or None."""
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        return f"size {size:,} bytes, expected {entry.size:,}"
    if entry.sha256:
        got = _digest(path)
        if not got.startswith(entry.sha256):
            return f"sha256 {got}, expected {entry.check_text().split(',')[0].removeprefix('sha256 ')}"
    return None


def is_cached(entry: WeightsEntry) -> bool:
    """The verified file (or, for a model, its converted checkpoint) is in the cache."""
    return download_path(entry).is_file() or (entry.kind == "model" and converted_path(entry).is_file())


def _open(url: str, start: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "posekit", **({"Range": f"bytes={start}-"}
                                                                                if start else {})})
    return urllib.request.urlopen(request, timeout=timeout)


def _total_from(response, start: int) -> tuple[int | None, bool]:
    """(the full file size the server announces, whether it resumes at `start`)."""
    content_range = response.headers.get("Content-Range", "")
    if response.status == 206 and content_range.startswith("bytes "):
        span, _, total = content_range[6:].partition("/")
        first = int(span.split("-")[0]) if span.split("-")[0].isdigit() else -1
        return (int(total) if total.isdigit() else None), first == start
    length = response.headers.get("Content-Length")
    return (int(length) if length and length.isdigit() else None), False


class _LazyBar:
    """A tqdm bar shown once a server answers (an unreachable URL prints no empty bar)."""

    def __init__(self, entry: WeightsEntry, enabled: bool):
        self.entry, self.enabled, self.bar = entry, enabled, None

    def start(self, total: int | None, at: int):
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=self.entry.filename,
                            disable=not self.enabled, leave=True)
        self.bar.total = total
        self.bar.n = at
        self.bar.refresh()
        return self.bar

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _fetch_once(entry: WeightsEntry, url: str, partial: Path, lazy: _LazyBar, timeout: float) -> None:
    """Append the rest of `url` to `partial` (resuming at its size when the server allows it)."""
    start = partial.stat().st_size if partial.exists() else 0
    try:
        response = _open(url, start, timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # nothing left past `start`: the partial file may be complete
            return
        raise
    with response:
        total, resumed = _total_from(response, start)
        if start and not resumed:  # the server sends the whole file again: start over
            start = 0
            partial.write_bytes(b"")
        if total is not None and entry.size is not None and total != entry.size:
            raise WeightsMismatchError(f"{url} serves {total:,} bytes, expected {entry.size:,}")
        bar = lazy.start(total if total is not None else entry.size, start)
        with open(partial, "ab") as f:
            limit = entry.size
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                bar.update(len(chunk))
                if limit is not None and f.tell() > limit:
                    raise WeightsMismatchError(f"{url} sends more than the expected {limit:,} bytes")
            f.flush()
            os.fsync(f.fileno())
            expected = total if total is not None else entry.size
            if expected is not None and f.tell() < expected:  # the server closed early: resume from here
                raise ConnectionResetError(f"connection closed after {f.tell():,} of {expected:,} bytes")


def _lock(partial: Path):
    """An exclusive lock beside the partial file: two processes (DDP ranks) never append to one
    download; the second waits, then finds the file in the cache."""
    partial.parent.mkdir(parents=True, exist_ok=True)
    handle = open(partial.with_suffix(".lock"), "a")
    try:
        import fcntl
        fcntl.flock(handle, fcntl.LOCK_EX)
    except ImportError:  # no fcntl (Windows): no lock
        pass
    return handle


def download(entry: WeightsEntry | str, *, progress: bool = True, timeout: float = TIMEOUT_S) -> Path:
    """The verified file in the cache, downloaded (or resumed) when missing. A file already in the
    cache that is not the published one is refused, never replaced (it may be one the user put there)."""
    entry = get_weights(entry) if isinstance(entry, str) else entry
    target = download_path(entry)
    if target.is_file():
        differs = mismatch(entry, target)
        if differs:
            raise WeightsMismatchError(f"{target} is not weights {entry.name}: {differs}; remove it (or put the "
                                       f"published file there: {entry.urls[0]}) and run again")
        return target
    partial = partial_path(entry)
    lock = _lock(partial)
    failures = []
    try:
        if target.is_file():  # another process finished it while this one waited for the lock
            return download(entry, progress=progress, timeout=timeout)
        for url in entry.urls:
            bar = _LazyBar(entry, progress)
            try:
                for attempt in range(RETRIES + 1):
                    try:
                        _fetch_once(entry, url, partial, bar, timeout)
                        break
                    except (urllib.error.HTTPError, WeightsMismatchError):
                        raise
                    except (OSError, http.client.HTTPException):
                        got = partial.stat().st_size if partial.exists() else 0
                        if attempt == RETRIES or not got:  # refused / unreachable: the next URL
                            raise
                        continue  # cut mid-file: resume from what arrived
                differs = mismatch(entry, partial)
                if differs:
                    partial.unlink(missing_ok=True)  # ours; a wrong file is not kept to resume from
                    raise WeightsMismatchError(f"{url} gave a file with {differs} (discarded)")
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(partial, target)
                return target
            except WeightsMismatchError as e:
                failures.append(str(e))
            except urllib.error.HTTPError as e:
                failures.append(f"{url}: HTTP {e.code} {e.reason}")
            except (OSError, http.client.HTTPException) as e:
                reason = getattr(e, "reason", None) or e
                failures.append(f"{url}: {type(reason).__name__ if not str(reason) else reason}")
            finally:
                bar.close()
    finally:
        lock.close()
    raise WeightsDownloadError(offline_message(entry, "; ".join(failures)))


def ensure_checkpoint(entry: WeightsEntry | str, *, progress: bool = True) -> Path:
    """The posekit checkpoint of a model entry: converted once from the verified file, then cached."""
    entry = get_weights(entry) if isinstance(entry, str) else entry
    if entry.kind != "model":
        raise ValueError(f"{entry.name} holds {entry.task}, not a pose model: use it as model.args.pretrained="
                         f"imagenet (posekit weights download {entry.name} caches it)")
    out = converted_path(entry)
    if out.is_file():
        return out
    raw = download(entry, progress=progress)
    if entry.converter != "cmu-openpose":
        raise ValueError(f"weights {entry.name}: unknown converter {entry.converter!r}")
    from posekit.engine.convert import convert_cmu_openpose
    try:
        convert_cmu_openpose(raw, out, recipe=entry.recipe, overrides=list(entry.convert_overrides))
    except ValueError as e:
        raise ValueError(f"weights {entry.name}: {raw} passed its sha256/size check but does not convert: "
                         f"{e}") from None
    return out


def resolve_checkpoint(name_or_path, *, progress: bool = True):
    """A weights name -> its posekit checkpoint path (downloaded and converted on first use); any
    existing path, or anything else, is returned unchanged (its caller reports a missing file)."""
    if isinstance(name_or_path, (str, os.PathLike)) and os.path.exists(name_or_path):
        return name_or_path
    if is_weights_name(name_or_path):
        return ensure_checkpoint(name_or_path, progress=progress)
    if looks_like_weights_name(name_or_path):
        get_weights(name_or_path)  # a KeyError naming the close matches
    return name_or_path


def looks_like_weights_name(text) -> bool:
    """`<registered model>.<tag>` with no folder and no file suffix (a mistyped weights name, not a path)."""
    if not isinstance(text, str) or "/" in text or os.sep in text or "." not in text:
        return False
    model, _, tag = text.partition(".")
    if tag.lower() in ("pt", "pth", "ckpt", "onnx", "yaml", "yml"):
        return False
    from posekit.models.registry import list_models
    return model in list_models()
