"""`posekit data show | stats | sigmas`: look at a recipe's data through its own family's pipeline.

show: n items of a split exactly as the model gets them (augmented, with the seed the trainer
would use for epoch 0) next to the same items un-augmented, targets overlaid. stats: counts a
dataset's images, people, labelled keypoints per joint, box sizes, unreadable images and the
records the reader skipped. sigmas: OKS sigmas from repeated annotations (metrics.sigmas).
"""
from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from posekit.data import robust
from posekit.data.io import read_json, write_image
from posekit.data.sample import Sample
from posekit.families.base import build_task
from posekit.metrics.sigmas import MIN_PEOPLE, estimate_sigmas, match_repeats
from posekit.viz.dataset import captioned, draw_keypoints, grid, overlay_maps


def _image_samples(dataset):
    """The image-level Samples under a pipeline (`.source`, `.images`), or None."""
    obj = dataset
    for _ in range(4):
        nxt = getattr(obj, "images", None)
        if nxt is not None and not callable(nxt):
            return nxt
        nxt = getattr(obj, "source", None)
        if nxt is None:  # the bottom of the chain: a list or a generator of image Samples
            return obj if obj is not dataset and hasattr(obj, "__getitem__") and hasattr(obj, "__len__") else None
        obj = nxt
    return obj


def _peek(images, i):
    return images.peek(i) if hasattr(images, "peek") else images[i]


def _task_and_split(cfg, split: str):
    task = build_task(cfg)
    datasets = task.build_datasets((split,))
    if split not in datasets:
        raise ValueError(f"split {split!r} is not built by this recipe (it has {sorted(datasets) or 'none'}); "
                         "set its annotation file (data.train_ann / data.val_ann)")
    return task, datasets[split]


# --- stats -------------------------------------------------------------------------------------------
def dataset_stats(cfg, split: str = "train", *, check_images: bool = True) -> dict:
    task, dataset = _task_and_split(cfg, split)
    skeleton = task.skeleton
    names = list(skeleton.keypoints) if skeleton is not None else []
    images = _image_samples(dataset)
    out = {"split": split, "family": cfg.task, "items": len(dataset), "skipped_records": robust.reader_skipped(dataset)}
    if images is None:
        return out
    n_people, per_person, sides, unreadable = 0, [], [], []
    k = len(names)
    labelled = np.zeros(k)
    visible = np.zeros(k)
    for i in range(len(images)):
        s: Sample = _peek(images, i)
        kp = s.keypoints
        k = kp.shape[1]
        if len(labelled) != k:
            labelled, visible, names = np.zeros(k), np.zeros(k), names if len(names) == k else [str(j) for j in range(k)]
        n_people += len(kp)
        per_person += list((kp[..., 2] > 0).sum(1))
        labelled += (kp[..., 2] > 0).sum(0)
        visible += (kp[..., 2] >= 2).sum(0)
        if s.boxes is not None and len(s.boxes):
            sides += list(np.sqrt(np.clip(s.boxes[:, 2] * s.boxes[:, 3], 0, None)))
        if check_images and s.image_path is not None:
            try:
                from posekit.data.formats.yolo import image_wh
                image_wh(Path(s.image_path))
            except (OSError, ValueError) as e:
                unreadable.append(f"{s.image_path}: {robust.one_line(e)}")
    def q(v):
        return [float(x) for x in np.quantile(v, [0, 0.25, 0.5, 0.75, 1])]
    out.update({
        "images": len(images), "people": n_people,
        "keypoints_per_person": {"mean": float(np.mean(per_person)) if per_person else 0.0,
                                 "quartiles": q(per_person) if per_person else []},
        "per_keypoint": [{"name": n, "labelled": int(a), "visible": int(b),
                          "labelled_fraction": float(a / n_people) if n_people else 0.0}
                         for n, a, b in zip(names, labelled, visible)],
        "box_side_px": {"quartiles": q(sides)} if sides else {},
        "unreadable_images": unreadable})
    return out


