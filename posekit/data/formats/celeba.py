"""Readers for 5-point face landmark data (CelebA/MAFL, MTFL) and for unlabelled image folders.

All points follow the `mafl5` skeleton order: lefteye, righteye, nose, leftmouth, rightmouth,
where "left" is the image-left side (the subject's right), as both datasets define it.
Coordinates are kept as the files give them (pixels of the stored image). Readers parse text
only; images are decoded later by `Sample.load()`.

- CelebA `list_landmarks_align_celeba.txt`: a count line, a header of the 10 column names
  (columns are matched by name, so a reordered header still reads correctly), then
  `name x1 y1 ... x5 y5` with runs of spaces. The count line may be missing (excerpts);
  a count that disagrees with the entries is an error unless `strict_count=False`.
- MAFL `training.txt` / `testing.txt`: one CelebA file name per line (no trailing newline).
- MTFL `training.txt` / `testing.txt`: `path x1..x5 y1..y5 gender smile glasses pose`, CRLF,
  leading spaces, backslash paths; x's then y's, not interleaved.

Every path read from a file must stay inside its dataset root (no absolute paths, no `..`).
Errors name the file and line.
"""
from __future__ import annotations

import warnings
from pathlib import Path, PurePosixPath

import numpy as np

from posekit.data.io import IMAGE_EXTENSIONS
from posekit.data.sample import MAX_COORDINATE, BadRecordError, Sample

__all__ = ["CELEBA_COLUMNS", "read_celeba_landmarks", "celeba_samples", "read_name_list", "read_mafl",
           "read_mtfl_list", "read_mtfl", "read_image_folder"]

CELEBA_COLUMNS = ("lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
                  "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y")
MTFL_ATTRIBUTES = ("gender", "smile", "glasses", "head_pose")


class FormatError(ValueError):
    """A malformed annotation file; the message names the file and line."""


class RecordError(FormatError, BadRecordError):
    """One malformed line (a record) of an annotation file."""


def _check_coords(values: np.ndarray, where: str, text: str) -> None:
    if not np.all(np.isfinite(values)):
        raise RecordError(f"{where}: non-finite coordinate in {text!r}")
    if np.abs(values).max() > MAX_COORDINATE:
        raise RecordError(f"{where}: absurd coordinate {np.abs(values).max():.6g} (limit {MAX_COORDINATE:g}) "
                          f"in {text!r}")


def _lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of the non-blank lines; CRLF and a missing final newline are fine."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise FormatError(f"{path}: not a text file ({e})") from None
    return [(i + 1, line.strip()) for i, line in enumerate(text.splitlines()) if line.strip()]


def _safe_relative(name: str, where: str) -> PurePosixPath:
    """A relative path that cannot leave its root: backslashes become '/', absolute paths and '..' are refused."""
    rel = PurePosixPath(name.replace("\\", "/"))
    if not name or rel.is_absolute() or (rel.parts and ":" in rel.parts[0]) or ".." in rel.parts:
        raise RecordError(f"{where}: path {name!r} leaves the dataset root")
    return rel


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


