"""MPII Human Pose (16 joints): three annotation formats -> one `MPIIRecord`, and the top-down dataset.

Every source uses MATLAB 1-based pixels and its own conventions; the loaders turn them all into
one internal convention so records from different files compare equal:

* coordinates are 0-based pixels (source value - 1), as cv2 and the affine helpers expect;
* `center`/`scale` describe the crop box actually used: centre = objpos + (0, 15 * scale) and
  box side = 200 * scale with scale = 1.25 x the MPII person scale (Newell's adjustment);
* `annotated` says whether a joint has coordinates (the PCKh/target mask); `is_visible` is
  MPII's separate occlusion flag (1 visible, 0 occluded), NaN when the source lacks it.

Source differences handled here (see the MANIFEST of the shared samples):

==========================  ===================  ===================  ==========================
                            HRNet/MMPose JSON    pose-hg-train .h5    official .mat
==========================  ===================  ===================  ==========================
missing joint               (-1, -1), vis 0      (0, 0)               point absent
visibility field            annotated flag       MPII is_visible      is_visible (per point)
centre / scale              raw objpos / scale   already adjusted     raw objpos / scale
head size (PCKh)            absent               `normalize`          0.6 x head-box diagonal
==========================  ===================  ===================  ==========================

A malformed record raises `MPIIFormatError` naming the file, the record and the field.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from posekit.data.io import open_h5, read_json
from posekit.data.sample import (MAX_COORDINATE, MAX_HEAD_SIZE, BadRecordError, Sample, check_values,
                                 relative_path_problem)

__all__ = ["MPIIRecord", "MPIIFormatError", "MPIIRecordError", "load_mpii_json", "load_mpii_h5", "load_mpii_mat", "load_mpii",
           "attach_head_sizes", "MPIIImageSource", "record_to_sample", "NUM_JOINTS", "SCALE_PAD", "CENTER_SHIFT"]

NUM_JOINTS = 16
SCALE_PAD = 1.25  # box side = 200 * 1.25 * MPII scale
CENTER_SHIFT = 15.0  # objpos y + 15 * MPII scale, so the crop keeps the feet


class MPIIFormatError(ValueError):
    """An MPII annotation file or record is malformed; the message names file, record and field."""


class MPIIRecordError(MPIIFormatError, BadRecordError):
    """One malformed person record."""



@dataclass
class MPIIRecord:
    """One annotated person, in posekit's convention (0-based pixels, adjusted crop box)."""

    image: str  # file name, relative to the image folder
    center: np.ndarray  # (2,) crop-box centre
    scale: float  # crop-box side / 200
    joints: np.ndarray  # (16, 2); 0 where not annotated
    annotated: np.ndarray  # (16,) bool
    is_visible: np.ndarray  # (16,) MPII occlusion flag (1/0), NaN when unknown
    head_size: float = float("nan")  # PCKh normaliser (0.6 x head-box diagonal), NaN when unknown
    index: int = -1  # image index in the official annolist, when known
    person: int = -1  # person index within the image, when known
    source: str = ""  # "file:record" for error messages
    meta: dict = field(default_factory=dict)


def _err(path, record, message) -> MPIIFormatError:
    return MPIIRecordError(f"{path}: record {record}: {message}")


def _check_name(name, path, record) -> str:
    problem = relative_path_problem(name)
    if problem:
        raise _err(path, record, problem)
    return name


def _check_record(rec: "MPIIRecord", path, record) -> "MPIIRecord":
    """Absurd values that would make PCKh meaningless: coordinates, crop box, head size."""
    where = f"{path}: record {record}"
    check_values(rec.center, "crop centre", where, error=MPIIRecordError)
    check_values(rec.joints[rec.annotated], "joint coordinates", where, error=MPIIRecordError)
    if not rec.scale * 200.0 <= MAX_COORDINATE:
        raise _err(path, record, f"scale {rec.scale:g} gives a crop box of {rec.scale * 200:g} px (limit "
                                 f"{MAX_COORDINATE:g}); a unit or file error")
    head = rec.head_size
    if not np.isnan(head) and not (0 < head <= MAX_HEAD_SIZE) and rec.annotated.any():
        raise _err(path, record, f"head size {head:g} must be positive, finite and at most {MAX_HEAD_SIZE:g} px")
    return rec