def format_stats(st: dict) -> str:
    lines = [f"{st['family']} {st['split']}: {st.get('images', '?')} images, {st.get('people', '?')} people, "
             f"{st['items']} pipeline items"]
    if "keypoints_per_person" in st:
        kpp = st["keypoints_per_person"]
        lines.append(f"labelled keypoints per person: mean {kpp['mean']:.2f}" +
                     (f", min/q1/median/q3/max {'/'.join(f'{v:g}' for v in kpp['quartiles'])}" if kpp['quartiles'] else ""))
        if st.get("box_side_px"):
            lines.append("box side sqrt(w h) px: min/q1/median/q3/max "
                         + "/".join(f"{v:.1f}" for v in st["box_side_px"]["quartiles"]))
        width = max([len(r["name"]) for r in st["per_keypoint"]] + [8])
        lines.append(f"{'keypoint':<{width}}  labelled  visible  labelled/people")
        for r in st["per_keypoint"]:
            lines.append(f"{r['name']:<{width}}  {r['labelled']:>8}  {r['visible']:>7}  {100 * r['labelled_fraction']:>14.1f}%")
        lines.append(f"unreadable images: {len(st['unreadable_images'])}")
        lines += [f"  {m}" for m in st["unreadable_images"][:10]]
    lines.append(f"records skipped by the reader: {len(st['skipped_records'])}")
    lines += [f"  {m}" for m in st["skipped_records"][:10]]
    if len(st["skipped_records"]) > 10:
        lines.append(f"  ... and {len(st['skipped_records']) - 10} more (all in the JSON)")
    return "\n".join(lines)


# --- sigmas ------------------------------------------------------------------------------------------
NO_REPEATS = ("sigmas need the same people annotated at least twice (by different annotators, or one annotator "
              "twice): give one COCO file per annotator (posekit data sigmas a.json b.json; images matched by "
              "file_name, people by box IoU >= 0.5), or list the repeats as extra annotations of the same image "
              f"(overlapping boxes); each keypoint needs >= {MIN_PEOPLE} repeated people")


def sigmas_from_files(files, *, category_id=None, iou_threshold: float = 0.5, seed: int = 0) -> dict:
    """Per-keypoint OKS sigmas from COCO keypoint files holding repeated annotations."""
    per_image: dict = {}
    names = None
    for n, f in enumerate(files):
        data = read_json(f, "COCO annotation file")
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise ValueError(f"{f}: a COCO keypoint file needs 'images', 'annotations' and 'categories'")
        cats = [c for c in data.get("categories") or [] if isinstance(c, dict) and c.get("keypoints")]
        if category_id is not None:
            cats = [c for c in cats if c.get("id") == category_id]
        if len(cats) != 1:
            raise ValueError(f"{f}: {len(cats)} keypoint categories; pass --category-id")
        cat = cats[0]
        if names is None:
            names = list(cat["keypoints"])
        elif list(cat["keypoints"]) != names:
            raise ValueError(f"{f}: keypoint names {cat['keypoints']} differ from {files[0]}'s {names}")
        file_of = {im.get("id"): im.get("file_name") for im in data.get("images", []) if isinstance(im, dict)}
        k = len(names)
        for i, a in enumerate(data["annotations"]):
            if not isinstance(a, dict) or a.get("category_id", cat["id"]) != cat["id"] or a.get("iscrowd"):
                continue
            try:
                kp = np.asarray(a["keypoints"], dtype=np.float64).reshape(k, 3)
                box = np.asarray(a.get("bbox"), dtype=np.float64).reshape(4)
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{f}: annotation #{i} (id {a.get('id')!r}): needs 'keypoints' ({k} x 3) and "
                                 "'bbox' [x, y, w, h]") from None
            if not (np.isfinite(kp).all() and np.isfinite(box).all()):
                raise ValueError(f"{f}: annotation #{i} (id {a.get('id')!r}): non-finite keypoints or bbox")
            area = float(a.get("area") or box[2] * box[3])
            if area <= 0:
                continue
            key = file_of.get(a.get("image_id"), a.get("image_id"))
            per_image.setdefault(key, []).append((n if len(files) > 1 else None, box, kp, area))
    groups, areas = [], []
    for anns in per_image.values():
        for g in match_repeats(anns, iou_threshold=iou_threshold):
            if len(g) >= 2:
                groups.append(np.stack([anns[j][2] for j in g]))
                areas.append(float(np.mean([anns[j][3] for j in g])))
    if not groups:
        raise ValueError(f"no person is annotated more than once in {', '.join(map(str, files))}: {NO_REPEATS}")
    est = estimate_sigmas(groups, areas, seed=seed)
    return {"keypoints": names, "sigmas": est.sigmas.tolist(), "ci95_low": est.low.tolist(),
            "ci95_high": est.high.tolist(), "people": est.people.tolist(), "pairs": est.pairs.tolist(),
            "repeated_people": len(groups)}


