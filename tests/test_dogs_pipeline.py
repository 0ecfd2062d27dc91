"""Dog pipeline geometry: codec round trip, masked loss, flip swap, augmentation keeps keypoints
on the image content, decoding back to the original frame, PCK@bbox on hand-computed cases.

The dog family's data path is the shared top-down pipeline (posekit.data.topdown) as the
dogs Task configures it from `data:`; the tests build it through the Task where they exercise
a recipe setting (crop, bbox_margin, faithful), so the config -> pipeline mapping is covered too.
Pixel centres sit at integer coordinates: a box [x, y, w, h] is centred on (x + w/2 - 0.5, ...).
"""
import numpy as np
import pytest
import torch

from posekit.codecs.regression import RegressionCodec
from posekit.data.formats.stanford_extra import PAD_VALUE
from posekit.data.sample import Sample
from posekit.data.topdown import CropRule, TopDownAugment, TopDownDataset, to_original_frame
from posekit.data.transforms import affine_points
from posekit.engine.recipes import config_from_dict
from posekit.families import build_task
from posekit.families.dogs import pck_box_metrics
from posekit.losses.regression import masked_coordinate_mse
from posekit.skeletons import get_skeleton


SK = get_skeleton("stanford_extra24")


def dogs_task(*, loss=None, **data):
    return build_task(config_from_dict({"task": "dogs", "model": {"name": "dogs_mobilenetv2"},
                                        "data": {"dataset": "synthetic", **data}, "loss": loss or {}}))


def dot_pipeline(source, *, augment: bool, **data) -> TopDownDataset:
    """The dogs Task's pipeline for `data:` settings, reading `source` (the train pipeline when
    `augment`, else the evaluation one)."""
    pipeline = dogs_task(augment=augment, train_on_all=True, synthetic_train_size=1, **data).build_datasets()
    pipeline = pipeline["train" if augment else "val"]
    pipeline.source = source
    return pipeline


def is_mirrored(matrix) -> bool:
    return float(np.linalg.det(np.asarray(matrix)[:, :2])) < 0


def test_codec_round_trip_and_weights():
    codec = RegressionCodec((200, 100))
    kp = np.zeros((24, 3))
    kp[:, 0] = np.linspace(0, 200, 24)
    kp[:, 1] = np.linspace(0, 100, 24)
    kp[:20, 2] = 1
    kp[5] = [250.0, 50.0, 1.0]  # pushed outside by augmentation
    target, weight = codec.encode(kp)
    assert target.shape == (24, 2) and weight.shape == (24,)
    assert np.allclose(target[3], [kp[3, 0] / 200, kp[3, 1] / 100])
    assert np.allclose(codec.decode(target), kp[:, :2], atol=1e-4)
    assert torch.allclose(codec.decode(torch.from_numpy(target)), torch.from_numpy(kp[:, :2]).float(), atol=1e-3)
    assert weight[5] == 0 and weight[20:].sum() == 0 and weight[[0, 3, 19]].tolist() == [1, 1, 1]
    assert RegressionCodec((200, 100), mask_outside=False).encode(kp)[1][5] == 1
    assert RegressionCodec((200, 100), mask="none").encode(kp)[1].tolist() == [1.0] * 24
    with pytest.raises(ValueError, match="mask"):
        RegressionCodec(10, mask="all")


def test_masked_loss_ignores_unlabelled_joints():
    pred = torch.zeros(1, 3, 2)
    target = torch.tensor([[[0.5, 0.5], [0.1, 0.2], [0.0, 0.0]]])
    weight = torch.tensor([[1.0, 1.0, 0.0]])
    # hand-computed: (0.25 + 0.25 + 0.01 + 0.04) / 4 coordinates
    assert float(masked_coordinate_mse(pred, target, weight)) == pytest.approx(0.55 / 4)
    moved = pred.clone()
    moved[0, 2] = 0.9  # an unlabelled joint: no effect on the masked loss
    assert float(masked_coordinate_mse(moved, target, weight)) == pytest.approx(0.55 / 4)
    # the faithful (unmasked) loss is the plain mean over every coordinate
    assert float(masked_coordinate_mse(moved, target, None)) == pytest.approx((0.55 + 0.81 * 2) / 6)
    # ... and the dogs Task's `loss:` section picks between the two (loss.masked)
    batch = {"target": target, "target_weight": weight}
    assert float(dogs_task(loss={"masked": False}).loss(moved, batch)[0]) == pytest.approx((0.55 + 0.81 * 2) / 6)
    assert float(dogs_task().loss(moved, batch)[0]) == pytest.approx(0.55 / 4)
    zero = masked_coordinate_mse(pred.requires_grad_(), target, torch.zeros(1, 3))
    assert float(zero.detach()) == 0 and zero.requires_grad


