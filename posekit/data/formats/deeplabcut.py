"""DeepLabCut labelled data: `CollectedData_<scorer>.h5` / `.csv` + the project's `config.yaml`.

DeepLabCut's labelling GUI saves one pandas DataFrame per video folder under `labeled-data/`:
rows are images (a path like `labeled-data/<video>/img001.png`, or since DLC 2.2 the three parts
as a MultiIndex), columns a MultiIndex `scorer / [individuals /] bodyparts / coords (x, y)`, in
pixels, NaN where a body part is not labelled. The `.h5` is a pandas HDFStore in the "fixed"
layout (key `df_with_missing`); it is read here with h5py, so neither pandas nor PyTables is
needed. The project's `config.yaml` gives the body part order (`bodyparts`, or
`multianimalbodyparts` for multi-animal projects) and the `skeleton` (limbs by name).

Each image is one Sample with one person per individual that has a labelled part (the
`single` individual of multi-animal projects, DLC's unique body parts such as a feeder, is not an
animal and is left out). Boxes are the labelled parts' extent padded by 10 % (DLC has none), the
OKS area their product. Flip pairs are not part of a DLC project; they are inferred from the
names (`left_ear` <-> `right_ear`, `leftpaw` <-> `rightpaw`, `L_x` <-> `R_x`); a skeleton YAML
(data.skeleton) overrides them.
"""
from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path

import numpy as np
import yaml

from posekit.data.formats.coco import COCOSamples
from posekit.data.formats.yolo import image_wh
from posekit.data.io import open_h5
from posekit.data.sample import BadRecordError, Sample, check_values, relative_path_problem
from posekit.skeletons import Skeleton

__all__ = ["DLCFormatError", "DLCRecordError", "read_collected_data", "read_dlc_config", "dlc_skeleton",
           "load_deeplabcut", "infer_flip_pairs", "collected_data_files"]

BOX_PADDING = 0.1  # boxes: the labelled parts' extent grown by this fraction of its longer side
UNIQUE_INDIVIDUAL = "single"  # DLC's pseudo-individual holding the unique (non-animal) body parts


class DLCFormatError(ValueError):
    """A DeepLabCut file is malformed; the message names the file (and row)."""


class DLCRecordError(DLCFormatError, BadRecordError):
    """One bad image row (``on_bad_record="error"``)."""