def format_sigmas(res: dict) -> str:
    names = res["keypoints"]
    width = max([len(n) for n in names] + [8])
    lines = [f"{res['repeated_people']} people annotated more than once", f"{'keypoint':<{width}}  sigma   95% interval"
             "      people  pairs"]
    for n, s, lo, hi, p, q in zip(names, res["sigmas"], res["ci95_low"], res["ci95_high"], res["people"], res["pairs"]):
        if np.isfinite(s):
            lines.append(f"{n:<{width}}  {s:.4f}  [{lo:.4f}, {hi:.4f}]  {p:>6}  {q:>5}")
        else:
            lines.append(f"{n:<{width}}  -       (fewer than {MIN_PEOPLE} repeated people)  {p:>6}  {q:>5}")
    missing = [n for n, s in zip(names, res["sigmas"]) if not np.isfinite(s)]
    lines.append("")
    lines.append("# paste into the skeleton YAML" + (f" (no estimate for {missing}: 0.07 put in their place)" if missing else ""))
    lines.append("sigmas: [" + ", ".join(f"{s:.4f}" if np.isfinite(s) else "0.07" for s in res["sigmas"]) + "]")
    return "\n".join(lines)


# --- show --------------------------------------------------------------------------------------------
TILE_SIDE = 256  # tiles are drawn at least this large


def _unaugmented(dataset):
    """A shallow copy of the pipeline with its random augmentation off (the evaluation geometry)."""
    plain = copy.copy(dataset)
    if hasattr(plain, "augment"):
        plain.augment = None
    if isinstance(getattr(plain, "train", None), bool):
        plain.train = False
    return plain


def _crop_keypoints(item: dict, dataset, task) -> np.ndarray | None:
    """Keypoints in the network input frame: the item's GT through its matrix, the flip's
    left/right swap applied (a mirrored matrix has a negative determinant)."""
    from posekit.data.transforms import affine_points
    matrix = item.get("matrix")
    if matrix is None:
        return None
    m = matrix.numpy() if torch.is_tensor(matrix) else np.asarray(matrix)
    kp = item.get("keypoints")
    if kp is not None:
        kp = kp.numpy() if torch.is_tensor(kp) else np.asarray(kp)
        if kp.ndim == 2 and kp.shape[-1] == 2:
            return None  # already in the crop frame without visibility (landmark items keep 3)
    else:
        images = _image_samples(dataset)
        if images is None or "index" not in item:
            return None
        kp = _peek(images, int(item["index"])).keypoints
    kp = np.asarray(kp, np.float64)
    if kp.ndim == 2:
        kp = kp[None]
    if kp.shape[-1] != 3 or m.shape != (2, 3):
        return None
    moved = affine_points(kp, m)
    sk = task.skeleton
    if np.linalg.det(m[:, :2]) < 0 and sk is not None and kp.shape[1] == sk.num_keypoints:
        moved = moved[:, sk.flip_index]
    return moved


