"""Which reader a recipe's `data.format` names, and the skeleton a format's own files declare.

    coco        a COCO keypoint JSON (`*_ann`) + its image folder (`*_images`)
    yolo        an Ultralytics data YAML (`*_ann`); the split is the YAML's `train` / `val` entry,
                the images are where the YAML says (`*_images` is not used)
    deeplabcut  a DeepLabCut project's config.yaml or one CollectedData_<scorer>.h5/.csv (`*_ann`);
                images under the project's labeled-data/ (`*_images` is not used)
    pose_json   a folder of images (`*_images`) + a JSON list of records with boxes and keypoints
                (`*_ann`; data.formats.pose_json)
    labelstudio a Label Studio JSON export (`*_ann`) + the folder its images are under (`*_images`)
    cvat        a CVAT for images 1.1 annotations.xml (`*_ann`) + its images/ folder (`*_images`)
                (CVAT's "COCO Keypoints" export is plain COCO: data.format=coco)

Every reader returns a list of `Sample`s with `.skipped` (records dropped with
on_bad_record="skip", one message each) and `.keypoint_names` (empty when the file names none).
`skeleton_setting` and `load_split` are what a recipe's data section goes through: the
skeleton it names (`auto`: the one the files declare) and one split read and checked
against that skeleton, so any family that reads keypoint files does it the same way.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from posekit.config import ConfigError
from posekit.skeletons import Skeleton, find_skeleton_file
from posekit.skeletons.from_config import skeleton_to_config

FORMATS = ("coco", "yolo", "deeplabcut", "pose_json", "labelstudio", "cvat")
USES_IMAGE_FOLDER = {"coco": True, "yolo": False, "deeplabcut": False, "pose_json": True, "labelstudio": True,
                     "cvat": True}


def check_format(fmt: str, key: str = "data.format") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"{key}={fmt!r}; valid: {', '.join(FORMATS)}")
    return fmt


def guess_format(path) -> str:
    """The format of an annotation file from its name and first bytes (for `posekit data` verbs)."""
    p = Path(path)
    if p.is_dir():
        if (p / "config.yaml").is_file() and (p / "labeled-data").is_dir():
            return "deeplabcut"
        if (p / "data.yaml").is_file():
            return "yolo"
        raise ValueError(f"{p}: a folder is read as a DeepLabCut project (config.yaml + labeled-data/) or a "
                         "YOLO dataset (data.yaml); neither is there")
    name = p.name.lower()
    if name.startswith("collecteddata_") and p.suffix.lower() in (".h5", ".csv"):
        return "deeplabcut"
    if p.suffix.lower() in (".yaml", ".yml"):
        text = p.read_text(errors="replace") if p.is_file() else ""
        if "kpt_shape" in text:
            return "yolo"
        if "bodyparts" in text:
            return "deeplabcut"
        raise ValueError(f"{p}: a YAML with neither kpt_shape (YOLO-pose) nor bodyparts (DeepLabCut)")
    if p.suffix.lower() == ".json":
        return "labelstudio" if _looks_like_labelstudio(p) else "coco"
    if p.suffix.lower() == ".xml":
        return "cvat"
    raise ValueError(f"{p}: cannot tell the format from the name; pass --format coco|yolo|deeplabcut|labelstudio|cvat")


def _looks_like_labelstudio(p: Path) -> bool:
    """A JSON list of tasks with `annotations` (or `predictions`) and `data` (COCO files are a mapping)."""
    with open(p, "rb") as f:
        head = f.read(1 << 16).lstrip()
    return head.startswith(b"[") and (b'"annotations"' in head or b'"predictions"' in head) and \
        (b'"keypointlabels"' in head or b'"data"' in head)


def load_samples(fmt: str, ann, images=None, *, split: str = "train", on_bad_record: str = "error",
                 category_id=None, keypoint_names=None):
    """The Samples of one split in format `fmt` (see the module docstring for what `ann` and
    `images` are per format). `keypoint_names` (a skeleton's) fixes the keypoint order of the
    formats that name keypoints per point (labelstudio, cvat points shapes)."""
    check_format(fmt)
    ann = Path(ann)
    if fmt == "coco":
        from posekit.data.formats.coco import load_coco_keypoints
        return load_coco_keypoints(ann, images, on_bad_record=on_bad_record, category_id=category_id)
    if fmt == "yolo":
        from posekit.data.formats.yolo import load_yolo_pose
        return load_yolo_pose(ann, split, on_bad_record=on_bad_record, class_id=category_id)
    if fmt == "deeplabcut":
        from posekit.data.formats.deeplabcut import load_deeplabcut
        return load_deeplabcut(ann, on_bad_record=on_bad_record)
    if fmt == "labelstudio":
        from posekit.data.formats.labelstudio import load_labelstudio
        return load_labelstudio(ann, images, on_bad_record=on_bad_record, keypoint_names=keypoint_names)
    if fmt == "cvat":
        from posekit.data.formats.cvat import load_cvat
        return load_cvat(ann, images, on_bad_record=on_bad_record, keypoint_names=keypoint_names,
                         label=category_id if isinstance(category_id, str) else None)
    # pose_json, the one format left: it names no keypoints and refuses a bad record whatever on_bad_record says
    from posekit.data.formats.coco import COCOSamples
    from posekit.data.formats.pose_json import load_pose_json_samples
    return COCOSamples(load_pose_json_samples(ann, images), ann_file=ann)


def _resolve(path, root) -> Path:
    """A data path as given when absolute or when there is no `root`, else under it."""
    p = Path(path)
    return p if p.is_absolute() or not root else Path(root) / p


def skeleton_setting(value, fmt: str, train_ann, *, root=None, category_id=None) -> dict:
    """`data.skeleton` as the config stores it (content): `auto` takes the skeleton that the
    `train_ann` file of format `fmt` declares (`source_skeleton`); a relative YAML path is looked
    up in the working directory, then under `root`; a name or content is taken as it is.
    ConfigError naming data.skeleton otherwise."""
    if value == "auto":
        try:
            value = source_skeleton(fmt, _resolve(train_ann or "", root), category_id)
        except (ValueError, OSError) as e:
            raise ConfigError(f"data.skeleton=auto: {e}") from None
        if value is None:
            raise ConfigError(f"data.skeleton=auto needs files that declare a skeleton (yolo, deeplabcut, cvat, or "
                              f"labelstudio with its labelling config); this {fmt} file declares none (no flip "
                              "pairs); give a skeleton name or YAML")
    if isinstance(value, str) and value.endswith((".yaml", ".yml")):
        try:
            value = str(find_skeleton_file(value, root or None))
        except FileNotFoundError as e:
            raise ConfigError(f"data.skeleton: {e}") from None
    return skeleton_to_config(value, error=ConfigError)


def load_split(fmt: str, ann, images, skeleton: Skeleton, *, split: str = "train", root=None,
               on_bad_record: str | None = None, category_id=None, skeleton_key: str = "data.skeleton"):
    """The Samples of one split (`data.<split>_ann` / `data.<split>_images`, relative paths under
    `root`) in format `fmt`, checked against `skeleton`: a missing file or folder is a
    FileNotFoundError naming its key, another keypoint count a ConfigError, other keypoint names
    a warning (the order is taken as given). The formats that name each point (labelstudio,
    cvat) take the skeleton's order; `on_bad_record` None skips bad records when training and
    refuses them otherwise. `skeleton_key` says in messages where the skeleton came from (a
    family with a fixed skeleton names itself)."""
    check_format(fmt)
    key, ann, images = f"data.{split}_ann", _resolve(ann, root), _resolve(images, root)
    if not ann.is_file():
        raise FileNotFoundError(f"{key}: annotation file not found: {ann}")
    if USES_IMAGE_FOLDER[fmt] and not images.is_dir():
        raise FileNotFoundError(f"data.{split}_images: image folder not found: {images}")
    samples = load_samples(fmt, ann, images, split=split, on_bad_record=on_bad_record or (
        "skip" if split == "train" else "error"), category_id=category_id,
        keypoint_names=skeleton.keypoints if fmt in ("labelstudio", "cvat") else None)
    names, k = samples.keypoint_names, skeleton.num_keypoints
    got = samples[0].keypoints.shape[1] if samples else (len(names) if names else k)
    if got != k:
        raise ConfigError(f"{key}: {ann} has {got} keypoints per person, {skeleton_key} {skeleton.name!r} has {k}")
    if names and tuple(names) != skeleton.keypoints:
        warnings.warn(f"{ann}: keypoint names {list(names)} differ from {skeleton_key} {skeleton.name!r} "
                      f"{list(skeleton.keypoints)}; the order is taken as given", RuntimeWarning, stacklevel=2)
    return samples


def source_skeleton(fmt: str, ann, category_id=None) -> Skeleton | None:
    """The skeleton a format's own files declare (YOLO: kpt_names + flip_idx [+ skeleton];
    DeepLabCut: config.yaml bodyparts + skeleton, flip pairs from the names; CVAT: the skeleton
    label's points and edges; Label Studio: its labelling config's names); None for COCO
    (its category has names and limbs but no flip pairs: give a skeleton YAML)."""
    check_format(fmt)
    if fmt == "yolo":
        from posekit.data.formats.yolo import yolo_skeleton
        return yolo_skeleton(ann, class_id=category_id)
    if fmt == "deeplabcut":
        from posekit.data.formats.deeplabcut import load_deeplabcut, read_dlc_config
        p = Path(ann)
        if p.suffix.lower() in (".yaml", ".yml"):
            from posekit.data.formats.deeplabcut import dlc_skeleton
            cfg = read_dlc_config(p)
            return dlc_skeleton(cfg["parts"], cfg.get("skeleton") or (), name=f"dlc_{p.parent.name}"[:64], source=str(p))
        return load_deeplabcut(p, on_bad_record="skip").skeleton
    if fmt == "labelstudio":  # the labelling config's KeyPointLabels next to the export, when there
        from posekit.data.formats.labelstudio import labelstudio_config_of, labelstudio_skeleton, read_label_config
        cfg = labelstudio_config_of(Path(ann))
        return None if cfg is None else labelstudio_skeleton(read_label_config(cfg)["keypoints"],
                                                             name=f"labelstudio_{Path(ann).stem}"[:64])
    if fmt == "cvat":  # the skeleton label's sub-labels and svg edges; flip pairs from left/right names
        from posekit.data.formats.cvat import load_cvat
        return load_cvat(ann, on_bad_record="skip", label=category_id if isinstance(category_id, str) else None).skeleton
    return None