class DotSource:
    """One dark image with a green dot at joint 0 (the only labelled joint)."""

    def __init__(self, xy=(60.0, 40.0), size=(160, 100)):
        w, h = size
        self.image = np.zeros((h, w, 3), np.uint8)
        yy, xx = np.mgrid[0:h, 0:w]
        self.image[(xx - xy[0]) ** 2 + (yy - xy[1]) ** 2 <= 25] = (0, 255, 0)
        self.kp = np.zeros((24, 3))
        self.kp[0] = [xy[0], xy[1], 1.0]

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return Sample(keypoints=self.kp[None].copy(), image=self.image.copy(),
                      boxes=np.array([[30.0, 20.0, 80.0, 60.0]]))


def _bright_centroid(image_chw):
    img = image_chw.float().numpy()
    green = img[1] - (img[0] + img[2]) / 2  # the grey border padding is not green
    ys, xs = np.nonzero(green > 0.2 * green.max())
    w = green[ys, xs]
    return np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])


def _input_keypoints(ds, item):
    """The item's keypoints in the input frame, decoded from its regression target (after any
    left/right swap), and the same keypoints moved by its matrix in float64 (before the swap)."""
    return ds.codec.decode(item["target"].numpy()), affine_points(item["keypoints"].numpy(), item["matrix"].numpy())


@pytest.mark.parametrize("crop", ["image", "bbox", "resize"])
def test_augmentation_keeps_keypoints_on_the_image_content(crop):
    # data.scale_range is a crop-side multiplier: the old zoom range (0.7, 1.3) is side (1/1.3, 1/0.7)
    ds = dot_pipeline(DotSource(), augment=True, input_size=64, crop=crop, flip_prob=0.5, rotation=40,
                      scale_range=[1 / 1.3, 1 / 0.7], translate=0.1, color_jitter=0.0)
    assert ds.crop.mode == {"bbox": "box"}.get(crop, crop)
    if crop == "bbox":
        assert ds.crop.padding == pytest.approx(1.2)  # data.bbox_margin 0.1 on each side
    assert ds.pad_value == PAD_VALUE
    torch.manual_seed(0)
    flips = 0
    for _ in range(12):
        item = ds[0]
        labelled = np.flatnonzero(item["target_weight"].numpy() > 0)
        assert len(labelled) == 1
        j = int(labelled[0])
        flips += j == 6  # joint 0 (left front paw) becomes right front paw after a mirror
        assert j in (0, 6)
        assert (j == 6) == is_mirrored(item["matrix"])  # swapped exactly when the matrix mirrors
        decoded, moved = _input_keypoints(ds, item)
        assert np.allclose(decoded[j], moved[0, :2], atol=1e-4)  # the target is the moved joint 0
        dot = _bright_centroid(item["image"])
        assert np.linalg.norm(dot - decoded[j]) < 1.0
        # and the stored matrix's inverse maps it back onto the original dot
        back = to_original_frame(moved[None, :1, :2], item["matrix"][None])[0]
        assert np.allclose(back, [[60.0, 40.0]], atol=1e-6)
        assert np.allclose(to_original_frame(decoded[None, j:j + 1], item["matrix"][None])[0], [[60.0, 40.0]],
                           atol=1e-3)
    assert 0 < flips < 12