def _tile(item: dict, dataset, task, caption: str) -> np.ndarray:
    sk = task.skeleton
    image = item.get("image")
    if torch.is_tensor(image) and image.dim() == 3:
        rgb = image.numpy()
        rgb = (rgb * 255 if rgb.dtype != np.uint8 and rgb.max() <= 1.0 else rgb).astype(np.uint8).transpose(1, 2, 0)
        rgb = np.ascontiguousarray(rgb)
        kp = _crop_keypoints(item, dataset, task)
    elif "input_2d" in item:  # a lifter's input: the 2-D pose on a blank canvas
        pts = item["input_2d"].numpy().astype(np.float64)
        lo, hi = pts.min(0), pts.max(0)
        scale = 200.0 / max(float((hi - lo).max()), 1e-6)
        rgb = np.full((256, 256, 3), 30, np.uint8)
        xy = (pts - lo) * scale + 28
        vis = ~item["mask"].numpy().astype(bool) if "mask" in item else np.ones(len(pts), bool)
        kp = np.concatenate([xy, 2.0 * vis[:, None]], axis=1)[None]
    else:
        raise ValueError(f"{task.name} items have no image and no 2-D input to draw (keys: {sorted(item)})")
    f = max(1, int(np.ceil(TILE_SIDE / max(rgb.shape[:2]))))  # draw at the shown size: labels stay legible
    if f > 1:
        rgb = cv2.resize(rgb, (rgb.shape[1] * f, rgb.shape[0] * f), interpolation=cv2.INTER_NEAREST)
        if kp is not None:
            kp = np.concatenate([(kp[..., :2] + 0.5) * f - 0.5, kp[..., 2:]], axis=-1)
    maps = {}
    for key in ("target", "heatmaps"):
        t = item.get(key)
        if torch.is_tensor(t) and t.dim() == 3 and t.shape[-1] > 2:
            heat = t.float().numpy()
            if len(heat) > 1 and heat[-1].mean() > 0.5:  # a background channel (OpenPose): not a keypoint
                heat = heat[:-1]
            maps["heatmaps"] = heat
            break
    if torch.is_tensor(item.get("pafs")):
        maps["pafs"] = item["pafs"].float().numpy()
    w = item.get("weight")
    if torch.is_tensor(w) and w.dim() == 3 and w.shape[-1] > 1:
        maps["ignore"] = w.float().numpy()
    rgb = overlay_maps(rgb, **maps)
    if kp is not None and sk is not None and kp.shape[1] == sk.num_keypoints:
        rgb = draw_keypoints(rgb, kp, list(sk.keypoints), limbs=sk.limbs)
    elif kp is not None:
        rgb = draw_keypoints(rgb, kp, [str(j) for j in range(kp.shape[1])])
    flipped = "matrix" in item and np.linalg.det(np.asarray(item["matrix"])[:, :2]) < 0
    return captioned(rgb, caption + (" flipped" if flipped else ""))


def show(cfg, out_dir, *, split: str = "train", n: int = 16, seed: int | None = None, columns: int = 4) -> list[Path]:
    """Write OUT/<split>_augmented.png (the items as the model sees them in epoch 0) and
    OUT/<split>_plain.png (the same items without augmentation); returns the paths."""
    task, dataset = _task_and_split(cfg, split)
    if not len(dataset):
        raise ValueError(f"the {split} split is empty")
    n = max(1, min(int(n), len(dataset)))
    indices = np.unique(np.linspace(0, len(dataset) - 1, n).round().astype(int))
    seed = cfg.train.seed if seed is None else seed
    plain = _unaugmented(dataset)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    augmented, unaugmented = [], []
    for i in indices:
        with robust.seeded(robust.item_seed(seed, 0, int(i))):
            augmented.append(_tile(dataset[int(i)], dataset, task, f"#{i} augmented"))
        with robust.seeded(robust.item_seed(seed, 0, int(i))):
            unaugmented.append(_tile(plain[int(i)], plain, task, f"#{i} plain"))
    paths = []
    for name, tiles in ((f"{split}_augmented.png", augmented), (f"{split}_plain.png", unaugmented)):
        path = out_dir / name
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".png")
        os.close(fd)
        try:
            write_image(tmp, grid(tiles, columns=columns))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        paths.append(path)
    (out_dir / f"{split}_items.json").write_text(json.dumps({"indices": [int(i) for i in indices], "seed": seed,
                                                             "family": cfg.task}))
    return paths
