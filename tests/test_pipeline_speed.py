"""The fast input paths give the same data as the slow ones they replace (no timings here):

- colour jitter as one 3x4 `cv2.transform` == the step-by-step float jitter within one uint8 level;
- the top-down pipeline's reduced JPEG decode: identical keypoint targets and matrix, the image
  close to the full-decode crop and pixel-centre aligned;
- lifting batches sliced from the arrays (`__getitems__`) == the item-by-item batches, through a
  DataLoader, with and without the missing-joint augmentation;
- the lifter's batched prediction == pose-by-pose prediction (and the vectorised rescale == the
  per-pose loop it replaced).
"""
import cv2
import numpy as np
import pytest
import torch

from posekit.codecs.heatmap import HeatmapCodec
from posekit.data.lifting import SlicedItems, collate_items, rescale_to_reference
from posekit.data.sample import Sample
from posekit.data.topdown import (CropRule, TopDownAugment, TopDownDataset, decode_reduction, read_reduced,
                                  reduced_to_original)
from posekit.data.transforms import affine_points, color_jitter


# --- colour jitter ----------------------------------------------------------------------------------
def _reference_jitter(image, rng, *, brightness=0.2, contrast=0.2, saturation=0.2, channel_scale=0.0):
    """The per-step float implementation the one-pass jitter replaced (same draws, same order)."""
    img = image.astype(np.float32)
    if channel_scale:
        img *= rng.uniform(1 - channel_scale, 1 + channel_scale, size=3).astype(np.float32)
    if brightness:
        img *= rng.uniform(1 - brightness, 1 + brightness)
    if contrast:
        mean = img.mean()
        img = (img - mean) * rng.uniform(1 - contrast, 1 + contrast) + mean
    if saturation:
        grey = img.mean(axis=2, keepdims=True)
        img = (img - grey) * rng.uniform(1 - saturation, 1 + saturation) + grey
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("kw", [dict(), dict(brightness=0.4, contrast=0.4, saturation=0.4),
                                dict(brightness=0, contrast=0, saturation=0, channel_scale=0.2),
                                dict(channel_scale=0.2), dict(brightness=0, saturation=0)])
def test_one_pass_color_jitter_matches_the_step_by_step_one(kw):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 40, 3), dtype=np.uint8),  # noise: every level, clipping at both ends
              np.full((16, 16, 3), 250, np.uint8), np.zeros((8, 8, 3), np.uint8)]
    for image in images:
        for seed in range(6):
            fast = color_jitter(image, np.random.default_rng(seed), **kw)
            slow = _reference_jitter(image, np.random.default_rng(seed), **kw)
            assert fast.dtype == np.uint8 and fast.shape == image.shape
            diff = np.abs(fast.astype(int) - slow)
            assert diff.max() <= 1, (kw, seed, diff.max())
    # the draws are the same ones: the generator ends in the same state
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    color_jitter(images[0], a, **kw)
    _reference_jitter(images[0], b, **kw)
    assert a.random() == b.random()


def test_color_jitter_changes_the_image():
    image = np.random.default_rng(1).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    out = color_jitter(image, np.random.default_rng(2), brightness=0.3, contrast=0.3, saturation=0.3)
    assert np.abs(out.astype(int) - image).mean() > 3


# --- reduced JPEG decode ------------------------------------------------------------------------------
class _DiskSource:
    """Samples that leave the image on disk (like MPIIImageSource): the pipeline decodes it."""

    def __init__(self, path, box, keypoints):
        self.path, self.box, self.kp = path, np.asarray(box, float), np.asarray(keypoints, float)

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return Sample(keypoints=self.kp[None].copy(), image_path=self.path, boxes=self.box[None].copy())


def _blob_jpeg(tmp_path, size=(640, 480), centre=(301.0, 222.0), sigma=7.0):
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    blob = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * sigma ** 2))
    texture = 40 + 30 * np.sin(xx / 23.0) * np.cos(yy / 17.0)
    image = np.clip(texture[..., None] + 200 * blob[..., None] * np.array([0.2, 1.0, 0.3]), 0, 255).astype(np.uint8)
    path = tmp_path / "blob.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98])
    return path