def _warn_duplicates(records: list, key, path, what: str) -> None:
    """Duplicate persons are legal in a file but count twice in PCKh: one warning with the count."""
    seen: dict = {}
    for r in records:
        k = key(r)
        if k is not None:
            seen[k] = seen.get(k, 0) + 1
    extra = sum(n - 1 for n in seen.values() if n > 1)
    if extra:
        first = next(k for k, n in seen.items() if n > 1)
        warnings.warn(f"{path}: {extra} duplicate record(s) ({what}), e.g. {first}", stacklevel=3)


def _vector(value, length, path, record, name) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise _err(path, record, f"field '{name}' must be numeric, got {value!r}") from None
    if arr.shape != (length,) or not np.all(np.isfinite(arr)):
        raise _err(path, record, f"field '{name}' must be {length} finite numbers, got {value!r}")
    return arr


def _positive(value, path, record, name) -> float:
    try:
        v = float(np.asarray(value, dtype=np.float64).reshape(()))
    except (TypeError, ValueError, OverflowError):
        raise _err(path, record, f"field '{name}' must be a number, got {value!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise _err(path, record, f"field '{name}' must be positive, got {value!r}")
    return v


def _adjusted_box(objpos_1based: np.ndarray, person_scale: float) -> tuple[np.ndarray, float]:
    center = objpos_1based - 1.0
    center[1] += CENTER_SHIFT * person_scale
    return center, person_scale * SCALE_PAD


# ---------------------------------------------------------------------------------------------
def load_mpii_json(path: str | Path) -> list[MPIIRecord]:
    """HRNet/MMPose JSON: a list of {image, center, scale, joints, joints_vis}.

    `joints_vis` is the annotated flag (not MPII's occlusion flag), missing joints are (-1, -1).
    Test-split files without `joints` give records with no annotated joint.
    """
    path = Path(path)
    data = read_json(path, "MPII annotation file", MPIIFormatError)
    if not isinstance(data, list):
        raise MPIIFormatError(f"{path}: expected a JSON list of person records, got {type(data).__name__}")
    records = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise _err(path, i, f"expected an object, got {type(rec).__name__}")
        for key in ("image", "center", "scale"):
            if key not in rec:
                raise _err(path, i, f"missing field '{key}'")
        if not isinstance(rec["image"], str) or not rec["image"]:
            raise _err(path, i, f"field 'image' must be a file name, got {rec['image']!r}")
        _check_name(rec["image"], path, i)
        center, scale = _adjusted_box(_vector(rec["center"], 2, path, i, "center"),
                                      _positive(rec["scale"], path, i, "scale"))
        joints = np.zeros((NUM_JOINTS, 2))
        annotated = np.zeros(NUM_JOINTS, bool)
        if "joints" in rec:
            try:
                raw = np.asarray(rec["joints"], dtype=np.float64)
            except (TypeError, ValueError, OverflowError):
                raise _err(path, i, "field 'joints' must be 16 [x, y] pairs") from None
            if raw.shape != (NUM_JOINTS, 2) and not (raw.ndim == 2 and raw.shape[0] == NUM_JOINTS and raw.shape[1] == 3):
                raise _err(path, i, f"field 'joints' must be 16 [x, y] pairs, got shape {raw.shape}")
            raw = raw[:, :2]
            if "joints_vis" not in rec:
                raise _err(path, i, "has 'joints' but no 'joints_vis'")
            vis = _vector(rec["joints_vis"], NUM_JOINTS, path, i, "joints_vis")
            if not np.all(np.isin(vis, (0, 1))):
                raise _err(path, i, f"field 'joints_vis' must hold 0/1 flags, got {rec['joints_vis']!r}")
            annotated = vis > 0
            marker = np.all(raw == -1, axis=1)
            if np.any(annotated & marker):
                j = int(np.flatnonzero(annotated & marker)[0])
                raise _err(path, i, f"joint {j} is flagged annotated in 'joints_vis' but has the missing marker (-1, -1)")
            if not np.all(np.isfinite(raw[annotated])):
                raise _err(path, i, "field 'joints' has non-finite coordinates")
            joints = np.where(annotated[:, None], raw - 1.0, 0.0)
        records.append(_check_record(MPIIRecord(image=rec["image"], center=center, scale=scale, joints=joints,
                                                annotated=annotated, is_visible=np.full(NUM_JOINTS, np.nan),
                                                source=f"{path}:{i}"), path, i))
    _warn_duplicates(records, lambda r: (r.image, *np.round(r.center, 3).tolist(), *np.round(r.joints, 3).ravel().tolist()),
                     path, "same image, centre and joints")
    return records


# ---------------------------------------------------------------------------------------------
_H5_REQUIRED = ("imgname", "center", "scale", "part")


def load_mpii_h5(path: str | Path) -> list[MPIIRecord]:
    """pose-hg-train `annot/{train,valid,test}.h5`: centre/scale already adjusted, (0, 0) = missing,
    `visible` is MPII's occlusion flag, `normalize` is the PCKh head size."""
    path = Path(path)
    with open_h5(path, "MPII annotation file", MPIIFormatError) as f:
        missing = [k for k in _H5_REQUIRED if k not in f]
        if missing:
            raise MPIIFormatError(f"{path}: missing dataset(s) {missing}; found {sorted(f.keys())}")
        names = f["imgname"][()]
        n = len(names)
        arrays = {}
        for key, shape in (("center", (n, 2)), ("scale", (n,)), ("part", (n, NUM_JOINTS, 2)),
                           ("visible", (n, NUM_JOINTS)), ("normalize", (n,)), ("index", (n,)), ("person", (n,))):
            if key not in f:
                continue
            arr = np.asarray(f[key][()], dtype=np.float64)
            if arr.shape != shape:
                raise MPIIFormatError(f"{path}: dataset '{key}' has shape {arr.shape}, expected {shape}")
            arrays[key] = arr
    records = []
    for i in range(n):
        try:
            name = names[i].decode() if isinstance(names[i], bytes) else str(names[i])
        except UnicodeDecodeError:
            raise _err(path, i, "field 'imgname' is not UTF-8 text") from None
        label = f"{i} ({name})"
        _check_name(name, path, label)
        center = _vector(arrays["center"][i], 2, path, label, "center") - 1.0
        scale = _positive(arrays["scale"][i], path, label, "scale")
        part = arrays["part"][i]
        if not np.all(np.isfinite(part)):
            raise _err(path, label, "field 'part' has non-finite coordinates")
        annotated = ~np.all(part == 0, axis=1)
        joints = np.where(annotated[:, None], part - 1.0, 0.0)
        is_visible = arrays["visible"][i] if "visible" in arrays else np.full(NUM_JOINTS, np.nan)
        head = float(arrays["normalize"][i]) if "normalize" in arrays else float("nan")
        if "normalize" in arrays and annotated.any() and not 0 < head <= MAX_HEAD_SIZE:
            raise _err(path, label, f"field 'normalize' (head size) must be positive, finite and at most "
                                    f"{MAX_HEAD_SIZE:g} px, got {head}")
        ids = {}
        for key in ("index", "person"):
            v = arrays[key][i] if key in arrays else -1.0
            if not np.isfinite(v) or v != int(v):
                raise _err(path, label, f"field '{key}' must be an integer, got {v}")
            ids[key] = int(v)
        records.append(_check_record(MPIIRecord(image=name, center=center, scale=scale, joints=joints,
                                                annotated=annotated, is_visible=np.asarray(is_visible, dtype=np.float64),
                                                head_size=head, index=ids["index"], person=ids["person"],
                                                source=f"{path}:{i}"), path, label))
    _warn_duplicates(records, lambda r: (r.index, r.person) if r.index >= 0 and r.person >= 0 else None, path,
                     "same annolist index and person")
    return records


# ---------------------------------------------------------------------------------------------
def _items(value) -> list:
    """MATLAB struct arrays / cells read with squeeze_me: a struct, an array of them, or empty."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return [v for v in value.ravel()]
    return [value]


def _scalar(value):
    """A MATLAB scalar that may arrive as an int, float, 0-d/1-element array, str or empty array."""
    if isinstance(value, np.ndarray):
        if value.size != 1:
            return None
        value = value.reshape(()).item()
    if isinstance(value, (str, bytes)):
        value = value.decode() if isinstance(value, bytes) else value
        try:
            return float(value)
        except ValueError:
            return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _valid_pairs(valid_pairs) -> set[tuple[int, int]]:
    if isinstance(valid_pairs, (str, Path)):
        recs = load_mpii_h5(valid_pairs)
        if any(r.index < 0 or r.person < 0 for r in recs):
            raise MPIIFormatError(f"{valid_pairs}: needs 'index' and 'person' datasets to define the split")
        return {(r.index, r.person) for r in recs}
    arr = np.asarray(valid_pairs, dtype=np.int64).reshape(-1, 2)
    return {(int(a), int(b)) for a, b in arr}


def load_mpii_mat(path: str | Path, split: str = "valid", valid_pairs=None) -> list[MPIIRecord]:
    """The official `mpii_human_pose_v1_u12_1.mat` (read with scipy).

    split: "valid" / "train" is the standard Tompson split used by Newell and HRNet: validation =
    the (annolist index, person) pairs of `valid_pairs` (a pose-hg-train `valid.h5` path or an
    (N, 2) array), train = every other annotated person of a training image (`img_train == 1`);
    "trainval" = both; "test" = the persons of test images (centre and scale only).
    """
    import scipy.io

    if split not in ("train", "valid", "trainval", "test"):
        raise ValueError(f"unknown MPII split {split!r}; choose train, valid, trainval or test")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MPII annotation file not found: {path}")
    if split in ("train", "valid") and valid_pairs is None:
        raise ValueError(f"split {split!r} of {path} needs valid_pairs: the standard validation list "
                         "(pose-hg-train annot/valid.h5, or an (N, 2) array of annolist index, person)")
    pairs = _valid_pairs(valid_pairs) if valid_pairs is not None else set()
    try:
        mat = scipy.io.loadmat(str(path), struct_as_record=False, squeeze_me=True)
    except Exception as e:  # scipy raises several types for a corrupt file
        raise MPIIFormatError(f"{path}: not a readable MATLAB file: {e}") from None
    if "RELEASE" not in mat:
        raise MPIIFormatError(f"{path}: no 'RELEASE' struct (found {sorted(k for k in mat if not k.startswith('__'))})")
    release = mat["RELEASE"]
    for key in ("annolist", "img_train"):
        if not hasattr(release, key):
            raise MPIIFormatError(f"{path}: RELEASE has no field '{key}'")
    annolist = _items(release.annolist)
    img_train = np.asarray(release.img_train).ravel()
    if len(img_train) != len(annolist):
        raise MPIIFormatError(f"{path}: RELEASE.img_train has {len(img_train)} entries for {len(annolist)} images")

    records = []
    for idx, anno in enumerate(annolist):
        is_train = bool(img_train[idx])
        if (split == "test") == is_train:
            continue
        try:
            name = str(anno.image.name)
        except AttributeError:
            raise _err(path, f"annolist[{idx}]", "missing field 'image.name'") from None
        _check_name(name, path, f"annolist[{idx}]")
        for pid, rect in enumerate(_items(getattr(anno, "annorect", None))):
            label = f"annolist[{idx}].annorect[{pid}] ({name})"
            in_valid = (idx, pid) in pairs
            if split == "valid" and not in_valid or split == "train" and in_valid:
                continue
            objpos = getattr(rect, "objpos", None)
            scale = _scalar(getattr(rect, "scale", None))
            ox = _scalar(getattr(objpos, "x", None)) if objpos is not None else None
            oy = _scalar(getattr(objpos, "y", None)) if objpos is not None else None
            if scale is None or ox is None or oy is None:
                if in_valid:
                    raise _err(path, label, "is in the validation list but has no objpos/scale")
                continue  # persons without a rough position are not part of the single-person protocol
            if not scale > 0 or not np.isfinite(ox) or not np.isfinite(oy):
                raise _err(path, label, f"field 'scale' must be positive and objpos finite, got {scale}, ({ox}, {oy})")
            center, box_scale = _adjusted_box(np.array([ox, oy]), scale)
            joints = np.zeros((NUM_JOINTS, 2))
            annotated = np.zeros(NUM_JOINTS, bool)
            is_visible = np.full(NUM_JOINTS, np.nan)
            head = float("nan")
            if split != "test":
                points = getattr(getattr(rect, "annopoints", None), "point", None)
                if points is None:
                    if in_valid:
                        raise _err(path, label, "is in the validation list but has no annopoints")
                    continue
                for p in _items(points):
                    jid, x, y = _scalar(getattr(p, "id", None)), _scalar(getattr(p, "x", None)), _scalar(getattr(p, "y", None))
                    if jid is None or x is None or y is None or not (0 <= jid < NUM_JOINTS) or jid != int(jid) \
                            or not (np.isfinite(x) and np.isfinite(y)):
                        raise _err(path, label, f"bad annopoints.point entry (id={getattr(p, 'id', None)!r})")
                    j = int(jid)
                    joints[j] = (x - 1.0, y - 1.0)
                    annotated[j] = True
                    v = _scalar(getattr(p, "is_visible", None))
                    if v is not None:
                        is_visible[j] = float(v > 0)
                try:
                    hx = _scalar(rect.x2) - _scalar(rect.x1)
                    hy = _scalar(rect.y2) - _scalar(rect.y1)
                    head = 0.6 * float(np.hypot(hx, hy))
                except (AttributeError, TypeError):
                    raise _err(path, label, "missing head rectangle x1/y1/x2/y2 (needed for PCKh)") from None
                if not head > 0:
                    raise _err(path, label, f"degenerate head rectangle (head size {head})")
            records.append(_check_record(MPIIRecord(image=name, center=center, scale=box_scale, joints=joints,
                                                    annotated=annotated, is_visible=is_visible, head_size=head,
                                                    index=idx, person=pid, source=f"{path}:{label}"), path, label))
    if split in ("valid",) and len(records) != len(pairs):
        found = {(r.index, r.person) for r in records}
        lost = sorted(pairs - found)[:5]
        raise MPIIFormatError(f"{path}: {len(pairs) - len(found)} validation persons not found in the file, e.g. "
                              f"(index, person) {lost}")
    return records


def load_mpii(path: str | Path, **kwargs) -> list[MPIIRecord]:
    """Dispatch on the suffix: .json (HRNet/MMPose), .h5 (pose-hg-train), .mat (official)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return load_mpii_json(path)
    if suffix in (".h5", ".hdf5"):
        return load_mpii_h5(path)
    if suffix == ".mat":
        return load_mpii_mat(path, **kwargs)
    raise ValueError(f"{path}: unknown MPII annotation format {suffix!r} (use .json, .h5 or .mat)")


def attach_head_sizes(records: list[MPIIRecord], reference: list[MPIIRecord], *, max_center_dist: float = 2.0
                      ) -> list[MPIIRecord]:
    """Copy head size, occlusion flag and annolist ids from `reference` (e.g. valid.h5) onto
    records that lack them (e.g. JSON), matching image name and crop centre."""
    by_image: dict[str, list[MPIIRecord]] = {}
    for r in reference:
        by_image.setdefault(r.image, []).append(r)
    for rec in records:
        cands = by_image.get(rec.image, [])
        if not cands:
            continue
        dists = [np.linalg.norm(c.center - rec.center) for c in cands]
        best = int(np.argmin(dists))
        if dists[best] <= max_center_dist:
            ref = cands[best]
            rec.head_size = ref.head_size
            if np.all(np.isnan(rec.is_visible)):
                rec.is_visible = ref.is_visible.copy()
            rec.index, rec.person = ref.index, ref.person
    return records


# ---------------------------------------------------------------------------------------------
def record_to_sample(rec: MPIIRecord, image_path: Path | None = None, image=None) -> Sample:
    """One MPII person as a `Sample`: v = 2 visible, 1 annotated but occluded, 0 absent; the box is
    the adjusted square crop box (side 200 x scale); head size and the record in `meta`."""
    vis = np.where(rec.annotated, np.where(rec.is_visible == 0, 1.0, 2.0), 0.0)
    keypoints = np.concatenate([np.where(rec.annotated[:, None], rec.joints, 0.0), vis[:, None]], axis=1)
    side = 200.0 * rec.scale
    # the crop rule centres on x + w/2 - 0.5 (pixel centres at integers)
    box = [rec.center[0] + 0.5 - side / 2, rec.center[1] + 0.5 - side / 2, side, side]
    return Sample(keypoints=keypoints[None], image=image, image_path=image_path, boxes=np.asarray([box]),
                  meta={"head_size": rec.head_size, "record": rec})


class MPIIImageSource:
    """Records + an image folder: `source[i] -> Sample` (image loaded by the pipeline).

    skip_missing_images drops records whose image is absent (e.g. the full valid.h5 next to the
    five shared images) instead of failing at the first read.
    """

    def __init__(self, records: list[MPIIRecord], image_dir: str | Path, *, skip_missing_images: bool = False):
        self.image_dir = Path(image_dir)
        for r in records:  # records built by hand skip the loaders' check
            problem = relative_path_problem(r.image)
            if problem:
                raise MPIIRecordError(f"{r.source or 'MPII record'}: {problem}")
        self.skipped: list[str] = []  # one message per dropped record, for the trainer's bad-record report
        if skip_missing_images:
            present = [(self.image_dir / r.image).is_file() for r in records]
            self.skipped = [f"{r.source or 'MPII record'}: image file not found: {self.image_dir / r.image}"
                            for r, ok in zip(records, present) if not ok]
            records = [r for r, ok in zip(records, present) if ok]
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Sample:
        rec = self.records[i]
        return record_to_sample(rec, self.image_dir / rec.image)