def _text(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _h5_index(group, prefix: str, path) -> list[tuple]:
    """A pandas fixed-format index (`axis0`, `axis1`, `block0_items`) as a list of tuples."""
    variety = _text(group.attrs.get(f"{prefix}_variety", b"regular"))
    if variety == "multi":
        n = int(group.attrs[f"{prefix}_nlevels"])
        levels = [[_text(v) for v in group[f"{prefix}_level{i}"][()]] for i in range(n)]
        codes = [group[f"{prefix}_label{i}"][()] for i in range(n)]
        return [tuple(levels[i][c[j]] if c[j] >= 0 else "" for i, c in enumerate(codes)) for j in range(len(codes[0]))]
    if prefix in group:
        return [(_text(v),) for v in group[prefix][()]]
    raise DLCFormatError(f"{path}: no {prefix!r} in the HDF5 frame; not a pandas DataFrame saved by DeepLabCut")


def _read_h5(path: Path):
    with open_h5(path, "DeepLabCut CollectedData file", DLCFormatError) as f:
        keys = list(f.keys())
        key = "df_with_missing" if "df_with_missing" in f else (keys[0] if len(keys) == 1 else None)
        if key is None:
            raise DLCFormatError(f"{path}: expected one DataFrame (key 'df_with_missing'), found keys {keys}")
        g = f[key]
        kind = _text(g.attrs.get("pandas_type", b""))
        if kind != "frame":
            hint = " (PyTables 'table' layout: save it as CSV in DeepLabCut, or re-save with format='fixed')" \
                if kind == "frame_table" else ""
            raise DLCFormatError(f"{path}: pandas_type {kind!r} is not a fixed-layout DataFrame{hint}")
        columns = _h5_index(g, "axis0", path)
        rows = _h5_index(g, "axis1", path)
        values = np.full((len(rows), len(columns)), np.nan)
        position = {c: i for i, c in enumerate(columns)}
        for b in range(int(g.attrs.get("nblocks", 0))):
            items = _h5_index(g, f"block{b}_items", path)
            block = np.asarray(g[f"block{b}_values"][()], dtype=np.float64)
            if block.shape != (len(rows), len(items)):
                raise DLCFormatError(f"{path}: block {b} has shape {block.shape}, expected {(len(rows), len(items))}")
            for j, item in enumerate(items):
                values[:, position[item]] = block[:, j]
        names = [_text(g.attrs.get(f"axis0_level{i}", b"")) for i in range(len(columns[0]) if columns else 0)]
        for i in range(len(names)):
            ds = g.get(f"axis0_level{i}")
            if ds is not None and "name" in ds.attrs:
                names[i] = _text(ds.attrs["name"])
    return columns, names, rows, values


def _read_csv(path: Path):
    """DLC's CSV: header rows named scorer, [individuals,] bodyparts, coords; then one row per image,
    the first 1 or 3 cells the image path."""
    with open(path, newline="") as f:
        table = list(csv.reader(f))
    head = []
    for row in table:
        if row and row[0] in ("scorer", "individuals", "bodyparts", "coords"):
            head.append(row)
        else:
            break
    if [r[0] for r in head][:1] != ["scorer"] or head[-1][0] != "coords":
        raise DLCFormatError(f"{path}: the first rows must be the scorer, [individuals,] bodyparts and coords "
                             "header of a DeepLabCut CollectedData file")
    width = len(head[0])
    first = next(j for j in range(1, width) if head[0][j] != "")
    columns = [tuple(r[j] for r in head) for j in range(first, width)]
    names = [r[0] for r in head]
    rows, values = [], []
    for n, row in enumerate(table[len(head):], len(head) + 1):
        if not row or not any(row):
            continue
        if len(row) != width:
            raise DLCFormatError(f"{path}: row {n}: {len(row)} cells, the header has {width}")
        rows.append(tuple(row[:first]))
        try:
            values.append([float(v) if v.strip() else math.nan for v in row[first:]])
        except ValueError:
            raise DLCFormatError(f"{path}: row {n} ({'/'.join(row[:first])}): coordinates must be numbers") from None
    return columns, names, rows, np.asarray(values, dtype=np.float64).reshape(len(rows), len(columns))


def read_collected_data(path) -> dict:
    """A CollectedData file as {"scorer", "individuals" (None for single-animal), "bodyparts",
    "images" (relative paths), "xy" (N, I, K, 2) with NaN where unlabelled}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DeepLabCut CollectedData file not found: {path}")
    if path.suffix.lower() in (".h5", ".hdf5"):
        columns, names, rows, values = _read_h5(path)
    elif path.suffix.lower() == ".csv":
        columns, names, rows, values = _read_csv(path)
    else:
        raise DLCFormatError(f"{path}: expected CollectedData_<scorer>.h5 or .csv")
    if names[:1] != ["scorer"] or names[-1] != "coords" or len(names) not in (3, 4) or \
            (len(names) == 4 and names[1] != "individuals"):
        raise DLCFormatError(f"{path}: column levels {names}; expected scorer, [individuals,] bodyparts, coords")
    multi = len(names) == 4
    scorers = sorted({c[0] for c in columns})
    if len(scorers) != 1:
        raise DLCFormatError(f"{path}: several scorers {scorers}; one CollectedData file has one")
    individuals, bodyparts = [], []
    for c in columns:
        ind, bp = (c[1], c[2]) if multi else ("", c[1])
        if ind not in individuals:
            individuals.append(ind)
        if bp not in bodyparts and ind != UNIQUE_INDIVIDUAL:
            bodyparts.append(bp)
    individuals = [i for i in individuals if i != UNIQUE_INDIVIDUAL]
    xy = np.full((len(rows), len(individuals), len(bodyparts), 2), np.nan)
    for j, c in enumerate(columns):
        ind, bp, coord = (c[1], c[2], c[3]) if multi else ("", c[1], c[2])
        if ind == UNIQUE_INDIVIDUAL:
            continue
        if coord not in ("x", "y"):
            if coord == "likelihood":
                continue  # a machine-labelled file: the coordinates are still usable
            raise DLCFormatError(f"{path}: coords level has {coord!r}; expected x and y")
        xy[:, individuals.index(ind), bodyparts.index(bp), "xy".index(coord)] = values[:, j]
    images = ["/".join(p for p in r if p) for r in rows]
    return {"scorer": scorers[0], "individuals": individuals if multi else None, "bodyparts": bodyparts,
            "images": images, "xy": xy, "file": path}


def read_dlc_config(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DeepLabCut config.yaml not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise DLCFormatError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(raw, dict) or ("bodyparts" not in raw and "multianimalbodyparts" not in raw):
        raise DLCFormatError(f"{path}: not a DeepLabCut project config (no 'bodyparts')")
    parts = raw.get("multianimalbodyparts") if raw.get("multianimalproject") else raw.get("bodyparts")
    if not isinstance(parts, list) or not parts or not all(isinstance(p, str) for p in parts):
        raise DLCFormatError(f"{path}: 'bodyparts' must be a list of names, got {parts!r}")
    return {**raw, "parts": parts, "file": path}


_SIDES = [(re.compile(r"left", re.I), "left", "right"), (re.compile(r"right", re.I), "right", "left")]


def _mirror_name(name: str) -> str | None:
    for pattern, a, b in _SIDES:
        m = pattern.search(name)
        if m:
            word = m.group(0)
            repl = b.upper() if word.isupper() else (b.capitalize() if word[0].isupper() else b)
            return name[:m.start()] + repl + name[m.end():]
    m = re.match(r"^([LlRr])([_\-. ].*)$", name) or re.match(r"^(.*[_\-. ])([LlRr])$", name)
    if m:
        if len(m.group(1)) == 1:
            side = m.group(1)
            other = {"L": "R", "R": "L", "l": "r", "r": "l"}[side]
            return other + m.group(2)
        side = m.group(2)
        return m.group(1) + {"L": "R", "R": "L", "l": "r", "r": "l"}[side]
    return None


def infer_flip_pairs(names) -> tuple[tuple[int, int], ...]:
    """(i, j) pairs of names that differ only by left/right (or a leading/trailing L/R)."""
    names = list(names)
    pairs, used = [], set()
    for i, n in enumerate(names):
        m = _mirror_name(n)
        if m is not None and m in names and i not in used:
            j = names.index(m)
            if j != i and j not in used:
                pairs.append((min(i, j), max(i, j)))
                used.update((i, j))
    return tuple(sorted(pairs))


def dlc_skeleton(bodyparts, limbs_by_name=(), *, name: str = "deeplabcut", source: str = "config.yaml") -> Skeleton:
    limbs = []
    for pair in limbs_by_name or ():
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(p in bodyparts for p in pair)):
            raise DLCFormatError(f"{source}: skeleton entry {pair!r} must name two body parts of {list(bodyparts)}")
        if pair[0] != pair[1]:
            limbs.append((bodyparts.index(pair[0]), bodyparts.index(pair[1])))
    return Skeleton(name=name, keypoints=tuple(bodyparts), flip_pairs=infer_flip_pairs(bodyparts), limbs=tuple(limbs))


def collected_data_files(project: Path, scorer: str | None) -> list[Path]:
    """Every labeled-data/<video>/CollectedData_<scorer>.h5 (else .csv) of a project, sorted."""
    out = []
    for folder in sorted(p for p in (project / "labeled-data").glob("*") if p.is_dir()):
        pattern = f"CollectedData_{scorer}" if scorer else "CollectedData_*"
        found = sorted(folder.glob(pattern + ".h5")) or sorted(folder.glob(pattern + ".csv"))
        out += found[:1]
    return out


def _project_of(path: Path) -> Path:
    """The project folder of a CollectedData file (the folder holding labeled-data/)."""
    for parent in path.resolve().parents:
        if parent.name == "labeled-data":
            return parent.parent
    return path.parent


def load_deeplabcut(source, *, on_bad_record: str = "error", config=None) -> COCOSamples:
    """Samples from a project's config.yaml (all its labeled-data folders) or one CollectedData
    file (its project's config.yaml, when found, gives the body part order and the skeleton).
    The returned list carries `.skeleton` (from config.yaml, else the file's body parts)."""
    if on_bad_record not in ("error", "skip"):
        raise ValueError(f"on_bad_record must be 'error' or 'skip', got {on_bad_record!r}")
    source = Path(source)
    if source.suffix.lower() in (".yaml", ".yml"):
        cfg = read_dlc_config(source)
        project = source.parent
        files = collected_data_files(project, cfg.get("scorer"))
        if not files:
            raise FileNotFoundError(f"{source}: no labeled-data/*/CollectedData_{cfg.get('scorer', '*')}.h5 or .csv "
                                    f"under {project}")
    else:
        project = _project_of(source)
        cfg_file = Path(config) if config else project / "config.yaml"
        cfg = read_dlc_config(cfg_file) if cfg_file.is_file() else None
        files = [source]
    tables = [read_collected_data(f) for f in files]
    order = list(cfg["parts"]) if cfg else list(tables[0]["bodyparts"])
    where = cfg["file"] if cfg else files[0]
    skeleton = dlc_skeleton(order, (cfg or {}).get("skeleton") or (), name=f"dlc_{project.name}"[:64] or "deeplabcut",
                            source=str(where))
    root = os.path.normpath(os.path.abspath(project))
    samples, skipped = [], []
    for t in tables:
        missing = [b for b in t["bodyparts"] if b not in order]
        if missing:
            raise DLCFormatError(f"{t['file']}: body parts {missing} are not in {where} ({order})")
        index = [t["bodyparts"].index(b) if b in t["bodyparts"] else -1 for b in order]
        for r, name in enumerate(t["images"]):
            record = f"{t['file']}: row {r + 1} ({name})"
            try:
                problem = relative_path_problem(name)
                if problem:
                    raise DLCFormatError(f"{record}: {problem}; refused")
                full = os.path.normpath(os.path.join(root, name))
                if os.path.commonpath([root, full]) != root:
                    raise DLCFormatError(f"{record}: image path leaves the project folder {root}; refused")
                xy = t["xy"][r]  # (I, K_file, 2)
                xy = np.stack([xy[:, i] if i >= 0 else np.full((len(xy), 2), np.nan) for i in index], axis=1)
                labelled = np.isfinite(xy).all(-1)
                check_values(np.where(np.isfinite(xy), xy, 0.0), "coordinates", record)
                if not Path(full).is_file():
                    raise BadRecordError(f"{record}: image file not found: {full}")
                w, h = image_wh(Path(full))
                kp, boxes = [], []
                for i in range(len(xy)):
                    if not labelled[i].any():
                        continue
                    pts = xy[i][labelled[i]]
                    lo, hi = pts.min(0), pts.max(0)
                    pad = BOX_PADDING * max(float((hi - lo).max()), 1.0)
                    boxes.append([lo[0] - pad, lo[1] - pad, hi[0] - lo[0] + 2 * pad, hi[1] - lo[1] + 2 * pad])
                    kp.append(np.concatenate([np.where(labelled[i][:, None], xy[i], 0.0),
                                              2.0 * labelled[i][:, None]], axis=1))
            except BadRecordError as e:
                if on_bad_record == "error":
                    raise DLCRecordError(str(e)) from None
                skipped.append(str(e))
                continue
            except DLCFormatError as e:
                if on_bad_record == "error" or "refused" in str(e):
                    raise
                skipped.append(str(e))
                continue
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            samples.append(Sample(keypoints=np.stack(kp) if kp else np.zeros((0, len(order), 3)),
                                  image_path=Path(full), boxes=boxes,
                                  meta={"image_id": len(samples) + 1, "file_name": name, "width": w, "height": h,
                                        "areas": boxes[:, 2] * boxes[:, 3],
                                        "individuals": [n for n, lab in zip(t["individuals"] or [""], labelled.any(-1))
                                                        if lab]}))
    out = COCOSamples(samples, skipped=skipped, keypoint_names=tuple(order), category_id=1, ann_file=files[0])
    out.skeleton = skeleton
    return out
