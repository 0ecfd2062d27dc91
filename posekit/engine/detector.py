"""Person boxes for top-down models: a detections file, a box list, or a torchvision detector.

    boxes = load_box_file("dets.json")          # COCO detections, a COCO annotation file, or
    boxes.lookup("images/000000000785.jpg")     #   {"file name": [[x, y, w, h(, score)], ...]}
    detector = PersonDetector("fasterrcnn")     # torchvision weights, fetched by torchvision
    rows = detector([image])[0]                 # (N, 5) x, y, w, h, score (persons only)

Every box is [x, y, w, h] in pixels of the original image, plus a score (1 when not given).
COCO detections (the standard top-down protocol: a list of {image_id, category_id, bbox,
score}) name images by id: an image file matches an id through `--images-json` (a COCO file
whose "images" give id and file_name) or through its numeric stem (000000000785.jpg -> 785).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

# the torchvision builders, by the name `--detector` takes
DETECTORS = {
    "fasterrcnn": "fasterrcnn_resnet50_fpn",
    "fasterrcnn_v2": "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet": "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_320": "fasterrcnn_mobilenet_v3_large_320_fpn",
}
PERSON = 1  # COCO category id of "person" (torchvision's detection labels are COCO ids)


def parse_box(text: str, where: str = "--box") -> list[float]:
    """"x,y,w,h" (or "x,y,w,h,score") -> numbers; NaN, inf or w, h <= 0 are one-line errors."""
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise ValueError(f"{where} must be x,y,w,h numbers, got {text!r}") from None
    if len(values) not in (4, 5):
        raise ValueError(f"{where} must be x,y,w,h (or x,y,w,h,score), got {text!r}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{where} must be finite numbers, got {text!r}")
    if values[2] <= 0 or values[3] <= 0:
        raise ValueError(f"{where} must have positive w and h, got {text!r}")
    return values


def _box_row(bbox, score, where: str) -> list[float]:
    try:
        values = [float(v) for v in bbox]
        score = 1.0 if score is None else float(score)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: bbox must be [x, y, w, h] numbers, got {bbox!r}") from None
    if len(values) == 5 and score == 1.0:
        values, score = values[:4], values[4]
    if len(values) != 4 or not all(math.isfinite(v) for v in values + [score]) or values[2] <= 0 or values[3] <= 0:
        raise ValueError(f"{where}: bbox must be 4 finite numbers [x, y, w, h] with positive w, h "
                         f"(and a finite score), got {bbox!r}")
    return values + [score]


class BoxFile:
    """Boxes per image, read once; `lookup(name)` -> (N, 5) rows or None (no entry)."""

    def __init__(self, by_id: dict[int, list], by_name: dict[str, list], id_of_file: dict[str, int], source: str):
        self.by_id, self.by_name, self.id_of_file, self.source = by_id, by_name, id_of_file, source

    def __len__(self) -> int:
        return len(self.by_id) + len(self.by_name)

    def lookup(self, name: str, relative: str | None = None) -> np.ndarray | None:
        """Boxes of the image called `name` (its path; `relative`: its path inside the folder
        given on the command line), matched by path, file name or stem; for COCO ids by the
        `images` table or the numeric stem."""
        base, frame_sep, frame = name.partition("#")  # video frames are named "<file>#<frame>"
        p = Path(base)
        keys = [name, f"{p.name}#{frame}", f"{p.stem}#{frame}"] if frame_sep else [name, relative, p.name, p.stem]
        for key in keys:
            if key and key in self.by_name:
                return np.asarray(self.by_name[key], dtype=np.float64).reshape(-1, 5)
        if frame_sep:
            return None
        if self.by_id:
            image_id = self.id_of_file.get(p.name)
            if image_id is None and relative:
                image_id = self.id_of_file.get(relative)
            if image_id is None and p.stem.isdigit():
                image_id = int(p.stem)
            if image_id is not None and image_id in self.by_id:
                return np.asarray(self.by_id[image_id], dtype=np.float64).reshape(-1, 5)
        return None


def load_box_file(path: str | Path, *, images_json: str | Path | None = None,
                  category_id: int | None = None) -> BoxFile:
    """Read a boxes file (see the module docstring). `category_id` keeps only that category
    (default: every box); `images_json` maps COCO image ids to file names."""
    from posekit.data.io import read_json
    path = Path(path)
    raw = read_json(path, "boxes file")
    by_id: dict[int, list] = {}
    by_name: dict[str, list] = {}
    id_of_file: dict[str, int] = {}

    def add_images(images, source):
        for n, im in enumerate(images):
            if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
                raise ValueError(f"{source}: images[{n}] needs 'id' and 'file_name'")
            id_of_file[str(im["file_name"])] = int(im["id"])
            id_of_file.setdefault(Path(str(im["file_name"])).name, int(im["id"]))

    records = None
    if isinstance(raw, list):
        records = raw
    elif isinstance(raw, dict) and isinstance(raw.get("annotations"), list):  # a COCO annotation file
        records = raw["annotations"]
        add_images(raw.get("images") or [], str(path))
    elif isinstance(raw, dict):
        for name, boxes in raw.items():
            if not isinstance(boxes, list):
                raise ValueError(f"{path}: {name!r}: expected a list of [x, y, w, h(, score)] boxes")
            rows = boxes if not boxes or isinstance(boxes[0], (list, tuple)) else [boxes]
            by_name[str(name)] = [_box_row(b, None, f"{path}: {name!r}[{i}]") for i, b in enumerate(rows)]
        records = []
    else:
        raise ValueError(f"{path}: expected COCO detections (a list of {{image_id, bbox, score}}), a COCO "
                         "annotation file, or {\"file name\": [[x, y, w, h, score], ...]}")
    for n, rec in enumerate(records):
        where = f"{path}: record {n}"
        if not isinstance(rec, dict) or "image_id" not in rec or "bbox" not in rec:
            raise ValueError(f"{where}: a detection needs 'image_id' and 'bbox'")
        if category_id is not None and int(rec.get("category_id", category_id)) != int(category_id):
            continue
        try:
            image_id = int(rec["image_id"])
        except (TypeError, ValueError):
            raise ValueError(f"{where}: image_id must be an integer, got {rec['image_id']!r}") from None
        by_id.setdefault(image_id, []).append(_box_row(rec["bbox"], rec.get("score"), where))
    if images_json:
        ref = read_json(images_json, "COCO images file")
        if not isinstance(ref, dict) or not isinstance(ref.get("images"), list):
            raise ValueError(f"{images_json}: expected a COCO file with an 'images' list")
        add_images(ref["images"], str(images_json))
    return BoxFile(by_id, by_name, id_of_file, str(path))


def keep_boxes(rows: np.ndarray | None, threshold: float) -> np.ndarray | None:
    """Rows with score >= threshold (None stays None)."""
    if rows is None:
        return None
    return rows[rows[:, 4] >= threshold]


def _looks_like_path(text: str) -> bool:
    """A --detector-weights value meant as a file (a folder part or a weights-file suffix), not a
    torchvision weights name such as DEFAULT or COCO_V1."""
    return "/" in text or "\\" in text or Path(text).suffix.lower() in (".pt", ".pth", ".bin", ".ckpt",
                                                                      ".safetensors", ".tar")


def _load_local_weights(model: torch.nn.Module, path: Path, what: str) -> None:
    """Load a state-dict file into `model`; a file of another architecture is one line naming the
    keys that differ (the first few of each kind, and how many)."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated, or pickled objects beyond tensors
        raise ValueError(f"{path}: cannot read it as a state dict for {what} ({type(e).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict (name -> tensor) for {what}")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        def few(keys):
            return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
        parts = [f"{len(v)} {label} ({few(v)})" for label, v in
                 (("missing", missing), ("unexpected", unexpected), ("with another shape", shapes)) if v]
        raise ValueError(f"{path}: not a state dict of {what}: keys differ: {'; '.join(parts)}")
    model.load_state_dict(state)