def test_flip_swaps_left_and_right():
    src = DotSource()
    src.kp[6] = [100.0, 70.0, 1.0]  # right front paw, no dot needed
    plain_ds = dot_pipeline(src, augment=False, input_size=64)
    plain = plain_ds[0]
    flipped_ds = dot_pipeline(src, augment=True, input_size=64, flip_prob=1.0, rotation=0, scale_range=[1, 1],
                              translate=0, color_jitter=0)
    flipped = flipped_ds[0]
    a, b = _input_keypoints(plain_ds, plain)[0], _input_keypoints(flipped_ds, flipped)[0]
    for left, right in SK.flip_pairs:
        assert np.allclose(b[right, :2], [63 - a[left, 0], a[left, 1]])  # mirroring = flipping the array
        assert np.allclose(b[left, :2], [63 - a[right, 0], a[right, 1]])
    assert flipped["target_weight"][[0, 6]].tolist() == [1.0, 1.0]
    # the faithful (reference) pipeline mirrors WITHOUT swapping labels
    torch.manual_seed(1)
    faithful = dot_pipeline(src, augment=True, input_size=64, faithful=True)
    assert faithful.augment == TopDownAugment(reference="keras_dogs")
    mirrored = 0
    for _ in range(20):
        item = faithful[0]
        decoded, moved = _input_keypoints(faithful, item)
        # labels stay put: every joint's target is its own moved position, mirrored or not
        assert np.allclose(decoded, moved[:, :2], atol=1e-4)
        assert np.allclose(to_original_frame(decoded[None, [0, 6]], item["matrix"][None])[0],
                           [[60.0, 40.0], [100.0, 70.0]], atol=1e-3)
        mirrored += _bright_centroid(item["image"])[0] > 32
    assert 0 < mirrored < 20


def test_faithful_pipeline_stretches_and_does_not_mask():
    src = DotSource(size=(160, 100))
    ds = dot_pipeline(src, augment=False, input_size=64, faithful=True)
    assert ds.crop.mode == "resize" and ds.pad_value == (0, 0, 0)
    item = ds[0]
    # stretched: x and y scale separately, 64/160 and 64/100. Pixel centres at integer coordinates
    # (the image's centre (79.5, 49.5) is the input's (31.5, 31.5)): x -> (x + 0.5) * 64 / 160 - 0.5
    decoded, moved = _input_keypoints(ds, item)
    assert np.allclose(moved[0, :2], [(60 + 0.5) * 64 / 160 - 0.5, (40 + 0.5) * 64 / 100 - 0.5])
    assert np.allclose(decoded[0], moved[0, :2], atol=1e-4)
    assert item["target_weight"].tolist() == [1.0] * 24
    # unlabelled joints (stored as (0, 0, 0)) train with full weight at where the matrix moves the
    # image origin: (0.5 * 64 / 160 - 0.5, 0.5 * 64 / 100 - 0.5) input px with pixel centres at
    # integer coordinates (exactly (0, 0) under the reference's x * 64 / 160 geometry)
    assert np.allclose(item["target"][5].numpy(), [(0.5 * 64 / 160 - 0.5) / 64, (0.5 * 64 / 100 - 0.5) / 64])
    assert np.allclose(item["target"][5].numpy(), affine_points(np.zeros((1, 2)), item["matrix"].numpy())[0] / 64)
    default = dot_pipeline(src, augment=False, input_size=64)[0]
    assert default["target_weight"].sum() == 1


def test_bbox_crop_geometry():
    src = DotSource()
    # box [30, 20, 80, 60]: centre (30 + 40 - 0.5, 20 + 30 - 0.5) = (69.5, 49.5) (pixel centres at
    # integer coordinates; was (70, 50)), side 80 * (1 + 2 * 0.25) = 120 -> input 64
    center, size = CropRule("box", 1.5).region((100, 160, 3), [30, 20, 80, 60])
    assert np.allclose(center, [69.5, 49.5]) and np.allclose(size, [120, 120])
    item = dot_pipeline(src, augment=False, input_size=64, crop="bbox", bbox_margin=0.25)[0]
    m = item["matrix"].numpy()
    # the crop's centre is its centre pixel (31.5 of 0..63); the region's left edge is the input's
    assert np.allclose(affine_points(np.array([[69.5, 49.5]]), m), [[31.5, 31.5]])
    assert np.allclose(affine_points(np.array([[9.5, 49.5]]), m), [[-0.5, 31.5]])
    # no box: the box rule falls back to the whole image, aspect kept
    center, size = CropRule("box", 1.5).region((100, 160, 3), None)
    assert np.allclose(center, [79.5, 49.5]) and np.allclose(size, [160, 160])