# -- CelebA / MAFL ---------------------------------------------------------------------------------
def read_celeba_landmarks(path: str | Path, *, strict_count: bool = True) -> dict[str, np.ndarray]:
    """{image name: (5, 2) float64 (x, y)} in file order."""
    path = Path(path)
    lines = _lines(path)
    if not lines:
        raise FormatError(f"{path}: empty landmark file")
    pos = 0
    count = None
    first = lines[0][1].split()
    if len(first) == 1 and first[0].isdigit():
        count, pos = int(first[0]), 1
    order = np.arange(10)
    if pos < len(lines):
        lineno, text = lines[pos]
        tokens = text.split()
        if not any(_is_number(t) for t in tokens):  # the header
            if sorted(tokens) != sorted(CELEBA_COLUMNS):
                raise FormatError(f"{path}:{lineno}: header must name the 10 columns {' '.join(CELEBA_COLUMNS)}; "
                                  f"got {text!r}")
            order = np.array([tokens.index(c) for c in CELEBA_COLUMNS])
            pos += 1
    out: dict[str, np.ndarray] = {}
    for lineno, text in lines[pos:]:
        tokens = text.split()
        if len(tokens) != 11:
            raise RecordError(f"{path}:{lineno}: expected an image name and 10 coordinates, got {len(tokens)} fields")
        name = str(_safe_relative(tokens[0], f"{path}:{lineno}"))
        try:
            values = np.array([float(t) for t in tokens[1:]])
        except ValueError:
            raise RecordError(f"{path}:{lineno}: non-numeric coordinate in {text!r}") from None
        _check_coords(values, f"{path}:{lineno}", text)
        if name in out:
            raise RecordError(f"{path}:{lineno}: image {name} is listed twice")
        out[name] = values[order].reshape(5, 2)
    if strict_count and count is not None and count != len(out):
        raise FormatError(f"{path}: the count line says {count} entries but the file has {len(out)} "
                          "(pass strict_count=False to read a truncated file)")
    return out


def _landmark_sample(points: np.ndarray, image_path: Path, meta: dict) -> Sample:
    kps = np.concatenate([points, np.full((5, 1), 2.0)], axis=1)[None]
    return Sample(keypoints=kps, image_path=image_path, meta=meta)


def celeba_samples(landmarks_file: str | Path, image_dir: str | Path, *, names: list[str] | None = None,
                   missing: str = "error", strict_count: bool = True) -> list[Sample]:
    """Samples (keypoints (1, 5, 3), v = 2) for `names` (default: every entry of the landmark file).

    `missing="error"` refuses names without landmarks; "skip" drops them (e.g. with an excerpt)."""
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    table = read_celeba_landmarks(landmarks_file, strict_count=strict_count)
    image_dir = Path(image_dir)
    wanted = list(table) if names is None else names
    absent = [n for n in wanted if n not in table]
    if absent and missing == "error":
        raise KeyError(f"{landmarks_file}: {len(absent)} of {len(wanted)} requested images have no landmarks "
                       f"(first: {absent[:3]}); pass missing='skip' to drop them")
    return [_landmark_sample(table[n], image_dir / n, {"image_id": n, "dataset": "celeba"})
            for n in wanted if n in table]


def read_name_list(path: str | Path) -> list[str]:
    """One relative file name per line (MAFL splits); blank lines ignored, duplicates refused."""
    path = Path(path)
    names, seen = [], set()
    for lineno, text in _lines(path):
        if len(text.split()) != 1:
            raise FormatError(f"{path}:{lineno}: expected one file name, got {text!r}")
        name = str(_safe_relative(text, f"{path}:{lineno}"))
        if name in seen:
            raise FormatError(f"{path}:{lineno}: {name} is listed twice")
        seen.add(name)
        names.append(name)
    return names


def _first_existing(root: Path, candidates: tuple[str, ...], what: str) -> Path:
    for c in candidates:
        if (root / c).exists():
            return root / c
    raise FileNotFoundError(f"no {what} under {root}; looked for {', '.join(candidates)}")


_MAFL_SPLITS = {"train": "training.txt", "test": "testing.txt"}