class PersonDetector:
    """A torchvision Faster R-CNN that returns person boxes.

    weights: "DEFAULT" (torchvision's COCO weights, downloaded and cached by torchvision's own
    mechanism), another torchvision weights name, a local state-dict file, or None (random
    initialisation: only for testing the wiring offline)."""

    def __init__(self, name: str = "fasterrcnn", *, weights: str | None = "DEFAULT", score_threshold: float = 0.5,
                 device: str = "cpu", **kwargs):
        import torchvision.models.detection as detection
        if name not in DETECTORS:
            raise ValueError(f"unknown detector {name!r}; valid: {', '.join(DETECTORS)}")
        if not math.isfinite(score_threshold) or not 0 <= score_threshold <= 1:
            raise ValueError(f"detector score threshold must be in [0, 1], got {score_threshold}")
        builder = getattr(detection, DETECTORS[name])
        self.name, self.score_threshold = name, float(score_threshold)
        kwargs.setdefault("box_score_thresh", min(0.05, self.score_threshold))
        local = weights is not None and str(weights).lower() != "none" and Path(str(weights)).is_file()
        if weights is not None and not local and _looks_like_path(str(weights)):
            raise FileNotFoundError(f"detector {name}: weights file not found: {weights}")
        if weights is None or str(weights).lower() == "none" or local:
            model = builder(weights=None, weights_backbone=None, **kwargs)
            if local:
                _load_local_weights(model, Path(str(weights)), f"detector {name} ({DETECTORS[name]})")
        else:
            try:
                model = builder(weights=str(weights), weights_backbone=None, **kwargs)
            except (KeyError, ValueError) as e:
                raise ValueError(f"detector {name}: unknown weights {weights!r} ({e})") from None
            except (OSError, RuntimeError) as e:  # offline, or a broken download
                raise ValueError(f"detector {name}: cannot get torchvision weights {weights!r} ({e}); when offline, "
                                 "put them in the torch hub cache or pass a local state-dict file") from None
        from posekit.engine import distributed
        self.device = distributed.pick_device(device, option="--device")
        self.model = model.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """RGB uint8 images -> per image (N, 5) person boxes x, y, w, h, score, best first."""
        tensors = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).float().div(255.0).to(self.device)
                   for im in images]
        out = []
        for det in self.model(tensors) if tensors else []:
            keep = (det["labels"] == PERSON) & (det["scores"] >= self.score_threshold)
            xyxy = det["boxes"][keep].double().cpu().numpy()
            scores = det["scores"][keep].double().cpu().numpy()
            rows = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2], scores[:, None]], axis=1)
            rows = rows[(rows[:, 2] > 0) & (rows[:, 3] > 0)]
            out.append(rows[np.argsort(-rows[:, 4], kind="stable")])
        return out