@pytest.fixture(scope="module")
def real_task(realdata):
    root = realdata / "stanford_extra"
    if not (root / "StanfordExtra_sample.json").is_file():
        pytest.skip("StanfordExtra samples absent")
    return dogs_task(dataset="stanford_extra", root=str(root), train_on_all=True, input_size=96, augment=False)


@pytest.fixture(scope="module")
def real_dataset(real_task):
    return real_task.build_datasets()["val"]  # train_on_all: every record, in file order


def test_decode_maps_back_to_the_original_frame(real_task, real_dataset):
    """Perfect normalised outputs decode to the annotated pixels of the original image."""
    assert len(real_dataset) == 18
    for i in (0, 7, 17):
        item = real_dataset[i]
        w = item["target_weight"].numpy() > 0
        pix = RegressionCodec((96, 96)).decode(item["target"].numpy().astype(np.float64))
        orig = to_original_frame(pix[None], item["matrix"][None])[0]
        gt = item["keypoints"].numpy()
        assert w.sum() == (gt[:, 2] > 0).sum()
        assert np.allclose(orig[w], gt[w, :2], atol=1e-3)  # float32 targets: ~1e-4 px
        # the same through the Task's decode seam (the oracle: decode_targets -> postprocess)
        batch = real_task.collate([item])
        res = real_task.postprocess(real_task.decode_targets(batch), batch)[0]
        assert np.allclose(res.keypoints[0][w], gt[w, :2], atol=1e-3)
        # the letterbox kept the aspect ratio: one scale for x and y
        m = item["matrix"].numpy()
        assert np.isclose(abs(m[0, 0]), abs(m[1, 1])) and m[0, 1] == 0


def test_pck_and_pixel_error_hand_computed():
    gt = np.zeros((2, 24, 3))
    gt[:, :2, 2] = 1  # two labelled joints per dog
    gt[0, 0, :2] = [10, 10]
    gt[0, 1, :2] = [50, 50]
    gt[1, 0, :2] = [0, 0]
    gt[1, 1, :2] = [20, 20]
    pred = gt[..., :2].copy()
    pred[0, 0] += [3, 4]  # 5 px off; threshold 0.1 * 100 = 10 -> correct
    pred[0, 1] += [12, 0]  # 12 px -> wrong
    pred[1, 0] += [0, 4]  # threshold 0.1 * 30 = 3 -> wrong
    pred[:, 5] = [999, 999]  # unlabelled joints never count
    bbox = np.array([[0, 0, 100, 40], [0, 0, 10, 30]], float)
    m = pck_box_metrics(pred, gt, bbox, threshold=0.1)
    assert m["pck"] == pytest.approx(100 * 2 / 4)  # percent, like PCKh
    assert m["mean_px_error"] == pytest.approx((5 + 12 + 4 + 0) / 4)
    assert m["pck/left_front_paw"] == pytest.approx(50.0)
    assert m["pck/left_front_middle"] == pytest.approx(50.0)
    assert "pck_seg" not in m  # no segmentation areas given: no WLDO number
    assert m["px_error/left_front_paw"] == pytest.approx(4.5)
    assert "pck/right_front_paw" not in m  # never labelled: no per-joint entry
    assert m["num_joints"] == 4