def _pair(source, *, input_size=64, augment=None):
    codec = HeatmapCodec((input_size, input_size), (input_size // 4, input_size // 4), 1.0)
    make = lambda reduced: TopDownDataset(source, codec, skeleton="mpii16", input_size=input_size,  # noqa: E731
                                          crop=CropRule("box", 1.0), augment=augment, reduced_decode=reduced)
    return make(False), make(True)


def test_decode_reduction_follows_the_crop_scale():
    assert decode_reduction(np.array([[1.0, 0, 0], [0, 1.0, 0]])) == 1
    assert decode_reduction(np.array([[0.5, 0, 0], [0, 0.5, 0]])) == 2  # box = 2x the input
    assert decode_reduction(np.array([[0.3, 0, 0], [0, 0.3, 0]])) == 2
    assert decode_reduction(np.array([[0.25, 0, 0], [0, 0.25, 0]])) == 4
    assert decode_reduction(np.array([[0.1, 0, 0], [0, 0.1, 0]])) == 4  # at most 1/4
    assert decode_reduction(np.array([[0.5, 0, 0], [0, 0.2, 0]])) == 2  # the finer direction decides
    # reduced pixel j covers original pixels [r j, r j + r): its centre is r j + (r - 1) / 2
    assert np.allclose(affine_points(np.array([[0.0, 0.0], [1.0, 2.0]]), reduced_to_original(4)),
                       [[1.5, 1.5], [5.5, 9.5]])


@pytest.mark.parametrize("box_side, reduction", [(64 * 2.5, 2), (64 * 5.0, 4), (64 * 1.5, 1)])
def test_reduced_decode_keeps_targets_and_aligns_the_image(tmp_path, box_side, reduction):
    centre = (301.0, 222.0)
    path = _blob_jpeg(tmp_path, centre=centre, sigma=2.0 * box_side / 64)
    kp = np.zeros((16, 3))
    kp[0] = [centre[0], centre[1], 1.0]
    kp[5] = [centre[0] + 30, centre[1] - 20, 1.0]
    box = [centre[0] + 10 - box_side / 2, centre[1] - 5 - box_side / 2, box_side, box_side]
    full, reduced = _pair(_DiskSource(path, box, kp))
    a, b = full[0], reduced[0]
    assert decode_reduction(b["matrix"].numpy()) == reduction
    assert read_reduced(path, reduction)[1] == reduction
    for key in ("target", "target_weight", "matrix", "keypoints", "box"):
        assert torch.equal(a[key], b[key]), key
    img_a, img_b = a["image"].float(), b["image"].float()
    assert (img_a - img_b).abs().mean() < 2.0  # a pre-filtered frame, not a different one
    # the blob lands where the matrix sends its centre (a half-pixel slip of the reduced grid
    # would move it by (r - 1) / 2 original px = up to 0.3 input px here)
    where = affine_points(np.array([centre]), b["matrix"].numpy())[0]

    def centroid(img):
        g = img[1] - img[0]
        g = torch.clamp(g - 0.3 * g.max(), min=0).numpy()
        ys, xs = np.mgrid[0:g.shape[0], 0:g.shape[1]]
        return np.array([(xs * g).sum() / g.sum(), (ys * g).sum() / g.sum()])

    assert np.allclose(centroid(img_b), where, atol=0.12), (centroid(img_b), where)
    assert np.allclose(centroid(img_a), where, atol=0.12)


def test_reduced_decode_with_augmentation_draws_the_same_crop(tmp_path):
    path = _blob_jpeg(tmp_path)
    kp = np.zeros((16, 3))
    kp[:, :2] = np.random.default_rng(0).uniform(200, 400, (16, 2))
    kp[:, 2] = 1
    augment = TopDownAugment(scale=(0.75, 1.25), rotation=30, rotation_prob=1.0, flip_prob=0.5, channel_scale=0.2)
    full, reduced = _pair(_DiskSource(path, [150, 100, 300, 300], kp), augment=augment)
    for seed in range(4):
        torch.manual_seed(seed)
        a = full[0]
        torch.manual_seed(seed)
        b = reduced[0]
        for key in ("target", "target_weight", "matrix"):
            assert torch.equal(a[key], b[key])
        assert (a["image"].float() - b["image"].float()).abs().mean() < 3.0


def test_mpii_reduced_decode_on_the_real_images(realdata):
    """The hourglass family decodes the shared MPII JPEGs reduced (its crops are 2-4x the input):
    identical targets, images close to the full decode."""
    from posekit.engine.recipes import config_from_dict
    from posekit.families import build_task
    root = realdata / "mpii"
    if not (root / "mmpose" / "test_mpii.json").is_file():
        pytest.skip("MPII samples not present")
    cfg = {"task": "hourglass", "model": {"name": "hourglass2_small"},
           "data": {"dataset": "mpii", "root": str(root), "val_file": None, "augment": False}}
    fast = build_task(config_from_dict(cfg)).build_datasets()["train"]
    cfg["data"]["reduced_decode"] = False
    slow = build_task(config_from_dict(cfg)).build_datasets()["train"]
    assert fast.reduced_decode and not slow.reduced_decode
    reductions = []
    for i in range(len(fast)):
        a, b = slow[i], fast[i]
        reductions.append(decode_reduction(b["matrix"].numpy()))
        for key in ("target", "target_weight", "matrix", "keypoints", "head_size"):
            assert torch.equal(a[key], b[key]) or (key == "head_size" and torch.isnan(a[key]) and torch.isnan(b[key]))
        assert (a["image"].float() - b["image"].float()).abs().mean() < 4.0
    assert max(reductions) > 1  # the shared crops are big enough to decode reduced


# --- lifting batches ----------------------------------------------------------------------------------
@pytest.mark.parametrize("miss_num", [0, 2])
def test_sliced_lifting_batches_equal_item_by_item(miss_num):
    from posekit.data.synthetic.h36m import synthetic_h36m
    ds = synthetic_h36m(50, miss_num=miss_num)

    def batches(dataset, collate, seed):
        torch.manual_seed(seed)
        loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True, collate_fn=collate,
                                             generator=torch.Generator().manual_seed(seed))
        return list(loader)

    class ItemByItem(torch.utils.data.Dataset):  # the same dataset without __getitems__
        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            return ds[i]

    seen = []

    def recording(items):
        seen.append(type(items))
        return collate_items(items)

    fast = batches(ds, recording, 3)
    assert set(seen) == {SlicedItems}  # the DataLoader fetched whole batches by slicing
    slow = batches(ItemByItem(), torch.utils.data.default_collate, 3)
    plain = batches(ds, torch.utils.data.default_collate, 3)  # a collate that does not know SlicedItems
    assert len(fast) == len(slow) == 7
    for f, s, p in zip(fast, slow, plain):
        assert set(f) == set(s) == set(p)
        for key in s:
            assert f[key].dtype == s[key].dtype and torch.equal(f[key], s[key]) and torch.equal(p[key], s[key]), key
    if miss_num:
        assert all((b["mask"].sum(1) == miss_num).all() for b in fast)
    # a Subset (the eval loop's spread_subset) slices through to the arrays too
    sub = torch.utils.data.Subset(ds, [4, 9, 1])
    got = sub.__getitems__([0, 1, 2])
    assert isinstance(got, SlicedItems) and len(got) == 3
    assert torch.equal(collate_items(got)["input_2d"], torch.from_numpy(ds.inputs[[4, 9, 1]]))


def test_lifting_task_collate_passes_sliced_batches_through():
    from posekit.data.synthetic.h36m import synthetic_h36m
    from posekit.engine.recipes import config_from_dict
    from posekit.families import build_task
    task = build_task(config_from_dict({"task": "gmh_mdn", "model": {"name": "gmh_mdn"}}))
    ds = synthetic_h36m(10)
    items = ds.__getitems__([3, 1])
    assert task.collate(items) is items.batch
    ref = task.collate([ds[3], ds[1]])
    for key in ref:
        assert torch.equal(task.collate(items)[key], ref[key])


# --- batched lifting prediction -----------------------------------------------------------------------
def _reference_rescale(x, reference):
    """The per-pose loop the vectorised rescale replaced."""
    reference = np.asarray(reference, dtype=np.float64).reshape(-1, 2)
    out = np.array(x, dtype=np.float64, copy=True)
    for p in range(len(out)):
        ok = np.isfinite(out[p]).all(axis=1)
        c_in, c_ref = out[p, ok].mean(0), reference[ok].mean(0)
        s_in = np.sqrt(((out[p, ok] - c_in) ** 2).sum(1).mean())
        s_ref = np.sqrt(((reference[ok] - c_ref) ** 2).sum(1).mean())
        out[p] = (out[p] - c_in) * (s_ref / max(s_in, 1e-9)) + c_ref
    return out


def test_vectorised_rescale_equals_the_per_pose_loop():
    rng = np.random.default_rng(0)
    ref = rng.normal(500, 100, (16, 2))
    x = rng.normal(300, 50, (40, 16, 2)) * rng.uniform(0.5, 2, (40, 1, 1))
    x[3, [2, 7]] = np.nan  # missing joints
    x[10, 5:] = np.nan
    out, transforms = rescale_to_reference(x, ref)
    np.testing.assert_allclose(out, _reference_rescale(x, ref), rtol=1e-12, atol=1e-9, equal_nan=True)
    assert np.isnan(out[3, [2, 7]]).all() and len(transforms) == 40
    with pytest.raises(ValueError, match="at least 2 visible joints"):
        bad = x[:2].copy()
        bad[1, 1:] = np.nan
        rescale_to_reference(bad, ref)


@pytest.mark.parametrize("rescale", [False, True])
def test_batched_lifting_prediction_equals_pose_by_pose(rescale):
    from posekit.engine.evaluation import predict
    from posekit.engine.recipes import config_from_dict
    from posekit.families import build_task
    torch.manual_seed(0)
    task = build_task(config_from_dict({"task": "gmh_mdn", "model": {"name": "gmh_mdn", "args": {"width": 32}},
                                        "data": {"synthetic_train": 64, "synthetic_val": 16}}))
    datasets = task.build_datasets()
    model = task.build_model()
    task.prepare(model, datasets)
    poses = [datasets["val"].inputs[i].astype(np.float64) for i in range(12)]
    poses[4] = poses[4].copy()
    poses[4][3] = np.nan  # a missing joint
    together = predict(task, model, poses, skeleton="h36m16", rescale=rescale)
    one_by_one = [predict(task, model, [p], skeleton="h36m16", rescale=rescale)[0] for p in poses]
    assert len(together) == 12
    for a, b in zip(together, one_by_one):
        np.testing.assert_allclose(a.hypotheses, b.hypotheses, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(a.hypothesis_weights, b.hypothesis_weights, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.keypoints_2d, b.keypoints_2d, equal_nan=True)


def test_item_seeds_and_seeded_uniforms():
    from posekit.data.transforms import item_seeds, seeded_uniform
    torch.manual_seed(7)
    batch = item_seeds(100)
    torch.manual_seed(7)
    one_by_one = np.concatenate([item_seeds(1) for _ in range(100)])
    assert np.array_equal(batch, one_by_one)  # what item_rng() would draw, item after item
    u = seeded_uniform(batch, 9)
    assert u.shape == (100, 9) and u.min() >= 0 and u.max() < 1
    assert np.array_equal(u[10:20], seeded_uniform(batch[10:20], 9))  # a pure function of the seed
    big = seeded_uniform(np.arange(20000, dtype=np.uint64), 4)  # even consecutive seeds look uniform
    assert abs(big.mean() - 0.5) < 0.01 and abs(np.corrcoef(big[:, 0], big[:, 1])[0, 1]) < 0.03
    assert np.histogram(big, bins=10, range=(0, 1))[0].min() > 0.09 * big.size


def test_missing_joints_are_a_uniform_subset():
    from posekit.data.formats.h36m import LIMB_INPUT_JOINTS
    from posekit.data.synthetic.h36m import synthetic_h36m
    torch.manual_seed(0)
    ds = synthetic_h36m(4000, miss_num=3)
    masks = ds.__getitems__(list(range(4000))).batch["mask"].numpy()
    assert (masks.sum(1) == 3).all()
    rate = masks[:, list(LIMB_INPUT_JOINTS)].mean(0)
    assert np.allclose(rate, 3 / 8, atol=0.03)  # every limb joint equally likely
