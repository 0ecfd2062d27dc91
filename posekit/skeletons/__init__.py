"""Skeletons: the one place that declares keypoint names, flip pairs, limbs, OKS sigmas and colours.

Every other module (flip augmentation, PAF targets, drawing, OKS metrics, exporters) asks a
`Skeleton` instead of keeping its own copy, so a custom dataset declares its layout once
(in Python or in a YAML file) and everything follows.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

__all__ = ["Skeleton", "get_skeleton", "register_skeleton", "list_skeletons", "load_skeleton_yaml", "landmarks",
           "MAX_KEYPOINTS"]

# The most keypoints a skeleton may have (issue 20). The largest real layouts have a few hundred
# (COCO-WholeBody 133, a 468-point face mesh); every keypoint is an output channel, a heatmap and
# an OKS sigma, so a skeleton far past this is a typo that would build for minutes or exhaust memory.
MAX_KEYPOINTS = 1000


def _hex_to_rgb(color: str) -> tuple[int, int, int]:
    color = color.lstrip("#")
    return tuple(int(color[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


@dataclass(frozen=True)
class Skeleton:
    """A keypoint layout.

    `flip_pairs` are (left, right) index pairs swapped by a horizontal flip; `limbs` are
    (from, to) index pairs used for drawing (and, for OpenPose, for part affinity fields);
    `sigmas` are the COCO OKS per-keypoint constants; `colors` are RGB per keypoint.
    """

    name: str
    keypoints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...] = ()
    limbs: tuple[tuple[int, int], ...] = ()
    sigmas: tuple[float, ...] | None = None
    colors: tuple[tuple[int, int, int], ...] | None = None
    limb_colors: tuple[tuple[int, int, int], ...] | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        k = len(self.keypoints)
        if len(set(self.keypoints)) != k:
            raise ValueError(f"skeleton {self.name!r}: duplicate keypoint names")
        for field_name, pairs in (("flip_pairs", self.flip_pairs), ("limbs", self.limbs)):
            for a, b in pairs:
                if not (0 <= a < k and 0 <= b < k):
                    raise ValueError(f"skeleton {self.name!r}: {field_name} entry ({a}, {b}) out of range for {k} keypoints")
        seen = [i for pair in self.flip_pairs for i in pair]
        if len(seen) != len(set(seen)):
            raise ValueError(f"skeleton {self.name!r}: a keypoint appears in two flip pairs")
        if self.sigmas is not None and len(self.sigmas) != k:
            raise ValueError(f"skeleton {self.name!r}: sigmas has {len(self.sigmas)} values, expected {k}")
        if self.colors is not None and len(self.colors) != k:
            raise ValueError(f"skeleton {self.name!r}: colors has {len(self.colors)} values, expected {k}")
        if self.limb_colors is not None and len(self.limb_colors) != len(self.limbs):
            raise ValueError(f"skeleton {self.name!r}: limb_colors has {len(self.limb_colors)} values, expected {len(self.limbs)}")

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    def __len__(self) -> int:
        return len(self.keypoints)

    def index(self, name: str) -> int:
        try:
            return self.keypoints.index(name)
        except ValueError:
            raise KeyError(f"skeleton {self.name!r} has no keypoint {name!r}; it has {list(self.keypoints)}") from None

    @property
    def flip_index(self) -> np.ndarray:
        """Permutation p such that flipped[..., i, :] = keypoints[..., p[i], :] after mirroring x."""
        perm = np.arange(len(self.keypoints))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def keypoint_colors(self) -> np.ndarray:
        """(K, 3) uint8 RGB; a deterministic palette when none is declared."""
        if self.colors is not None:
            return np.asarray(self.colors, dtype=np.uint8)
        return _palette(len(self.keypoints))

    def limb_colors_rgb(self) -> np.ndarray:
        if self.limb_colors is not None:
            return np.asarray(self.limb_colors, dtype=np.uint8)
        kc = self.keypoint_colors()
        if not self.limbs:
            return np.zeros((0, 3), np.uint8)
        return np.stack([kc[b] for _, b in self.limbs])

    def oks_sigmas(self) -> np.ndarray:
        """OKS sigmas; a skeleton without declared sigmas is an error, never a silent 1/K."""
        if self.sigmas is None:
            raise ValueError(
                f"skeleton {self.name!r} declares no OKS sigmas; add `sigmas:` to its YAML "
                "(see posekit.metrics.coco.estimate_sigmas to compute them from repeated annotations)")
        return np.asarray(self.sigmas, dtype=np.float64)

    def to_dict(self) -> dict:
        d = {"name": self.name, "keypoints": list(self.keypoints),
             "flip_pairs": [list(p) for p in self.flip_pairs], "limbs": [list(p) for p in self.limbs]}
        if self.sigmas is not None:
            d["sigmas"] = list(self.sigmas)
        if self.colors is not None:
            d["colors"] = ["#%02x%02x%02x" % tuple(c) for c in self.colors]
        return d

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "<dict>") -> "Skeleton":
        """A skeleton from a mapping (a YAML file's content); every problem is one ValueError
        naming `source` and the key: names must be a list of distinct strings, pairs must name
        known keypoints (by name or 0-based index), a keypoint flips with at most one other."""
        if not isinstance(d, dict):
            raise ValueError(f"{source}: a skeleton must be a mapping, got {type(d).__name__}")
        allowed = {"name", "keypoints", "flip_pairs", "limbs", "sigmas", "colors", "limb_colors"}
        unknown = set(d) - allowed
        if unknown:
            raise ValueError(f"{source}: unknown skeleton field(s) {sorted(map(str, unknown))}; valid: {sorted(allowed)}")
        for required in ("name", "keypoints"):
            if required not in d:
                raise ValueError(f"{source}: skeleton needs a {required!r} field")
        if not isinstance(d["name"], str) or not d["name"]:
            raise ValueError(f"{source}: 'name' must be a non-empty string, got {d['name']!r}")
        raw_names = d["keypoints"]
        if not isinstance(raw_names, list) or not raw_names:
            raise ValueError(f"{source}: 'keypoints' must be a non-empty list of names, got {raw_names!r}")
        if not all(isinstance(n, str) and n for n in raw_names):
            bad = next(n for n in raw_names if not (isinstance(n, str) and n))
            raise ValueError(f"{source}: 'keypoints' entries must be non-empty strings, got {bad!r}")
        if len(raw_names) > MAX_KEYPOINTS:
            raise ValueError(f"{source}: 'keypoints' lists {len(raw_names)} names; a skeleton has at most "
                             f"{MAX_KEYPOINTS} (split the layout or check the file)")
        names = list(raw_names)
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"{source}: 'keypoints' lists {dupes} more than once")
        k = len(names)

        def idx(v, key, entry):
            if isinstance(v, str):
                if v not in names:
                    raise ValueError(f"{source}: {key} entry {entry!r} names unknown keypoint {v!r}")
                return names.index(v)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{source}: {key} entry {entry!r}: {v!r} is neither a keypoint name nor an index")
            if not 0 <= v < k:
                raise ValueError(f"{source}: {key} entry {entry!r}: index {v} out of range for {k} keypoints")
            return v

        def pairs(key):
            raw = d.get(key)
            if raw is None:
                return ()
            if not isinstance(raw, list):
                raise ValueError(f"{source}: {key!r} must be a list of pairs, got {raw!r}")
            out = []
            for p in raw:
                if not isinstance(p, (list, tuple)) or len(p) != 2:
                    raise ValueError(f"{source}: each {key} entry must be a pair, got {p!r}")
                a, b = idx(p[0], key, p), idx(p[1], key, p)
                if a == b:
                    raise ValueError(f"{source}: {key} entry {p!r} pairs a keypoint with itself")
                out.append((a, b))
            return tuple(out)

        def colors(key, count):
            vals = d.get(key)
            if vals is None:
                return None
            if not isinstance(vals, list) or len(vals) != count:
                raise ValueError(f"{source}: {key!r} must be a list of {count} colours")
            out = []
            for c in vals:
                try:
                    rgb = _hex_to_rgb(c) if isinstance(c, str) else tuple(int(x) for x in c)
                except (TypeError, ValueError):
                    raise ValueError(f"{source}: {key!r}: {c!r} is not a '#rrggbb' colour or [r, g, b]") from None
                if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb) \
                        or (isinstance(c, str) and len(c.lstrip("#")) != 6):
                    raise ValueError(f"{source}: {key!r}: {c!r} is not a '#rrggbb' colour or [r, g, b] in 0..255")
                out.append(rgb)
            return tuple(out)

        flip_pairs, limbs = pairs("flip_pairs"), pairs("limbs")
        seen = [i for pair in flip_pairs for i in pair]
        if len(seen) != len(set(seen)):
            twice = next(names[i] for i in seen if seen.count(i) > 1)
            raise ValueError(f"{source}: 'flip_pairs': keypoint {twice!r} appears in two pairs (each pair is "
                             "listed once and swaps both ways)")
        sigmas = d.get("sigmas")
        if sigmas is not None:
            if not isinstance(sigmas, list) or len(sigmas) != k:
                raise ValueError(f"{source}: 'sigmas' must be a list of {k} numbers (one per keypoint)")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                       for v in sigmas):
                raise ValueError(f"{source}: 'sigmas' must be positive finite numbers, got {sigmas!r}")
            sigmas = tuple(float(v) for v in sigmas)
        try:
            return cls(name=d["name"], keypoints=tuple(names), flip_pairs=flip_pairs, limbs=limbs, sigmas=sigmas,
                       colors=colors("colors", k), limb_colors=colors("limb_colors", len(limbs)))
        except ValueError as e:
            if str(e).startswith(source):
                raise
            raise ValueError(f"{source}: {e}") from None


def _palette(n: int) -> np.ndarray:
    import colorsys
    return np.array([[int(255 * c) for c in colorsys.hsv_to_rgb(i / max(n, 1), 0.85, 0.95)] for i in range(n)],
                    dtype=np.uint8)


_SKELETONS: dict[str, Skeleton] = {}


def register_skeleton(skeleton: Skeleton) -> Skeleton:
    if skeleton.name in _SKELETONS and _SKELETONS[skeleton.name] != skeleton:
        raise ValueError(f"a different skeleton named {skeleton.name!r} is already registered")
    _SKELETONS[skeleton.name] = skeleton
    return skeleton


def find_skeleton_file(path: str | Path, root: str | Path | None = None) -> Path:
    """A skeleton YAML path as given (absolute, or from the working directory), else under the
    data `root`. When neither exists the error says why: first whether `root` itself is missing
    (a wrong data.root is the usual cause), then both places looked in."""
    p = Path(path)
    if p.is_absolute() or p.is_file() or root is None:
        return p
    if not Path(root).is_dir():
        raise FileNotFoundError(f"data root does not exist: {root} (set data.root to the dataset folder; "
                                f"the skeleton file {p} is looked up in the working directory, then there)")
    if (Path(root) / p).is_file():
        return Path(root) / p
    raise FileNotFoundError(f"skeleton file not found: {p} (looked in the working directory and in {root})")


def load_skeleton_yaml(path: str | Path) -> Skeleton:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"skeleton file not found: {path}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not a readable YAML file ({first})") from None
    except RecursionError:
        raise ValueError(f"{path}: YAML nested too deeply") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a skeleton YAML must be a mapping")
    return Skeleton.from_dict(data, source=str(path))


def landmarks(k: int) -> Skeleton:
    """The generated skeleton `landmarks{K}` of K discovered points (l0 .. l{K-1}; no flip pairs,
    no limbs, distinct colours), for unsupervised models: Results, plots and exports work as
    for a declared skeleton. `get_skeleton("landmarks30")` builds it on demand."""
    k = int(k)
    if k < 1:
        raise ValueError(f"a landmark skeleton needs K >= 1, got {k}")
    if k > MAX_KEYPOINTS:
        raise ValueError(f"skeleton 'landmarks{k}': a landmark skeleton has at most {MAX_KEYPOINTS} points "
                         f"(each is a model output and a heatmap; the largest real layouts have a few hundred)")
    name = f"landmarks{k}"
    if name not in _SKELETONS:
        register_skeleton(Skeleton(name=name, keypoints=tuple(f"l{i}" for i in range(k)),
                                   colors=tuple(tuple(int(v) for v in c) for c in _palette(k))))
    return _SKELETONS[name]


def get_skeleton(name_or_path: str | Skeleton) -> Skeleton:
    """A built-in skeleton by name, `landmarks{K}`, or a custom one from a YAML file path."""
    if isinstance(name_or_path, Skeleton):
        return name_or_path
    if name_or_path in _SKELETONS:
        return _SKELETONS[name_or_path]
    match = re.fullmatch(r"landmarks(\d+)", str(name_or_path))
    if match:
        digits = match.group(1)
        if len(digits.lstrip("0")) > len(str(MAX_KEYPOINTS)):  # refused before int() of a huge digit string
            raise ValueError(f"skeleton 'landmarks{digits[:12]}{'...' if len(digits) > 12 else ''}': a landmark "
                             f"skeleton has at most {MAX_KEYPOINTS} points (each is a model output and a heatmap; "
                             "the largest real layouts have a few hundred)")
        return landmarks(int(digits))
    if str(name_or_path).endswith((".yaml", ".yml")):
        return register_skeleton(load_skeleton_yaml(name_or_path))
    raise KeyError(f"unknown skeleton {name_or_path!r}; built-ins: {sorted(_SKELETONS)} (or give a .yaml path)")


def list_skeletons() -> list[str]:
    return sorted(_SKELETONS)


from . import builtin  # noqa: E402,F401  (registers the built-in skeletons)
from .mappings import MAPPINGS, map_keypoints  # noqa: E402,F401