def test_wldo_pck_hand_computed():
    """StanfordExtra/WLDO PCK: dist < 0.15 x sqrt(seg area) (strict), mean over images of each
    image's fraction of labelled joints (not pooled over joints like the bbox PCK)."""
    j = {name: i for i, name in enumerate(SK.keypoints)}
    gt = np.zeros((3, 24, 3))
    pred = np.zeros((3, 24, 2))
    # dog 0: seg area 400 -> sqrt 20 -> threshold 3 px; three labelled joints
    gt[0, [j["left_front_paw"], j["tail_end"], j["nose"]], 2] = 1
    pred[0, j["left_front_paw"]] = [3, 0]  # exactly 3 px: NOT correct (strict <)
    pred[0, j["tail_end"]] = [2.9, 0]  # correct
    pred[0, j["nose"]] = [0, 1]  # correct
    # dog 1: seg area 10000 -> 100 -> threshold 15 px; one labelled joint, 10 px off: correct
    gt[1, j["left_ear_tip"], 2] = 1
    pred[1, j["left_ear_tip"]] = [6, 8]
    pred[1, j["nose"]] = [500, 500]  # unlabelled: never counts
    # dog 2: no labelled joint: does not count as an image
    bbox = np.array([[0, 0, 40, 40], [0, 0, 40, 40], [0, 0, 40, 40]], float)
    m = pck_box_metrics(pred, gt, bbox, threshold=0.1, seg_area=np.array([400.0, 10_000.0, 900.0]))
    assert m["pck_seg"] == pytest.approx(100 * (2 / 3 + 1) / 2)  # per-image mean: 83.3
    assert m["pck_seg_images"] == 2
    assert m["pck_seg/legs"] == pytest.approx(0.0)  # one image has a leg joint, and it missed
    assert m["pck_seg/tail"] == pytest.approx(100.0)
    assert m["pck_seg/ears"] == pytest.approx(100.0)
    assert m["pck_seg/face"] == pytest.approx(100.0)
    # the pooled bbox PCK on the same predictions: <= 0.1 x 40 = 4 px, 3 of 4 joints (3.0 px counts here)
    assert m["pck"] == pytest.approx(75.0)
    # an image without an area (NaN) does not count
    m = pck_box_metrics(pred, gt, bbox, seg_area=np.array([400.0, np.nan, np.nan]))
    assert m["pck_seg"] == pytest.approx(100 * 2 / 3) and m["pck_seg_images"] == 1


def test_wldo_pck_on_the_real_samples_uses_the_seg_masks(realdata):
    """The validation items of the real StanfordExtra samples carry the dog's mask area, the
    same number as the decoded `seg` RLE, and score 100 for the ground truth."""
    from posekit.data.formats.stanford_extra import decode_seg
    task = dogs_task(dataset="stanford_extra", train_on_all=True, input_size=64)
    val = task.build_datasets()["val"]
    record = val.source.records[3]
    item = val[3]
    assert float(item["seg_area"]) == float(decode_seg(record).sum()) > 0
    gt = item["keypoints"].numpy()[None]
    m = pck_box_metrics(gt[..., :2], gt, item["box"].numpy()[None], seg_area=item["seg_area"].numpy()[None])
    assert m["pck_seg"] == 100.0 and m["pck"] == 100.0


class _Scripted:
    """A stand-in Generator for the keras_dogs draws: random() in order, then the zoom."""

    def __init__(self, randoms, zoom):
        self.randoms, self.zoom = list(randoms), zoom

    def random(self):
        return self.randoms.pop(0)

    def uniform(self, lo, hi):
        assert (lo, hi) == (0.5, 0.7)
        return self.zoom


def test_faithful_rotation_is_clockwise_on_screen():
    """imgaug's Affine(rotate=10) turns the image clockwise on screen (y down): a point right of
    the centre moves down. Hand-computed on a 64x64 image (the faithful stretch is the identity):
    centre (31.5, 31.5), point 10 px right of it, zoom 0.5 -> centre + 0.5 x 10 x (cos 10, sin 10)."""
    src = DotSource(xy=(41.0, 31.0), size=(64, 64))
    ds = dot_pipeline(src, augment=True, input_size=64, faithful=True)
    no_flip_rotate = _Scripted([0.9, 0.1], zoom=0.5)  # flip draw >= 0.3: no flip; rotation draw < 0.3
    matrix, swap = ds.crop_matrix((64, 64), None, no_flip_rotate)
    assert not swap
    t = np.deg2rad(10.0)
    expected = np.array([31.5 + 5 * np.cos(t), 31.5 + 5 * np.sin(t)])  # (36.42, 32.37): below the centre row
    assert np.allclose(affine_points(np.array([[41.5, 31.5]]), matrix)[0], expected)
    # a point above the centre moves right (clockwise), and the image content moves with the matrix
    assert affine_points(np.array([[31.5, 21.5]]), matrix)[0][0] > 31.5 + 0.8
    moved = affine_points(np.array([[41.0, 31.0]]), matrix)[0]
    warped = ds.crop_image(src.image, matrix)
    assert np.allclose(_bright_centroid(torch.from_numpy(warped.transpose(2, 0, 1))), moved, atol=0.3)