def read_mafl(root: str | Path, split: str = "train", *, landmarks_file: str | Path | None = None,
              image_dir: str | Path | None = None, missing: str = "error",
              strict_count: bool = True) -> list[Sample]:
    """MAFL train (19,000) or test (1,000) samples from a CelebA root holding `MAFL/{training,testing}.txt`,
    `list_landmarks_align_celeba.txt` (or `Anno/...`, or the shared `..._excerpt.txt`) and
    `img_align_celeba/`. meta["split"] records the split."""
    root = Path(root)
    if split not in _MAFL_SPLITS:
        raise ValueError(f"MAFL split must be one of {sorted(_MAFL_SPLITS)}, got {split!r}")
    names = read_name_list(_first_existing(root, (f"MAFL/{_MAFL_SPLITS[split]}", _MAFL_SPLITS[split]),
                                           f"MAFL {split} list"))
    landmarks_file = Path(landmarks_file) if landmarks_file else _first_existing(
        root, ("list_landmarks_align_celeba.txt", "Anno/list_landmarks_align_celeba.txt",
               "list_landmarks_align_celeba_excerpt.txt"), "CelebA landmark file")
    image_dir = Path(image_dir) if image_dir else root / "img_align_celeba"
    samples = celeba_samples(landmarks_file, image_dir, names=names, missing=missing, strict_count=strict_count)
    for s in samples:
        s.meta.update(dataset="mafl", split=split)
    return samples


# -- MTFL ------------------------------------------------------------------------------------------
def read_mtfl_list(list_file: str | Path, root: str | Path | None = None) -> list[Sample]:
    """MTFL annotation lines -> Samples; image paths are relative to `root` (default: the list's folder).
    meta holds the four attributes (gender 1 male / 2 female, smile and glasses 1 yes / 2 no,
    head_pose 1-5 from left profile to right profile) when the line has them."""
    list_file = Path(list_file)
    root = Path(root) if root is not None else list_file.parent
    samples = []
    seen: dict[str, int] = {}
    for lineno, text in _lines(list_file):
        tokens = text.split()
        where = f"{list_file}:{lineno}"
        if len(tokens) not in (11, 15):
            raise RecordError(f"{where}: expected a path, 10 coordinates and optionally 4 attributes, "
                              f"got {len(tokens)} fields")
        rel = _safe_relative(tokens[0], where)
        try:
            coords = np.array([float(t) for t in tokens[1:11]])
            attrs = [int(t) for t in tokens[11:]]
        except ValueError:
            raise RecordError(f"{where}: non-numeric value in {text!r}") from None
        _check_coords(coords, where, text)
        seen[str(rel)] = seen.get(str(rel), 0) + 1
        points = np.stack([coords[:5], coords[5:]], axis=1)  # x1..x5, y1..y5 -> (5, 2)
        meta = {"image_id": str(rel), "dataset": "mtfl", **dict(zip(MTFL_ATTRIBUTES, attrs))}
        samples.append(_landmark_sample(points, root / rel, meta))
    extra = sum(n - 1 for n in seen.values() if n > 1)
    if extra:  # the same face twice counts twice in NME: reported, not refused
        warnings.warn(f"{list_file}: {extra} duplicate line(s) for the same image, e.g. "
                      f"{next(k for k, n in seen.items() if n > 1)}", stacklevel=2)
    return samples


def read_mtfl(root: str | Path, split: str = "train") -> list[Sample]:
    """MTFL `training.txt` / `testing.txt` under `root` (the shared excerpt's `*_subset.txt` also work)."""
    root = Path(root)
    stems = {"train": "training", "test": "testing"}
    if split not in stems:
        raise ValueError(f"MTFL split must be one of {sorted(stems)}, got {split!r}")
    list_file = _first_existing(root, (f"{stems[split]}.txt", f"{stems[split]}_subset.txt"), f"MTFL {split} list")
    samples = read_mtfl_list(list_file, root)
    for s in samples:
        s.meta["split"] = split
    return samples


# -- unlabelled folders ----------------------------------------------------------------------------
def read_image_folder(root: str | Path, *, recursive: bool = True) -> list[Sample]:
    """Every image under `root` (sorted), as Samples with no keypoints ((1, 0, 3)), for
    unsupervised training on a user's own objects. meta["image_id"] is the path relative to root."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    files = root.rglob("*") if recursive else root.iterdir()
    images = sorted(p for p in files if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {root}")
    return [Sample(keypoints=np.zeros((1, 0, 3)), image_path=p,
                   meta={"image_id": p.relative_to(root).as_posix(), "dataset": "folder"}) for p in images]
